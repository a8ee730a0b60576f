package l7proxy

import (
	"errors"
	"net/http"
	"net/netip"
	"strings"
	"sync"
)

// Access control of a route: source ranges, rate limits, basic and
// external authentication, sticky sessions and error pages (the
// ingress-nginx annotations of the same names). The pipeline consults it
// at three points only, and only for a route that has one:
//
//   - decide: admit answers locally (403, 429/503, 401, a sign-in
//     redirect, 500 when the auth service fails) or lets the request
//     through; the endpoint is then chosen by the session cookie, and a
//     route whose service has no endpoint goes to its default backend;
//   - the exchanges: a response status listed in ErrorCodes is replaced
//     by the default backend's answer (error_pages.go);
//   - finish: the connection slot of limit-connections is released.

// Access is the access control of a route (RouteOptions.Access). It is
// read-only once given to Update, which attaches the proxy's long-lived
// state (rate limiter counters, verified passwords) to it.
type Access struct {
	// Denied, when not empty, says why the route cannot be served
	// safely (an authentication Secret is missing or invalid): every
	// request gets 503, never the backend. It is logged, not sent.
	Denied string
	// Allow, when not empty, lists the only client addresses served;
	// Deny lists refused ones (checked first). Others get 403. The client
	// address is the connection's peer after a PROXY header, or the
	// X-Forwarded-For client a trusted proxy reports.
	Allow, Deny []netip.Prefix
	RateLimit   *RateLimit
	BasicAuth   *BasicAuth
	// ExternalAuth asks an HTTP service whether to serve each request.
	ExternalAuth *ExternalAuth
	// Affinity sends a client's requests to one endpoint.
	Affinity *CookieAffinity
	// ErrorCodes are upstream response statuses replaced by the answer of
	// DefaultUpstream (ingress-nginx's custom-http-errors).
	ErrorCodes []int
	// DefaultUpstream names the upstream serving requests whose own
	// upstream has no endpoint, and the error pages (ingress-nginx's
	// default-backend annotation); empty: none.
	DefaultUpstream string

	// Set by Update: the state that outlives a configuration.
	limiter   *rateLimiter
	verified  *verifiedCache
	authCache *authCache
}

// Denial reasons, the reason label of nodegress_http_denied_requests_total.
const (
	denySourceRange = "source_range"
	denyRateLimit   = "rate_limit"
	denyConnLimit   = "connection_limit"
	denyBasicAuth   = "basic_auth"
	// denyBasicAuthBusy: the password was not checked, no bcrypt slot
	// freed within Options.PasswordCheckWait (503) or the client left.
	denyBasicAuthBusy = "basic_auth_busy"
	denyExtAuth       = "external_auth"
	denyExtAuthErr    = "external_auth_error"
	denyMisconfig     = "misconfigured"
)

// accessRuntime keeps what must survive configuration updates: a rate
// limiter's counters live as long as its Ingress keeps the same limits,
// and verified passwords as long as the Ingress exists.
type accessRuntime struct {
	mu         sync.Mutex
	limiters   map[string]*rateLimiter
	verified   map[string]*verifiedCache
	authCaches map[string]*authCache
	// maxClients caps the client addresses a rate limiter tracks.
	maxClients int
	auth       *http.Client
}

func newAccessRuntime(o *Options) *accessRuntime {
	return &accessRuntime{limiters: map[string]*rateLimiter{}, verified: map[string]*verifiedCache{}, authCaches: map[string]*authCache{},
		maxClients: o.MaxRateLimitClients, auth: newAuthClient()}
}

// attach gives every Access of cfg its long-lived state, creating what is
// new and dropping what no route uses any more.
func (rt *accessRuntime) attach(cfg *Config) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	limiters := map[string]*rateLimiter{}
	verified := map[string]*verifiedCache{}
	authCaches := map[string]*authCache{}
	seen := map[*Access]bool{}
	add := func(ingress string, a *Access) {
		// The routes of an Ingress share its Access; its defaultBackend
		// (DefaultOptions, without a name) does too.
		if a == nil || seen[a] {
			return
		}
		seen[a] = true
		if rl := a.RateLimit; rl != nil {
			k := ingress + "|" + rl.key()
			l := rt.limiters[k]
			if l == nil {
				l = newRateLimiter(rl, rt.maxClients)
			}
			limiters[k] = l
			// Written only when it changes: an Access given again
			// (the same pointer) may be serving requests meanwhile.
			if a.limiter != l {
				a.limiter = l
			}
		}
		if a.BasicAuth != nil {
			v := rt.verified[ingress]
			if v == nil {
				v = newVerifiedCache(maxVerified)
			}
			verified[ingress] = v
			if a.verified != v {
				a.verified = v
			}
		}
		if e := a.ExternalAuth; e != nil && e.CacheKey != "" {
			// Answers depend on the service and the key: a change of
			// either starts afresh.
			k := ingress + "|" + e.URL + "|" + e.Method + "|" + e.CacheKey
			c := rt.authCaches[k]
			if c == nil {
				c = newAuthCache(maxAuthCacheEntries)
			}
			authCaches[k] = c
			if a.authCache != c {
				a.authCache = c
			}
		}
	}
	for i := range cfg.Routes {
		add(cfg.Routes[i].Ingress, cfg.Routes[i].Options.Access)
	}
	add("", cfg.DefaultOptions.Access)
	rt.limiters, rt.verified, rt.authCaches = limiters, verified, authCaches
}

// sweep forgets rate limiter entries that are back to a full allowance.
func (rt *accessRuntime) sweep(now int64) {
	rt.mu.Lock()
	ls := make([]*rateLimiter, 0, len(rt.limiters))
	for _, l := range rt.limiters {
		ls = append(ls, l)
	}
	rt.mu.Unlock()
	for _, l := range ls {
		l.sweep(now)
	}
}

// accessTxn is the part of a request's txn that access control uses.
type accessTxn struct {
	acc *Access
	// client is the address the limits and ranges saw.
	client netip.Addr
	// conn: a limit-connections slot is held, released by finish.
	conn bool
	// atDefault: the request went to the default backend, whose answer
	// is final.
	atDefault bool
	// stickyFor is the route's (or Gateway rule's) cookie affinity and
	// path the matched path; sticky is set when a session cookie is to
	// be sent, cookie.
	stickyFor, sticky *CookieAffinity
	path              string
	cookie            Field
	// authCookies are the Set-Cookie fields of the auth service's
	// answer, sent to the client.
	authCookies []Field
	// baseResp is the response edit the route had before access control
	// added its fields (a Gateway rule's filters); baseSet: it was taken.
	baseResp *HeaderEdit
	baseSet  bool
}

// admit applies a route's access control to a request before an
// endpoint is chosen: 0 lets it through; anything else is the status to
// answer (with tx.location or tx.local when the answer needs them).
func (p *Proxy) admit(tx *txn, a *Access, ci *connInfo, req routedRequest, host string) int {
	tx.access.acc, tx.access.stickyFor = a, a.Affinity
	if a.Denied != "" {
		p.denied(tx, denyMisconfig)
		p.log.Debug("request refused: route misconfigured", "ingress", tx.ingress, "reason", a.Denied)
		return http.StatusServiceUnavailable
	}
	client := p.clientAddr(ci, req)
	tx.access.client = client
	if len(a.Deny) > 0 && inPrefixes(client, a.Deny) || len(a.Allow) > 0 && !inPrefixes(client, a.Allow) {
		p.denied(tx, denySourceRange)
		return http.StatusForbidden
	}
	if l := a.limiter; l != nil && !inPrefixes(client, a.RateLimit.Exempt) {
		if code, reason := l.admit(tx, client); code != 0 {
			p.denied(tx, reason)
			return code
		}
	}
	if b := a.BasicAuth; b != nil {
		// A client side whose gone is live while the request is decided
		// (an HTTP/2 stream's context) needs no clientLeft.
		var gone func() bool
		switch c := req.(type) {
		case interface{ clientLeft() bool }:
			gone = c.clientLeft
		case interface{ gone() bool }:
			gone = c.gone
		}
		ok, err := b.check(req, a.verified, p.opts.PasswordCheckWait, gone)
		switch {
		case errors.Is(err, errClientLeft):
			p.denied(tx, denyBasicAuthBusy)
			return StatusClientClosed
		case err != nil:
			// The credentials were not checked: not a 401, which would
			// ask a user with the right password for it again.
			p.denied(tx, denyBasicAuthBusy)
			p.log.Debug("basic auth not checked", "ingress", tx.ingress, "err", err)
			return http.StatusServiceUnavailable
		case !ok:
			p.denied(tx, denyBasicAuth)
			tx.local = b.challengeFields()
			return http.StatusUnauthorized
		}
	}
	if e := a.ExternalAuth; e != nil {
		if code := p.externalAuth(tx, e, ci, req, host); code != 0 {
			return code
		}
	}
	return 0
}

// denied counts a refused request.
func (p *Proxy) denied(tx *txn, reason string) {
	p.metrics.denied.WithLabelValues(tx.ingress, reason).Inc()
}

// accessPool returns the pool a request of an access-controlled route
// goes to: its own, or the default backend's when its own has no ready
// endpoint (ingress-nginx's default-backend annotation), which then gets
// the request with the fields of a 503 error page.
func accessPool(tx *txn, cur *state, a *Access, pl *pool, req routedRequest) *pool {
	if a.DefaultUpstream == "" || pl != nil && len(*pl.ready.Load()) > 0 {
		return pl
	}
	dpl := cur.pools[a.DefaultUpstream]
	if dpl == nil {
		return pl
	}
	tx.reqEdit = mergeEdits(tx.reqEdit, &HeaderEdit{Set: errorPageFields(tx, req, http.StatusServiceUnavailable)})
	tx.up = cur.table.upstreams[a.DefaultUpstream]
	tx.access.atDefault = true
	return dpl
}

// releaseAccess ends what admit started; finish calls it.
func (p *Proxy) releaseAccess(tx *txn) {
	if tx.access.conn {
		tx.access.acc.limiter.release(tx.access.client)
		tx.access.conn = false
	}
}

// fieldLister lists a request's header fields, every line of each.
type fieldLister interface {
	eachField(fn func(name, value string))
}

func (hc *h1conn) eachField(fn func(name, value string)) {
	for i := range hc.req.fields {
		f := &hc.req.fields[i]
		fn(bstr(f.name), bstr(f.value))
	}
}

func (s *h2stream) eachField(fn func(name, value string)) {
	for k, vv := range s.r.Header {
		for _, v := range vv {
			fn(k, v)
		}
	}
}

// fieldValues returns every value of the fields called name.
func fieldValues(req routedRequest, name string) []string {
	var out []string
	if fl, ok := req.(fieldLister); ok {
		fl.eachField(func(k, v string) {
			if strings.EqualFold(k, name) {
				out = append(out, v)
			}
		})
	}
	return out
}

// clientAddr is the request's client address as the forwarded set
// decides it (forwarded.go): the peer, or the X-Forwarded-For client
// when the peer is a trusted proxy.
func (p *Proxy) clientAddr(ci *connInfo, req routedRequest) netip.Addr {
	if !ci.trusted {
		return ci.peer
	}
	chain := fieldValues(req, hdrXFF)
	if len(chain) == 0 {
		return ci.peer
	}
	a, err := netip.ParseAddr(realClient(chain, ci.peerStr, p.opts.TrustedProxies))
	if err != nil {
		return ci.peer
	}
	return a.Unmap()
}
