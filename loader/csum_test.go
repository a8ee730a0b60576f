package loader

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
)

// partialChecksum rewrites the TCP/UDP checksum of pkt the way a sender with
// checksum offload leaves it in a CHECKSUM_PARTIAL skb: the folded
// pseudo-header sum, not complemented (Linux' ~tcp_v4_check(len, s, d, 0)).
func partialChecksum(pkt []byte) []byte {
	return mutate(pkt, func(b []byte) []byte {
		ihl := ihlOf(b)
		hdr := b[ethLen : ethLen+ihl]
		totLen := int(binary.BigEndian.Uint16(hdr[2:]))
		var pseudo uint32
		for i := 12; i < 20; i += 2 {
			pseudo += uint32(binary.BigEndian.Uint16(hdr[i:]))
		}
		pseudo += uint32(hdr[9]) + uint32(totLen-ihl)
		off := 16 // TCP
		if hdr[9] == uint8(UDP) {
			off = 6
		}
		binary.BigEndian.PutUint16(b[ethLen+ihl+off:], ^inetChecksum(pseudo, nil))
		return b
	})
}

// corruptPayload flips a bit of the segment's last byte (not of Ethernet
// padding), leaving the checksum stale.
func corruptPayload(pkt []byte) []byte {
	return mutate(pkt, func(b []byte) []byte {
		totLen := int(binary.BigEndian.Uint16(b[ethLen+2:]))
		b[ethLen+totLen-1] ^= 0x01
		return b
	})
}

func (h *harness) setDeviceFlags(ifindex uint32, flags uint32) {
	h.t.Helper()
	var v datapathDeviceValue
	if err := h.objs.Devices.Lookup(ifindex, &v); err != nil {
		h.t.Fatalf("read device %d: %v", ifindex, err)
	}
	v.Flags = flags
	if err := h.objs.Devices.Update(ifindex, v, ebpf.UpdateAny); err != nil {
		h.t.Fatalf("write device: %v", err)
	}
}

// TestXDPPartialChecksums runs xdp_lb as attached to a virtual device
// (DEV_F_PARTIAL_CSUM): frames whose checksum is complete are translated in
// XDP as on any device, those whose checksum is unfinished or wrong are
// handed to tc untouched and unmarked, and tc_ingress then carries out the
// decision XDP's lookups already made (same backend, same SNAT port).
func TestXDPPartialChecksums(t *testing.T) {
	env := newFibEnv(t)
	toNode2 := hop{smac: env.mac0, dmac: node2MAC}

	payload := func(n int) []byte {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(i*7 + 3)
		}
		return p
	}
	type tc struct {
		name   string
		frame  frame
		mangle func([]byte) []byte
		// complete says whether XDP may translate it itself.
		complete bool
	}
	var cases []tc
	for _, n := range []int{0, 1, 2, 3, 4, 5, 127, 128, 255, 256, 257, 511, 512, 1000, 1459, 1460} {
		f := tcpFrame(fmt.Sprintf("192.0.2.10:%d", 41000+n), feRemote, tcpACK|tcpPSH)
		f.payload = payload(n)
		cases = append(cases,
			tc{name: fmt.Sprintf("tcp %d bytes complete", n), frame: f, complete: true},
			tc{name: fmt.Sprintf("tcp %d bytes partial", n), frame: f, mangle: partialChecksum},
		)
		if n > 0 {
			cases = append(cases, tc{name: fmt.Sprintf("tcp %d bytes corrupt", n), frame: f, mangle: corruptPayload})
		}
	}
	for _, n := range []int{0, 1, 3, 300, 1400} {
		f := udpFrame(fmt.Sprintf("192.0.2.10:%d", 43000+n), feRemoteUDP)
		f.payload = payload(n)
		cases = append(cases,
			tc{name: fmt.Sprintf("udp %d bytes complete", n), frame: f, complete: true},
			tc{name: fmt.Sprintf("udp %d bytes partial", n), frame: f, mangle: partialChecksum},
		)
		none := f
		none.src = netip.AddrPortFrom(none.src.Addr(), 44000+uint16(n))
		none.zeroUDPChecksum = true
		cases = append(cases, tc{name: fmt.Sprintf("udp %d bytes without checksum", n), frame: none, complete: true})
	}

	// One datapath for the whole table (loading one costs the verifier's
	// time); every case is a flow of its own.
	h := remoteHarness(t, env)
	h.setDeviceFlags(env.ext0, devFlagPartialChecksums)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h.t = t
			in := c.frame.bytes(t)
			if c.mangle != nil {
				in = c.mangle(in)
			}
			svc, be := uint32(svcRemote), beRemote
			if c.frame.proto == UDP {
				svc, be = svcRemoteUDP, beRemoteUDP
			}
			if c.complete {
				res := h.expect(hookXDP, in, VerdictTX, ReasonFwdRemote)
				checkRemoteForward(t, h, c.frame, in, res.pkt, svc, be, nodeIP, toNode2)
				return
			}
			res := h.expect(hookXDP, in, VerdictPass, ReasonPassCsumPartial)
			if !bytes.Equal(res.pkt, in) {
				t.Errorf("xdp changed a frame it left to tc:\n got % x\nwant % x", res.pkt, in)
			}
			if res.done() {
				t.Errorf("xdp marked a frame it left to tc as done")
			}
			// XDP's lookups already bound the flow: tc must find and keep it.
			ct, ok := h.ct(c.frame)
			if !ok {
				t.Fatalf("no conntrack entry after xdp's decision")
			}
			out := h.expect(hookTCIngress, in, VerdictRedirect, ReasonFwdRemote)
			d := decode(t, out.pkt)
			if d.dst() != be.addrPort() || d.src().Port() != portFromBE(ct.NatPort) {
				t.Errorf("tc forwarded to %v from port %d, want %v from the SNAT port xdp took (%d)", d.dst(), d.src().Port(), be.addrPort(), portFromBE(ct.NatPort))
			}
		})
	}

	t.Run("reply of a remote backend", func(t *testing.T) {
		h := remoteHarness(t, env)
		h.setDeviceFlags(env.ext0, devFlagPartialChecksums)
		syn := tcpFrame(clientAP, feRemote, tcpSYN)
		res := h.expect(hookXDP, syn.bytes(t), VerdictTX, ReasonFwdRemote)
		port := decode(t, res.pkt).src().Port()
		reply := remoteReply(syn, beRemote, nodeIP, port, tcpSYN|tcpACK)
		reply.payload = payload(700)
		in := partialChecksum(reply.bytes(t))
		if res := h.expect(hookXDP, in, VerdictPass, ReasonPassCsumPartial); res.done() || !bytes.Equal(res.pkt, in) {
			t.Errorf("partial reply: xdp touched or marked it")
		}
		h.expect(hookTCIngress, in, VerdictRedirect, ReasonReplyRemote)
		h.expect(hookXDP, reply.bytes(t), VerdictTX, ReasonReplyRemote)
	})

	t.Run("local backend", func(t *testing.T) {
		h := remoteHarness(t, env)
		h.setDeviceFlags(env.ext0, devFlagPartialChecksums)
		syn := tcpFrame(clientAP, feLocal, tcpSYN)
		syn.payload = payload(33)
		in := partialChecksum(syn.bytes(t))
		if res := h.expect(hookXDP, in, VerdictPass, ReasonPassCsumPartial); res.done() || !bytes.Equal(res.pkt, in) {
			t.Errorf("partial frame to a local backend: xdp touched or marked it")
		}
		h.expect(hookTCIngress, in, VerdictPass, ReasonFwdLocal)
		ack := tcpFrame(clientAP, feLocal, tcpACK)
		in = ack.bytes(t)
		res := h.expect(hookXDP, in, VerdictPass, ReasonFwdLocal)
		if !res.done() {
			t.Errorf("complete frame to a local backend: xdp did not mark it done")
		}
		checkLocalForward(t, h, ack, in, res.pkt, svcLocal, beLocal)
	})

	// Without the flag (a hardware NIC) XDP trusts the checksum as it is:
	// the partial frame is translated, which is why the flag exists.
	t.Run("hardware device trusts checksums", func(t *testing.T) {
		h := remoteHarness(t, env)
		f := tcpFrame(clientAP, feRemote, tcpACK)
		h.expect(hookXDP, partialChecksum(f.bytes(t)), VerdictTX, ReasonFwdRemote)
	})
}
