package l7proxy

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// The Gateway API's CORS filter. A preflight request (OPTIONS with Origin
// and Access-Control-Request-Method) is answered by the proxy itself;
// other requests go to the backend, and when their Origin is allowed the
// response gets the Access-Control-Allow-Origin fields. An origin that is
// not allowed gets no CORS field at all (its preflight a 204 without
// them), which makes the browser refuse the cross-origin request.

// CORS is an HTTPRoute CORS filter.
type CORS struct {
	// AllowOrigins are "scheme://host[:port]" origins (without a port,
	// the scheme's default). The host may hold one '*', which matches one
	// or more characters, dots included, where it stands; "*" alone allows
	// every origin.
	AllowOrigins []string
	// AllowCredentials sends Access-Control-Allow-Credentials: true, and
	// makes every wildcard answer echo the request's value instead.
	AllowCredentials bool
	// AllowMethods and AllowHeaders answer a preflight; "*" alone allows
	// every one.
	AllowMethods []string
	AllowHeaders []string
	// ExposeHeaders are the response fields scripts may read. "*" alone
	// exposes every one, which credentialed requests cannot use: with
	// AllowCredentials it is left out.
	ExposeHeaders []string
	// MaxAge is how many seconds a preflight answer may be cached
	// (0: the API's default, 5).
	MaxAge int32
}

// corsPolicy is a CORS filter compiled for the request path.
type corsPolicy struct {
	anyOrigin   bool
	origins     []originPattern
	credentials bool
	anyMethod   bool
	methods     string // joined; "" sends none
	anyHeader   bool
	headers     string
	expose      string
	maxAge      string
}

// originPattern is one allowed origin: the host matches exactly, or with
// a wildcard, what lies between pre and suf is one or more characters.
type originPattern struct {
	scheme, port string
	pre, suf     string
	wild         bool
}

var errCORSOrigin = errors.New("invalid CORS origin")

// CheckCORS reports a CORS filter the proxy cannot apply.
func CheckCORS(c *CORS) error {
	_, err := compileCORS(c)
	return err
}

func compileCORS(c *CORS) (*corsPolicy, error) {
	p := &corsPolicy{credentials: c.AllowCredentials, maxAge: "5"}
	if c.MaxAge > 0 {
		p.maxAge = strconv.Itoa(int(c.MaxAge))
	}
	for _, o := range c.AllowOrigins {
		if o == "*" {
			p.anyOrigin = true
			continue
		}
		scheme, host, port, ok := splitOrigin(o)
		if !ok || strings.Count(host, "*") > 1 {
			return nil, fmt.Errorf("%w %q", errCORSOrigin, o)
		}
		pat := originPattern{scheme: scheme, port: port, suf: host}
		if i := strings.IndexByte(host, '*'); i >= 0 {
			pat.wild, pat.pre, pat.suf = true, host[:i], host[i+1:]
		}
		p.origins = append(p.origins, pat)
	}
	p.anyMethod, p.methods = wildcardList(c.AllowMethods)
	p.anyHeader, p.headers = wildcardList(c.AllowHeaders)
	anyExpose, expose := wildcardList(c.ExposeHeaders)
	switch {
	case anyExpose && !c.AllowCredentials:
		p.expose = "*"
	case !anyExpose:
		p.expose = expose
	}
	return p, nil
}

// wildcardList reports a "*" entry, and joins the other entries.
func wildcardList(vs []string) (bool, string) {
	star := false
	var names []string
	for _, v := range vs {
		if v == "*" {
			star = true
			continue
		}
		names = append(names, v)
	}
	return star, strings.Join(names, ", ")
}

// splitOrigin splits "scheme://host[:port]" into lowercase scheme and
// host and the port, the scheme's default when none is given.
func splitOrigin(o string) (scheme, host, port string, ok bool) {
	scheme, rest, found := strings.Cut(o, "://")
	if !found || scheme == "" || rest == "" || strings.ContainsAny(rest, "/?#@ ") {
		return "", "", "", false
	}
	scheme = strings.ToLower(scheme)
	host = rest
	if i := strings.LastIndexByte(rest, ':'); i >= 0 && !strings.HasSuffix(rest, "]") {
		host, port = rest[:i], rest[i+1:]
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return "", "", "", false
		}
		port = strconv.Itoa(n)
	}
	if host == "" {
		return "", "", "", false
	}
	if port == "" {
		switch scheme {
		case "http":
			port = "80"
		case "https":
			port = "443"
		}
	}
	return scheme, strings.ToLower(host), port, true
}

// allows reports whether a request's Origin may share the response.
func (p *corsPolicy) allows(origin string) bool {
	if p.anyOrigin {
		return true
	}
	scheme, host, port, ok := splitOrigin(origin)
	if !ok {
		return false
	}
	for i := range p.origins {
		o := &p.origins[i]
		if o.scheme != scheme || o.port != port {
			continue
		}
		if !o.wild {
			if host == o.suf {
				return true
			}
			continue
		}
		if len(host) > len(o.pre)+len(o.suf) && strings.HasPrefix(host, o.pre) && strings.HasSuffix(host, o.suf) {
			return true
		}
	}
	return false
}

// allowOrigin is the Access-Control-Allow-Origin value for an allowed
// origin: "*" when every origin is allowed without credentials, else the
// origin itself.
func (p *corsPolicy) allowOrigin(origin string) string {
	if p.anyOrigin && !p.credentials {
		return "*"
	}
	return origin
}

// preflight returns the fields of the answer to a preflight request, nil
// when its origin is not allowed.
func (p *corsPolicy) preflight(req gwRequest, origin string) []Field {
	if !p.allows(origin) {
		return nil
	}
	out := make([]Field, 0, 7)
	out = append(out, Field{"Access-Control-Allow-Origin", p.allowOrigin(origin)})
	if p.credentials {
		out = append(out, Field{"Access-Control-Allow-Credentials", "true"})
	}
	if p.anyMethod {
		// Echoing the method asked for is valid with and without
		// credentials.
		if m, ok := req.headerValue("Access-Control-Request-Method"); ok && m != "" {
			out = append(out, Field{"Access-Control-Allow-Methods", m})
		}
	} else if p.methods != "" {
		out = append(out, Field{"Access-Control-Allow-Methods", p.methods})
	}
	if p.anyHeader {
		if h, ok := req.headerValue("Access-Control-Request-Headers"); ok && h != "" {
			out = append(out, Field{"Access-Control-Allow-Headers", h})
		}
	} else if p.headers != "" {
		out = append(out, Field{"Access-Control-Allow-Headers", p.headers})
	}
	if p.expose != "" {
		out = append(out, Field{"Access-Control-Expose-Headers", p.expose})
	}
	out = append(out, Field{"Access-Control-Max-Age", p.maxAge})
	if out[0].Value != "*" {
		out = append(out, Field{"Vary", "Origin"})
	}
	return out
}

// responseEdit returns base with the CORS fields of a response to an
// allowed origin: set, replacing any the backend sent.
func (p *corsPolicy) responseEdit(origin string, base *HeaderEdit) *HeaderEdit {
	if !p.allows(origin) {
		return base
	}
	e := &HeaderEdit{Set: make([]Field, 0, 3)}
	ao := p.allowOrigin(origin)
	e.Set = append(e.Set, Field{"Access-Control-Allow-Origin", ao})
	if p.credentials {
		e.Set = append(e.Set, Field{"Access-Control-Allow-Credentials", "true"})
	}
	if p.expose != "" {
		e.Set = append(e.Set, Field{"Access-Control-Expose-Headers", p.expose})
	}
	if ao != "*" {
		e.Add = []Field{{"Vary", "Origin"}}
	}
	return mergeEdits(base, e)
}

// isPreflight reports a CORS preflight request.
func isPreflight(req gwRequest) (origin string, ok bool) {
	if req.method() != http.MethodOptions {
		return "", false
	}
	origin, ok = req.headerValue("Origin")
	if !ok {
		return "", false
	}
	_, ok = req.headerValue("Access-Control-Request-Method")
	return origin, ok
}
