package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// The layout of every pinned map is carried by the map itself: the kernel
// keeps the BTF of its key and value types with it. When a new agent's
// object declares a map differently (a field added, moved or widened, a
// size changed), the pinned map cannot be reused as is; migrateMaps then
// builds the new map from the old one's entries, field by field by name,
// so that conntrack, SNAT, affinity and the service maps' ids survive an
// upgrade instead of being wiped.

// migratable maps are the ones whose entries carry state; per-CPU,
// map-in-map, ring buffer and socket maps are replaced empty.
func migratable(t ebpf.MapType) bool {
	switch t {
	case ebpf.Hash, ebpf.LRUHash, ebpf.Array, ebpf.LPMTrie:
		return true
	}
	return false
}

// migration is a pinned map being replaced: the old map stays open until
// the new programs run, so that entries the old ones wrote in between can
// be copied too (catchUp).
type migration struct {
	name     string
	old, new *ebpf.Map
	convert  func(k, v []byte) ([]byte, []byte, bool)
}

// migrateMaps replaces the pinned maps of dir whose definition differs from
// spec's, migrating their entries where it can. The returned migrations are
// finished with catchUp once the new programs are attached.
func (d *Datapath) migrateMaps(dir string, spec *ebpf.CollectionSpec) ([]*migration, error) {
	var out []*migration
	for name, ms := range spec.Maps {
		if ms.Pinning != ebpf.PinByName {
			continue
		}
		p := filepath.Join(dir, name)
		old, err := ebpf.LoadPinnedMap(p, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err == nil && ms.Compatible(old) == nil && sameLayout(old, ms) {
			old.Close()
			continue
		}
		var m *migration
		if err == nil {
			m, err = newMigration(name, old, ms)
			if err != nil {
				old.Close()
			}
		}
		if err != nil {
			d.log.Warn("pinned map does not match this version and cannot be migrated: replacing it empty", "map", name, "err", err)
		}
		if rmErr := os.Remove(p); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
			return out, fmt.Errorf("remove pinned map %s: %w", p, rmErr)
		}
		if m == nil {
			continue
		}
		n, err := m.copy(ebpf.UpdateAny)
		if err == nil {
			err = m.new.Pin(p)
		}
		if err != nil {
			m.close()
			return out, fmt.Errorf("migrate map %s: %w", name, err)
		}
		d.log.Info("migrated pinned map to this version's layout", "map", name, "entries", n)
		out = append(out, m)
	}
	return out, nil
}

// pinnedBTF is the BTF a pinned map was created with.
func pinnedBTF(m *ebpf.Map) (*ebpf.MapInfo, *btf.Spec, error) {
	info, err := m.Info()
	if err != nil {
		return nil, nil, fmt.Errorf("map info: %w", err)
	}
	id, ok := info.BTFID()
	if !ok {
		return info, nil, errors.New("pinned map has no BTF: its layout is unknown")
	}
	h, err := btf.NewHandleFromID(id)
	if err != nil {
		return info, nil, fmt.Errorf("pinned map BTF: %w", err)
	}
	defer h.Close()
	spec, err := h.Spec(nil)
	if err != nil {
		return info, nil, fmt.Errorf("pinned map BTF: %w", err)
	}
	return info, spec, nil
}

// sameLayout tells whether the pinned map's key and value types are laid
// out as ms's, member by member: sizes alone do not tell a reordered
// struct.
func sameLayout(m *ebpf.Map, ms *ebpf.MapSpec) bool {
	_, old, err := pinnedBTF(m)
	if err != nil {
		return true // nothing to compare with: trust the sizes
	}
	for _, t := range []btf.Type{ms.Key, ms.Value} {
		// Only structs have members to compare; the sizes of scalars (a
		// __u32 key) were compared by MapSpec.Compatible.
		want, ok := btf.UnderlyingType(t).(*btf.Struct)
		if !ok {
			continue
		}
		name := want.TypeName()
		if name == "" {
			continue
		}
		var st *btf.Struct
		if err := old.TypeByName(name, &st); err != nil {
			return false
		}
		if layoutOf(st) != layoutOf(t) {
			return false
		}
	}
	return true
}

// layoutOf describes a type's memory layout: every member's name, offset
// and size, recursively.
func layoutOf(t btf.Type) string {
	st, ok := btf.UnderlyingType(t).(*btf.Struct)
	if !ok {
		sz, _ := btf.Sizeof(t)
		return fmt.Sprint(sz)
	}
	out := fmt.Sprintf("%d{", st.Size)
	for _, m := range st.Members {
		out += fmt.Sprintf("%s@%d:%s,", m.Name, m.Offset, layoutOf(m.Type))
	}
	return out + "}"
}

func newMigration(name string, old *ebpf.Map, ms *ebpf.MapSpec) (*migration, error) {
	info, oldSpec, err := pinnedBTF(old)
	if err != nil {
		return nil, err
	}
	if info.Type != ms.Type || !migratable(ms.Type) {
		return nil, fmt.Errorf("map type %s, want %s", info.Type, ms.Type)
	}
	convKey, err := converter(oldSpec, ms.Key, int(info.KeySize))
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	convValue, err := converter(oldSpec, ms.Value, int(info.ValueSize))
	if err != nil {
		return nil, fmt.Errorf("value: %w", err)
	}
	fresh := ms.Copy()
	fresh.Pinning = ebpf.PinNone
	nm, err := ebpf.NewMap(fresh)
	if err != nil {
		return nil, fmt.Errorf("create: %w", err)
	}
	return &migration{name: name, old: old, new: nm, convert: func(k, v []byte) ([]byte, []byte, bool) {
		nk, ok := convKey(k)
		if !ok {
			return nil, nil, false
		}
		nv, ok := convValue(v)
		return nk, nv, ok
	}}, nil
}

// copy copies every entry of the old map into the new one.
func (m *migration) copy(flags ebpf.MapUpdateFlags) (int, error) {
	var (
		k, v []byte
		n    int
	)
	it := m.old.Iterate()
	for it.Next(&k, &v) {
		nk, nv, ok := m.convert(k, v)
		if !ok {
			continue
		}
		err := m.new.Update(nk, nv, flags)
		if errors.Is(err, ebpf.ErrKeyExist) {
			continue
		}
		if err != nil {
			return n, err
		}
		n++
	}
	return n, it.Err()
}

// catchUp copies what the old programs added to the old map while the
// new map was being built (never overwriting the new programs' entries),
// then lets the old map go.
func (m *migration) catchUp() (int, error) {
	defer m.close()
	if m.old.Type() == ebpf.Array {
		return 0, nil // every index exists in both: nothing is new
	}
	return m.copy(ebpf.UpdateNoExist)
}

func (m *migration) close() {
	m.old.Close()
	m.new.Close()
}

// converter returns a function turning an encoded value of the type named
// like want in old (size oldSize) into want's encoding: struct members are
// matched by name, recursively; a member only in want is zero, one only in
// old is dropped; scalars and arrays are copied when their sizes agree.
func converter(old *btf.Spec, want btf.Type, oldSize int) (func([]byte) ([]byte, bool), error) {
	if want == nil {
		return nil, errors.New("no type information in this version's object")
	}
	newSize, err := btf.Sizeof(want)
	if err != nil {
		return nil, err
	}
	var from btf.Type
	if name := btf.UnderlyingType(want).TypeName(); name != "" {
		var st *btf.Struct
		if err := old.TypeByName(name, &st); err == nil {
			from = st
		}
	}
	if from == nil {
		// Scalars and unnamed types: the same bytes if the size agrees.
		if oldSize != newSize {
			return nil, fmt.Errorf("size %d, want %d", oldSize, newSize)
		}
		return func(b []byte) ([]byte, bool) { return append([]byte(nil), b...), true }, nil
	}
	if sz, err := btf.Sizeof(from); err != nil || sz != oldSize {
		return nil, fmt.Errorf("old type %s does not match the map's size %d", from.TypeName(), oldSize)
	}
	return func(b []byte) ([]byte, bool) {
		out := make([]byte, newSize)
		convertInto(out, want, b, from)
		return out, true
	}, nil
}

func convertInto(dst []byte, want btf.Type, src []byte, have btf.Type) {
	ws, wok := btf.UnderlyingType(want).(*btf.Struct)
	hs, hok := btf.UnderlyingType(have).(*btf.Struct)
	if wok && hok {
		for _, wm := range ws.Members {
			for _, hm := range hs.Members {
				if hm.Name != wm.Name || wm.Name == "" || wm.BitfieldSize != 0 || hm.BitfieldSize != 0 {
					continue
				}
				wsz, err1 := btf.Sizeof(wm.Type)
				hsz, err2 := btf.Sizeof(hm.Type)
				wo, ho := int(wm.Offset.Bytes()), int(hm.Offset.Bytes())
				if err1 != nil || err2 != nil || wo+wsz > len(dst) || ho+hsz > len(src) {
					continue
				}
				convertInto(dst[wo:wo+wsz], wm.Type, src[ho:ho+hsz], hm.Type)
			}
		}
		return
	}
	if len(dst) == len(src) {
		copy(dst, src)
	}
}
