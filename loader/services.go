package loader

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
)

// Flags of datapathFrontendValue and datapathBackendValue, as FE_F_* and
// BE_F_* in bpf/lib/consts.h.
const (
	frontendFlagL7                = 1 << 0
	backendFlagLocal              = 1 << 0
	backendFlagTerminating        = 1 << 1
	maxBackendsPerService         = math.MaxUint16
	firstID                uint32 = 1
)

// programmedState mirrors what the service maps hold, so Apply writes only
// the difference.
type programmedState struct {
	frontends map[datapathFrontendKey]datapathFrontendValue
	slots     map[datapathBackendSlotKey]uint32
	backends  map[uint32]datapathBackendValue
}

func newProgrammedState() programmedState {
	return programmedState{
		frontends: map[datapathFrontendKey]datapathFrontendValue{},
		slots:     map[datapathBackendSlotKey]uint32{},
		backends:  map[uint32]datapathBackendValue{},
	}
}

type backendIdent struct {
	addr netip.Addr
	port uint16
}

// idAllocator hands out service and backend ids. Ids only grow: a conntrack
// entry that still names a deleted backend's id must never find another
// backend under it.
type idAllocator struct {
	next     uint32
	services map[string]uint32
	backends map[backendIdent]uint32
	// recovered maps frontends found pinned at start to their service id,
	// so services keep their ids across an agent restart.
	recovered map[datapathFrontendKey]uint32
}

func (a *idAllocator) fresh() uint32 {
	id := a.next
	a.next++
	return id
}

// nameTable resolves ids to names for traces; read from other goroutines.
type nameTable struct {
	mu       sync.RWMutex
	services map[uint32]string
	backends map[uint32]string
}

func newNameTable() nameTable {
	return nameTable{services: map[uint32]string{}, backends: map[uint32]string{}}
}

// ServiceName returns the name of the service with datapath id id.
func (d *Datapath) ServiceName(id uint32) string {
	d.names.mu.RLock()
	defer d.names.mu.RUnlock()
	return d.names.services[id]
}

// BackendName returns "addr:port" of the backend with datapath id id.
func (d *Datapath) BackendName(id uint32) string {
	d.names.mu.RLock()
	defer d.names.mu.RUnlock()
	return d.names.backends[id]
}

// recoverState reads what an earlier run left in the pinned maps, so the
// first Apply only writes differences and deletes what is no longer wanted.
func (d *Datapath) recoverState() error {
	st := newProgrammedState()
	ids := idAllocator{
		next:      firstID,
		services:  map[string]uint32{},
		backends:  map[backendIdent]uint32{},
		recovered: map[datapathFrontendKey]uint32{},
	}
	var (
		fk  datapathFrontendKey
		fv  datapathFrontendValue
		sk  datapathBackendSlotKey
		sv  uint32
		bk  uint32
		bv  datapathBackendValue
		max uint32
	)
	it := d.objs.Frontends.Iterate()
	for it.Next(&fk, &fv) {
		st.frontends[fk] = fv
		ids.recovered[fk] = fv.SvcId
		max = maxU32(max, fv.SvcId)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read pinned frontends: %w", err)
	}
	it = d.objs.BackendSlots.Iterate()
	for it.Next(&sk, &sv) {
		st.slots[sk] = sv
		max = maxU32(max, sk.SvcId)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read pinned backend slots: %w", err)
	}
	it = d.objs.Backends.Iterate()
	for it.Next(&bk, &bv) {
		st.backends[bk] = bv
		ids.backends[backendIdent{addrFromBE(bv.Addr), portFromBE(bv.Port)}] = bk
		max = maxU32(max, bk)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read pinned backends: %w", err)
	}
	ids.next = max + 1
	d.state, d.ids = st, ids
	if n := len(st.frontends); n > 0 {
		d.log.Info("recovered pinned datapath state", "frontends", n, "backends", len(st.backends))
	}
	return nil
}

func maxU32(a, b uint32) uint32 {
	if a > b {
		return a
	}
	return b
}

// Apply makes the datapath serve exactly services. Only entries that differ
// from what is programmed are written, in an order that never lets a
// frontend point at a missing slot or backend. Invalid services are skipped
// and reported in the returned error; the valid ones are applied.
func (d *Datapath) Apply(services []Service) error {
	d.mu.Lock()
	defer d.mu.Unlock()

	sorted := slices.Clone(services)
	slices.SortFunc(sorted, func(a, b Service) int { return strings.Compare(a.Name, b.Name) })

	want := newProgrammedState()
	l7 := map[uint32]string{}
	l7Addrs := map[netip.Addr]bool{}
	svcIDs := map[string]uint32{}
	backendIDs := map[backendIdent]uint32{}
	var problems []error
	for _, svc := range sorted {
		if err := validateService(svc); err != nil {
			problems = append(problems, err)
			continue
		}
		if _, dup := svcIDs[svc.Name]; dup {
			problems = append(problems, fmt.Errorf("service %s: listed twice", svc.Name))
			continue
		}
		id := d.serviceID(svc)
		svcIDs[svc.Name] = id

		var active []uint32
		for _, b := range svc.Backends {
			ident := backendIdent{b.Addr, b.Port}
			bid, ok := backendIDs[ident]
			if !ok {
				bid = d.backendID(ident)
				backendIDs[ident] = bid
			}
			val := datapathBackendValue{Addr: addrToBE(b.Addr), Port: portToBE(b.Port)}
			if b.Local {
				val.Flags |= backendFlagLocal
			}
			if b.Terminating {
				val.Flags |= backendFlagTerminating
			}
			// A backend shared by services is active if any of them says so.
			if prev, ok := want.backends[bid]; ok && prev.Flags&backendFlagTerminating == 0 {
				val.Flags &^= backendFlagTerminating
			}
			want.backends[bid] = val
			if !b.Terminating && !slices.Contains(active, bid) {
				active = append(active, bid)
			}
		}
		if len(active) > maxBackendsPerService {
			problems = append(problems, fmt.Errorf("service %s: %d active backends, only the first %d are used", svc.Name, len(active), maxBackendsPerService))
			active = active[:maxBackendsPerService]
		}
		for i, bid := range active {
			want.slots[datapathBackendSlotKey{SvcId: id, Slot: uint32(i + 1)}] = bid
		}
		val := datapathFrontendValue{SvcId: id, BackendCount: uint16(len(active))}
		if svc.L7 {
			val.Flags |= frontendFlagL7
			l7[id] = svc.ProxyListener
			for _, fe := range svc.Frontends {
				l7Addrs[fe.Addr] = true
			}
		}
		for _, fe := range svc.Frontends {
			key := frontendKeyOf(fe, svc.Proto)
			if prev, taken := want.frontends[key]; taken && prev.SvcId != id {
				problems = append(problems, fmt.Errorf("service %s: frontend %s/%s already belongs to %s", svc.Name, fe, svc.Proto, d.nameOfID(svcIDs, prev.SvcId)))
				continue
			}
			want.frontends[key] = val
		}
	}

	if err := d.write(want); err != nil {
		return errors.Join(append(problems, err)...)
	}
	d.ids.services = svcIDs
	d.ids.backends = backendIDs
	d.ids.recovered = nil
	d.updateNames(svcIDs, backendIDs)
	if err := d.syncProxySockets(l7); err != nil {
		problems = append(problems, err)
	}
	if err := d.syncLocalRoutes(l7Addrs); err != nil {
		problems = append(problems, err)
	}
	return errors.Join(problems...)
}

func (d *Datapath) nameOfID(svcIDs map[string]uint32, id uint32) string {
	for name, sid := range svcIDs {
		if sid == id {
			return name
		}
	}
	return fmt.Sprintf("service id %d", id)
}

func validateService(svc Service) error {
	if svc.Name == "" {
		return errors.New("service without a name")
	}
	if svc.Proto != TCP && svc.Proto != UDP {
		return fmt.Errorf("service %s: unsupported protocol %s", svc.Name, svc.Proto)
	}
	for _, fe := range svc.Frontends {
		if !fe.Addr.Is4() || fe.Port == 0 {
			return fmt.Errorf("service %s: invalid frontend %s (IPv4 address and non-zero port needed)", svc.Name, fe)
		}
	}
	for _, b := range svc.Backends {
		if !b.Addr.Is4() || b.Port == 0 {
			return fmt.Errorf("service %s: invalid backend %s (IPv4 address and non-zero port needed)", svc.Name, b)
		}
	}
	return nil
}

func frontendKeyOf(fe Frontend, proto Proto) datapathFrontendKey {
	return datapathFrontendKey{Addr: addrToBE(fe.Addr), Port: portToBE(fe.Port), Proto: uint8(proto)}
}

// serviceID keeps a service's id across updates and, right after a restart,
// takes over the id its frontends had in the pinned maps.
func (d *Datapath) serviceID(svc Service) uint32 {
	if id, ok := d.ids.services[svc.Name]; ok {
		return id
	}
	for _, fe := range svc.Frontends {
		key := frontendKeyOf(fe, svc.Proto)
		if id, ok := d.ids.recovered[key]; ok {
			// Claimed once: other frontends of that old id now map elsewhere.
			for k, v := range d.ids.recovered {
				if v == id {
					delete(d.ids.recovered, k)
				}
			}
			d.ids.services[svc.Name] = id
			return id
		}
	}
	id := d.ids.fresh()
	d.ids.services[svc.Name] = id
	return id
}

func (d *Datapath) backendID(ident backendIdent) uint32 {
	if id, ok := d.ids.backends[ident]; ok {
		return id
	}
	id := d.ids.fresh()
	d.ids.backends[ident] = id
	return id
}

func (d *Datapath) updateNames(svcIDs map[string]uint32, backendIDs map[backendIdent]uint32) {
	d.names.mu.Lock()
	defer d.names.mu.Unlock()
	// Names of removed ids stay: late events of closing flows still name them.
	for name, id := range svcIDs {
		d.names.services[id] = name
	}
	for ident, id := range backendIDs {
		d.names.backends[id] = netip.AddrPortFrom(ident.addr, ident.port).String()
	}
}

// write turns the programmed state into want: new and changed entries
// bottom-up (backends, slots, frontends), then removals top-down.
func (d *Datapath) write(want programmedState) error {
	have := d.state
	if err := upsertChanged(d.objs.Backends, have.backends, want.backends); err != nil {
		return fmt.Errorf("write backends: %w", err)
	}
	if err := upsertChanged(d.objs.BackendSlots, have.slots, want.slots); err != nil {
		return fmt.Errorf("write backend slots: %w", err)
	}
	if err := upsertChanged(d.objs.Frontends, have.frontends, want.frontends); err != nil {
		return fmt.Errorf("write frontends: %w", err)
	}
	if err := deleteMissing(d.objs.Frontends, have.frontends, want.frontends); err != nil {
		return fmt.Errorf("delete frontends: %w", err)
	}
	if err := deleteMissing(d.objs.BackendSlots, have.slots, want.slots); err != nil {
		return fmt.Errorf("delete backend slots: %w", err)
	}
	if err := deleteMissing(d.objs.Backends, have.backends, want.backends); err != nil {
		return fmt.Errorf("delete backends: %w", err)
	}
	d.state = want
	return nil
}

func upsertChanged[K, V comparable](m *ebpf.Map, have, want map[K]V) error {
	var keys []K
	var vals []V
	for k, v := range want {
		if old, ok := have[k]; !ok || old != v {
			keys = append(keys, k)
			vals = append(vals, v)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	if _, err := m.BatchUpdate(keys, vals, nil); err == nil {
		return nil
	} else if !errors.Is(err, ebpf.ErrNotSupported) {
		return err
	}
	for i := range keys {
		if err := m.Update(keys[i], vals[i], ebpf.UpdateAny); err != nil {
			return err
		}
	}
	return nil
}

func deleteMissing[K, V comparable](m *ebpf.Map, have, want map[K]V) error {
	var keys []K
	for k := range have {
		if _, ok := want[k]; !ok {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	if _, err := m.BatchDelete(keys, nil); err == nil {
		return nil
	} else if !errors.Is(err, ebpf.ErrNotSupported) && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return err
	}
	for _, k := range keys {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return err
		}
	}
	return nil
}
