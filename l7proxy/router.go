package l7proxy

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// RouteTable is an immutable, compiled Config; safe for concurrent use.
// The proxy builds a new one for every change and swaps the pointer, so a
// request sees one consistent table from Match to the end.
//
// # Matching
//
// Host and path rules follow the Kubernetes Ingress documentation
// (concepts/services-networking/ingress, "Path types", "Multiple matches",
// "Hostname wildcards"):
//
//   - Exact matches the request path byte for byte, case-sensitively.
//   - Prefix splits on '/' and matches element by element: "/foo/bar"
//     matches "/foo/bar" and "/foo/bar/baz" but not "/foo/barbaz"; a
//     trailing slash is ignored on either side ("/foo/" and "/foo" are the
//     same prefix, and both match "/foo" and "/foo/"); "/" matches every
//     path.
//   - ImplementationSpecific does not reach the router: the controller
//     translates it to Prefix, the most common reading among controllers
//     and the one that needs no extra syntax.
//   - When several paths match, the longest wins (a Prefix path counted
//     without its trailing slash); on equal length Exact beats Prefix. As a
//     consequence an Exact match, when there is one, always wins: its length
//     is the whole request path, which no matching prefix can exceed.
//   - PathRegex (the controller's form of ingress-nginx's use-regex and
//     rewrite-target paths) is nginx's `location ~* "^path"`: the path is
//     an RE2 expression matched case-insensitively from the start of the
//     request path and not anchored at its end ("/api/v[0-9]+" matches
//     "/API/v2/users"). Within a host, a matching Exact route wins, then
//     the regular expressions in order of decreasing length of their
//     source (routes listed earlier first on equal length: what
//     ingress-nginx's location order and nginx's first-match rule give),
//     and only then the longest matching Prefix: as in nginx, a matching
//     regular expression beats a longer prefix.
//   - A host is precise ("foo.bar.com", compared case-insensitively after
//     NormalizeHost) or a wildcard "*.foo.com" that covers exactly one more
//     label: "bar.foo.com" matches, "baz.bar.foo.com" and "foo.com" do not.
//     A rule without a host matches every host.
//
// # Precedence between hosts
//
// The Ingress documentation says requests are first matched on host, then
// on path, but not what happens when a host matches and none of its paths
// do. The table falls through, most specific host first:
//
//  1. the routes of the precise host equal to the request's host;
//  2. the routes of the wildcard host covering it (there is at most one:
//     a wildcard covers a single label, so only the request's host minus
//     its first label can be its suffix);
//  3. the routes without a host;
//  4. Config.DefaultUpstream;
//  5. no match: the proxy answers 404.
//
// This is the Gateway API's ordering (a matching precise hostname beats a
// wildcard, which beats no hostname, and a lower level is consulted only
// when the higher one has no matching path). ingress-nginx differs: there a
// host with a server block never reaches the rules without a host (those
// live in the catch-all server); requests for a known host and an unknown
// path go to the default backend. Falling through instead means a host-less
// Ingress (or one Ingress's defaultBackend, which the controller expresses
// as host-less Prefix "/" routes) keeps serving paths a host-specific
// Ingress did not claim, which is what such an Ingress asks for: "the
// Ingress routes all traffic".
//
// # Request paths
//
// Match compares the path it is given, which is r.URL.Path: net/http has
// already percent-decoded it, and the router decodes route paths once at
// Compile so both sides are compared decoded ("%2F" is rejected in route
// paths, as the Ingress API does, so decoding never creates a '/'). Match
// itself does not normalize: "//" and "." or ".." segments are matched as
// they are, so "/a//b" is not under Prefix "/a/b" and "/x/../a" is under
// Prefix "/x", not "/a". Cleaning is the proxy's decision before calling
// Match: it merges consecutive slashes (nginx's merge_slashes) and refuses
// dot segments (Proxy.decide), and the backend sees the path the router
// saw.
//
// # Several Ingresses
//
// Routes of all Ingresses are merged. When two routes claim the same
// (host, path, path type) — with "/foo" and "/foo/" the same Prefix — the
// one listed first in Config.Routes wins and the others are reported by
// Compile. The controller lists routes by Ingress creationTimestamp, then
// namespace/name, so the oldest Ingress keeps a contested path and a newer
// one cannot take it over, as with ingress-nginx.
type RouteTable struct {
	// routes are the table's own copies; Match.Route points into it.
	routes    []Route
	upstreams map[string]*Upstream

	// precise is keyed by normalized host, wildcard by the suffix after
	// "*." (the request host without its first label).
	precise  map[string]*pathSet
	wildcard map[string]*pathSet
	anyHost  *pathSet
	// Key lengths present in precise and wildcard: most requests for a
	// host without rules, and most wildcard suffixes, cost no hashing.
	preciseLens  lengthSet
	wildcardLens lengthSet
	// fallback answers when no route matches; nil without DefaultUpstream.
	fallback *Match
}

// Match is what the route table decided for a request.
type Match struct {
	// Route is the matched route; nil when the default upstream matched.
	Route *Route
	// Upstream is nil when the route names an upstream missing from
	// Config.Upstreams (the Service does not exist): the proxy answers 503.
	Upstream *Upstream
	Options  RouteOptions
	// Ingress is "namespace/name" of the route's Ingress; empty for the
	// default upstream.
	Ingress string
	// rules are the route's compiled Rules (nil without), tried in
	// order.
	rules []*gwEntry
}

// Compile validates cfg and builds its route table. Invalid routes are
// skipped and reported, each error naming the route's Ingress; the rest of
// the table is still usable, so one bad Ingress never takes the others
// down. Compile never panics. The table copies what it keeps (routes,
// upstreams and their endpoint lists), so cfg may be reused afterwards.
//
// A route is invalid when its path does not start with '/', contains
// control characters, whitespace, '?', '#', a bad percent-escape, or one of
// the sequences the Ingress API rejects for Exact and Prefix paths ("//",
// "/./", "/../", "%2F", a final "/." or "/.."); when its host carries a
// port, is an IP address, has a '*' anywhere but as the whole first label,
// or is not a DNS-1123 subdomain; when its path type is unknown; when it
// names no upstream; or when an earlier route already claims the same
// (host, path, path type). Upstream names must be unique; later duplicates
// are reported and ignored.
func Compile(cfg Config) (*RouteTable, []error) {
	var errs []error
	t := &RouteTable{
		routes:    make([]Route, 0, len(cfg.Routes)),
		upstreams: make(map[string]*Upstream, len(cfg.Upstreams)),
		precise:   map[string]*pathSet{},
		wildcard:  map[string]*pathSet{},
	}

	ups := make([]Upstream, len(cfg.Upstreams))
	for i := range cfg.Upstreams {
		u := &cfg.Upstreams[i]
		if u.Name == "" {
			errs = append(errs, fmt.Errorf("upstream %d (%s/%s): %w", i, u.Namespace, u.Service, errUpstreamNoName))
			continue
		}
		if _, dup := t.upstreams[u.Name]; dup {
			errs = append(errs, fmt.Errorf("upstream %q: %w", u.Name, errUpstreamDuplicate))
			continue
		}
		ups[i] = *u
		ups[i].Endpoints = slices.Clone(u.Endpoints)
		t.upstreams[u.Name] = &ups[i]
	}

	type claimKey struct {
		host     string
		wildcard bool
		path     string
		exact    bool
		regex    bool
	}
	claims := make(map[claimKey]int, len(cfg.Routes))
	buckets := map[claimKey][]*pathEntry{} // path and exact unused: one bucket per host
	var order []claimKey                   // buckets in first-seen order, for determinism

	for i := range cfg.Routes {
		r := &cfg.Routes[i]
		host, wild, err := routeHost(r.Host)
		if err != nil {
			errs = append(errs, routeError(r, err))
			continue
		}
		var path string
		var exact bool
		var re *regexp.Regexp
		if r.PathType == PathRegex {
			path = r.Path
			re, err = routeRegex(r.Path)
		} else {
			path, exact, err = routePath(r.Path, r.PathType)
		}
		if err != nil {
			errs = append(errs, routeError(r, err))
			continue
		}
		if r.Upstream == "" && len(r.Rules) == 0 {
			errs = append(errs, routeError(r, errRouteNoUpstream))
			continue
		}
		var rules []*gwEntry
		if len(r.Rules) > 0 {
			if rules, err = compileRouteRules(r); err != nil {
				errs = append(errs, routeError(r, err))
				continue
			}
		}
		k := claimKey{host: host, wildcard: wild, path: path, exact: exact, regex: re != nil}
		if w, taken := claims[k]; taken {
			errs = append(errs, routeError(r, fmt.Errorf("%w by ingress %s (listed earlier)", errRouteConflict, cfg.Routes[w].Ingress)))
			continue
		}
		claims[k] = i

		// Capacity was reserved for every route, so this append never
		// moves the slice and the pointer stays valid.
		t.routes = append(t.routes, *r)
		kept := &t.routes[len(t.routes)-1]
		e := &pathEntry{
			path:  path,
			exact: exact,
			re:    re,
			m: Match{
				Route:    kept,
				Upstream: t.upstreams[r.Upstream],
				Options:  r.Options,
				Ingress:  r.Ingress,
				rules:    rules,
			},
		}
		hk := claimKey{host: host, wildcard: wild}
		if _, seen := buckets[hk]; !seen {
			order = append(order, hk)
		}
		buckets[hk] = append(buckets[hk], e)
	}

	for _, hk := range order {
		ps := newPathSet(buckets[hk])
		switch {
		case hk.host == "":
			t.anyHost = ps
		case hk.wildcard:
			t.wildcard[hk.host] = ps
			t.wildcardLens.add(len(hk.host))
		default:
			t.precise[hk.host] = ps
			t.preciseLens.add(len(hk.host))
		}
	}

	if cfg.DefaultUpstream != "" {
		t.fallback = &Match{
			Upstream: t.upstreams[cfg.DefaultUpstream],
			Options:  cfg.DefaultOptions,
		}
	}
	return t, errs
}

// Match finds the route for a request's Host header value (which may carry
// a port, any case and a trailing dot) and its URL path (r.URL.Path, as
// net/http decoded it; Match does not unescape or clean it). See
// RouteTable for the rules. It does not allocate. A nil table matches
// nothing.
func (t *RouteTable) Match(host, path string) (Match, bool) {
	if t == nil {
		return Match{}, false
	}
	h := trimHost(host)
	if hasUpper(h) {
		return t.matchUpper(h, path)
	}
	return t.match(h, nil, path)
}

// matchUpper lowercases a host with capitals (rare: clients send what the
// user typed) into a stack buffer, kept out of Match so the common case
// does not pay for clearing it.
func (t *RouteTable) matchUpper(h, path string) (Match, bool) {
	if len(h) > maxHostLen {
		return t.match("", nil, path) // no DNS name is that long
	}
	var buf [maxHostLen]byte
	return t.match(h, appendLower(buf[:0], h), path)
}

// match implements Match for host h, whose lowercase spelling is lower
// when h has capitals. Each host lookup exists in both spellings because
// map lookups keyed by string(bytes) do not allocate.
func (t *RouteTable) match(h string, lower []byte, path string) (Match, bool) {
	if t.preciseLens.has(len(h)) {
		var ps *pathSet
		if lower == nil {
			ps = t.precise[h]
		} else {
			ps = t.precise[string(lower)]
		}
		if ps != nil {
			if e := ps.match(path); e != nil {
				return e.m, true
			}
		}
	}
	// Lowercasing keeps byte positions, so i indexes both spellings.
	if i := strings.IndexByte(h, '.'); i > 0 && t.wildcardLens.has(len(h)-i-1) {
		var ps *pathSet
		if lower == nil {
			ps = t.wildcard[h[i+1:]]
		} else {
			ps = t.wildcard[string(lower[i+1:])]
		}
		if ps != nil {
			if e := ps.match(path); e != nil {
				return e.m, true
			}
		}
	}
	if t.anyHost != nil {
		if e := t.anyHost.match(path); e != nil {
			return e.m, true
		}
	}
	if t.fallback != nil {
		return *t.fallback, true
	}
	return Match{}, false
}

// Upstreams returns the table's upstreams by name, for the pool manager.
// The map is a fresh copy; the Upstreams it points to are shared with the
// table and must not be modified.
func (t *RouteTable) Upstreams() map[string]*Upstream {
	if t == nil {
		return map[string]*Upstream{}
	}
	m := make(map[string]*Upstream, len(t.upstreams))
	for k, v := range t.upstreams {
		m[k] = v
	}
	return m
}

var (
	errPathNotAbsolute   = errors.New("path must start with '/'")
	errPathChar          = errors.New("path must not contain control characters, whitespace, '?' or '#'")
	errPathSequence      = errors.New("path must not contain \"//\", \"/./\", \"/../\" or \"%2F\", nor end in \"/.\" or \"/..\"")
	errPathEscape        = errors.New("path has an invalid percent-escape")
	errPathType          = errors.New("unknown path type")
	errRouteNoUpstream   = errors.New("route names no upstream")
	errRouteConflict     = errors.New("host, path and path type already claimed")
	errUpstreamNoName    = errors.New("upstream has no name")
	errUpstreamDuplicate = errors.New("duplicate upstream name, later one ignored")
	errRuleMatchPath     = errors.New("a route's rule may match an Exact path only (the route matched the path already)")
)

// routeRegex compiles a PathRegex route path: case-insensitive, from the
// start of the path (see RouteTable).
func routeRegex(p string) (*regexp.Regexp, error) {
	if !strings.HasPrefix(p, "/") {
		return nil, errPathNotAbsolute
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < ' ' || c == 0x7f {
			return nil, errPathChar
		}
	}
	re, err := regexp.Compile("(?i)^" + p)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %w", errMatchRegex, p, err)
	}
	return re, nil
}

// compileRouteRules compiles a route's Rules, in their order (no
// precedence sort: the controller lists them in the order they are
// tried). The entries point into a copy of the rules, as the table keeps
// copies of what it is given.
func compileRouteRules(r *Route) ([]*gwEntry, error) {
	hr := &HTTPRoute{Source: r.Ingress, Rules: slices.Clone(r.Rules)}
	var out []*gwEntry
	for i := range hr.Rules {
		rule := &hr.Rules[i]
		for _, m := range rule.Matches {
			if m.PathType != PathExact && m.PathType != PathPrefix || m.PathType == PathPrefix && m.Path != "" && m.Path != "/" {
				return nil, fmt.Errorf("rule %d: %w", i, errRuleMatchPath)
			}
		}
		es, err := compileRule(hr, rule, i)
		if err != nil {
			return nil, fmt.Errorf("rule %d: %w", i, err)
		}
		for _, e := range es {
			e.source = "ingress " + r.Ingress
		}
		out = append(out, es...)
	}
	return out, nil
}

func routeError(r *Route, err error) error {
	host := r.Host
	if host == "" {
		host = "*"
	}
	return fmt.Errorf("ingress %s: route host %q path %q: %w", r.Ingress, host, r.Path, err)
}

// routePath validates a route's path and returns the form it is matched
// in: percent-decoded, and for Prefix without its trailing slash (except
// for "/" itself), since a trailing slash does not change what a prefix
// matches.
func routePath(p string, pt PathType) (string, bool, error) {
	if pt != PathPrefix && pt != PathExact {
		return "", false, fmt.Errorf("%w %d", errPathType, pt)
	}
	if !strings.HasPrefix(p, "/") {
		return "", false, errPathNotAbsolute
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c == ' ' || c == '?' || c == '#' {
			return "", false, errPathChar
		}
	}
	if err := checkPath(p); err != nil {
		return "", false, err
	}
	if strings.Contains(p, "%") {
		d, err := url.PathUnescape(p)
		if err != nil {
			return "", false, errPathEscape
		}
		// Decoding can produce what the raw form hid ("%2E%2E", "%00").
		// A space, '?' or '#' is fine once decoded: request paths carry
		// them decoded too.
		if err := checkPath(d); err != nil {
			return "", false, err
		}
		p = d
	}
	exact := pt == PathExact
	if !exact && len(p) > 1 {
		p = strings.TrimSuffix(p, "/")
	}
	return p, exact, nil
}

// checkPath applies the Ingress API's rules for Exact and Prefix paths
// (which it skips for ImplementationSpecific; those arrive here as Prefix
// and must make sense as one) and rejects control characters.
func checkPath(p string) error {
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < ' ' || c == 0x7f {
			return errPathChar
		}
	}
	for _, s := range [...]string{"//", "/./", "/../", "%2f", "%2F"} {
		if strings.Contains(p, s) {
			return errPathSequence
		}
	}
	if strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/..") {
		return errPathSequence
	}
	return nil
}

// pathEntry is one compiled route under a host.
type pathEntry struct {
	// path is the matched form: decoded; for Prefix without trailing '/'
	// unless it is "/".
	path  string
	exact bool
	re    *regexp.Regexp // PathRegex
	m     Match
}

// linearMax is the largest path set searched by a linear scan. Below it a
// scan of the sorted slice beats hashing candidate prefixes; above it the
// indexed search keeps Match independent of the number of routes.
const linearMax = 8

// pathSet holds the routes of one host (precise, wildcard or none).
type pathSet struct {
	// sorted is by matched length, longest first, Exact before Prefix on
	// equal length: the first entry that matches is the winner.
	sorted []*pathEntry

	// The index, built when sorted is longer than linearMax. exactLens and
	// prefixLens record which path lengths exist so most candidate
	// lengths cost no hashing.
	exact      map[string]*pathEntry
	prefix     map[string]*pathEntry // without "/"
	root       *pathEntry            // Prefix "/"
	exactLens  lengthSet
	prefixLens lengthSet

	// regex are the PathRegex routes, longest source first (see
	// RouteTable); nil for the usual host without any.
	regex []*pathEntry
}

func newPathSet(all []*pathEntry) *pathSet {
	var entries, regex []*pathEntry
	for _, e := range all {
		if e.re != nil {
			regex = append(regex, e)
		} else {
			entries = append(entries, e)
		}
	}
	slices.SortStableFunc(regex, func(a, b *pathEntry) int { return len(b.path) - len(a.path) })
	ps := newPlainPathSet(entries)
	ps.regex = regex
	return ps
}

func newPlainPathSet(entries []*pathEntry) *pathSet {
	slices.SortStableFunc(entries, func(a, b *pathEntry) int {
		if len(a.path) != len(b.path) {
			return len(b.path) - len(a.path)
		}
		switch {
		case a.exact && !b.exact:
			return -1
		case !a.exact && b.exact:
			return 1
		}
		return 0
	})
	ps := &pathSet{sorted: entries}
	if len(entries) <= linearMax {
		return ps
	}
	ps.exact = map[string]*pathEntry{}
	ps.prefix = map[string]*pathEntry{}
	for _, e := range entries {
		switch {
		case e.exact:
			ps.exact[e.path] = e
			ps.exactLens.add(len(e.path))
		case e.path == "/":
			ps.root = e
		default:
			ps.prefix[e.path] = e
			ps.prefixLens.add(len(e.path))
		}
	}
	return ps
}

func (ps *pathSet) match(path string) *pathEntry {
	if ps.regex != nil {
		return ps.matchRegex(path)
	}
	return ps.matchPlain(path)
}

func (ps *pathSet) matchPlain(path string) *pathEntry {
	if ps.exact == nil {
		return ps.matchLinear(path)
	}
	return ps.matchIndexed(path)
}

// matchRegex is match for a host with PathRegex routes: Exact, then the
// regular expressions, then Prefix (see RouteTable).
func (ps *pathSet) matchRegex(path string) *pathEntry {
	plain := ps.matchPlain(path)
	if plain != nil && plain.exact {
		return plain
	}
	for _, e := range ps.regex {
		if e.re.MatchString(path) {
			return e
		}
	}
	return plain
}

func (ps *pathSet) matchLinear(path string) *pathEntry {
	for _, e := range ps.sorted {
		if e.exact {
			if e.path == path {
				return e
			}
		} else if prefixMatch(e.path, path) {
			return e
		}
	}
	return nil
}

// matchIndexed looks up the exact path, then every element boundary of
// the path from the longest down, then "/". An Exact hit always wins (see
// RouteTable), and the first Prefix hit is the longest.
func (ps *pathSet) matchIndexed(path string) *pathEntry {
	if ps.exactLens.has(len(path)) {
		if e := ps.exact[path]; e != nil {
			return e
		}
	}
	for n := len(path); n > 0; n = strings.LastIndexByte(path[:n], '/') {
		// path[:n] ends at an element boundary. A candidate ending in '/'
		// (from "//" or a trailing slash) is never a stored prefix.
		if path[n-1] != '/' && ps.prefixLens.has(n) {
			if e := ps.prefix[path[:n]]; e != nil {
				return e
			}
		}
	}
	return ps.root
}

// prefixMatch reports whether the Prefix route path p (without trailing
// slash) matches the request path: p is "/", or the path starts with p
// and continues with '/' or ends there.
func prefixMatch(p, path string) bool {
	if p == "/" {
		return true
	}
	return strings.HasPrefix(path, p) && (len(path) == len(p) || path[len(p)] == '/')
}

// lengthSet is a set of path lengths: a bitmap up to 255 and one flag for
// every longer length (rare; those are simply looked up).
type lengthSet struct {
	bits [4]uint64
	long bool
}

func (s *lengthSet) add(n int) {
	if n >= 256 {
		s.long = true
		return
	}
	s.bits[n>>6] |= 1 << (n & 63)
}

func (s *lengthSet) has(n int) bool {
	if n >= 256 {
		return s.long
	}
	return s.bits[n>>6]&(1<<(n&63)) != 0
}
