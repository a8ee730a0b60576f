package l7proxy

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// RouteQuery is a request the proxy is asked about without it being sent:
// a GET without header fields, query or cookies, so rules that match on
// those are reported as not taken.
type RouteQuery struct {
	// Frontend is the address:port the client connects to: a Gateway
	// listener's frontend routes by its HTTPRoutes (and TLSRoutes);
	// anything else, or the zero value, by the Ingress routes.
	Frontend netip.AddrPort
	Host     string
	Path     string
	// Client is the address access control sees.
	Client netip.Addr
	// TLS: the request arrives over HTTPS (no SSL redirect; a frontend
	// with TLS listeners is chosen by the server name Host).
	TLS bool
}

// Reasons of a RouteAnswer, one word each, for scripts.
const (
	RouteForward            = "forward"
	RoutePassthrough        = "tls_passthrough"
	RouteNoRoute            = "no_route"
	RouteBadPath            = "bad_path"
	RouteSSLRedirect        = "ssl_redirect"
	RouteRedirect           = "redirect"
	RouteSourceRange        = "source_range"
	RouteMisconfigured      = "misconfigured"
	RouteNoEndpoints        = "no_endpoints"
	RouteUnresolvedBackend  = "unresolved_backend"
	RouteUnknownServiceName = "no_upstream"
)

// RouteAnswer is what the proxy's live configuration does with a
// RouteQuery, and why.
type RouteAnswer struct {
	// Status is the local answer, 0 when the request is forwarded.
	Status int    `json:"status"`
	Reason string `json:"reason"`
	// Source is the Ingress or route ("namespace/name") that decided;
	// Listener the Gateway listener, if any.
	Source   string `json:"source,omitempty"`
	Listener string `json:"listener,omitempty"`
	// Match is the route or rule match taken, e.g. `foo.example/api
	// (Prefix)`.
	Match    string `json:"match,omitempty"`
	Location string `json:"location,omitempty"`
	// Backends are the upstreams requests may go to, by weight.
	Backends []RouteBackend `json:"backends,omitempty"`
	// Notes are what else applies: filters, rewrites, authentication,
	// rules that were skipped because they match on a request's fields.
	Notes []string `json:"notes,omitempty"`
}

// RouteBackend is one upstream of a RouteAnswer with its endpoints.
type RouteBackend struct {
	Upstream string `json:"upstream"`
	Weight   int32  `json:"weight,omitempty"`
	// Endpoints are "addr:port" with " (terminating)" for those that get
	// no new requests.
	Endpoints []string `json:"endpoints"`
	// Missing: the upstream named is not in the configuration.
	Missing bool `json:"missing,omitempty"`
}

// explainRequest is the request of a RouteQuery as Gateway matching reads
// it: a plain GET.
type explainRequest struct{}

func (explainRequest) method() string                    { return http.MethodGet }
func (explainRequest) headerValue(string) (string, bool) { return "", false }
func (explainRequest) rawQuery() string                  { return "" }

// ExplainRoute answers q from the live configuration, by the rules the
// request pipeline's decide applies; nothing is counted or acquired.
func (p *Proxy) ExplainRoute(q RouteQuery) RouteAnswer {
	cur := p.state.Load()
	path := q.Path
	if path == "" {
		path = "/"
	}
	var a RouteAnswer
	if strings.Contains(path, "//") {
		path = mergeSlashes(path)
		a.Notes = append(a.Notes, "consecutive slashes merged: routed and forwarded as "+path)
	}
	if hasDotSegment(path) {
		return RouteAnswer{Status: http.StatusBadRequest, Reason: RouteBadPath, Notes: []string{"dot segments in the path are refused"}}
	}
	name := NormalizeHost(q.Host)
	if q.TLS && q.Frontend.IsValid() {
		if sf := cur.streams.frontend(q.Frontend); sf != nil {
			if r, done := explainStream(cur, sf, name); done {
				return r
			}
		}
	}
	if f := cur.gateways.frontend(q.Frontend); q.Frontend.IsValid() && f != nil {
		l, e := f.match(name, path, explainRequest{})
		if l != nil {
			a.Listener = l.name
		}
		if e == nil {
			a.Status, a.Reason = http.StatusNotFound, RouteNoRoute
			a.Notes = append(a.Notes, "no HTTPRoute rule of this Gateway frontend matches the host and path")
			return a
		}
		explainRule(&a, cur, e, q, name, path)
		return a
	}
	m, ok := cur.table.Match(q.Host, path)
	if !ok {
		a.Status, a.Reason = http.StatusNotFound, RouteNoRoute
		a.Notes = append(a.Notes, "no Ingress rule matches the host and path, and there is no default backend")
		return a
	}
	a.Source = m.Ingress
	if m.Route != nil {
		a.Match = describeRoute(m.Route)
	} else {
		a.Match = "default backend"
	}
	if !q.TLS && m.Options.SSLRedirect {
		a.Status, a.Reason = http.StatusPermanentRedirect, RouteSSLRedirect
		a.Location = "https://" + stripPort(q.Host) + p.redirectPort + path
		return a
	}
	up := m.Upstream
	if m.rules != nil {
		var taken *gwEntry
		for _, e := range m.rules {
			if e.matches(path, explainRequest{}) {
				taken = e
				break
			}
			a.Notes = append(a.Notes, "rule skipped, its match needs "+describeMatch(e.match))
		}
		if taken == nil {
			a.Status, a.Reason = http.StatusNotFound, RouteNoRoute
			return a
		}
		src, match := a.Source, a.Match
		explainRule(&a, cur, taken, q, name, path)
		a.Source, a.Match = src, match+", rule "+a.Match
		if a.Status != 0 || a.Reason != "" {
			return a
		}
		up = nil
	} else if up == nil {
		a.Status, a.Reason = http.StatusServiceUnavailable, RouteUnknownServiceName
		a.Notes = append(a.Notes, "the route's Service is not known to the proxy")
		return a
	}
	if up != nil {
		a.Backends = []RouteBackend{backendOf(cur, up.Name, 0)}
	}
	explainAccess(&a, m.Options.Access, q.Client)
	if a.Status == 0 && a.Reason == "" {
		finishForward(&a, cur, m.Options.Access)
	}
	return a
}

// explainStream answers for a frontend with TLS stream listeners; done is
// false when the server name is left to the HTTP routes.
func explainStream(cur *state, sf *streamFrontend, sni string) (RouteAnswer, bool) {
	l := sf.listenerFor(sni)
	if l == nil {
		if sf.fallback {
			return RouteAnswer{}, false
		}
		return RouteAnswer{Reason: RouteNoRoute, Notes: []string{"no TLS listener serves server name " + sni + ": the connection is closed"}}, true
	}
	if l.kind != ListenerTLSPassthrough {
		return RouteAnswer{}, false
	}
	a := RouteAnswer{Listener: l.name}
	r := sf.match(sni)
	if r == nil {
		a.Reason = RouteNoRoute
		a.Notes = []string{"no TLSRoute of the passthrough listener serves " + sni + ": the connection is closed"}
		return a, true
	}
	a.Reason, a.Source = RoutePassthrough, r.route.Source
	for _, b := range r.route.Backends {
		a.Backends = append(a.Backends, backendOf(cur, b.Upstream, b.Weight))
	}
	a.Notes = append(a.Notes, "TLS is passed through undecrypted to the backend")
	return a, true
}

// explainRule fills a for Gateway rule e, as applyRule serves it.
func explainRule(a *RouteAnswer, cur *state, e *gwEntry, q RouteQuery, host, path string) {
	a.Source = e.route.Source
	a.Match = describeMatch(e.match)
	fl := &e.rule.Filters
	if r := fl.Redirect; r != nil {
		a.Reason = RouteRedirect
		if r.Location != "" {
			a.Status, a.Location = r.StatusCode, r.Location
		} else {
			scheme, prefix := "http", ""
			if q.TLS {
				scheme = "https"
			}
			if e.match.PathType == PathPrefix {
				prefix = e.path
			}
			a.Status = r.StatusCode
			a.Location = redirectLocation(r, scheme, host, q.Frontend.Port(), prefix, path, "")
		}
		if a.Status == 0 {
			a.Status = http.StatusFound
		}
		return
	}
	for _, b := range e.rule.Backends {
		if b.Upstream == "" {
			a.Backends = append(a.Backends, RouteBackend{Upstream: "(unresolved reference)", Weight: b.Weight, Missing: true})
			continue
		}
		a.Backends = append(a.Backends, backendOf(cur, b.Upstream, b.Weight))
	}
	if rw := fl.Rewrite; rw != nil {
		if rw.Hostname != "" {
			a.Notes = append(a.Notes, "host rewritten to "+rw.Hostname)
		}
		if rw.Path != nil {
			a.Notes = append(a.Notes, "path rewritten ("+describeModifier(rw.Path)+")")
		}
	}
	if fl.RequestHeaders != nil || fl.ResponseHeaders != nil {
		a.Notes = append(a.Notes, "header filters apply")
	}
	if len(fl.Mirrors) > 0 {
		a.Notes = append(a.Notes, fmt.Sprintf("mirrored to %d upstream(s)", len(fl.Mirrors)))
	}
	if fl.CORS != nil {
		a.Notes = append(a.Notes, "CORS policy applies")
	}
	if e.rule.Affinity != nil {
		a.Notes = append(a.Notes, "cookie session affinity")
	}
	if len(e.rule.Backends) == 0 || e.total <= 0 {
		a.Status, a.Reason = http.StatusInternalServerError, RouteUnresolvedBackend
		a.Notes = append(a.Notes, "the rule has no backend with weight: 500")
		return
	}
	// A Gateway rule has no access control: finish here unless an
	// Ingress route's access control follows (its caller decides).
	if q.Frontend.IsValid() && cur.gateways.frontend(q.Frontend) != nil {
		finishForward(a, cur, nil)
	}
}

// explainAccess applies an Ingress route's access control for client.
func explainAccess(a *RouteAnswer, acc *Access, client netip.Addr) {
	if acc == nil {
		return
	}
	if acc.Denied != "" {
		a.Status, a.Reason = http.StatusServiceUnavailable, RouteMisconfigured
		a.Notes = append(a.Notes, "route refused as misconfigured: "+acc.Denied)
		return
	}
	if len(acc.Deny) > 0 && inPrefixes(client, acc.Deny) || len(acc.Allow) > 0 && !inPrefixes(client, acc.Allow) {
		a.Status, a.Reason = http.StatusForbidden, RouteSourceRange
		a.Notes = append(a.Notes, fmt.Sprintf("client %s is not in the route's allowed source ranges %v (denied %v)", client, acc.Allow, acc.Deny))
		return
	}
	if len(acc.Allow) > 0 || len(acc.Deny) > 0 {
		a.Notes = append(a.Notes, fmt.Sprintf("client %s passes the route's source ranges", client))
	}
	if acc.RateLimit != nil {
		a.Notes = append(a.Notes, "rate limited")
	}
	if acc.BasicAuth != nil {
		a.Notes = append(a.Notes, "basic authentication required (401 without valid credentials)")
	}
	if acc.ExternalAuth != nil {
		a.Notes = append(a.Notes, "an external authentication service decides each request")
	}
}

// finishForward sets the verdict of a request that reaches its backends:
// forwarded when one has an endpoint that takes new requests, else 503
// (or the access control's default upstream).
func finishForward(a *RouteAnswer, cur *state, acc *Access) {
	for _, b := range a.Backends {
		if b.ready() {
			a.Reason = RouteForward
			return
		}
	}
	if acc != nil && acc.DefaultUpstream != "" {
		d := backendOf(cur, acc.DefaultUpstream, 0)
		if d.ready() {
			a.Reason = RouteForward
			a.Backends = append(a.Backends, d)
			a.Notes = append(a.Notes, "no endpoint of the route's Service: served by the default backend "+acc.DefaultUpstream)
			return
		}
	}
	a.Status, a.Reason = http.StatusServiceUnavailable, RouteNoEndpoints
	a.Notes = append(a.Notes, "no endpoint takes new requests: 503")
}

func (b RouteBackend) ready() bool {
	for _, e := range b.Endpoints {
		if !strings.HasSuffix(e, terminatingSuffix) {
			return true
		}
	}
	return false
}

const terminatingSuffix = " (terminating)"

func backendOf(cur *state, name string, weight int32) RouteBackend {
	b := RouteBackend{Upstream: name, Weight: weight, Endpoints: []string{}}
	up := cur.table.upstreams[name]
	if up == nil {
		b.Missing = true
		return b
	}
	for _, e := range up.Endpoints {
		s := e.Addr.String()
		if e.Terminating {
			s += terminatingSuffix
		}
		b.Endpoints = append(b.Endpoints, s)
	}
	return b
}

var pathTypeNames = map[PathType]string{PathPrefix: "Prefix", PathExact: "Exact", PathRegex: "Regex"}

func describeRoute(r *Route) string {
	host := r.Host
	if host == "" {
		host = "*"
	}
	return fmt.Sprintf("%s%s (%s)", host, r.Path, pathTypeNames[r.PathType])
}

func describeMatch(m HTTPMatch) string {
	path := m.Path
	if path == "" {
		path = "/"
	}
	s := fmt.Sprintf("%s (%s)", path, pathTypeNames[m.PathType])
	if m.Method != "" {
		s += " method " + m.Method
	}
	for _, h := range m.Headers {
		s += " header " + h.Name
	}
	for _, v := range m.Query {
		s += " query " + v.Name
	}
	for _, c := range m.Cookies {
		s += " cookie " + c.Name
	}
	return s
}

func describeModifier(pm *PathModifier) string {
	switch {
	case pm.ReplaceFullPath:
		return "full path to " + pm.Value
	case pm.ReplacePrefixMatch:
		return "matched prefix to " + pm.Value
	case pm.ReplaceRegexMatch:
		return pm.Pattern + " to " + pm.Value
	}
	return "unchanged"
}
