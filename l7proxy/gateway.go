package l7proxy

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Gateway API routing. Connections to a Gateway listener's frontend
// (address:port) are routed by the HTTPRoutes attached to the listener,
// with the Gateway API's matching rules; every other connection by the
// Ingress route table. The controller resolves what the API leaves to
// it (which routes attach, their effective hostnames, backend
// references) and gives the proxy the result.

// Listener is one Gateway listener.
type Listener struct {
	// Name is "namespace/gateway/listener", for logs and metrics.
	Name string
	// Frontends are the address:port pairs whose connections the
	// listener serves: the Gateway's addresses and the listener's port.
	Frontends []netip.AddrPort
	// Hostname is exact, a "*.suffix" wildcard (one or more labels) or
	// empty for every host. Of several listeners on one frontend, the one
	// with the most specific matching hostname serves a request.
	Hostname string
	// Kind is what the listener does: serve HTTPRoutes (the zero value)
	// or forward TLS streams by TLSRoutes (stream.go).
	Kind ListenerKind
	// Routes attached to the listener, in precedence order (oldest
	// first, then by namespace/name).
	Routes []HTTPRoute
	// TLSRoutes attached to a TLS listener, in precedence order.
	TLSRoutes []TLSRoute
	// ClientValidation, on a listener terminating TLS, asks its
	// frontends' clients for certificates.
	ClientValidation *ClientValidation
	// IngressFallback, on a TLS passthrough listener, makes its
	// frontends also the Ingress HTTPS frontends: a connection whose
	// server name no stream listener serves is terminated and routed by
	// the Ingress routes, instead of refused (ingress-nginx's
	// ssl-passthrough, on the node's HTTPS port).
	IngressFallback bool
}

// HTTPRoute is one HTTPRoute as attached to a listener.
type HTTPRoute struct {
	// Source is "namespace/name", for logs and metrics.
	Source string
	// Hostnames are the route's effective hostnames on this listener
	// (its own intersected with the listener's); empty means every host
	// the listener serves.
	Hostnames []string
	Rules     []HTTPRouteRule
}

// HTTPRouteRule is one rule: requests matching any of its matches go to
// its backends, through its filters.
type HTTPRouteRule struct {
	// Matches: none means every request (a PathPrefix "/" match).
	Matches  []HTTPMatch
	Backends []WeightedBackend
	Filters  Filters
	// Timeout bounds the whole request (0: none), BackendTimeout each
	// attempt at a backend (0: the upstream's read timeout).
	Timeout        time.Duration
	BackendTimeout time.Duration
	// Retry sends requests again after failed attempts (nil: never,
	// besides the attempt loop's own rules).
	Retry *Retry
	// Affinity keeps a client on one endpoint by cookie (the rule's
	// sessionPersistence; nil: none).
	Affinity *CookieAffinity
}

// Retry is a rule's retry policy. A request is sent again when an
// attempt fails to connect, gets no response (reset, backend timeout) or
// gets one of Codes, as long as it has no body (so it can be replayed),
// the client is there, and the rule's request timeout leaves room for the
// wait.
type Retry struct {
	Codes []int
	// Attempts bounds the retries, the first attempt not counted.
	Attempts int
	// Backoff is the wait before the first retry, doubled for each next
	// one (up to a second, or Backoff when longer).
	Backoff time.Duration
}

// HTTPMatch is one match of a rule; every condition set must hold.
type HTTPMatch struct {
	PathType PathType // PathExact, PathPrefix or PathRegex
	Path     string   // empty: "/" prefix
	Method   string   // empty: any
	Headers  []ValueMatch
	Query    []ValueMatch
	// Cookies match cookies of the request's Cookie field by name
	// (exact) and value. The Gateway API has no such match: Ingress
	// canaries (canary-by-cookie) use it.
	Cookies []ValueMatch
}

// PathRegex matches the path against a regular expression (RE2, anchored
// at both ends).
const PathRegex PathType = 2

// ValueMatch matches a header (name case-insensitive) or query parameter
// (name exact) value exactly or by regular expression.
type ValueMatch struct {
	Name  string
	Value string
	Regex bool
}

// WeightedBackend is one backendRef. An empty Upstream is a reference
// that could not be resolved: requests sent to it get 500.
type WeightedBackend struct {
	Upstream string
	Weight   int32
	// RequestHeaders and ResponseHeaders are the backendRef's own header
	// filters: they apply only to requests sent to this backend, after
	// the rule's.
	RequestHeaders  *HeaderEdit
	ResponseHeaders *HeaderEdit
}

// Filters are a rule's request and response changes.
type Filters struct {
	RequestHeaders  *HeaderEdit
	ResponseHeaders *HeaderEdit
	Redirect        *Redirect
	Rewrite         *Rewrite
	// CORS answers preflight requests and marks cross-origin responses.
	CORS *CORS
	// Mirrors are sent a copy of the requests (RequestMirror).
	Mirrors []Mirror
}

// gwFilters are the request and response changes for one backend of a
// rule: the rule's, then the backend's.
type gwFilters struct {
	reqEdit, respEdit *HeaderEdit
	rewrite           *Rewrite
	// rewriteRe is the compiled Pattern of a ReplaceRegexMatch rewrite.
	rewriteRe *regexp.Regexp
}

// HeaderEdit sets (replaces), adds (appends) and removes header fields.
// Names are canonical (textproto.CanonicalMIMEHeaderKey).
type HeaderEdit struct {
	Set    []Field
	Add    []Field
	Remove []string
}

// Field is one header field.
type Field struct{ Name, Value string }

// Redirect answers with a redirect instead of forwarding. Empty fields
// keep the request's value.
type Redirect struct {
	Scheme   string
	Hostname string
	Port     int // 0: derived (the scheme's well-known port, else the listener's)
	Path     *PathModifier
	// StatusCode is 301 or 302 (the default); Ingress annotations also
	// use 303, 307 and 308.
	StatusCode int
	// Location, when set, is the whole Location, sent as is: the other
	// fields and the request's target are not used (ingress-nginx's
	// permanent-redirect and temporal-redirect).
	Location string
}

// Rewrite changes the request before it is forwarded.
type Rewrite struct {
	Hostname string
	Path     *PathModifier
}

// PathModifier replaces the whole path, or the prefix the rule's match
// matched, or rewrites the path by a regular expression.
type PathModifier struct {
	ReplaceFullPath    bool
	ReplacePrefixMatch bool
	// ReplaceRegexMatch is nginx's `rewrite "(?i)Pattern" Value`, which
	// ingress-nginx's rewrite-target writes: when Pattern (RE2, matched
	// case-insensitively, unanchored) matches the path, the whole path
	// becomes Value with $1 to $9 replaced by the match's groups (an
	// unmatched group by nothing); a path it does not match is left as
	// it is.
	ReplaceRegexMatch bool
	Pattern           string
	Value             string
}

// gwTables are the compiled listeners, by frontend.
type gwTables map[netip.AddrPort]*gwFrontend

// gwFrontend holds the listeners of one frontend, most specific hostname
// first.
type gwFrontend struct {
	listeners []*gwListener
}

type gwListener struct {
	name     string
	host     string // normalized; "*.x" kept as ".x" suffix
	wildcard bool
	rules    hostRules[*gwEntry]
}

// gwEntry is one match of one rule, compiled.
type gwEntry struct {
	route *HTTPRoute
	rule  *HTTPRouteRule
	// filters are the rule's request and response changes with each
	// backend's own merged in (by backend index).
	filters []gwFilters
	cors    *corsPolicy
	match   HTTPMatch
	path    string         // PathPrefix: without trailing '/', except "/"
	re      *regexp.Regexp // PathRegex
	hdrRe   []*regexp.Regexp
	qryRe   []*regexp.Regexp
	ckRe    []*regexp.Regexp
	source  string
	// total is the sum of the backends' weights.
	total int64
}

// hostRules indexes entries by the hostnames they apply to: precise names,
// wildcard suffixes (longest first) and every host.
type hostRules[E any] struct {
	precise  map[string][]E
	suffixes []string // ".example.com", longest first
	wildcard map[string][]E
	anyHost  []E
}

func (h *hostRules[E]) add(host string, e E) {
	switch {
	case host == "":
		h.anyHost = append(h.anyHost, e)
	case strings.HasPrefix(host, "*."):
		if h.wildcard == nil {
			h.wildcard = map[string][]E{}
		}
		s := host[1:]
		if _, ok := h.wildcard[s]; !ok {
			h.suffixes = append(h.suffixes, s)
		}
		h.wildcard[s] = append(h.wildcard[s], e)
	default:
		if h.precise == nil {
			h.precise = map[string][]E{}
		}
		h.precise[host] = append(h.precise[host], e)
	}
}

// each visits the entry lists that apply to host, most specific first,
// until visit returns true.
func (h *hostRules[E]) each(host string, visit func([]E) bool) {
	if es, ok := h.precise[host]; ok && visit(es) {
		return
	}
	for _, s := range h.suffixes {
		if len(host) > len(s) && strings.HasSuffix(host, s) && visit(h.wildcard[s]) {
			return
		}
	}
	if len(h.anyHost) > 0 {
		visit(h.anyHost)
	}
}

var (
	errListenerNoFrontend = errors.New("listener has no frontend")
	errMatchPathType      = errors.New("unknown path match type")
	errMatchRegex         = errors.New("invalid regular expression")
	errRewritePrefix      = errors.New("ReplacePrefixMatch needs a PathPrefix match")
	errRewriteTemplate    = errors.New("invalid rewrite target")
)

// compileGateways builds the listeners' tables. A listener or rule that
// cannot be compiled is skipped and reported; the rest serves.
func compileGateways(ls []Listener) (gwTables, []error) {
	var errs []error
	t := gwTables{}
	for i := range ls {
		l := &ls[i]
		if l.Kind != ListenerHTTPRoutes {
			continue
		}
		if len(l.Frontends) == 0 {
			errs = append(errs, fmt.Errorf("listener %s: %w", l.Name, errListenerNoFrontend))
			continue
		}
		gl := &gwListener{name: l.Name}
		gl.host = strings.ToLower(strings.TrimSuffix(l.Hostname, "."))
		gl.wildcard = strings.HasPrefix(gl.host, "*.")
		var entries []*gwEntry
		for ri := range l.Routes {
			r := &l.Routes[ri]
			for ki := range r.Rules {
				rule := &r.Rules[ki]
				es, err := compileRule(r, rule, ki)
				if err != nil {
					errs = append(errs, fmt.Errorf("listener %s: httproute %s rule %d: %w", l.Name, r.Source, ki, err))
					continue
				}
				entries = append(entries, es...)
			}
		}
		// Stable: equal precedence keeps route order, then rule and
		// match order (the API's tie-breakers).
		slices.SortStableFunc(entries, compareEntries)
		for _, e := range entries {
			hosts := e.route.Hostnames
			if len(hosts) == 0 {
				hosts = []string{""}
			}
			for _, h := range hosts {
				gl.rules.add(strings.ToLower(h), e)
			}
		}
		slices.SortStableFunc(gl.rules.suffixes, func(a, b string) int { return len(b) - len(a) })
		for _, fe := range l.Frontends {
			f := t[fe]
			if f == nil {
				f = &gwFrontend{}
				t[fe] = f
			}
			f.listeners = append(f.listeners, gl)
		}
	}
	for _, f := range t {
		slices.SortStableFunc(f.listeners, func(a, b *gwListener) int {
			return hostSpecificity(b.host, b.wildcard) - hostSpecificity(a.host, a.wildcard)
		})
	}
	return t, errs
}

func compileRule(r *HTTPRoute, rule *HTTPRouteRule, index int) ([]*gwEntry, error) {
	matches := rule.Matches
	if len(matches) == 0 {
		matches = []HTTPMatch{{PathType: PathPrefix, Path: "/"}}
	}
	var total int64
	fl := &rule.Filters
	var rewriteRe *regexp.Regexp
	if rw := fl.Rewrite; rw != nil && rw.Path != nil && rw.Path.ReplaceRegexMatch {
		var err error
		if rewriteRe, err = compileRewrite(rw.Path); err != nil {
			return nil, err
		}
	}
	filters := make([]gwFilters, len(rule.Backends))
	for i, b := range rule.Backends {
		total += int64(max(b.Weight, 0))
		filters[i] = gwFilters{reqEdit: mergeEdits(fl.RequestHeaders, b.RequestHeaders),
			respEdit: mergeEdits(fl.ResponseHeaders, b.ResponseHeaders), rewrite: fl.Rewrite, rewriteRe: rewriteRe}
	}
	var cors *corsPolicy
	if fl.CORS != nil {
		var err error
		if cors, err = compileCORS(fl.CORS); err != nil {
			return nil, err
		}
	}
	var out []*gwEntry
	for _, m := range matches {
		e := &gwEntry{route: r, rule: rule, match: m, total: total, filters: filters, cors: cors,
			source: fmt.Sprintf("httproute %s rule %d", r.Source, index)}
		if m.Path == "" {
			m.Path, e.match.Path = "/", "/"
		}
		switch m.PathType {
		case PathExact:
			e.path = m.Path
		case PathPrefix:
			e.path = m.Path
			if len(e.path) > 1 {
				e.path = strings.TrimSuffix(e.path, "/")
			}
		case PathRegex:
			re, err := regexp.Compile("^(?:" + m.Path + ")$")
			if err != nil {
				return nil, fmt.Errorf("%w %q: %w", errMatchRegex, m.Path, err)
			}
			e.re = re
		default:
			return nil, fmt.Errorf("%w %d", errMatchPathType, m.PathType)
		}
		if p := pathModifier(rule); p != nil && p.ReplacePrefixMatch && m.PathType != PathPrefix {
			return nil, errRewritePrefix
		}
		for _, h := range m.Headers {
			var re *regexp.Regexp
			if h.Regex {
				var err error
				if re, err = regexp.Compile(h.Value); err != nil {
					return nil, fmt.Errorf("header %s: %w %q: %w", h.Name, errMatchRegex, h.Value, err)
				}
			}
			e.hdrRe = append(e.hdrRe, re)
		}
		for _, q := range m.Query {
			var re *regexp.Regexp
			if q.Regex {
				var err error
				if re, err = regexp.Compile(q.Value); err != nil {
					return nil, fmt.Errorf("query %s: %w %q: %w", q.Name, errMatchRegex, q.Value, err)
				}
			}
			e.qryRe = append(e.qryRe, re)
		}
		for _, c := range m.Cookies {
			var re *regexp.Regexp
			if c.Regex {
				var err error
				if re, err = regexp.Compile(c.Value); err != nil {
					return nil, fmt.Errorf("cookie %s: %w %q: %w", c.Name, errMatchRegex, c.Value, err)
				}
			}
			e.ckRe = append(e.ckRe, re)
		}
		out = append(out, e)
	}
	return out, nil
}

// CheckRegexRewrite reports a ReplaceRegexMatch modifier the proxy cannot
// apply: a pattern RE2 does not accept, or a template with a '$' not
// followed by a digit 1-9, or not starting with '/' or a group.
func CheckRegexRewrite(pm *PathModifier) error {
	_, err := compileRewrite(pm)
	return err
}

// compileRewrite compiles a ReplaceRegexMatch modifier's pattern and
// checks its template: only $1 to $9 may follow a '$' (nginx would expand
// its variables there, which the proxy does not have).
func compileRewrite(pm *PathModifier) (*regexp.Regexp, error) {
	re, err := regexp.Compile("(?i)" + pm.Pattern)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %w", errMatchRegex, pm.Pattern, err)
	}
	v := pm.Value
	for i := strings.IndexByte(v, '$'); i >= 0; i = strings.IndexByte(v, '$') {
		if i+1 >= len(v) || v[i+1] < '1' || v[i+1] > '9' {
			return nil, fmt.Errorf("%w %q: only $1 to $9 may follow '$'", errRewriteTemplate, pm.Value)
		}
		v = v[i+2:]
	}
	if !strings.HasPrefix(pm.Value, "/") && !strings.HasPrefix(pm.Value, "$") {
		return nil, fmt.Errorf("%w %q: must start with '/' or a group", errRewriteTemplate, pm.Value)
	}
	return re, nil
}

func pathModifier(rule *HTTPRouteRule) *PathModifier {
	switch {
	case rule.Filters.Rewrite != nil && rule.Filters.Rewrite.Path != nil:
		return rule.Filters.Rewrite.Path
	case rule.Filters.Redirect != nil:
		return rule.Filters.Redirect.Path
	}
	return nil
}

// compareEntries orders matches by the HTTPRoute precedence: an Exact
// path, then a regular expression (longest first: implementation-specific
// in the API), then the longest PathPrefix; then a method match, more
// header matches, more query matches.
func compareEntries(a, b *gwEntry) int {
	rank := func(e *gwEntry) int {
		switch e.match.PathType {
		case PathExact:
			return 0
		case PathRegex:
			return 1
		}
		return 2
	}
	if ra, rb := rank(a), rank(b); ra != rb {
		return ra - rb
	}
	if la, lb := len(a.match.Path), len(b.match.Path); a.match.PathType != PathExact && la != lb {
		if a.match.PathType == PathPrefix {
			la, lb = len(a.path), len(b.path)
		}
		if la != lb {
			return lb - la
		}
	}
	if ma, mb := a.match.Method != "", b.match.Method != ""; ma != mb {
		if ma {
			return -1
		}
		return 1
	}
	if d := len(b.match.Headers) - len(a.match.Headers); d != 0 {
		return d
	}
	return len(b.match.Query) - len(a.match.Query)
}

// gwRequest is what Gateway matching reads of a request.
type gwRequest interface {
	method() string
	// header returns the first value of a field, by canonical name.
	headerValue(name string) (string, bool)
	// rawQuery is the request target's query, without '?'.
	rawQuery() string
}

// match finds the rule for a request on frontend f. host is normalized
// (lowercase, no port).
func (f *gwFrontend) match(host, path string, req gwRequest) (*gwListener, *gwEntry) {
	if l := f.listenerFor(host); l != nil {
		var found *gwEntry
		l.rules.each(host, func(es []*gwEntry) bool {
			for _, e := range es {
				if e.matches(path, req) {
					found = e
					return true
				}
			}
			return false
		})
		// The most specific listener serving the host decides, route or
		// not.
		return l, found
	}
	return nil, nil
}

// listenerFor returns the most specific listener serving host (normalized).
func (f *gwFrontend) listenerFor(host string) *gwListener {
	for _, l := range f.listeners {
		if hostServes(l.host, l.wildcard, host) {
			return l
		}
	}
	return nil
}

// misdirected reports whether a request on a TLS connection whose SNI
// chose one listener names a host another listener serves: that listener's
// certificate was not the one presented (HTTP/2 connection reuse, or a
// client sending the wrong name), so the request must be retried on a
// connection of its own (421, RFC 9110 §15.5.20).
func (f *gwFrontend) misdirected(sni, host string) bool {
	if sni == "" || len(f.listeners) < 2 {
		return false
	}
	return f.listenerFor(sni) != f.listenerFor(host)
}

func (e *gwEntry) matches(path string, req gwRequest) bool {
	m := &e.match
	switch m.PathType {
	case PathExact:
		if path != e.path {
			return false
		}
	case PathPrefix:
		if !prefixMatch(e.path, path) {
			return false
		}
	case PathRegex:
		if !e.re.MatchString(path) {
			return false
		}
	}
	if m.Method != "" && req.method() != m.Method {
		return false
	}
	for i, h := range m.Headers {
		v, ok := req.headerValue(h.Name)
		if !ok || !valueMatches(v, h.Value, e.hdrRe[i]) {
			return false
		}
	}
	if len(m.Query) > 0 {
		q := req.rawQuery()
		for i, qm := range m.Query {
			v, ok := queryValue(q, qm.Name)
			if !ok || !valueMatches(v, qm.Value, e.qryRe[i]) {
				return false
			}
		}
	}
	if len(m.Cookies) > 0 {
		for i, cm := range m.Cookies {
			v, ok := requestCookie(req, cm.Name)
			if !ok || !valueMatches(v, cm.Value, e.ckRe[i]) {
				return false
			}
		}
	}
	return true
}

// cookieInField returns the value of the first cookie called name in a
// Cookie field ("a=1; b=2"), without quotes around it.
func cookieInField(field, name string) (string, bool) {
	for field != "" {
		var pair string
		pair, field, _ = strings.Cut(field, ";")
		k, v, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if ok && k == name {
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			return v, true
		}
	}
	return "", false
}

// requestCookie returns the value of the first cookie called name in the
// request's Cookie fields (HTTP/2 clients may send one field per cookie,
// RFC 9113 §8.2.3); a request that cannot list its fields has its first
// Cookie field read.
func requestCookie(req interface {
	headerValue(name string) (string, bool)
}, name string) (string, bool) {
	fl, ok := req.(fieldLister)
	if !ok {
		field, _ := req.headerValue("Cookie")
		return cookieInField(field, name)
	}
	var v string
	found := false
	fl.eachField(func(k, field string) {
		if !found && strings.EqualFold(k, "Cookie") {
			v, found = cookieInField(field, name)
		}
	})
	return v, found
}

func valueMatches(v, want string, re *regexp.Regexp) bool {
	if re != nil {
		return re.MatchString(v)
	}
	return v == want
}

// queryValue returns the first value of parameter name in a raw query,
// decoded.
func queryValue(q, name string) (string, bool) {
	for q != "" {
		var kv string
		kv, q, _ = strings.Cut(q, "&")
		k, v, _ := strings.Cut(kv, "=")
		if k == name || strings.ContainsAny(k, "%+") && unescapeQuery(k) == name {
			return unescapeQuery(v), true
		}
	}
	return "", false
}

// pick chooses a backend by weight and returns its index; -1 when every
// weight is 0.
func (e *gwEntry) pick(n uint64) int {
	if e.total <= 0 {
		return -1
	}
	x := int64(n % uint64(e.total))
	for i := range e.rule.Backends {
		if x -= int64(max(e.rule.Backends[i].Weight, 0)); x < 0 {
			return i
		}
	}
	return -1
}
