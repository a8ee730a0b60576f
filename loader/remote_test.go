package loader

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/nodegress/nodegress/tests/netns"
)

// Remote backends need bpf_fib_lookup to find a route and a neighbour; in a
// test run it looks in the network namespace of the calling thread. fibEnv
// is such a namespace: the node with two external devices (veth pairs
// whose peers stay in the namespace), routes to other nodes' pod CIDRs and
// permanent neighbour entries for the gateways.
type fibEnv struct {
	ns         *netns.NS
	ext0, ext1 uint32 // ifindex
	mac0, mac1 net.HardwareAddr
}

var (
	node2MAC  = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x01, 0x02} // 10.0.0.2 on ext0
	node3MAC  = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x02, 0x02} // 10.1.0.2 on ext1
	routerMAC = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0xfe} // 10.0.0.254, the default route
)

func newFibEnv(t *testing.T) *fibEnv {
	t.Helper()
	netns.RequirePrivileged(t)
	ns := netns.New(t, "ngfib-"+netns.RandomSuffix(6))
	// bpf_fib_lookup refuses to forward from a device without forwarding.
	ns.MustSysctl("net.ipv4.conf.all.forwarding", "1")
	ns.MustSysctl("net.ipv4.conf.default.forwarding", "1")
	for _, args := range [][]string{
		{"link", "add", "ext0", "type", "veth", "peer", "name", "ext0p"},
		{"link", "add", "ext1", "type", "veth", "peer", "name", "ext1p"},
		{"link", "set", "ext0", "up"},
		{"link", "set", "ext0p", "up"},
		{"link", "set", "ext1", "up"},
		{"link", "set", "ext1p", "up"},
		{"addr", "add", "10.0.0.1/24", "dev", "ext0"},
		{"addr", "add", "10.1.0.1/24", "dev", "ext1"},
		{"route", "add", "10.244.1.0/24", "via", "10.0.0.2", "dev", "ext0"},
		{"route", "add", "10.244.2.0/24", "via", "10.1.0.2", "dev", "ext1"},
		// No neighbour entry for 10.0.0.3: XDP must leave these to the kernel.
		{"route", "add", "10.244.3.0/24", "via", "10.0.0.3", "dev", "ext0"},
		{"route", "add", "default", "via", "10.0.0.254", "dev", "ext0"},
		{"neigh", "add", "10.0.0.2", "lladdr", node2MAC.String(), "nud", "permanent", "dev", "ext0"},
		{"neigh", "add", "10.1.0.2", "lladdr", node3MAC.String(), "nud", "permanent", "dev", "ext1"},
		{"neigh", "add", "10.0.0.254", "lladdr", routerMAC.String(), "nud", "permanent", "dev", "ext0"},
	} {
		ns.MustIP(args...)
	}
	env := &fibEnv{ns: ns}
	for _, d := range []struct {
		name string
		idx  *uint32
		mac  *net.HardwareAddr
	}{{"ext0", &env.ext0, &env.mac0}, {"ext1", &env.ext1, &env.mac1}} {
		l, err := ns.Link(d.name)
		if err != nil {
			t.Fatal(err)
		}
		*d.idx = uint32(l.Attrs().Index)
		*d.mac = l.Attrs().HardwareAddr
	}
	return env
}

// Remote services; their backends are pods of other nodes.
const (
	svcRemote    = 10
	svcRemoteUDP = 11
	svcOther     = 12 // backend behind ext1
	svcNoNeigh   = 13 // backend behind a gateway without neighbour entry

	feRemote    = "10.0.0.1:30090"
	feRemoteUDP = "10.0.0.1:30091"
	feOther     = "10.0.0.1:30092"
	feNoNeigh   = "10.0.0.1:30093"
)

var (
	beRemote    = testBackend{id: 101, addr: "10.244.1.5:8080"}
	beRemoteUDP = testBackend{id: 111, addr: "10.244.1.6:5353"}
	beOther     = testBackend{id: 121, addr: "10.244.2.5:8080"}
	beNoNeigh   = testBackend{id: 131, addr: "10.244.3.5:8080"}
)

// remoteHarness is a datapath running in env, as attached to ext0.
func remoteHarness(t *testing.T, env *fibEnv) *harness {
	h := newHarness(t)
	h.ns = env.ns
	h.ifindex = env.ext0
	h.localServices()
	h.service(svcRemote, feRemote, TCP, false, beRemote)
	h.service(svcRemoteUDP, feRemoteUDP, UDP, false, beRemoteUDP)
	h.service(svcOther, feOther, TCP, false, beOther)
	h.service(svcNoNeigh, feNoNeigh, TCP, false, beNoNeigh)
	h.setDevice(env.ext0, "10.0.0.1")
	h.setDevice(env.ext1, "10.1.0.1")
	return h
}

// forwardVerdict is what a hook answers for a packet it sends out of
// egress itself.
func forwardVerdict(k hook, sameDevice bool) Verdict {
	if k == hookXDP && sameDevice {
		return VerdictTX
	}
	return VerdictRedirect
}

// hop says how a forwarded packet must leave: from which source MAC to
// which next hop. Nil MACs mean the Ethernet header stays as it came (tc
// lets the kernel resolve the neighbour).
type hop struct {
	smac, dmac net.HardwareAddr
}

// checkRoutedFrame asserts what every packet the datapath sends back out
// has in common: TTL decremented, MACs of the hop, payload intact, valid
// checksums.
func checkRoutedFrame(t *testing.T, in, out []byte, via hop) decoded {
	t.Helper()
	d := decode(t, out)
	if got, want := d.ip.TTL, in[ethLen+8]-1; got != want {
		t.Errorf("TTL %d, want %d", got, want)
	}
	if via.smac == nil {
		if !bytes.Equal(out[:12], in[:12]) {
			t.Errorf("MACs changed to %v -> %v", d.eth.SrcMAC, d.eth.DstMAC)
		}
	} else if !bytes.Equal(d.eth.SrcMAC, via.smac) || !bytes.Equal(d.eth.DstMAC, via.dmac) {
		t.Errorf("MACs %v -> %v, want %v -> %v", d.eth.SrcMAC, d.eth.DstMAC, via.smac, via.dmac)
	}
	if len(out) != len(in) || !bytes.Equal(d.payload(), decode(t, in).payload()) {
		t.Errorf("payload changed")
	}
	checkChecksums(t, out)
	return d
}

// checkRemoteForward asserts that out is f SNAT'd to natAddr and DNAT'd to
// the remote backend be, and that the flow's state is in place. It returns
// the SNAT port.
func checkRemoteForward(t *testing.T, h *harness, f frame, in, out []byte, svc uint32, be testBackend, natAddr string, via hop) uint16 {
	t.Helper()
	d := checkRoutedFrame(t, in, out, via)
	nat := netip.MustParseAddr(natAddr)
	port := d.src().Port()
	cfg := h.config()
	if d.src().Addr() != nat || port < cfg.SnatPortMin || port > cfg.SnatPortMax || d.dst() != be.addrPort() {
		t.Errorf("forwarded %v -> %v, want %v:[%d-%d] -> %v", d.src(), d.dst(), nat, cfg.SnatPortMin, cfg.SnatPortMax, be.addrPort())
	}
	ct, ok := h.ct(f)
	if !ok {
		t.Fatalf("no conntrack entry for %v -> %v", f.src, f.dst)
	}
	if ct.SvcId != svc || ct.BackendId != be.id || ct.Flags&ctFlagRemote == 0 || ct.NatAddr != addrToBE(nat) || ct.NatPort != portToBE(port) {
		t.Errorf("conntrack entry %+v, want service %d backend %d remote via %v:%d", ct, svc, be.id, nat, port)
	}
	key := tupleToBPF(Tuple{Src: be.addrPort(), Dst: netip.AddrPortFrom(nat, port), Proto: f.proto})
	rn, ok := h.revNAT(key)
	if !ok {
		t.Fatalf("no reverse NAT entry for the reply %v -> %v:%d", be.addrPort(), nat, port)
	}
	want := datapathRevNatEntry{
		LastSeenNs:   rn.LastSeenNs,
		ClientAddr:   addrToBE(f.src.Addr()),
		FrontendAddr: addrToBE(f.dst.Addr()),
		ClientPort:   portToBE(f.src.Port()),
		FrontendPort: portToBE(f.dst.Port()),
		Flags:        rn.Flags | ctFlagRemote,
		TsOff:        ct.TsOff,
	}
	if rn != want {
		t.Errorf("reverse NAT entry %+v, want %+v", rn, want)
	}
	return port
}

// remoteReply is what backend be sends to the node's SNAT address and port.
func remoteReply(f frame, be testBackend, natAddr string, port uint16, flags uint8) frame {
	r := f
	r.src = be.addrPort()
	r.dst = netip.AddrPortFrom(netip.MustParseAddr(natAddr), port)
	r.flags = flags
	r.srcMAC, r.dstMAC = node2MAC, nodeMAC
	r.payload = []byte("reply")
	return r
}

// snatPort is the port a flow gets first from an empty SNAT table.
func snatPort(f frame, cfg datapathDpConfig) uint16 {
	n := uint32(cfg.SnatPortMax) - uint32(cfg.SnatPortMin) + 1
	return cfg.SnatPortMin + uint16(flowHash(f.tuple(), cfg.HashSeed)%n)
}

func TestRemoteBackend(t *testing.T) {
	env := newFibEnv(t)
	for _, k := range []hook{hookXDP, hookTCIngress} {
		t.Run(k.String(), func(t *testing.T) {
			toNode2 := hop{smac: env.mac0, dmac: node2MAC}
			toClient := hop{smac: env.mac0, dmac: routerMAC}

			t.Run("tcp", func(t *testing.T) {
				h := remoteHarness(t, env)
				syn := tcpFrame(clientAP, feRemote, tcpSYN)
				in := syn.bytes(t)
				res := h.expect(k, in, forwardVerdict(k, true), ReasonFwdRemote)
				port := checkRemoteForward(t, h, syn, in, res.pkt, svcRemote, beRemote, nodeIP, toNode2)
				if want := snatPort(syn, h.config()); port != want {
					t.Errorf("SNAT port %d, want %d (first probe of the flow hash)", port, want)
				}

				ack := tcpFrame(clientAP, feRemote, tcpACK)
				in = ack.bytes(t)
				res = h.expect(k, in, forwardVerdict(k, true), ReasonFwdRemote)
				if p := checkRemoteForward(t, h, ack, in, res.pkt, svcRemote, beRemote, nodeIP, toNode2); p != port {
					t.Errorf("established flow moved from SNAT port %d to %d", port, p)
				}

				reply := remoteReply(syn, beRemote, nodeIP, port, tcpSYN|tcpACK)
				in = reply.bytes(t)
				res = h.expect(k, in, forwardVerdict(k, true), ReasonReplyRemote)
				d := checkRoutedFrame(t, in, res.pkt, toClient)
				if d.src() != syn.dst || d.dst() != syn.src {
					t.Errorf("reply %v -> %v, want %v -> %v", d.src(), d.dst(), syn.dst, syn.src)
				}

				// A remote reply is none of tc_egress's business.
				h.expect(hookTCEgress, in, VerdictPass, ReasonPassNotTracked)
			})

			t.Run("udp", func(t *testing.T) {
				h := remoteHarness(t, env)
				for i, noCsum := range []bool{false, true} {
					f := udpFrame(clientAP, feRemoteUDP)
					f.src = netip.AddrPortFrom(f.src.Addr(), uint16(40000+i))
					f.zeroUDPChecksum = noCsum
					in := f.bytes(t)
					res := h.expect(k, in, forwardVerdict(k, true), ReasonFwdRemote)
					port := checkRemoteForward(t, h, f, in, res.pkt, svcRemoteUDP, beRemoteUDP, nodeIP, toNode2)
					if got := checkChecksums(t, res.pkt); got != noCsum {
						t.Errorf("forward: UDP checksum none=%v, want %v", got, noCsum)
					}

					reply := remoteReply(f, beRemoteUDP, nodeIP, port, 0)
					in = reply.bytes(t)
					res = h.expect(k, in, forwardVerdict(k, true), ReasonReplyRemote)
					d := checkRoutedFrame(t, in, res.pkt, toClient)
					if d.src() != f.dst || d.dst() != f.src {
						t.Errorf("reply %v -> %v, want %v -> %v", d.src(), d.dst(), f.dst, f.src)
					}
					if got := checkChecksums(t, res.pkt); got != noCsum {
						t.Errorf("reply: UDP checksum none=%v, want %v", got, noCsum)
					}
				}
			})

			t.Run("ip options", func(t *testing.T) {
				h := remoteHarness(t, env)
				syn := tcpFrame(clientAP, feRemote, tcpSYN)
				syn.options = ipOptions(15)
				in := syn.bytes(t)
				res := h.expect(k, in, forwardVerdict(k, true), ReasonFwdRemote)
				checkRemoteForward(t, h, syn, in, res.pkt, svcRemote, beRemote, nodeIP, toNode2)
				if opts := in[ethLen+20 : ethLen+60]; !bytes.Equal(res.pkt[ethLen+20:ethLen+60], opts) {
					t.Errorf("options changed: % x, want % x", res.pkt[ethLen+20:ethLen+60], opts)
				}
			})

			t.Run("backend behind another device", func(t *testing.T) {
				h := remoteHarness(t, env)
				syn := tcpFrame(clientAP, feOther, tcpSYN)
				in := syn.bytes(t)
				res := h.expect(k, in, forwardVerdict(k, false), ReasonFwdRemote)
				checkRemoteForward(t, h, syn, in, res.pkt, svcOther, beOther, "10.1.0.1", hop{smac: env.mac1, dmac: node3MAC})
			})

			t.Run("egress device without address", func(t *testing.T) {
				h := remoteHarness(t, env)
				if err := h.objs.Devices.Delete(env.ext1); err != nil {
					t.Fatal(err)
				}
				h.expect(k, tcpFrame(clientAP, feOther, tcpSYN).bytes(t), VerdictDrop, ReasonDropNoSNATAddr)
				if n := h.count(h.objs.Conntrack) + h.count(h.objs.ReverseNat); n != 0 {
					t.Errorf("%d flow entries left by a dropped packet", n)
				}
			})

			t.Run("ttl 1", func(t *testing.T) {
				h := remoteHarness(t, env)
				syn := tcpFrame(clientAP, feRemote, tcpSYN)
				syn.ttl = 2
				in := syn.bytes(t)
				res := h.expect(k, in, forwardVerdict(k, true), ReasonFwdRemote)
				port := checkRemoteForward(t, h, syn, in, res.pkt, svcRemote, beRemote, nodeIP, toNode2)

				ack := tcpFrame(clientAP, feRemote, tcpACK)
				ack.ttl = 1
				h.expect(k, ack.bytes(t), VerdictDrop, ReasonDropTTLExceeded)

				reply := remoteReply(syn, beRemote, nodeIP, port, tcpACK)
				reply.ttl = 1
				h.expect(k, reply.bytes(t), VerdictDrop, ReasonDropTTLExceeded)
			})
		})
	}

	// GRO on the ingress device hands tc_ingress TCP segments merged into
	// one skb larger than the egress MTU; the egress device segments them
	// again, so they are forwardable.
	t.Run("gro skb", func(t *testing.T) {
		h := remoteHarness(t, env)
		syn := tcpFrame(clientAP, feRemote, tcpSYN)
		h.expect(hookTCIngress, syn.bytes(t), VerdictRedirect, ReasonFwdRemote)
		big := tcpFrame(clientAP, feRemote, tcpACK|tcpPSH)
		big.payload = bytes.Repeat([]byte("0123456789abcdef"), 2*1448/16+1)
		in := big.bytes(t)
		h.gsoSize, h.gsoSegs = 1448, 3
		res := h.expect(hookTCIngress, in, VerdictRedirect, ReasonFwdRemote)
		if res.ret == tcActRedirect {
			checkRemoteForward(t, h, big, in, res.pkt, svcRemote, beRemote, nodeIP, hop{smac: env.mac0, dmac: node2MAC})
		}
	})

	// Without a neighbour entry XDP leaves the packet, unmarked and
	// untouched, to tc_ingress, which forwards it and lets the kernel
	// resolve the next hop.
	t.Run("no neighbour", func(t *testing.T) {
		h := remoteHarness(t, env)
		for _, flags := range []uint8{tcpSYN, tcpACK} {
			f := tcpFrame(clientAP, feNoNeigh, flags)
			in := f.bytes(t)
			res := h.expect(hookXDP, in, VerdictPass, ReasonPassFIB)
			if !bytes.Equal(res.pkt, in) || res.done() {
				t.Errorf("xdp changed or marked the packet: % x (meta % x)", res.pkt, res.meta)
			}
			if flags == tcpSYN {
				if _, ok := h.ct(f); ok {
					t.Errorf("xdp created conntrack state for a packet it passed")
				}
			}
			res = h.expect(hookTCIngress, in, VerdictRedirect, ReasonFwdRemote)
			checkRemoteForward(t, h, f, in, res.pkt, svcNoNeigh, beNoNeigh, nodeIP, hop{})
		}
	})
}

// TestSNATExhaustion uses a SNAT range of one port.
func TestSNATExhaustion(t *testing.T) {
	env := newFibEnv(t)

	for _, k := range []hook{hookXDP, hookTCIngress} {
		for _, proto := range []Proto{TCP, UDP} {
			t.Run(k.String()+"/"+proto.String(), func(t *testing.T) {
				h := onePortHarness(t, env)

				fe, be, svc := feRemote, beRemote, uint32(svcRemote)
				newFlow := func(client string) frame { return tcpFrame(client, fe, tcpSYN) }
				if proto == UDP {
					fe, be, svc = feRemoteUDP, beRemoteUDP, svcRemoteUDP
					newFlow = func(client string) frame { return udpFrame(client, fe) }
				}
				verdict := forwardVerdict(k, true)
				hop := hop{smac: env.mac0, dmac: node2MAC}
				a := newFlow("192.0.2.10:40000")
				b := newFlow("192.0.2.11:40000")

				in := a.bytes(t)
				res := h.expect(k, in, verdict, ReasonFwdRemote)
				if p := checkRemoteForward(t, h, a, in, res.pkt, svc, be, nodeIP, hop); p != 61000 {
					t.Fatalf("SNAT port %d, want 61000", p)
				}

				// The only port is held by a live flow of another client.
				h.expect(k, b.bytes(t), VerdictDrop, ReasonDropSNATExhausted)
				if _, ok := h.ct(b); ok {
					t.Errorf("conntrack entry for a flow that got no SNAT port")
				}

				// A flow whose state was evicted gets its own port back.
				if err := h.objs.Conntrack.Delete(a.tuple()); err != nil {
					t.Fatal(err)
				}
				in = a.bytes(t)
				res = h.expect(k, in, verdict, ReasonFwdRemote)
				checkRemoteForward(t, h, a, in, res.pkt, svc, be, nodeIP, hop)

				// Once a's reverse NAT entry has expired, b takes the port
				// over: a UDP flow idle for longer than 60s, a TCP flow
				// closed with FINs longer ago than the backend's TIME_WAIT
				// (SNAT_TIME_WAIT_NS, 65s).
				key := tupleToBPF(Tuple{Src: be.addrPort(), Dst: netip.MustParseAddrPort(nodeIP + ":61000"), Proto: proto})
				rn, ok := h.revNAT(key)
				if !ok {
					t.Fatal("no reverse NAT entry for the SNAT port")
				}
				rn.LastSeenNs = idleFor(t, 61*time.Second)
				if proto == TCP {
					rn.Flags |= ctFlagSeenFIN
					rn.LastSeenNs = idleFor(t, 66*time.Second)
				}
				if err := h.objs.ReverseNat.Update(key, rn, ebpf.UpdateExist); err != nil {
					t.Fatal(err)
				}
				in = b.bytes(t)
				res = h.expect(k, in, verdict, ReasonFwdRemote)
				checkRemoteForward(t, h, b, in, res.pkt, svc, be, nodeIP, hop)
			})
		}
	}
}
