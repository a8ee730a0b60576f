package loader

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// SetTracing switches the per-decision events on or off. Off, the datapath
// only counts.
func (d *Datapath) SetTracing(on bool) error {
	return d.updateConfig(func(cfg *datapathDpConfig) {
		if on {
			cfg.Flags |= cfgFlagTrace
		} else {
			cfg.Flags &^= cfgFlagTrace
		}
	})
}

// updateConfig changes the datapath's config entry with fn, serialised
// with every other change of it.
func (d *Datapath) updateConfig(fn func(*datapathDpConfig)) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var cfg datapathDpConfig
	if err := d.objs.Config.Lookup(uint32(0), &cfg); err != nil {
		return fmt.Errorf("read datapath config: %w", err)
	}
	fn(&cfg)
	if err := d.objs.Config.Update(uint32(0), &cfg, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("write datapath config: %w", err)
	}
	return nil
}

// ReadEvents calls fn for every event on the ring buffer until ctx is done.
func (d *Datapath) ReadEvents(ctx context.Context, fn func(Event)) error {
	rd, err := ringbuf.NewReader(d.objs.Events)
	if err != nil {
		return fmt.Errorf("open events ring buffer: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { rd.Close() })
	defer stop()
	defer rd.Close()
	barrier := &eventSync{rd: rd}
	if !d.evSync.CompareAndSwap(nil, barrier) {
		return errors.New("events ring buffer already read")
	}
	defer func() {
		d.evSync.Store(nil)
		barrier.close()
	}()

	clock := newMonoClock()
	var kraw kdropKdropEvent
	for {
		rec, err := rd.Read()
		if err != nil {
			if errors.Is(err, ringbuf.ErrFlushed) {
				barrier.flushed()
				continue
			}
			if errors.Is(err, ringbuf.ErrClosed) || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read events: %w", err)
		}
		if len(rec.RawSample) == kdropEventSize {
			if err := binary.Read(bytes.NewReader(rec.RawSample), binary.NativeEndian, &kraw); err != nil {
				d.log.Warn("malformed kernel drop event", "len", len(rec.RawSample), "err", err)
				continue
			}
			fn(decodeKernelDrop(&kraw, clock, &kernel))
			continue
		}
		ev, err := decodeDatapathRecord(rec.RawSample, clock)
		if err != nil {
			d.log.Warn("malformed datapath event", "err", err)
			continue
		}
		fn(ev)
	}
}

func decodeEvent(raw *datapathTraceEvent, clock monoClock) Event {
	return Event{
		Time:      clock.wall(raw.TsNs),
		Ifindex:   raw.Ifindex,
		Stage:     Stage(raw.Stage),
		Verdict:   Verdict(raw.Verdict),
		Reason:    Reason(raw.Reason),
		ServiceID: raw.SvcId,
		BackendID: raw.BackendId,
		Orig:      tupleFromBPF(raw.Orig),
		Xlated:    tupleFromBPF(raw.Xlated),
		Length:    raw.PktLen,
	}
}

// monoClock converts bpf_ktime_get_ns (CLOCK_MONOTONIC) to wall time.
type monoClock struct {
	wallAtZero time.Time
}

func newMonoClock() monoClock {
	var ts unix.Timespec
	now := time.Now()
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return monoClock{wallAtZero: now}
	}
	return monoClock{wallAtZero: now.Add(-time.Duration(ts.Nano()))}
}

func (c monoClock) wall(monoNs uint64) time.Time {
	return c.wallAtZero.Add(time.Duration(monoNs))
}
