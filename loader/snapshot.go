package loader

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"path/filepath"
	"slices"
	"time"

	"github.com/cilium/ebpf"
)

// FrontendEntry is one programmed frontend as read back from the maps.
type FrontendEntry struct {
	Frontend
	Proto        Proto
	ServiceID    uint32
	BackendCount int
	L7           bool
	// Internal frontends are looked up by the socket-level load balancer.
	Internal bool
	// The service's settings as the datapath reads them per frontend:
	// Frontend.Restricted is FE_F_SOURCE_RANGES.
	AffinityTimeout time.Duration
	NoBackendDrop   bool
	Maglev          bool
	DSR             bool
}

// frontendEntryOf is a frontend map entry as the datapath reads it.
func frontendEntryOf(k datapathFrontendKey, v datapathFrontendValue) FrontendEntry {
	e := FrontendEntry{
		Frontend: Frontend{
			Addr:       addrFromBE(k.Addr),
			Port:       portFromBE(k.Port),
			Restricted: v.Flags&frontendFlagSourceRanges != 0,
		},
		Proto:         Proto(k.Proto),
		ServiceID:     v.SvcId,
		BackendCount:  int(v.BackendCount),
		L7:            v.Flags&frontendFlagL7 != 0,
		Internal:      k.Scope == uint8(datapathFrontendScopeFE_SCOPE_SOCKET),
		NoBackendDrop: v.Flags&frontendFlagNoBackendDrop != 0,
		Maglev:        v.Flags&frontendFlagMaglev != 0,
		DSR:           v.Flags&frontendFlagDSR != 0,
	}
	if v.Flags&frontendFlagAffinity != 0 {
		e.AffinityTimeout = time.Duration(v.AffinityTimeoutS) * time.Second
	}
	return e
}

// backendEntryOf is a backend map entry as the datapath reads it.
func backendEntryOf(id uint32, v datapathBackendValue) BackendEntry {
	return BackendEntry{ID: id, Backend: Backend{
		Addr:        addrFromBE(v.Addr),
		Port:        portFromBE(v.Port),
		Local:       v.Flags&backendFlagLocal != 0,
		Terminating: v.Flags&backendFlagTerminating != 0,
	}}
}

// BackendEntry is one programmed backend as read back from the maps.
type BackendEntry struct {
	ID uint32
	Backend
}

// Snapshot is what the pinned maps hold, readable while no agent runs.
type Snapshot struct {
	Frontends []FrontendEntry
	// Slots maps a service id to its active backend ids, in slot order.
	Slots       map[uint32][]uint32
	Backends    []BackendEntry
	Conntrack   int
	ReverseNAT  int
	Stats       map[Reason]Counter
	Tracing     bool
	SNATPortMin uint16
	SNATPortMax uint16
	// Devices are the attached devices by ifindex.
	Devices map[uint32]DeviceState
}

// DeviceState is what the datapath knows of one attached device.
type DeviceState struct {
	// SNATAddr is the address remote flows leaving through it are SNAT'd to.
	SNATAddr netip.Addr
	// PartialChecksums is set on virtual devices: XDP there translates only
	// frames whose checksum it verified complete.
	PartialChecksums bool
}

// ReadPinned reads the maps pinned under bpffs by a running or stopped agent.
func ReadPinned(bpffs string) (*Snapshot, error) {
	if bpffs == "" {
		bpffs = DefaultBPFFS
	}
	open := func(name string) (*ebpf.Map, error) {
		m, err := ebpf.LoadPinnedMap(filepath.Join(mapsDir(bpffs), name), &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			return nil, fmt.Errorf("open pinned map %s (is an agent using %s?): %w", name, bpffs, err)
		}
		return m, nil
	}
	names := []string{"frontends", "backend_slots", "backends", "service_backends", "source_ranges", "conntrack", "reverse_nat", "stats", "config", "devices"}
	pinned := map[string]*ebpf.Map{}
	defer func() {
		for _, m := range pinned {
			m.Close()
		}
	}()
	for _, n := range names {
		m, err := open(n)
		if err != nil {
			return nil, err
		}
		pinned[n] = m
	}

	s := &Snapshot{Slots: map[uint32][]uint32{}, Devices: map[uint32]DeviceState{}}
	got, err := readServiceMaps(bpfLBMaps(pinned["frontends"], pinned["backend_slots"], pinned["backends"], pinned["service_backends"], pinned["source_ranges"]))
	if err != nil {
		return nil, err
	}
	for fk, fv := range got.frontends {
		s.Frontends = append(s.Frontends, frontendEntryOf(fk, fv))
	}
	slices.SortFunc(s.Frontends, compareFrontendEntries)
	keys := slices.SortedFunc(maps.Keys(got.slots), func(a, b datapathBackendSlotKey) int {
		return cmp.Or(cmp.Compare(a.SvcId, b.SvcId), cmp.Compare(a.Slot, b.Slot))
	})
	for _, k := range keys {
		s.Slots[k.SvcId] = append(s.Slots[k.SvcId], got.slots[k])
	}
	for bk, bv := range got.backends {
		s.Backends = append(s.Backends, backendEntryOf(bk, bv))
	}
	slices.SortFunc(s.Backends, func(a, b BackendEntry) int { return cmp.Compare(a.ID, b.ID) })

	if s.Conntrack, err = countEntries[datapathFlowTuple, datapathCtEntry](pinned["conntrack"]); err != nil {
		return nil, fmt.Errorf("read conntrack: %w", err)
	}
	if s.ReverseNAT, err = countEntries[datapathFlowTuple, datapathRevNatEntry](pinned["reverse_nat"]); err != nil {
		return nil, fmt.Errorf("read reverse nat: %w", err)
	}
	if s.Stats, err = readStats(pinned["stats"]); err != nil {
		return nil, err
	}
	var cfg datapathDpConfig
	if err := pinned["config"].Lookup(uint32(0), &cfg); err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	s.Tracing = cfg.Flags&cfgFlagTrace != 0
	s.SNATPortMin, s.SNATPortMax = cfg.SnatPortMin, cfg.SnatPortMax
	var (
		dk uint32
		dv datapathDeviceValue
	)
	it := pinned["devices"].Iterate()
	for it.Next(&dk, &dv) {
		s.Devices[dk] = DeviceState{SNATAddr: addrFromBE(dv.Addr), PartialChecksums: dv.Flags&devFlagPartialChecksums != 0}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read devices: %w", err)
	}
	return s, nil
}

func compareFrontendEntries(a, b FrontendEntry) int {
	return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Proto, b.Proto), compareBool(a.Internal, b.Internal))
}

func countEntries[K, V any](m *ebpf.Map) (int, error) {
	var (
		k K
		v V
		n int
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil && !errors.Is(err, ebpf.ErrIterationAborted) {
		return n, err
	}
	return n, nil
}

func compareBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}
