package l7proxy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// CookieAffinity sends a client's requests to the endpoint named by its
// session cookie (ingress-nginx's affinity: cookie). A request without a
// valid cookie, or whose endpoint is gone, ejected or terminating, is
// balanced as usual and gets a cookie for the endpoint chosen.
//
// The cookie value is a keyed hash of the endpoint's address, so it does
// not reveal pod addresses; Key must be the same on every node (and
// across restarts) for a client to keep its endpoint whatever node it
// reaches.
type CookieAffinity struct {
	Name string // required
	// Path of the cookie; empty: the route's path.
	Path string
	// MaxAge and Expires (seconds; 0: none) make the cookie persistent.
	MaxAge, Expires int
	// SameSite is "", "None", "Lax" or "Strict".
	SameSite string
	Secure   bool
	// ChangeOnFailure: a request that had to go to another endpoint
	// (its endpoint refused the connection) gets a cookie for that one;
	// otherwise the next request tries the cookie's endpoint again.
	ChangeOnFailure bool
	Key             []byte

	tokens sync.Map // netip.AddrPort → token, computed once per endpoint
}

// token is the cookie value naming an endpoint.
func (c *CookieAffinity) token(e *endpoint) string {
	if v, ok := c.tokens.Load(e.addr); ok {
		return v.(string)
	}
	m := hmac.New(sha256.New, c.Key)
	m.Write([]byte(e.hostport))
	t := base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:16])
	c.tokens.Store(e.addr, t)
	return t
}

// pick returns the endpoint for a request: its cookie's, or a new one
// with a cookie to set.
func (c *CookieAffinity) pick(tx *txn, pl *pool, req routedRequest) *endpoint {
	if want, _ := requestCookie(req, c.Name); want != "" {
		var now int64
		for _, e := range *pl.ready.Load() {
			if c.token(e) == want {
				if !e.ejected(&now) {
					return e
				}
				break
			}
		}
	}
	e := pl.pick(nil)
	if e != nil {
		tx.access.sticky = c
		tx.access.cookie = c.setCookie(e, tx.access.path, time.Now())
		tx.setAccessResponse()
	}
	return e
}

// setCookie is the Set-Cookie field for endpoint e.
func (c *CookieAffinity) setCookie(e *endpoint, routePath string, now time.Time) Field {
	var b strings.Builder
	b.WriteString(c.Name)
	b.WriteByte('=')
	b.WriteString(c.token(e))
	b.WriteString("; Path=")
	b.WriteString(cookiePath(c.Path, routePath))
	if c.Expires > 0 {
		b.WriteString("; Expires=")
		b.WriteString(now.Add(time.Duration(c.Expires) * time.Second).UTC().Format(http.TimeFormat))
	}
	if c.MaxAge > 0 {
		b.WriteString("; Max-Age=")
		b.WriteString(strconv.Itoa(c.MaxAge))
	}
	if c.SameSite != "" {
		b.WriteString("; SameSite=")
		b.WriteString(c.SameSite)
	}
	if c.Secure {
		b.WriteString("; Secure")
	}
	b.WriteString("; HttpOnly")
	return Field{Name: "Set-Cookie", Value: b.String()}
}

func cookiePath(set, routePath string) string {
	if set != "" {
		return set
	}
	if routePath == "" {
		return "/"
	}
	return routePath
}

// moved re-issues the cookie after the attempt loop moved a request to
// another endpoint, when the affinity asks for it.
func (tx *txn) moved() {
	a := &tx.access
	c := a.stickyFor
	if c == nil || !c.ChangeOnFailure {
		return
	}
	a.sticky = c
	a.cookie = c.setCookie(tx.ep, a.path, time.Now())
	tx.setAccessResponse()
}

// setAccessResponse sets the response edit: the route's own, plus the
// fields access control adds (the auth service's cookies and the session
// cookie).
func (tx *txn) setAccessResponse() {
	a := &tx.access
	if !a.baseSet {
		a.baseResp, a.baseSet = tx.respEdit, true
	}
	e := &HeaderEdit{Add: a.authCookies}
	if a.sticky != nil {
		e.Add = append(e.Add[:len(e.Add):len(e.Add)], a.cookie)
	}
	tx.respEdit = mergeEdits(a.baseResp, e)
}
