package loader

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"

	"github.com/cilium/ebpf"
)

// DefaultMaglevTableSize is the default number of entries of a Maglev
// table: a prime about 100 times the backends a service usually has, so
// that backends' shares differ by about 1%.
const DefaultMaglevTableSize = 16381

// maglevBackend is one active backend of a Maglev service: its datapath id
// and the name every node knows it by.
type maglevBackend struct {
	id   uint32
	name string
}

// maglevTable fills a lookup table of m entries (m prime) as Maglev does
// (Eisenbud et al., NSDI 2016, section 3.4): every backend walks its own
// permutation of the positions, given by an offset and a skip hashed from
// its name, and the backends take turns claiming their next free
// position. Each backend gets about m/N entries, and removing one only
// moves its own entries and a few others. The table depends only on the
// backends' names, the size and the seed: every node builds the same one
// for the same backends, whatever their order or their local ids.
func maglevTable(backends []maglevBackend, m uint32, seed uint32) []uint32 {
	table := make([]uint32, m)
	if len(backends) == 0 || m == 0 {
		return table
	}
	bs := slices.Clone(backends)
	slices.SortFunc(bs, func(a, b maglevBackend) int { return cmp.Compare(a.name, b.name) })
	bs = slices.CompactFunc(bs, func(a, b maglevBackend) bool { return a.name == b.name })
	offset := make([]uint64, len(bs))
	skip := make([]uint64, len(bs))
	next := make([]uint64, len(bs))
	for i, b := range bs {
		offset[i] = maglevHash(seed, 'o', b.name) % uint64(m)
		skip[i] = maglevHash(seed, 's', b.name)%uint64(m-1) + 1
	}
	filled := make([]bool, m)
	for n := uint32(0); ; {
		for i := range bs {
			c := (offset[i] + next[i]*skip[i]) % uint64(m)
			for filled[c] {
				next[i]++
				c = (offset[i] + next[i]*skip[i]) % uint64(m)
			}
			table[c] = bs[i].id
			filled[c] = true
			next[i]++
			if n++; n == m {
				return table
			}
		}
	}
}

func maglevHash(seed uint32, salt byte, name string) uint64 {
	h := fnv.New64a()
	var b [5]byte
	binary.LittleEndian.PutUint32(b[:4], seed)
	b[4] = salt
	h.Write(b[:])
	h.Write([]byte(name))
	return h.Sum64()
}

// IsPrime tells whether n is prime; Maglev table sizes must be.
func IsPrime(n uint32) bool {
	if n < 2 {
		return false
	}
	for d := uint32(2); uint64(d)*uint64(d) <= uint64(n); d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

// maglevMaps holds the services' Maglev tables.
type maglevMaps interface {
	// Set makes table the Maglev table of service id, replacing any other
	// at once.
	Set(id uint32, table []uint32) error
	Delete(id uint32) error
	// IDs lists the services that have a table.
	IDs() ([]uint32, error)
}

// bpfMaglevMaps keeps each table in an inner array map of its own, created
// full and then swapped into the outer map, so lookups never see a half
// written table.
type bpfMaglevMaps struct {
	outer *ebpf.Map
	inner *ebpf.MapSpec
}

func (b bpfMaglevMaps) Set(id uint32, table []uint32) error {
	spec := b.inner.Copy()
	spec.Name = fmt.Sprintf("maglev_%d", id)
	m, err := ebpf.NewMap(spec)
	if err != nil {
		return fmt.Errorf("create maglev table: %w", err)
	}
	defer m.Close()
	keys := make([]uint32, len(table))
	for i := range keys {
		keys[i] = uint32(i)
	}
	if _, err := m.BatchUpdate(keys, table, nil); err != nil {
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return fmt.Errorf("fill maglev table: %w", err)
		}
		for i, v := range table {
			if err := m.Update(uint32(i), v, ebpf.UpdateAny); err != nil {
				return fmt.Errorf("fill maglev table: %w", err)
			}
		}
	}
	return b.outer.Update(id, m, ebpf.UpdateAny)
}

func (b bpfMaglevMaps) Delete(id uint32) error {
	if err := b.outer.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return err
	}
	return nil
}

func (b bpfMaglevMaps) IDs() ([]uint32, error) {
	var (
		ids   []uint32
		k     uint32
		inner uint32
	)
	it := b.outer.Iterate()
	for it.Next(&k, &inner) {
		ids = append(ids, k)
	}
	return ids, it.Err()
}
