package loader

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"
)

// ProgrammedService is one service as the datapath reads it from its maps,
// next to what the controller last gave the agent for it. `nodegress
// explain` states its decisions from it.
type ProgrammedService struct {
	ID uint32
	// Name is the agent's name of the service id; empty for entries no
	// service of this agent owns (left by an earlier run).
	Name      string
	Frontends []FrontendEntry
	// Active are the backends new flows may pick (backend_slots), in slot
	// order; a slot naming a missing backend has only its ID set.
	Active []BackendEntry
	// SourceRanges are the clients restricted frontends accept.
	SourceRanges []netip.Prefix
	// Wanted is the service as the controller last gave it (with its
	// terminating backends, which the maps only hold for established
	// flows); nil when the agent does not know the id.
	Wanted *Service
	// Drift lists where the maps differ from what the agent wrote: an
	// Apply that failed half-way or another process writing the maps.
	Drift []string
	// ProxyListener is the proxy listener an L7 service's connections
	// go to, as the agent programmed it; ProxySocket says whether
	// proxy_sockets holds a socket for the service (SocketRegistered,
	// SocketMissing, or "" where the map cannot be read).
	ProxyListener string
	ProxySocket   string
}

// ProxySocket values.
const (
	SocketRegistered = "registered"
	SocketMissing    = "missing"
)

// Programmed reads the service maps as the datapath reads them and pairs
// every service id found with the agent's record of it.
func (d *Datapath) Programmed() ([]ProgrammedService, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	got, err := readServiceMaps(d.lb)
	if err != nil {
		return nil, err
	}
	byID := map[uint32]*ProgrammedService{}
	svc := func(id uint32) *ProgrammedService {
		ps := byID[id]
		if ps == nil {
			ps = &ProgrammedService{ID: id}
			if rec := d.state.byID[id]; rec != nil {
				ps.Name = rec.name
				wanted := rec.svc
				ps.Wanted = &wanted
			}
			byID[id] = ps
		}
		return ps
	}
	st := &d.state
	for k, v := range got.frontends {
		ps := svc(v.SvcId)
		ps.Frontends = append(ps.Frontends, frontendEntryOf(k, v))
		if want, ok := st.wantFrontend(k); !ok {
			ps.Drift = append(ps.Drift, fmt.Sprintf("frontend %s is in the map but the agent programmed none there", frontendEntryOf(k, v).Frontend))
		} else if want != v {
			ps.Drift = append(ps.Drift, fmt.Sprintf("frontend %s: map holds service %d, %d backends, flags %#x; the agent wrote service %d, %d backends, flags %#x",
				frontendEntryOf(k, v).Frontend, v.SvcId, v.BackendCount, v.Flags, want.SvcId, want.BackendCount, want.Flags))
		}
	}
	slotKeys := slices.SortedFunc(maps.Keys(got.slots), func(a, b datapathBackendSlotKey) int {
		return cmp.Or(cmp.Compare(a.SvcId, b.SvcId), cmp.Compare(a.Slot, b.Slot))
	})
	for _, k := range slotKeys {
		id := got.slots[k]
		ps := svc(k.SvcId)
		be := BackendEntry{ID: id}
		if bv, ok := got.backends[id]; ok {
			be = backendEntryOf(id, bv)
		} else {
			ps.Drift = append(ps.Drift, fmt.Sprintf("slot %d names backend %d, which is not in the backends map", k.Slot, id))
		}
		ps.Active = append(ps.Active, be)
		if want, ok := st.wantSlot(k); !ok || want != id {
			ps.Drift = append(ps.Drift, fmt.Sprintf("slot %d holds backend %d; the agent wrote %s", k.Slot, id, wantedID(want, ok)))
		}
		if bv, ok := got.backends[id]; ok {
			if want, ok := st.wantBackend(id); ok && want != bv {
				ps.Drift = append(ps.Drift, fmt.Sprintf("backend %d: map holds %s, the agent wrote %s", id, backendEntryOf(id, bv).Backend, backendEntryOf(id, want).Backend))
			}
		}
	}
	for k := range got.ranges {
		ps := svc(k.SvcId)
		ps.SourceRanges = append(ps.SourceRanges, netip.PrefixFrom(addrFromBE(k.Addr), int(k.Prefixlen)-32))
	}
	// What the agent wrote but the maps lack.
	for id, rec := range st.byID {
		for _, k := range rec.frontends {
			if _, ok := got.frontends[k]; !ok {
				ps := svc(id)
				ps.Drift = append(ps.Drift, fmt.Sprintf("frontend %s was programmed but is missing from the map", frontendEntryOf(k, rec.feVal).Frontend))
			}
		}
		for i, bid := range rec.slots {
			if _, ok := got.slots[datapathBackendSlotKey{SvcId: id, Slot: uint32(i + 1)}]; !ok {
				ps := svc(id)
				ps.Drift = append(ps.Drift, fmt.Sprintf("slot %d (backend %d) was programmed but is missing from the map", i+1, bid))
			}
		}
		for _, k := range rec.ranges {
			if _, ok := got.ranges[k]; !ok {
				ps := svc(id)
				ps.Drift = append(ps.Drift, fmt.Sprintf("source range %s was programmed but is missing from the map", netip.PrefixFrom(addrFromBE(k.Addr), int(k.Prefixlen)-32)))
			}
		}
	}
	for id, ps := range byID {
		if rec := st.byID[id]; rec != nil && rec.l7 {
			ps.ProxyListener = rec.listener
		}
		if slices.ContainsFunc(ps.Frontends, func(f FrontendEntry) bool { return f.L7 }) {
			ps.ProxySocket = d.proxySocketOf(id)
		}
	}
	out := make([]ProgrammedService, 0, len(byID))
	for _, id := range slices.Sorted(maps.Keys(byID)) {
		ps := byID[id]
		slices.SortFunc(ps.Frontends, compareFrontendEntries)
		slices.SortFunc(ps.SourceRanges, netip.Prefix.Compare)
		slices.Sort(ps.Drift)
		out = append(out, *ps)
	}
	return out, nil
}

func wantedID(id uint32, ok bool) string {
	if !ok {
		return "none"
	}
	return fmt.Sprintf("backend %d", id)
}

// proxySocketOf says whether sk_steer finds a proxy socket for service id.
func (d *Datapath) proxySocketOf(id uint32) string {
	m := d.objs.ProxySockets
	if m == nil {
		return "" // the bookkeeping's fakes have no socket map
	}
	var cookie uint64
	switch err := m.Lookup(id, &cookie); {
	case err == nil:
		return SocketRegistered
	case errors.Is(err, ebpf.ErrKeyNotExist):
		return SocketMissing
	default:
		return ""
	}
}
