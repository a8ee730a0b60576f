package trace

import (
	"errors"
	"fmt"

	"github.com/nodegress/nodegress/loader"
)

// PacketSource is a Source that can copy packets' bytes into the events;
// the loader's Datapath implements it.
type PacketSource interface {
	// SetPacketCapture makes events carry up to snaplen bytes of their
	// packets; 0 switches the copying off.
	SetPacketCapture(snaplen int) error
}

// Packet is a traced packet's bytes as they travel to pcap clients (base64
// in JSON), from the Ethernet header on.
type Packet struct {
	// In is the frame as it came into the hook that decided, Out the
	// frame as that hook handed it on when it rewrote it (omitted when it
	// left unchanged). Record.Len is In's whole length, OutLen Out's.
	In     []byte `json:"in"`
	Out    []byte `json:"out,omitempty"`
	OutLen uint32 `json:"out_len,omitempty"`
}

func packetOf(c *loader.Captured) *Packet {
	if c == nil {
		return nil
	}
	return &Packet{In: c.In, Out: c.Out, OutLen: c.OutLen}
}

// captureLength is the snap length the datapath needs for clients cs: the
// largest any asks for, within what the datapath can copy.
func captureLength(cs []*client) int {
	n := 0
	for _, c := range cs {
		n = max(n, c.snaplen)
	}
	return min(n, loader.MaxSnaplen)
}

// setCapture brings the datapath's packet copying in line with what
// clients cs ask for; mu is held. The datapath copies packets only while
// at least one pcap client is connected.
func (s *Server) setCapture(cs []*client) error {
	want := captureLength(cs)
	if want == s.snaplen {
		return nil
	}
	ps, ok := s.src.(PacketSource)
	if !ok {
		return errors.New("packet capture: not available from this agent")
	}
	if err := ps.SetPacketCapture(want); err != nil {
		return fmt.Errorf("packet capture: %w", err)
	}
	s.snaplen = want
	s.log.Info("datapath packet capture", "snaplen", want)
	return nil
}

// resetCapture switches packet copying off: at start, where a previous
// agent may have died with pcap clients connected, and at the end.
func (s *Server) resetCapture() {
	if ps, ok := s.src.(PacketSource); ok {
		if err := ps.SetPacketCapture(0); err != nil {
			s.log.Warn("switch packet capture off", "err", err)
			return
		}
	}
	s.snaplen = 0
}
