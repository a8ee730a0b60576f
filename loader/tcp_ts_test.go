package loader

import (
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const ctFlagTS = uint8(datapathCtFlagsCT_F_TS)

// monotonicMs is the datapath's timestamp clock now: CLOCK_MONOTONIC in
// milliseconds, cut to 32 bits.
func monotonicMs(t *testing.T) uint32 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return uint32(ts.Nano() / int64(time.Millisecond))
}

// wantNodeClock fails t unless ts (a translated TSval) is within a second
// of the datapath's clock.
func wantNodeClock(t *testing.T, ts uint32) {
	t.Helper()
	if d := int32(monotonicMs(t) - ts); d < -1000 || d > 1000 {
		t.Errorf("translated TSval %d is %d ms from the node's clock", ts, d)
	}
}

// TestSNATTimestamps: a SNAT'd flow's TCP timestamps start at the node's
// clock (the client's plus the flow's offset) and the backend's echoes
// are translated back, on every segment that has them.
func TestSNATTimestamps(t *testing.T) {
	env := newFibEnv(t)
	toNode2 := hop{smac: env.mac0, dmac: node2MAC}
	toClient := hop{smac: env.mac0, dmac: routerMAC}
	for _, k := range []hook{hookXDP, hookTCIngress} {
		t.Run(k.String(), func(t *testing.T) {
			h := remoteHarness(t, env)
			syn := tcpFrame(clientAP, feRemote, tcpSYN)
			syn.ts = &tcpTimestamps{val: 1000}
			in := syn.bytes(t)
			res := h.expect(k, in, forwardVerdict(k, true), ReasonFwdRemote)
			port := checkRemoteForward(t, h, syn, in, res.pkt, svcRemote, beRemote, nodeIP, toNode2)
			ct, _ := h.ct(syn)
			if ct.Flags&ctFlagTS == 0 {
				t.Fatalf("conntrack entry %+v: timestamps not translated", ct)
			}
			got, ok := timestampsOf(decode(t, res.pkt))
			if !ok || got.val != 1000+ct.TsOff || got.ecr != 0 {
				t.Fatalf("SYN left with timestamps %+v (found %v), want TSval 1000%+d", got, ok, int32(ct.TsOff))
			}
			wantNodeClock(t, got.val)
			key := tupleToBPF(Tuple{Src: beRemote.addrPort(), Dst: netip.AddrPortFrom(netip.MustParseAddr(nodeIP), port), Proto: TCP})
			if rn, _ := h.revNAT(key); rn.TsOff != ct.TsOff || rn.Flags&ctFlagTS == 0 {
				t.Errorf("reverse NAT entry %+v, want the flow's offset %d", rn, ct.TsOff)
			}

			synAck := remoteReply(syn, beRemote, nodeIP, port, tcpSYN|tcpACK)
			synAck.ts = &tcpTimestamps{val: 5555, ecr: got.val}
			in = synAck.bytes(t)
			res = h.expect(k, in, forwardVerdict(k, true), ReasonReplyRemote)
			checkRoutedFrame(t, in, res.pkt, toClient)
			if back, _ := timestampsOf(decode(t, res.pkt)); back != (tcpTimestamps{val: 5555, ecr: 1000}) {
				t.Errorf("SYN-ACK reached the client with timestamps %+v, want TSval 5555 (the backend's), TSecr 1000 (the client's)", back)
			}

			ack := tcpFrame(clientAP, feRemote, tcpACK)
			ack.ts = &tcpTimestamps{val: 1010, ecr: 5555}
			in = ack.bytes(t)
			res = h.expect(k, in, forwardVerdict(k, true), ReasonFwdRemote)
			checkRoutedFrame(t, in, res.pkt, toNode2)
			if fwd, _ := timestampsOf(decode(t, res.pkt)); fwd != (tcpTimestamps{val: 1010 + ct.TsOff, ecr: 5555}) {
				t.Errorf("ACK left with timestamps %+v, want TSval %d, TSecr 5555 (the backend's own)", fwd, 1010+ct.TsOff)
			}

			// A segment without the option passes as it is.
			bare := tcpFrame(clientAP, feRemote, tcpACK)
			in = bare.bytes(t)
			res = h.expect(k, in, forwardVerdict(k, true), ReasonFwdRemote)
			checkRoutedFrame(t, in, res.pkt, toNode2)
		})
	}
}

// closeWithTimestamps runs a's connection through the datapath with TCP
// timestamps on every segment (ts false: none): SYN, SYN-ACK, the
// backend's FIN, and the client's FIN when clientFIN. It returns a's SNAT
// port.
func (h *harness) closeWithTimestamps(k hook, a frame, ts, clientFIN bool) uint16 {
	h.t.Helper()
	stamp := func(f frame, val, ecr uint32) frame {
		if ts {
			f.ts = &tcpTimestamps{val: val, ecr: ecr}
		}
		return f
	}
	port := h.forwardedPort(k, stamp(a, 7000, 0))
	h.expect(k, stamp(remoteReply(a, beRemote, nodeIP, port, tcpSYN|tcpACK), 100, 7000).bytes(h.t), forwardVerdict(k, true), ReasonReplyRemote)
	h.expect(k, stamp(remoteReply(a, beRemote, nodeIP, port, tcpFIN|tcpACK), 101, 7001).bytes(h.t), forwardVerdict(k, true), ReasonReplyRemote)
	if clientFIN {
		h.forwardedPort(k, stamp(tcpFrame(a.src.String(), a.dst.String(), tcpFIN|tcpACK), 7002, 101))
	}
	return port
}

// TestSNATPortReuseTimestamps: a port whose flow closed both ways goes to
// another client's flow within seconds when both flows' timestamps are
// translated (the backend's TIME_WAIT takes the newer SYN); without that,
// or while the old flow may still be closing, the port stays its own.
// Every case has a one-port range: a new flow takes that port or none.
func TestSNATPortReuseTimestamps(t *testing.T) {
	env := newFibEnv(t)
	tests := []struct {
		name         string
		oldTS, newTS bool
		clientFIN    bool
		idle         time.Duration
		taken        bool
	}{
		{name: "closed both ways, idle 3s", oldTS: true, newTS: true, clientFIN: true, idle: 3 * time.Second, taken: true},
		{name: "closed both ways, idle 500ms", oldTS: true, newTS: true, clientFIN: true, idle: 500 * time.Millisecond},
		{name: "only the backend closed", oldTS: true, newTS: true, idle: 3 * time.Second},
		{name: "old flow without timestamps", newTS: true, clientFIN: true, idle: 3 * time.Second},
		{name: "new flow without timestamps", oldTS: true, clientFIN: true, idle: 3 * time.Second},
	}
	for _, k := range []hook{hookXDP, hookTCIngress} {
		for _, tc := range tests {
			t.Run(k.String()+"/"+tc.name, func(t *testing.T) {
				h := onePortHarness(t, env)
				a := tcpFrame("192.0.2.10:40000", feRemote, tcpSYN)
				port := h.closeWithTimestamps(k, a, tc.oldTS, tc.clientFIN)
				key := tupleToBPF(Tuple{Src: beRemote.addrPort(), Dst: netip.AddrPortFrom(netip.MustParseAddr(nodeIP), port), Proto: TCP})
				h.lastSeen(key, idleFor(t, tc.idle))

				b := tcpFrame("192.0.2.11:40000", feRemote, tcpSYN)
				if tc.newTS {
					b.ts = &tcpTimestamps{val: 3}
				}
				if !tc.taken {
					h.expect(k, b.bytes(t), VerdictDrop, ReasonDropSNATExhausted)
					return
				}
				res := h.expect(k, b.bytes(t), forwardVerdict(k, true), ReasonFwdRemote)
				d := decode(t, res.pkt)
				if d.src().Port() != port {
					t.Fatalf("b left from port %d, want the only one, %d", d.src().Port(), port)
				}
				ts, _ := timestampsOf(d)
				wantNodeClock(t, ts.val)
			})
		}
	}
}
