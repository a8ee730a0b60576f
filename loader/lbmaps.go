package loader

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// serviceMap is one map the service bookkeeping writes: frontends, backend
// slots or backends. It is the only way the bookkeeping reaches the kernel,
// so that its logic runs on an in-memory fake in unprivileged tests.
type serviceMap[K, V comparable] interface {
	// Put writes keys[i] = vals[i] in order and returns how many it wrote,
	// also on error: those are in the map.
	Put(keys []K, vals []V) (int, error)
	// Delete deletes keys in order (a missing key is not an error) and
	// returns how many are gone, also on error.
	Delete(keys []K) (int, error)
	// All walks every entry until yield returns false.
	All(yield func(K, V) bool) error
}

// lbMaps are the service maps, as Cilium's LBMaps: the real ones or fakes.
type lbMaps struct {
	frontends serviceMap[datapathFrontendKey, datapathFrontendValue]
	slots     serviceMap[datapathBackendSlotKey, uint32]
	backends  serviceMap[uint32, datapathBackendValue]
	// members says which backends are active in which service, ranges
	// which clients restricted frontends accept.
	members serviceMap[datapathServiceBackendKey, uint32]
	ranges  serviceMap[datapathSourceRangeKey, uint8]
	maglev  maglevMaps
}

func bpfLBMaps(frontends, slots, backends, members, ranges *ebpf.Map) lbMaps {
	return lbMaps{
		frontends: bpfMap[datapathFrontendKey, datapathFrontendValue]{frontends},
		slots:     bpfMap[datapathBackendSlotKey, uint32]{slots},
		backends:  bpfMap[uint32, datapathBackendValue]{backends},
		members:   bpfMap[datapathServiceBackendKey, uint32]{members},
		ranges:    bpfMap[datapathSourceRangeKey, uint8]{ranges},
	}
}

// bpfMap is a serviceMap backed by a BPF hash map, written in batches where
// the kernel supports them.
type bpfMap[K, V comparable] struct{ m *ebpf.Map }

func (b bpfMap[K, V]) Put(keys []K, vals []V) (int, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	n, err := b.m.BatchUpdate(keys, vals, nil)
	if err == nil || !errors.Is(err, ebpf.ErrNotSupported) {
		return n, err
	}
	for i := range keys {
		if err := b.m.Update(keys[i], vals[i], ebpf.UpdateAny); err != nil {
			return i, err
		}
	}
	return len(keys), nil
}

func (b bpfMap[K, V]) Delete(keys []K) (int, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	n, err := b.m.BatchDelete(keys, nil)
	if err == nil {
		return n, nil
	}
	if !errors.Is(err, ebpf.ErrNotSupported) && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return n, err
	}
	// One by one: the batch stops at the first missing key.
	for i, k := range keys {
		if err := b.m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return i, err
		}
	}
	return len(keys), nil
}

func (b bpfMap[K, V]) All(yield func(K, V) bool) error {
	var (
		k K
		v V
	)
	it := b.m.Iterate()
	for it.Next(&k, &v) {
		if !yield(k, v) {
			return nil
		}
	}
	return it.Err()
}

// serviceMapContents is what the service maps hold.
type serviceMapContents struct {
	frontends map[datapathFrontendKey]datapathFrontendValue
	slots     map[datapathBackendSlotKey]uint32
	backends  map[uint32]datapathBackendValue
	members   map[datapathServiceBackendKey]uint32
	ranges    map[datapathSourceRangeKey]uint8
	maglev    []uint32 // services with a Maglev table
}

// readServiceMaps is the one walker over the service maps: agent start-up
// recovers its state with it, `nodegress maps` shows it, tests compare it.
func readServiceMaps(m lbMaps) (serviceMapContents, error) {
	c := serviceMapContents{
		frontends: map[datapathFrontendKey]datapathFrontendValue{},
		slots:     map[datapathBackendSlotKey]uint32{},
		backends:  map[uint32]datapathBackendValue{},
		members:   map[datapathServiceBackendKey]uint32{},
		ranges:    map[datapathSourceRangeKey]uint8{},
	}
	if err := m.frontends.All(func(k datapathFrontendKey, v datapathFrontendValue) bool { c.frontends[k] = v; return true }); err != nil {
		return c, fmt.Errorf("read frontends: %w", err)
	}
	if err := m.slots.All(func(k datapathBackendSlotKey, v uint32) bool { c.slots[k] = v; return true }); err != nil {
		return c, fmt.Errorf("read backend slots: %w", err)
	}
	if err := m.backends.All(func(k uint32, v datapathBackendValue) bool { c.backends[k] = v; return true }); err != nil {
		return c, fmt.Errorf("read backends: %w", err)
	}
	if err := m.members.All(func(k datapathServiceBackendKey, v uint32) bool { c.members[k] = v; return true }); err != nil {
		return c, fmt.Errorf("read service backends: %w", err)
	}
	if err := m.ranges.All(func(k datapathSourceRangeKey, v uint8) bool { c.ranges[k] = v; return true }); err != nil {
		return c, fmt.Errorf("read source ranges: %w", err)
	}
	if m.maglev != nil {
		ids, err := m.maglev.IDs()
		if err != nil {
			return c, fmt.Errorf("read maglev tables: %w", err)
		}
		c.maglev = ids
	}
	return c, nil
}
