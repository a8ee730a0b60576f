package loader

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/cilium/ebpf"
)

// MaxSnaplen is the most bytes of a packet the datapath copies into an
// event, each way (CAPTURE_MAX in bpf/lib/consts.h): a constant there, so
// that the verifier can bound the copy.
const MaxSnaplen = 256

// Captured is a traced packet's bytes, from its Ethernet header, taken by
// the hook that decided on it while packet capture was on.
type Captured struct {
	// In is the frame as it came into the hook, up to the snap length;
	// InLen (the event's Length) is its whole length.
	In []byte
	// Out is the frame as the hook handed it on, when the hook rewrote it
	// (translated, encapsulated, answered); nil when it left unchanged.
	Out []byte
	// OutLen is the whole length of the frame as the hook left it.
	OutLen uint32
}

// Flag of datapathDpConfig, as CFG_F_TRACE_PKT in bpf/lib/consts.h.
const cfgFlagTracePkt = uint32(datapathConfigFlagsCFG_F_TRACE_PKT)

var (
	traceEventSize  = binary.Size(datapathTraceEvent{})
	tracePacketSize = binary.Size(datapathTracePacket{})
)

// SetPacketCapture makes traced events carry up to snaplen bytes of their
// packets (at most MaxSnaplen; larger values are cut to it), or, with
// snaplen 0, none. Capture only takes effect while tracing is on
// (SetTracing).
func (d *Datapath) SetPacketCapture(snaplen int) error {
	if snaplen < 0 {
		return fmt.Errorf("snap length %d: must not be negative", snaplen)
	}
	snaplen = min(snaplen, MaxSnaplen)
	return d.updateConfig(func(cfg *datapathDpConfig) {
		cfg.Snaplen = uint16(snaplen)
		if snaplen > 0 {
			cfg.Flags |= cfgFlagTracePkt
		} else {
			cfg.Flags &^= cfgFlagTracePkt
		}
	})
}

// TraceLost returns how many trace events found the ring buffer full since
// the datapath was loaded.
func (d *Datapath) TraceLost() (uint64, error) {
	return sumPerCPU(d.objs.TraceLost)
}

func sumPerCPU(m *ebpf.Map) (uint64, error) {
	var per []uint64
	if err := m.Lookup(uint32(0), &per); err != nil {
		return 0, fmt.Errorf("read %s: %w", m, err)
	}
	var n uint64
	for _, v := range per {
		n += v
	}
	return n, nil
}

// decodeDatapathRecord decodes a record of the datapath on the events
// ring buffer: a trace_event, or a trace_packet and its bytes.
func decodeDatapathRecord(b []byte, clock monoClock) (Event, error) {
	if len(b) < tracePacketSize {
		var raw datapathTraceEvent
		if err := binary.Read(bytes.NewReader(b), binary.NativeEndian, &raw); err != nil {
			return Event{}, fmt.Errorf("trace event of %d bytes: %w", len(b), err)
		}
		return decodeEvent(&raw, clock), nil
	}
	var raw datapathTracePacket
	if err := binary.Read(bytes.NewReader(b), binary.NativeEndian, &raw); err != nil {
		return Event{}, fmt.Errorf("packet event of %d bytes: %w", len(b), err)
	}
	data := b[tracePacketSize:]
	in, out := int(raw.InLen), int(raw.OutLen)
	if in+out != len(data) {
		return Event{}, fmt.Errorf("packet event of %d bytes: %d+%d bytes of packet announced, %d present",
			len(b), in, out, len(data))
	}
	ev := decodeEvent(&raw.Ev, clock)
	c := &Captured{In: bytes.Clone(data[:in]), OutLen: raw.OutPktLen}
	if out > 0 {
		c.Out = bytes.Clone(data[in:])
	}
	ev.Packet = c
	return ev, nil
}
