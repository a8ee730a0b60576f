package loader

import (
	"bytes"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

func (h *harness) setCapture(snaplen uint16) {
	cfg := h.config()
	cfg.Flags &^= cfgFlagTracePkt
	if snaplen > 0 {
		cfg.Flags |= cfgFlagTracePkt
	}
	cfg.Snaplen = snaplen
	h.setConfig(cfg)
}

// TestMaxSnaplen keeps MaxSnaplen equal to CAPTURE_MAX, which sizes the
// datapath's capture buffer: a trace_packet and room for both copies.
func TestMaxSnaplen(t *testing.T) {
	spec, err := loadDatapath()
	if err != nil {
		t.Fatal(err)
	}
	m, ok := spec.Maps["capture_scratch"]
	if !ok {
		t.Fatal("no capture_scratch map")
	}
	if got, want := int(m.ValueSize), tracePacketSize+2*MaxSnaplen; got != want {
		t.Errorf("capture buffer of %d bytes, want %d: MaxSnaplen and CAPTURE_MAX differ", got, want)
	}
}

// TestTracePacket checks that traced events carry the packet as it came in
// and, when the hook rewrote it, as it left, cut to the snap length, and
// only while capture is on.
func TestTracePacket(t *testing.T) {
	h := newHarness(t)
	h.localServices()
	rd := h.events()
	h.setTracing(true)
	syn := tcpFrame(clientAP, feLocal, tcpSYN)
	pkt := syn.bytes(t)
	reply := replyOf(syn, beLocal.addrPort(), tcpSYN|tcpACK).bytes(t)
	drop := tcpFrame(clientAP, feEmpty, tcpSYN).bytes(t)

	next := func(name string) Event {
		t.Helper()
		ev, ok := nextEvent(t, rd, time.Second)
		if !ok {
			t.Fatalf("%s: no event", name)
		}
		return ev
	}

	// Tracing alone: the event has no bytes.
	h.expect(hookXDP, pkt, VerdictPass, ReasonFwdLocal)
	if ev := next("capture off"); ev.Packet != nil {
		t.Errorf("capture off: event carries %d bytes", len(ev.Packet.In))
	}

	tests := []struct {
		name    string
		snaplen uint16
		hook    hook
		pkt     []byte
		verdict Verdict
		reason  Reason
		// rewritten: the hook changed the packet, so the event carries
		// the output too.
		rewritten bool
	}{
		{"xdp dnat to a local backend", MaxSnaplen, hookXDP, pkt, VerdictPass, ReasonFwdLocal, true},
		{"cut to the snap length", 20, hookXDP, pkt, VerdictPass, ReasonFwdLocal, true},
		{"longer than the datapath copies", 60000, hookXDP, pkt, VerdictPass, ReasonFwdLocal, true},
		{"tc drop leaves the packet alone", MaxSnaplen, hookTCIngress, drop, VerdictDrop, ReasonDropNoBackend, false},
		{"tc egress reply", 40, hookTCEgress, reply, VerdictPass, ReasonReplyLocal, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.setCapture(tt.snaplen)
			res := h.expect(tt.hook, tt.pkt, tt.verdict, tt.reason)
			ev := next(tt.name)
			c := ev.Packet
			if c == nil {
				t.Fatal("capture on: event without bytes")
			}
			n := min(int(tt.snaplen), MaxSnaplen)
			wantIn := tt.pkt[:min(n, len(tt.pkt))]
			if !bytes.Equal(c.In, wantIn) {
				t.Errorf("in:\n got % x\nwant % x", c.In, wantIn)
			}
			if ev.Length != uint32(len(tt.pkt)) {
				t.Errorf("length %d, want %d", ev.Length, len(tt.pkt))
			}
			if !tt.rewritten {
				if c.Out != nil {
					t.Errorf("out: % x, want none for an unchanged packet", c.Out)
				}
				return
			}
			if bytes.Equal(res.pkt, tt.pkt) {
				t.Fatal("the hook did not rewrite the packet")
			}
			wantOut := res.pkt[:min(n, len(res.pkt))]
			if !bytes.Equal(c.Out, wantOut) {
				t.Errorf("out:\n got % x\nwant % x", c.Out, wantOut)
			}
			if c.OutLen != uint32(len(res.pkt)) {
				t.Errorf("out length %d, want %d", c.OutLen, len(res.pkt))
			}
		})
	}

	// Capture off again: no bytes.
	h.setCapture(0)
	h.expect(hookXDP, pkt, VerdictPass, ReasonFwdLocal)
	if ev := next("capture off again"); ev.Packet != nil {
		t.Errorf("capture switched off: event carries %d bytes", len(ev.Packet.In))
	}
	// Capture on, tracing off: nothing at all.
	h.setCapture(MaxSnaplen)
	h.setTracing(false)
	h.expect(hookXDP, pkt, VerdictPass, ReasonFwdLocal)
	if ev, ok := nextEvent(t, rd, 20*time.Millisecond); ok {
		t.Errorf("event with tracing off: %+v", ev)
	}
}

// TestDecodeDatapathRecord checks that malformed packet records are
// refused rather than misread.
func TestDecodeDatapathRecord(t *testing.T) {
	hdr := make([]byte, tracePacketSize)
	withLens := func(in, out uint16, data int) []byte {
		b := bytes.Clone(hdr)
		off := traceEventSize + 4
		b[off], b[off+1] = byte(in), byte(in>>8)
		b[off+2], b[off+3] = byte(out), byte(out>>8)
		return append(b, make([]byte, data)...)
	}
	tests := []struct {
		name    string
		rec     []byte
		wantErr bool
		in, out int
	}{
		{"plain event", make([]byte, traceEventSize), false, -1, -1},
		{"short event", make([]byte, traceEventSize-1), true, 0, 0},
		{"in only", withLens(3, 0, 3), false, 3, 0},
		{"in and out", withLens(3, 2, 5), false, 3, 2},
		{"bytes missing", withLens(3, 2, 4), true, 0, 0},
		{"bytes left over", withLens(3, 0, 4), true, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := decodeDatapathRecord(tt.rec, newMonoClock())
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v, want error %t", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if tt.in < 0 {
				if ev.Packet != nil {
					t.Errorf("plain event decoded with bytes")
				}
				return
			}
			if ev.Packet == nil || len(ev.Packet.In) != tt.in || len(ev.Packet.Out) != tt.out {
				t.Errorf("packet %+v, want %d in and %d out", ev.Packet, tt.in, tt.out)
			}
		})
	}
}

// TestTraceLost checks that events the ring buffer has no room for are
// counted, and only those.
func TestTraceLost(t *testing.T) {
	h := newHarness(t)
	h.localServices()
	h.setTracing(true)
	h.setCapture(MaxSnaplen)
	rd := h.events()
	pkt := tcpFrame(clientAP, feLocal, tcpSYN).bytes(t)
	lost := func() uint64 {
		t.Helper()
		n, err := sumPerCPU(h.objs.TraceLost)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	before := lost()
	h.expect(hookXDP, pkt, VerdictPass, ReasonFwdLocal)
	if _, ok := nextEvent(t, rd, time.Second); !ok {
		t.Fatal("no event")
	}
	if n := lost() - before; n != 0 {
		t.Fatalf("%d events counted lost with room in the ring buffer", n)
	}

	// The test's ring buffer (64 KiB) holds a few hundred packet events.
	// A drop leaves the packet as it is, so every repetition is traced.
	const runs = 2000
	drop := tcpFrame(clientAP, feEmpty, tcpSYN).bytes(t)
	if _, err := h.objs.TcIngress.Run(&ebpf.RunOptions{Data: drop, Repeat: runs}); err != nil {
		t.Fatal(err)
	}
	n := lost() - before
	if n == 0 || n >= runs {
		t.Errorf("%d of %d events counted lost, want some but not all", n, runs)
	}
}
