package l7proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// h2Backend answers HTTP/2-forwarded requests (the proxy speaks HTTP/1.1
// to it) and reports what it received in response headers.
func h2Backend(t *testing.T) *backend {
	return startBackend(t, "h2", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Proto", r.Proto)
		h.Set("X-Method", r.Method)
		h.Set("X-Uri", r.RequestURI)
		h.Set("X-Host", r.Host)
		h.Set("X-Cl", fmt.Sprint(r.ContentLength))
		h.Set("X-Te", strings.Join(r.TransferEncoding, ","))
		h.Set("X-Got-Te", r.Header.Get("Te"))
		h.Set("X-Got-Multi", strings.Join(r.Header.Values("X-Multi"), "|"))
		h.Set("X-Got-Xff", r.Header.Get("X-Forwarded-For"))
		h.Set("X-Got-Xfproto", r.Header.Get("X-Forwarded-Proto"))
		h.Set("X-Got-Xfhost", r.Header.Get("X-Forwarded-Host"))
		h.Set("X-Got-Realip", r.Header.Get("X-Real-Ip"))
		h.Set("X-Got-Trailer", r.Trailer.Get("X-Req-Trailer"))
		h.Add("Set-Cookie", "a=1")
		h.Add("Set-Cookie", "b=2")
		switch r.URL.Path {
		case "/204":
			w.WriteHeader(http.StatusNoContent)
			return
		case "/304":
			w.WriteHeader(http.StatusNotModified)
			return
		case "/head":
			h.Set("Content-Length", "123")
			return
		case "/trailers":
			h.Set("Trailer", "X-Sum")
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, "part1;")
			http.NewResponseController(w).Flush()
			_, _ = io.WriteString(w, "part2;")
			h.Set("X-Sum", "42")
			h.Set(http.TrailerPrefix+"X-Late", "late")
			return
		case "/created":
			w.WriteHeader(http.StatusCreated)
		}
		// Body read after the headers above, so the request trailer is
		// known only now: report it in the body.
		body, _ := io.ReadAll(r.Body)
		_, _ = w.Write(body)
		if v := r.Trailer.Get("X-Req-Trailer"); v != "" {
			_, _ = io.WriteString(w, "|trailer="+v)
		}
	}))
}

func h2Client() *http.Client { return tlsClient("x", true) }

func h2Do(t *testing.T, c *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	if resp.ProtoMajor != 2 {
		t.Fatalf("client spoke %s, want HTTP/2", resp.Proto)
	}
	return resp, string(b)
}

// TestH2ToH1Forwarding covers HTTP/2 requests forwarded to HTTP/1.1
// upstreams: headers both ways, bodies of known and unknown length both
// ways, trailers, bodiless responses.
func TestH2ToH1Forwarding(t *testing.T) {
	b := h2Backend(t)
	p := startProxy(t, Options{}, singleRoute(b))
	c := h2Client()
	base := "https://" + p.httpsAddr

	t.Run("get", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, base+"/a/b?q=1&r=%20x", nil)
		req.Host = "app.example"
		req.Header.Add("X-Multi", "one")
		req.Header.Add("X-Multi", "two")
		req.Header.Set("X-Forwarded-For", "6.6.6.6") // untrusted: replaced
		req.Header.Set("X-Real-Ip", "6.6.6.6")
		req.Header.Set("Te", "trailers")
		resp, body := h2Do(t, c, req)
		if resp.StatusCode != 200 || body != "" {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
		want := map[string]string{
			"X-Proto": "HTTP/1.1", "X-Method": "GET", "X-Uri": "/a/b?q=1&r=%20x", "X-Host": "app.example",
			"X-Got-Multi": "one|two", "X-Got-Xff": "127.0.0.1", "X-Got-Realip": "127.0.0.1",
			"X-Got-Xfproto": "https", "X-Got-Xfhost": "app.example", "X-Got-Te": "trailers", "X-Cl": "0",
		}
		for k, v := range want {
			if got := resp.Header.Get(k); got != v {
				t.Errorf("%s = %q, want %q", k, got, v)
			}
		}
		if got := resp.Header.Values("Set-Cookie"); strings.Join(got, "|") != "a=1|b=2" {
			t.Errorf("Set-Cookie = %q", got)
		}
		if resp.Header.Get("Date") == "" {
			t.Error("no Date header")
		}
	})

	t.Run("post known length", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, base+"/created", strings.NewReader("hello"))
		req.Host = "x"
		resp, body := h2Do(t, c, req)
		if resp.StatusCode != 201 || body != "hello" || resp.Header.Get("X-Cl") != "5" {
			t.Fatalf("got %d %q cl=%q", resp.StatusCode, body, resp.Header.Get("X-Cl"))
		}
	})

	t.Run("post empty", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, base+"/", http.NoBody)
		req.Host = "x"
		resp, body := h2Do(t, c, req)
		if resp.StatusCode != 200 || body != "" || resp.Header.Get("X-Cl") != "0" {
			t.Fatalf("got %d %q cl=%q", resp.StatusCode, body, resp.Header.Get("X-Cl"))
		}
	})

	t.Run("large bodies of unknown length", func(t *testing.T) {
		payload := bytes.Repeat([]byte("0123456789abcdef"), 40<<10) // 640 KiB
		pr, pw := io.Pipe()
		go func() {
			for i := 0; i < len(payload); i += 7000 {
				if _, err := pw.Write(payload[i:min(i+7000, len(payload))]); err != nil {
					return
				}
			}
			_ = pw.Close()
		}()
		req, _ := http.NewRequest(http.MethodPut, base+"/", pr)
		req.Host = "x"
		req.ContentLength = -1
		lim := int64(1 << 30)
		p.Update(Config{
			Routes:    []Route{{Path: "/", Upstream: "u", Ingress: "ns/i", Options: RouteOptions{MaxBodyBytes: lim}}},
			Upstreams: []Upstream{{Name: "u", Endpoints: ep(b)}},
		})
		defer p.Update(singleRoute(b))
		resp, body := h2Do(t, c, req)
		if resp.StatusCode != 200 || body != string(payload) {
			t.Fatalf("got %d, %d bytes back, want %d", resp.StatusCode, len(body), len(payload))
		}
		if resp.Header.Get("X-Te") != "chunked" {
			t.Errorf("upstream saw Transfer-Encoding %q, want chunked", resp.Header.Get("X-Te"))
		}
	})

	t.Run("request trailer", func(t *testing.T) {
		pr, pw := io.Pipe()
		req, _ := http.NewRequest(http.MethodPost, base+"/", pr)
		req.Host = "x"
		req.ContentLength = -1
		req.Trailer = http.Header{"X-Req-Trailer": nil}
		go func() {
			_, _ = io.WriteString(pw, "body")
			req.Trailer.Set("X-Req-Trailer", "t1")
			_ = pw.Close()
		}()
		resp, body := h2Do(t, c, req)
		if resp.StatusCode != 200 || body != "body|trailer=t1" {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
	})

	t.Run("response trailers", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, base+"/trailers", nil)
		req.Host = "x"
		resp, body := h2Do(t, c, req)
		if resp.StatusCode != 200 || body != "part1;part2;" {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
		if got := resp.Trailer.Get("X-Sum"); got != "42" {
			t.Errorf("trailer X-Sum = %q (trailer %v)", got, resp.Trailer)
		}
		if got := resp.Trailer.Get("X-Late"); got != "late" {
			t.Errorf("trailer X-Late = %q (trailer %v)", got, resp.Trailer)
		}
	})

	for _, tc := range []struct {
		method, path string
		code         int
		cl           int64
	}{
		{http.MethodGet, "/204", 204, 0},
		{http.MethodGet, "/304", 304, 0},
		{http.MethodHead, "/head", 200, 123},
	} {
		t.Run(tc.method+tc.path, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, base+tc.path, nil)
			req.Host = "x"
			resp, body := h2Do(t, c, req)
			if resp.StatusCode != tc.code || body != "" {
				t.Fatalf("got %d %q", resp.StatusCode, body)
			}
			if tc.cl > 0 && resp.ContentLength != tc.cl {
				t.Errorf("Content-Length %d, want %d", resp.ContentLength, tc.cl)
			}
		})
	}
}

// TestH2FullDuplex checks that a request body streams to the upstream
// while its response streams back: each piece is answered before the next
// is sent.
//
// This is the HTTP/1.1 upstream kind's behaviour; a Transport sends the
// response head with the first body bytes.
func TestH2FullDuplex(t *testing.T) {
	b := startBackend(t, "duplex", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		_ = rc.EnableFullDuplex()
		w.WriteHeader(http.StatusOK)
		_ = rc.Flush()
		br := bufio.NewReader(r.Body)
		for {
			line, err := br.ReadString('\n')
			if line != "" {
				_, _ = io.WriteString(w, "echo:"+line)
				_ = rc.Flush()
			}
			if err != nil {
				return
			}
		}
	}))
	p := startProxy(t, Options{}, singleRoute(b))
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPost, "https://"+p.httpsAddr+"/", pr)
	req.Host = "x"
	req.ContentLength = -1
	resp, err := h2Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for i := range 3 {
		msg := fmt.Sprintf("ping%d\n", i)
		if _, err := io.WriteString(pw, msg); err != nil {
			t.Fatal(err)
		}
		got, err := br.ReadString('\n')
		if err != nil || got != "echo:"+msg {
			t.Fatalf("round %d: %q, %v", i, got, err)
		}
	}
	_ = pw.Close()
	if rest, _ := io.ReadAll(br); len(rest) != 0 {
		t.Errorf("unexpected trailing data %q", rest)
	}
}

// TestH2UpstreamErrors checks the status HTTP/2 clients get for upstream
// failures, and that a response broken midway resets the stream.
func TestH2UpstreamErrors(t *testing.T) {
	slow := startBackend(t, "slow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(500 * time.Millisecond)
	}))
	broken := rawBackend(t, func(c net.Conn, r *bufio.Reader) {
		if readRequestHead(r) {
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
		}
		_ = c.Close()
	})
	garbage := rawBackend(t, func(c net.Conn, r *bufio.Reader) {
		if readRequestHead(r) {
			_, _ = io.WriteString(c, "NOT HTTP\r\n\r\n")
		}
		_ = c.Close()
	})
	p := startProxy(t, Options{}, Config{
		Routes: []Route{
			{Path: "/dead", Upstream: "dead"},
			{Path: "/slow", Upstream: "slow"},
			{Path: "/broken", Upstream: "broken"},
			{Path: "/garbage", Upstream: "garbage"},
			{Path: "/small", Upstream: "slow", Options: RouteOptions{MaxBodyBytes: 10}},
		},
		Upstreams: []Upstream{
			{Name: "dead", Endpoints: []Endpoint{{Addr: deadAddr(t)}}},
			{Name: "slow", Endpoints: ep(slow), ReadTimeout: 100 * time.Millisecond},
			{Name: "broken", Endpoints: []Endpoint{{Addr: broken}}},
			{Name: "garbage", Endpoints: []Endpoint{{Addr: garbage}}},
		},
	})
	c := h2Client()
	for _, tc := range []struct {
		path string
		body io.Reader
		code int
	}{
		{"/dead", nil, 502},
		{"/slow", nil, 504},
		{"/garbage", nil, 502},
		{"/small", strings.NewReader("more than ten bytes"), 413},
		{"/small", io.MultiReader(strings.NewReader("more than "), strings.NewReader("ten bytes")), 413},
	} {
		method := http.MethodGet
		if tc.body != nil {
			method = http.MethodPost
		}
		req, _ := http.NewRequest(method, "https://"+p.httpsAddr+tc.path, tc.body)
		req.Host = "x"
		if _, ok := tc.body.(*strings.Reader); !ok && tc.body != nil {
			req.ContentLength = -1
		}
		resp, _ := h2Do(t, c, req)
		if resp.StatusCode != tc.code {
			t.Errorf("%s %s: %d, want %d", method, tc.path, resp.StatusCode, tc.code)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, "https://"+p.httpsAddr+"/broken", nil)
	req.Host = "x"
	// Whether the head reached the client before the reset depends
	// on buffering; either way the client must see an error.
	resp, err := c.Do(req)
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Error("a truncated upstream body reached the client as complete")
	}
}

// TestH2ClientGoneIs499 checks that an HTTP/2 client cancelling a request
// while the upstream works ends the upstream request and is logged as 499.
func TestH2ClientGoneIs499(t *testing.T) {
	started := make(chan struct{}, 1)
	ended := make(chan struct{}, 1)
	a := startBackend(t, "a", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		select {
		case <-r.Context().Done():
			ended <- struct{}{}
		case <-time.After(5 * time.Second):
		}
	}))
	var logBuf syncBuffer
	p := startProxy(t, Options{AccessLog: &logBuf}, Config{
		Routes:    []Route{{Path: "/", Upstream: "u", Ingress: "ns/i"}},
		Upstreams: []Upstream{{Name: "u", Endpoints: ep(a)}},
	})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+p.httpsAddr+"/", nil)
	req.Host = "x"
	errc := make(chan error, 1)
	go func() {
		resp, err := h2Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("request did not reach upstream")
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("client: %v", err)
	}
	select {
	case <-ended:
	case <-time.After(3 * time.Second):
		t.Error("upstream request not ended after the client went away")
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		p.access.flush()
		if s := logBuf.String(); strings.Contains(s, `"status":499`) && strings.Contains(s, `"HTTP/2.0"`) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("no 499 logged: %q", logBuf.String())
}

// TestH2StaleUpstreamConnection checks that an idle upstream connection
// the endpoint closed is replaced transparently.
func TestH2StaleUpstreamConnection(t *testing.T) {
	var conns, closed atomic.Int64
	addr := rawBackend(t, func(c net.Conn, r *bufio.Reader) {
		conns.Add(1)
		// One response per connection, then close without saying so.
		if readRequestHead(r) {
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
		time.Sleep(50 * time.Millisecond)
		_ = c.Close()
		closed.Add(1)
	})
	p := startProxy(t, Options{}, Config{
		Routes:    []Route{{Path: "/", Upstream: "u"}},
		Upstreams: []Upstream{{Name: "u", Endpoints: []Endpoint{{Addr: addr}}}},
	})
	c := h2Client()
	for i := range 3 {
		req, _ := http.NewRequest(http.MethodGet, "https://"+p.httpsAddr+"/", nil)
		req.Host = "x"
		resp, body := h2Do(t, c, req)
		if resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
		// The next request meets a pooled connection the endpoint closed.
		waitFor(t, "the endpoint to close its connections", func() bool { return closed.Load() == conns.Load() })
	}
}
