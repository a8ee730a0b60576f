package l7proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// dialFrom connects to addr from a loopback source address: each is a
// client of its own to the limits.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// request sends a keep-alive GET on c and reads the answer; ok is false
// when the connection was closed instead.
func request(c net.Conn, br *bufio.Reader) (int, bool) {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: lim.example\r\n\r\n"); err != nil {
		return 0, false
	}
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, false
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode, true
}

// closedSoon reports whether the server closes c within d.
func closedSoon(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errorsAs(err, &ne) && ne.Timeout())
}

func errorsAs(err error, ne *net.Error) bool {
	e, ok := err.(net.Error)
	if ok {
		*ne = e
	}
	return ok
}

func TestClientLimits(t *testing.T) {
	be := startBackend(t, "be", nil)
	p := startProxy(t, Options{MaxHalfOpenPerClient: 3, MaxIdlePerClient: 2},
		Config{Upstreams: []Upstream{{Name: "be", Endpoints: ep(be)}}, Routes: []Route{{Host: "lim.example", Path: "/", Upstream: "be"}}})
	capped := func(phase string) float64 { return testutil.ToFloat64(p.metrics.capped.WithLabelValues(phase)) }

	t.Run("half-open", func(t *testing.T) {
		var silent []net.Conn
		for range 3 {
			silent = append(silent, dialFrom(t, "127.0.0.1", p.httpAddr))
		}
		waitFor(t, "three half-open connections counted", func() bool {
			p.h1.limits.mu.Lock()
			defer p.h1.limits.mu.Unlock()
			return p.h1.limits.halfOpen == 3
		})
		before := capped("half_open")
		fourth := dialFrom(t, "127.0.0.1", p.httpAddr)
		if !closedSoon(fourth, 2*time.Second) {
			t.Error("a fourth half-open connection of the client was kept")
		}
		waitFor(t, "refusal counted", func() bool { return capped("half_open") == before+1 })
		// Another client is served meanwhile.
		other := dialFrom(t, "127.0.0.2", p.httpAddr)
		if code, ok := request(other, bufio.NewReader(other)); !ok || code != 200 {
			t.Errorf("another client: %d %v", code, ok)
		}
		// A connection that sends its request leaves the half-open
		// count: the client may open another.
		if code, ok := request(silent[0], bufio.NewReader(silent[0])); !ok || code != 200 {
			t.Errorf("a half-open connection's request: %d %v", code, ok)
		}
		next := dialFrom(t, "127.0.0.1", p.httpAddr)
		if code, ok := request(next, bufio.NewReader(next)); !ok || code != 200 {
			t.Errorf("a new connection once under the cap: %d %v", code, ok)
		}
		for _, c := range silent {
			_ = c.Close()
		}
	})

	t.Run("idle", func(t *testing.T) {
		waitFor(t, "no half-open or idle connection of the first test", func() bool {
			p.h1.limits.mu.Lock()
			defer p.h1.limits.mu.Unlock()
			return p.h1.limits.halfOpen == 0
		})
		before := capped("idle")
		var kept []net.Conn
		for range 2 {
			c := dialFrom(t, "127.0.0.3", p.httpAddr)
			if code, ok := request(c, bufio.NewReader(c)); !ok || code != 200 {
				t.Fatalf("keep-alive request: %d %v", code, ok)
			}
			kept = append(kept, c)
		}
		third := dialFrom(t, "127.0.0.3", p.httpAddr)
		if code, ok := request(third, bufio.NewReader(third)); !ok || code != 200 {
			t.Fatalf("third client connection's request: %d %v", code, ok)
		}
		if !closedSoon(third, 2*time.Second) {
			t.Error("a third idle connection of the client was kept")
		}
		waitFor(t, "idle cap counted", func() bool { return capped("idle") == before+1 })
		// The two kept ones still serve.
		for _, c := range kept {
			if code, ok := request(c, bufio.NewReader(c)); !ok || code != 200 {
				t.Errorf("a kept idle connection: %d %v", code, ok)
			}
		}
	})
}

// TestSlowReader: a client that stops reading a large response is cut
// off after the write timeout, while another client is served.
func TestSlowReader(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 64<<20)
	be := startBackend(t, "be", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(big) }))
	p := startProxy(t, Options{WriteTimeout: 300 * time.Millisecond},
		Config{Upstreams: []Upstream{{Name: "be", Endpoints: ep(be)}}, Routes: []Route{{Host: "lim.example", Path: "/", Upstream: "be"}}})
	slow := dialFrom(t, "127.0.0.4", p.httpAddr)
	if tc, ok := slow.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096)
	}
	if _, err := io.WriteString(slow, "GET / HTTP/1.1\r\nHost: lim.example\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// Another client, meanwhile.
	other := dialFrom(t, "127.0.0.5", p.httpAddr)
	if code, ok := request(other, bufio.NewReader(other)); !ok || code != 200 {
		t.Errorf("another client: %d %v", code, ok)
	}
	// The slow client reads nothing until the proxy dropped it, then all
	// it can: less than the whole body.
	start := time.Now()
	waitFor(t, "the slow client's connection dropped", func() bool {
		p.h1.mu.Lock()
		defer p.h1.mu.Unlock()
		for hc := range p.h1.conns {
			if hc.peer.String() == "127.0.0.4" {
				return false
			}
		}
		return true
	})
	t.Logf("slow client dropped after %s", time.Since(start).Round(10*time.Millisecond))
	// What the kernel still holds for it, then nothing more.
	_ = slow.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, err := io.Copy(io.Discard, slow)
	if n >= int64(len(big)) {
		t.Errorf("the slow client got the whole %d-byte response; want it cut off", n)
	}
	t.Logf("it read %d bytes, then %v", n, err)
}

// TestBodyTimeout: a request body that stops coming gets 400 after the
// body timeout; one that keeps coming, slowly, for longer than the
// timeout in total, is forwarded whole.
func TestBodyTimeout(t *testing.T) {
	be := startBackend(t, "be", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, strconv.FormatInt(n, 10))
	}))
	p := startProxy(t, Options{BodyTimeout: 300 * time.Millisecond},
		Config{Upstreams: []Upstream{{Name: "be", Endpoints: ep(be)}}, Routes: []Route{{Host: "lim.example", Path: "/", Upstream: "be"}}})
	send := func(chunks int, pause time.Duration) (int, string, time.Duration) {
		c := dialFrom(t, "127.0.0.6", p.httpAddr)
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		start := time.Now()
		_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: lim.example\r\nContent-Length: 80\r\n\r\n")
		for i := range chunks {
			if i > 0 {
				time.Sleep(pause) // the client's pace, not a wait on the proxy
			}
			if _, err := io.WriteString(c, "0123456789"); err != nil {
				break
			}
		}
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return 0, err.Error(), time.Since(start)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		return res.StatusCode, string(b), time.Since(start)
	}
	// 8 chunks 100 ms apart: 700 ms in all, never 300 ms without progress.
	if code, body, took := send(8, 100*time.Millisecond); code != 200 || body != "80" {
		t.Errorf("steady slow body (%s): %d %q, want 200 \"80\"", took, code, body)
	}
	// 1 chunk, then nothing: cut after the body timeout.
	code, _, took := send(1, 0)
	if code != 400 {
		t.Errorf("stalled body: %d after %s, want 400", code, took)
	}
	if took > 3*time.Second {
		t.Errorf("stalled body answered after %s, want about the 300 ms body timeout", took)
	}
}

// TestClientLimitsH2Idle: HTTP/2 connections without streams count as
// idle connections of their client, under the same cap as HTTP/1.x ones:
// one over the cap is told to go away and closed, the others go on.
func TestClientLimitsH2Idle(t *testing.T) {
	p := startProxy(t, Options{MaxIdlePerClient: 2},
		Config{Certificates: []Certificate{{Cert: makeCert(t, "h2idle", "h2idle.example")}}})
	const client = "127.0.0.6"
	open := func() *tls.Conn {
		t.Helper()
		tc := tls.Client(dialFrom(t, client, p.httpsAddr), &tls.Config{ServerName: "h2idle.example", InsecureSkipVerify: true, NextProtos: []string{"h2"}}) //nolint:gosec // frames only
		_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		if _, err := tc.Write(h2ClientPreface()); err != nil {
			t.Fatal(err)
		}
		return tc
	}
	// readFrame returns the next frame's type, or -1 when the connection
	// closed.
	readFrame := func(c *tls.Conn) int {
		var hdr [9]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return -1
		}
		n := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
		if _, err := io.CopyN(io.Discard, c, int64(n)); err != nil {
			return -1
		}
		return int(hdr[3])
	}
	idle := func() int {
		p.h1.limits.mu.Lock()
		defer p.h1.limits.mu.Unlock()
		if c := p.h1.limits.clients[netip.MustParseAddr(client)]; c != nil {
			return c.idle
		}
		return 0
	}
	a, b := open(), open()
	waitFor(t, "two idle h2 connections counted", func() bool { return idle() == 2 })
	before := testutil.ToFloat64(p.metrics.capped.WithLabelValues("idle"))
	third := open()
	sawGoAway := false
	for {
		typ := readFrame(third)
		if typ == -1 {
			break
		}
		sawGoAway = sawGoAway || typ == 0x7
	}
	if !sawGoAway {
		t.Error("the third idle h2 connection was closed without a GOAWAY")
	}
	if got := testutil.ToFloat64(p.metrics.capped.WithLabelValues("idle")); got != before+1 {
		t.Errorf("idle cap counted %v times, want 1", got-before)
	}
	// The two within the cap still answer a PING.
	for _, c := range []*tls.Conn{a, b} {
		if _, err := c.Write([]byte{0, 0, 8, 0x6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8}); err != nil {
			t.Fatal(err)
		}
		for typ := readFrame(c); typ != 0x6; typ = readFrame(c) {
			if typ == -1 {
				t.Fatal("an h2 connection within the cap was closed")
			}
		}
	}
	a.Close()
	waitFor(t, "a closed connection leaves the idle count", func() bool { return idle() == 1 })
}
