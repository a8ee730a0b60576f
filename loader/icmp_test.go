package loader

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// icmpError is an ICMP error from src to dst quoting the IPv4 packet of
// frame quoted (its header and first 8 bytes), as a host or router sends
// it.
func icmpError(t *testing.T, src, dst string, code uint8, mtu uint16, quoted []byte, srcMAC []byte) []byte {
	t.Helper()
	typ := uint8(layers.ICMPv4TypeDestinationUnreachable)
	eth := &layers.Ethernet{SrcMAC: srcMAC, DstMAC: nodeMAC, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolICMPv4,
		SrcIP: netip.MustParseAddr(src).AsSlice(), DstIP: netip.MustParseAddr(dst).AsSlice()}
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code)}
	if code == layers.ICMPv4CodeFragmentationNeeded {
		icmp.Seq = mtu // bytes 6-7: next-hop MTU
	}
	return serialize(t, eth, ip, icmp, gopacket.Payload(append([]byte(nil), quoted[ethLen:ethLen+28]...)))
}

// icmpOf takes an ICMP error frame apart: outer addresses and TTL, the
// quoted tuple; and checks every checksum.
type icmpSeen struct {
	src, dst         netip.Addr
	ttl              uint8
	qsrc, qdst       netip.AddrPort
	typ, code        uint8
	mtu              uint16
	quotedIPChecksum bool
}

func icmpOf(t *testing.T, pkt []byte) icmpSeen {
	t.Helper()
	if len(pkt) < ethLen+20+8+28 || pkt[ethLen+9] != 1 {
		t.Fatalf("not an ICMP packet: % x", pkt)
	}
	ip := pkt[ethLen : ethLen+20]
	if c := inetChecksum(0, ip); c != 0 {
		t.Errorf("outer IP checksum off by %#x", c)
	}
	tot := int(binary.BigEndian.Uint16(ip[2:]))
	msg := pkt[ethLen+20 : ethLen+tot]
	if c := inetChecksum(0, msg); c != 0 {
		t.Errorf("ICMP checksum off by %#x", c)
	}
	q := msg[8:]
	a := func(b []byte) netip.Addr { return netip.AddrFrom4([4]byte(b)) }
	return icmpSeen{
		src: a(ip[12:16]), dst: a(ip[16:20]), ttl: ip[8],
		qsrc:             netip.AddrPortFrom(a(q[12:16]), binary.BigEndian.Uint16(q[20:])),
		qdst:             netip.AddrPortFrom(a(q[16:20]), binary.BigEndian.Uint16(q[22:])),
		typ:              msg[0],
		code:             msg[1],
		mtu:              binary.BigEndian.Uint16(msg[6:]),
		quotedIPChecksum: inetChecksum(0, q[:20]) == 0,
	}
}

// TestICMPErrors: ICMP errors about translated flows are translated back
// to what each end knows of the flow — from a remote backend (or a router
// on its path) to the client, from a router on the client's path to the
// backend, from a local pod to the client — and other ICMP is left alone.
func TestICMPErrors(t *testing.T) {
	env := newFibEnv(t)
	h := remoteHarness(t, env)
	client := netip.MustParseAddrPort(clientAP)
	frontend := netip.MustParseAddrPort(feRemote)
	backend := beRemote.addrPort()

	// A flow to the remote backend: SYN out, SYN-ACK back.
	syn := tcpFrame(clientAP, feRemote, tcpSYN)
	out := h.expect(hookTCIngress, syn.bytes(t), VerdictRedirect, ReasonFwdRemote)
	port := checkRemoteForward(t, h, syn, syn.bytes(t), out.pkt, svcRemote, beRemote, nodeIP, hop{smac: env.mac0, dmac: node2MAC})
	sent := out.pkt
	reply := h.expect(hookTCIngress, remoteReply(syn, beRemote, nodeIP, port, tcpSYN|tcpACK).bytes(t), VerdictRedirect, ReasonReplyRemote).pkt

	t.Run("the backend's error reaches the client from the frontend", func(t *testing.T) {
		h.t = t
		res := h.expect(hookTCIngress, icmpError(t, backend.Addr().String(), nodeIP, layers.ICMPv4CodePort, 0, sent, node2MAC), VerdictRedirect, ReasonICMPFwd)
		got := icmpOf(t, res.pkt)
		if got.src != frontend.Addr() || got.dst != client.Addr() || got.qsrc != client || got.qdst != frontend || !got.quotedIPChecksum || got.ttl != 63 {
			t.Errorf("translated error %+v, want %s -> %s quoting %s -> %s, ttl 63", got, frontend.Addr(), client.Addr(), client, frontend)
		}
	})
	t.Run("a router's error on the backend's path keeps the router's address", func(t *testing.T) {
		h.t = t
		res := h.expect(hookTCIngress, icmpError(t, "10.0.0.2", nodeIP, layers.ICMPv4CodeFragmentationNeeded, 1400, sent, node2MAC), VerdictRedirect, ReasonICMPFwd)
		if got := icmpOf(t, res.pkt); got.src.String() != "10.0.0.2" || got.dst != client.Addr() || got.qsrc != client || got.qdst != frontend || got.mtu != 1400 {
			t.Errorf("translated error %+v", got)
		}
	})
	t.Run("a router's error on the client's path reaches the backend", func(t *testing.T) {
		h.t = t
		res := h.expect(hookTCIngress, icmpError(t, "192.0.2.1", frontend.Addr().String(), layers.ICMPv4CodeFragmentationNeeded, 1280, reply, routerMAC), VerdictRedirect, ReasonICMPFwd)
		// From the node's SNAT address, the only one the backend's
		// node surely routes back and accepts from this side.
		nat := netip.AddrPortFrom(netip.MustParseAddr(nodeIP), port)
		if got := icmpOf(t, res.pkt); got.src != nat.Addr() || got.dst != backend.Addr() || got.qsrc != backend || got.qdst != nat || got.mtu != 1280 {
			t.Errorf("translated error %+v, want %s -> %s quoting %s -> %s", got, nat.Addr(), backend.Addr(), backend, nat)
		}
	})
	t.Run("a local pod's error reaches the client from the frontend", func(t *testing.T) {
		h.t = t
		lsyn := tcpFrame("192.0.2.10:40100", feLocal, tcpSYN)
		dnat := h.expect(hookTCIngress, lsyn.bytes(t), VerdictPass, ReasonFwdLocal).pkt
		pod := beLocal.addrPort()
		res := h.expect(hookTCEgress, icmpError(t, pod.Addr().String(), "192.0.2.10", layers.ICMPv4CodePort, 0, dnat, nodeMAC), VerdictPass, ReasonICMPXlate)
		fe := netip.MustParseAddrPort(feLocal)
		if got := icmpOf(t, res.pkt); got.src != fe.Addr() || got.qdst != fe || got.qsrc != lsyn.src {
			t.Errorf("translated error %+v, want from %s quoting -> %s", got, fe.Addr(), fe)
		}
	})
	t.Run("unrelated errors and echo requests pass untouched", func(t *testing.T) {
		h.t = t
		stray := tcpFrame("192.0.2.99:1234", "10.0.0.1:22", tcpSYN).bytes(t)
		in := icmpError(t, "10.0.0.2", nodeIP, layers.ICMPv4CodePort, 0, stray, node2MAC)
		if res := h.expect(hookTCIngress, in, VerdictPass, ReasonPassNotTCPUDP); !bytes.Equal(res.pkt, in) {
			t.Error("an unrelated error was changed")
		}
		h.expect(hookXDP, in, VerdictPass, ReasonPassICMPError)
	})
}

// TestFragNeeded: a packet too big for the route to its remote backend is
// answered with "fragmentation needed" and the route's MTU from the
// frontend, quoting the client's own packet, so path MTU discovery works
// through the datapath; one that may be fragmented is dropped (counted).
func TestFragNeeded(t *testing.T) {
	env := newFibEnv(t)
	// Forwarding uses a route's MTU only when it is locked (else the
	// device's), as the kernel does.
	env.ns.MustIP("route", "replace", "10.244.1.0/24", "via", "10.0.0.2", "dev", "ext0", "mtu", "lock", "1400")
	h := remoteHarness(t, env)
	syn := tcpFrame(clientAP, feRemote, tcpSYN)
	h.expect(hookTCIngress, syn.bytes(t), VerdictRedirect, ReasonFwdRemote)

	small := tcpFrame(clientAP, feRemote, tcpACK)
	small.payload = bytes.Repeat([]byte{'a'}, 1360) // 1400 bytes of IP
	h.expect(hookTCIngress, small.bytes(t), VerdictRedirect, ReasonFwdRemote)

	big := small
	big.payload = bytes.Repeat([]byte{'a'}, 1460) // 1500 bytes, DF set
	in := big.bytes(t)
	h.expect(hookXDP, in, VerdictPass, ReasonPassFIB)
	res := h.expect(hookTCIngress, in, VerdictRedirect, ReasonICMPFragNeeded)
	got := icmpOf(t, res.pkt)
	client, frontend := netip.MustParseAddrPort(clientAP), netip.MustParseAddrPort(feRemote)
	if got.typ != 3 || got.code != 4 || got.mtu != 1400 || got.src != frontend.Addr() || got.dst != client.Addr() || got.qsrc != client || got.qdst != frontend {
		t.Errorf("reply %+v, want fragmentation needed, MTU 1400, %s -> %s quoting %s -> %s", got, frontend.Addr(), client.Addr(), client, frontend)
	}

	usyn := udpFrame("192.0.2.10:40200", feRemoteUDP)
	usyn.payload = bytes.Repeat([]byte{'u'}, 1472) // 1500 bytes, DF clear
	h.expect(hookTCIngress, usyn.bytes(t), VerdictDrop, ReasonDropFragNeeded)
}
