package l7proxy

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// watchLog records the upstream connections a watch was told of, how
// many times, and how many times it was told to forget each.
type watchLog struct {
	mu      sync.Mutex
	watched map[netip.AddrPort]netip.AddrPort // local -> remote
	calls   map[netip.AddrPort]int
	ended   map[netip.AddrPort]int
}

func newWatchLog() *watchLog {
	return &watchLog{watched: map[netip.AddrPort]netip.AddrPort{}, calls: map[netip.AddrPort]int{},
		ended: map[netip.AddrPort]int{}}
}

func (l *watchLog) watch(local, remote netip.AddrPort) func() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.watched[local] = remote
	l.calls[local]++
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.ended[local]++
	}
}

// state is, per watched local address, "remote watched N ended M".
func (l *watchLog) state() map[netip.AddrPort]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[netip.AddrPort]string{}
	for local, remote := range l.watched {
		out[local] = fmt.Sprintf("%s watched %d ended %d", remote, l.calls[local], l.ended[local])
	}
	return out
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
			// Refused connects and closed connections leave the registry.
			waitFor(t, "no upstream connection registered", func() bool { return liveUpstreams(p) == 0 })

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

// watchTarget is a proxy with one upstream connection to a backend,
// dialled by the first exchange and kept open between exchanges.
type watchTarget struct {
	p *testProxy
	// exchange carries one request (or, on a stream, one line) over the
	// proxy's upstream connection and returns that connection's tuple.
	exchange func() (local, remote netip.AddrPort)
	// closeConn closes the upstream connection and waits until the
	// proxy has let go of it.
	closeConn func()
}

// requestTarget is a proxy in front of a backend speaking proto, the
// tuple of its upstream connection taken from the request records.
func requestTarget(t *testing.T, proto UpstreamProtocol, backend netip.AddrPort) *watchTarget {
	p := startProxy(t, Options{}, Config{
		Routes:    []Route{{Host: "app.example", Path: "/", Upstream: "ns/app:http", Ingress: "ns/ing"}},
		Upstreams: []Upstream{{Name: "ns/app:http", Protocol: proto, Endpoints: []Endpoint{{Addr: backend}}}},
	})
	records := make(chan RequestRecord, 16)
	t.Cleanup(p.TraceRequests(func(r *RequestRecord) { records <- *r }))
	c := httpClient()
	return &watchTarget{
		p: p,
		exchange: func() (netip.AddrPort, netip.AddrPort) {
			if code, body := get(t, c, p.httpAddr, "app.example", "/"); code != http.StatusOK {
				t.Fatalf("status %d %q", code, body)
			}
			r := <-records
			return r.UpstreamLocal, r.UpstreamRemote
		},
		closeConn: func() {
			closeIdleUpstreams(p, "ns/app:http")
			waitFor(t, "the upstream connection to be unregistered", func() bool { return liveUpstreams(p) == 0 })
		},
	}
}

// passthroughTarget is a proxy passing TLS for echo.example through to
// backend, an echoPeerBackend, over one client connection kept open.
func passthroughTarget(t *testing.T, backend netip.AddrPort) *watchTarget {
	up := Upstream{Name: "ns/echo:tls", Endpoints: []Endpoint{{Addr: backend}}}
	p := startProxy(t, Options{}, Config{Upstreams: []Upstream{up}})
	front := serveExtraHTTPS(t, p)
	listener := Listener{Name: "ns/gw/tls", Kind: ListenerTLSPassthrough, Frontends: []netip.AddrPort{front},
		TLSRoutes: []TLSRoute{{Source: "ns/echo", Hostnames: []string{"echo.example"},
			Backends: []WeightedBackend{{Upstream: up.Name, Weight: 1}}}}}
	if errs := p.Update(Config{Upstreams: []Upstream{up}, Listeners: []Listener{listener}}); len(errs) > 0 {
		t.Fatal(errs)
	}
	var c *tls.Conn
	var r *bufio.Reader
	t.Cleanup(func() {
		if c != nil {
			_ = c.Close()
		}
	})
	tg := &watchTarget{p: p}
	tg.exchange = func() (netip.AddrPort, netip.AddrPort) {
		if c == nil {
			var err error
			d := &net.Dialer{Timeout: 2 * time.Second}
			if c, err = tls.DialWithDialer(d, "tcp", front.String(), &tls.Config{ServerName: "echo.example",
				InsecureSkipVerify: true}); err != nil { //nolint:gosec // a test backend's certificate
				t.Fatal(err)
			}
			r = bufio.NewReader(c)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "peer?\n"); err != nil {
			t.Fatal(err)
		}
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		return netip.MustParseAddrPort(strings.TrimSpace(line)), backend
	}
	tg.closeConn = func() {
		forwarded := p.metrics.streams.WithLabelValues("ns/echo", streamForwarded)
		before := testutil.ToFloat64(forwarded)
		_ = c.Close()
		c = nil
		// The stream is counted once its upstream connection is closed
		// and unregistered.
		waitFor(t, "the stream to end", func() bool { return testutil.ToFloat64(forwarded) == before+1 })
	}
	return tg
}

// echoPeerBackend serves TLS and answers every line with the address the
// connection came from.
func echoPeerBackend(t *testing.T) netip.AddrPort {
	t.Helper()
	conf := &tls.Config{Certificates: []tls.Certificate{*makeCert(t, "echo", "echo.example")}}
	return rawTLSBackend(t, conf, func(c net.Conn, r *bufio.Reader) {
		for {
			if _, err := r.ReadString('\n'); err != nil {
				return
			}
			if _, err := io.WriteString(c, c.RemoteAddr().String()+"\n"); err != nil {
				return
			}
		}
	})
}

// liveUpstreams counts the proxy's registered upstream connections.
func liveUpstreams(p *testProxy) int { return p.upstreamWatch.liveCount() }

// TestWatchUpstreamsDialledBefore checks that an upstream connection of
// every kind dialled before a watch began is told to the watch as soon as
// it begins, with the tuple it carries requests over, once, and that its
// watch ends once: when the watch is replaced or stops, or when the
// connection closes. A connection closed before the watch began and one
// of another proxy are not told; one dialled while watched is.
func TestWatchUpstreamsDialledBefore(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start func(t *testing.T) func() *watchTarget
	}{
		{"HTTP/1.1 upstream", func(t *testing.T) func() *watchTarget {
			b := requestIDBackend(t)
			return func() *watchTarget { return requestTarget(t, ProtocolHTTP, b.addr) }
		}},
		{"h2c upstream", func(t *testing.T) func() *watchTarget {
			b := requestIDBackend(t)
			return func() *watchTarget { return requestTarget(t, ProtocolH2C, b.addr) }
		}},
		{"HTTPS upstream", func(t *testing.T) func() *watchTarget {
			b := startTLSBackend(t, "tls", "app.example")
			return func() *watchTarget { return requestTarget(t, ProtocolHTTPS, b.addr) }
		}},
		{"TLS passthrough stream", func(t *testing.T) func() *watchTarget {
			b := echoPeerBackend(t)
			return func() *watchTarget { return passthroughTarget(t, b) }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			newTarget := tc.start(t)
			tg, other := newTarget(), newTarget()
			gone, _ := tg.exchange()
			tg.closeConn()
			local, remote := tg.exchange()
			otherLocal, _ := other.exchange()
			if !local.IsValid() || local == gone || local == otherLocal {
				t.Fatalf("upstream connections %s, closed %s, other proxy's %s: want three", local, gone, otherLocal)
			}
			// want is the state of a watch told once of each connection,
			// whose watch ended as many times as given.
			want := func(ended map[netip.AddrPort]int) map[netip.AddrPort]string {
				out := map[netip.AddrPort]string{}
				for l, n := range ended {
					out[l] = fmt.Sprintf("%s watched 1 ended %d", remote, n)
				}
				return out
			}
			check := func(what string, l *watchLog, w map[netip.AddrPort]string) {
				t.Helper()
				if got := l.state(); !maps.Equal(got, w) {
					t.Fatalf("%s: watch told of %v, want %v", what, got, w)
				}
			}

			// Told at once of the open connection only, which the next
			// exchange goes over without another call.
			first := newWatchLog()
			stopFirst := tg.p.WatchUpstreams(first.watch)
			check("watch begun", first, want(map[netip.AddrPort]int{local: 0}))
			if l, r := tg.exchange(); l != local || r != remote {
				t.Fatalf("exchange over %s > %s, want the watched %s > %s", l, r, local, remote)
			}
			check("after an exchange", first, want(map[netip.AddrPort]int{local: 0}))

			// Replaced: the first watch's ends, the second's begins; the
			// first's stop changes nothing any more.
			second := newWatchLog()
			stopSecond := tg.p.WatchUpstreams(second.watch)
			check("first watch replaced", first, want(map[netip.AddrPort]int{local: 1}))
			stopFirst()
			check("second watch after the first's stop", second, want(map[netip.AddrPort]int{local: 0}))
			stopSecond()
			check("second watch stopped", second, want(map[netip.AddrPort]int{local: 1}))

			// Closed while watched: ended once, not again at stop; a
			// connection dialled meanwhile is told too.
			third := newWatchLog()
			stopThird := tg.p.WatchUpstreams(third.watch)
			check("third watch begun", third, want(map[netip.AddrPort]int{local: 0}))
			tg.closeConn()
			check("connection closed", third, want(map[netip.AddrPort]int{local: 1}))
			dialled, _ := tg.exchange()
			check("connection dialled while watched", third, want(map[netip.AddrPort]int{local: 1, dialled: 0}))
			stopThird()
			check("third watch stopped", third, want(map[netip.AddrPort]int{local: 1, dialled: 1}))
			tg.closeConn()
			check("after the last close", third, want(map[netip.AddrPort]int{local: 1, dialled: 1}))
			check("first watch at the end", first, want(map[netip.AddrPort]int{local: 1}))
			check("second watch at the end", second, want(map[netip.AddrPort]int{local: 1}))
			if n := liveUpstreams(tg.p); n != 0 {
				t.Errorf("%d upstream connections registered after all closed", n)
			}
		})
	}
}
