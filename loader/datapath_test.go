package loader

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// Services of the single-node tests. The node address is 10.0.0.1; pods of
// this node live in 10.244.0.0/24.
const (
	nodeIP   = "10.0.0.1"
	clientAP = "192.0.2.10:40000"

	svcLocal = 1 // TCP NodePort, one local backend
	svcUDP   = 2 // UDP NodePort, one local backend
	svcEmpty = 3 // TCP NodePort whose only backend is terminating, dropping
	svcL7    = 4 // the ingress: left to the proxy
	svcPair  = 5 // TCP NodePort with two local backends

	feLocal = "10.0.0.1:30080"
	feUDP   = "10.0.0.1:30081"
	feEmpty = "10.0.0.1:30082"
	feL7    = "10.0.0.1:80"
	fePair  = "10.0.0.1:30083"
)

var (
	beLocal = testBackend{id: 11, addr: "10.244.0.5:8080", local: true}
	beUDP   = testBackend{id: 21, addr: "10.244.0.7:5353", local: true}
	beGone  = testBackend{id: 31, addr: "10.244.0.8:8080", local: true, terminating: true}
	beL7    = testBackend{id: 41, addr: "10.244.0.9:8443", local: true}
	beA     = testBackend{id: 51, addr: "10.244.0.10:9000", local: true}
	beB     = testBackend{id: 52, addr: "10.244.0.11:9000", local: true}
	beC     = testBackend{id: 53, addr: "10.244.0.12:9000", local: true}
)

func (h *harness) localServices() {
	h.service(svcLocal, feLocal, TCP, false, beLocal)
	h.service(svcUDP, feUDP, UDP, false, beUDP)
	h.service(svcEmpty, feEmpty, TCP, false, beGone)
	// Dropped, not rejected (a Local policy without local endpoints), so
	// both hooks give it the same verdict; services_dp_test.go rejects.
	h.setFrontendFlags(feEmpty, TCP, frontendFlagNoBackendDrop)
	h.service(svcL7, feL7, TCP, true, beL7)
	h.service(svcPair, fePair, TCP, false, beA, beB)
}

// replyOf is the packet backend be sends back for the client frame f.
func replyOf(f frame, be netip.AddrPort, flags uint8) frame {
	r := f
	r.src, r.dst = be, f.src
	r.flags = flags
	r.srcMAC, r.dstMAC = nodeMAC, clientMAC
	r.options = nil
	r.payload = []byte("reply")
	return r
}

// checkLocalForward asserts that out is in, DNAT'd to backend be of service
// svc and that the flow's conntrack and reverse NAT state is in place.
func checkLocalForward(t *testing.T, h *harness, f frame, in, out []byte, svc uint32, be testBackend) {
	t.Helper()
	d := decode(t, out)
	if d.src() != f.src || d.dst() != be.addrPort() {
		t.Errorf("forwarded %v -> %v, want %v -> %v", d.src(), d.dst(), f.src, be.addrPort())
	}
	if got, want := d.ip.TTL, in[ethLen+8]; got != want {
		t.Errorf("TTL %d, want %d: local delivery leaves it to the kernel", got, want)
	}
	if !bytes.Equal(out[:ethLen], in[:ethLen]) {
		t.Errorf("Ethernet header changed: % x, want % x", out[:ethLen], in[:ethLen])
	}
	if !bytes.Equal(d.payload(), f.payload) {
		t.Errorf("payload %q, want %q", d.payload(), f.payload)
	}
	if len(out) != len(in) {
		t.Errorf("length %d, want %d", len(out), len(in))
	}
	checkChecksums(t, out)

	ct, ok := h.ct(f)
	if !ok {
		t.Fatalf("no conntrack entry for %v -> %v", f.src, f.dst)
	}
	if ct.SvcId != svc || ct.BackendId != be.id || ct.Flags&ctFlagRemote != 0 || ct.NatAddr != 0 || ct.NatPort != 0 {
		t.Errorf("conntrack entry %+v, want service %d backend %d, no NAT", ct, svc, be.id)
	}
	if ct.CreatedNs == 0 || ct.LastSeenNs < ct.CreatedNs {
		t.Errorf("conntrack timestamps created %d last seen %d", ct.CreatedNs, ct.LastSeenNs)
	}
	rk := replyOf(f, be.addrPort(), tcpACK).tuple()
	rn, ok := h.revNAT(rk)
	if !ok {
		t.Fatalf("no reverse NAT entry for the reply %v -> %v", be.addrPort(), f.src)
	}
	want := datapathRevNatEntry{
		LastSeenNs:   rn.LastSeenNs,
		ClientAddr:   addrToBE(f.src.Addr()),
		FrontendAddr: addrToBE(f.dst.Addr()),
		ClientPort:   portToBE(f.src.Port()),
		FrontendPort: portToBE(f.dst.Port()),
	}
	if rn != want {
		t.Errorf("reverse NAT entry %+v, want %+v", rn, want)
	}
}

// Flags of datapathCtEntry, as CT_F_* in bpf/lib/consts.h.
const (
	ctFlagRemote  = uint8(datapathCtFlagsCT_F_REMOTE)
	ctFlagSeenFIN = uint8(datapathCtFlagsCT_F_SEEN_FIN)
)

// pktCase is a single packet sent to a datapath programmed by
// localServices, through xdp_lb and through tc_ingress.
type pktCase struct {
	name    string
	pkt     func(t *testing.T) []byte
	verdict Verdict
	reason  Reason
	// check inspects a forwarded packet; nil means the output must be the
	// input, byte for byte (for passes; drops are not looked at).
	check func(t *testing.T, h *harness, in []byte, res result)
	// xdpOnly: the kernel refuses skb test runs of IPv4 frames shorter
	// than an IPv4 header (EINVAL), so tc_ingress cannot be given them.
	xdpOnly bool
}

func (f frame) build() func(t *testing.T) []byte {
	return func(t *testing.T) []byte { return f.bytes(t) }
}

func withFrame(f frame, fn func(b []byte) []byte) func(t *testing.T) []byte {
	return func(t *testing.T) []byte { return mutate(f.bytes(t), fn) }
}

func localForward(f frame, svc uint32, be testBackend) func(t *testing.T, h *harness, in []byte, res result) {
	return func(t *testing.T, h *harness, in []byte, res result) {
		checkLocalForward(t, h, f, in, res.pkt, svc, be)
	}
}

func put16(off int, v uint16) func(b []byte) []byte {
	return func(b []byte) []byte { binary.BigEndian.PutUint16(b[off:], v); return b }
}

func ingressCases(t *testing.T) []pktCase {
	syn := tcpFrame(clientAP, feLocal, tcpSYN)
	udp := udpFrame(clientAP, feUDP)
	udpNoCsum := udp
	udpNoCsum.zeroUDPChecksum = true
	zeroSum := zeroSumUDP(t, clientAP, feUDP, clientAP, beUDP.addr)
	ttl1 := syn
	ttl1.ttl = 1
	tos := syn
	tos.tos = 0xb8
	bare := syn
	bare.payload = nil
	ipOff := ethLen
	l4Off := ethLen + 20

	cases := []pktCase{
		{name: "tcp syn to nodeport, local backend", pkt: syn.build(), verdict: VerdictPass, reason: ReasonFwdLocal,
			check: localForward(syn, svcLocal, beLocal)},
		{name: "udp to nodeport, local backend", pkt: udp.build(), verdict: VerdictPass, reason: ReasonFwdLocal,
			check: func(t *testing.T, h *harness, in []byte, res result) {
				checkLocalForward(t, h, udp, in, res.pkt, svcUDP, beUDP)
				if checkChecksums(t, res.pkt) {
					t.Errorf("UDP checksum became 0")
				}
			}},
		{name: "udp without checksum keeps none", pkt: udpNoCsum.build(), verdict: VerdictPass, reason: ReasonFwdLocal,
			check: func(t *testing.T, h *harness, in []byte, res result) {
				checkLocalForward(t, h, udpNoCsum, in, res.pkt, svcUDP, beUDP)
				if !checkChecksums(t, res.pkt) {
					t.Errorf("UDP checksum %#x, want 0 (none)", binary.BigEndian.Uint16(res.pkt[l4Offset(res.pkt)+6:]))
				}
			}},
		{name: "udp checksum that becomes 0 is sent as 0xffff", verdict: VerdictPass, reason: ReasonFwdLocal,
			pkt: zeroSum.build(),
			check: func(t *testing.T, h *harness, in []byte, res result) {
				checkLocalForward(t, h, zeroSum, in, res.pkt, svcUDP, beUDP)
				if c := binary.BigEndian.Uint16(res.pkt[l4Offset(res.pkt)+6:]); c != 0xffff {
					t.Errorf("UDP checksum %#04x, want 0xffff", c)
				}
			}},
		{name: "ttl 1 to local backend is the kernel's business", pkt: ttl1.build(), verdict: VerdictPass, reason: ReasonFwdLocal,
			check: localForward(ttl1, svcLocal, beLocal)},
		{name: "tos kept", pkt: tos.build(), verdict: VerdictPass, reason: ReasonFwdLocal,
			check: func(t *testing.T, h *harness, in []byte, res result) {
				checkLocalForward(t, h, tos, in, res.pkt, svcLocal, beLocal)
				if d := decode(t, res.pkt); d.ip.TOS != 0xb8 {
					t.Errorf("TOS %#x, want 0xb8", d.ip.TOS)
				}
			}},
		{name: "ethernet padding after the IP packet", verdict: VerdictPass, reason: ReasonFwdLocal,
			pkt: withFrame(bare, func(b []byte) []byte { return append(b, bytes.Repeat([]byte{0xaa}, 8)...) }),
			check: func(t *testing.T, h *harness, in []byte, res result) {
				checkLocalForward(t, h, bare, in, res.pkt, svcLocal, beLocal)
			}},
		{name: "frontend without active backend", pkt: tcpFrame(clientAP, feEmpty, tcpSYN).build(),
			verdict: VerdictDrop, reason: ReasonDropNoBackend},
		{name: "l7 frontend", pkt: tcpFrame(clientAP, feL7, tcpSYN).build(), verdict: VerdictPass, reason: ReasonPassL7},
		{name: "other port", pkt: tcpFrame(clientAP, "10.0.0.1:22", tcpSYN).build(), verdict: VerdictPass, reason: ReasonPassNoFrontend},
		{name: "other address", pkt: tcpFrame(clientAP, "10.0.0.9:30080", tcpSYN).build(), verdict: VerdictPass, reason: ReasonPassNoFrontend},
		{name: "udp to a tcp frontend", pkt: udpFrame(clientAP, feLocal).build(), verdict: VerdictPass, reason: ReasonPassNoFrontend},
		{name: "snat range port without state", pkt: tcpFrame("10.244.1.5:8080", "10.0.0.1:61000", tcpSYN|tcpACK).build(),
			verdict: VerdictPass, reason: ReasonPassNoFrontend},
		{name: "arp", pkt: func(t *testing.T) []byte { return arpFrame(t) }, verdict: VerdictPass, reason: ReasonPassNotIPv4},
		{name: "vlan tagged", pkt: func(t *testing.T) []byte { return vlanFrame(t, syn) }, verdict: VerdictPass, reason: ReasonPassNotIPv4},
		{name: "ipv6", pkt: func(t *testing.T) []byte { return ipv6Frame(t) }, verdict: VerdictPass, reason: ReasonPassNotIPv4},
		{name: "icmp to the node", pkt: func(t *testing.T) []byte { return icmpFrame(t, "192.0.2.10", nodeIP) },
			verdict: VerdictPass, reason: ReasonPassNotTCPUDP},
		{name: "first fragment", pkt: func() frame { f := udp; f.moreFragments = true; return f }().build(),
			verdict: VerdictPass, reason: ReasonPassFragment},
		{name: "later fragment", pkt: func() frame { f := syn; f.fragOffset = 185; return f }().build(),
			verdict: VerdictPass, reason: ReasonPassFragment},

		{name: "truncated ip header", pkt: withFrame(syn, func(b []byte) []byte { return b[:ethLen+10] }),
			verdict: VerdictDrop, reason: ReasonDropMalformedIP, xdpOnly: true},
		{name: "ihl below 5", pkt: withFrame(syn, func(b []byte) []byte { b[ipOff] = 0x44; return b }),
			verdict: VerdictDrop, reason: ReasonDropMalformedIP},
		{name: "ip version 6 in an ipv4 frame", pkt: withFrame(syn, func(b []byte) []byte { b[ipOff] = 0x65; return b }),
			verdict: VerdictDrop, reason: ReasonDropMalformedIP},
		{name: "ihl beyond the packet", pkt: withFrame(bare, func(b []byte) []byte { b[ipOff] = 0x4f; return b }),
			verdict: VerdictDrop, reason: ReasonDropMalformedIP},
		{name: "tot_len beyond the packet", pkt: withFrame(syn, func(b []byte) []byte {
			return put16(ipOff+2, uint16(len(b)-ethLen+1))(b)
		}), verdict: VerdictDrop, reason: ReasonDropMalformedIP},
		{name: "tot_len below the header", pkt: withFrame(syn, put16(ipOff+2, 16)),
			verdict: VerdictDrop, reason: ReasonDropMalformedIP},
		{name: "tcp header truncated", pkt: withFrame(bare, func(b []byte) []byte {
			return put16(ipOff+2, 30)(b[:ethLen+30])
		}), verdict: VerdictDrop, reason: ReasonDropMalformedL4},
		{name: "tcp header cut by tot_len", pkt: withFrame(bare, put16(ipOff+2, 30)),
			verdict: VerdictDrop, reason: ReasonDropMalformedL4},
		{name: "tcp doff below 5", pkt: withFrame(syn, func(b []byte) []byte { b[l4Off+12] = 0x40; return b }),
			verdict: VerdictDrop, reason: ReasonDropMalformedL4},
		{name: "tcp doff beyond tot_len", pkt: withFrame(syn, func(b []byte) []byte { b[l4Off+12] = 0xf0; return b }),
			verdict: VerdictDrop, reason: ReasonDropMalformedL4},
		{name: "udp length beyond the datagram", pkt: withFrame(udp, func(b []byte) []byte {
			return put16(l4Off+4, uint16(len(b)-l4Off+1))(b)
		}), verdict: VerdictDrop, reason: ReasonDropMalformedL4},
		{name: "udp length below its header", pkt: withFrame(udp, put16(l4Off+4, 7)),
			verdict: VerdictDrop, reason: ReasonDropMalformedL4},
		{name: "udp header truncated", pkt: withFrame(udp, func(b []byte) []byte {
			return put16(ipOff+2, 24)(b[:l4Off+4])
		}), verdict: VerdictDrop, reason: ReasonDropMalformedL4},
	}
	// IP options shift the L4 header; the rewrite must find it and leave
	// the options alone.
	for ihl := 6; ihl <= 15; ihl++ {
		f := syn
		f.src = netip.AddrPortFrom(f.src.Addr(), uint16(41000+ihl))
		f.options = ipOptions(ihl)
		cases = append(cases, pktCase{
			name: fmt.Sprintf("ip options ihl %d", ihl), pkt: f.build(), verdict: VerdictPass, reason: ReasonFwdLocal,
			check: func(t *testing.T, h *harness, in []byte, res result) {
				checkLocalForward(t, h, f, in, res.pkt, svcLocal, beLocal)
				if got := ihlOf(res.pkt) / 4; got != ihl {
					t.Fatalf("ihl %d, want %d", got, ihl)
				}
				if !bytes.Equal(res.pkt[ethLen+20:ethLen+ihl*4], in[ethLen+20:ethLen+ihl*4]) {
					t.Errorf("options changed: % x, want % x", res.pkt[ethLen+20:ethLen+ihl*4], in[ethLen+20:ethLen+ihl*4])
				}
			},
		})
	}
	udpOpts := udp
	udpOpts.options = ipOptions(7)
	cases = append(cases, pktCase{name: "udp with ip options", pkt: udpOpts.build(), verdict: VerdictPass, reason: ReasonFwdLocal,
		check: localForward(udpOpts, svcUDP, beUDP)})
	return cases
}

// TestIngress sends single packets through xdp_lb and tc_ingress of a node
// with local backends only.
func TestIngress(t *testing.T) {
	for _, k := range []hook{hookXDP, hookTCIngress} {
		t.Run(k.String(), func(t *testing.T) {
			h := newHarness(t)
			for _, c := range ingressCases(t) {
				if c.xdpOnly && k != hookXDP {
					continue
				}
				t.Run(c.name, func(t *testing.T) {
					h.t = t
					h.reset()
					h.localServices()
					in := c.pkt(t)
					res := h.expect(k, in, c.verdict, c.reason)
					if k == hookXDP {
						// Only packets XDP did not decide on reach tc_ingress unmarked.
						if want := c.verdict == VerdictPass && c.reason != ReasonPassFIB; res.done() != want {
							t.Errorf("xdp done mark %v (meta % x), want %v", res.done(), res.meta, want)
						}
					}
					switch {
					case c.check != nil:
						c.check(t, h, in, res)
					case c.verdict == VerdictPass && !bytes.Equal(res.pkt, in):
						t.Errorf("passed packet changed:\n got % x\nwant % x", res.pkt, in)
					}
					if c.check == nil {
						if n := h.count(h.objs.Conntrack); n != 0 {
							t.Errorf("%d conntrack entries, want none", n)
						}
						if n := h.count(h.objs.ReverseNat); n != 0 {
							t.Errorf("%d reverse NAT entries, want none", n)
						}
					}
				})
			}
		})
	}
}

// TestEstablishedFlows checks the conntrack rules: a flow keeps its
// backend while the backend exists, terminating backends keep their flows
// but new connections (SYN) move away, and a flow whose backend is removed
// keeps it until a new connection reuses the tuple.
func TestEstablishedFlows(t *testing.T) {
	for _, k := range []hook{hookXDP, hookTCIngress} {
		t.Run(k.String(), func(t *testing.T) {
			h := newHarness(t)
			h.localServices()
			syn := tcpFrame(clientAP, fePair, tcpSYN)
			ack := tcpFrame(clientAP, fePair, tcpACK)
			fin := tcpFrame(clientAP, fePair, tcpFIN|tcpACK)

			send := func(f frame, want testBackend) {
				t.Helper()
				in := f.bytes(t)
				res := h.expect(k, in, VerdictPass, ReasonFwdLocal)
				checkLocalForward(t, h, f, in, res.pkt, svcPair, want)
			}

			// The first SYN lands where the flow hash says.
			pair := []testBackend{beA, beB}
			x := pair[flowHash(syn.tuple(), testHashSeed)%2]
			y := beA
			if x == beA {
				y = beB
			}
			send(syn, x)
			created := func() uint64 { ct, _ := h.ct(syn); return ct.CreatedNs }()

			// The backend set changes: only y is left active.
			h.setSlots(svcPair, y.id)
			send(ack, x)
			if ct, _ := h.ct(syn); ct.CreatedNs != created {
				t.Errorf("established flow got a new conntrack entry")
			}

			// x terminates: its flow stays, a new connection on the same
			// tuple goes to y.
			xt := x
			xt.terminating = true
			h.putBackend(xt)
			send(ack, x)
			send(syn, y)

			// y is removed from the service: the established flow keeps
			// going to it (the pod may still be draining it, as with
			// kube-proxy), and a new connection on the tuple picks again.
			h.putBackend(x)
			h.setSlots(svcPair, x.id)
			h.deleteBackend(y.id)
			send(ack, y)
			send(syn, x)
			if _, ok := h.revNAT(replyOf(ack, x.addrPort(), tcpACK).tuple()); !ok {
				t.Errorf("no reverse NAT entry after reselecting")
			}

			// After a FIN the tuple's next SYN is a new connection.
			h.putBackend(beC)
			h.setSlots(svcPair, beC.id)
			send(fin, x)
			if ct, _ := h.ct(fin); ct.Flags&ctFlagSeenFIN == 0 {
				t.Errorf("conntrack flags %#x, want FIN seen", ct.Flags)
			}
			send(ack, x)
			send(syn, beC)
		})
	}
}

// TestRemovedUDPBackend checks that a UDP flow whose backend is removed
// picks again at once: UDP has no SYN to mark a new conversation, so
// keeping the flow on a removed pod could last forever.
func TestRemovedUDPBackend(t *testing.T) {
	for _, k := range []hook{hookXDP, hookTCIngress} {
		t.Run(k.String(), func(t *testing.T) {
			h := newHarness(t)
			h.service(svcPair, fePair, UDP, false, beA, beB)
			f := udpFrame(clientAP, fePair)
			in := f.bytes(t)
			res := h.expect(k, in, VerdictPass, ReasonFwdLocal)
			first := decode(t, res.pkt).dst()
			gone, left := beA, beB
			if first != beA.addrPort() {
				gone, left = beB, beA
			}
			h.setSlots(svcPair, left.id)
			h.deleteBackend(gone.id)
			in = f.bytes(t)
			res = h.expect(k, in, VerdictPass, ReasonFwdLocal)
			checkLocalForward(t, h, f, in, res.pkt, svcPair, left)
		})
	}
}

// TestBackendSpread checks that new flows follow the flow hash and spread
// over every backend.
func TestBackendSpread(t *testing.T) {
	h := newHarness(t)
	bes := []testBackend{beA, beB, beC}
	h.service(svcPair, fePair, TCP, false, bes...)
	hits := map[uint32]int{}
	for i := range 60 {
		f := tcpFrame(fmt.Sprintf("192.0.2.%d:%d", 10+i%7, 40000+i), fePair, tcpSYN)
		res, err := h.run(hookXDP, f.bytes(t))
		if err != nil || res.ret != xdpPass {
			t.Fatalf("flow %d: returned %d, %v", i, res.ret, err)
		}
		want := bes[flowHash(f.tuple(), testHashSeed)%3]
		if got := decode(t, res.pkt).dst(); got != want.addrPort() {
			t.Errorf("flow %d went to %v, want %v", i, got, want.addrPort())
		}
		hits[want.id]++
	}
	for _, b := range bes {
		if hits[b.id] == 0 {
			t.Errorf("backend %d got no flow of 60: %v", b.id, hits)
		}
	}
}

// TestLocalReply sends a local backend's reply through tc_egress.
func TestLocalReply(t *testing.T) {
	udpNoCsum := udpFrame(clientAP, feUDP)
	udpNoCsum.zeroUDPChecksum = true
	for _, c := range []struct {
		name string
		fwd  frame
		be   testBackend
		// noCsum: the reply carries no UDP checksum.
		noCsum bool
		// zeroSum: the reply's checksum becomes 0 once translated.
		zeroSum bool
	}{
		{name: "tcp", fwd: tcpFrame(clientAP, feLocal, tcpSYN), be: beLocal},
		{name: "udp", fwd: udpFrame(clientAP, feUDP), be: beUDP},
		{name: "udp without checksum", fwd: udpNoCsum, be: beUDP, noCsum: true},
		{name: "udp checksum that becomes 0", fwd: udpFrame(clientAP, feUDP), be: beUDP, zeroSum: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			h.localServices()
			h.expect(hookXDP, c.fwd.bytes(t), VerdictPass, ReasonFwdLocal)

			reply := replyOf(c.fwd, c.be.addrPort(), tcpSYN|tcpACK)
			reply.zeroUDPChecksum = c.noCsum
			if c.zeroSum {
				z := zeroSumUDP(t, c.be.addr, clientAP, feUDP, clientAP)
				reply.payload = z.payload
			}
			in := reply.bytes(t)
			res := h.expect(hookTCEgress, in, VerdictPass, ReasonReplyLocal)
			d := decode(t, res.pkt)
			if d.src() != c.fwd.dst || d.dst() != c.fwd.src {
				t.Errorf("reply %v -> %v, want %v -> %v", d.src(), d.dst(), c.fwd.dst, c.fwd.src)
			}
			if !bytes.Equal(res.pkt[:ethLen], in[:ethLen]) || d.ip.TTL != 64 || !bytes.Equal(d.payload(), reply.payload) {
				t.Errorf("reply changed beyond its source: % x", res.pkt)
			}
			if none := checkChecksums(t, res.pkt); none != c.noCsum {
				t.Errorf("UDP checksum none=%v, want %v", none, c.noCsum)
			}
			if sum := binary.BigEndian.Uint16(res.pkt[l4Offset(res.pkt)+6:]); c.zeroSum && sum != 0xffff {
				t.Errorf("UDP checksum %#04x, want 0xffff", sum)
			}

			// The backend talking to anyone else is not translated.
			other := replyOf(c.fwd, c.be.addrPort(), tcpACK)
			other.dst = netip.MustParseAddrPort("192.0.2.99:40000")
			in = other.bytes(t)
			if res := h.expect(hookTCEgress, in, VerdictPass, ReasonPassNotTracked); !bytes.Equal(res.pkt, in) {
				t.Errorf("untracked egress packet changed")
			}
		})
	}
}

// TestEgressLeavesHostTraffic checks that tc_egress never drops or changes
// what the host sends, however it looks.
func TestEgressLeavesHostTraffic(t *testing.T) {
	syn := tcpFrame("10.0.0.1:22", clientAP, tcpSYN|tcpACK)
	for _, c := range []struct {
		name   string
		pkt    func(t *testing.T) []byte
		reason Reason
	}{
		{"tcp", syn.build(), ReasonPassNotTracked},
		{"arp", func(t *testing.T) []byte { return arpFrame(t) }, ReasonPassNotIPv4},
		{"icmp", func(t *testing.T) []byte { return icmpFrame(t, nodeIP, "192.0.2.10") }, ReasonPassNotTCPUDP},
		{"fragment", func() frame { f := syn; f.moreFragments = true; return f }().build(), ReasonPassFragment},
		{"ihl below 5", withFrame(syn, func(b []byte) []byte { b[ethLen] = 0x44; return b }), ReasonPassNotTracked},
		{"tcp doff below 5", withFrame(syn, func(b []byte) []byte { b[ethLen+20+12] = 0x40; return b }), ReasonPassNotTracked},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			h.localServices()
			in := c.pkt(t)
			if res := h.expect(hookTCEgress, in, VerdictPass, c.reason); !bytes.Equal(res.pkt, in) {
				t.Errorf("egress packet changed")
			}
		})
	}
}

// TestTrace checks the events of decisions while tracing is on, and that
// host noise and a switched off trace produce none.
func TestTrace(t *testing.T) {
	h := newHarness(t)
	h.localServices()
	rd := h.events()
	syn := tcpFrame(clientAP, feLocal, tcpSYN)
	pkt := syn.bytes(t)

	h.expect(hookXDP, pkt, VerdictPass, ReasonFwdLocal)
	if ev, ok := nextEvent(t, rd, 20*time.Millisecond); ok {
		t.Fatalf("event with tracing off: %+v", ev)
	}

	h.setTracing(true)
	start := time.Now()
	h.expect(hookXDP, pkt, VerdictPass, ReasonFwdLocal)
	ev, ok := nextEvent(t, rd, time.Second)
	if !ok {
		t.Fatal("no event with tracing on")
	}
	want := Event{
		Time:      ev.Time,
		Ifindex:   1, // loopback: test runs without an ingress device
		Stage:     StageXDP,
		Verdict:   VerdictPass,
		Reason:    ReasonFwdLocal,
		ServiceID: svcLocal,
		BackendID: beLocal.id,
		Orig:      Tuple{Src: syn.src, Dst: syn.dst, Proto: TCP},
		Xlated:    Tuple{Src: syn.src, Dst: beLocal.addrPort(), Proto: TCP},
		Length:    uint32(len(pkt)),
	}
	if ev != want {
		t.Errorf("event\n got %+v\nwant %+v", ev, want)
	}
	if d := ev.Time.Sub(start); d < -time.Second || d > 5*time.Second {
		t.Errorf("event time %v is %v away from the run", ev.Time, d)
	}

	// Host noise is counted, never traced.
	h.expect(hookXDP, tcpFrame(clientAP, "10.0.0.1:22", tcpSYN).bytes(t), VerdictPass, ReasonPassNoFrontend)
	if ev, ok := nextEvent(t, rd, 20*time.Millisecond); ok {
		t.Errorf("event for host traffic: %+v", ev)
	}

	// Drops are traced with their reason.
	drop := tcpFrame(clientAP, feEmpty, tcpSYN)
	h.expect(hookTCIngress, drop.bytes(t), VerdictDrop, ReasonDropNoBackend)
	if ev, ok := nextEvent(t, rd, time.Second); !ok {
		t.Error("no event for a drop")
	} else if ev.Stage != StageTCIngress || ev.Verdict != VerdictDrop || ev.Reason != ReasonDropNoBackend ||
		ev.ServiceID != svcEmpty || ev.Orig != ev.Xlated {
		t.Errorf("drop event %+v", ev)
	}

	// A reply names the flow's service and backend.
	reply := replyOf(syn, beLocal.addrPort(), tcpSYN|tcpACK)
	h.expect(hookTCEgress, reply.bytes(t), VerdictPass, ReasonReplyLocal)
	if ev, ok := nextEvent(t, rd, time.Second); !ok {
		t.Error("no event for a reply")
	} else if ev.Stage != StageTCEgress || ev.Reason != ReasonReplyLocal || ev.ServiceID != svcLocal ||
		ev.BackendID != beLocal.id || ev.Xlated.Src != syn.dst || ev.Xlated.Dst != syn.src {
		t.Errorf("reply event %+v", ev)
	}

	h.setTracing(false)
	h.expect(hookXDP, pkt, VerdictPass, ReasonFwdLocal)
	if ev, ok := nextEvent(t, rd, 20*time.Millisecond); ok {
		t.Errorf("event after tracing was switched off: %+v", ev)
	}
}
