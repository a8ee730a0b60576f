package l7proxy

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// The external auth cache (ingress-nginx's auth-cache-key and
// auth-cache-duration): the auth service's answers, kept per Ingress
// under a key made of request values.

// AuthCacheRule keeps the answers with one of Codes (empty: any status)
// for TTL.
type AuthCacheRule struct {
	Codes []int
	TTL   time.Duration
}

// defaultAuthCacheRules are ingress-nginx's auth-cache-duration default.
var defaultAuthCacheRules = []AuthCacheRule{{Codes: []int{200, 202, 401}, TTL: 5 * time.Minute}}

// cacheTTL is how long an answer with status is kept (0: not kept).
func (e *ExternalAuth) cacheTTL(status int) time.Duration {
	rules := e.CacheRules
	if len(rules) == 0 {
		rules = defaultAuthCacheRules
	}
	for _, r := range rules {
		if len(r.Codes) == 0 || slices.Contains(r.Codes, status) {
			return r.TTL
		}
	}
	return 0
}

// Cache key variables besides AuthVariables: the client's address, the
// basic-auth user, any request field ($http_x_user: X-User) and any
// cookie ($cookie_session).
const (
	varHTTP   = "http_"
	varCookie = "cookie_"
)

// CheckAuthCacheKey reports whether an auth cache key only uses the
// variables it can: AuthVariables, $remote_addr, $remote_user,
// $http_<field> and $cookie_<name>, as "$name" or "${name}".
func CheckAuthCacheKey(key string) error {
	if strings.TrimSpace(key) == "" {
		return errors.New("empty key")
	}
	var bad error
	expandVariables(key, func(name string) string {
		if bad == nil && !knownCacheVariable(name) {
			bad = fmt.Errorf("unknown variable $%s", name)
		}
		return ""
	})
	return bad
}

func knownCacheVariable(name string) bool {
	switch name {
	case "remote_addr", "remote_user":
		return true
	}
	if rest, ok := strings.CutPrefix(name, varHTTP); ok {
		return rest != ""
	}
	if rest, ok := strings.CutPrefix(name, varCookie); ok {
		return rest != ""
	}
	return slices.Contains(AuthVariables, "$"+name)
}

// expandVariables replaces every "$name" and "${name}" of s (names of
// letters, digits and '_', as nginx's) with value(name).
func expandVariables(s string, value func(name string) string) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '$')
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		s = s[i+1:]
		var name string
		if strings.HasPrefix(s, "{") {
			end := strings.IndexByte(s, '}')
			if end < 0 {
				name, s = s[1:], ""
			} else {
				name, s = s[1:end], s[end+1:]
			}
		} else {
			n := 0
			for n < len(s) && (s[n] == '_' || 'a' <= s[n] && s[n] <= 'z' || 'A' <= s[n] && s[n] <= 'Z' || '0' <= s[n] && s[n] <= '9') {
				n++
			}
			name, s = s[:n], s[n:]
		}
		b.WriteString(value(name))
	}
}

// expandCacheKey computes a request's cache key. Values are separated so
// that two different requests cannot make the same key by moving bytes
// from one variable to the next.
func expandCacheKey(key string, req routedRequest, v *authVars, client netip.Addr) string {
	return expandVariables(key, func(name string) string {
		var val string
		switch {
		case name == "remote_addr":
			val = client.String()
		case name == "remote_user":
			val = basicUser(req)
		case strings.HasPrefix(name, varHTTP):
			field := strings.ReplaceAll(name[len(varHTTP):], "_", "-")
			val = strings.Join(fieldValues(req, field), ", ")
		case strings.HasPrefix(name, varCookie):
			val, _ = requestCookie(req, name[len(varCookie):])
		default:
			val = v.expand("$" + name)
		}
		return url.QueryEscape(val) + "\x00"
	})
}

// basicUser is the user name of a basic Authorization field, nginx's
// $remote_user.
func basicUser(req routedRequest) string {
	h, ok := req.headerValue("Authorization")
	if !ok || len(h) < 6 || !strings.EqualFold(h[:6], "basic ") {
		return ""
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(h[6:]))
	if err != nil {
		return ""
	}
	user, _, _ := strings.Cut(string(raw), ":")
	return user
}

// maxAuthCacheEntries bounds the answers one Ingress keeps; maxAuthCacheKey
// the length of a key worth keeping.
const (
	maxAuthCacheEntries = 4096
	maxAuthCacheKey     = 4 << 10
)

// authCache holds auth answers: the status and the fields that matter
// (Set-Cookie, WWW-Authenticate, those copied upstream).
type authCache struct {
	mu      sync.Mutex
	max     int
	entries map[string]authCacheEntry
}

type authCacheEntry struct {
	status  int
	header  http.Header
	expires time.Time
}

func newAuthCache(n int) *authCache {
	return &authCache{max: n, entries: map[string]authCacheEntry{}}
}

func (c *authCache) get(key string, now time.Time) (int, http.Header, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok {
		return 0, nil, false
	}
	if !now.Before(e.expires) {
		delete(c.entries, key)
		return 0, nil, false
	}
	return e.status, e.header, true
}

// put keeps an answer for ttl; h is the answer's fields that matter
// (answerFields), never written afterwards. A full cache drops an expired entry of a
// random sample, else a random one.
func (c *authCache) put(key string, status int, h http.Header, ttl time.Duration, now time.Time) {
	if ttl <= 0 || len(key) > maxAuthCacheKey {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[key]; !ok && len(c.entries) >= c.max {
		var victim string
		n := 0
		for k, e := range c.entries {
			if n == 0 || !now.Before(e.expires) {
				victim = k
			}
			if !now.Before(e.expires) {
				break
			}
			if n++; n >= evictScan {
				break
			}
		}
		delete(c.entries, victim)
	}
	c.entries[key] = authCacheEntry{status: status, header: h, expires: now.Add(ttl)}
}

func (c *authCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
