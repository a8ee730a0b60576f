package loader

import (
	"context"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// skLookupCtx is struct bpf_sk_lookup of the kernel's UAPI: the context
// BPF_PROG_TEST_RUN runs an sk_lookup program on. Addresses and the
// remote port are in network byte order, the local port in host order.
type skLookupCtx struct {
	Cookie         uint64 // out: the selected socket's cookie, 0 for none
	Family         uint32
	Protocol       uint32
	RemoteIP4      [4]byte
	RemoteIP6      [16]byte
	RemotePort     [2]byte
	_              uint16
	LocalIP4       [4]byte
	LocalIP6       [16]byte
	LocalPort      uint32
	IngressIfindex uint32
	_              uint32
}

// newSkLookupCtx is the context of a lookup for a connection remote ->
// local. Its ingress_ifindex stays 0: BPF_PROG_TEST_RUN refuses others.
func newSkLookupCtx(proto Proto, remote, local netip.AddrPort) skLookupCtx {
	c := skLookupCtx{Family: unix.AF_INET, Protocol: uint32(proto), RemoteIP4: remote.Addr().As4(),
		LocalIP4: local.Addr().As4(), LocalPort: uint32(local.Port())}
	c.RemotePort = [2]byte{byte(remote.Port() >> 8), byte(remote.Port())}
	return c
}

// runSkSteer runs sk_steer on one lookup and returns its return code and
// the cookie of the socket it selected (0: none).
func (h *harness) runSkSteer(in skLookupCtx) (uint32, uint64) {
	h.t.Helper()
	var out skLookupCtx
	ret, err := h.objs.SkSteer.Run(&ebpf.RunOptions{Context: in, ContextOut: &out})
	if err != nil {
		h.t.Fatalf("run sk_steer: %v", err)
	}
	return ret, out.Cookie
}

// proxyListener is a loopback listener for a proxy socket, closed when
// the test ends.
func (h *harness) proxyListener() *net.TCPListener {
	h.t.Helper()
	ln, err := ListenProxy(context.Background(), "127.0.0.1:0")
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { ln.Close() })
	return ln
}

// putProxySocket registers a listener's socket as service svcID's proxy
// socket, as RegisterProxyListener does.
func (h *harness) putProxySocket(svcID uint32, c syscall.Conn) {
	h.t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		h.t.Fatal(err)
	}
	var uerr error
	if err := rc.Control(func(fd uintptr) { uerr = h.objs.ProxySockets.Update(svcID, uint64(fd), ebpf.UpdateAny) }); err != nil {
		h.t.Fatal(err)
	}
	if uerr != nil {
		h.t.Fatalf("put proxy socket: %v", uerr)
	}
}

// TestSkSteerAccounting checks that sk_steer counts and traces the socket
// lookups of L7 frontends (steered to the proxy socket, or left to the
// kernel because there is none or it refused), with the client's tuple
// and no packet, and leaves every other lookup uncounted.
func TestSkSteerAccounting(t *testing.T) {
	h := newHarness(t)
	ln := h.proxyListener()
	const steered, noSocket, refused = 11, 12, 13
	h.service(steered, "10.0.0.1:80", TCP, true)
	h.service(noSocket, "10.0.0.2:80", TCP, true)
	// A TCP listener for a UDP frontend: bpf_sk_assign refuses it.
	h.service(refused, "10.0.0.3:80", UDP, true)
	h.service(14, "10.0.0.4:80", TCP, false) // L4 only: not the proxy's
	h.putProxySocket(steered, ln)
	h.putProxySocket(refused, ln)
	rd := h.events()

	client := netip.MustParseAddrPort("192.0.2.7:40000")
	ap := netip.MustParseAddrPort
	for _, tc := range []struct {
		name    string
		proto   Proto
		local   string
		tracing bool
		// reason 0: not counted, no event
		reason  Reason
		svc     uint32
		wantSel bool
	}{
		{"steered", TCP, "10.0.0.1:80", true, ReasonSkSteer, steered, true},
		{"steered, tracing off", TCP, "10.0.0.1:80", false, ReasonSkSteer, steered, true},
		{"no proxy socket", TCP, "10.0.0.2:80", true, ReasonPassNoProxySocket, noSocket, false},
		{"socket refused", UDP, "10.0.0.3:80", true, ReasonPassSkAssignFailed, refused, false},
		{"L4 frontend", TCP, "10.0.0.4:80", true, 0, 0, false},
		{"no frontend", TCP, "10.0.0.9:80", true, 0, 0, false},
		{"other port", TCP, "10.0.0.1:81", true, 0, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.t = t
			h.setTracing(tc.tracing)
			before := h.stats()
			ret, cookie := h.runSkSteer(newSkLookupCtx(tc.proto, client, ap(tc.local)))
			if ret != 1 {
				t.Errorf("returned %d, want SK_PASS", ret)
			}
			if (cookie != 0) != tc.wantSel {
				t.Errorf("selected socket cookie %d, want a socket selected: %v", cookie, tc.wantSel)
			}
			n := 1
			if tc.reason == 0 {
				n = 0
			}
			h.expectCounted(before, tc.reason, n, 0)
			ev, ok := nextEvent(t, rd, 100*time.Millisecond)
			if !tc.tracing || tc.reason == 0 {
				if ok {
					t.Errorf("unexpected event %+v", ev)
				}
				return
			}
			if !ok {
				t.Fatal("no trace event")
			}
			want := Tuple{Src: client, Dst: ap(tc.local), Proto: tc.proto}
			if ev.Stage != StageSkLookup || ev.Reason != tc.reason || ev.ServiceID != tc.svc || ev.Orig != want ||
				ev.Xlated != want || ev.Packet != nil {
				t.Errorf("event %+v: want stage sk-lookup, %s, svc %d, %s, no packet", ev, tc.reason, tc.svc, want)
			}
		})
	}
}

// BenchmarkSkSteer measures sk_steer's run time per socket lookup with
// BPF_PROG_TEST_RUN (repeated in the kernel; ns/lookup is the syscall's
// time over the repeats): a lookup for no frontend (every other new
// connection on the node) and a steered one, untraced and traced (an
// event on the ring buffer, drained by a reader).
func BenchmarkSkSteer(b *testing.B) {
	h := newHarness(b)
	ln := h.proxyListener()
	h.service(1, "10.0.0.1:80", TCP, true)
	h.putProxySocket(1, ln)
	rd := h.events()
	go func() {
		for {
			if _, err := rd.Read(); err != nil {
				return
			}
		}
	}()
	client := netip.MustParseAddrPort("192.0.2.7:40000")
	const repeat = 100000
	for _, bc := range []struct {
		name    string
		local   string
		tracing bool
	}{
		{"no-frontend", "10.0.0.9:80", false},
		{"steered", "10.0.0.1:80", false},
		{"steered-traced", "10.0.0.1:80", true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h.setTracing(bc.tracing)
			in := newSkLookupCtx(TCP, client, netip.MustParseAddrPort(bc.local))
			var total time.Duration
			for b.Loop() {
				start := time.Now()
				if _, err := h.objs.SkSteer.Run(&ebpf.RunOptions{Context: in, Repeat: repeat}); err != nil {
					b.Fatal(err)
				}
				total += time.Since(start)
			}
			b.ReportMetric(float64(total.Nanoseconds())/float64(b.N*repeat), "ns/lookup")
		})
	}
}
