package l7proxy

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// echoBackend answers with a description of the request it got and echoes
// its body.
func echoBackend(t *testing.T) *backend {
	return startBackend(t, "echo", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Method", r.Method)
		w.Header().Set("X-Uri", r.RequestURI)
		w.Header().Set("X-Host", r.Host)
		w.Header().Set("X-Cl", fmt.Sprint(r.ContentLength))
		w.Header().Set("X-Te", strings.Join(r.TransferEncoding, ","))
		w.Header().Set("X-Expect", r.Header.Get("Expect"))
		switch r.URL.Path {
		case "/204":
			w.WriteHeader(http.StatusNoContent)
			return
		case "/304":
			w.WriteHeader(http.StatusNotModified)
			return
		case "/stream":
			// No Content-Length: chunked towards the proxy.
			w.WriteHeader(http.StatusOK)
			for i := range 3 {
				fmt.Fprintf(w, "part%d;", i)
				http.NewResponseController(w).Flush()
			}
			return
		}
		_, _ = w.Write(body)
	}))
}

func singleRoute(bs ...*backend) Config {
	return Config{
		Routes:    []Route{{Path: "/", Upstream: "u", Ingress: "ns/i"}},
		Upstreams: []Upstream{{Name: "u", Endpoints: ep(bs...)}},
	}
}

// rawConn is a client connection speaking HTTP/1.x by hand.
type rawConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c, r: bufio.NewReader(c)}
}

func (rc *rawConn) send(s string) {
	rc.t.Helper()
	if _, err := io.WriteString(rc.c, s); err != nil {
		rc.t.Fatal(err)
	}
}

// read reads one response to a request with the given method.
func (rc *rawConn) read(method string) (*http.Response, string) {
	rc.t.Helper()
	resp, err := http.ReadResponse(rc.r, &http.Request{Method: method})
	if err != nil {
		rc.t.Fatalf("read response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		rc.t.Fatalf("read body: %v", err)
	}
	resp.Body.Close()
	return resp, string(body)
}

// closed reports whether the proxy closed the connection (EOF next).
func (rc *rawConn) closed() bool {
	_ = rc.c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := rc.r.ReadByte()
	return err == io.EOF
}

func TestHTTP10(t *testing.T) {
	p := startProxy(t, Options{}, singleRoute(echoBackend(t)))

	rc := dialRaw(t, p.httpAddr)
	rc.send("GET /x HTTP/1.0\r\nHost: h\r\n\r\n")
	resp, _ := rc.read("GET")
	if resp.StatusCode != 200 || resp.Header.Get("X-Uri") != "/x" {
		t.Errorf("got %d %v", resp.StatusCode, resp.Header)
	}
	if !rc.closed() {
		t.Error("HTTP/1.0 connection without keep-alive stays open")
	}

	rc = dialRaw(t, p.httpAddr)
	for i := range 3 {
		rc.send(fmt.Sprintf("POST /k%d HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi", i))
		resp, body := rc.read("POST")
		if resp.StatusCode != 200 || body != "hi" || resp.Close {
			t.Fatalf("request %d: %d %q close=%v", i, resp.StatusCode, body, resp.Close)
		}
	}
	// A response without length to an HTTP/1.0 client is delimited by
	// closing the connection.
	rc.send("GET /stream HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n")
	resp, body := rc.read("GET")
	if body != "part0;part1;part2;" || len(resp.TransferEncoding) > 0 {
		t.Errorf("stream to HTTP/1.0: %q te=%v", body, resp.TransferEncoding)
	}
}

func TestPipelining(t *testing.T) {
	p := startProxy(t, Options{}, singleRoute(echoBackend(t)))
	rc := dialRaw(t, p.httpAddr)
	var all strings.Builder
	for i := range 5 {
		fmt.Fprintf(&all, "POST /p%d HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nb%02d", i, i)
	}
	all.WriteString("GET /last HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
	rc.send(all.String())
	for i := range 5 {
		resp, body := rc.read("POST")
		if resp.Header.Get("X-Uri") != fmt.Sprintf("/p%d", i) || body != fmt.Sprintf("b%02d", i) {
			t.Fatalf("response %d: %s %q", i, resp.Header.Get("X-Uri"), body)
		}
	}
	resp, _ := rc.read("GET")
	if resp.Header.Get("X-Uri") != "/last" || !resp.Close {
		t.Errorf("last: %s close=%v", resp.Header.Get("X-Uri"), resp.Close)
	}
	if !rc.closed() {
		t.Error("connection open after Connection: close")
	}
}

func TestExpectContinue(t *testing.T) {
	p := startProxy(t, Options{DefaultMaxBodyBytes: 100}, singleRoute(echoBackend(t)))
	rc := dialRaw(t, p.httpAddr)
	rc.send("PUT /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
	line, err := rc.r.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("interim %q %v, want 100 Continue", line, err)
	}
	if blank, _ := rc.r.ReadString('\n'); blank != "\r\n" {
		t.Fatalf("100 Continue followed by %q", blank)
	}
	rc.send("hello")
	resp, body := rc.read("PUT")
	if resp.StatusCode != 200 || body != "hello" {
		t.Errorf("got %d %q", resp.StatusCode, body)
	}

	// Too large: refused without 100 Continue.
	rc = dialRaw(t, p.httpAddr)
	rc.send("PUT /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 500\r\n\r\n")
	resp, _ = rc.read("PUT")
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized: %d, want 413", resp.StatusCode)
	}
}

func TestChunkedBodies(t *testing.T) {
	p := startProxy(t, Options{}, singleRoute(echoBackend(t)))
	rc := dialRaw(t, p.httpAddr)
	rc.send("POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n")
	resp, body := rc.read("POST")
	if resp.StatusCode != 200 || body != "hello world" || resp.Header.Get("X-Te") != "chunked" {
		t.Errorf("got %d %q te=%q", resp.StatusCode, body, resp.Header.Get("X-Te"))
	}
	rc.send("GET /stream HTTP/1.1\r\nHost: h\r\n\r\n")
	resp, body = rc.read("GET")
	if body != "part0;part1;part2;" || len(resp.TransferEncoding) == 0 || resp.Close {
		t.Errorf("chunked response: %q te=%v close=%v", body, resp.TransferEncoding, resp.Close)
	}
}

func TestBodilessResponses(t *testing.T) {
	p := startProxy(t, Options{}, singleRoute(echoBackend(t)))
	rc := dialRaw(t, p.httpAddr)
	for _, tt := range []struct {
		method, path string
		code         int
	}{
		{"HEAD", "/h", 200},
		{"GET", "/204", 204},
		{"GET", "/304", 304},
		{"GET", "/after", 200}, // the connection is still in sync
	} {
		rc.send(tt.method + " " + tt.path + " HTTP/1.1\r\nHost: h\r\n\r\n")
		resp, body := rc.read(tt.method)
		if resp.StatusCode != tt.code || body != "" {
			t.Errorf("%s %s: %d %q", tt.method, tt.path, resp.StatusCode, body)
		}
	}
}

// rawBackend serves each connection with fn, for responses net/http's
// server would not produce.
func rawBackend(t *testing.T, fn func(c net.Conn, r *bufio.Reader)) netip.AddrPort {
	t.Helper()
	return rawTLSBackend(t, nil, fn)
}

// rawTLSBackend is a rawBackend whose connections are TLS with conf
// (plain when nil).
func rawTLSBackend(t *testing.T, conf *tls.Config, fn func(c net.Conn, r *bufio.Reader)) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if conf != nil {
		l = tls.NewListener(l, conf)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				fn(c, bufio.NewReader(c))
			}()
		}
	}()
	return netip.MustParseAddrPort(l.Addr().String())
}

// readRequestHead consumes one request head (these backends get no bodies).
func readRequestHead(r *bufio.Reader) bool {
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return false
		}
		if line == "\r\n" {
			return true
		}
	}
}

func TestUpstreamResponseFraming(t *testing.T) {
	untilClose := rawBackend(t, func(c net.Conn, r *bufio.Reader) {
		if readRequestHead(r) {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
		}
	})
	hints := rawBackend(t, func(c net.Conn, r *bufio.Reader) {
		for readRequestHead(r) {
			io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"+
				"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	trailers := rawBackend(t, func(c net.Conn, r *bufio.Reader) {
		for readRequestHead(r) {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n"+
				"3\r\nabc\r\n0\r\nX-Sum: 42\r\n\r\n")
		}
	})
	p := startProxy(t, Options{}, Config{
		Routes: []Route{
			{Host: "close.example", Path: "/", Upstream: "close"},
			{Host: "hints.example", Path: "/", Upstream: "hints"},
			{Host: "trailers.example", Path: "/", Upstream: "trailers"},
		},
		Upstreams: []Upstream{
			{Name: "close", Endpoints: []Endpoint{{Addr: untilClose}}},
			{Name: "hints", Endpoints: []Endpoint{{Addr: hints}}},
			{Name: "trailers", Endpoints: []Endpoint{{Addr: trailers}}},
		},
	})

	rc := dialRaw(t, p.httpAddr)
	rc.send("GET / HTTP/1.1\r\nHost: close.example\r\n\r\n")
	resp, body := rc.read("GET")
	if body != "until the end" {
		t.Errorf("read-until-close body %q", body)
	}
	if !resp.Close || !rc.closed() {
		t.Error("body delimited by close, but the client connection stays open")
	}

	rc = dialRaw(t, p.httpAddr)
	rc.send("GET / HTTP/1.1\r\nHost: hints.example\r\n\r\n")
	// Interim responses are relayed.
	line, _ := rc.r.ReadString('\n')
	if !strings.HasPrefix(line, "HTTP/1.1 103") {
		t.Errorf("first line %q, want the 103", line)
	}
	hdr, _ := rc.r.ReadString('\n')
	if !strings.EqualFold(strings.TrimSpace(hdr), "Link: </s.css>; rel=preload") {
		t.Errorf("103 header %q", hdr)
	}
	for l, _ := rc.r.ReadString('\n'); l != "\r\n" && l != ""; l, _ = rc.r.ReadString('\n') {
	}
	resp, body = rc.read("GET")
	if resp.StatusCode != 200 || body != "ok" {
		t.Errorf("after 103: %d %q", resp.StatusCode, body)
	}

	rc = dialRaw(t, p.httpAddr)
	rc.send("GET / HTTP/1.1\r\nHost: trailers.example\r\n\r\n")
	resp, body = rc.read("GET")
	if body != "abc" || resp.Trailer.Get("X-Sum") != "42" {
		t.Errorf("trailers: %q %v", body, resp.Trailer)
	}
}

// TestStaleUpstreamConnection: the endpoint closes idle keep-alive
// connections after every response, without saying so. Requests must not
// fail for it.
func TestStaleUpstreamConnection(t *testing.T) {
	var conns, closed atomic.Int64
	addr := rawBackend(t, func(c net.Conn, r *bufio.Reader) {
		conns.Add(1)
		if readRequestHead(r) {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
		time.Sleep(20 * time.Millisecond)
		_ = c.Close()
		closed.Add(1)
	})
	p := startProxy(t, Options{}, Config{
		Routes:    []Route{{Path: "/", Upstream: "u"}},
		Upstreams: []Upstream{{Name: "u", Endpoints: []Endpoint{{Addr: addr}}}},
	})
	c := httpClient()
	for i := range 5 {
		if code, body := get(t, c, p.httpAddr, "x", "/"); code != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q", i, code, body)
		}
		// The next request meets a pooled connection the endpoint closed.
		waitFor(t, "the endpoint to close its connections", func() bool { return closed.Load() == conns.Load() })
	}
}

// TestLargeBodies streams bodies larger than every buffer both ways, with
// a known length and chunked.
func TestLargeBodies(t *testing.T) {
	sum := startBackend(t, "sum", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		w.Header().Set("X-Sum", fmt.Sprintf("%x", h.Sum(nil)))
		w.Header().Set("X-Len", fmt.Sprint(n))
		if r.URL.Query().Has("echo") {
			_, _ = w.Write(bytes.Repeat([]byte("z"), int(n)))
		}
	}))
	p := startProxy(t, Options{DefaultMaxBodyBytes: -1}, singleRoute(sum))
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	want := fmt.Sprintf("%x", sha256.Sum256(payload))
	for _, chunked := range []bool{false, true} {
		var body io.Reader = bytes.NewReader(payload)
		if chunked {
			body = io.MultiReader(body)
		}
		req, _ := http.NewRequest(http.MethodPost, "http://"+p.httpAddr+"/?echo", body)
		resp, err := httpClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("X-Sum") != want || len(got) != len(payload) {
			t.Errorf("chunked=%v: %d sum match %v, echoed %d bytes", chunked, resp.StatusCode, resp.Header.Get("X-Sum") == want, len(got))
		}
	}
}

// TestEarlyUpstreamAnswer: an endpoint refuses a large upload without
// reading it; the client gets the answer, not a 502.
func TestEarlyUpstreamAnswer(t *testing.T) {
	addr := rawBackend(t, func(c net.Conn, r *bufio.Reader) {
		if readRequestHead(r) {
			io.WriteString(c, "HTTP/1.1 401 Unauthorized\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope")
		}
	})
	p := startProxy(t, Options{DefaultMaxBodyBytes: -1}, Config{
		Routes:    []Route{{Path: "/", Upstream: "u"}},
		Upstreams: []Upstream{{Name: "u", Endpoints: []Endpoint{{Addr: addr}}}},
	})
	req, _ := http.NewRequest(http.MethodPost, "http://"+p.httpAddr+"/", bytes.NewReader(make([]byte, 256<<10)))
	resp, err := httpClient().Do(req)
	if err != nil {
		// The client may see its own write fail once the proxy closes.
		t.Skipf("client: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 || string(body) != "nope" {
		t.Errorf("got %d %q, want the endpoint's 401", resp.StatusCode, body)
	}
}

func TestAbsoluteFormTarget(t *testing.T) {
	b := echoBackend(t)
	p := startProxy(t, Options{}, Config{
		Routes:    []Route{{Host: "abs.example", Path: "/p", Upstream: "u"}},
		Upstreams: []Upstream{{Name: "u", Endpoints: ep(b)}},
	})
	rc := dialRaw(t, p.httpAddr)
	rc.send("GET http://abs.example/p/q?x=1 HTTP/1.1\r\nHost: other.example\r\n\r\n")
	resp, _ := rc.read("GET")
	if resp.StatusCode != 200 || resp.Header.Get("X-Uri") != "/p/q?x=1" || resp.Header.Get("X-Host") != "abs.example" {
		t.Errorf("got %d uri %q host %q", resp.StatusCode, resp.Header.Get("X-Uri"), resp.Header.Get("X-Host"))
	}
}

// TestSmugglingRefused checks the HTTP/1.1 parser's strict refusals end
// to end: nothing reaches the upstream and the connection is closed.
func TestSmugglingRefused(t *testing.T) {
	b := echoBackend(t)
	{
		p := startProxy(t, Options{}, singleRoute(b))
		for _, req := range []string{
			"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n",
			"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGET /smuggled HTTP/1.1\r\n",
			"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
			"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
			"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
			"GET / HTTP/1.1\nHost: h\n\n",
			"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n",
		} {
			out := rawExchange(t, p.httpAddr, req)
			if !strings.HasPrefix(out, "HTTP/1.1 400") || strings.Count(out, "HTTP/1.1 ") != 1 {
				t.Errorf("%q: answered %q", req, out)
			}
		}
		if n := b.hits.Load(); n != 0 {
			t.Errorf("%d refused requests reached the upstream", n)
		}
	}
}

func TestIdleUpstreamExpiry(t *testing.T) {
	e := &endpoint{hostport: "test", rt: &http.Transport{}}
	conns := make([]net.Conn, 3)
	for i := range conns {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		conns[i] = a
	}
	idle := 10 * time.Second
	base := time.Now().UnixNano()
	// Two old connections and a recent one.
	e.putConn(&upConn{conn: conns[0]}, base-int64(30*time.Second), idle)
	e.putConn(&upConn{conn: conns[1]}, base-int64(20*time.Second), idle)
	e.putConn(&upConn{conn: conns[2]}, base, idle)
	e.sweepIdle(base, idle)
	if n := len(e.h1.conns); n != 1 || e.h1.conns[0].conn != conns[2] {
		t.Fatalf("%d idle connections after sweep, want the recent one", n)
	}
	// The newest being expired means all are: nothing is handed out.
	if uc := e.getConn(base+int64(time.Minute), idle); uc != nil {
		t.Error("expired connection handed out")
	}
	if n := len(e.h1.conns); n != 0 {
		t.Errorf("%d idle connections left", n)
	}
	e.retire()
	e.putConn(&upConn{conn: conns[2]}, base, idle)
	if n := len(e.h1.conns); n != 0 {
		t.Error("retired endpoint pooled a connection")
	}
}
