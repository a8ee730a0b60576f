package controller

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/nodegress/nodegress/l7proxy"
)

// Access-control annotations: ingress-nginx's names and meanings (see the
// README), read under the nodegress.io/ prefix. accessAnnotationParsers
// is keyed by the name without prefix, so the same parsers serve any
// prefix that is registered for them.

// accessAnnotations are the parsed access-control annotations of an
// Ingress; the zero value is an Ingress without any.
type accessAnnotations struct {
	// AllowRanges holds whitelist-source-range, AllowRangesAlt its
	// newer name allowlist-source-range (both may be given only when
	// equal); DenyRanges denylist-source-range.
	AllowRanges, AllowRangesAlt, DenyRanges []netip.Prefix

	LimitRPS, LimitRPM, LimitConnections int
	LimitBurstMultiplier                 int
	LimitExempt                          []netip.Prefix

	// Affinity is "" or "cookie"; AffinityMode "", "balanced" or
	// "persistent".
	Affinity, AffinityMode string
	CookieName, CookiePath string
	CookieMaxAge           int
	CookieExpires          int
	CookieSameSite         string
	CookieSecure           bool
	CookieChangeOnFailure  bool

	// AuthType is "" or "basic"; AuthSecret "name" or "namespace/name";
	// AuthSecretType "" (auth-file) or "auth-file" or "auth-map".
	AuthType, AuthSecret, AuthSecretType, AuthRealm string

	AuthURL, AuthMethod, AuthSignin, AuthSigninParam string
	AuthResponseHeaders                              []string
	AuthRequestRedirect                              string
	AuthCacheKey                                     string
	AuthCacheRules                                   []l7proxy.AuthCacheRule

	CustomHTTPErrors []int
	DefaultBackend   string
}

// accessAnnotationParsers are the access-control annotations by name
// without prefix.
var accessAnnotationParsers = map[string]func(string, *accessAnnotations) error{
	"whitelist-source-range": func(v string, a *accessAnnotations) (err error) {
		a.AllowRanges, err = parseCIDRList(v)
		return err
	},
	"allowlist-source-range": func(v string, a *accessAnnotations) (err error) {
		a.AllowRangesAlt, err = parseCIDRList(v)
		return err
	},
	"denylist-source-range": func(v string, a *accessAnnotations) (err error) {
		a.DenyRanges, err = parseCIDRList(v)
		return err
	},
	"limit-rps": func(v string, a *accessAnnotations) (err error) {
		a.LimitRPS, err = parseAccessCount(v, false)
		return err
	},
	"limit-rpm": func(v string, a *accessAnnotations) (err error) {
		a.LimitRPM, err = parseAccessCount(v, false)
		return err
	},
	"limit-connections": func(v string, a *accessAnnotations) (err error) {
		a.LimitConnections, err = parseAccessCount(v, false)
		return err
	},
	"limit-burst-multiplier": func(v string, a *accessAnnotations) (err error) {
		a.LimitBurstMultiplier, err = parseAccessCount(v, true)
		return err
	},
	"limit-whitelist": func(v string, a *accessAnnotations) (err error) {
		a.LimitExempt, err = parseCIDRList(v)
		return err
	},
	"affinity": func(v string, a *accessAnnotations) error {
		if v = strings.TrimSpace(v); v != "cookie" {
			return errors.New(`want "cookie"`)
		}
		a.Affinity = v
		return nil
	},
	"affinity-mode": func(v string, a *accessAnnotations) error {
		switch v = strings.TrimSpace(v); v {
		case "balanced", "persistent":
			a.AffinityMode = v
			return nil
		}
		return errors.New("want balanced or persistent")
	},
	"session-cookie-name": func(v string, a *accessAnnotations) error {
		if !isCookieName(v) {
			return errors.New("want a cookie name (letters, digits and !#$%&'*+-.^_`|~)")
		}
		a.CookieName = v
		return nil
	},
	"session-cookie-path": func(v string, a *accessAnnotations) error {
		if !strings.HasPrefix(v, "/") || strings.ContainsAny(v, ";\x00\r\n\t ") || strings.ContainsFunc(v, isCtl) {
			return errors.New("want a path starting with / without ';', spaces or control characters")
		}
		a.CookiePath = v
		return nil
	},
	"session-cookie-max-age": func(v string, a *accessAnnotations) (err error) {
		a.CookieMaxAge, err = parseAccessCount(v, true)
		return err
	},
	"session-cookie-expires": func(v string, a *accessAnnotations) (err error) {
		a.CookieExpires, err = parseAccessCount(v, true)
		return err
	},
	"session-cookie-samesite": func(v string, a *accessAnnotations) error {
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "none":
			a.CookieSameSite = "None"
		case "lax":
			a.CookieSameSite = "Lax"
		case "strict":
			a.CookieSameSite = "Strict"
		default:
			return errors.New("want None, Lax or Strict")
		}
		return nil
	},
	"session-cookie-secure": func(v string, a *accessAnnotations) (err error) {
		a.CookieSecure, err = parseBool(v)
		return err
	},
	"session-cookie-change-on-failure": func(v string, a *accessAnnotations) (err error) {
		a.CookieChangeOnFailure, err = parseBool(v)
		return err
	},
	"auth-type": func(v string, a *accessAnnotations) error {
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "basic":
			a.AuthType = "basic"
			return nil
		case "digest":
			return errors.New("digest authentication is not supported: use basic over HTTPS")
		}
		return errors.New("want basic")
	},
	"auth-secret": func(v string, a *accessAnnotations) error {
		v = strings.TrimSpace(v)
		ns, name, cut := strings.Cut(v, "/")
		if !cut {
			ns, name = "", v
		}
		if cut && len(validation.IsDNS1123Label(ns)) > 0 || len(validation.IsDNS1123Subdomain(name)) > 0 {
			return errors.New("want a Secret name or namespace/name")
		}
		a.AuthSecret = v
		return nil
	},
	"auth-secret-type": func(v string, a *accessAnnotations) error {
		switch v = strings.TrimSpace(v); v {
		case "auth-file", "auth-map":
			a.AuthSecretType = v
			return nil
		}
		return errors.New("want auth-file or auth-map")
	},
	"auth-realm": func(v string, a *accessAnnotations) error {
		if strings.ContainsFunc(v, isCtl) {
			return errors.New("control characters are not allowed")
		}
		a.AuthRealm = v
		return nil
	},
	"auth-url": func(v string, a *accessAnnotations) error {
		v = strings.TrimSpace(v)
		if err := l7proxy.CheckAuthURL(v); err != nil {
			return err
		}
		a.AuthURL = v
		return nil
	},
	"auth-method": func(v string, a *accessAnnotations) error {
		v = strings.TrimSpace(v)
		if v == "" || !isToken(v) {
			return errors.New("want an HTTP method such as GET")
		}
		a.AuthMethod = v
		return nil
	},
	"auth-signin": func(v string, a *accessAnnotations) error {
		v = strings.TrimSpace(v)
		if err := l7proxy.CheckAuthURL(v); err != nil {
			return err
		}
		a.AuthSignin = v
		return nil
	},
	"auth-signin-redirect-param": func(v string, a *accessAnnotations) error {
		v = strings.TrimSpace(v)
		if v == "" || !isToken(v) || strings.ContainsAny(v, "&=?#+%") {
			return errors.New("want a query parameter name")
		}
		a.AuthSigninParam = v
		return nil
	},
	"auth-response-headers": func(v string, a *accessAnnotations) error {
		var names []string
		for _, n := range strings.Split(v, ",") {
			n = strings.TrimSpace(n)
			if n == "" {
				continue
			}
			if !isToken(n) {
				return fmt.Errorf("%q is not a header name", n)
			}
			if !l7proxy.EditableField(n) {
				// The answer's value would be sent upstream next to the
				// proxy's own framing: request smuggling.
				return fmt.Errorf("%s is framing, Host or hop-by-hop: the proxy writes it itself", n)
			}
			names = append(names, n)
		}
		if len(names) == 0 {
			return errors.New("want a comma-separated list of header names")
		}
		a.AuthResponseHeaders = names
		return nil
	},
	"auth-request-redirect": func(v string, a *accessAnnotations) error {
		if strings.ContainsFunc(v, isCtl) {
			return errors.New("control characters are not allowed")
		}
		a.AuthRequestRedirect = strings.TrimSpace(v)
		return nil
	},
	"auth-cache-key": func(v string, a *accessAnnotations) error {
		if err := l7proxy.CheckAuthCacheKey(v); err != nil {
			return err
		}
		a.AuthCacheKey = v
		return nil
	},
	"auth-cache-duration": func(v string, a *accessAnnotations) (err error) {
		a.AuthCacheRules, err = parseAuthCacheDuration(v)
		return err
	},
	"custom-http-errors": func(v string, a *accessAnnotations) (err error) {
		a.CustomHTTPErrors, err = parseStatusCodes(v)
		return err
	},
	"default-backend": func(v string, a *accessAnnotations) error {
		v = strings.TrimSpace(v)
		if errs := validation.IsDNS1035Label(v); len(errs) > 0 {
			return fmt.Errorf("want the name of a Service in the ingress's namespace: %s", strings.Join(errs, "; "))
		}
		a.DefaultBackend = v
		return nil
	},
}

// init registers the access parsers under nodegress's prefix; any other
// prefix read with the same meaning registers the same names.
func init() {
	ps := make(map[string]annotationParser, len(accessAnnotationParsers))
	for name, parse := range accessAnnotationParsers {
		ps[name] = func(v string, a *ingressAnnotations) error { return parse(v, &a.Access) }
	}
	registerAnnotations(ps)
}

// parseCIDRList reads a comma-separated list of CIDRs or single addresses
// ("10.0.0.0/24, 172.10.0.1"), as ingress-nginx. An address with host
// bits set under its mask ("10.0.0.1/8") is refused: it is most likely a
// typo, and nginx would silently widen it.
func parseCIDRList(v string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		var p netip.Prefix
		if strings.Contains(s, "/") {
			var err error
			if p, err = netip.ParsePrefix(s); err != nil {
				return nil, fmt.Errorf("%q is not a CIDR", s)
			}
			if p.Masked() != p {
				return nil, fmt.Errorf("%q has bits set beyond its prefix length (did you mean %s?)", s, p.Masked())
			}
		} else {
			a, err := netip.ParseAddr(s)
			if err != nil || a.Zone() != "" {
				return nil, fmt.Errorf("%q is not an address or a CIDR", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
			if p.Bits() < 0 {
				return nil, fmt.Errorf("%q: prefix too short for an IPv4-mapped address", s)
			}
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, errors.New("want a comma-separated list of CIDRs")
	}
	return out, nil
}

// maxAnnotationCount bounds counts (rates, seconds): far above any useful
// value, low enough for every product to fit.
const maxAnnotationCount = 1 << 30

// parseAccessCount reads a decimal count up to maxAnnotationCount; zero
// is allowed only when zeroOK.
func parseAccessCount(v string, zeroOK bool) (int, error) {
	n, err := parseCount(v, maxAnnotationCount)
	if err != nil {
		return 0, err
	}
	if n == 0 && !zeroOK {
		return 0, errors.New("must be positive")
	}
	return int(n), nil
}

// parseStatusCodes reads a comma-separated list of HTTP status codes
// (300-599: only errors and redirects are worth an error page).
func parseStatusCodes(v string) ([]int, error) {
	var out []int
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 300 || n > 599 || strings.TrimLeft(s, "0123456789") != "" {
			return nil, fmt.Errorf("%q is not an HTTP status code from 300 to 599", s)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("want a comma-separated list of status codes")
	}
	return out, nil
}

// parseAuthCacheDuration reads nginx proxy_cache_valid rules separated by
// commas: status codes (or "any") then a time, as "200 202 10m, 401 5m".
func parseAuthCacheDuration(v string) ([]l7proxy.AuthCacheRule, error) {
	var rules []l7proxy.AuthCacheRule
	for _, group := range strings.Split(v, ",") {
		fs := strings.Fields(group)
		if len(fs) == 0 {
			continue
		}
		ttl, err := parseNginxTime(fs[len(fs)-1])
		if err != nil {
			return nil, fmt.Errorf("%q: %w", strings.TrimSpace(group), err)
		}
		r := l7proxy.AuthCacheRule{TTL: ttl}
		for _, f := range fs[:len(fs)-1] {
			if f == "any" {
				r.Codes = nil
				continue
			}
			n, err := strconv.Atoi(f)
			if err != nil || n < 100 || n > 599 || strings.TrimLeft(f, "0123456789") != "" {
				return nil, fmt.Errorf("%q is not a status code", f)
			}
			r.Codes = append(r.Codes, n)
		}
		if len(fs) == 1 {
			// nginx: a time alone caches 200, 301 and 302.
			r.Codes = []int{200, 301, 302}
		}
		rules = append(rules, r)
	}
	if len(rules) == 0 {
		return nil, errors.New(`want codes and a time, as "200 202 10m, 401 5m"`)
	}
	return rules, nil
}

// parseNginxTime reads an nginx time: whole numbers with units s, m, h
// or d ("1h30m"; a bare number is seconds), at most a year.
func parseNginxTime(v string) (time.Duration, error) {
	if v == "" {
		return 0, errors.New("empty time")
	}
	if strings.TrimLeft(v, "0123456789") == "" {
		v += "s"
	}
	var total time.Duration
	for v != "" {
		i := len(v) - len(strings.TrimLeft(v, "0123456789"))
		if i == 0 || i > 9 || i == len(v) {
			return 0, fmt.Errorf("%q is not a time like 5m or 1h30m", v)
		}
		n, _ := strconv.Atoi(v[:i])
		unit := map[byte]time.Duration{'s': time.Second, 'm': time.Minute, 'h': time.Hour, 'd': 24 * time.Hour}[v[i]]
		if unit == 0 {
			return 0, fmt.Errorf("unknown time unit %q: want s, m, h or d", v[i])
		}
		total += time.Duration(n) * unit
		if total > 365*24*time.Hour {
			return 0, errors.New("longer than a year")
		}
		v = v[i+1:]
	}
	if total <= 0 {
		return 0, errors.New("must be positive")
	}
	return total, nil
}

func isCtl(r rune) bool { return r < 0x20 || r == 0x7f }

func isCookieName(s string) bool { return isToken(strings.TrimSpace(s)) && strings.TrimSpace(s) == s }

// check checks the annotations that only make sense together; it returns
// the name (without prefix) of the annotation to blame.
func (a *accessAnnotations) check() (string, error) {
	if a.AllowRanges != nil && a.AllowRangesAlt != nil && !slices.Equal(a.AllowRanges, a.AllowRangesAlt) {
		return "allowlist-source-range", errors.New("differs from whitelist-source-range: give one of them")
	}
	if a.AuthType != "" && a.AuthSecret == "" {
		return "auth-type", errors.New("needs auth-secret")
	}
	if a.AuthType == "" && (a.AuthSecret != "" || a.AuthSecretType != "") {
		return "auth-secret", errors.New("needs auth-type: basic")
	}
	if a.AuthURL == "" && (a.AuthSignin != "" || a.AuthMethod != "" || a.AuthResponseHeaders != nil || a.AuthCacheKey != "") {
		return "auth-url", errors.New("missing: auth-signin, auth-method, auth-response-headers and auth-cache-key need it")
	}
	if a.AuthCacheRules != nil && a.AuthCacheKey == "" {
		return "auth-cache-duration", errors.New("needs auth-cache-key")
	}
	return "", nil
}
