package loader

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Ownership of SNAT ports beyond allocation: who may keep or take a port
// once flows close or go idle. All cases use a range of one port, so that
// every flow competes for it.

// idleFor returns the last_seen_ns of an entry last used d ago, on the
// datapath's clock (bpf_ktime_get_ns, CLOCK_MONOTONIC). On a host up for
// less than d the value wraps below zero; the datapath measures idle time
// as now - last_seen in unsigned 64-bit arithmetic, which wraps back to d,
// so the entry is exactly as idle on a fresh host as on an old one.
func idleFor(t *testing.T, d time.Duration) uint64 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return uint64(ts.Nano()) - uint64(d)
}

func onePortHarness(t *testing.T, env *fibEnv) *harness {
	return snatRangeHarness(t, env, 61000, 61000)
}

// snatRangeHarness is remoteHarness with the SNAT ports min to max.
func snatRangeHarness(t *testing.T, env *fibEnv, min, max uint16) *harness {
	h := remoteHarness(t, env)
	cfg := h.config()
	cfg.SnatPortMin, cfg.SnatPortMax = min, max
	h.setConfig(cfg)
	return h
}

// forwardedPort runs f, which must be forwarded to the remote backend, and
// returns the SNAT port it left with.
func (h *harness) forwardedPort(k hook, f frame) uint16 {
	h.t.Helper()
	res := h.expect(k, f.bytes(h.t), forwardVerdict(k, true), ReasonFwdRemote)
	return decode(h.t, res.pkt).src().Port()
}

// connectAndClose runs the client SYN a, the backend's answer and a FIN
// each way through the datapath, and returns a's SNAT port.
func (h *harness) connectAndClose(k hook, a frame) uint16 {
	h.t.Helper()
	port := h.forwardedPort(k, a)
	h.expect(k, remoteReply(a, beRemote, nodeIP, port, tcpSYN|tcpACK).bytes(h.t), forwardVerdict(k, true), ReasonReplyRemote)
	h.forwardedPort(k, tcpFrame(a.src.String(), a.dst.String(), tcpFIN|tcpACK))
	h.expect(k, remoteReply(a, beRemote, nodeIP, port, tcpFIN|tcpACK).bytes(h.t), forwardVerdict(k, true), ReasonReplyRemote)
	return port
}

// lastSeen sets when the SNAT port's reverse NAT entry was last used
// (monotonic nanoseconds, see idleFor).
func (h *harness) lastSeen(key datapathFlowTuple, ns uint64) datapathRevNatEntry {
	h.t.Helper()
	rn, ok := h.revNAT(key)
	if !ok {
		h.t.Fatal("no reverse NAT entry for the SNAT port")
	}
	rn.LastSeenNs = ns
	if err := h.objs.ReverseNat.Update(key, rn, ebpf.UpdateExist); err != nil {
		h.t.Fatal(err)
	}
	return rn
}

// TestSNATPortNotShared: once a stale flow's port was taken over by
// another client, the stale flow coming back must not be sent from that
// port too. Both flows would then be the same 5-tuple to the backend, and
// the backend's replies would all go to the new owner.
func TestSNATPortNotShared(t *testing.T) {
	env := newFibEnv(t)
	for _, k := range []hook{hookXDP, hookTCIngress} {
		t.Run(k.String(), func(t *testing.T) {
			h := onePortHarness(t, env)
			via := hop{smac: env.mac0, dmac: node2MAC}
			a := udpFrame("192.0.2.10:40000", feRemoteUDP)
			b := udpFrame("192.0.2.11:40000", feRemoteUDP)
			key := tupleToBPF(Tuple{Src: beRemoteUDP.addrPort(), Dst: netip.MustParseAddrPort(nodeIP + ":61000"), Proto: UDP})

			in := a.bytes(t)
			res := h.expect(k, in, forwardVerdict(k, true), ReasonFwdRemote)
			checkRemoteForward(t, h, a, in, res.pkt, svcRemoteUDP, beRemoteUDP, nodeIP, via)

			// a goes quiet for longer than UDP's idle timeout (60s); b
			// takes the port.
			quiet := idleFor(t, 61*time.Second)
			h.lastSeen(key, quiet)
			ct, _ := h.ct(a)
			ct.LastSeenNs = quiet
			if err := h.objs.Conntrack.Update(a.tuple(), ct, ebpf.UpdateExist); err != nil {
				t.Fatal(err)
			}
			in = b.bytes(t)
			res = h.expect(k, in, forwardVerdict(k, true), ReasonFwdRemote)
			checkRemoteForward(t, h, b, in, res.pkt, svcRemoteUDP, beRemoteUDP, nodeIP, via)

			// a comes back. The only port is b's: a has to be dropped
			// (or, with a larger range, get another port).
			in = a.bytes(t)
			res, err := h.run(k, in)
			if err != nil {
				t.Fatal(err)
			}
			if res.ret == k.ret(forwardVerdict(k, true)) {
				d := decode(t, res.pkt)
				if rn, ok := h.revNAT(tupleToBPF(Tuple{Src: d.dst(), Dst: d.src(), Proto: UDP})); !ok ||
					addrFromBE(rn.ClientAddr) != a.src.Addr() || portFromBE(rn.ClientPort) != a.src.Port() {
					t.Errorf("returning flow %v sent from %v, whose replies go to %v:%d",
						a.src, d.src(), addrFromBE(rn.ClientAddr), portFromBE(rn.ClientPort))
				}
			}
			if rn, _ := h.revNAT(key); addrFromBE(rn.ClientAddr) != b.src.Addr() {
				t.Errorf("port taken from its live owner %v by %v", b.src, addrFromBE(rn.ClientAddr))
			}
		})
	}
}

// TestSNATPortFreedByBackendReset: a connection the backend resets is
// closed, and closed TCP flows give their port up after CT_TCP_CLOSED_NS
// (10s), as those the client resets or finishes do.
func TestSNATPortFreedByBackendReset(t *testing.T) {
	env := newFibEnv(t)
	for _, k := range []hook{hookXDP, hookTCIngress} {
		for _, c := range []struct {
			name string
			// rst is sent after the SYN and its reply, by the client or
			// by the backend.
			rst func(a frame) frame
		}{
			{"client resets", func(a frame) frame { return tcpFrame(a.src.String(), a.dst.String(), tcpRST|tcpACK) }},
			{"backend resets", func(a frame) frame {
				return remoteReply(a, beRemote, nodeIP, 61000, tcpRST|tcpACK)
			}},
		} {
			t.Run(k.String()+"/"+c.name, func(t *testing.T) {
				h := onePortHarness(t, env)
				a := tcpFrame("192.0.2.10:40000", feRemote, tcpSYN)
				b := tcpFrame("192.0.2.11:40000", feRemote, tcpSYN)
				key := tupleToBPF(Tuple{Src: beRemote.addrPort(), Dst: netip.MustParseAddrPort(nodeIP + ":61000"), Proto: TCP})

				h.expect(k, a.bytes(t), forwardVerdict(k, true), ReasonFwdRemote)
				h.expect(k, remoteReply(a, beRemote, nodeIP, 61000, tcpSYN|tcpACK).bytes(t), forwardVerdict(k, true), ReasonReplyRemote)
				rst := c.rst(a)
				reason := ReasonFwdRemote
				if rst.src == beRemote.addrPort() {
					reason = ReasonReplyRemote
				}
				h.expect(k, rst.bytes(t), forwardVerdict(k, true), reason)

				// After CT_TCP_CLOSED_NS, another client wants the port.
				h.lastSeen(key, idleFor(t, 11*time.Second))
				h.expect(k, b.bytes(t), forwardVerdict(k, true), ReasonFwdRemote)
			})
		}
	}
}

// TestSNATPortUnrepliedReleased: a SYN the backend never answers holds its
// port for CT_UNREPLIED_NS (60s) only, so spoofed SYNs cannot pin the SNAT
// range for the 6h an established connection may idle; an answered
// connection idle just as long keeps its port.
func TestSNATPortUnrepliedReleased(t *testing.T) {
	env := newFibEnv(t)
	for _, k := range []hook{hookXDP, hookTCIngress} {
		for _, c := range []struct {
			name     string
			replied  bool
			takeOver bool
		}{
			{"unanswered SYN gives the port up", false, true},
			{"answered connection keeps it", true, false},
		} {
			t.Run(k.String()+"/"+c.name, func(t *testing.T) {
				h := onePortHarness(t, env)
				a := tcpFrame("192.0.2.10:40000", feRemote, tcpSYN)
				b := tcpFrame("192.0.2.11:40000", feRemote, tcpSYN)
				key := tupleToBPF(Tuple{Src: beRemote.addrPort(), Dst: netip.MustParseAddrPort(nodeIP + ":61000"), Proto: TCP})

				h.expect(k, a.bytes(t), forwardVerdict(k, true), ReasonFwdRemote)
				if c.replied {
					h.expect(k, remoteReply(a, beRemote, nodeIP, 61000, tcpSYN|tcpACK).bytes(t), forwardVerdict(k, true), ReasonReplyRemote)
				}
				h.lastSeen(key, idleFor(t, 61*time.Second))
				if c.takeOver {
					h.expect(k, b.bytes(t), forwardVerdict(k, true), ReasonFwdRemote)
				} else {
					h.expect(k, b.bytes(t), VerdictDrop, ReasonDropSNATExhausted)
				}
			})
		}
	}
}

// TestSNATPortSkipsFrontends: a port the node serves a frontend on is
// never handed out as a SNAT port, or the backend's replies to it would be
// taken for new connections to that frontend.
func TestSNATPortSkipsFrontends(t *testing.T) {
	env := newFibEnv(t)
	for _, k := range []hook{hookXDP, hookTCIngress} {
		t.Run(k.String(), func(t *testing.T) {
			h := onePortHarness(t, env)
			// The one SNAT port is also a NodePort of another service.
			h.service(99, nodeIP+":61000", TCP, false, beA)
			a := tcpFrame("192.0.2.10:40000", feRemote, tcpSYN)
			h.expect(k, a.bytes(t), VerdictDrop, ReasonDropSNATExhausted)

			// For UDP the same port is free.
			u := udpFrame("192.0.2.10:40000", feRemoteUDP)
			in := u.bytes(t)
			res := h.expect(k, in, forwardVerdict(k, true), ReasonFwdRemote)
			checkRemoteForward(t, h, u, in, res.pkt, svcRemoteUDP, beRemoteUDP, nodeIP, hop{smac: env.mac0, dmac: node2MAC})
		})
	}
}

// TestSNATPortProbesJumpFrontendBlocks: when a block of NodePorts lies
// inside the SNAT range (a cluster's node port range may overlap it), a
// flow whose hashed start falls in the block still finds a port: probes
// stride across the range instead of walking into the block.
func TestSNATPortProbesJumpFrontendBlocks(t *testing.T) {
	env := newFibEnv(t)
	for _, k := range []hook{hookXDP, hookTCIngress} {
		t.Run(k.String(), func(t *testing.T) {
			h := remoteHarness(t, env)
			cfg := h.config()
			cfg.SnatPortMin, cfg.SnatPortMax = 20000, 29999
			h.setConfig(cfg)
			syn := tcpFrame("192.0.2.10:40000", feRemote, tcpSYN)
			start := 20000 + flowHash(syn.tuple(), testHashSeed)%10000
			block := map[uint16]bool{}
			for i := uint32(0); i < 64; i++ {
				p := uint16(20000 + (start-20000+i)%10000)
				block[p] = true
				h.service(1000+i, fmt.Sprintf("%s:%d", nodeIP, p), TCP, false, beA)
			}
			in := syn.bytes(t)
			res := h.expect(k, in, forwardVerdict(k, true), ReasonFwdRemote)
			port := checkRemoteForward(t, h, syn, in, res.pkt, svcRemote, beRemote, nodeIP, hop{smac: env.mac0, dmac: node2MAC})
			if block[port] {
				t.Errorf("SNAT port %d is a frontend", port)
			}
		})
	}
}

// TestSNATPortWaitsForBackendTimeWait: a port whose flow ended with FINs
// less than SNAT_TIME_WAIT_NS ago may still be in the backend's TIME_WAIT.
// Another client flow gets a free port instead (its SYN, with a timestamp
// drawn for another 4-tuple, would likely be refused there), and that port
// only when none is free; the same client flow coming back gets it at once.
func TestSNATPortWaitsForBackendTimeWait(t *testing.T) {
	env := newFibEnv(t)
	for _, k := range []hook{hookXDP, hookTCIngress} {
		t.Run(k.String(), func(t *testing.T) {
			h := snatRangeHarness(t, env, 61000, 61001)
			cfg := h.config()

			// a connects, and the connection ends with FINs 30s ago.
			a := tcpFrame("192.0.2.10:40000", feRemote, tcpSYN)
			portA := h.connectAndClose(k, a)
			keyA := tupleToBPF(Tuple{Src: beRemote.addrPort(), Dst: netip.AddrPortFrom(netip.MustParseAddr(nodeIP), portA), Proto: TCP})
			closedAt := idleFor(t, 30*time.Second)
			h.lastSeen(keyA, closedAt)
			if ct, ok := h.ct(a); ok {
				ct.LastSeenNs = closedAt
				if err := h.objs.Conntrack.Update(a.tuple(), ct, ebpf.UpdateExist); err != nil {
					t.Fatal(err)
				}
			}

			// b, whose probes start at a's port, takes the other one.
			var b frame
			for p := 40000; ; p++ {
				if p == 41000 {
					t.Fatalf("no client port in 40000-40999 whose first probe is %d", portA)
				}
				b = tcpFrame(fmt.Sprintf("192.0.2.11:%d", p), feRemote, tcpSYN)
				if snatPort(b, cfg) == portA {
					break
				}
			}
			if portB := h.forwardedPort(k, b); portB == portA {
				t.Fatalf("b got port %d, closed by a 30s ago, while another was free", portA)
			}
			// c finds no free port: a's, closed for 30s, beats no connection.
			c := tcpFrame("192.0.2.12:40000", feRemote, tcpSYN)
			if portC := h.forwardedPort(k, c); portC != portA {
				t.Fatalf("c got port %d, want a's %d (the only one not in use)", portC, portA)
			}
		})
	}
}

// TestSNATPortSameFlowReturns: a client reusing its 4-tuple for a new
// connection right after the last one closed gets the same SNAT port: the
// backend's TIME_WAIT for it accepts the SYN, whose timestamps keep rising.
func TestSNATPortSameFlowReturns(t *testing.T) {
	env := newFibEnv(t)
	for _, k := range []hook{hookXDP, hookTCIngress} {
		t.Run(k.String(), func(t *testing.T) {
			h := snatRangeHarness(t, env, 61000, 61063)
			a := tcpFrame("192.0.2.10:40000", feRemote, tcpSYN)
			first := h.connectAndClose(k, a)
			// Other clients take ports meanwhile.
			for i := range 8 {
				h.forwardedPort(k, tcpFrame(fmt.Sprintf("192.0.2.%d:40000", 20+i), feRemote, tcpSYN))
			}
			if again := h.forwardedPort(k, a); again != first {
				t.Errorf("new connection on the same 4-tuple got port %d, want its last one %d", again, first)
			}
		})
	}
}
