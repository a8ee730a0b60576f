package l7proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeGWRequest is a gwRequest for matcher tests.
type fakeGWRequest struct {
	m     string
	h     map[string]string
	query string
}

func (r fakeGWRequest) method() string { return r.m }
func (r fakeGWRequest) headerValue(n string) (string, bool) {
	v, ok := r.h[n]
	return v, ok
}
func (r fakeGWRequest) rawQuery() string { return r.query }

var testFrontend = netip.MustParseAddrPort("192.0.2.10:80")

func rule(name string, matches ...HTTPMatch) HTTPRouteRule {
	return HTTPRouteRule{Matches: matches, Backends: []WeightedBackend{{Upstream: name, Weight: 1}}}
}

// TestGatewayMatchPrecedence checks the HTTPRoute precedence: hostname
// specificity, then Exact, regular expression, longest PathPrefix, method,
// more header matches, more query matches, then route order; and the
// listener with the most specific hostname owning its requests.
func TestGatewayMatchPrecedence(t *testing.T) {
	listeners := []Listener{
		{Name: "gw/any", Frontends: []netip.AddrPort{testFrontend}, Routes: []HTTPRoute{
			{Source: "ns/older", Rules: []HTTPRouteRule{
				rule("older-root"),
				rule("prefix-foo", HTTPMatch{PathType: PathPrefix, Path: "/foo"}),
				rule("prefix-foo-bar", HTTPMatch{PathType: PathPrefix, Path: "/foo/bar/"}),
				rule("exact-foo", HTTPMatch{PathType: PathExact, Path: "/foo"}),
				rule("regex", HTTPMatch{PathType: PathRegex, Path: "/foo/[0-9]+"}),
				rule("post-foo", HTTPMatch{PathType: PathPrefix, Path: "/foo", Method: http.MethodPost}),
				rule("one-header", HTTPMatch{PathType: PathPrefix, Path: "/h", Headers: []ValueMatch{{Name: "X-A", Value: "1"}}}),
				rule("two-headers", HTTPMatch{PathType: PathPrefix, Path: "/h", Headers: []ValueMatch{{Name: "X-A", Value: "1"}, {Name: "X-B", Value: "^b+$", Regex: true}}}),
				rule("query", HTTPMatch{PathType: PathPrefix, Path: "/h", Headers: []ValueMatch{{Name: "X-A", Value: "1"}}, Query: []ValueMatch{{Name: "q", Value: "a b"}}}),
			}},
			{Source: "ns/newer", Rules: []HTTPRouteRule{
				rule("newer-root"),
				rule("newer-only", HTTPMatch{PathType: PathPrefix, Path: "/newer"}),
			}},
			{Source: "ns/hosts", Hostnames: []string{"exact.example.com"}, Rules: []HTTPRouteRule{
				rule("exact-host", HTTPMatch{PathType: PathPrefix, Path: "/only-exact"}),
			}},
			{Source: "ns/wild", Hostnames: []string{"*.example.com"}, Rules: []HTTPRouteRule{
				rule("wild-host", HTTPMatch{PathType: PathPrefix, Path: "/"}),
			}},
		}},
		{Name: "gw/specific", Frontends: []netip.AddrPort{testFrontend}, Hostname: "owned.example.org", Routes: []HTTPRoute{
			{Source: "ns/owned", Rules: []HTTPRouteRule{rule("owned", HTTPMatch{PathType: PathExact, Path: "/x"})}},
		}},
	}
	tables, errs := compileGateways(listeners)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	f := tables.frontend(testFrontend)
	for _, tt := range []struct {
		host, method, path string
		headers            map[string]string
		query              string
		want               string // upstream; "" for no route
	}{
		{"a.test", "GET", "/", nil, "", "older-root"},
		{"a.test", "GET", "/foo", nil, "", "exact-foo"},
		{"a.test", "GET", "/foo/", nil, "", "prefix-foo"},
		{"a.test", "GET", "/foobar", nil, "", "older-root"},
		{"a.test", "GET", "/foo/bar", nil, "", "prefix-foo-bar"},
		{"a.test", "GET", "/foo/bar/baz", nil, "", "prefix-foo-bar"},
		{"a.test", "GET", "/foo/123", nil, "", "regex"},
		{"a.test", "GET", "/foo/12a", nil, "", "prefix-foo"},
		{"a.test", "POST", "/foo/x", nil, "", "post-foo"},
		{"a.test", "POST", "/foo", nil, "", "exact-foo"},
		{"a.test", "GET", "/h", map[string]string{"X-A": "1"}, "", "one-header"},
		{"a.test", "GET", "/h", map[string]string{"X-A": "1", "X-B": "bbb"}, "", "two-headers"},
		{"a.test", "GET", "/h", map[string]string{"X-A": "1", "X-B": "bc"}, "", "one-header"},
		{"a.test", "GET", "/h", map[string]string{"X-A": "1"}, "x=1&q=a+b", "query"},
		{"a.test", "GET", "/h", map[string]string{"X-A": "1"}, "q=a%20b", "query"},
		{"a.test", "GET", "/h", map[string]string{"X-A": "2"}, "q=a+b", "older-root"},
		{"a.test", "GET", "/newer/x", nil, "", "newer-only"},
		{"exact.example.com", "GET", "/only-exact", nil, "", "exact-host"},
		// A precise hostname's routes come first; the wildcard's are
		// next, then the routes for every host.
		{"exact.example.com", "GET", "/other", nil, "", "wild-host"},
		{"deep.sub.example.com", "GET", "/", nil, "", "wild-host"},
		{"example.com", "GET", "/", nil, "", "older-root"},
		// The listener with the most specific hostname owns its host.
		{"owned.example.org", "GET", "/x", nil, "", "owned"},
		{"owned.example.org", "GET", "/", nil, "", ""},
	} {
		_, e := f.match(tt.host, tt.path, fakeGWRequest{m: tt.method, h: tt.headers, query: tt.query})
		got := ""
		if e != nil {
			got = e.rule.Backends[0].Upstream
		}
		if got != tt.want {
			t.Errorf("%s %s%s headers %v query %q: %q, want %q", tt.method, tt.host, tt.path, tt.headers, tt.query, got, tt.want)
		}
	}
}

func TestGatewayCompileErrors(t *testing.T) {
	_, errs := compileGateways([]Listener{
		{Name: "gw/none"},
		{Name: "gw/l", Frontends: []netip.AddrPort{testFrontend}, Routes: []HTTPRoute{{Source: "ns/r", Rules: []HTTPRouteRule{
			rule("bad-regex", HTTPMatch{PathType: PathRegex, Path: "/(["}),
			rule("bad-header", HTTPMatch{Headers: []ValueMatch{{Name: "X", Value: "(", Regex: true}}}),
			{Matches: []HTTPMatch{{PathType: PathExact, Path: "/e"}},
				Filters: Filters{Rewrite: &Rewrite{Path: &PathModifier{ReplacePrefixMatch: true, Value: "/x"}}}},
			rule("good", HTTPMatch{PathType: PathPrefix, Path: "/ok"}),
		}}}},
	})
	for _, want := range []string{"listener gw/none: listener has no frontend", "rule 0: invalid regular expression",
		"rule 1: header X: invalid regular expression", "rule 2: ReplacePrefixMatch needs a PathPrefix match"} {
		found := false
		for _, err := range errs {
			found = found || strings.Contains(err.Error(), want)
		}
		if !found {
			t.Errorf("no error %q in %v", want, errs)
		}
	}
	if len(errs) != 4 {
		t.Errorf("%d errors, want 4: %v", len(errs), errs)
	}
}

func TestModifyPath(t *testing.T) {
	full := &PathModifier{ReplaceFullPath: true, Value: "/full"}
	for _, tt := range []struct {
		value, prefix, path, want string
	}{
		{"/xyz", "/foo", "/foo/bar", "/xyz/bar"},
		{"/xyz/", "/foo", "/foo/bar", "/xyz/bar"},
		{"/xyz", "/foo", "/foo", "/xyz"},
		{"/xyz", "/foo", "/foo/", "/xyz/"},
		{"/", "/foo", "/foo/bar", "/bar"},
		{"/", "/foo", "/foo", "/"},
		{"/xyz", "/", "/foo", "/xyz/foo"},
	} {
		if got := modifyPath(&PathModifier{ReplacePrefixMatch: true, Value: tt.value}, tt.prefix, tt.path); got != tt.want {
			t.Errorf("prefix %q→%q on %q: %q, want %q", tt.prefix, tt.value, tt.path, got, tt.want)
		}
	}
	if got := modifyPath(full, "/foo", "/foo/bar"); got != "/full" {
		t.Errorf("full path: %q", got)
	}
}

func TestRedirectLocation(t *testing.T) {
	for _, tt := range []struct {
		name string
		r    Redirect
		tls  bool
		port uint16
		want string
	}{
		{"defaults keep everything, listener port", Redirect{}, false, 8080, "http://h.example:8080/foo/bar?q=1"},
		{"well-known listener port left out", Redirect{}, false, 80, "http://h.example/foo/bar?q=1"},
		{"scheme change takes its port", Redirect{Scheme: "https"}, false, 8080, "https://h.example/foo/bar?q=1"},
		{"explicit port", Redirect{Scheme: "https", Port: 8443}, false, 80, "https://h.example:8443/foo/bar?q=1"},
		{"hostname", Redirect{Hostname: "other.example"}, true, 443, "https://other.example/foo/bar?q=1"},
		{"prefix", Redirect{Path: &PathModifier{ReplacePrefixMatch: true, Value: "/new"}}, false, 80, "http://h.example/new/bar?q=1"},
		{"full path", Redirect{Path: &PathModifier{ReplaceFullPath: true, Value: "/x y"}}, false, 80, "http://h.example/x%20y?q=1"},
	} {
		scheme := "http"
		if tt.tls {
			scheme = "https"
		}
		if got := redirectLocation(&tt.r, scheme, "h.example:1234", tt.port, "/foo", "/foo/bar", "q=1"); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}

// startGatewayEcho answers with what it received: URI, host and headers,
// and sets response headers for the response filters to change.
func startGatewayEcho(t *testing.T, name string) *backend {
	t.Helper()
	return startDualBackend(t, name, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Resp-Keep", "k")
		w.Header().Set("X-Resp-Set", "old")
		w.Header().Set("X-Resp-Drop", "d")
		_ = json.NewEncoder(w).Encode(map[string]any{"backend": name, "uri": r.RequestURI, "host": r.Host, "headers": r.Header})
	})
}

type echoed struct {
	Backend string
	URI     string
	Host    string
	Headers http.Header
}

// TestGatewayListenerServing runs HTTPRoutes on the proxy's own
// listeners, through every client side and upstream kind: routing by the
// connection's frontend (the Ingress table serves other frontends),
// weights, an unresolved backend (500), redirects, rewrites and header
// filters.
func TestGatewayListenerServing(t *testing.T) {
	for _, pc := range pipelineCases {
		t.Run(pc.name, func(t *testing.T) {
			a, b := startGatewayEcho(t, "a"), startGatewayEcho(t, "b")
			ing := startGatewayEcho(t, "ingress")
			ups := []Upstream{
				{Name: "a", Protocol: pc.protocol, Endpoints: ep(a)},
				{Name: "b", Protocol: pc.protocol, Endpoints: ep(b)},
				{Name: "ing", Protocol: pc.protocol, Endpoints: ep(ing)},
			}
			cert := Certificate{Cert: makeCert(t, "gw", "gw.example", "*.gw.example", "ing.example")}
			p := startProxy(t, Options{}, Config{Upstreams: ups, Certificates: []Certificate{cert},
				Routes: []Route{{Host: "ing.example", Path: "/", Upstream: "ing", Ingress: "ns/ing"}}})
			// The Gateway listens on the proxy's own port for the client
			// side under test; the other listener stays Ingress.
			front := netip.MustParseAddrPort(p.httpAddr)
			if pc.h2 {
				front = netip.MustParseAddrPort(p.httpsAddr)
			}
			listener := Listener{Name: "ns/gw/http", Frontends: []netip.AddrPort{front}, Routes: []HTTPRoute{{
				Source: "ns/route", Hostnames: []string{"gw.example", "*.gw.example"},
				Rules: []HTTPRouteRule{
					{Backends: []WeightedBackend{{Upstream: "a", Weight: 3}, {Upstream: "b", Weight: 1}, {Upstream: "never", Weight: 0}}},
					{Matches: []HTTPMatch{{PathType: PathPrefix, Path: "/broken"}}, Backends: []WeightedBackend{{Upstream: "", Weight: 1}}},
					{Matches: []HTTPMatch{{PathType: PathPrefix, Path: "/old"}}, Filters: Filters{Redirect: &Redirect{
						Hostname: "new.example", Path: &PathModifier{ReplacePrefixMatch: true, Value: "/new"}, StatusCode: 301}}},
					{Matches: []HTTPMatch{{PathType: PathPrefix, Path: "/api/v1"}}, Backends: []WeightedBackend{{Upstream: "b", Weight: 1}},
						Filters: Filters{
							Rewrite: &Rewrite{Hostname: "internal.example", Path: &PathModifier{ReplacePrefixMatch: true, Value: "/v2"}},
							RequestHeaders: &HeaderEdit{Set: []Field{{"X-Set", "new"}}, Add: []Field{{"X-Add", "added"}},
								Remove: []string{"X-Remove"}},
							ResponseHeaders: &HeaderEdit{Set: []Field{{"X-Resp-Set", "new"}}, Add: []Field{{"X-Resp-Add", "added"}},
								Remove: []string{"X-Resp-Drop"}},
						}},
				},
			}}}
			if errs := p.Update(Config{Upstreams: ups, Certificates: []Certificate{cert}, Listeners: []Listener{listener},
				Routes: []Route{{Host: "ing.example", Path: "/", Upstream: "ing", Ingress: "ns/ing"}}}); len(errs) > 0 {
				t.Fatal(errs)
			}
			c, base := pc.client(p, "gw.example")
			c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
			do := func(host, path string, hdr map[string]string) (*http.Response, echoed) {
				t.Helper()
				req, _ := http.NewRequest(http.MethodGet, base+path, nil)
				req.Host = host
				for k, v := range hdr {
					req.Header.Set(k, v)
				}
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				var e echoed
				raw, _ := io.ReadAll(resp.Body)
				if resp.StatusCode == 200 {
					if err := json.Unmarshal(raw, &e); err != nil {
						t.Fatalf("%s%s: %q: %v", host, path, raw, err)
					}
				}
				return resp, e
			}

			counts := map[string]int{}
			for range 40 {
				resp, e := do("x.gw.example", "/", nil)
				if resp.StatusCode != 200 {
					t.Fatalf("weighted: %d", resp.StatusCode)
				}
				counts[e.Backend]++
			}
			if counts["a"] < 20 || counts["b"] < 3 || counts["a"]+counts["b"] != 40 {
				t.Errorf("weights 3:1 gave %v", counts)
			}
			if resp, _ := do("gw.example", "/broken/x", nil); resp.StatusCode != http.StatusInternalServerError {
				t.Errorf("unresolved backend: %d, want 500", resp.StatusCode)
			}
			if resp, _ := do("other.example", "/", nil); resp.StatusCode != http.StatusNotFound {
				t.Errorf("host no route serves: %d, want 404", resp.StatusCode)
			}
			// The Ingress routes do not serve the Gateway's frontend.
			if resp, _ := do("ing.example", "/", nil); resp.StatusCode != http.StatusNotFound {
				t.Errorf("ingress host on the gateway frontend: %d, want 404", resp.StatusCode)
			}
			resp, _ := do("gw.example", "/old/page?x=1", nil)
			scheme, port := "http", front.Port()
			if pc.h2 {
				scheme = "https"
			}
			want := scheme + "://new.example:" + strconv.Itoa(int(port)) + "/new/page?x=1"
			if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != want {
				t.Errorf("redirect: %d %q, want 301 %q", resp.StatusCode, resp.Header.Get("Location"), want)
			}
			resp, e := do("gw.example", "/api/v1/items?id=7", map[string]string{"X-Set": "old", "X-Remove": "r", "X-Add": "mine"})
			if e.Backend != "b" || e.URI != "/v2/items?id=7" || e.Host != "internal.example" {
				t.Errorf("rewrite: backend %q uri %q host %q", e.Backend, e.URI, e.Host)
			}
			if got := e.Headers.Values("X-Set"); len(got) != 1 || got[0] != "new" {
				t.Errorf("X-Set %q", got)
			}
			if got := strings.Join(e.Headers.Values("X-Add"), ","); got != "mine,added" {
				t.Errorf("X-Add %q, want mine,added", got)
			}
			if _, ok := e.Headers["X-Remove"]; ok {
				t.Error("X-Remove reached the backend")
			}
			h := resp.Header
			if h.Get("X-Resp-Keep") != "k" || h.Get("X-Resp-Set") != "new" || h.Get("X-Resp-Add") != "added" || h.Get("X-Resp-Drop") != "" {
				t.Errorf("response headers %v", h)
			}
		})
	}
}

// TestGatewayTimeouts runs a Gateway rule's request and backend timeouts
// through every client side and upstream kind: a slow backend answers
// 504 within the timeout, a fast one 200, and a rule without a timeout
// waits for the slow one.
func TestGatewayTimeouts(t *testing.T) {
	for _, pc := range pipelineCases {
		t.Run(pc.name, func(t *testing.T) {
			slow := startDualBackend(t, "slow", func(w http.ResponseWriter, r *http.Request) {
				if d, err := time.ParseDuration(r.URL.Query().Get("delay")); err == nil {
					time.Sleep(d)
				}
				_, _ = io.WriteString(w, "done")
			})
			p := startProxy(t, Options{}, Config{})
			front := netip.MustParseAddrPort(p.httpAddr)
			if pc.h2 {
				front = netip.MustParseAddrPort(p.httpsAddr)
			}
			rule := func(path string, request, backend time.Duration) HTTPRouteRule {
				return HTTPRouteRule{Matches: []HTTPMatch{{PathType: PathPrefix, Path: path}}, Timeout: request, BackendTimeout: backend,
					Backends: []WeightedBackend{{Upstream: "slow", Weight: 1}}}
			}
			if errs := p.Update(Config{
				Upstreams:    []Upstream{{Name: "slow", Protocol: pc.protocol, Endpoints: ep(slow)}},
				Certificates: []Certificate{{Cert: makeCert(t, "gw", "t.example")}},
				Listeners: []Listener{{Name: "ns/gw/l", Frontends: []netip.AddrPort{front}, Routes: []HTTPRoute{{Source: "ns/r", Rules: []HTTPRouteRule{
					rule("/request", 300*time.Millisecond, 0),
					rule("/backend", 0, 300*time.Millisecond),
					rule("/none", 0, 0),
				}}}}},
			}); len(errs) > 0 {
				t.Fatal(errs)
			}
			c, base := pc.client(p, "t.example")
			for _, tt := range []struct {
				path string
				want int
				max  time.Duration
			}{
				{"/request?delay=0s", 200, time.Second},
				{"/request?delay=2s", 504, time.Second},
				{"/backend?delay=0s", 200, time.Second},
				{"/backend?delay=2s", 504, time.Second},
				{"/none?delay=700ms", 200, 5 * time.Second},
			} {
				req, _ := http.NewRequest(http.MethodGet, base+tt.path, nil)
				req.Host = "t.example"
				start := time.Now()
				resp, err := c.Do(req)
				if err != nil {
					t.Fatalf("%s: %v", tt.path, err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if took := time.Since(start); resp.StatusCode != tt.want || took > tt.max {
					t.Errorf("%s: %d after %s, want %d within %s", tt.path, resp.StatusCode, took.Round(time.Millisecond), tt.want, tt.max)
				}
			}
		})
	}
}

// TestGatewayMisdirectedRequests: on an HTTPS frontend with several
// listeners, a request whose Host belongs to another listener than the
// one its SNI chose gets 421, over HTTP/1.1 and HTTP/2; the same names on
// the listener the SNI chose are served (or 404 without a route).
func TestGatewayMisdirectedRequests(t *testing.T) {
	a, b, c := startGatewayEcho(t, "a"), startGatewayEcho(t, "b"), startGatewayEcho(t, "c")
	ups := []Upstream{{Name: "a", Endpoints: ep(a)}, {Name: "b", Endpoints: ep(b)}, {Name: "c", Endpoints: ep(c)}}
	cert := Certificate{Cert: makeCert(t, "gw", "*.example.org", "example.org", "*.wild.org")}
	p := startProxy(t, Options{}, Config{Upstreams: ups, Certificates: []Certificate{cert}})
	front := []netip.AddrPort{netip.MustParseAddrPort(p.httpsAddr)}
	route := func(up string) []HTTPRoute {
		return []HTTPRoute{{Source: "ns/" + up, Rules: []HTTPRouteRule{{Backends: []WeightedBackend{{Upstream: up, Weight: 1}}}}}}
	}
	listeners := []Listener{
		{Name: "ns/gw/any", Frontends: front, Routes: []HTTPRoute{{Source: "ns/a", Hostnames: []string{"example.org"},
			Rules: []HTTPRouteRule{{Backends: []WeightedBackend{{Upstream: "a", Weight: 1}}}}}}},
		{Name: "ns/gw/second", Frontends: front, Hostname: "second.example.org", Routes: route("b")},
		{Name: "ns/gw/wild", Frontends: front, Hostname: "*.wild.org", Routes: route("c")},
		{Name: "ns/gw/fourth", Frontends: front, Hostname: "fourth.wild.org", Routes: route("a")},
	}
	if errs := p.Update(Config{Upstreams: ups, Certificates: []Certificate{cert}, Listeners: listeners}); len(errs) > 0 {
		t.Fatal(errs)
	}
	for _, h2 := range []bool{false, true} {
		for _, tc := range []struct {
			sni, host string
			code      int
			backend   string
		}{
			{"example.org", "example.org", 200, "a"},
			{"example.org", "second.example.org", 421, ""},
			{"example.org", "unknown.example.org", 404, ""},
			{"second.example.org", "second.example.org", 200, "b"},
			{"second.example.org", "example.org", 421, ""},
			{"third.wild.org", "fifth.wild.org", 200, "c"},
			{"third.wild.org", "fourth.wild.org", 421, ""},
			{"third.wild.org", "unknown.example.org", 421, ""},
			{"unknown.example.org", "example.org", 200, "a"},
			{"unknown.example.org", "unknown.example.org", 404, ""},
		} {
			req, _ := http.NewRequest(http.MethodGet, "https://"+p.httpsAddr+"/", nil)
			req.Host = tc.host
			res, err := tlsClient(tc.sni, h2).Do(req)
			if err != nil {
				t.Fatalf("h2=%v SNI %s Host %s: %v", h2, tc.sni, tc.host, err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != tc.code || tc.backend != "" && !strings.Contains(string(body), `"`+tc.backend+`"`) {
				t.Errorf("h2=%v SNI %s Host %s: %d %q, want %d from %q", h2, tc.sni, tc.host, res.StatusCode, body, tc.code, tc.backend)
			}
			if h2 && res.ProtoMajor != 2 {
				t.Errorf("SNI %s: answered over %s, want HTTP/2", tc.sni, res.Proto)
			}
		}
	}
}
