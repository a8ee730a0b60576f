package trace

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/nodegress/nodegress/loader"
	"github.com/nodegress/nodegress/loader/pcapng"
)

// DefaultSnaplen is `nodegress trace --pcap`'s snap length: all the
// datapath copies (tcpdump's 262144 would be cut to it anyway).
const DefaultSnaplen = loader.MaxSnaplen

// RunPcap is Run writing the packets of the matching events to out as
// pcapng, each with its decision as the packet's comment, up to
// f.Snaplen bytes each: the frame as it came into the hook that decided
// and, when that hook rewrote it, a second packet with the frame as it
// left. Events without bytes (socket-level decisions, kernel drops, events
// from before the datapath started copying) are not written; status lines
// (losses, and at the end how many events had no bytes) go to status.
func RunPcap(ctx context.Context, socketPath string, f Filter, out, status io.Writer) error {
	if f.Snaplen <= 0 {
		return fmt.Errorf("snap length %d: must be positive", f.Snaplen)
	}
	if err := f.Validate(); err != nil {
		return err
	}
	if f.Requests {
		return errors.New("--pcap and --requests: request records have no packets")
	}
	var ps *pcapSink
	err := run(ctx, socketPath, f, func() (sink, error) {
		w, err := pcapng.NewWriter(out, "nodegress trace")
		if err != nil {
			return nil, err
		}
		ps = &pcapSink{w: w, status: status, snaplen: f.Snaplen, ifaces: map[string]uint32{}}
		return ps, nil
	})
	if ps != nil && ps.withoutBytes > 0 {
		fmt.Fprintf(status, "%d matching events had no packet bytes and are not in the capture\n", ps.withoutBytes)
	}
	return err
}

// pcapSink writes events as pcapng packets.
type pcapSink struct {
	w       *pcapng.Writer
	status  io.Writer
	snaplen int
	// ifaces are the interface IDs written so far, by device name.
	ifaces       map[string]uint32
	withoutBytes uint64
	comment      []byte
}

func (p *pcapSink) event(r *Record, _ []byte) error {
	pkt := r.Packet
	if pkt == nil {
		p.withoutBytes++
		return nil
	}
	id, err := p.iface(r)
	if err != nil {
		return err
	}
	if err := p.write(id, r, pkt.In, r.Len, "received"); err != nil {
		return err
	}
	if pkt.Out == nil {
		return nil
	}
	return p.write(id, r, pkt.Out, pkt.OutLen, "sent")
}

func (p *pcapSink) write(id uint32, r *Record, data []byte, wire uint32, as string) error {
	data = data[:min(len(data), p.snaplen)]
	p.comment = appendComment(p.comment[:0], r, as)
	err := p.w.WritePacket(pcapng.Packet{
		Interface: id,
		Time:      r.Time,
		Data:      data,
		OrigLen:   max(wire, uint32(len(data))),
		Comment:   string(p.comment),
	})
	if err != nil {
		return fmt.Errorf("write pcap: %w", err)
	}
	return nil
}

// iface returns the pcapng interface of r's device, describing it first
// when it is new.
func (p *pcapSink) iface(r *Record) (uint32, error) {
	name := r.Device
	if name == "" {
		name = "ifindex" + strconv.FormatUint(uint64(r.Ifindex), 10)
	}
	if id, ok := p.ifaces[name]; ok {
		return id, nil
	}
	id, err := p.w.AddInterface(pcapng.Interface{Name: name, LinkType: pcapng.LinkTypeEthernet, Snaplen: uint32(p.snaplen)})
	if err != nil {
		return 0, fmt.Errorf("write pcap: %w", err)
	}
	p.ifaces[name] = id
	return id, nil
}

// request is never called: RunPcap refuses requests clients.
func (p *pcapSink) request([]byte) error { return nil }

func (p *pcapSink) lost(n uint64, where string, _ []byte) error {
	why := " (capture output too slow; narrow the filter)"
	if where == LostInDatapath {
		why = lostWhy(where)
	}
	if _, err := fmt.Fprintf(p.status, "lost %d events%s\n", n, why); err != nil {
		return fmt.Errorf("write trace status: %w", err)
	}
	return nil
}

// appendComment renders the decision on a packet as
//
//	STAGE VERDICT REASON PROTO SRC > DST [-> SRC' > DST'] [svc=NAME] [backend=NAME] (as received|as sent)
func appendComment(b []byte, r *Record, as string) []byte {
	b = append(b, r.Stage...)
	b = append(append(b, ' '), r.Verdict...)
	b = append(append(b, ' '), r.Reason...)
	b = append(append(b, ' '), r.Orig.Proto...)
	b = appendEnds(append(b, ' '), r.Orig)
	if x := r.Xlated; x != nil && *x != r.Orig {
		b = appendEnds(append(b, " -> "...), *x)
	}
	b = appendName(b, " svc=", r.Service, r.ServiceID)
	b = appendName(b, " backend=", r.Backend, r.BackendID)
	return append(append(b, " (as "...), as+")"...)
}
