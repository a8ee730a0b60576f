package loader

import (
	"errors"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
)

// fakeMap is an in-memory serviceMap. It refuses new keys beyond capacity
// (0: unlimited), as a full BPF hash map does.
type fakeMap[K, V comparable] struct {
	m        map[K]V
	capacity int
}

var errFakeMapFull = errors.New("fake map full")

func newFakeMap[K, V comparable]() *fakeMap[K, V] { return &fakeMap[K, V]{m: map[K]V{}} }

func (f *fakeMap[K, V]) Put(keys []K, vals []V) (int, error) {
	for i, k := range keys {
		if _, ok := f.m[k]; !ok && f.capacity > 0 && len(f.m) >= f.capacity {
			return i, errFakeMapFull
		}
		f.m[k] = vals[i]
	}
	return len(keys), nil
}

func (f *fakeMap[K, V]) Delete(keys []K) (int, error) {
	for _, k := range keys {
		delete(f.m, k)
	}
	return len(keys), nil
}

func (f *fakeMap[K, V]) All(yield func(K, V) bool) error {
	for k, v := range maps.Clone(f.m) {
		if !yield(k, v) {
			return nil
		}
	}
	return nil
}

// fakeLBMaps are the fakes behind an lbMaps.
type fakeLBMaps struct {
	frontends *fakeMap[datapathFrontendKey, datapathFrontendValue]
	slots     *fakeMap[datapathBackendSlotKey, uint32]
	backends  *fakeMap[uint32, datapathBackendValue]
	members   *fakeMap[datapathServiceBackendKey, uint32]
	ranges    *fakeMap[datapathSourceRangeKey, uint8]
	maglev    fakeMaglev
	// l7 records the last L7 steering the bookkeeping asked for.
	l7      map[uint32]string
	l7Addrs map[netip.Addr]bool
}

// newFakeDatapath is a Datapath whose service bookkeeping writes to
// in-memory maps: no privileges, no kernel.
func newFakeDatapath() (*Datapath, *fakeLBMaps) {
	return fakeDatapathOn(newFakeLBMaps())
}

func newFakeLBMaps() *fakeLBMaps {
	return &fakeLBMaps{
		frontends: newFakeMap[datapathFrontendKey, datapathFrontendValue](),
		slots:     newFakeMap[datapathBackendSlotKey, uint32](),
		backends:  newFakeMap[uint32, datapathBackendValue](),
		members:   newFakeMap[datapathServiceBackendKey, uint32](),
		ranges:    newFakeMap[datapathSourceRangeKey, uint8](),
		maglev:    fakeMaglev{},
	}
}

// fakeMaglev holds Maglev tables in memory.
type fakeMaglev map[uint32][]uint32

func (f fakeMaglev) Set(id uint32, table []uint32) error { f[id] = slices.Clone(table); return nil }
func (f fakeMaglev) Delete(id uint32) error              { delete(f, id); return nil }
func (f fakeMaglev) IDs() ([]uint32, error)              { return slices.Collect(maps.Keys(f)), nil }

// fakeDatapathOn starts a Datapath on maps that may hold an earlier run's
// entries, as Open does on pinned maps.
func fakeDatapathOn(f *fakeLBMaps) (*Datapath, *fakeLBMaps) {
	d := &Datapath{log: slog.New(slog.NewTextHandler(io.Discard, nil)), names: newNameTable(),
		cfg: Config{MaglevTableSize: 251, MaglevSeed: testMaglevSeed}}
	d.lb = lbMaps{frontends: f.frontends, slots: f.slots, backends: f.backends, members: f.members, ranges: f.ranges, maglev: f.maglev}
	d.syncL7 = func(l7 map[uint32]string, addrs map[netip.Addr]bool) []error {
		f.l7, f.l7Addrs = l7, addrs
		return nil
	}
	if err := d.recoverState(); err != nil {
		panic(err)
	}
	return d, f
}
