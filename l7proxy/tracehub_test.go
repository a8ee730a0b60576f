package l7proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"
)

// generatedID is the shape of a request ID the proxy generates.
var generatedID = regexp.MustCompile(`^[0-9a-f]{32}$`)

// requestIDBackend answers with the X-Request-ID it received.
func requestIDBackend(t *testing.T) *backend {
	return startDualBackend(t, "rid", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Header.Get("X-Request-Id"))
	})
}

// tracedProxy starts a proxy in front of b with a request tracer
// collecting into the returned channel, and an access log.
func tracedProxy(t *testing.T, b *backend, proto UpstreamProtocol, trusted bool) (*testProxy, chan RequestRecord, *syncBuffer, func()) {
	t.Helper()
	var opts Options
	if trusted {
		opts.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	}
	logBuf := new(syncBuffer)
	opts.AccessLog = logBuf
	p := startProxy(t, opts, Config{
		Routes: []Route{{Host: "app.example", Path: "/", Upstream: "ns/rid:http", Ingress: "ns/ing"}},
		Upstreams: []Upstream{{Name: "ns/rid:http", Protocol: proto,
			Endpoints: []Endpoint{{Addr: b.addr, Pod: "ns/rid-7c9f", Node: "node-b"}}}},
	})
	records := make(chan RequestRecord, 16)
	stop := p.TraceRequests(func(r *RequestRecord) { records <- *r })
	t.Cleanup(stop)
	return p, records, logBuf, stop
}

func TestRequestIDAndRecord(t *testing.T) {
	b := requestIDBackend(t)
	tests := []struct {
		name    string
		trusted bool
		sent    string // X-Request-ID sent by the client; "" none
		want    string // "": a generated one
	}{
		{"generated", false, "", ""},
		{"trusted kept", true, "req-42.abc", "req-42.abc"},
		{"untrusted replaced", false, "forged-id", ""},
		{"trusted but malformed replaced", true, "two words", ""},
		{"trusted but too long replaced", true, strings.Repeat("a", maxRequestIDLen+1), ""},
	}
	for _, pc := range pipelineCases {
		t.Run(pc.name, func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					p, records, logBuf, _ := tracedProxy(t, b, pc.protocol, tt.trusted)
					c, base := pc.client(p, "app.example")
					req, _ := http.NewRequest(http.MethodGet, base+"/some/path?q=1", nil)
					req.Host = "app.example"
					if tt.sent != "" {
						req.Header.Set("X-Request-Id", tt.sent)
					}
					resp, err := c.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					got := string(body)
					if resp.StatusCode != http.StatusOK {
						t.Fatalf("status %d %q", resp.StatusCode, got)
					}
					switch {
					case tt.want != "" && got != tt.want:
						t.Errorf("upstream got X-Request-ID %q, want %q", got, tt.want)
					case tt.want == "" && !generatedID.MatchString(got):
						t.Errorf("upstream got X-Request-ID %q, want a generated one", got)
					}

					var r RequestRecord
					select {
					case r = <-records:
					case <-time.After(5 * time.Second):
						t.Fatal("no request record")
					}
					checkRecord(t, r, pc, p, b, got)

					p.access.flush()
					var line map[string]any
					if err := json.Unmarshal([]byte(strings.TrimSpace(logBuf.String())), &line); err != nil {
						t.Fatalf("access log %q: %v", logBuf.String(), err)
					}
					if line["request_id"] != got {
						t.Errorf("access log request_id %v, want %q", line["request_id"], got)
					}
				})
			}
		})
	}
}

// checkRecord compares a request's record with what the client and the
// backend saw.
func checkRecord(t *testing.T, r RequestRecord, pc pipelineCase, p *testProxy, b *backend, id string) {
	t.Helper()
	frontend := p.httpAddr
	proto, alpn := "HTTP/1.1", ""
	switch {
	case pc.h2:
		frontend, proto, alpn = p.httpsAddr, "HTTP/2.0", "h2"
	case pc.h2c:
		proto = "HTTP/2.0"
	}
	if r.ID != id {
		t.Errorf("record ID %q, upstream got %q", r.ID, id)
	}
	if r.Frontend.String() != frontend || r.Client.Addr() != netip.MustParseAddr("127.0.0.1") || r.Client.Port() == 0 {
		t.Errorf("client connection %s > %s, want 127.0.0.1:* > %s", r.Client, r.Frontend, frontend)
	}
	if r.TLS != pc.h2 || r.ALPN != alpn || (pc.h2 && r.SNI != "app.example") {
		t.Errorf("TLS %v SNI %q ALPN %q", r.TLS, r.SNI, r.ALPN)
	}
	if r.Proto != proto || r.Method != "GET" || r.Host != "app.example" || r.Path != "/some/path" {
		t.Errorf("request %s %s %s%s", r.Proto, r.Method, r.Host, r.Path)
	}
	if r.Status != http.StatusOK || r.Bytes != int64(len(id)) || r.Error != "" {
		t.Errorf("status %d bytes %d (want %d) error %q", r.Status, r.Bytes, len(id), r.Error)
	}
	wantRoute := RequestRoute{Kind: RouteIngress, Name: "ns/ing", Host: "app.example", Path: "/", Rule: -1}
	if r.Route != wantRoute {
		t.Errorf("route %+v, want %+v", r.Route, wantRoute)
	}
	if r.Service != "ns/rid:http" || r.UpstreamRemote != b.addr || r.Pod != "ns/rid-7c9f" || r.Node != "node-b" {
		t.Errorf("upstream %s %s pod %s node %s", r.Service, r.UpstreamRemote, r.Pod, r.Node)
	}
	if r.UpstreamLocal.Addr() != netip.MustParseAddr("127.0.0.1") || r.UpstreamLocal.Port() == 0 || r.UpstreamLocal == b.addr {
		t.Errorf("upstream connection %s > %s", r.UpstreamLocal, r.UpstreamRemote)
	}
	if r.Duration <= 0 || r.Upstream <= 0 || r.Upstream > r.Duration || r.Start.IsZero() {
		t.Errorf("timings: start %s duration %s upstream %s", r.Start, r.Duration, r.Upstream)
	}
}

// TestRequestTracingOnlyWhileRegistered checks that no record is built
// once the last tracer is gone, and that a local answer (404) is traced
// with no route and no upstream.
func TestRequestTracingOnlyWhileRegistered(t *testing.T) {
	b := requestIDBackend(t)
	p, records, _, stop := tracedProxy(t, b, ProtocolHTTP, false)
	c := httpClient()
	if code, _ := get(t, c, p.httpAddr, "other.example", "/"); code != http.StatusNotFound {
		t.Fatalf("status %d", code)
	}
	r := <-records
	if r.Status != http.StatusNotFound || r.Route.Kind != "" || r.Service != "" || r.UpstreamRemote.IsValid() || !generatedID.MatchString(r.ID) {
		t.Errorf("404 record %+v", r)
	}
	if !p.tracingRequests() {
		t.Fatal("tracing off with a tracer registered")
	}
	second := make(chan struct{}, 4)
	stop2 := p.TraceRequests(func(*RequestRecord) { second <- struct{}{} })
	get(t, c, p.httpAddr, "app.example", "/")
	<-records
	<-second
	stop2()
	stop2() // a second stop is harmless
	// Tracers run in the order they registered: once a tracer registered
	// after the stopped one has the record, the stopped one would have had
	// it too.
	barrier := make(chan struct{}, 4)
	stop3 := p.TraceRequests(func(*RequestRecord) { barrier <- struct{}{} })
	get(t, c, p.httpAddr, "app.example", "/")
	<-records
	<-barrier
	stop3()
	if len(second) != 0 {
		t.Error("a stopped tracer got a record")
	}
	stop()
	get(t, c, p.httpAddr, "app.example", "/")
	if p.tracingRequests() || len(records) != 0 {
		t.Errorf("tracing on %v, %d records after the last tracer left", p.tracingRequests(), len(records))
	}
}

// TestRequestRecordHTTPRoute checks the route of a request a Gateway
// listener's HTTPRoute served: its name and the index of the rule.
func TestRequestRecordHTTPRoute(t *testing.T) {
	b := requestIDBackend(t)
	p, records, _, _ := tracedProxy(t, b, ProtocolHTTP, false)
	cfg := Config{
		Upstreams: []Upstream{{Name: "ns/rid:http", Endpoints: []Endpoint{{Addr: b.addr, Pod: "ns/rid-7c9f", Node: "node-b"}}}},
		Listeners: []Listener{{Name: "ns/gw/http", Frontends: []netip.AddrPort{netip.MustParseAddrPort(p.httpAddr)},
			Routes: []HTTPRoute{{Source: "ns/shop", Hostnames: []string{"shop.example"}, Rules: []HTTPRouteRule{
				{Matches: []HTTPMatch{{PathType: PathPrefix, Path: "/cart"}}, Backends: []WeightedBackend{{Upstream: "ns/rid:http", Weight: 1}}},
				{Matches: []HTTPMatch{{PathType: PathPrefix, Path: "/"}}, Backends: []WeightedBackend{{Upstream: "ns/rid:http", Weight: 1}}},
			}}}}},
	}
	if errs := p.Update(cfg); len(errs) > 0 {
		t.Fatal(errs)
	}
	c := httpClient()
	for _, tt := range []struct {
		path string
		rule int
	}{{"/cart/items", 0}, {"/", 1}} {
		if code, _ := get(t, c, p.httpAddr, "shop.example", tt.path); code != http.StatusOK {
			t.Fatalf("GET %s: %d", tt.path, code)
		}
		r := <-records
		want := RequestRoute{Kind: RouteHTTPRoute, Name: "ns/shop", Rule: tt.rule}
		if r.Route != want || r.Pod != "ns/rid-7c9f" {
			t.Errorf("GET %s: route %+v pod %q, want %+v", tt.path, r.Route, r.Pod, want)
		}
	}
}

// TestRequestIDFilterWins checks that a route's header filter setting or
// removing X-Request-ID decides what the upstream gets, on every upstream
// kind: the proxy's own ID is not sent beside it.
func TestRequestIDFilterWins(t *testing.T) {
	b := startDualBackend(t, "rid-all", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strings.Join(r.Header.Values("X-Request-Id"), ","))
	})
	for _, pc := range pipelineCases {
		if pc.h2 {
			continue // the Gateway listener below is the plain one
		}
		t.Run(pc.name, func(t *testing.T) {
			p, _, _, _ := tracedProxy(t, b, pc.protocol, false)
			rule := func(path string, edit *HeaderEdit) HTTPRouteRule {
				return HTTPRouteRule{
					Matches:  []HTTPMatch{{PathType: PathPrefix, Path: path}},
					Filters:  Filters{RequestHeaders: edit},
					Backends: []WeightedBackend{{Upstream: "ns/rid:http", Weight: 1}},
				}
			}
			cfg := Config{
				Upstreams: []Upstream{{Name: "ns/rid:http", Protocol: pc.protocol, Endpoints: []Endpoint{{Addr: b.addr}}}},
				Listeners: []Listener{{Name: "ns/gw/http", Frontends: []netip.AddrPort{netip.MustParseAddrPort(p.httpAddr)},
					Routes: []HTTPRoute{{Source: "ns/shop", Hostnames: []string{"shop.example"}, Rules: []HTTPRouteRule{
						rule("/set", &HeaderEdit{Set: []Field{{"X-Request-Id", "from-filter"}}}),
						rule("/remove", &HeaderEdit{Remove: []string{"X-Request-Id"}}),
						rule("/", nil),
					}}}}},
			}
			if errs := p.Update(cfg); len(errs) > 0 {
				t.Fatal(errs)
			}
			c, base := pc.client(p, "shop.example")
			for _, tt := range []struct{ path, want string }{
				{"/set", "from-filter"},
				{"/remove", ""},
				{"/", "generated"},
			} {
				req, _ := http.NewRequest(http.MethodGet, base+tt.path, nil)
				req.Host = "shop.example"
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				got := string(body)
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("GET %s: %d %q", tt.path, resp.StatusCode, got)
				}
				if tt.want == "generated" {
					if !generatedID.MatchString(got) {
						t.Errorf("GET %s: upstream got X-Request-ID %q, want one generated", tt.path, got)
					}
				} else if got != tt.want {
					t.Errorf("GET %s: upstream got X-Request-ID %q, want %q", tt.path, got, tt.want)
				}
			}
		})
	}
}
