package l7proxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// gwTestProxy starts a proxy whose listener for the case's client side
// is a Gateway listener with the given rules, over the upstreams.
func gwTestProxy(t *testing.T, pc pipelineCase, opts Options, ups []Upstream, rules ...HTTPRouteRule) *testProxy {
	t.Helper()
	p := startProxy(t, opts, Config{})
	front := netip.MustParseAddrPort(p.httpAddr)
	if pc.h2 {
		front = netip.MustParseAddrPort(p.httpsAddr)
	}
	if errs := p.Update(Config{
		Upstreams:    ups,
		Certificates: []Certificate{{Cert: makeCert(t, "gw", "gw.example")}},
		Listeners: []Listener{{Name: "ns/gw/l", Frontends: []netip.AddrPort{front},
			Routes: []HTTPRoute{{Source: "ns/r", Rules: rules}}}},
	}); len(errs) > 0 {
		t.Fatal(errs)
	}
	return p
}

// gwDo sends one request to the Gateway listener and returns the
// response, its body and, for a 200, what the echo backend saw.
func gwDo(t *testing.T, pc pipelineCase, p *testProxy, method, path string, hdr map[string]string) (*http.Response, echoed) {
	t.Helper()
	return gwDoBody(t, pc, p, method, path, nil, hdr)
}

func gwDoBody(t *testing.T, pc pipelineCase, p *testProxy, method, path string, body io.Reader, hdr map[string]string) (*http.Response, echoed) {
	t.Helper()
	c, base := pc.client(p, "gw.example")
	req, _ := http.NewRequest(method, base+path, body)
	req.Host = "gw.example"
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var e echoed
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatalf("%s %s: %q: %v", method, path, raw, err)
		}
	}
	return resp, e
}

// TestGatewayBackendFilters runs backendRef header filters through every
// client side and upstream kind: each applies only when its backend is
// picked, after the rule's own.
func TestGatewayBackendFilters(t *testing.T) {
	for _, pc := range pipelineCases {
		t.Run(pc.name, func(t *testing.T) {
			a, b := startGatewayEcho(t, "a"), startGatewayEcho(t, "b")
			ups := []Upstream{{Name: "a", Protocol: pc.protocol, Endpoints: ep(a)}, {Name: "b", Protocol: pc.protocol, Endpoints: ep(b)}}
			p := gwTestProxy(t, pc, Options{}, ups, HTTPRouteRule{
				Filters: Filters{
					RequestHeaders:  &HeaderEdit{Set: []Field{{"X-Rule", "r"}}, Add: []Field{{"X-Both", "rule"}}},
					ResponseHeaders: &HeaderEdit{Set: []Field{{"X-Resp-Rule", "r"}}},
				},
				Backends: []WeightedBackend{
					{Upstream: "a", Weight: 1,
						RequestHeaders:  &HeaderEdit{Set: []Field{{"Backend", "a"}}, Add: []Field{{"X-Both", "a"}}},
						ResponseHeaders: &HeaderEdit{Set: []Field{{"X-Resp-Backend", "a"}}}},
					{Upstream: "b", Weight: 1,
						RequestHeaders:  &HeaderEdit{Set: []Field{{"Backend", "b"}, {"X-Both", "b-only"}}, Remove: []string{"X-Rule"}},
						ResponseHeaders: &HeaderEdit{Remove: []string{"X-Resp-Rule", "X-Resp-Keep"}}},
				},
			})
			seen := map[string]int{}
			for range 30 {
				resp, e := gwDo(t, pc, p, http.MethodGet, "/", map[string]string{"Backend": "client", "X-Both": "client"})
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("status %d", resp.StatusCode)
				}
				seen[e.Backend]++
				got := e.Headers
				switch e.Backend {
				case "a":
					if got.Get("Backend") != "a" || got.Get("X-Rule") != "r" ||
						strings.Join(got.Values("X-Both"), ",") != "client,rule,a" {
						t.Errorf("backend a got %v", got)
					}
					if resp.Header.Get("X-Resp-Rule") != "r" || resp.Header.Get("X-Resp-Backend") != "a" || resp.Header.Get("X-Resp-Keep") != "k" {
						t.Errorf("backend a response %v", resp.Header)
					}
				case "b":
					if got.Get("Backend") != "b" || got.Values("X-Rule") != nil ||
						strings.Join(got.Values("X-Both"), ",") != "b-only" {
						t.Errorf("backend b got %v", got)
					}
					if resp.Header.Values("X-Resp-Rule") != nil || resp.Header.Values("X-Resp-Keep") != nil ||
						resp.Header.Values("X-Resp-Backend") != nil {
						t.Errorf("backend b response %v", resp.Header)
					}
				default:
					t.Fatalf("backend %q", e.Backend)
				}
			}
			if seen["a"] == 0 || seen["b"] == 0 {
				t.Errorf("backends seen %v", seen)
			}
		})
	}
}

func TestMergeEdits(t *testing.T) {
	h := http.Header{"Keep": {"k"}, "Drop": {"d"}, "Set": {"s"}, "Add": {"a"}}
	a := &HeaderEdit{Set: []Field{{"Set", "a"}, {"Over", "a"}}, Add: []Field{{"Add", "a"}, {"Gone", "a"}}, Remove: []string{"Drop"}}
	b := &HeaderEdit{Set: []Field{{"Over", "b"}}, Add: []Field{{"Add", "b"}, {"Drop", "b"}}, Remove: []string{"Gone"}}
	mergeEdits(a, b).apply(h)
	want := http.Header{"Keep": {"k"}, "Drop": {"b"}, "Set": {"a"}, "Add": {"a", "a", "b"}, "Over": {"b"}}
	if len(h) != len(want) {
		t.Errorf("merged edit gave %v, want %v", h, want)
	}
	for k, v := range want {
		if !slices.Equal(h[k], v) {
			t.Errorf("%s: %q, want %q", k, h[k], v)
		}
	}
	if mergeEdits(nil, b) != b || mergeEdits(a, nil) != a {
		t.Error("merging with nil must return the other edit")
	}
}

func TestCORSOrigins(t *testing.T) {
	p, err := compileCORS(&CORS{AllowOrigins: []string{"https://www.foo.com", "https://*.bar.com", "http://local.test:8080", "HTTP://Upper.Test"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		origin string
		want   bool
	}{
		{"https://www.foo.com", true},
		{"https://www.foo.com:443", true},
		{"https://www.foo.com:8443", false},
		{"http://www.foo.com", false},
		{"https://foo.com", false},
		{"https://www.bar.com", true},
		{"https://xpto.www.bar.com", true},
		{"https://bar.com", false},
		{"https://.bar.com", false},
		{"https://www.bar.com.evil", false},
		{"http://local.test:8080", true},
		{"http://local.test", false},
		{"http://upper.test", true},
		{"https://foobar.com", false},
		{"null", false},
		{"", false},
	} {
		if got := p.allows(tt.origin); got != tt.want {
			t.Errorf("%q: allowed %v, want %v", tt.origin, got, tt.want)
		}
	}
	for _, bad := range []string{"www.foo.com", "https://", "https://a.com/path", "https://a.com:0", "https://a.com:x", "https://*.*.com"} {
		if err := CheckCORS(&CORS{AllowOrigins: []string{bad}}); err == nil {
			t.Errorf("origin %q accepted", bad)
		}
	}
}

// TestGatewayCORS runs the CORS filter through every client side and
// upstream kind: preflights answered by the proxy (allowed origins get the
// policy, others no CORS field), and the CORS fields on forwarded
// responses, with the API's rules for wildcards and credentials.
func TestGatewayCORS(t *testing.T) {
	for _, pc := range pipelineCases {
		t.Run(pc.name, func(t *testing.T) {
			echo := startGatewayEcho(t, "echo")
			ups := []Upstream{{Name: "echo", Protocol: pc.protocol, Endpoints: ep(echo)}}
			corsRule := func(path string, c *CORS) HTTPRouteRule {
				return HTTPRouteRule{Matches: []HTTPMatch{{PathType: PathPrefix, Path: path}}, Filters: Filters{CORS: c,
					ResponseHeaders: &HeaderEdit{Set: []Field{{"X-Resp-Set", "rule"}}}},
					Backends: []WeightedBackend{{Upstream: "echo", Weight: 1}}}
			}
			p := gwTestProxy(t, pc, Options{}, ups,
				corsRule("/cors-1", &CORS{AllowOrigins: []string{"https://www.foo.com", "https://*.bar.com"},
					AllowMethods: []string{"GET", "OPTIONS"}, AllowHeaders: []string{"x-header-1", "x-header-2"},
					ExposeHeaders: []string{"x-header-3", "x-header-4"}, AllowCredentials: true, MaxAge: 3600}),
				corsRule("/cors-2", &CORS{AllowOrigins: []string{"https://www.foo.com"}, AllowMethods: []string{"*"}}),
				corsRule("/any-origin", &CORS{AllowOrigins: []string{"*"}, AllowMethods: []string{"PUT"}, ExposeHeaders: []string{"*"}}),
				corsRule("/any-cred", &CORS{AllowOrigins: []string{"*"}, AllowMethods: []string{"*"}, AllowHeaders: []string{"*"},
					ExposeHeaders: []string{"*"}, AllowCredentials: true}),
			)
			preflight := func(origin, method, headers string) map[string]string {
				h := map[string]string{"Origin": origin, "Access-Control-Request-Method": method}
				if headers != "" {
					h["Access-Control-Request-Headers"] = headers
				}
				return h
			}
			const absent = "<absent>"
			for _, tt := range []struct {
				name, method, path string
				hdr                map[string]string
				code               int
				want               map[string]string
			}{
				{"preflight exact origin", http.MethodOptions, "/cors-1", preflight("https://www.foo.com", "GET", "x-header-1, x-header-2"), 204,
					map[string]string{"Access-Control-Allow-Origin": "https://www.foo.com", "Access-Control-Allow-Methods": "GET, OPTIONS",
						"Access-Control-Allow-Headers": "x-header-1, x-header-2", "Access-Control-Expose-Headers": "x-header-3, x-header-4",
						"Access-Control-Max-Age": "3600", "Access-Control-Allow-Credentials": "true", "Vary": "Origin", "X-Resp-Set": absent}},
				{"preflight wildcard origin", http.MethodOptions, "/cors-1", preflight("https://xpto.www.bar.com", "GET", ""), 204,
					map[string]string{"Access-Control-Allow-Origin": "https://xpto.www.bar.com", "Access-Control-Allow-Methods": "GET, OPTIONS"}},
				{"preflight refused origin", http.MethodOptions, "/cors-1", preflight("https://foobar.com", "GET", ""), 204,
					map[string]string{"Access-Control-Allow-Origin": absent, "Access-Control-Allow-Methods": absent, "Access-Control-Max-Age": absent}},
				{"actual request, allowed origin", http.MethodGet, "/cors-1", map[string]string{"Origin": "https://www.bar.com"}, 200,
					map[string]string{"Access-Control-Allow-Origin": "https://www.bar.com", "Access-Control-Allow-Credentials": "true",
						"Access-Control-Expose-Headers": "x-header-3, x-header-4", "Access-Control-Allow-Methods": absent,
						"Access-Control-Max-Age": absent, "X-Resp-Set": "rule", "Vary": "Origin"}},
				{"actual request, refused origin", http.MethodGet, "/cors-1", map[string]string{"Origin": "https://foobar.com"}, 200,
					map[string]string{"Access-Control-Allow-Origin": absent, "X-Resp-Set": "rule"}},
				{"OPTIONS without request method is forwarded", http.MethodOptions, "/cors-1", map[string]string{"Origin": "https://www.foo.com"}, 200,
					map[string]string{"Access-Control-Allow-Origin": "https://www.foo.com"}},
				{"any method echoes the method, no credentials", http.MethodOptions, "/cors-2", preflight("https://www.foo.com", "POST", ""), 204,
					map[string]string{"Access-Control-Allow-Origin": "https://www.foo.com", "Access-Control-Allow-Methods": "POST",
						"Access-Control-Allow-Credentials": absent, "Access-Control-Max-Age": "5", "Access-Control-Allow-Headers": absent}},
				{"any origin without credentials", http.MethodOptions, "/any-origin", preflight("https://foobar.com:12345", "PUT", ""), 204,
					map[string]string{"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "PUT",
						"Access-Control-Allow-Credentials": absent, "Access-Control-Expose-Headers": "*", "Vary": absent}},
				{"any origin actual request", http.MethodPut, "/any-origin", map[string]string{"Origin": "https://foobar.com:12345"}, 200,
					map[string]string{"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Credentials": absent}},
				{"wildcards with credentials echo", http.MethodOptions, "/any-cred", preflight("https://other.foo.com", "PUT", "x-header-1, x-header-2"), 204,
					map[string]string{"Access-Control-Allow-Origin": "https://other.foo.com", "Access-Control-Allow-Methods": "PUT",
						"Access-Control-Allow-Headers": "x-header-1, x-header-2", "Access-Control-Allow-Credentials": "true",
						"Access-Control-Expose-Headers": absent}},
				{"wildcard headers without request headers", http.MethodOptions, "/any-cred", preflight("https://other.foo.com", "PUT", ""), 204,
					map[string]string{"Access-Control-Allow-Headers": absent}},
				{"credentialed actual request", http.MethodGet, "/any-cred", map[string]string{"Origin": "https://other.foo.com"}, 200,
					map[string]string{"Access-Control-Allow-Origin": "https://other.foo.com", "Access-Control-Allow-Credentials": "true"}},
				{"no Origin, no CORS field", http.MethodGet, "/cors-1", nil, 200,
					map[string]string{"Access-Control-Allow-Origin": absent, "Vary": absent}},
			} {
				hits := echo.hits.Load()
				resp, _ := gwDo(t, pc, p, tt.method, tt.path, tt.hdr)
				if resp.StatusCode != tt.code {
					t.Errorf("%s: status %d, want %d", tt.name, resp.StatusCode, tt.code)
					continue
				}
				for k, v := range tt.want {
					got, ok := resp.Header[k]
					switch {
					case v == absent && ok:
						t.Errorf("%s: %s = %q, want none", tt.name, k, got)
					case v != absent && (len(got) != 1 || got[0] != v):
						t.Errorf("%s: %s = %q, want %q", tt.name, k, got, v)
					}
				}
				if forwarded := echo.hits.Load() != hits; forwarded != (tt.code == 200) {
					t.Errorf("%s: reached the backend: %v", tt.name, forwarded)
				}
				if tt.code == 204 && resp.Header.Get("Content-Length") != "" {
					t.Errorf("%s: 204 with Content-Length %q", tt.name, resp.Header.Get("Content-Length"))
				}
			}
		})
	}
}

// TestHeaderEditSkipsFraming checks that an edit never writes the
// message's framing, Host or hop-by-hop fields, which the proxy writes
// itself, whether it writes a message head or edits a header map, while
// ordinary fields are still set, added and removed.
func TestHeaderEditSkipsFraming(t *testing.T) {
	tests := []struct {
		name     string
		field    string
		writable bool
	}{
		{"ordinary field", "X-User", true},
		{"content-length", "Content-Length", false},
		{"content-length any case", "content-LENGTH", false},
		{"transfer-encoding", "Transfer-Encoding", false},
		{"connection", "Connection", false},
		{"keep-alive", "Keep-Alive", false},
		{"proxy-connection", "Proxy-Connection", false},
		{"te", "Te", false},
		{"trailer", "Trailer", false},
		{"upgrade", "Upgrade", false},
		{"host", "Host", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &HeaderEdit{Set: []Field{{tt.field, "5"}, {"X-Set", "s"}}, Add: []Field{{tt.field, "6"}, {"X-Add", "a"}},
				Remove: []string{"X-Drop"}}
			var buf bytes.Buffer
			w := bufio.NewWriter(&buf)
			e.write(w)
			_ = w.Flush()
			head := strings.ToLower(buf.String())
			if got := strings.Contains(head, strings.ToLower(tt.field)+": "); got != tt.writable {
				t.Errorf("write %q: field written %v, want %v", head, got, tt.writable)
			}
			if !strings.Contains(head, "x-set: s\r\n") || !strings.Contains(head, "x-add: a\r\n") {
				t.Errorf("write %q: ordinary fields missing", head)
			}
			h := http.Header{"X-Drop": {"d"}}
			e.apply(h)
			if _, got := h[tt.field]; got != tt.writable {
				t.Errorf("apply: %v: field set %v, want %v", h, got, tt.writable)
			}
			if h.Get("X-Set") != "s" || h.Get("X-Add") != "a" || h.Get("X-Drop") != "" {
				t.Errorf("apply: ordinary fields %v", h)
			}
		})
	}
}
