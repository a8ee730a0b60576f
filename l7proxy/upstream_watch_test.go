package l7proxy

import (
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
)

// watchLog records the upstream connections a watch was told of, and
// which of them it was told to forget.
type watchLog struct {
	mu      sync.Mutex
	watched map[netip.AddrPort]netip.AddrPort // local -> remote
	ended   map[netip.AddrPort]int
}

func newWatchLog() *watchLog {
	return &watchLog{watched: map[netip.AddrPort]netip.AddrPort{}, ended: map[netip.AddrPort]int{}}
}

func (l *watchLog) watch(local, remote netip.AddrPort) func() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.watched[local] = remote
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.ended[local]++
	}
}

// locals are the local addresses watched towards remote, and how many
// times each was forgotten.
func (l *watchLog) locals(remote netip.AddrPort) map[netip.AddrPort]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[netip.AddrPort]int{}
	for local, r := range l.watched {
		if r == remote {
			out[local] = l.ended[local]
		}
	}
	return out
}

// closedPort is a loopback address nothing listens on.
func closedPort(t *testing.T) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(l.Addr().String())
	l.Close()
	return ap
}

// closeIdleUpstreams closes the idle connections of an upstream's
// endpoints, as the idle sweeper does.
func closeIdleUpstreams(p *testProxy, name string) {
	pl := p.state.Load().pools[name]
	pl.mu.Lock()
	defer pl.mu.Unlock()
	for _, e := range pl.all {
		e.closeIdleH1()
		e.rt.CloseIdleConnections()
	}
}

// TestWatchUpstreams checks that the proxy tells the watch of every
// upstream connection it dials while one is set, with the tuple it then
// connects from (also for a connect the endpoint refuses, which the
// request record then names), and of its end: when the connection closes,
// and shortly after a connect failed. Without a watch, nothing is told.
func TestWatchUpstreams(t *testing.T) {
	for _, tc := range []struct {
		name  string
		proto UpstreamProtocol
	}{
		{"h1 upstream", ProtocolHTTP}, // the proxy's own pool
		{"h2c upstream", ProtocolH2C}, // an http.Transport
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := requestIDBackend(t)
			dead := closedPort(t)
			p := startProxy(t, Options{}, Config{
				Routes: []Route{
					{Host: "app.example", Path: "/", Upstream: "ns/rid:http", Ingress: "ns/ing"},
					{Host: "dead.example", Path: "/", Upstream: "ns/dead:http", Ingress: "ns/ing"},
				},
				Upstreams: []Upstream{
					{Name: "ns/rid:http", Protocol: tc.proto, Endpoints: []Endpoint{{Addr: b.addr}}},
					{Name: "ns/dead:http", Protocol: tc.proto, Endpoints: []Endpoint{{Addr: dead}}},
				},
			})
			records := make(chan RequestRecord, 16)
			t.Cleanup(p.TraceRequests(func(r *RequestRecord) { records <- *r }))
			c := httpClient()
			log := newWatchLog()

			// No watch: a refused connect is told to nobody.
			if code, _ := get(t, c, p.httpAddr, "dead.example", "/"); code != http.StatusBadGateway && code != http.StatusServiceUnavailable {
				t.Fatalf("dead backend: status %d", code)
			}
			<-records
			stop := p.WatchUpstreams(log.watch)
			if n := len(log.locals(dead)); n != 0 {
				t.Fatalf("%d connections watched before the watch was set", n)
			}

			// Watched: the refused connect, forgotten shortly after.
			get(t, c, p.httpAddr, "dead.example", "/")
			r := <-records
			refused := log.locals(dead)
			if len(refused) != 1 {
				t.Fatalf("refused connects watched: %v, want 1", refused)
			}
			for local := range refused {
				if local.Addr() != netip.MustParseAddr("127.0.0.1") || local.Port() == 0 {
					t.Errorf("watched %s > %s, want 127.0.0.1:* as the local end", local, dead)
				}
				if r.UpstreamLocal != local {
					t.Errorf("record's upstream connection %s > %s, want the watched %s", r.UpstreamLocal, r.UpstreamRemote, local)
				}
			}
			if r.UpstreamRemote != dead || r.Error == "" {
				t.Errorf("record of the refused request: upstream %s, error %q", r.UpstreamRemote, r.Error)
			}
			waitFor(t, "the refused connect's watch to end", func() bool {
				for _, n := range log.locals(dead) {
					return n == 1
				}
				return false
			})

			// Watched: a connection that serves, forgotten when closed.
			if code, _ := get(t, c, p.httpAddr, "app.example", "/"); code != http.StatusOK {
				t.Fatalf("status %d", code)
			}
			r = <-records
			served := log.locals(b.addr)
			if len(served) != 1 {
				t.Fatalf("connections to the backend watched: %v, want 1", served)
			}
			for local, ended := range served {
				if r.UpstreamLocal != local {
					t.Errorf("record's upstream connection %s, want the watched %s", r.UpstreamLocal, local)
				}
				if ended != 0 {
					t.Errorf("watch of the pooled connection %s ended %d times while it is open", local, ended)
				}
			}
			closeIdleUpstreams(p, "ns/rid:http")
			waitFor(t, "the closed connection's watch to end", func() bool {
				for _, n := range log.locals(b.addr) {
					return n == 1
				}
				return false
			})

			// Stopped: told to nobody again.
			stop()
			get(t, c, p.httpAddr, "dead.example", "/")
			<-records
			if n := len(log.locals(dead)); n != 1 {
				t.Errorf("%d refused connects watched after the watch stopped, want the 1 from before", n)
			}
		})
	}
}

// TestWatchPooledUpstream checks that a pooled HTTP/1.1 connection dialled
// before the watch began is watched from its next request on, once, and
// that its watch ends when it is closed.
func TestWatchPooledUpstream(t *testing.T) {
	b := requestIDBackend(t)
	p := startProxy(t, Options{}, Config{
		Routes:    []Route{{Host: "app.example", Path: "/", Upstream: "ns/rid:http", Ingress: "ns/ing"}},
		Upstreams: []Upstream{{Name: "ns/rid:http", Protocol: ProtocolHTTP, Endpoints: []Endpoint{{Addr: b.addr}}}},
	})
	records := make(chan RequestRecord, 16)
	t.Cleanup(p.TraceRequests(func(r *RequestRecord) { records <- *r }))
	c := httpClient()
	log := newWatchLog()
	var calls atomic.Int32
	watch := func(local, remote netip.AddrPort) func() {
		calls.Add(1)
		return log.watch(local, remote)
	}

	if code, _ := get(t, c, p.httpAddr, "app.example", "/"); code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	pooled := (<-records).UpstreamLocal
	if !pooled.IsValid() || calls.Load() != 0 {
		t.Fatalf("first request: upstream %s, %d watched before the watch began", pooled, calls.Load())
	}
	t.Cleanup(p.WatchUpstreams(watch))
	for i := range 3 {
		if code, _ := get(t, c, p.httpAddr, "app.example", "/"); code != http.StatusOK {
			t.Fatalf("status %d", code)
		}
		if r := <-records; r.UpstreamLocal != pooled {
			t.Fatalf("request %d went over %s, not the pooled %s", i, r.UpstreamLocal, pooled)
		}
	}
	if got := log.locals(b.addr); len(got) != 1 || got[pooled] != 0 || calls.Load() != 1 {
		t.Fatalf("watched %v in %d calls, want the pooled %s once and open", got, calls.Load(), pooled)
	}
	closeIdleUpstreams(p, "ns/rid:http")
	waitFor(t, "the pooled connection's watch to end", func() bool { return log.locals(b.addr)[pooled] == 1 })
}
