package loader

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestProgrammed(t *testing.T) {
	dp, f := newFakeDatapath()
	lb := Frontend{Addr: netip.MustParseAddr("198.51.100.5"), Port: 80, Restricted: true}
	np := Frontend{Addr: netip.MustParseAddr("192.0.2.10"), Port: 30080}
	active := Backend{Addr: netip.MustParseAddr("10.0.1.5"), Port: 8080, Local: true}
	draining := Backend{Addr: netip.MustParseAddr("10.0.2.5"), Port: 8080, Terminating: true}
	svc := Service{Name: "default/web:http/TCP", Proto: TCP, Frontends: []Frontend{np, lb}, Backends: []Backend{active, draining},
		SourceRanges: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}, AffinityTimeout: time.Minute, NoBackendDrop: true, DSR: true}
	if err := dp.Apply([]Service{svc}); err != nil {
		t.Fatal(err)
	}
	got, err := dp.Programmed()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("got %d services, want 1: %+v", len(got), got)
	}
	ps := got[0]
	if ps.Name != svc.Name || ps.Wanted == nil || len(ps.Wanted.Backends) != 2 || len(ps.Drift) != 0 {
		t.Errorf("service %+v", ps)
	}
	if len(ps.Frontends) != 2 {
		t.Fatalf("frontends %+v", ps.Frontends)
	}
	for _, fe := range ps.Frontends {
		want := fe.Addr == lb.Addr
		if fe.Restricted != want || fe.AffinityTimeout != time.Minute || !fe.NoBackendDrop || !fe.DSR || fe.Maglev || fe.BackendCount != 1 {
			t.Errorf("frontend %+v", fe)
		}
	}
	if len(ps.Active) != 1 || ps.Active[0].Backend != active {
		t.Errorf("active %+v, want only %s", ps.Active, active)
	}
	if !slices.Equal(ps.SourceRanges, svc.SourceRanges) {
		t.Errorf("source ranges %v", ps.SourceRanges)
	}

	// Another writer changes the maps behind the agent's back.
	for k, v := range f.frontends.m {
		if portFromBE(k.Port) == np.Port {
			v.BackendCount = 0
			f.frontends.m[k] = v
		}
	}
	for k := range f.ranges.m {
		delete(f.ranges.m, k)
	}
	stray := frontendKeyOf(Frontend{Addr: netip.MustParseAddr("192.0.2.10"), Port: 31000}, TCP)
	f.frontends.m[stray] = datapathFrontendValue{SvcId: 999}
	got, err = dp.Programmed()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("got %d services, want the agent's and the stray one: %+v", len(got), got)
	}
	drift := strings.Join(got[0].Drift, "\n")
	for _, want := range []string{"frontend 192.0.2.10:30080: map holds service", "source range 203.0.113.0/24 was programmed but is missing"} {
		if !strings.Contains(drift, want) {
			t.Errorf("drift %q lacks %q", drift, want)
		}
	}
	if s := got[1]; s.ID != 999 || s.Name != "" || s.Wanted != nil || len(s.Drift) != 1 || !strings.Contains(s.Drift[0], "programmed none there") {
		t.Errorf("stray service %+v", s)
	}
}

// TestProgrammedProxySocket reads proxy_sockets for an L7 service: missing
// while no proxy listener is registered (and a connection is refused),
// registered once one is (and a connection reaches it).
func TestProgrammedProxySocket(t *testing.T) {
	dp, _, ns := openServiceTestDatapath(t)
	var ln *net.TCPListener
	if err := ns.Do(func() (err error) {
		ln, err = ListenProxy(context.Background(), "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := dp.Apply([]Service{{Name: "l7/http", Proto: TCP, L7: true, ProxyListener: "http",
		Frontends: []Frontend{{Addr: netip.MustParseAddr("10.200.0.1"), Port: 80}}}}); err != nil {
		t.Fatal(err)
	}
	socketOf := func() string {
		t.Helper()
		got, err := dp.Programmed()
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].ProxyListener != "http" {
			t.Fatalf("programmed %+v, want the L7 service with its listener", got)
		}
		return got[0].ProxySocket
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if s := socketOf(); s != SocketMissing {
		t.Errorf("proxy socket %q before the listener is registered, want %q", s, SocketMissing)
	}
	if c, err := ns.DialContext(ctx, "tcp", "10.200.0.1:80"); err == nil {
		c.Close()
		t.Error("connection accepted without a proxy socket")
	}
	if err := dp.RegisterProxyListener("http", ln); err != nil {
		t.Fatal(err)
	}
	if s := socketOf(); s != SocketRegistered {
		t.Errorf("proxy socket %q after the listener is registered, want %q", s, SocketRegistered)
	}
	c, err := ns.DialContext(ctx, "tcp", "10.200.0.1:80")
	if err != nil {
		t.Fatalf("dial the L7 frontend with a proxy socket: %v", err)
	}
	c.Close()
}
