package loader

import (
	"net/netip"
	"testing"
)

// TestStateMigrating: while an upgrade copies the previous agent's flows
// into this version's maps (CFG_F_MIGRATING), a packet of a flow the maps
// do not know may belong to one of them. Taken for a new flow it would get
// another SNAT port or TCP timestamp offset, and a reply passed to the host
// would be answered with a RST; it is dropped and counted instead, for TCP
// to retransmit once the flow is copied. What can start a flow (a SYN, UDP)
// is served meanwhile, and once the flag is cleared the same packets start
// flows again.
func TestStateMigrating(t *testing.T) {
	env := newFibEnv(t)
	setMigrating := func(h *harness, on bool) {
		cfg := h.config()
		cfg.Flags &^= cfgFlagMigrating
		if on {
			cfg.Flags |= cfgFlagMigrating
		}
		h.setConfig(cfg)
	}
	for _, k := range []hook{hookXDP, hookTCIngress} {
		t.Run(k.String(), func(t *testing.T) {
			h := remoteHarness(t, env)
			setMigrating(h, true)

			// Segments of flows the maps do not know: to a remote and to
			// a local backend, and a remote backend's reply to a SNAT port.
			ack := tcpFrame(clientAP, feRemote, tcpACK)
			h.expect(k, ack.bytes(t), VerdictDrop, ReasonDropStateMigrating)
			h.expect(k, tcpFrame(clientAP, feLocal, tcpACK|tcpPSH).bytes(t), VerdictDrop, ReasonDropStateMigrating)
			orphan := remoteReply(ack, beRemote, nodeIP, snatPort(ack, h.config()), tcpSYN|tcpACK)
			h.expect(k, orphan.bytes(t), VerdictDrop, ReasonDropStateMigrating)
			if n := h.count(h.objs.Conntrack) + h.count(h.objs.ReverseNat); n != 0 {
				t.Fatalf("%d flow entries made for packets of unknown flows", n)
			}

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
			// Outside the SNAT range, traffic to the node is not held.
			h.expect(k, tcpFrame(clientAP, nodeIP+":22", tcpACK).bytes(t), VerdictPass, ReasonPassNoFrontend)

			// Caught up: an unknown flow's segment starts a flow again.
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
		// A local backend's reply to a flow not copied yet.
		reply := replyOf(client, beLocal.addrPort(), tcpACK)
		h.expect(hookTCEgress, reply.bytes(t), VerdictDrop, ReasonDropStateMigrating)
		// The node's own connections and a pod's new connection go on.
		own := tcpFrame(nodeIP+":50000", "192.0.2.20:443", tcpACK|tcpPSH)
		h.expect(hookTCEgress, own.bytes(t), VerdictPass, ReasonPassNotTracked)
		h.expect(hookTCEgress, tcpFrame(beLocal.addr, "192.0.2.20:443", tcpSYN).bytes(t), VerdictPass, ReasonPassNotTracked)

		setMigrating(h, false)
		h.expect(hookTCEgress, reply.bytes(t), VerdictPass, ReasonPassNotTracked)
	})
}
