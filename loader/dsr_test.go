package loader

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// DSR services of the fib environment: one behind node2 (a gateway), one
// UDP, and one whose backend shares ext0's link (no gateway to tunnel to).
const (
	svcDSR       = 14
	svcDSRUDP    = 15
	svcDSROnLink = 16

	feDSR       = "10.0.0.1:30094"
	feDSRUDP    = "10.0.0.1:30095"
	feDSROnLink = "10.0.0.1:30096"
)

var (
	beDSR       = testBackend{id: 141, addr: "10.244.1.7:8080"}
	beDSRUDP    = testBackend{id: 151, addr: "10.244.1.8:5353"}
	beDSROnLink = testBackend{id: 161, addr: "10.0.0.9:8080"}
)

// The encapsulation's layout: outer IPv4, UDP, GENEVE, the frontend option.
const (
	dsrEncapLen  = 48
	dsrOuterIP   = ethLen
	dsrUDP       = dsrOuterIP + 20
	dsrGeneve    = dsrUDP + 8
	dsrOption    = dsrGeneve + 8
	dsrInner     = dsrOption + 12
	dsrOptClass  = 0xfff0
	dsrOptType   = 0x81
	genevePort   = 6081
	ctFlagDSR    = uint8(datapathCtFlagsCT_F_DSR)
	dsrOuterTTL  = 64
	ipv4FlagDF   = 0x4000
	geneveCFlag  = 0x40
	etherTypeIP4 = 0x0800
)

func dsrHarness(t *testing.T, env *fibEnv) *harness {
	env.ns.MustIP("neigh", "replace", "10.0.0.9", "lladdr", node2MAC.String(), "nud", "permanent", "dev", "ext0")
	h := remoteHarness(t, env)
	h.service(svcDSR, feDSR, TCP, false, beDSR)
	h.service(svcDSRUDP, feDSRUDP, UDP, false, beDSRUDP)
	h.service(svcDSROnLink, feDSROnLink, TCP, false, beDSROnLink)
	h.setFrontendFlags(feDSR, TCP, frontendFlagDSR)
	h.setFrontendFlags(feDSRUDP, UDP, frontendFlagDSR)
	h.setFrontendFlags(feDSROnLink, TCP, frontendFlagDSR)
	return h
}

// checkDSRForward asserts that out is in (the client's frame f) DNAT'd to
// be and encapsulated from the node to node2, addressed to via, with a
// conntrack entry marking the flow DSR and no reply state. It returns the
// outer UDP source port.
func checkDSRForward(t *testing.T, h *harness, f frame, in, out []byte, svc uint32, be testBackend, via hop) uint16 {
	t.Helper()
	if len(out) != len(in)+dsrEncapLen {
		t.Fatalf("encapsulated frame of %d bytes, want %d+%d", len(out), len(in), dsrEncapLen)
	}
	outer := out[dsrOuterIP:dsrUDP]
	be16 := func(b []byte) uint16 { return binary.BigEndian.Uint16(b) }
	// The IPv4 packet's length: Ethernet may have padded the frame.
	outerLen := int(be16(in[ethLen+2:])) + dsrEncapLen
	if outer[0] != 0x45 || int(be16(outer[2:])) != outerLen || be16(outer[6:])&ipv4FlagDF == 0 ||
		outer[8] != dsrOuterTTL || outer[9] != uint8(UDP) {
		t.Errorf("outer IPv4 header % x: want version 4 IHL 5, length %d, DF, TTL %d, UDP", outer, outerLen, dsrOuterTTL)
	}
	if c := inetChecksum(0, outer); c != 0 {
		t.Errorf("outer IPv4 checksum invalid (sum %#04x)", c)
	}
	src, _ := netip.AddrFromSlice(outer[12:16])
	dst, _ := netip.AddrFromSlice(outer[16:20])
	if src != netip.MustParseAddr(nodeIP) || dst != netip.MustParseAddr("10.0.0.2") {
		t.Errorf("outer %v -> %v, want %s -> 10.0.0.2 (the backend's node)", src, dst, nodeIP)
	}
	udp := out[dsrUDP:dsrGeneve]
	sport := be16(udp[0:])
	if sport < 0xc000 || be16(udp[2:]) != genevePort || int(be16(udp[4:])) != outerLen-20 || be16(udp[6:]) != 0 {
		t.Errorf("outer UDP header % x: want source port >= 0xc000, to %d, length %d, no checksum", udp, genevePort, outerLen-20)
	}
	gn := out[dsrGeneve:dsrOption]
	if gn[0] != 3 || gn[1] != geneveCFlag || be16(gn[2:]) != etherTypeIP4 || !bytes.Equal(gn[4:8], []byte{0, 0, 0, 0}) {
		t.Errorf("GENEVE header % x: want 3 words of options, C set, protocol IPv4, VNI 0", gn)
	}
	opt := out[dsrOption:dsrInner]
	feAddr, _ := netip.AddrFromSlice(opt[4:8])
	if be16(opt[0:]) != dsrOptClass || opt[2] != dsrOptType || opt[3] != 2 ||
		netip.AddrPortFrom(feAddr, be16(opt[8:])) != f.dst || be16(opt[10:]) != 0 {
		t.Errorf("GENEVE option % x: want class %#x type %#x, 2 words: frontend %v", opt, dsrOptClass, dsrOptType, f.dst)
	}
	inner := append(append([]byte(nil), out[:ethLen]...), out[dsrInner:]...)
	d := checkRoutedFrame(t, in, inner, via)
	if d.src() != f.src || d.dst() != be.addrPort() {
		t.Errorf("inner packet %v -> %v, want %v -> %v (client kept, DNAT'd)", d.src(), d.dst(), f.src, be.addrPort())
	}
	ct, ok := h.ct(f)
	if !ok {
		t.Fatalf("no conntrack entry for %v -> %v", f.src, f.dst)
	}
	if ct.SvcId != svc || ct.BackendId != be.id || ct.Flags&ctFlagDSR == 0 || ct.Flags&ctFlagRemote != 0 || ct.NatPort != 0 {
		t.Errorf("conntrack entry %+v, want service %d backend %d, DSR, no SNAT", ct, svc, be.id)
	}
	key := tupleToBPF(Tuple{Src: be.addrPort(), Dst: f.src, Proto: f.proto})
	if rn, ok := h.revNAT(key); ok {
		t.Errorf("reply state %+v on the ingress node: DSR replies never come back here", rn)
	}
	return sport
}

func TestDSR(t *testing.T) {
	env := newFibEnv(t)
	toNode2 := hop{smac: env.mac0, dmac: node2MAC}
	for _, k := range []hook{hookXDP, hookTCIngress} {
		t.Run(k.String(), func(t *testing.T) {
			t.Run("tcp", func(t *testing.T) {
				h := dsrHarness(t, env)
				syn := tcpFrame(clientAP, feDSR, tcpSYN)
				in := syn.bytes(t)
				res := h.expect(k, in, forwardVerdict(k, true), ReasonFwdDSR)
				sport := checkDSRForward(t, h, syn, in, res.pkt, svcDSR, beDSR, toNode2)

				ack := tcpFrame(clientAP, feDSR, tcpACK)
				in = ack.bytes(t)
				res = h.expect(k, in, forwardVerdict(k, true), ReasonFwdDSR)
				if p := checkDSRForward(t, h, ack, in, res.pkt, svcDSR, beDSR, toNode2); p != sport {
					t.Errorf("the flow's outer source port moved from %d to %d", sport, p)
				}
			})
			t.Run("udp", func(t *testing.T) {
				h := dsrHarness(t, env)
				f := udpFrame(clientAP, feDSRUDP)
				in := f.bytes(t)
				res := h.expect(k, in, forwardVerdict(k, true), ReasonFwdDSR)
				checkDSRForward(t, h, f, in, res.pkt, svcDSRUDP, beDSRUDP, toNode2)
			})
			t.Run("backend on the link is SNAT'd", func(t *testing.T) {
				h := dsrHarness(t, env)
				syn := tcpFrame(clientAP, feDSROnLink, tcpSYN)
				in := syn.bytes(t)
				res := h.expect(k, in, forwardVerdict(k, true), ReasonFwdRemote)
				checkRemoteForward(t, h, syn, in, res.pkt, svcDSROnLink, beDSROnLink, nodeIP, toNode2)
			})
		})
	}
}

// TestDSRPathMTU: the encapsulation must fit the route's MTU; a client
// whose packet would not fit is told the MTU left for it.
func TestDSRPathMTU(t *testing.T) {
	env := newFibEnv(t)
	env.ns.MustIP("route", "replace", "10.244.1.0/24", "via", "10.0.0.2", "dev", "ext0", "mtu", "lock", "1400")
	h := dsrHarness(t, env)
	h.expect(hookTCIngress, tcpFrame(clientAP, feDSR, tcpSYN).bytes(t), VerdictRedirect, ReasonFwdDSR)

	fits := tcpFrame(clientAP, feDSR, tcpACK)
	fits.payload = bytes.Repeat([]byte{'a'}, 1400-dsrEncapLen-40)
	h.expect(hookTCIngress, fits.bytes(t), VerdictRedirect, ReasonFwdDSR)
	h.expect(hookXDP, fits.bytes(t), VerdictTX, ReasonFwdDSR)

	big := fits
	big.payload = append(big.payload, 'a')
	in := big.bytes(t)
	h.expect(hookXDP, in, VerdictPass, ReasonPassFIB)
	res := h.expect(hookTCIngress, in, VerdictRedirect, ReasonICMPFragNeeded)
	got := icmpOf(t, res.pkt)
	if want := uint16(1400 - dsrEncapLen); got.typ != 3 || got.code != 4 || got.mtu != want {
		t.Errorf("reply %+v, want fragmentation needed with MTU %d", got, want)
	}
}

// TestDSRBackendNode runs the other half on the backend's node: the
// encapsulated packet is unwrapped for the local backend, whose reply
// leaves from the frontend straight to the client.
func TestDSRBackendNode(t *testing.T) {
	env := newFibEnv(t)
	ingress := dsrHarness(t, env)
	backendNode := newHarness(t)

	for _, f := range []frame{tcpFrame(clientAP, feDSR, tcpSYN), udpFrame(clientAP, feDSRUDP)} {
		t.Run(f.proto.String(), func(t *testing.T) {
			be := beDSR
			if f.proto == UDP {
				be = beDSRUDP
			}
			in := f.bytes(t)
			encap := ingress.expect(hookTCIngress, in, VerdictRedirect, ReasonFwdDSR).pkt

			res := backendNode.expect(hookXDP, encap, VerdictPass, ReasonPassDSR)
			if !bytes.Equal(res.pkt, encap) || len(res.meta) != 0 {
				t.Errorf("XDP changed the DSR packet or marked it done (metadata % x)", res.meta)
			}
			res = backendNode.expect(hookTCIngress, encap, VerdictPass, ReasonDSRDecap)
			want := append(append([]byte(nil), encap[:ethLen]...), encap[dsrInner:]...)
			if !bytes.Equal(res.pkt, want) {
				t.Fatalf("decapsulated\n% x\nwant\n% x", res.pkt, want)
			}
			key := tupleToBPF(Tuple{Src: be.addrPort(), Dst: f.src, Proto: f.proto})
			rn, ok := backendNode.revNAT(key)
			wantRN := datapathRevNatEntry{
				LastSeenNs:   rn.LastSeenNs,
				ClientAddr:   addrToBE(f.src.Addr()),
				FrontendAddr: addrToBE(f.dst.Addr()),
				ClientPort:   portToBE(f.src.Port()),
				FrontendPort: portToBE(f.dst.Port()),
				Flags:        ctFlagDSR,
			}
			if !ok || rn != wantRN {
				t.Errorf("reply state %+v (found %v), want %+v", rn, ok, wantRN)
			}

			reply := f
			reply.src, reply.dst = be.addrPort(), f.src
			reply.srcMAC, reply.dstMAC = nodeMAC, clientMAC
			if f.proto == TCP {
				reply.flags = tcpSYN | tcpACK
			}
			in = reply.bytes(t)
			res = backendNode.expect(hookTCEgress, in, VerdictPass, ReasonReplyDSR)
			d := decode(t, res.pkt)
			if d.src() != f.dst || d.dst() != f.src {
				t.Errorf("reply %v -> %v, want %v -> %v (from the frontend)", d.src(), d.dst(), f.dst, f.src)
			}
			checkChecksums(t, res.pkt)
		})
	}

	t.Run("malformed inner packet", func(t *testing.T) {
		encap := ingress.expect(hookTCIngress, tcpFrame("192.0.2.10:40001", feDSR, tcpSYN).bytes(t), VerdictRedirect, ReasonFwdDSR).pkt
		bad := append([]byte(nil), encap...)
		bad[dsrInner+9] = 1 // ICMP
		backendNode.expect(hookXDP, bad, VerdictPass, ReasonPassDSR)
		backendNode.expect(hookTCIngress, bad, VerdictDrop, ReasonDropDSRMalformed)

		short := append([]byte(nil), encap[:dsrInner+20]...)
		binary.BigEndian.PutUint16(short[dsrOuterIP+2:], uint16(len(short)-ethLen))
		binary.BigEndian.PutUint16(short[dsrUDP+4:], uint16(len(short)-ethLen-20))
		backendNode.expect(hookTCIngress, short, VerdictDrop, ReasonDropDSRMalformed)
	})
	t.Run("GENEVE of others is left alone", func(t *testing.T) {
		encap := ingress.expect(hookTCIngress, tcpFrame("192.0.2.10:40002", feDSR, tcpSYN).bytes(t), VerdictRedirect, ReasonFwdDSR).pkt
		other := append([]byte(nil), encap...)
		binary.BigEndian.PutUint16(other[dsrOption:], 0x0102)
		for _, k := range []hook{hookXDP, hookTCIngress} {
			res := backendNode.expect(k, other, VerdictPass, ReasonPassNoFrontend)
			if !bytes.Equal(res.pkt, other) {
				t.Errorf("%s changed another's GENEVE packet", k)
			}
		}
	})
}
