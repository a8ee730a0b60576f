package l7proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// ExternalAuth asks an HTTP service whether to serve each request, as
// nginx's auth_request does for ingress-nginx's auth-url: the service
// gets the request's header fields (never its body) and the original
// method and URL; a 2xx answer lets the request through, 401 and 403 are
// passed to the client (401 becomes a redirect to SigninURL when set),
// anything else, a timeout or an unreachable service gives 500: the
// route fails closed.
type ExternalAuth struct {
	// URL of the service (http or https). It and SigninURL may hold the
	// variables AuthVariables lists, expanded per request.
	URL string
	// Method of the auth request; empty: GET.
	Method string
	// SigninURL, when set, is where a 401 sends the client, with the
	// original URL in the SigninRedirectParam query parameter ("rd").
	SigninURL           string
	SigninRedirectParam string
	// ResponseHeaders are copied from the service's answer into the
	// request sent upstream; a field the answer lacks is removed from
	// the request, so a client cannot supply it.
	ResponseHeaders []string
	// RequestRedirect is the X-Auth-Request-Redirect value sent to the
	// service; empty: the request URI.
	RequestRedirect string
	// Timeout bounds the whole auth request (0: 10s).
	Timeout time.Duration
	// CacheKey, when set, keeps the service's answers, per Ingress, under
	// this key (its variables, CheckAuthCacheKey, expanded per request)
	// for as long as CacheRules say (none: 200, 202 and 401 for 5
	// minutes, ingress-nginx's default). Requests with the same key get
	// the same answer: the key must hold whatever identifies the client
	// (such as $http_authorization).
	CacheKey   string
	CacheRules []AuthCacheRule
}

// AuthVariables are the nginx variables ExternalAuth URLs may hold.
var AuthVariables = []string{"$scheme", "$pass_access_scheme", "$host", "$http_host", "$best_http_host",
	"$request_uri", "$escaped_request_uri"}

// CheckAuthURL reports whether s is an absolute http or https URL once
// its variables are expanded, and holds no other '$' variable: nothing
// else from a request can get into it.
func CheckAuthURL(s string) error {
	r := s
	for _, v := range AuthVariables {
		r = strings.ReplaceAll(r, v, "x")
	}
	if i := strings.IndexByte(r, '$'); i >= 0 {
		return fmt.Errorf("unknown variable at %q: only %s are expanded", r[i:], strings.Join(AuthVariables, ", "))
	}
	u, err := url.Parse(r)
	if err != nil {
		return fmt.Errorf("parse URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return errors.New("want an absolute http:// or https:// URL")
	}
	return nil
}

const defaultAuthTimeout = 10 * time.Second

// maxAuthDrain is how much of an auth answer's body is read (to reuse the
// connection) before it is dropped.
const maxAuthDrain = 16 << 10

func newAuthClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                  nil, // never an environment proxy: the service is in the cluster
			DialContext:            (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost:    64,
			IdleConnTimeout:        90 * time.Second,
			TLSHandshakeTimeout:    5 * time.Second,
			ResponseHeaderTimeout:  defaultAuthTimeout,
			MaxResponseHeaderBytes: 64 << 10,
		},
		// A redirect is an answer like any other: not 2xx, so 500.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// authVars are a request's values of AuthVariables.
type authVars struct {
	scheme, host, uri string
}

func (v *authVars) expand(s string) string {
	if strings.IndexByte(s, '$') < 0 {
		return s
	}
	return strings.NewReplacer(
		"$escaped_request_uri", url.QueryEscape(v.uri),
		"$request_uri", v.uri,
		"$pass_access_scheme", v.scheme,
		"$scheme", v.scheme,
		"$best_http_host", v.host,
		"$http_host", v.host,
		"$host", stripPort(v.host),
	).Replace(s)
}

// authSkip are the client's fields not sent to the auth service: the
// body's framing, hop-by-hop fields, and those set here.
func authSkip(k string) bool {
	switch http.CanonicalHeaderKey(k) {
	case "Host", "Content-Length", "Transfer-Encoding", "Expect", "Connection", "Keep-Alive", "Upgrade", "Te",
		"Trailer", "Proxy-Connection", hdrXFF, hdrXFProto, hdrXFHost, hdrXFPort, hdrXRealIP, hdrForwarded:
		return true
	}
	return false
}

// externalAuth asks e's service about a request: 0 lets it through (with
// the answer's fields added to tx.reqEdit), anything else is the answer.
func (p *Proxy) externalAuth(tx *txn, e *ExternalAuth, ci *connInfo, req routedRequest, host string) int {
	scheme := "http"
	if ci.tls {
		scheme = "https"
	}
	uri := tx.requestURI(req)
	vars := authVars{scheme: scheme, host: host, uri: uri}
	timeout := e.Timeout
	if timeout <= 0 {
		timeout = defaultAuthTimeout
	}
	cache, cacheKey := tx.access.acc.authCache, ""
	if cache != nil && e.CacheKey != "" {
		cacheKey = expandCacheKey(e.CacheKey, req, &vars, tx.access.client)
		if status, header, ok := cache.get(cacheKey, time.Now()); ok {
			return p.authAnswer(tx, e, &vars, status, header)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	method := e.Method
	if method == "" {
		method = http.MethodGet
	}
	ar, err := http.NewRequestWithContext(ctx, method, vars.expand(e.URL), nil)
	if err != nil {
		return p.authFailed(tx, fmt.Errorf("auth request: %w", err))
	}
	h := ar.Header
	if fl, ok := req.(fieldLister); ok {
		fl.eachField(func(k, v string) {
			if !authSkip(k) {
				h.Add(k, v)
			}
		})
	}
	client := tx.access.client.String()
	redirect := e.RequestRedirect
	if redirect == "" {
		redirect = uri
	}
	for _, f := range [...]Field{
		{"X-Original-Url", scheme + "://" + host + uri},
		{"X-Original-Method", req.method()},
		{"X-Original-Uri", uri},
		{"X-Scheme", scheme},
		{"X-Sent-From", "nodegress"},
		{hdrXRealIP, client},
		{hdrXFF, client},
		{"X-Auth-Request-Redirect", redirect},
	} {
		h[f.Name] = []string{f.Value}
	}
	res, err := p.accessRT.auth.Do(ar)
	if err != nil {
		return p.authFailed(tx, err)
	}
	_, _ = io.CopyN(io.Discard, res.Body, maxAuthDrain)
	_ = res.Body.Close()
	if cacheKey != "" {
		cache.put(cacheKey, res.StatusCode, e.answerFields(res.Header), e.cacheTTL(res.StatusCode), time.Now())
	}
	return p.authAnswer(tx, e, &vars, res.StatusCode, res.Header)
}

// answerFields are the fields of an auth answer that authAnswer reads:
// what a cache entry keeps.
func (e *ExternalAuth) answerFields(h http.Header) http.Header {
	out := http.Header{}
	for _, k := range append([]string{"Set-Cookie", "Www-Authenticate"}, e.ResponseHeaders...) {
		if v := h.Values(k); len(v) > 0 {
			out[http.CanonicalHeaderKey(k)] = v
		}
	}
	return out
}

// authAnswer applies the auth service's answer (or a cached one) to a
// request.
func (p *Proxy) authAnswer(tx *txn, e *ExternalAuth, vars *authVars, status int, header http.Header) int {
	res := struct {
		StatusCode int
		Header     http.Header
	}{status, header}
	scheme, host, uri := vars.scheme, vars.host, vars.uri
	switch {
	case res.StatusCode >= 200 && res.StatusCode < 300:
		if len(e.ResponseHeaders) > 0 {
			edit := &HeaderEdit{}
			for _, name := range e.ResponseHeaders {
				if v := res.Header.Values(name); len(v) > 0 {
					edit.Set = append(edit.Set, Field{Name: http.CanonicalHeaderKey(name), Value: strings.Join(v, ", ")})
				} else {
					edit.Remove = append(edit.Remove, http.CanonicalHeaderKey(name))
				}
			}
			// After the rule's own changes (x-forwarded-prefix, a
			// RequestHeaderModifier), which stay: the answer wins only
			// for the fields it names, so a client cannot keep a field
			// the answer lacks.
			tx.reqEdit = mergeEdits(tx.reqEdit, edit)
		}
		if cs := res.Header.Values("Set-Cookie"); len(cs) > 0 {
			for _, c := range cs {
				tx.access.authCookies = append(tx.access.authCookies, Field{Name: "Set-Cookie", Value: c})
			}
			tx.setAccessResponse()
		}
		return 0
	case res.StatusCode == http.StatusUnauthorized:
		p.denied(tx, denyExtAuth)
		if e.SigninURL != "" {
			tx.location = signinLocation(vars.expand(e.SigninURL), e.SigninRedirectParam, scheme, host, uri)
			return http.StatusFound
		}
		tx.local = noFields
		if v := res.Header.Values("Www-Authenticate"); len(v) > 0 {
			tx.local = make([]Field, len(v))
			for i := range v {
				tx.local[i] = Field{Name: "Www-Authenticate", Value: v[i]}
			}
		}
		return http.StatusUnauthorized
	case res.StatusCode == http.StatusForbidden:
		p.denied(tx, denyExtAuth)
		return http.StatusForbidden
	}
	return p.authFailed(tx, fmt.Errorf("auth service answered %d", res.StatusCode))
}

// authFailed answers a request whose auth service could not say yes or
// no: 500, never the backend.
func (p *Proxy) authFailed(tx *txn, err error) int {
	p.denied(tx, denyExtAuthErr)
	// Debug: an unreachable service would log every request; the
	// denial counter shows it.
	p.log.Debug("external auth failed", "ingress", tx.ingress, "err", err)
	return http.StatusInternalServerError
}

// signinLocation is where a 401 sends the client: the sign-in URL with
// the original URL in param (unless the URL already sets it), as
// ingress-nginx builds it.
func signinLocation(signin, param, scheme, host, uri string) string {
	if param == "" {
		param = "rd"
	}
	orig := scheme + "://" + host + url.QueryEscape(uri)
	u, err := url.Parse(signin)
	if err != nil {
		return signin
	}
	q := u.Query()
	switch {
	case len(q) == 0:
		return signin + "?" + param + "=" + orig
	case q.Get(param) != "":
		return signin
	}
	return signin + "&" + param + "=" + orig
}
