package loader

import (
	"net"
	"net/netip"
	"testing"
)

// TestStateMigrating: while an upgrade copies the previous agent's flows
// into this version's maps (migrating_flows), a packet of a flow the maps
// do not know may belong to one of them. Taken for a new flow it would get
// another SNAT port or TCP timestamp offset, and a reply passed to the host
// would be answered with a RST; it is dropped and counted instead, for TCP
// to retransmit once the flow is copied. What can start a flow (a SYN,
// UDP), the host's own connections and listeners, routed traffic and what
// the datapath forwards itself go on; once the flag is cleared the same
// packets start flows again.
func TestStateMigrating(t *testing.T) {
	env := newFibEnv(t)
	setMigrating := func(h *harness, on bool) {
		t.Helper()
		var v uint32
		if on {
			v = 1
		}
		if err := h.objs.MigratingFlows.Set(v); err != nil {
			t.Fatal(err)
		}
	}
	// A host listener in the SNAT range: a packet to it is the host's.
	const hostPort = 61999
	var ln net.Listener
	if err := env.ns.Do(func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(netip.MustParseAddr(nodeIP), hostPort).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	for _, k := range []hook{hookXDP, hookTCIngress} {
		t.Run(k.String(), func(t *testing.T) {
			h := remoteHarness(t, env)
			setMigrating(h, true)

			// Segments of flows the maps do not know: to a remote and to
			// a local backend, and a remote backend's reply (the SYN-ACK
			// of a connection the old programs opened) to a SNAT port.
			ack := tcpFrame(clientAP, feRemote, tcpACK)
			h.expect(k, ack.bytes(t), VerdictDrop, ReasonDropStateMigrating)
			h.expect(k, tcpFrame(clientAP, feLocal, tcpACK|tcpPSH).bytes(t), VerdictDrop, ReasonDropStateMigrating)
			orphan := remoteReply(ack, beRemote, nodeIP, snatPort(ack, h.config()), tcpSYN|tcpACK)
			h.expect(k, orphan.bytes(t), VerdictDrop, ReasonDropStateMigrating)
			udpOrphan := remoteReply(udpFrame(clientAP, feRemoteUDP), beRemoteUDP, nodeIP, 62000, 0)
			h.expect(k, udpOrphan.bytes(t), VerdictDrop, ReasonDropStateMigrating)
			if n := h.count(h.objs.Conntrack) + h.count(h.objs.ReverseNat); n != 0 {
				t.Fatalf("%d flow entries made for packets of unknown flows", n)
			}

			// The host's listener in the SNAT range, a SNAT-range port of
			// an address that is not a SNAT address (routed on), and a
			// port outside the range are not held.
			h.expect(k, remoteReply(ack, beRemote, nodeIP, hostPort, tcpACK).bytes(t), VerdictPass, ReasonPassNoFrontend)
			h.expect(k, tcpFrame(clientAP, "10.244.1.5:62001", tcpACK).bytes(t), VerdictPass, ReasonPassNoFrontend)
			h.expect(k, tcpFrame(clientAP, nodeIP+":22", tcpACK).bytes(t), VerdictPass, ReasonPassNoFrontend)

			// New connections are served, and so is the rest of their flow.
			newFlow := netip.MustParseAddrPort("192.0.2.11:41000").String()
			syn := tcpFrame(newFlow, feRemote, tcpSYN)
			in := syn.bytes(t)
			res := h.expect(k, in, forwardVerdict(k, true), ReasonFwdRemote)
			port := checkRemoteForward(t, h, syn, in, res.pkt, svcRemote, beRemote, nodeIP, hop{smac: env.mac0, dmac: node2MAC})
			h.expect(k, remoteReply(syn, beRemote, nodeIP, port, tcpSYN|tcpACK).bytes(t), forwardVerdict(k, true), ReasonReplyRemote)
			h.expect(k, tcpFrame(newFlow, feRemote, tcpACK).bytes(t), forwardVerdict(k, true), ReasonFwdRemote)
			h.expect(k, tcpFrame(newFlow, feLocal, tcpSYN).bytes(t), VerdictPass, ReasonFwdLocal)
			h.expect(k, udpFrame(clientAP, feRemoteUDP).bytes(t), forwardVerdict(k, true), ReasonFwdRemote)

			// Caught up: an unknown flow's segment starts a flow again,
			// and a stray reply goes to the host.
			setMigrating(h, false)
			in = ack.bytes(t)
			res = h.expect(k, in, forwardVerdict(k, true), ReasonFwdRemote)
			checkRemoteForward(t, h, ack, in, res.pkt, svcRemote, beRemote, nodeIP, hop{smac: env.mac0, dmac: node2MAC})
			stray := remoteReply(ack, beRemote, nodeIP, testSNATMax, tcpACK)
			h.expect(k, stray.bytes(t), VerdictPass, ReasonPassNoFrontend)
		})
	}

	t.Run("tc egress", func(t *testing.T) {
		h := remoteHarness(t, env)
		setMigrating(h, true)
		client := tcpFrame(clientAP, feLocal, tcpACK)
		reply := replyOf(client, beLocal.addrPort(), tcpACK)
		// A local backend's reply (it came in from the pod's device) to
		// a flow not copied yet.
		h.ingressIfindex = 99
		h.expect(hookTCEgress, reply.bytes(t), VerdictDrop, ReasonDropStateMigrating)
		// A pod's new connection goes on.
		h.expect(hookTCEgress, tcpFrame(beLocal.addr, "192.0.2.20:443", tcpSYN).bytes(t), VerdictPass, ReasonPassNotTracked)
		// What the datapath forwarded from an external device (a remote
		// backend's reply from the frontend's address) goes on.
		h.ingressIfindex = env.ext0
		h.expect(hookTCEgress, replyOf(client, netip.MustParseAddrPort("10.96.0.10:80"), tcpACK).bytes(t), VerdictPass, ReasonPassNotTracked)
		// The node's own connections go on.
		h.ingressIfindex = 0
		h.expect(hookTCEgress, tcpFrame("10.0.0.7:50000", "192.0.2.20:443", tcpACK|tcpPSH).bytes(t), VerdictPass, ReasonPassNotTracked)

		setMigrating(h, false)
		h.ingressIfindex = 99
		h.expect(hookTCEgress, reply.bytes(t), VerdictPass, ReasonPassNotTracked)
	})
}
