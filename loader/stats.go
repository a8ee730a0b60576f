package loader

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// Counter is packets and bytes counted under one reason.
type Counter struct {
	Packets uint64
	Bytes   uint64
}

// Stats sums the per-CPU counters of every reason.
func (d *Datapath) Stats() (map[Reason]Counter, error) {
	return readStats(d.objs.Stats)
}

func readStats(m *ebpf.Map) (map[Reason]Counter, error) {
	out := map[Reason]Counter{}
	for _, r := range Reasons() {
		var perCPU []datapathReasonStats
		if err := m.Lookup(uint32(r), &perCPU); err != nil {
			return nil, fmt.Errorf("read stats of %s: %w", r, err)
		}
		var c Counter
		for _, s := range perCPU {
			c.Packets += s.Packets
			c.Bytes += s.Bytes
		}
		out[r] = c
	}
	return out, nil
}
