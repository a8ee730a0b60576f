package l7proxy

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestEjectBackoff(t *testing.T) {
	e := &endpoint{}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}
	for i, w := range want {
		before := time.Now()
		e.eject()
		if got := time.Duration(e.backoff.Load()); got != w {
			t.Fatalf("failure %d: backoff %v, want %v", i+1, got, w)
		}
		until := time.Unix(0, e.ejectedUntil.Load())
		if until.Before(before.Add(w)) || until.After(time.Now().Add(w)) {
			t.Fatalf("failure %d: ejected until %v, want now+%v", i+1, until, w)
		}
		var now int64
		if !e.ejected(&now) {
			t.Fatalf("failure %d: not ejected", i+1)
		}
	}
	e.succeeded()
	var now int64
	if e.ejected(&now) || e.backoff.Load() != 0 {
		t.Error("success did not reset the ejection")
	}
	if now != 0 {
		t.Error("a healthy endpoint cost a clock read")
	}
}

func testPool(t *testing.T, b Balance, eps ...Endpoint) *pool {
	t.Helper()
	s, _ := settingsFor(&Upstream{}, &Options{DefaultConnectTimeout: time.Second})
	p := newPool("u", s)
	p.update(&Upstream{Name: "u", Balance: b, Endpoints: eps}, 0)
	return p
}

func addrs(n int) []Endpoint {
	var eps []Endpoint
	for i := range n {
		eps = append(eps, Endpoint{Addr: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(8000+i))})
	}
	return eps
}

func TestPick(t *testing.T) {
	t.Run("round robin skips ejected", func(t *testing.T) {
		p := testPool(t, RoundRobin, addrs(3)...)
		eps := *p.ready.Load()
		eps[1].eject()
		for range 30 {
			if e := p.pick(nil); e == eps[1] {
				t.Fatal("picked the ejected endpoint")
			}
		}
	})
	t.Run("all ejected still picks", func(t *testing.T) {
		p := testPool(t, RoundRobin, addrs(2)...)
		for _, e := range *p.ready.Load() {
			e.eject()
		}
		if p.pick(nil) == nil {
			t.Fatal("no endpoint while all are ejected")
		}
	})
	t.Run("exclude", func(t *testing.T) {
		for _, b := range []Balance{RoundRobin, LeastRequest} {
			p := testPool(t, b, addrs(2)...)
			eps := *p.ready.Load()
			for range 20 {
				if e := p.pick(eps[0]); e != eps[1] {
					t.Fatalf("balance %d: picked %v, want the other", b, e)
				}
			}
			one := testPool(t, b, addrs(1)...)
			if e := one.pick((*one.ready.Load())[0]); e != nil {
				t.Errorf("balance %d: single excluded endpoint still picked", b)
			}
		}
	})
	t.Run("least request", func(t *testing.T) {
		p := testPool(t, LeastRequest, addrs(2)...)
		eps := *p.ready.Load()
		eps[0].inflight.Store(5)
		for range 20 {
			if e := p.pick(nil); e != eps[1] {
				t.Fatal("picked the busier endpoint")
			}
		}
	})
	t.Run("terminating not picked, kept for in-flight", func(t *testing.T) {
		eps := addrs(2)
		eps[0].Terminating = true
		p := testPool(t, RoundRobin, eps...)
		if n := len(*p.ready.Load()); n != 1 {
			t.Fatalf("%d ready endpoints, want 1", n)
		}
		if len(p.all) != 2 {
			t.Errorf("terminating endpoint dropped from the pool")
		}
		for range 10 {
			if e := p.pick(nil); e.addr != eps[1].Addr {
				t.Fatal("picked a terminating endpoint")
			}
		}
	})
	t.Run("update keeps endpoint state", func(t *testing.T) {
		eps := addrs(3)
		p := testPool(t, RoundRobin, eps...)
		kept := p.all[eps[1].Addr]
		kept.eject()
		gone := p.all[eps[2].Addr]
		p.update(&Upstream{Name: "u", Endpoints: eps[:2]}, 0)
		if p.all[eps[1].Addr] != kept || kept.ejectedUntil.Load() == 0 {
			t.Error("update replaced a remaining endpoint")
		}
		if !gone.retired.Load() {
			t.Error("removed endpoint not retired")
		}
	})
	t.Run("empty", func(t *testing.T) {
		if testPool(t, RoundRobin).pick(nil) != nil {
			t.Error("picked from an empty pool")
		}
	})
}

// TestIdempotentMethod pins the methods the attempt loop may send to a
// second endpoint after a failed connect (RFC 9110 §9.2.2).
func TestIdempotentMethod(t *testing.T) {
	for _, tt := range []struct {
		method string
		want   bool
	}{
		{http.MethodGet, true},
		{http.MethodHead, true},
		{http.MethodOptions, true},
		{http.MethodPut, true},
		{http.MethodDelete, true},
		{http.MethodTrace, true},
		{http.MethodPost, false},
		{http.MethodPatch, false},
		{http.MethodConnect, false},
		{"get", false},
	} {
		if got := idempotentMethod(tt.method); got != tt.want {
			t.Errorf("idempotentMethod(%q) = %v, want %v", tt.method, got, tt.want)
		}
	}
}

// TestSendTimeout: an endpoint that stops reading the request fails it
// after SendTimeout, long before the read timeout; without SendTimeout
// the same request waits for the read timeout.
func TestSendTimeout(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { _ = c.Close() }) // accepted, never read
		}
	}()
	stuck := Endpoint{Addr: netip.MustParseAddrPort(l.Addr().String())}
	tests := []struct {
		name    string
		send    time.Duration
		atLeast time.Duration
		atMost  time.Duration
	}{
		{name: "send timeout", send: 300 * time.Millisecond, atLeast: 300 * time.Millisecond, atMost: 2500 * time.Millisecond},
		{name: "read timeout only", atLeast: 3 * time.Second, atMost: 10 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := startProxy(t, Options{}, Config{
				Routes:    []Route{{Host: "slow.example", Path: "/", Upstream: "u", Options: RouteOptions{MaxBodyBytes: -1}}},
				Upstreams: []Upstream{{Name: "u", Endpoints: []Endpoint{stuck}, SendTimeout: tt.send, ReadTimeout: 3 * time.Second}},
			})
			body := strings.NewReader(strings.Repeat("x", 64<<20)) // more than the socket buffers hold
			req, _ := http.NewRequest(http.MethodPost, "http://"+p.httpAddr+"/", body)
			req.Host = "slow.example"
			start := time.Now()
			resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
			took := time.Since(start)
			if err == nil {
				_ = resp.Body.Close()
				if resp.StatusCode < 500 {
					t.Fatalf("status %d, want a failure", resp.StatusCode)
				}
			}
			if took < tt.atLeast || took > tt.atMost {
				t.Errorf("failed after %v (%v), want between %v and %v", took, err, tt.atLeast, tt.atMost)
			}
		})
	}
}
