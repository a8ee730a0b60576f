package healthcheck

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// fakeProxy is a ProxyChecker the test sets.
type fakeProxy struct {
	mu      sync.Mutex
	healthy bool
}

func (f *fakeProxy) Healthy() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.healthy
}

func (f *fakeProxy) set(h bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.healthy = h
}

// loopbackPorts makes a ServiceServer open each healthCheckNodePort on a
// free loopback port instead, and remembers where, so tests use real
// sockets without needing the ports themselves.
type loopbackPorts struct {
	mu   sync.Mutex
	addr map[string]string // asked "host:port" -> opened "127.0.0.1:port"
}

func (l *loopbackPorts) listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.addr[addr] = ln.Addr().String()
	return ln, nil
}

func (l *loopbackPorts) of(port uint16) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.addr[net.JoinHostPort("", strconv.Itoa(int(port)))]
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// probe is one answer of a health check port.
type probe struct {
	code   int
	body   string
	header http.Header
	err    error
}

func probeAddr(addr string) probe {
	cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := cl.Get("http://" + addr + "/")
	if err != nil {
		return probe{err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return probe{code: resp.StatusCode, body: string(body), header: resp.Header, err: err}
}

func nsn(ns, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: ns, Name: name}
}

// TestServiceServer drives a ServiceServer through SyncServices and
// SyncEndpoints calls and probes every port after each step: status,
// headers and body byte for byte as kube-proxy answers.
func TestServiceServer(t *testing.T) {
	a, b := nsn("app", "web"), nsn("shop", "cart")
	type want struct {
		port      uint16
		code      int
		endpoints int
		healthy   bool
	}
	steps := []struct {
		name      string
		services  map[types.NamespacedName]uint16 // nil: no SyncServices
		endpoints map[types.NamespacedName]int    // nil: no SyncEndpoints
		healthy   bool
		want      map[types.NamespacedName]want
		closed    []uint16 // ports that must not answer
	}{
		{
			name:     "a new port has no endpoints",
			services: map[types.NamespacedName]uint16{a: 30001},
			healthy:  true,
			want:     map[types.NamespacedName]want{a: {30001, http.StatusServiceUnavailable, 0, true}},
		},
		{
			name:      "local endpoints make it 200; counts of unknown services are dropped",
			endpoints: map[types.NamespacedName]int{a: 2, b: 7},
			healthy:   true,
			want:      map[types.NamespacedName]want{a: {30001, http.StatusOK, 2, true}},
		},
		{
			name:     "an unhealthy proxy makes it 503 whatever the endpoints",
			healthy:  false,
			want:     map[types.NamespacedName]want{a: {30001, http.StatusServiceUnavailable, 2, false}},
			services: map[types.NamespacedName]uint16{a: 30001},
		},
		{
			name:     "a second service; the first keeps its count",
			services: map[types.NamespacedName]uint16{a: 30001, b: 30002},
			healthy:  true,
			want: map[types.NamespacedName]want{
				a: {30001, http.StatusOK, 2, true},
				b: {30002, http.StatusServiceUnavailable, 0, true},
			},
		},
		{
			name:      "a service missing from the counts has none",
			endpoints: map[types.NamespacedName]int{b: 1},
			healthy:   true,
			want: map[types.NamespacedName]want{
				a: {30001, http.StatusServiceUnavailable, 0, true},
				b: {30002, http.StatusOK, 1, true},
			},
		},
		{
			name:     "a port that moves starts over with no endpoints",
			services: map[types.NamespacedName]uint16{a: 30001, b: 30003},
			healthy:  true,
			want: map[types.NamespacedName]want{
				a: {30001, http.StatusServiceUnavailable, 0, true},
				b: {30003, http.StatusServiceUnavailable, 0, true},
			},
			closed: []uint16{30002},
		},
		{
			name:     "a service gone closes its port",
			services: map[types.NamespacedName]uint16{b: 30003},
			healthy:  true,
			want:     map[types.NamespacedName]want{b: {30003, http.StatusServiceUnavailable, 0, true}},
			closed:   []uint16{30001},
		},
	}
	proxy := &fakeProxy{}
	ports := &loopbackPorts{addr: map[string]string{}}
	s := NewServiceServer(proxy, ServiceConfig{Logger: quietLogger()})
	s.listen = ports.listen
	t.Cleanup(s.Close)
	closedAddrs := map[uint16]string{}
	for _, st := range steps {
		proxy.set(st.healthy)
		if st.services != nil {
			for _, p := range st.closed {
				closedAddrs[p] = ports.of(p)
			}
			if err := s.SyncServices(st.services); err != nil {
				t.Fatalf("%s: SyncServices: %v", st.name, err)
			}
		}
		if st.endpoints != nil {
			if err := s.SyncEndpoints(st.endpoints); err != nil {
				t.Fatalf("%s: SyncEndpoints: %v", st.name, err)
			}
		}
		for name, w := range st.want {
			addr := ports.of(w.port)
			if addr == "" {
				t.Fatalf("%s: %s: port %d never opened", st.name, name, w.port)
			}
			got := probeAddr(addr)
			if got.err != nil {
				t.Fatalf("%s: %s: %v", st.name, name, got.err)
			}
			if got.code != w.code {
				t.Errorf("%s: %s: code %d, want %d", st.name, name, got.code, w.code)
			}
			if body := serviceBody(name, w.endpoints, w.healthy); got.body != body {
				t.Errorf("%s: %s: body\n%s\nwant\n%s", st.name, name, got.body, body)
			}
			for k, v := range map[string]string{
				"Content-Type":                     "application/json",
				"X-Content-Type-Options":           "nosniff",
				"X-Load-Balancing-Endpoint-Weight": strconv.Itoa(w.endpoints),
			} {
				if h := got.header.Values(k); len(h) != 1 || h[0] != v {
					t.Errorf("%s: %s: %s %q, want %q", st.name, name, k, h, v)
				}
			}
		}
		for _, p := range st.closed {
			if got := probeAddr(closedAddrs[p]); got.err == nil {
				t.Errorf("%s: port %d still answers: %d", st.name, p, got.code)
			}
		}
	}
}

// TestServiceBody pins the body to kube-proxy's indented format.
func TestServiceBody(t *testing.T) {
	want := `{
	"service": {
		"namespace": "app",
		"name": "web"
	},
	"localEndpoints": 3,
	"serviceProxyHealthy": true
}`
	if got := serviceBody(nsn("app", "web"), 3, true); got != want {
		t.Errorf("body\n%s\nwant\n%s", got, want)
	}
}

// freePort returns a loopback port nothing listens on (a moment ago).
func freePort(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// TestServicePortConflict opens real loopback ports: a port something
// else holds is an error naming the service, the server keeps going, and
// the next SyncServices opens it once it is free.
func TestServicePortConflict(t *testing.T) {
	a, b := nsn("app", "web"), nsn("app", "api")
	s := NewServiceServer(&fakeProxy{healthy: true}, ServiceConfig{Host: "127.0.0.1", Logger: quietLogger()})
	t.Cleanup(s.Close)

	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	takenPort := uint16(taken.Addr().(*net.TCPAddr).Port)
	freeB := freePort(t)
	want := map[types.NamespacedName]uint16{a: takenPort, b: freeB}
	for range 2 { // the failure is returned at every sync, not only the first
		err = s.SyncServices(want)
		var le *ListenError
		if !errors.As(err, &le) || le.Service != a || le.Port != takenPort || !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("SyncServices with port %d taken: %v, want a ListenError for %s", takenPort, err, a)
		}
	}
	// The other service is served all the same.
	if got := probeAddr(net.JoinHostPort("127.0.0.1", strconv.Itoa(int(freeB)))); got.err != nil || got.code != http.StatusServiceUnavailable {
		t.Fatalf("service %s: %d %v", b, got.code, got.err)
	}

	taken.Close()
	if err := s.SyncServices(want); err != nil {
		t.Fatalf("SyncServices once the port is free: %v", err)
	}
	if err := s.SyncEndpoints(map[types.NamespacedName]int{a: 1}); err != nil {
		t.Fatal(err)
	}
	got := probeAddr(net.JoinHostPort("127.0.0.1", strconv.Itoa(int(takenPort))))
	if got.err != nil || got.code != http.StatusOK || got.body != serviceBody(a, 1, true) {
		t.Fatalf("service %s after the retry: %d %q %v", a, got.code, got.body, got.err)
	}
}

// TestServicePortHandover checks that a port one Service gives up can be
// opened by another in the same sync: the old one is closed first.
func TestServicePortHandover(t *testing.T) {
	a, b := nsn("app", "old"), nsn("app", "new")
	s := NewServiceServer(&fakeProxy{healthy: true}, ServiceConfig{Host: "127.0.0.1", Logger: quietLogger()})
	t.Cleanup(s.Close)
	port := freePort(t)
	if err := s.SyncServices(map[types.NamespacedName]uint16{a: port}); err != nil {
		t.Fatal(err)
	}
	if err := s.SyncServices(map[types.NamespacedName]uint16{b: port}); err != nil {
		t.Fatalf("port %d handed from %s to %s: %v", port, a, b, err)
	}
	got := probeAddr(net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
	if got.err != nil || got.body != serviceBody(b, 0, true) {
		t.Fatalf("port %d: %q %v, want %s's answer", port, got.body, got.err, b)
	}
}

// TestServiceServerClose checks that Close closes every port and that
// the server refuses to open more.
func TestServiceServerClose(t *testing.T) {
	a := nsn("app", "web")
	s := NewServiceServer(&fakeProxy{healthy: true}, ServiceConfig{Host: "127.0.0.1", Logger: quietLogger()})
	port := freePort(t)
	if err := s.SyncServices(map[types.NamespacedName]uint16{a: port}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if got := probeAddr(net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))); got.err == nil {
		t.Fatalf("port %d answers after Close: %d", port, got.code)
	}
	if err := s.SyncServices(map[types.NamespacedName]uint16{a: port}); err == nil {
		t.Fatal("SyncServices after Close succeeded")
	}
}
