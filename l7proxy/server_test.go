package l7proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/websocket"
)

func wsEchoBackend(t *testing.T) *backend {
	return startBackend(t, "ws", websocket.Handler(func(c *websocket.Conn) {
		_, _ = io.Copy(c, c)
	}))
}

// dialWS opens a WebSocket through the proxy's plain listener.
func dialWS(t *testing.T, addr, host string) *websocket.Conn {
	t.Helper()
	cfg, err := websocket.NewConfig("ws://"+host+"/ws", "http://"+host)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Dialer = &net.Dialer{Timeout: 2 * time.Second}
	raw, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
	ws, err := websocket.NewClient(cfg, raw)
	if err != nil {
		raw.Close()
		t.Fatalf("websocket handshake: %v", err)
	}
	_ = raw.SetDeadline(time.Time{})
	t.Cleanup(func() { ws.Close() })
	return ws
}

func wsRoundTrip(ws *websocket.Conn, msg string) error {
	_ = ws.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := ws.Write([]byte(msg)); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(ws, buf); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if string(buf) != msg {
		return fmt.Errorf("echo %q, want %q", buf, msg)
	}
	return nil
}

func TestWebSocketEcho(t *testing.T) {
	b := wsEchoBackend(t)
	p := startProxy(t, Options{}, Config{
		Routes:    []Route{{Host: "ws.example", Path: "/", Upstream: "ws"}},
		Upstreams: []Upstream{{Name: "ws", Endpoints: ep(b)}},
	})
	ws := dialWS(t, p.httpAddr, "ws.example")
	for i := range 5 {
		if err := wsRoundTrip(ws, fmt.Sprintf("hello %d", i)); err != nil {
			t.Fatal(err)
		}
	}
}

// h2cStreamBackend is an HTTP/2-only cleartext server in the manner of a
// gRPC server: it echoes every request body chunk as soon as it arrives
// and ends with trailers.
func h2cStreamBackend(t *testing.T) *backend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: "h2c", addr: netip.MustParseAddrPort(l.Addr().String())}
	protos := new(http.Protocols)
	protos.SetUnencryptedHTTP2(true)
	b.srv = &http.Server{
		Protocols: protos,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b.hits.Add(1)
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Trailer", "Grpc-Status, Grpc-Message")
			w.Header().Set("X-Proto", r.Proto)
			w.WriteHeader(http.StatusOK)
			rc := http.NewResponseController(w)
			_ = rc.Flush()
			buf := make([]byte, 64)
			var n int
			for {
				k, err := r.Body.Read(buf)
				if k > 0 {
					n++
					_, _ = w.Write(buf[:k])
					_ = rc.Flush()
				}
				if err != nil {
					break
				}
			}
			w.Header().Set("Grpc-Status", "0")
			w.Header().Set("Grpc-Message", fmt.Sprintf("%d chunks", n))
		}),
	}
	go func() { _ = b.srv.Serve(l) }()
	t.Cleanup(func() { _ = b.srv.Close() })
	return b
}

func TestH2CStreamingWithTrailers(t *testing.T) {
	b := h2cStreamBackend(t)
	p := startProxy(t, Options{}, Config{
		Routes:       []Route{{Host: "grpc.example", Path: "/", Upstream: "grpc"}},
		Upstreams:    []Upstream{{Name: "grpc", Protocol: ProtocolH2C, Endpoints: ep(b)}},
		Certificates: []Certificate{{Cert: makeCert(t, "grpc", "grpc.example")}},
	})
	c := tlsClient("grpc.example", true)
	pr, pw := io.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+p.httpsAddr+"/pkg.Svc/Stream", pr)
	req.Host = "grpc.example"
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")

	respc := make(chan *http.Response, 1)
	errc := make(chan error, 1)
	go func() {
		resp, err := c.Do(req)
		if err != nil {
			errc <- err
			return
		}
		respc <- resp
	}()
	// The response headers arrive before the request body ends: the
	// stream is bidirectional through the proxy.
	if _, err := pw.Write([]byte("msg-0")); err != nil {
		t.Fatal(err)
	}
	var resp *http.Response
	select {
	case resp = <-respc:
	case err := <-errc:
		t.Fatal(err)
	case <-ctx.Done():
		t.Fatal("no response headers while streaming")
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.Header.Get("X-Proto") != "HTTP/2.0" {
		t.Errorf("client proto %s, upstream proto %q", resp.Proto, resp.Header.Get("X-Proto"))
	}
	buf := make([]byte, 5)
	for i := range 3 {
		if i > 0 {
			if _, err := fmt.Fprintf(pw, "msg-%d", i); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := io.ReadFull(resp.Body, buf); err != nil {
			t.Fatalf("read echo %d: %v", i, err)
		}
		if want := fmt.Sprintf("msg-%d", i); string(buf) != want {
			t.Fatalf("echo %q, want %q", buf, want)
		}
	}
	pw.Close()
	if rest, err := io.ReadAll(resp.Body); err != nil || len(rest) != 0 {
		t.Fatalf("tail %q, %v", rest, err)
	}
	if got := resp.Trailer.Get("Grpc-Status"); got != "0" {
		t.Errorf("trailer Grpc-Status %q, want 0 (trailers %v)", got, resp.Trailer)
	}
	if got := resp.Trailer.Get("Grpc-Message"); got != "3 chunks" {
		t.Errorf("trailer Grpc-Message %q", got)
	}
}

func TestHTTPSUpstream(t *testing.T) {
	var proto atomic.Value
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proto.Store(r.Proto)
		_, _ = io.WriteString(w, "tls-pod")
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	addr := netip.MustParseAddrPort(srv.Listener.Addr().String())
	p := startProxy(t, Options{}, Config{
		Routes:    []Route{{Path: "/", Upstream: "u"}},
		Upstreams: []Upstream{{Name: "u", Protocol: ProtocolHTTPS, Endpoints: []Endpoint{{Addr: addr}}}},
	})
	if code, body := get(t, httpClient(), p.httpAddr, "x", "/"); code != 200 || body != "tls-pod" {
		t.Errorf("got %d %q", code, body)
	}
	if proto.Load() != "HTTP/2.0" {
		t.Errorf("upstream proto %v, want HTTP/2.0 by ALPN", proto.Load())
	}
}

// TestHotUpdatesUnderLoad changes routes and endpoints 100 times while
// requests run, a slow request is in flight and a WebSocket is open:
// nothing may fail.
func TestHotUpdatesUnderLoad(t *testing.T) {
	var bs []*backend
	for i := range 4 {
		bs = append(bs, startBackend(t, fmt.Sprint(i), nil))
	}
	slow := startBackend(t, "slow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Second)
		_, _ = io.WriteString(w, "slow")
	}))
	ws := wsEchoBackend(t)

	cfgFor := func(i int) Config {
		// Every step keeps two of the four backends for "u1", rotating;
		// the route for /r flips between u1 and u2.
		u1 := []Endpoint{{Addr: bs[i%4].addr}, {Addr: bs[(i+1)%4].addr}}
		if i%3 == 0 {
			u1 = append(u1, Endpoint{Addr: bs[(i+2)%4].addr, Terminating: true})
		}
		target := "u1"
		if i%2 == 1 {
			target = "u2"
		}
		routes := []Route{
			{Host: "load.example", Path: "/r", Upstream: target, Ingress: "ns/load"},
			{Host: "load.example", Path: "/slow", Upstream: "slow", Ingress: "ns/load"},
			{Host: "ws.example", Path: "/", Upstream: "ws", Ingress: "ns/ws"},
		}
		if i%5 == 0 {
			routes = append(routes, Route{Host: fmt.Sprintf("extra%d.example", i), Path: "/", Upstream: "u2", Ingress: "ns/extra"})
		}
		return Config{
			Routes: routes,
			Upstreams: []Upstream{
				{Name: "u1", Namespace: "ns", Service: "u1", Balance: Balance(i % 2), Endpoints: u1},
				{Name: "u2", Namespace: "ns", Service: "u2", Endpoints: ep(bs[(i+3)%4])},
				{Name: "slow", Namespace: "ns", Service: "slow", Endpoints: ep(slow)},
				{Name: "ws", Namespace: "ns", Service: "ws", Endpoints: ep(ws)},
			},
		}
	}
	p := startProxy(t, Options{}, cfgFor(0))
	conn := dialWS(t, p.httpAddr, "ws.example")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	fail := func(err error) {
		failed.Add(1)
		firstErr.CompareAndSwap(nil, err)
	}
	c := httpClient()
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-ctx.Done():
					return
				default:
				}
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.httpAddr+"/r", nil)
				req.Host = "load.example"
				resp, err := c.Do(req)
				if err != nil {
					fail(err)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					fail(fmt.Errorf("status %d", resp.StatusCode))
					continue
				}
				ok.Add(1)
			}
		})
	}
	slowDone := make(chan error, 3)
	for range 3 {
		go func() {
			code, body := 0, ""
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.httpAddr+"/slow", nil)
			req.Host = "load.example"
			resp, err := c.Do(req)
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				code, body = resp.StatusCode, string(b)
			}
			if err == nil && (code != 200 || body != "slow") {
				err = fmt.Errorf("slow request: %d %q", code, body)
			}
			slowDone <- err
		}()
	}

	for i := 1; i <= 100; i++ {
		if errs := p.Update(cfgFor(i)); len(errs) > 0 {
			t.Fatalf("update %d: %v", i, errs)
		}
		if i%10 == 0 {
			if err := wsRoundTrip(conn, fmt.Sprintf("during update %d", i)); err != nil {
				t.Fatalf("websocket after update %d: %v", i, err)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	for range 3 {
		select {
		case err := <-slowDone:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("slow request did not finish")
		}
	}
	if err := wsRoundTrip(conn, "after all updates"); err != nil {
		t.Errorf("websocket after updates: %v", err)
	}
	if failed.Load() > 0 {
		t.Errorf("%d of %d requests failed; first: %v", failed.Load(), failed.Load()+ok.Load(), firstErr.Load())
	}
	if ok.Load() < 100 {
		t.Errorf("only %d requests completed", ok.Load())
	}
	t.Logf("%d requests across 100 updates", ok.Load())
}

func TestMetricsAndAccessLog(t *testing.T) {
	a := startBackend(t, "a", nil)
	reg := prometheus.NewRegistry()
	var logBuf syncBuffer
	p := startProxy(t, Options{Registry: reg, AccessLog: &logBuf}, Config{
		Routes: []Route{
			{Host: "m.example", Path: "/", Upstream: "ns/a:http", Ingress: "ns/ing"},
			{Host: "e.example", Path: "/", Upstream: "ns/empty:http", Ingress: "ns/ing2"},
		},
		Upstreams: []Upstream{
			{Name: "ns/a:http", Namespace: "ns", Service: "a", Endpoints: ep(a)},
			{Name: "ns/empty:http", Namespace: "ns", Service: "empty"},
		},
	})
	c := httpClient()
	for range 3 {
		get(t, c, p.httpAddr, "m.example", "/x")
	}
	get(t, c, p.httpAddr, "e.example", "/")
	get(t, c, p.httpAddr, "nothing.example", "/\"quoted\"")

	tests := []struct {
		labels []string
		want   float64
	}{
		{[]string{"ns", "ing", "a", "200"}, 3},
		{[]string{"ns", "ing2", "empty", "503"}, 1},
		{[]string{"", "", "", "404"}, 1},
	}
	for _, tt := range tests {
		if got := testutil.ToFloat64(p.metrics.requests.WithLabelValues(tt.labels...)); got != tt.want {
			t.Errorf("requests_total%v = %v, want %v", tt.labels, got, tt.want)
		}
	}
	n, err := testutil.GatherAndCount(reg, "nodegress_http_request_duration_seconds", "nodegress_http_upstream_duration_seconds")
	if err != nil || n == 0 {
		t.Errorf("histograms: %d series, %v", n, err)
	}

	// The removed route's series go away with it.
	if errs := p.Update(Config{}); len(errs) > 0 {
		t.Fatal(errs)
	}
	if n, _ := testutil.GatherAndCount(reg, "nodegress_http_requests_total"); n != 1 {
		t.Errorf("after removing routes %d requests_total series remain, want 1 (the 404 one)", n)
	}

	p.access.flush()
	lines := strings.Split(strings.TrimSpace(logBuf.String()), "\n")
	if len(lines) != 5 {
		t.Fatalf("%d access log lines, want 5:\n%s", len(lines), logBuf.String())
	}
	var first, last map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatalf("line %q: %v", lines[0], err)
	}
	if err := json.Unmarshal([]byte(lines[4]), &last); err != nil {
		t.Fatalf("line %q: %v", lines[4], err)
	}
	want := map[string]any{"client": "127.0.0.1", "method": "GET", "host": "m.example", "path": "/x",
		"proto": "HTTP/1.1", "status": 200.0, "bytes": 1.0, "upstream": a.addr.String(), "ingress": "ns/ing", "service": "ns/a:http"}
	for k, v := range want {
		if first[k] != v {
			t.Errorf("access log %s = %v, want %v", k, first[k], v)
		}
	}
	if _, ok := first["duration_ms"].(float64); !ok {
		t.Errorf("duration_ms missing: %v", first)
	}
	if _, err := time.Parse(time.RFC3339Nano, first["time"].(string)); err != nil {
		t.Errorf("time: %v", err)
	}
	if last["path"] != `/"quoted"` || last["status"] != 404.0 {
		t.Errorf("404 line %v", last)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestClientGoneIs499 checks that a client hanging up while the upstream
// works is logged as 499 and nothing is written.
func TestClientGoneIs499(t *testing.T) {
	started := make(chan struct{}, 1)
	a := startBackend(t, "a", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	var logBuf syncBuffer
	p := startProxy(t, Options{AccessLog: &logBuf}, Config{
		Routes:    []Route{{Path: "/", Upstream: "u", Ingress: "ns/i"}},
		Upstreams: []Upstream{{Name: "u", Endpoints: ep(a)}},
	})
	c, err := net.DialTimeout("tcp", p.httpAddr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("request did not reach upstream")
	}
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		p.access.flush()
		if strings.Contains(logBuf.String(), `"status":499`) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("no 499 logged: %q", logBuf.String())
}

func TestShutdownIdle(t *testing.T) {
	p, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- p.ServeHTTP(l) }()
	// Serve a request so the listener is known to be running.
	if code, _ := get(t, httpClient(), l.Addr().String(), "x", "/"); code != 404 {
		t.Fatalf("empty config: %d, want 404", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("ServeHTTP after Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeHTTP did not return")
	}
}

// TestShutdownDrainsWebSocket: Shutdown leaves an upgraded connection
// working until it closes or the drain time ends, then cuts it.
func TestShutdownDrainsWebSocket(t *testing.T) {
	for _, tc := range []struct {
		name        string
		clientClose bool // the client closes during the drain
	}{
		{"client closes", true},
		{"drain time ends", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := wsEchoBackend(t)
			p := startProxy(t, Options{}, Config{
				Routes:    []Route{{Host: "ws.example", Path: "/", Upstream: "ws"}},
				Upstreams: []Upstream{{Name: "ws", Endpoints: ep(b)}},
			})
			ws := dialWS(t, p.httpAddr, "ws.example")
			if err := wsRoundTrip(ws, "before"); err != nil {
				t.Fatal(err)
			}
			drain := 30 * time.Second
			if !tc.clientClose {
				drain = 300 * time.Millisecond
			}
			ctx, cancel := context.WithTimeout(context.Background(), drain)
			defer cancel()
			done := make(chan error, 1)
			start := time.Now()
			go func() { done <- p.Shutdown(ctx) }()
			// Draining: the connection still carries messages.
			for i := range 3 {
				if err := wsRoundTrip(ws, fmt.Sprintf("draining %d", i)); err != nil {
					t.Fatalf("during the drain: %v", err)
				}
			}
			select {
			case err := <-done:
				t.Fatalf("Shutdown returned (%v) with a WebSocket open", err)
			default:
			}
			if tc.clientClose {
				ws.Close()
				select {
				case err := <-done:
					if err != nil {
						t.Fatalf("Shutdown: %v", err)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("Shutdown did not return after the WebSocket closed")
				}
				return
			}
			if err := <-done; err == nil {
				t.Fatal("Shutdown returned nil with a WebSocket cut at the deadline")
			}
			t.Logf("Shutdown returned after %s", time.Since(start).Round(time.Millisecond))
			if err := wsRoundTrip(ws, "after"); err == nil {
				t.Fatal("WebSocket still open after the drain time")
			}
		})
	}
}

// TestKeepAliveSurvivesUpdates checks that upstream connections are reused
// across configuration changes that keep the upstream.
func TestKeepAliveSurvivesUpdates(t *testing.T) {
	var conns atomic.Int64
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "a") }),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		},
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	b := &backend{addr: netip.MustParseAddrPort(l.Addr().String())}
	other := startBackend(t, "other", nil)
	cfg := func(i int) Config {
		return Config{
			Routes: []Route{
				{Host: "a.example", Path: "/", Upstream: "a", Ingress: "ns/a"},
				{Host: fmt.Sprintf("h%d.example", i), Path: "/", Upstream: "a", Ingress: "ns/a"},
			},
			Upstreams: []Upstream{{Name: "a", Endpoints: []Endpoint{{Addr: b.addr}, {Addr: other.addr, Terminating: i%2 == 0}}}},
		}
	}
	p := startProxy(t, Options{}, cfg(0))
	c := httpClient()
	for i := 1; i <= 20; i++ {
		if errs := p.Update(cfg(i)); len(errs) > 0 {
			t.Fatal(errs)
		}
		for range 2 {
			if code, _ := get(t, c, p.httpAddr, "a.example", "/"); code != 200 {
				t.Fatalf("status %d", code)
			}
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("backend saw %d connections across updates, want 1", n)
	}
}

// TestShutdownLateH2Handshake: a connection accepted before a shutdown
// whose TLS handshake (negotiating h2) ends after it began is told to go
// away with GOAWAY, which clients answer by sending their requests again
// elsewhere, instead of being closed unanswered.
func TestShutdownLateH2Handshake(t *testing.T) {
	p := startProxy(t, Options{}, Config{Certificates: []Certificate{{Cert: makeCert(t, "late", "late.example")}}})
	raw, err := net.DialTimeout("tcp", p.httpsAddr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	// The connection is accepted (it waits for its ClientHello) before
	// the shutdown starts.
	waitFor(t, "the connection counted as opening", func() bool { return p.h1.opening.Load() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Shutdown(ctx) }()
	waitFor(t, "the shutdown under way", func() bool { return p.h1.closing.Load() })

	_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
	tc := tls.Client(raw, &tls.Config{ServerName: "late.example", InsecureSkipVerify: true, NextProtos: []string{"h2"}}) //nolint:gosec // the test reads frames only
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if got := tc.ConnectionState().NegotiatedProtocol; got != "h2" {
		t.Fatalf("ALPN %q, want h2", got)
	}
	if _, err := tc.Write(h2ClientPreface()); err != nil {
		t.Fatal(err)
	}
	var sawGoAway bool
	for !sawGoAway {
		var hdr [9]byte
		if _, err := io.ReadFull(tc, hdr[:]); err != nil {
			t.Fatalf("connection closed without a GOAWAY: %v", err)
		}
		n := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
		if _, err := io.CopyN(io.Discard, tc, int64(n)); err != nil {
			t.Fatal(err)
		}
		sawGoAway = hdr[3] == 0x7
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// h2ClientPreface is the client connection preface and an empty SETTINGS
// frame.
func h2ClientPreface() []byte {
	return append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, 0, 0, 0x4, 0, 0, 0, 0, 0)
}
