package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// programmedState is the one bookkeeping Apply and Update share: what the
// service maps hold (frontends, slots, backends, mirrored so that only
// differences are written), which service owns which of those entries, and
// the entries still to be written.
//
// Every map entry is derived from the owners: a frontend from the service
// holding it, a slot from its service's active backends, a backend from the
// services listing it (reference counted, since services share backends by
// address and port). A change marks the entries it may affect dirty; flush
// recomputes only those and writes the ones that differ from the mirror.
// Dirty marks survive a failed write, so the next call retries them.
type programmedState struct {
	frontends map[datapathFrontendKey]datapathFrontendValue
	slots     map[datapathBackendSlotKey]uint32
	backends  map[uint32]datapathBackendValue
	members   map[datapathServiceBackendKey]uint32
	ranges    map[datapathSourceRangeKey]uint8
	// maglev maps the services with a Maglev table to what it was built
	// from (backend names and ids), to rebuild it only when that changes.
	maglev map[uint32]string

	svcs    map[string]*svcRecord
	byID    map[uint32]*svcRecord
	feOwner map[datapathFrontendKey]string
	beRefs  map[uint32]*backendRefs
	// l7Addrs counts the L7 services using each frontend address; they
	// need local routes when no device has them.
	l7Addrs map[netip.Addr]int

	dirtyFE   map[datapathFrontendKey]struct{}
	dirtySlot map[datapathBackendSlotKey]struct{}
	dirtyBE   map[uint32]struct{}
	dirtyMem  map[datapathServiceBackendKey]struct{}
	dirtyRng  map[datapathSourceRangeKey]struct{}
	dirtyMgl  map[uint32]struct{}
	// sweep says the maps may hold entries no service owns (pinned by an
	// earlier run): the next Apply looks at every entry.
	sweep bool

	// ops counts map entries written or deleted, so tests can tell that a
	// change costs what it touches.
	ops int
}

func newProgrammedState() programmedState {
	return programmedState{
		frontends: map[datapathFrontendKey]datapathFrontendValue{},
		slots:     map[datapathBackendSlotKey]uint32{},
		backends:  map[uint32]datapathBackendValue{},
		members:   map[datapathServiceBackendKey]uint32{},
		ranges:    map[datapathSourceRangeKey]uint8{},
		maglev:    map[uint32]string{},
		svcs:      map[string]*svcRecord{},
		byID:      map[uint32]*svcRecord{},
		feOwner:   map[datapathFrontendKey]string{},
		beRefs:    map[uint32]*backendRefs{},
		l7Addrs:   map[netip.Addr]int{},
		dirtyFE:   map[datapathFrontendKey]struct{}{},
		dirtySlot: map[datapathBackendSlotKey]struct{}{},
		dirtyBE:   map[uint32]struct{}{},
		dirtyMem:  map[datapathServiceBackendKey]struct{}{},
		dirtyRng:  map[datapathSourceRangeKey]struct{}{},
		dirtyMgl:  map[uint32]struct{}{},
	}
}

// svcRecord is what one programmed service owns.
type svcRecord struct {
	svc       Service // as given, to tell whether Apply changes it
	name      string
	id        uint32
	frontends []datapathFrontendKey // those it holds
	feVal     datapathFrontendValue
	// restricted are its frontends that only accept clients in ranges.
	restricted map[datapathFrontendKey]bool
	ranges     []datapathSourceRangeKey
	maglev     bool
	slots      []uint32 // active backend ids; slot i+1 holds slots[i]
	backends   []backendRef
	l7         bool
	listener   string
	l7Addrs    []netip.Addr
}

type backendRef struct {
	id            uint32
	ident         backendIdent
	local, active bool
}

// backendRefs sums the services listing one backend: it is Local if any of
// them says so, and Terminating only when all of them do.
type backendRefs struct {
	ident                backendIdent
	refs, active, locals int
}

// ErrFrontendConflict is returned for a service that claims a frontend
// another service holds. Frontends belong to one service; the caller
// decides who gets a contested one (the controller does, by age), so the
// loader refuses the claim and programs nothing of that service.
var ErrFrontendConflict = errors.New("frontend belongs to another service")

// Apply makes the datapath serve exactly services. Only entries that differ
// from what is programmed are written, in an order that never lets a
// frontend point at a missing slot or backend. Invalid services, and
// services claiming a frontend another one holds, are skipped and reported
// in the returned error; the valid ones are applied.
//
// Apply also removes whatever else the maps hold (entries pinned by an
// earlier run), which makes it the way to start and to resynchronize.
func (d *Datapath) Apply(services []Service) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := &d.state
	if st.sweep {
		// Every programmed entry is looked at: those no service wants go.
		for k := range st.frontends {
			st.dirtyFE[k] = struct{}{}
		}
		for k := range st.slots {
			st.dirtySlot[k] = struct{}{}
		}
		for k := range st.backends {
			st.dirtyBE[k] = struct{}{}
		}
		for k := range st.members {
			st.dirtyMem[k] = struct{}{}
		}
		for k := range st.ranges {
			st.dirtyRng[k] = struct{}{}
		}
		for k := range st.maglev {
			st.dirtyMgl[k] = struct{}{}
		}
	}
	// Services equal to what is programmed keep their entries as they are,
	// and Apply costs what changed, like Update.
	var changed []Service
	var removed []string
	want := make(map[string]struct{}, len(services))
	for _, svc := range services {
		want[svc.Name] = struct{}{}
		if rec := st.svcs[svc.Name]; rec == nil || !sameService(rec.svc, svc) {
			changed = append(changed, svc)
		}
	}
	for name := range st.svcs {
		if _, ok := want[name]; !ok {
			removed = append(removed, name)
		}
	}
	problems, err := d.change(changed, removed, true)
	d.ids.recovered = nil
	if err != nil {
		return errors.Join(append(problems, err)...)
	}
	st.sweep = false
	return errors.Join(problems...)
}

func sameService(a, b Service) bool {
	return a.Name == b.Name && a.Proto == b.Proto && a.L7 == b.L7 && a.ProxyListener == b.ProxyListener && a.Internal == b.Internal &&
		a.AffinityTimeout == b.AffinityTimeout && a.NoBackendDrop == b.NoBackendDrop && a.Maglev == b.Maglev && a.DSR == b.DSR &&
		slices.Equal(a.Frontends, b.Frontends) && slices.Equal(a.Backends, b.Backends) &&
		slices.Equal(a.SourceRanges, b.SourceRanges)
}

// Update programs a change: the services in changed are added or replace
// the services of the same name, and the services named in removed go. The
// cost follows the size of the change: only the entries these services
// own, or owned, are computed and written, with the same ordering as Apply
// (new entries bottom-up, stale ones top-down). Services not named keep
// what they have. Invalid services, and services claiming a frontend
// another service holds (ErrFrontendConflict), are reported and whatever
// they had is removed, as Apply would.
func (d *Datapath) Update(changed []Service, removed []string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	problems, err := d.change(changed, removed, false)
	if err != nil {
		return errors.Join(append(problems, err)...)
	}
	return errors.Join(problems...)
}

// change releases the entries of removed and of the previous versions of
// changed, claims those of changed in name order, and writes the dirty
// entries. full (Apply) also drops every id no service uses any more.
func (d *Datapath) change(changed []Service, removed []string, full bool) ([]error, error) {
	st := &d.state
	sorted := slices.Clone(changed)
	slices.SortStableFunc(sorted, func(a, b Service) int { return strings.Compare(a.Name, b.Name) })

	var problems []error
	touchedL7 := full
	released := map[uint32]struct{}{}
	gone := map[string]struct{}{}
	release := func(name string) {
		rec := st.svcs[name]
		if rec == nil {
			return
		}
		touchedL7 = touchedL7 || rec.l7
		d.releaseService(rec, released)
		gone[name] = struct{}{}
	}
	for _, name := range removed {
		release(name)
	}
	for _, svc := range sorted {
		release(svc.Name)
	}
	var added []*svcRecord
	for i, svc := range sorted {
		if i > 0 && sorted[i-1].Name == svc.Name {
			problems = append(problems, fmt.Errorf("service %s: listed twice", svc.Name))
			continue
		}
		if err := validateService(svc); err != nil {
			problems = append(problems, err)
			continue
		}
		if err := d.frontendsFree(svc); err != nil {
			problems = append(problems, err)
			continue
		}
		rec, probs := d.claimService(svc)
		problems = append(problems, probs...)
		touchedL7 = touchedL7 || rec.l7
		added = append(added, rec)
	}

	// Ids are let go only now, so a service or backend that was released
	// and claimed again within this change keeps its id.
	for name := range gone {
		if st.svcs[name] == nil {
			delete(d.ids.services, name)
		}
	}
	for id := range released {
		if r := st.beRefs[id]; r != nil && r.refs == 0 {
			delete(d.ids.backends, r.ident)
			delete(st.beRefs, id)
		}
	}
	if full {
		// Also those recovered from pinned maps that nothing claimed.
		for name := range d.ids.services {
			if st.svcs[name] == nil {
				delete(d.ids.services, name)
			}
		}
		for ident, id := range d.ids.backends {
			if st.beRefs[id] == nil {
				delete(d.ids.backends, ident)
			}
		}
	}
	d.addNames(added)

	if err := d.flush(); err != nil {
		return problems, err
	}
	if touchedL7 {
		l7 := make(map[uint32]string)
		for _, rec := range st.svcs {
			if rec.l7 {
				l7[rec.id] = rec.listener
			}
		}
		addrs := make(map[netip.Addr]bool, len(st.l7Addrs))
		for a := range st.l7Addrs {
			addrs[a] = true
		}
		problems = append(problems, d.syncL7(l7, addrs)...)
	}
	return problems, nil
}

// releaseService gives up everything rec owns and marks it dirty. Backends
// left without references are collected in released; their ids are dropped
// once the whole change is known.
func (d *Datapath) releaseService(rec *svcRecord, released map[uint32]struct{}) {
	st := &d.state
	for _, k := range rec.frontends {
		if st.feOwner[k] == rec.name {
			delete(st.feOwner, k)
		}
		st.dirtyFE[k] = struct{}{}
	}
	for i, id := range rec.slots {
		st.dirtySlot[datapathBackendSlotKey{SvcId: rec.id, Slot: uint32(i + 1)}] = struct{}{}
		st.dirtyMem[datapathServiceBackendKey{SvcId: rec.id, BackendId: id}] = struct{}{}
	}
	for _, k := range rec.ranges {
		st.dirtyRng[k] = struct{}{}
	}
	if rec.maglev {
		st.dirtyMgl[rec.id] = struct{}{}
	}
	for _, br := range rec.backends {
		r := st.beRefs[br.id]
		r.refs--
		if br.active {
			r.active--
		}
		if br.local {
			r.locals--
		}
		if r.refs == 0 {
			released[br.id] = struct{}{}
		}
		st.dirtyBE[br.id] = struct{}{}
	}
	if rec.l7 {
		for _, a := range rec.l7Addrs {
			if st.l7Addrs[a]--; st.l7Addrs[a] <= 0 {
				delete(st.l7Addrs, a)
			}
		}
	}
	delete(st.svcs, rec.name)
	if st.byID[rec.id] == rec {
		delete(st.byID, rec.id)
	}
}

// frontendsFree checks the precondition of claimService: no frontend of
// svc is held by another service, and svc lists none twice.
func (d *Datapath) frontendsFree(svc Service) error {
	seen := make(map[datapathFrontendKey]struct{}, len(svc.Frontends))
	for _, fe := range svc.Frontends {
		key := serviceFrontendKey(svc, fe)
		if owner, taken := d.state.feOwner[key]; taken {
			return fmt.Errorf("service %s: frontend %s/%s: %w (%s)", svc.Name, fe, svc.Proto, ErrFrontendConflict, owner)
		}
		if _, dup := seen[key]; dup {
			return fmt.Errorf("service %s: frontend %s/%s listed twice", svc.Name, fe, svc.Proto)
		}
		seen[key] = struct{}{}
	}
	return nil
}

// claimService records what a valid service owns and marks it dirty. Its
// frontends must be free (frontendsFree).
func (d *Datapath) claimService(svc Service) (*svcRecord, []error) {
	st := &d.state
	var problems []error
	rec := &svcRecord{name: svc.Name, id: d.serviceID(svc), l7: svc.L7, listener: svc.ProxyListener}
	rec.svc = svc
	rec.svc.Frontends = slices.Clone(svc.Frontends)
	rec.svc.Backends = slices.Clone(svc.Backends)
	seen := make(map[uint32]int, len(svc.Backends))
	for _, b := range svc.Backends {
		ident := backendIdent{b.Addr, b.Port}
		bid := d.backendID(ident)
		i, dup := seen[bid]
		if !dup {
			i = len(rec.backends)
			seen[bid] = i
			rec.backends = append(rec.backends, backendRef{id: bid, ident: ident})
		}
		br := &rec.backends[i]
		br.local = br.local || b.Local
		if !b.Terminating && !br.active {
			br.active = true
			rec.slots = append(rec.slots, bid)
		}
	}
	if len(rec.slots) > maxBackendsPerService {
		problems = append(problems, fmt.Errorf("service %s: %d active backends, only the first %d are used", svc.Name, len(rec.slots), maxBackendsPerService))
		rec.slots = rec.slots[:maxBackendsPerService]
	}
	for _, br := range rec.backends {
		r := st.beRefs[br.id]
		if r == nil {
			r = &backendRefs{ident: br.ident}
			st.beRefs[br.id] = r
		}
		r.refs++
		if br.active {
			r.active++
		}
		if br.local {
			r.locals++
		}
		st.dirtyBE[br.id] = struct{}{}
	}
	for i, id := range rec.slots {
		st.dirtySlot[datapathBackendSlotKey{SvcId: rec.id, Slot: uint32(i + 1)}] = struct{}{}
		st.dirtyMem[datapathServiceBackendKey{SvcId: rec.id, BackendId: id}] = struct{}{}
	}
	rec.feVal = datapathFrontendValue{SvcId: rec.id, BackendCount: uint16(len(rec.slots))}
	if svc.L7 {
		rec.feVal.Flags |= frontendFlagL7
	}
	if svc.AffinityTimeout > 0 {
		rec.feVal.Flags |= frontendFlagAffinity
		rec.feVal.AffinityTimeoutS = uint32(svc.AffinityTimeout / time.Second)
	}
	if svc.NoBackendDrop {
		rec.feVal.Flags |= frontendFlagNoBackendDrop
	}
	if svc.DSR && !svc.Internal {
		rec.feVal.Flags |= frontendFlagDSR
	}
	if svc.Maglev {
		rec.feVal.Flags |= frontendFlagMaglev
		rec.maglev = true
		st.dirtyMgl[rec.id] = struct{}{}
	}
	if len(svc.SourceRanges) > 0 {
		rec.restricted = map[datapathFrontendKey]bool{}
		for _, fe := range svc.Frontends {
			if fe.Restricted {
				rec.restricted[serviceFrontendKey(svc, fe)] = true
			}
		}
		for _, p := range svc.SourceRanges {
			k := sourceRangeKey(rec.id, p)
			if !slices.Contains(rec.ranges, k) {
				rec.ranges = append(rec.ranges, k)
				st.dirtyRng[k] = struct{}{}
			}
		}
	}
	for _, fe := range svc.Frontends {
		key := serviceFrontendKey(svc, fe)
		st.feOwner[key] = svc.Name
		rec.frontends = append(rec.frontends, key)
		st.dirtyFE[key] = struct{}{}
		if svc.L7 && !slices.Contains(rec.l7Addrs, fe.Addr) {
			rec.l7Addrs = append(rec.l7Addrs, fe.Addr)
			st.l7Addrs[fe.Addr]++
		}
	}
	st.svcs[svc.Name] = rec
	st.byID[rec.id] = rec
	return rec, problems
}

func (d *Datapath) addNames(recs []*svcRecord) {
	if len(recs) == 0 {
		return
	}
	d.names.mu.Lock()
	defer d.names.mu.Unlock()
	// Names of removed ids stay: late events of closing flows still name them.
	for _, rec := range recs {
		d.names.services[rec.id] = rec.name
		for _, br := range rec.backends {
			if _, ok := d.names.backends[br.id]; ok {
				continue
			}
			if r := d.state.beRefs[br.id]; r != nil {
				d.names.backends[br.id] = netip.AddrPortFrom(r.ident.addr, r.ident.port).String()
			}
		}
	}
}

// wantFrontend, wantSlot and wantBackend derive one map entry from the
// owners; false means the entry should not exist.
func (st *programmedState) wantFrontend(k datapathFrontendKey) (datapathFrontendValue, bool) {
	owner, ok := st.feOwner[k]
	if !ok {
		return datapathFrontendValue{}, false
	}
	rec := st.svcs[owner]
	v := rec.feVal
	if rec.restricted[k] {
		v.Flags |= frontendFlagSourceRanges
	}
	return v, true
}

func (st *programmedState) wantMember(k datapathServiceBackendKey) (uint32, bool) {
	rec := st.byID[k.SvcId]
	if rec == nil {
		return 0, false
	}
	i := slices.Index(rec.slots, k.BackendId)
	return uint32(i + 1), i >= 0
}

// wantMaglev returns the backends of service id's Maglev table and a
// fingerprint of them; false means the service should have none.
func (st *programmedState) wantMaglev(id uint32) ([]maglevBackend, string, bool) {
	rec := st.byID[id]
	if rec == nil || !rec.maglev || len(rec.slots) == 0 {
		return nil, "", false
	}
	bs := make([]maglevBackend, 0, len(rec.slots))
	var fp strings.Builder
	for _, bid := range rec.slots {
		r := st.beRefs[bid]
		name := netip.AddrPortFrom(r.ident.addr, r.ident.port).String()
		bs = append(bs, maglevBackend{id: bid, name: name})
		fmt.Fprintf(&fp, "%s=%d,", name, bid)
	}
	return bs, fp.String(), true
}

// flushMaglev writes the dirty Maglev tables (del false) or deletes the
// ones no longer wanted (del true).
func (d *Datapath) flushMaglev(del bool) error {
	st := &d.state
	for id := range st.dirtyMgl {
		bs, fp, ok := st.wantMaglev(id)
		have, had := st.maglev[id]
		switch {
		case ok && (!had || have != fp) && !del:
			if err := d.lb.maglev.Set(id, maglevTable(bs, d.cfg.MaglevTableSize, d.cfg.MaglevSeed)); err != nil {
				return err
			}
			st.maglev[id] = fp
			st.ops++
		case !ok && had && del:
			if err := d.lb.maglev.Delete(id); err != nil {
				return err
			}
			delete(st.maglev, id)
			st.ops++
		case ok == had && (!ok || have == fp):
		default:
			continue
		}
		delete(st.dirtyMgl, id)
	}
	return nil
}

func (st *programmedState) wantRange(k datapathSourceRangeKey) (uint8, bool) {
	rec := st.byID[k.SvcId]
	return 1, rec != nil && slices.Contains(rec.ranges, k)
}

func (st *programmedState) wantSlot(k datapathBackendSlotKey) (uint32, bool) {
	rec := st.byID[k.SvcId]
	if rec == nil || k.Slot < 1 || int(k.Slot) > len(rec.slots) {
		return 0, false
	}
	return rec.slots[k.Slot-1], true
}

func (st *programmedState) wantBackend(id uint32) (datapathBackendValue, bool) {
	r := st.beRefs[id]
	if r == nil || r.refs == 0 {
		return datapathBackendValue{}, false
	}
	v := datapathBackendValue{Addr: addrToBE(r.ident.addr), Port: portToBE(r.ident.port)}
	if r.locals > 0 {
		v.Flags |= backendFlagLocal
	}
	if r.active == 0 {
		v.Flags |= backendFlagTerminating
	}
	return v, true
}

// pendingWrites splits the dirty keys of one map into entries to write and
// keys to delete; dirty keys already right are forgotten.
func pendingWrites[K, V comparable](dirty map[K]struct{}, have map[K]V, want func(K) (V, bool)) (upK []K, upV []V, del []K) {
	for k := range dirty {
		v, ok := want(k)
		old, had := have[k]
		switch {
		case ok && (!had || old != v):
			upK, upV = append(upK, k), append(upV, v)
		case !ok && had:
			del = append(del, k)
		default:
			delete(dirty, k)
		}
	}
	return upK, upV, del
}

// flush writes the dirty entries: new and changed ones bottom-up
// (backends, slots, frontends), then removals top-down, so a frontend never
// points at a missing slot or a slot at a missing backend.
func (d *Datapath) flush() error {
	st := &d.state
	beK, beV, beDel := pendingWrites(st.dirtyBE, st.backends, st.wantBackend)
	slK, slV, slDel := pendingWrites(st.dirtySlot, st.slots, st.wantSlot)
	feK, feV, feDel := pendingWrites(st.dirtyFE, st.frontends, st.wantFrontend)
	meK, meV, meDel := pendingWrites(st.dirtyMem, st.members, st.wantMember)
	rgK, rgV, rgDel := pendingWrites(st.dirtyRng, st.ranges, st.wantRange)
	if err := upsertEntries(d.lb.backends, st.backends, st.dirtyBE, beK, beV, &st.ops); err != nil {
		return fmt.Errorf("write backends: %w", err)
	}
	if err := upsertEntries(d.lb.slots, st.slots, st.dirtySlot, slK, slV, &st.ops); err != nil {
		return fmt.Errorf("write backend slots: %w", err)
	}
	if err := upsertEntries(d.lb.members, st.members, st.dirtyMem, meK, meV, &st.ops); err != nil {
		return fmt.Errorf("write service backends: %w", err)
	}
	if err := upsertEntries(d.lb.ranges, st.ranges, st.dirtyRng, rgK, rgV, &st.ops); err != nil {
		return fmt.Errorf("write source ranges: %w", err)
	}
	if err := d.flushMaglev(false); err != nil {
		return fmt.Errorf("write maglev tables: %w", err)
	}
	if err := upsertEntries(d.lb.frontends, st.frontends, st.dirtyFE, feK, feV, &st.ops); err != nil {
		return fmt.Errorf("write frontends: %w", err)
	}
	if err := deleteEntries(d.lb.frontends, st.frontends, st.dirtyFE, feDel, &st.ops); err != nil {
		return fmt.Errorf("delete frontends: %w", err)
	}
	if err := deleteEntries(d.lb.ranges, st.ranges, st.dirtyRng, rgDel, &st.ops); err != nil {
		return fmt.Errorf("delete source ranges: %w", err)
	}
	if err := d.flushMaglev(true); err != nil {
		return fmt.Errorf("delete maglev tables: %w", err)
	}
	if err := deleteEntries(d.lb.members, st.members, st.dirtyMem, meDel, &st.ops); err != nil {
		return fmt.Errorf("delete service backends: %w", err)
	}
	if err := deleteEntries(d.lb.slots, st.slots, st.dirtySlot, slDel, &st.ops); err != nil {
		return fmt.Errorf("delete backend slots: %w", err)
	}
	if err := deleteEntries(d.lb.backends, st.backends, st.dirtyBE, beDel, &st.ops); err != nil {
		return fmt.Errorf("delete backends: %w", err)
	}
	// Emptied maps are replaced: after an Apply they have the capacity of
	// the whole state, which every later Update would walk through.
	st.dirtyFE = map[datapathFrontendKey]struct{}{}
	st.dirtySlot = map[datapathBackendSlotKey]struct{}{}
	st.dirtyBE = map[uint32]struct{}{}
	st.dirtyMem = map[datapathServiceBackendKey]struct{}{}
	st.dirtyRng = map[datapathSourceRangeKey]struct{}{}
	st.dirtyMgl = map[uint32]struct{}{}
	return nil
}

// upsertEntries writes keys/vals and records what was written as
// programmed; what failed stays dirty for the next call.
func upsertEntries[K, V comparable](m serviceMap[K, V], have map[K]V, dirty map[K]struct{}, keys []K, vals []V, ops *int) error {
	n, err := m.Put(keys, vals)
	for i := range n {
		have[keys[i]] = vals[i]
		delete(dirty, keys[i])
	}
	*ops += n
	return err
}

// deleteEntries deletes keys and records them as gone.
func deleteEntries[K, V comparable](m serviceMap[K, V], have map[K]V, dirty map[K]struct{}, keys []K, ops *int) error {
	n, err := m.Delete(keys)
	for _, k := range keys[:n] {
		delete(have, k)
		delete(dirty, k)
	}
	*ops += n
	return err
}
