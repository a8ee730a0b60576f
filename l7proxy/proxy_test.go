package l7proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testProxy is a proxy serving plain HTTP and HTTPS on loopback.
type testProxy struct {
	*Proxy
	httpAddr  string
	httpsAddr string
}

// waitFor polls cond until it holds, failing the test after five seconds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func startProxy(t testing.TB, opts Options, cfg Config) *testProxy {
	t.Helper()
	p, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if errs := p.Update(cfg); len(errs) > 0 {
		t.Fatalf("Update: %v", errs)
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}, 2)
	go func() { _ = p.ServeHTTP(hl); done <- struct{}{} }()
	go func() { _ = p.ServeHTTPS(sl); done <- struct{}{} }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
		for range 2 {
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Error("proxy did not stop")
				return
			}
		}
	})
	return &testProxy{Proxy: p, httpAddr: hl.Addr().String(), httpsAddr: sl.Addr().String()}
}

// backend is a loopback HTTP server counting the requests it serves.
type backend struct {
	name string
	addr netip.AddrPort
	hits atomic.Int64
	srv  *http.Server
}

// startBackend serves h (or, when nil, a handler answering with the
// backend's name) on a loopback port.
func startBackend(t testing.TB, name string, h http.Handler) *backend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: name, addr: netip.MustParseAddrPort(l.Addr().String())}
	if h == nil {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			_, _ = io.WriteString(w, name)
		})
	}
	b.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b.hits.Add(1)
			h.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() { _ = b.srv.Serve(l) }()
	t.Cleanup(func() { _ = b.srv.Close() })
	return b
}

func ep(bs ...*backend) []Endpoint {
	var eps []Endpoint
	for _, b := range bs {
		eps = append(eps, Endpoint{Addr: b.addr})
	}
	return eps
}

// deadAddr returns a loopback address nothing listens on.
func deadAddr(t testing.TB) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddrPort(l.Addr().String())
	_ = l.Close()
	return a
}

func httpClient() *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			MaxIdleConnsPerHost: 64,
			DisableCompression:  true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// get sends a request for host+path to addr and returns status and body.
func get(t testing.TB, c *http.Client, addr, host, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s%s: %v", host, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp.StatusCode, string(body)
}

func TestRouting(t *testing.T) {
	a := startBackend(t, "a", nil)
	b := startBackend(t, "b", nil)
	def := startBackend(t, "default", nil)
	cfg := Config{
		Routes: []Route{
			{Host: "a.example", Path: "/", Upstream: "ns/a:80", Ingress: "ns/ing-a"},
			{Host: "a.example", Path: "/b", Upstream: "ns/b:80", Ingress: "ns/ing-a"},
			{Host: "*.wild.example", Path: "/", Upstream: "ns/b:80", Ingress: "ns/ing-w"},
			{Host: "empty.example", Path: "/", Upstream: "ns/empty:80", Ingress: "ns/ing-e"},
			{Host: "gone.example", Path: "/", Upstream: "ns/missing:80", Ingress: "ns/ing-g"},
			{Host: "term.example", Path: "/", Upstream: "ns/term:80", Ingress: "ns/ing-t"},
			{Host: "def.example", Path: "/x", PathType: PathExact, Upstream: "ns/a:80", Ingress: "ns/ing-d"},
		},
		Upstreams: []Upstream{
			{Name: "ns/a:80", Namespace: "ns", Service: "a", Endpoints: ep(a)},
			{Name: "ns/b:80", Namespace: "ns", Service: "b", Endpoints: ep(b)},
			{Name: "ns/empty:80", Namespace: "ns", Service: "empty"},
			{Name: "ns/term:80", Namespace: "ns", Service: "term", Endpoints: []Endpoint{{Addr: a.addr, Terminating: true}}},
			{Name: "ns/def:80", Namespace: "ns", Service: "def", Endpoints: ep(def)},
		},
	}
	p := startProxy(t, Options{}, cfg)
	c := httpClient()
	tests := []struct {
		name, host, path string
		wantCode         int
		wantBody         string
	}{
		{"exact host prefix root", "a.example", "/anything", 200, "a"},
		{"longer prefix wins", "a.example", "/b/c", 200, "b"},
		{"host with port and case", "A.Example:8080", "/b", 200, "b"},
		{"wildcard one label", "x.wild.example", "/", 200, "b"},
		{"wildcard two labels", "y.x.wild.example", "/", 404, "Not Found\n"},
		{"unknown host", "nope.example", "/", 404, "Not Found\n"},
		{"no endpoints", "empty.example", "/", 503, "Service Unavailable\n"},
		{"missing upstream", "gone.example", "/", 503, "Service Unavailable\n"},
		{"only terminating", "term.example", "/", 503, "Service Unavailable\n"},
		{"exact path", "def.example", "/x", 200, "a"},
		{"exact path mismatch", "def.example", "/x/", 404, "Not Found\n"},
		{"dot segment refused", "a.example", "/b/../c", 400, "Bad Request\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := get(t, c, p.httpAddr, tt.host, tt.path)
			if code != tt.wantCode || body != tt.wantBody {
				t.Errorf("got %d %q, want %d %q", code, body, tt.wantCode, tt.wantBody)
			}
		})
	}

	// A default upstream catches what no route matches.
	cfg.DefaultUpstream = "ns/def:80"
	if errs := p.Update(cfg); len(errs) > 0 {
		t.Fatal(errs)
	}
	if code, body := get(t, c, p.httpAddr, "nope.example", "/"); code != 200 || body != "default" {
		t.Errorf("default upstream: got %d %q", code, body)
	}
}

func TestSSLRedirect(t *testing.T) {
	a := startBackend(t, "a", nil)
	cfg := Config{
		Routes: []Route{
			{Host: "secure.example", Path: "/", Upstream: "ns/a:80", Ingress: "ns/ing", Options: RouteOptions{SSLRedirect: true}},
		},
		Upstreams: []Upstream{{Name: "ns/a:80", Endpoints: ep(a)}},
	}
	tests := []struct {
		name      string
		httpsPort int
		host      string
		path      string
		want      string
	}{
		{"default port", 0, "secure.example", "/p/q?x=1&y=%20", "https://secure.example/p/q?x=1&y=%20"},
		{"host port dropped", 0, "secure.example:8080", "/", "https://secure.example/"},
		{"custom https port", 8443, "secure.example", "/a", "https://secure.example:8443/a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := startProxy(t, Options{HTTPSPort: tt.httpsPort}, cfg)
			req, _ := http.NewRequest(http.MethodPost, "http://"+p.httpAddr+tt.path, strings.NewReader("body"))
			req.Host = tt.host
			resp, err := httpClient().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != tt.want {
				t.Errorf("got %d %q, want 308 %q", resp.StatusCode, resp.Header.Get("Location"), tt.want)
			}
			// HTTPS is served, not redirected.
			req, _ = http.NewRequest(http.MethodGet, "https://"+p.httpsAddr+"/", nil)
			req.Host = "secure.example"
			resp, err = tlsClient("secure.example", false).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != "a" {
				t.Errorf("https: got %d %q", resp.StatusCode, body)
			}
		})
	}
	if a.hits.Load() != int64(len(tests)) {
		t.Errorf("backend saw %d requests, want %d (redirects must not reach it)", a.hits.Load(), len(tests))
	}
}

func tlsClient(serverName string, h2 bool) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{ServerName: serverName, InsecureSkipVerify: true},
			ForceAttemptHTTP2: h2,
		},
	}
}

func TestRoundRobin(t *testing.T) {
	var bs []*backend
	for i := range 3 {
		bs = append(bs, startBackend(t, fmt.Sprint(i), nil))
	}
	p := startProxy(t, Options{}, Config{
		Routes:    []Route{{Path: "/", Upstream: "u"}},
		Upstreams: []Upstream{{Name: "u", Endpoints: ep(bs...)}},
	})
	c := httpClient()
	for range 30 {
		if code, _ := get(t, c, p.httpAddr, "x", "/"); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	for _, b := range bs {
		if n := b.hits.Load(); n != 10 {
			t.Errorf("backend %s: %d requests, want 10", b.name, n)
		}
	}
}

// holdBackend blocks requests with ?hold until release is closed.
func holdBackend(t *testing.T, name string, arrived chan<- string, release <-chan struct{}) *backend {
	return startBackend(t, name, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("hold") {
			arrived <- name
			select {
			case <-release:
			case <-time.After(10 * time.Second):
			}
		}
		_, _ = io.WriteString(w, name)
	}))
}

func TestLeastRequestPrefersIdle(t *testing.T) {
	arrived := make(chan string, 2)
	release := make(chan struct{})
	a := holdBackend(t, "a", arrived, release)
	b := holdBackend(t, "b", arrived, release)
	p := startProxy(t, Options{}, Config{
		Routes:    []Route{{Path: "/", Upstream: "u"}},
		Upstreams: []Upstream{{Name: "u", Balance: LeastRequest, Endpoints: ep(a, b)}},
	})
	c := httpClient()
	held := make(chan int, 1)
	go func() {
		code, _ := get(t, c, p.httpAddr, "x", "/?hold")
		held <- code
	}()
	var busy string
	select {
	case busy = <-arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("held request did not arrive")
	}
	for range 20 {
		code, body := get(t, c, p.httpAddr, "x", "/")
		if code != 200 || body == busy {
			t.Fatalf("got %d from %q; the busy endpoint is %q", code, body, busy)
		}
	}
	close(release)
	select {
	case code := <-held:
		if code != 200 {
			t.Errorf("held request: %d", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("held request did not finish")
	}
}

func TestEjectionAndRetry(t *testing.T) {
	live := startBackend(t, "live", nil)
	dead := deadAddr(t)
	cfg := Config{
		Routes: []Route{
			{Host: "get.example", Path: "/", Upstream: "get"},
			{Host: "post.example", Path: "/", Upstream: "post"},
			{Host: "alldead.example", Path: "/", Upstream: "alldead"},
		},
		Upstreams: []Upstream{
			{Name: "get", Endpoints: []Endpoint{{Addr: dead}, {Addr: live.addr}}},
			{Name: "post", Endpoints: []Endpoint{{Addr: dead}, {Addr: live.addr}}},
			{Name: "alldead", Endpoints: []Endpoint{{Addr: dead}}},
		},
	}
	p := startProxy(t, Options{}, cfg)
	c := httpClient()

	// Idempotent GETs: the failed connect is retried on the live
	// endpoint, and the dead one is ejected.
	for i := range 6 {
		if code, body := get(t, c, p.httpAddr, "get.example", "/"); code != 200 || body != "live" {
			t.Fatalf("GET %d: %d %q", i, code, body)
		}
	}
	pl := p.state.Load().pools["get"]
	var deadEP *endpoint
	for _, e := range *pl.ready.Load() {
		if e.addr == dead {
			deadEP = e
		}
	}
	if deadEP == nil || deadEP.ejectedUntil.Load() == 0 {
		t.Fatalf("dead endpoint not ejected")
	}
	live.hits.Store(0)

	// POSTs are not retried: of two consecutive POSTs round-robin sends
	// one to the dead endpoint, which must fail with 502 and not reach
	// the live one.
	var codes []int
	for range 2 {
		req, _ := http.NewRequest(http.MethodPost, "http://"+p.httpAddr+"/", strings.NewReader("payload"))
		req.Host = "post.example"
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
	}
	if !(codes[0] == 502 && codes[1] == 200 || codes[0] == 200 && codes[1] == 502) {
		t.Errorf("POST statuses %v, want one 502 and one 200", codes)
	}
	if n := live.hits.Load(); n != 1 {
		t.Errorf("live backend saw %d POSTs, want 1", n)
	}

	// Nothing to retry on: 502.
	if code, _ := get(t, c, p.httpAddr, "alldead.example", "/"); code != 502 {
		t.Errorf("all dead: %d, want 502", code)
	}
}

func TestTerminatingEndpointGetsNoRequests(t *testing.T) {
	arrived := make(chan string, 1)
	release := make(chan struct{})
	a := holdBackend(t, "a", arrived, release)
	b := startBackend(t, "b", nil)
	cfg := Config{
		Routes:    []Route{{Path: "/", Upstream: "u"}},
		Upstreams: []Upstream{{Name: "u", Endpoints: ep(a)}},
	}
	p := startProxy(t, Options{}, cfg)
	c := httpClient()
	held := make(chan int, 1)
	go func() {
		code, _ := get(t, c, p.httpAddr, "x", "/?hold")
		held <- code
	}()
	select {
	case <-arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("held request did not arrive")
	}
	// a starts terminating while it serves a request.
	cfg.Upstreams[0].Endpoints = []Endpoint{{Addr: a.addr, Terminating: true}, {Addr: b.addr}}
	if errs := p.Update(cfg); len(errs) > 0 {
		t.Fatal(errs)
	}
	for range 10 {
		if code, body := get(t, c, p.httpAddr, "x", "/"); code != 200 || body != "b" {
			t.Fatalf("got %d %q, want 200 from b", code, body)
		}
	}
	close(release)
	select {
	case code := <-held:
		if code != 200 {
			t.Errorf("in-flight request on terminating endpoint: %d", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("held request did not finish")
	}
	if n := a.hits.Load(); n != 1 {
		t.Errorf("terminating endpoint saw %d requests, want 1", n)
	}
}

func TestUpstreamErrors(t *testing.T) {
	slow := startBackend(t, "slow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
		}
	}))
	p := startProxy(t, Options{}, Config{
		Routes: []Route{
			{Host: "slow.example", Path: "/", Upstream: "slow"},
			{Host: "dead.example", Path: "/", Upstream: "dead"},
		},
		Upstreams: []Upstream{
			{Name: "slow", ReadTimeout: 100 * time.Millisecond, Endpoints: ep(slow)},
			{Name: "dead", Endpoints: []Endpoint{{Addr: deadAddr(t)}}},
		},
	})
	c := httpClient()
	if code, _ := get(t, c, p.httpAddr, "slow.example", "/"); code != http.StatusGatewayTimeout {
		t.Errorf("read timeout: %d, want 504", code)
	}
	if code, _ := get(t, c, p.httpAddr, "dead.example", "/"); code != http.StatusBadGateway {
		t.Errorf("refused: %d, want 502", code)
	}
}

func TestBodyLimit(t *testing.T) {
	a := startBackend(t, "a", nil)
	p := startProxy(t, Options{DefaultMaxBodyBytes: 1000}, Config{
		Routes: []Route{
			{Host: "small.example", Path: "/", Upstream: "u", Options: RouteOptions{MaxBodyBytes: 10}},
			{Host: "default.example", Path: "/", Upstream: "u"},
			{Host: "unlimited.example", Path: "/", Upstream: "u", Options: RouteOptions{MaxBodyBytes: -1}},
		},
		Upstreams: []Upstream{{Name: "u", Endpoints: ep(a)}},
	})
	tests := []struct {
		name    string
		host    string
		size    int
		chunked bool
		want    int
	}{
		{"under route limit", "small.example", 10, false, 200},
		{"over route limit", "small.example", 11, false, 413},
		{"chunked over route limit", "small.example", 100, true, 413},
		{"chunked under route limit", "small.example", 5, true, 200},
		{"over default", "default.example", 1001, false, 413},
		{"under default", "default.example", 1000, false, 200},
		{"unlimited", "unlimited.example", 100000, true, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader = strings.NewReader(strings.Repeat("x", tt.size))
			if tt.chunked {
				body = io.MultiReader(body) // hides the length
			}
			req, _ := http.NewRequest(http.MethodPost, "http://"+p.httpAddr+"/", body)
			req.Host = tt.host
			resp, err := httpClient().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.want)
			}
		})
	}
}

// rawExchange writes a raw request to the proxy and returns everything it
// answers until it closes the connection or the deadline passes.
func rawExchange(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(c)
	return string(out)
}

func TestSmugglingRejected(t *testing.T) {
	var seen sync.Map
	a := startBackend(t, "a", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		seen.Store(r.URL.Path, fmt.Sprintf("cl=%d te=%v body=%q clhdr=%q", r.ContentLength, r.TransferEncoding, body, r.Header.Get("Content-Length")))
		_, _ = io.WriteString(w, "ok")
	}))
	p := startProxy(t, Options{}, Config{
		Routes:    []Route{{Path: "/", Upstream: "u"}},
		Upstreams: []Upstream{{Name: "u", Endpoints: ep(a)}},
	})
	rejected := []struct {
		name, req, wantStatus string
	}{
		{"differing content-length", "POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", "400"},
		{"content-length list", "POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!", "400"},
		{"signed content-length", "POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello", "400"},
		{"two transfer-encodings", "POST /te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n", "501"},
		{"unknown transfer-encoding", "POST /te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", "501"},
		{"space before colon", "POST /sp HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello", "400"},
		{"two hosts", "GET /hosts HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", "400"},
	}
	for _, tt := range rejected {
		t.Run(tt.name, func(t *testing.T) {
			out := rawExchange(t, p.httpAddr, tt.req)
			if !strings.HasPrefix(out, "HTTP/1.1 "+tt.wantStatus) && !strings.HasPrefix(out, "HTTP/1.1 400") {
				t.Errorf("answer %q, want %s", firstLine(out), tt.wantStatus)
			}
		})
	}
	if n := a.hits.Load(); n != 0 {
		t.Errorf("%d rejected requests reached the upstream", n)
	}

	// A malformed chunked body is only found while it streams to the
	// upstream: the upstream sees an aborted body, the client a 400.
	out := rawExchange(t, p.httpAddr, "POST /lf HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n")
	if !strings.HasPrefix(out, "HTTP/1.1 400") {
		t.Errorf("bare LF in chunk size: %q, want 400", firstLine(out))
	}
	if v, ok := seen.Load("/lf"); ok && strings.Contains(v.(string), "hello") {
		t.Errorf("upstream got the malformed body: %v", v)
	}

	// Content-Length with Transfer-Encoding: net/http applies RFC 9112
	// §6.3 (chunked wins, Content-Length dropped); the proxy then closes
	// the connection, so bytes smuggled after the chunked body are never
	// parsed as a second request.
	out = rawExchange(t, p.httpAddr, "POST /clte HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\n\r\n"+
		"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
	if got := strings.Count(out, "HTTP/1.1 "); got != 1 {
		t.Errorf("got %d responses, want 1: %q", got, out)
	}
	if _, ok := seen.Load("/smuggled"); ok {
		t.Error("smuggled request reached the upstream")
	}
	// The proxy refuses the message outright (RFC 9112
	// §6.1 allows it), so no reading of it reaches a pod.
	if !strings.HasPrefix(out, "HTTP/1.1 400") {
		t.Errorf("answer %q, want 400", firstLine(out))
	}
	if _, ok := seen.Load("/clte"); ok {
		t.Error("request with Content-Length and Transfer-Encoding reached the upstream")
	}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\r\n")
	return l
}

func TestSlowHeaderClientClosed(t *testing.T) {
	a := startBackend(t, "a", nil)
	p := startProxy(t, Options{ReadHeaderTimeout: 200 * time.Millisecond}, Config{
		Routes:    []Route{{Path: "/", Upstream: "u"}},
		Upstreams: []Upstream{{Name: "u", Endpoints: ep(a)}},
	})
	c, err := net.DialTimeout("tcp", p.httpAddr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n")
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.ReadAll(c) // returns when the proxy closes
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("slow client held the connection %v", d)
	}
	if a.hits.Load() != 0 {
		t.Error("incomplete request reached the upstream")
	}
}

func TestHeaderLimit(t *testing.T) {
	a := startBackend(t, "a", nil)
	p := startProxy(t, Options{MaxHeaderBytes: 4096}, Config{
		Routes:    []Route{{Path: "/", Upstream: "u"}},
		Upstreams: []Upstream{{Name: "u", Endpoints: ep(a)}},
	})
	out := rawExchange(t, p.httpAddr, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 16<<10)+"\r\n\r\n")
	if !strings.HasPrefix(out, "HTTP/1.1 431") {
		t.Errorf("got %q, want 431", firstLine(out))
	}
}

// TestHeaderEcho checks what the upstream sees: the original Host, the
// forwarded headers, and no hop-by-hop headers.
func TestHeaderEcho(t *testing.T) {
	var got http.Header
	var gotHost string
	var mu sync.Mutex
	a := startBackend(t, "a", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got, gotHost = r.Header.Clone(), r.Host
		mu.Unlock()
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-From-Upstream", "1")
	}))
	p := startProxy(t, Options{}, Config{
		Routes:    []Route{{Path: "/", Upstream: "u"}},
		Upstreams: []Upstream{{Name: "u", Endpoints: ep(a)}},
	})
	req, _ := http.NewRequest(http.MethodGet, "http://"+p.httpAddr+"/", nil)
	req.Host = "site.example"
	req.Header.Set("Connection", "X-Drop")
	req.Header.Set("X-Drop", "1")
	req.Header.Set("Proxy-Authorization", "secret")
	req.Header.Set("Accept-Encoding", "br")
	resp, err := httpClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	mu.Lock()
	defer mu.Unlock()
	if gotHost != "site.example" {
		t.Errorf("upstream Host %q", gotHost)
	}
	for _, h := range []string{"X-Drop", "Proxy-Authorization"} {
		if got.Get(h) != "" {
			t.Errorf("hop-by-hop header %s forwarded", h)
		}
	}
	if got.Get("Accept-Encoding") != "br" {
		t.Errorf("Accept-Encoding %q, want it untouched", got.Get("Accept-Encoding"))
	}
	if resp.Header.Get("Keep-Alive") != "" || resp.Header.Get("X-From-Upstream") != "1" {
		t.Errorf("response headers %v", resp.Header)
	}
}
