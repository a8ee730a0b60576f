package controller

import (
	"errors"
	"fmt"
	"math"
	"net/textproto"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/nodegress/nodegress/l7proxy"
)

// The routing annotations of ingress-nginx, read under both prefixes
// (annotations.go): regular expression paths and rewrites, redirects,
// the upstream Host and X-Forwarded-Prefix, CORS, canaries and the TLS
// towards the backends. The translation (ingress_rules.go) turns them
// into l7proxy route rules, the Gateway machinery.

// routingAnnotations are the parsed routing annotations of an Ingress.
type routingAnnotations struct {
	// UseRegex makes the Ingress's non-Exact paths regular expressions
	// (l7proxy.PathRegex); a RewriteTarget does too, as in ingress-nginx.
	UseRegex      bool
	RewriteTarget string
	// ForceSSLRedirect redirects plain HTTP to https like SSLRedirect.
	ForceSSLRedirect bool
	// AppRoot is where requests for "/" on the Ingress's hosts are sent
	// (302).
	AppRoot string
	// PermanentRedirect and TemporalRedirect answer every request of the
	// Ingress with a redirect to a fixed URL (the temporal one wins when
	// both are set, as in ingress-nginx); the codes are 0 for the
	// defaults, 301 and 302.
	PermanentRedirect     string
	PermanentRedirectCode int
	TemporalRedirect      string
	TemporalRedirectCode  int
	// UpstreamVhost is the Host sent to the backends.
	UpstreamVhost string
	// XForwardedPrefix is sent to the backends as X-Forwarded-Prefix.
	XForwardedPrefix string
	EnableCORS       bool
	CORS             corsAnnotations
	Canary           canaryAnnotations
	ProxySSL         proxySSLAnnotations
	// SSLPassthrough forwards the TLS connections for the Ingress's
	// hosts, by SNI, to the backend of each host's first path.
	SSLPassthrough bool
}

// corsAnnotations are the cors-* values; nil and unset fields take
// ingress-nginx's defaults.
type corsAnnotations struct {
	AllowOrigin      []string
	AllowMethods     []string
	AllowHeaders     []string
	ExposeHeaders    []string
	AllowCredentials *bool
	MaxAge           *int32
}

// ingress-nginx's CORS defaults.
var (
	defaultCORSMethods = []string{"GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"}
	defaultCORSHeaders = []string{"DNT", "Keep-Alive", "User-Agent", "X-Requested-With", "If-Modified-Since",
		"Cache-Control", "Content-Type", "Range", "Authorization"}
)

const defaultCORSMaxAge = 1728000

// canaryAnnotations describe a canary Ingress: it serves no route of its
// own, it diverts part of the traffic of the main Ingress with the same
// host and path.
type canaryAnnotations struct {
	Enabled       bool
	Weight        int32
	WeightTotal   int32 // 0: 100
	Header        string
	HeaderValue   string
	HeaderPattern string
	Cookie        string
}

// proxySSLAnnotations configure the TLS of HTTPS backends.
type proxySSLAnnotations struct {
	// Secret is "namespace/name" of a kubernetes.io/tls Secret in the
	// Ingress's namespace: its certificate is presented, its ca.crt
	// trusted.
	Secret     string
	Verify     bool
	Name       string
	ServerName bool
	// VerifyDepth is 0 for nginx's default, 1.
	VerifyDepth int
}

func init() {
	registerAnnotations(map[string]annotationParser{
		"ssl-passthrough": func(v string, a *ingressAnnotations) (err error) {
			a.Routing.SSLPassthrough, err = parseBool(v)
			return err
		},
		"use-regex": func(v string, a *ingressAnnotations) (err error) {
			a.Routing.UseRegex, err = parseBool(v)
			return err
		},
		"rewrite-target": func(v string, a *ingressAnnotations) error {
			pm := &l7proxy.PathModifier{ReplaceRegexMatch: true, Pattern: "/", Value: v}
			if err := checkPlainValue(v); err != nil {
				return err
			}
			if err := l7proxy.CheckRegexRewrite(pm); err != nil {
				return err
			}
			a.Routing.RewriteTarget = v
			return nil
		},
		"force-ssl-redirect": func(v string, a *ingressAnnotations) (err error) {
			a.Routing.ForceSSLRedirect, err = parseBool(v)
			return err
		},
		"app-root": func(v string, a *ingressAnnotations) error {
			if err := checkPlainValue(v); err != nil {
				return err
			}
			if !strings.HasPrefix(v, "/") || strings.ContainsAny(v, "?#") {
				return errors.New("want a path starting with '/', without query or fragment")
			}
			a.Routing.AppRoot = v
			return nil
		},
		"permanent-redirect": func(v string, a *ingressAnnotations) (err error) {
			a.Routing.PermanentRedirect, err = parseRedirectURL(v)
			return err
		},
		"permanent-redirect-code": func(v string, a *ingressAnnotations) (err error) {
			a.Routing.PermanentRedirectCode, err = parseRedirectCode(v)
			return err
		},
		"temporal-redirect": func(v string, a *ingressAnnotations) (err error) {
			a.Routing.TemporalRedirect, err = parseRedirectURL(v)
			return err
		},
		"temporal-redirect-code": func(v string, a *ingressAnnotations) (err error) {
			a.Routing.TemporalRedirectCode, err = parseRedirectCode(v)
			return err
		},
		"upstream-vhost": func(v string, a *ingressAnnotations) error {
			if err := checkHostPort(v); err != nil {
				return err
			}
			a.Routing.UpstreamVhost = v
			return nil
		},
		"x-forwarded-prefix": func(v string, a *ingressAnnotations) error {
			if err := checkPlainValue(v); err != nil {
				return err
			}
			a.Routing.XForwardedPrefix = v
			return nil
		},
		"enable-cors": func(v string, a *ingressAnnotations) (err error) {
			a.Routing.EnableCORS, err = parseBool(v)
			return err
		},
		"cors-allow-origin": func(v string, a *ingressAnnotations) error {
			origins := splitList(v)
			if len(origins) == 0 {
				return errors.New("want * or a comma-separated list of origins")
			}
			for _, o := range origins {
				if err := l7proxy.CheckCORS(&l7proxy.CORS{AllowOrigins: []string{o}}); err != nil {
					return fmt.Errorf("origin %q: want * or scheme://host[:port], the host may start with *.", o)
				}
			}
			a.Routing.CORS.AllowOrigin = origins
			return nil
		},
		"cors-allow-methods": func(v string, a *ingressAnnotations) (err error) {
			a.Routing.CORS.AllowMethods, err = parseTokenList(v, false)
			return err
		},
		"cors-allow-headers": func(v string, a *ingressAnnotations) (err error) {
			a.Routing.CORS.AllowHeaders, err = parseTokenList(v, true)
			return err
		},
		"cors-expose-headers": func(v string, a *ingressAnnotations) (err error) {
			a.Routing.CORS.ExposeHeaders, err = parseTokenList(v, true)
			return err
		},
		"cors-allow-credentials": func(v string, a *ingressAnnotations) error {
			b, err := parseBool(v)
			a.Routing.CORS.AllowCredentials = &b
			return err
		},
		"cors-max-age": func(v string, a *ingressAnnotations) error {
			n, err := parseCount(v, math.MaxInt32)
			m := int32(n)
			a.Routing.CORS.MaxAge = &m
			return err
		},
		"canary": func(v string, a *ingressAnnotations) (err error) {
			a.Routing.Canary.Enabled, err = parseBool(v)
			return err
		},
		"canary-weight": func(v string, a *ingressAnnotations) error {
			n, err := parseCount(v, math.MaxInt32)
			a.Routing.Canary.Weight = int32(n)
			return err
		},
		"canary-weight-total": func(v string, a *ingressAnnotations) error {
			n, err := parseCount(v, math.MaxInt32)
			if err == nil && n == 0 {
				err = errors.New("must be positive")
			}
			a.Routing.Canary.WeightTotal = int32(n)
			return err
		},
		"canary-by-header": func(v string, a *ingressAnnotations) error {
			if !isToken(v) {
				return errors.New("want a header name")
			}
			a.Routing.Canary.Header = v
			return nil
		},
		"canary-by-header-value": func(v string, a *ingressAnnotations) error {
			if v == "" {
				return errors.New("empty value")
			}
			if err := checkPlainValue(v); err != nil {
				return err
			}
			a.Routing.Canary.HeaderValue = v
			return nil
		},
		"canary-by-header-pattern": func(v string, a *ingressAnnotations) error {
			if v == "" {
				return errors.New("empty pattern")
			}
			if _, err := regexp.Compile(v); err != nil {
				return fmt.Errorf("want an RE2 regular expression: %w", err)
			}
			a.Routing.Canary.HeaderPattern = v
			return nil
		},
		"canary-by-cookie": func(v string, a *ingressAnnotations) error {
			if !isToken(v) {
				return errors.New("want a cookie name")
			}
			a.Routing.Canary.Cookie = v
			return nil
		},
		"proxy-ssl-secret": func(v string, a *ingressAnnotations) error {
			ns, name, ok := strings.Cut(strings.TrimSpace(v), "/")
			if !ok || len(validation.IsDNS1123Label(ns)) > 0 || len(validation.IsDNS1123Subdomain(name)) > 0 {
				return errors.New("want namespace/name of a Secret")
			}
			a.Routing.ProxySSL.Secret = ns + "/" + name
			return nil
		},
		"proxy-ssl-verify": func(v string, a *ingressAnnotations) (err error) {
			a.Routing.ProxySSL.Verify, err = parseOnOff(v)
			return err
		},
		"proxy-ssl-name": func(v string, a *ingressAnnotations) error {
			if len(validation.IsDNS1123Subdomain(strings.ToLower(v))) > 0 {
				return errors.New("want a DNS name")
			}
			a.Routing.ProxySSL.Name = strings.ToLower(v)
			return nil
		},
		"proxy-ssl-server-name": func(v string, a *ingressAnnotations) (err error) {
			a.Routing.ProxySSL.ServerName, err = parseOnOff(v)
			return err
		},
		"proxy-ssl-verify-depth": func(v string, a *ingressAnnotations) error {
			n, err := parseCount(v, 100)
			if err == nil && n == 0 {
				err = errors.New("must be positive")
			}
			a.Routing.ProxySSL.VerifyDepth = int(n)
			return err
		},
	})
}

// check validates what depends on several routing annotations. from maps
// each name to the annotation it was read from.
func (r *routingAnnotations) check(from, annotations map[string]string) error {
	fail := func(name string, err error) error {
		return &AnnotationError{Annotation: from[name], Value: annotations[from[name]], Err: err}
	}
	c := &r.Canary
	if c.Enabled && c.Header == "" {
		if c.HeaderValue != "" {
			return fail("canary-by-header-value", errors.New("needs canary-by-header"))
		}
		if c.HeaderPattern != "" {
			return fail("canary-by-header-pattern", errors.New("needs canary-by-header"))
		}
	}
	if r.ProxySSL.Verify && r.ProxySSL.Secret == "" {
		return fail("proxy-ssl-verify", errors.New("needs proxy-ssl-secret (its ca.crt is what is trusted)"))
	}
	if r.ProxySSL.Verify && r.ProxySSL.Name == "" {
		// ingress-nginx would check the name of its upstream block,
		// which no backend certificate carries.
		return fail("proxy-ssl-verify", errors.New("needs proxy-ssl-name, the name the backends' certificates carry"))
	}
	if r.EnableCORS {
		if err := l7proxy.CheckCORS(r.cors()); err != nil {
			return fail("cors-allow-origin", err)
		}
	}
	return nil
}

// regexPaths reports whether the Ingress's non-Exact paths are regular
// expressions.
func (r *routingAnnotations) regexPaths() bool {
	return r.UseRegex || r.RewriteTarget != ""
}

// cors is the CORS filter of enable-cors, with ingress-nginx's defaults.
func (r *routingAnnotations) cors() *l7proxy.CORS {
	c := &r.CORS
	out := &l7proxy.CORS{
		AllowOrigins:     c.AllowOrigin,
		AllowMethods:     c.AllowMethods,
		AllowHeaders:     c.AllowHeaders,
		ExposeHeaders:    c.ExposeHeaders,
		AllowCredentials: true,
		MaxAge:           defaultCORSMaxAge,
	}
	if out.AllowOrigins == nil {
		out.AllowOrigins = []string{"*"}
	}
	if out.AllowMethods == nil {
		out.AllowMethods = defaultCORSMethods
	}
	if out.AllowHeaders == nil {
		out.AllowHeaders = defaultCORSHeaders
	}
	if c.AllowCredentials != nil {
		out.AllowCredentials = *c.AllowCredentials
	}
	if c.MaxAge != nil {
		out.MaxAge = *c.MaxAge
	}
	return out
}

func parseOnOff(v string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "on", "true":
		return true, nil
	case "off", "false":
		return false, nil
	}
	return false, errors.New("want on or off")
}

// parseCount reads a whole number from 0 to limit.
func parseCount(v string, limit int64) (int64, error) {
	s := strings.TrimSpace(v)
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, errors.New("want a whole number")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n > limit {
		return 0, fmt.Errorf("want at most %d", limit)
	}
	return n, nil
}

// parseRedirectURL accepts an absolute http or https URL. A '$' is
// refused: ingress-nginx would expand nginx variables there, which
// nodegress does not have.
func parseRedirectURL(v string) (string, error) {
	if err := checkPlainValue(v); err != nil {
		return "", err
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.ContainsAny(v, "$ ") {
		return "", errors.New("want an absolute http or https URL without nginx variables")
	}
	return v, nil
}

// parseRedirectCode accepts the redirect codes browsers follow.
func parseRedirectCode(v string) (int, error) {
	n, err := parseCount(v, 999)
	switch {
	case err != nil:
		return 0, errors.New("want 301, 302, 303, 307 or 308")
	case n == 301 || n == 302 || n == 303 || n == 307 || n == 308:
		return int(n), nil
	}
	return 0, errors.New("want 301, 302, 303, 307 or 308")
}

// checkPlainValue refuses control characters and surrounding spaces in a
// value sent in a header field or a path.
func checkPlainValue(v string) error {
	if v == "" || strings.TrimSpace(v) != v {
		return errors.New("empty, or spaces around the value")
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' || c == 0x7f {
			return errors.New("control character")
		}
	}
	return nil
}

// checkHostPort accepts a host name or IP address with an optional port.
func checkHostPort(v string) error {
	host, port := v, ""
	if h, p, err := splitHostPortLoose(v); err == nil {
		host, port = h, p
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return errors.New("want host or host:port")
		}
	}
	if len(validation.IsDNS1123Subdomain(strings.ToLower(host))) > 0 && len(validation.IsValidIP(nil, host)) > 0 {
		return errors.New("want host or host:port")
	}
	return nil
}

func splitHostPortLoose(v string) (string, string, error) {
	i := strings.LastIndexByte(v, ':')
	if i < 0 || strings.Contains(v[:i], ":") {
		return v, "", errors.New("no port")
	}
	return v[:i], v[i+1:], nil
}

// splitList splits a comma-separated list, dropping empty entries.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// parseTokenList reads a comma-separated list of HTTP tokens (methods,
// header names); star allows "*".
func parseTokenList(v string, star bool) ([]string, error) {
	out := splitList(v)
	if len(out) == 0 {
		return nil, errors.New("empty list")
	}
	for _, s := range out {
		if !(star && s == "*") && !isToken(s) {
			return nil, fmt.Errorf("%q is not a token", s)
		}
	}
	return out, nil
}

// isToken reports an RFC 9110 token (header names, methods, cookie
// names).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// canonicalHeader is a header name as the proxy's matches expect it.
func canonicalHeader(name string) string { return textproto.CanonicalMIMEHeaderKey(name) }
