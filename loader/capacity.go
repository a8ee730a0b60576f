package loader

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// MapUsage is how full one of the datapath's maps is.
type MapUsage struct {
	Name     string
	Entries  int
	Capacity int
}

// MapUsage counts the entries of the maps that fill up with traffic or
// configuration. Counting walks the keys, so it costs one syscall per entry:
// call it at scrape frequency, not per packet.
func (d *Datapath) MapUsage() ([]MapUsage, error) {
	var out []MapUsage
	for _, m := range []struct {
		name string
		m    *ebpf.Map
	}{
		{"frontends", d.objs.Frontends},
		{"backends", d.objs.Backends},
		{"backend_slots", d.objs.BackendSlots},
		{"conntrack", d.objs.Conntrack},
		{"reverse_nat", d.objs.ReverseNat},
	} {
		n, err := countKeys(m.m)
		if err != nil {
			return nil, fmt.Errorf("count %s: %w", m.name, err)
		}
		out = append(out, MapUsage{Name: m.name, Entries: n, Capacity: int(m.m.MaxEntries())})
	}
	return out, nil
}

func countKeys(m *ebpf.Map) (int, error) {
	key := make([]byte, m.KeySize())
	var prev any
	n := 0
	for {
		err := m.NextKey(prev, key)
		if err != nil {
			if err == ebpf.ErrKeyNotExist {
				return n, nil
			}
			return n, err
		}
		n++
		prev = key
		if n > int(m.MaxEntries()) {
			// Entries deleted under us can restart the walk; stop there.
			return n, nil
		}
	}
}
