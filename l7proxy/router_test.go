package l7proxy

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// pre and exa build Prefix and Exact routes for hostless tables; the upstream
// is named after the path so a test can tell which route won.
func pre(path string) Route {
	return Route{Path: path, PathType: PathPrefix, Upstream: "prefix " + path}
}

func exa(path string) Route {
	return Route{Path: path, PathType: PathExact, Upstream: "exact " + path}
}

// compileRoutes compiles routes with one upstream per distinct route upstream
// name and fails the test on any error.
func compileRoutes(t testing.TB, cfg Config) *RouteTable {
	t.Helper()
	seen := map[string]bool{}
	for _, u := range cfg.Upstreams {
		seen[u.Name] = true
	}
	for _, r := range cfg.Routes {
		if !seen[r.Upstream] {
			seen[r.Upstream] = true
			cfg.Upstreams = append(cfg.Upstreams, Upstream{Name: r.Upstream})
		}
	}
	rt, errs := Compile(cfg)
	if len(errs) > 0 {
		t.Fatalf("Compile: %v", errs)
	}
	return rt
}

// matched returns the upstream name a request is routed to, "" for none.
func matchedUpstream(rt *RouteTable, host, path string) string {
	m, ok := rt.Match(host, path)
	if !ok {
		return ""
	}
	if m.Upstream == nil {
		return "<missing upstream>"
	}
	return m.Upstream.Name
}

// TestMatchIngressDocsPathExamples is the "Examples" table of the
// Kubernetes Ingress documentation (Path types), row by row. "want" is the
// route that must serve the request, "" for none (the default backend).
func TestMatchIngressDocsPathExamples(t *testing.T) {
	allPaths := []string{"/", "/foo", "/foo/", "/aaa/bbb/ccc", "/x.html", "/a b/%/?", ""}
	tests := []struct {
		name     string
		routes   []Route
		requests []string
		want     string
	}{
		{"prefix / matches all paths", []Route{pre("/")}, allPaths, "prefix /"},
		{"exact /foo matches /foo", []Route{exa("/foo")}, []string{"/foo"}, "exact /foo"},
		{"exact /foo does not match /bar", []Route{exa("/foo")}, []string{"/bar"}, ""},
		{"exact /foo does not match /foo/", []Route{exa("/foo")}, []string{"/foo/"}, ""},
		{"exact /foo/ does not match /foo", []Route{exa("/foo/")}, []string{"/foo"}, ""},
		{"prefix /foo matches /foo and /foo/", []Route{pre("/foo")}, []string{"/foo", "/foo/"}, "prefix /foo"},
		{"prefix /foo/ matches /foo and /foo/", []Route{pre("/foo/")}, []string{"/foo", "/foo/"}, "prefix /foo/"},
		{"prefix /aaa/bb does not match /aaa/bbb", []Route{pre("/aaa/bb")}, []string{"/aaa/bbb"}, ""},
		{"prefix /aaa/bbb matches /aaa/bbb", []Route{pre("/aaa/bbb")}, []string{"/aaa/bbb"}, "prefix /aaa/bbb"},
		{"prefix /aaa/bbb/ matches /aaa/bbb, ignores trailing slash", []Route{pre("/aaa/bbb/")}, []string{"/aaa/bbb"}, "prefix /aaa/bbb/"},
		{"prefix /aaa/bbb matches /aaa/bbb/, matches trailing slash", []Route{pre("/aaa/bbb")}, []string{"/aaa/bbb/"}, "prefix /aaa/bbb"},
		{"prefix /aaa/bbb matches /aaa/bbb/ccc, matches subpath", []Route{pre("/aaa/bbb")}, []string{"/aaa/bbb/ccc"}, "prefix /aaa/bbb"},
		{"prefix /aaa/bbb does not match /aaa/bbbxyz, not a string prefix", []Route{pre("/aaa/bbb")}, []string{"/aaa/bbbxyz"}, ""},
		{"prefix / and /aaa: /aaa/ccc matches /aaa", []Route{pre("/"), pre("/aaa")}, []string{"/aaa/ccc"}, "prefix /aaa"},
		{"prefix /, /aaa, /aaa/bbb: /aaa/bbb matches /aaa/bbb", []Route{pre("/"), pre("/aaa"), pre("/aaa/bbb")}, []string{"/aaa/bbb"}, "prefix /aaa/bbb"},
		{"prefix /, /aaa, /aaa/bbb: /ccc matches /", []Route{pre("/"), pre("/aaa"), pre("/aaa/bbb")}, []string{"/ccc"}, "prefix /"},
		{"prefix /aaa does not match /ccc, uses default backend", []Route{pre("/aaa")}, []string{"/ccc"}, ""},
		{"mixed /foo prefix and exact: /foo prefers exact", []Route{pre("/foo"), exa("/foo")}, []string{"/foo"}, "exact /foo"},
		{"mixed /foo exact and prefix, listed the other way", []Route{exa("/foo"), pre("/foo")}, []string{"/foo"}, "exact /foo"},
	}
	for _, tt := range tests {
		for _, big := range []bool{false, true} {
			name := tt.name
			routes := tt.routes
			if big {
				// Same rows through the indexed search: pad with routes
				// that match none of the requests.
				name += " (indexed)"
				routes = append(slices.Clone(routes), paddingRoutes(linearMax+1)...)
			}
			t.Run(name, func(t *testing.T) {
				rt := compileRoutes(t, Config{Routes: routes})
				for _, req := range tt.requests {
					if got := matchedUpstream(rt, "example.com", req); got != tt.want {
						t.Errorf("Match(%q) = %q, want %q", req, got, tt.want)
					}
				}
			})
		}
	}

	// The "No, uses default backend" row, with a default backend.
	rt := compileRoutes(t, Config{
		Routes:          []Route{pre("/aaa")},
		DefaultUpstream: "default-backend",
		DefaultOptions:  RouteOptions{MaxBodyBytes: 7},
		Upstreams:       []Upstream{{Name: "default-backend"}},
	})
	m, ok := rt.Match("example.com", "/ccc")
	if !ok || m.Route != nil || m.Upstream == nil || m.Upstream.Name != "default-backend" || m.Options.MaxBodyBytes != 7 || m.Ingress != "" {
		t.Errorf("Match(/ccc) = %+v, %v; want the default upstream with its options", m, ok)
	}
}

// padding returns n Prefix and Exact routes under "/zz…" that match none
// of the requests of the tests that use it.
func paddingRoutes(n int) []Route {
	var rs []Route
	for i := range n {
		if i%2 == 0 {
			rs = append(rs, pre(fmt.Sprintf("/zz%d/pad", i)))
		} else {
			rs = append(rs, exa(fmt.Sprintf("/zz%d", i)))
		}
	}
	return rs
}

// TestMatchIngressDocsHostWildcards is the "Hostname wildcards" table and
// the ingress-wildcard-host example of the Kubernetes Ingress
// documentation.
func TestMatchIngressDocsHostWildcards(t *testing.T) {
	rt := compileRoutes(t, Config{Routes: []Route{
		{Host: "*.foo.com", Path: "/", PathType: PathPrefix, Upstream: "wild"},
	}})
	tests := []struct {
		host string
		want string
	}{
		{"bar.foo.com", "wild"},      // matches based on shared suffix
		{"baz.bar.foo.com", ""},      // wildcard only covers a single DNS label
		{"foo.com", ""},              // wildcard only covers a single DNS label
		{"BAR.Foo.COM:8443", "wild"}, // normalized first
		{"bar.foo.com.", "wild"},
		{".foo.com", ""}, // an empty first label is no label
		{"barfoo.com", ""},
	}
	for _, tt := range tests {
		if got := matchedUpstream(rt, tt.host, "/"); got != tt.want {
			t.Errorf("Match(%q) = %q, want %q", tt.host, got, tt.want)
		}
	}

	// ingress-wildcard-host: foo.bar.com /bar → service1, *.foo.com /foo → service2.
	rt = compileRoutes(t, Config{Routes: []Route{
		{Host: "foo.bar.com", Path: "/bar", PathType: PathPrefix, Upstream: "service1"},
		{Host: "*.foo.com", Path: "/foo", PathType: PathPrefix, Upstream: "service2"},
	}})
	for _, tt := range []struct{ host, path, want string }{
		{"foo.bar.com", "/bar", "service1"},
		{"foo.bar.com", "/foo", ""},
		{"bar.foo.com", "/foo", "service2"},
		{"baz.foo.com", "/foo/x", "service2"},
		{"baz.bar.foo.com", "/foo", ""},
		{"foo.com", "/foo", ""},
		{"bar.foo.com", "/bar", ""},
	} {
		if got := matchedUpstream(rt, tt.host, tt.path); got != tt.want {
			t.Errorf("Match(%q, %q) = %q, want %q", tt.host, tt.path, got, tt.want)
		}
	}
}

// TestMatchIngressDocsVirtualHosts is the name-based virtual hosting
// example: first.bar.com → service1, second.foo.com → service2, anything
// else (including no Host header) → service3.
func TestMatchIngressDocsVirtualHosts(t *testing.T) {
	rt := compileRoutes(t, Config{Routes: []Route{
		{Host: "first.bar.com", Path: "/", PathType: PathPrefix, Upstream: "service1"},
		{Host: "second.foo.com", Path: "/", PathType: PathPrefix, Upstream: "service2"},
		{Path: "/", PathType: PathPrefix, Upstream: "service3"},
	}})
	for _, tt := range []struct{ host, want string }{
		{"first.bar.com", "service1"},
		{"second.foo.com", "service2"},
		{"third.foo.com", "service3"},
		{"", "service3"},
		{"203.0.113.123", "service3"},
		{"[2001:db8::1]:80", "service3"},
	} {
		if got := matchedUpstream(rt, tt.host, "/index.html"); got != tt.want {
			t.Errorf("Match(%q) = %q, want %q", tt.host, got, tt.want)
		}
	}
}

// TestMatchHostPrecedence checks the fall-through documented on
// RouteTable: precise host, then wildcard, then no host, then the default
// upstream, then nothing.
func TestMatchHostPrecedence(t *testing.T) {
	routes := []Route{
		{Host: "a.example.com", Path: "/a", PathType: PathPrefix, Upstream: "precise"},
		{Host: "a.example.com", Path: "/both", PathType: PathExact, Upstream: "precise-exact"},
		{Host: "*.example.com", Path: "/a", PathType: PathPrefix, Upstream: "wild-a"},
		{Host: "*.example.com", Path: "/w", PathType: PathPrefix, Upstream: "wild"},
		{Host: "*.example.com", Path: "/both", PathType: PathPrefix, Upstream: "wild-both"},
		{Path: "/h", PathType: PathPrefix, Upstream: "hostless"},
		{Path: "/w/deeper/still", PathType: PathPrefix, Upstream: "hostless-deep"},
	}
	tests := []struct {
		name, host, path, want string
	}{
		{"precise host path", "a.example.com", "/a/x", "precise"},
		{"precise wins over a wildcard claiming the same path", "a.example.com", "/a", "precise"},
		{"precise host has no such path: wildcard", "a.example.com", "/w/x", "wild"},
		{"a longer path of a less specific host does not win", "a.example.com", "/w/deeper/still", "wild"},
		{"precise exact beats wildcard prefix", "a.example.com", "/both", "precise-exact"},
		{"precise exact misses: wildcard prefix", "a.example.com", "/both/x", "wild-both"},
		{"no precise, no wildcard path: hostless", "a.example.com", "/h", "hostless"},
		{"other host under the wildcard", "b.example.com", "/a", "wild-a"},
		{"host matching nothing: hostless", "other.org", "/h/1", "hostless"},
		{"nothing matches anywhere: default", "a.example.com", "/zzz", "default"},
		{"two labels under the wildcard: hostless", "x.b.example.com", "/w/deeper/still/x", "hostless-deep"},
	}
	rt := compileRoutes(t, Config{Routes: routes, DefaultUpstream: "default", Upstreams: []Upstream{{Name: "default"}}})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := matchedUpstream(rt, tt.host, tt.path); got != tt.want {
				t.Errorf("Match(%q, %q) = %q, want %q", tt.host, tt.path, got, tt.want)
			}
		})
	}

	// Without a default upstream, the last row is a 404.
	rt = compileRoutes(t, Config{Routes: routes})
	if m, ok := rt.Match("a.example.com", "/zzz"); ok {
		t.Errorf("Match without default = %+v, want no match", m)
	}
}

func TestMatchResult(t *testing.T) {
	opts := RouteOptions{SSLRedirect: true, MaxBodyBytes: 1 << 20}
	cfg := Config{
		Routes: []Route{
			{Host: "Web.Example.com", Path: "/", PathType: PathPrefix, Upstream: "default/web:http", Ingress: "default/web", Options: opts},
			{Host: "web.example.com", Path: "/gone", PathType: PathPrefix, Upstream: "default/gone:80", Ingress: "default/gone"},
		},
		Upstreams: []Upstream{{
			Name:      "default/web:http",
			Namespace: "default",
			Service:   "web",
			Endpoints: []Endpoint{{Addr: netip.MustParseAddrPort("10.0.0.1:8080")}},
		}},
		DefaultUpstream: "default/absent:80",
	}
	rt, errs := Compile(cfg)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	// The table owns its copies: changing the Config afterwards changes
	// nothing.
	cfg.Routes[0].Upstream = "changed"
	cfg.Upstreams[0].Endpoints[0].Terminating = true

	m, ok := rt.Match("web.example.com", "/x")
	if !ok {
		t.Fatal("no match")
	}
	if m.Route == nil || m.Route.Upstream != "default/web:http" || m.Route.Host != "Web.Example.com" {
		t.Errorf("Route = %+v", m.Route)
	}
	if m.Upstream == nil || m.Upstream.Service != "web" || m.Upstream.Endpoints[0].Terminating {
		t.Errorf("Upstream = %+v", m.Upstream)
	}
	if m.Options != opts || m.Ingress != "default/web" {
		t.Errorf("Options, Ingress = %+v, %q", m.Options, m.Ingress)
	}

	// A route whose upstream is missing still matches: the proxy answers
	// 503, not 404, and it is not a Compile error.
	m, ok = rt.Match("web.example.com", "/gone/1")
	if !ok || m.Upstream != nil || m.Route == nil || m.Ingress != "default/gone" {
		t.Errorf("Match(/gone/1) = %+v, %v; want the route with a nil Upstream", m, ok)
	}
	// Same for a default upstream that does not exist.
	m, ok = rt.Match("other", "/")
	if !ok || m.Upstream != nil || m.Route != nil {
		t.Errorf("Match(other) = %+v, %v; want the default with a nil Upstream", m, ok)
	}

	ups := rt.Upstreams()
	if len(ups) != 1 || ups["default/web:http"] == nil {
		t.Errorf("Upstreams() = %v", ups)
	}
	delete(ups, "default/web:http")
	if len(rt.Upstreams()) != 1 {
		t.Error("Upstreams() returned the table's own map")
	}

	var nilTable *RouteTable
	if _, ok := nilTable.Match("x", "/"); ok {
		t.Error("nil table matched")
	}
	if len(nilTable.Upstreams()) != 0 {
		t.Error("nil table has upstreams")
	}
}

// TestMatchRequestPathsAsGiven pins down what Match does with paths it does
// not normalize, as documented on RouteTable.
func TestMatchRequestPathsAsGiven(t *testing.T) {
	rt := compileRoutes(t, Config{Routes: []Route{
		pre("/"), pre("/a/b"), exa("/x"), pre("/caf%C3%A9"), pre("/sp%20ace"), exa("/Case"),
	}})
	for _, tt := range []struct{ path, want string }{
		{"/a//b", "prefix /"},      // "//" is not collapsed
		{"//a/b", "prefix /"},      // nor at the start
		{"/a/b//c", "prefix /a/b"}, // an empty element after the prefix is still below it
		{"/a/./b", "prefix /"},     // "." is not resolved
		{"/a/b/../../x", "prefix /a/b"},
		{"/x/", "prefix /"},                 // Exact keeps the slash significant
		{"/café/menu", "prefix /caf%C3%A9"}, // route paths are decoded at Compile
		{"/caf%C3%A9", "prefix /"},          // request paths are not decoded by Match
		{"/sp ace", "prefix /sp%20ace"},
		{"/case", "prefix /"}, // case-sensitive
		{"/Case", "exact /Case"},
		{"", "prefix /"},
		{"*", "prefix /"},
	} {
		if got := matchedUpstream(rt, "h", tt.path); got != tt.want {
			t.Errorf("Match(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
}

func TestCompileConflicts(t *testing.T) {
	tests := []struct {
		name      string
		routes    []Route
		wantErrs  []string // substrings, one per expected error, in order
		host      string
		path      string
		wantMatch string
	}{
		{
			name: "same host path and type: first listed wins",
			routes: []Route{
				{Host: "a.com", Path: "/x", PathType: PathPrefix, Upstream: "old", Ingress: "ns/old"},
				{Host: "a.com", Path: "/x", PathType: PathPrefix, Upstream: "new", Ingress: "ns/new"},
			},
			wantErrs: []string{`ingress ns/new: route host "a.com" path "/x": host, path and path type already claimed by ingress ns/old`},
			host:     "a.com", path: "/x/1", wantMatch: "old",
		},
		{
			name: "trailing slash makes the same prefix",
			routes: []Route{
				{Host: "a.com", Path: "/x/", PathType: PathPrefix, Upstream: "old", Ingress: "ns/old"},
				{Host: "a.com", Path: "/x", PathType: PathPrefix, Upstream: "new", Ingress: "ns/new"},
			},
			wantErrs: []string{"ingress ns/new"},
			host:     "a.com", path: "/x", wantMatch: "old",
		},
		{
			name: "host case does not make a different host",
			routes: []Route{
				{Host: "A.com", Path: "/", PathType: PathExact, Upstream: "old", Ingress: "ns/old"},
				{Host: "a.COM", Path: "/", PathType: PathExact, Upstream: "new", Ingress: "ns/new"},
			},
			wantErrs: []string{"ingress ns/new"},
			host:     "a.com", path: "/", wantMatch: "old",
		},
		{
			name: "hostless routes conflict too",
			routes: []Route{
				{Path: "/", PathType: PathPrefix, Upstream: "old", Ingress: "ns/old"},
				{Path: "/", PathType: PathPrefix, Upstream: "new", Ingress: "ns/new"},
				{Path: "/", PathType: PathPrefix, Upstream: "newer", Ingress: "ns/newer"},
			},
			wantErrs: []string{`ingress ns/new: route host "*" path "/"`, "ingress ns/newer"},
			host:     "any", path: "/", wantMatch: "old",
		},
		{
			name: "encoded and decoded spellings are the same path",
			routes: []Route{
				{Path: "/caf%C3%A9", PathType: PathExact, Upstream: "old", Ingress: "ns/old"},
				{Path: "/café", PathType: PathExact, Upstream: "new", Ingress: "ns/new"},
			},
			wantErrs: []string{"ingress ns/new"},
			host:     "any", path: "/café", wantMatch: "old",
		},
		{
			name: "exact and prefix on the same path do not conflict",
			routes: []Route{
				{Host: "a.com", Path: "/x", PathType: PathPrefix, Upstream: "prefix"},
				{Host: "a.com", Path: "/x", PathType: PathExact, Upstream: "exact"},
			},
			host: "a.com", path: "/x", wantMatch: "exact",
		},
		{
			name: "precise and wildcard hosts do not conflict",
			routes: []Route{
				{Host: "*.a.com", Path: "/", PathType: PathPrefix, Upstream: "wild"},
				{Host: "b.a.com", Path: "/", PathType: PathPrefix, Upstream: "precise"},
				{Path: "/", PathType: PathPrefix, Upstream: "hostless"},
			},
			host: "b.a.com", path: "/", wantMatch: "precise",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{}
			for _, r := range tt.routes {
				cfg.Upstreams = append(cfg.Upstreams, Upstream{Name: r.Upstream})
			}
			cfg.Routes = tt.routes
			rt, errs := Compile(cfg)
			if len(errs) != len(tt.wantErrs) {
				t.Fatalf("errors = %v, want %d", errs, len(tt.wantErrs))
			}
			for i, err := range errs {
				if !errors.Is(err, errRouteConflict) || !strings.Contains(err.Error(), tt.wantErrs[i]) {
					t.Errorf("error %d = %q, want a conflict containing %q", i, err, tt.wantErrs[i])
				}
			}
			if got := matchedUpstream(rt, tt.host, tt.path); got != tt.wantMatch {
				t.Errorf("Match(%q, %q) = %q, want %q", tt.host, tt.path, got, tt.wantMatch)
			}
		})
	}
}

func TestCompileInvalidRoutes(t *testing.T) {
	tests := []struct {
		name  string
		route Route
		want  error
	}{
		{"relative path", Route{Path: "foo"}, errPathNotAbsolute},
		{"empty path", Route{Path: ""}, errPathNotAbsolute},
		{"double slash", Route{Path: "/a//b"}, errPathSequence},
		{"dot segment", Route{Path: "/a/./b"}, errPathSequence},
		{"dot-dot segment", Route{Path: "/a/../b"}, errPathSequence},
		{"final dot", Route{Path: "/a/."}, errPathSequence},
		{"final dot-dot", Route{Path: "/a/.."}, errPathSequence},
		{"encoded slash", Route{Path: "/a%2Fb"}, errPathSequence},
		{"encoded slash lowercase", Route{Path: "/a%2fb"}, errPathSequence},
		{"encoded dot-dot", Route{Path: "/a/%2E%2E/b"}, errPathSequence},
		{"encoded NUL", Route{Path: "/a%00"}, errPathChar},
		{"bad escape", Route{Path: "/a%zz"}, errPathEscape},
		{"space", Route{Path: "/a b"}, errPathChar},
		{"query", Route{Path: "/a?b=c"}, errPathChar},
		{"fragment", Route{Path: "/a#b"}, errPathChar},
		{"control", Route{Path: "/a\nb"}, errPathChar},
		{"unknown path type", Route{Path: "/", PathType: 9}, errPathType},
		{"host with port", Route{Host: "a.com:80", Path: "/"}, errHostPort},
		{"IPv4 host", Route{Host: "10.0.0.1", Path: "/"}, errHostIP},
		{"IPv6 host", Route{Host: "fe80::1", Path: "/"}, errHostIP},
		{"bracketed IPv6 host", Route{Host: "[fe80::1]", Path: "/"}, errHostIP},
		{"bare wildcard", Route{Host: "*", Path: "/"}, errHostWildcard},
		{"wildcard inside a label", Route{Host: "a*.b.com", Path: "/"}, errHostWildcard},
		{"wildcard label not first", Route{Host: "a.*.com", Path: "/"}, errHostWildcard},
		{"double wildcard", Route{Host: "*.*.com", Path: "/"}, errHostWildcard},
		{"wildcard without dot", Route{Host: "*com", Path: "/"}, errHostWildcard},
		{"underscore", Route{Host: "a_b.com", Path: "/"}, errHostSyntax},
		{"trailing dot", Route{Host: "a.com.", Path: "/"}, errHostSyntax},
		{"empty label", Route{Host: "a..com", Path: "/"}, errHostSyntax},
		{"leading hyphen", Route{Host: "-a.com", Path: "/"}, errHostSyntax},
		{"label too long", Route{Host: strings.Repeat("a", 64) + ".com", Path: "/"}, errHostSyntax},
		{"name too long", Route{Host: strings.Repeat("abcdefghi.", 26) + "com", Path: "/"}, errHostSyntax},
		{"non-ASCII", Route{Host: "bücher.de", Path: "/"}, errHostSyntax},
		{"space in host", Route{Host: "a b.com", Path: "/"}, errHostSyntax},
		{"no upstream", Route{Path: "/", Upstream: "-"}, errRouteNoUpstream},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := tt.route
			bad.Ingress = "team/bad"
			if bad.Upstream == "-" {
				bad.Upstream = ""
			} else {
				bad.Upstream = "bad"
			}
			good := Route{Path: "/ok", PathType: PathPrefix, Upstream: "good", Ingress: "team/good"}
			rt, errs := Compile(Config{
				Routes:    []Route{good, bad},
				Upstreams: []Upstream{{Name: "good"}, {Name: "bad"}},
			})
			if len(errs) != 1 {
				t.Fatalf("errors = %v, want exactly one", errs)
			}
			if !errors.Is(errs[0], tt.want) || !strings.Contains(errs[0].Error(), "ingress team/bad:") {
				t.Errorf("error = %q, want %q naming ingress team/bad", errs[0], tt.want)
			}
			if got := matchedUpstream(rt, "a.com", "/ok"); got != "good" {
				t.Errorf("valid route lost: Match(/ok) = %q", got)
			}
			if len(rt.routes) != 1 {
				t.Errorf("table keeps %d routes, want 1", len(rt.routes))
			}
		})
	}
}

func TestCompileValidHosts(t *testing.T) {
	for _, host := range []string{
		"a", "a.com", "x-1.example.com", "EXAMPLE.com", "*.a.com", "*.com", "1.example.com",
		"xn--bcher-kva.de", strings.Repeat("a", 63) + ".com",
	} {
		rt, errs := Compile(Config{
			Routes:    []Route{{Host: host, Path: "/", Upstream: "u"}},
			Upstreams: []Upstream{{Name: "u"}},
		})
		if len(errs) > 0 {
			t.Errorf("host %q: %v", host, errs)
			continue
		}
		req := strings.Replace(host, "*", "any", 1)
		if got := matchedUpstream(rt, req, "/"); got != "u" {
			t.Errorf("host %q: Match(%q) = %q", host, req, got)
		}
	}
}

func TestCompileUpstreams(t *testing.T) {
	rt, errs := Compile(Config{
		Routes: []Route{{Path: "/", Upstream: "u"}},
		Upstreams: []Upstream{
			{Name: "u", Service: "first"},
			{Name: "u", Service: "second"},
			{Namespace: "ns", Service: "nameless"},
		},
	})
	if len(errs) != 2 || !errors.Is(errs[0], errUpstreamDuplicate) || !errors.Is(errs[1], errUpstreamNoName) {
		t.Fatalf("errors = %v, want a duplicate and a nameless upstream", errs)
	}
	m, _ := rt.Match("", "/")
	if m.Upstream == nil || m.Upstream.Service != "first" {
		t.Errorf("Match upstream = %+v, want the first one", m.Upstream)
	}
	if len(rt.Upstreams()) != 1 {
		t.Errorf("Upstreams() = %v", rt.Upstreams())
	}
}

func TestNormalizeHost(t *testing.T) {
	tests := []struct{ in, want string }{
		{"example.com", "example.com"},
		{"Example.COM", "example.com"},
		{"example.com:8080", "example.com"},
		{"EXAMPLE.com:443", "example.com"},
		{"example.com.", "example.com"},
		{"example.com.:80", "example.com"},
		{"example.com:", "example.com"},
		{"10.1.2.3:80", "10.1.2.3"},
		{"10.1.2.3", "10.1.2.3"},
		{"[::1]:8080", "::1"},
		{"[::1]", "::1"},
		{"[FE80::1%25eth0]:443", "fe80::1%25eth0"},
		{"fe80::1", "fe80::1"}, // unbracketed IPv6 has no port
		{"FE80::1", "fe80::1"},
		{"[::1", "[::1"}, // malformed: kept, matches nothing
		{"", ""},
		{".", ""},
		{"ÄB.com", "Äb.com"}, // only ASCII is folded
		{strings.Repeat("A", 300), strings.Repeat("a", 300)},
	}
	for _, tt := range tests {
		if got := NormalizeHost(tt.in); got != tt.want {
			t.Errorf("NormalizeHost(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// specMatch is the documentation's wording turned into code, kept apart
// from the router's implementation: split both paths into elements, a
// Prefix matches when its elements begin the request's, longest path wins,
// then Exact.
func specMatch(routes []Route, path string) string {
	elements := func(s string) []string {
		s = strings.Trim(s, "/")
		if s == "" {
			return nil
		}
		return strings.Split(s, "/")
	}
	best, bestLen, bestExact := "", -1, false
	for _, r := range routes {
		var ok bool
		n := len(strings.TrimSuffix(r.Path, "/"))
		if r.Path == "/" {
			n = 1
		}
		if r.PathType == PathExact {
			ok, n = r.Path == path, len(r.Path)
		} else {
			re, pe := elements(r.Path), elements(path)
			ok = len(re) <= len(pe) && slices.Equal(re, pe[:len(re)])
		}
		exact := r.PathType == PathExact
		if ok && (n > bestLen || n == bestLen && exact && !bestExact) {
			best, bestLen, bestExact = r.Upstream, n, exact
		}
	}
	return best
}

// TestMatchAgreesWithSpec compares the router, in both its linear and its
// indexed form, with specMatch on random route sets and requests.
func TestMatchAgreesWithSpec(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	elems := []string{"a", "aa", "b", "ab", "ba"}
	randPath := func(maxElems int) string {
		var sb strings.Builder
		for range rng.IntN(maxElems + 1) {
			sb.WriteString("/")
			sb.WriteString(elems[rng.IntN(len(elems))])
		}
		if sb.Len() == 0 || rng.IntN(4) == 0 {
			sb.WriteString("/")
		}
		return sb.String()
	}
	for round := range 300 {
		var routes []Route
		seen := map[string]bool{}
		for range 1 + rng.IntN(2*linearMax) {
			r := pre(randPath(3))
			if rng.IntN(3) == 0 {
				r = exa(randPath(3))
			}
			key := fmt.Sprint(r.PathType, strings.TrimSuffix(r.Path, "/"))
			if r.PathType == PathExact {
				key = fmt.Sprint(r.PathType, r.Path)
			}
			if seen[key] {
				continue // a conflict: covered elsewhere
			}
			seen[key] = true
			routes = append(routes, r)
		}
		rt := compileRoutes(t, Config{Routes: routes})
		ps := rt.anyHost
		for range 50 {
			req := randPath(5)
			want := specMatch(routes, req)
			got := matchedUpstream(rt, "h", req)
			linear := ""
			if e := ps.matchLinear(req); e != nil {
				linear = e.m.Upstream.Name
			}
			if got != want || linear != want {
				t.Fatalf("round %d, routes %v, path %q: Match = %q, linear = %q, spec = %q",
					round, routes, req, got, linear, want)
			}
		}
	}
}

// FuzzMatch checks that no host, path or request makes Compile or Match
// panic, and that whatever matches really matches (a PathRegex route: its
// anchored, case-insensitive expression).
func FuzzMatch(f *testing.F) {
	f.Add("*.foo.com", "/aaa/bbb/", uint8(0), "bar.foo.com:80", "/aaa/bbb/ccc")
	f.Add("", "/", uint8(1), "", "")
	f.Add("[::1]", "/%zz", uint8(0), "[::1", "//")
	f.Add("A.b", "/a%2e%2e", uint8(2), "A.B.", "/a/..")
	f.Fuzz(func(t *testing.T, host, path string, pt uint8, reqHost, reqPath string) {
		routes := append([]Route{{Host: host, Path: path, PathType: PathType(pt), Upstream: "u"}}, paddingRoutes(linearMax)...)
		rt, _ := Compile(Config{Routes: routes, Upstreams: []Upstream{{Name: "u"}}})
		m, ok := rt.Match(reqHost, reqPath)
		if !ok || m.Route == nil || m.Route.Upstream != "u" {
			return
		}
		if PathType(pt) == PathRegex {
			re, err := routeRegex(path)
			if err != nil {
				t.Fatalf("invalid regex route %q matched", path)
			}
			if !re.MatchString(reqPath) {
				t.Fatalf("regex route %q matched %q", path, reqPath)
			}
			return
		}
		rp, exact, err := routePath(path, PathType(pt))
		if err != nil {
			t.Fatalf("invalid route %q matched", path)
		}
		if exact && rp != reqPath || !exact && !prefixMatch(rp, reqPath) {
			t.Fatalf("route %q (%d) matched %q", path, pt, reqPath)
		}
	})
}

func TestMatchDoesNotAllocate(t *testing.T) {
	rt := routerBenchTable(t)
	for _, c := range routerBenchCases {
		if n := testing.AllocsPerRun(100, func() { rt.Match(c.host, c.path) }); n != 0 {
			t.Errorf("%s: %v allocations per Match", c.name, n)
		}
	}
}

// routerBenchTable builds about 1000 routes: 80 hosts with 10 paths each
// (indexed), 20 hosts with 3 (linear), 20 wildcard hosts, 50 hostless
// paths, and one API host with 50 paths.
func routerBenchTable(tb testing.TB) *RouteTable {
	var routes []Route
	add := func(host, path string, pt PathType) {
		routes = append(routes, Route{
			Host: host, Path: path, PathType: pt,
			Upstream: fmt.Sprintf("ns/svc%d:80", len(routes)%200), Ingress: "ns/ing",
		})
	}
	for h := range 80 {
		host := fmt.Sprintf("app%d.example.com", h)
		add(host, "/", PathPrefix)
		for i := range 9 {
			pt := PathPrefix
			if i%3 == 0 {
				pt = PathExact
			}
			add(host, fmt.Sprintf("/api/v%d/resource%d", i%3, i), pt)
		}
	}
	for h := range 20 {
		host := fmt.Sprintf("small%d.example.org", h)
		add(host, "/", PathPrefix)
		add(host, "/static", PathPrefix)
		add(host, "/healthz", PathExact)
	}
	for h := range 20 {
		add(fmt.Sprintf("*.tenant%d.example.net", h), "/", PathPrefix)
	}
	for i := range 50 {
		add("", fmt.Sprintf("/shared/%d", i), PathPrefix)
	}
	for i := range 50 {
		add("api.example.com", fmt.Sprintf("/v1/service%d/items", i), PathPrefix)
	}
	cfg := Config{Routes: routes, DefaultUpstream: "ns/default:80"}
	for i := range 200 {
		cfg.Upstreams = append(cfg.Upstreams, Upstream{Name: fmt.Sprintf("ns/svc%d:80", i)})
	}
	rt, errs := Compile(cfg)
	if len(errs) > 0 {
		tb.Fatal(errs)
	}
	return rt
}

var routerBenchCases = []struct{ name, host, path string }{
	{"small host prefix", "small7.example.org", "/static/app.js"},
	{"indexed host exact", "app42.example.com", "/api/v0/resource3"},
	{"indexed host deep prefix", "app42.example.com", "/api/v1/resource4/items/17/detail"},
	{"indexed host root", "app42.example.com", "/index.html"},
	{"uppercase host with port", "APP42.Example.com:8080", "/api/v2/resource5/x"},
	{"wildcard", "customer.tenant3.example.net", "/dashboard"},
	{"api host 50 paths", "api.example.com", "/v1/service37/items/123"},
	{"hostless fallthrough", "unknown.example.com", "/shared/42/x"},
	{"default upstream", "unknown.example.com", "/nothing/here/at/all"},
}

func BenchmarkMatch(b *testing.B) {
	rt := routerBenchTable(b)
	for _, c := range routerBenchCases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				rt.Match(c.host, c.path)
			}
		})
	}
}

func BenchmarkCompile(b *testing.B) {
	rt := routerBenchTable(b)
	cfg := Config{Routes: rt.routes}
	for name := range rt.upstreams {
		cfg.Upstreams = append(cfg.Upstreams, Upstream{Name: name})
	}
	b.ReportAllocs()
	for b.Loop() {
		Compile(cfg)
	}
}
