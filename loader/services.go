package loader

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"sync"
	"time"
)

// Flags of datapathFrontendValue and datapathBackendValue, as FE_F_* and
// BE_F_* in bpf/lib/consts.h.
const (
	frontendFlagL7                   = uint16(datapathFrontendFlagsFE_F_L7)
	frontendFlagSourceRanges         = uint16(datapathFrontendFlagsFE_F_SOURCE_RANGES)
	frontendFlagAffinity             = uint16(datapathFrontendFlagsFE_F_AFFINITY)
	frontendFlagNoBackendDrop        = uint16(datapathFrontendFlagsFE_F_NO_BACKEND_DROP)
	frontendFlagMaglev               = uint16(datapathFrontendFlagsFE_F_MAGLEV)
	frontendFlagDSR                  = uint16(datapathFrontendFlagsFE_F_DSR)
	backendFlagLocal                 = uint8(datapathBackendFlagsBE_F_LOCAL)
	backendFlagTerminating           = uint8(datapathBackendFlagsBE_F_TERMINATING)
	maxBackendsPerService            = math.MaxUint16
	firstID                   uint32 = 1
)

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
	got, err := readServiceMaps(d.lb)
	if err != nil {
		return fmt.Errorf("pinned state: %w", err)
	}
	var max uint32
	st.frontends, st.slots, st.backends = got.frontends, got.slots, got.backends
	st.members, st.ranges = got.members, got.ranges
	for _, id := range got.maglev {
		st.maglev[id] = "" // rewritten by the first Apply
		max = maxU32(max, id)
	}
	for _, id := range got.maglev {
		st.maglev[id] = "" // rewritten by the first Apply
		max = maxU32(max, id)
	}
	for fk, fv := range got.frontends {
		ids.recovered[fk] = fv.SvcId
		max = maxU32(max, fv.SvcId)
	}
	for sk := range got.slots {
		max = maxU32(max, sk.SvcId)
	}
	for bk, bv := range got.backends {
		ids.backends[backendIdent{addrFromBE(bv.Addr), portFromBE(bv.Port)}] = bk
		max = maxU32(max, bk)
	}
	ids.next = max + 1
	st.sweep = true
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
	if svc.Internal && svc.L7 {
		return fmt.Errorf("service %s: an internal service cannot be L7", svc.Name)
	}
	for _, p := range svc.SourceRanges {
		if !p.IsValid() || !p.Addr().Is4() {
			return fmt.Errorf("service %s: invalid source range %s (IPv4 prefix needed)", svc.Name, p)
		}
	}
	if svc.AffinityTimeout < 0 || svc.AffinityTimeout > maxAffinityTimeout {
		return fmt.Errorf("service %s: affinity timeout %s out of range (0 to %s)", svc.Name, svc.AffinityTimeout, maxAffinityTimeout)
	}
	if svc.AffinityTimeout > 0 && svc.AffinityTimeout < time.Second {
		return fmt.Errorf("service %s: affinity timeout %s below one second", svc.Name, svc.AffinityTimeout)
	}
	return nil
}

// maxAffinityTimeout is the API's upper bound of
// sessionAffinityConfig.clientIP.timeoutSeconds (one day).
const maxAffinityTimeout = 24 * time.Hour

// sourceRangeKey is the LPM key of prefix p for service id.
func sourceRangeKey(id uint32, p netip.Prefix) datapathSourceRangeKey {
	p = p.Masked()
	return datapathSourceRangeKey{Prefixlen: 32 + uint32(p.Bits()), SvcId: id, Addr: addrToBE(p.Addr())}
}

// frontendKeyOf is the key of an external frontend.
func frontendKeyOf(fe Frontend, proto Proto) datapathFrontendKey {
	return datapathFrontendKey{Addr: addrToBE(fe.Addr), Port: portToBE(fe.Port), Proto: uint8(proto)}
}

// serviceFrontendKey is the key of one of svc's frontends, in svc's scope.
func serviceFrontendKey(svc Service, fe Frontend) datapathFrontendKey {
	k := frontendKeyOf(fe, svc.Proto)
	if svc.Internal {
		k.Scope = uint8(datapathFrontendScopeFE_SCOPE_SOCKET)
	}
	return k
}

// serviceID keeps a service's id across updates and, right after a restart,
// takes over the id its frontends had in the pinned maps.
func (d *Datapath) serviceID(svc Service) uint32 {
	if id, ok := d.ids.services[svc.Name]; ok {
		return id
	}
	for _, fe := range svc.Frontends {
		key := serviceFrontendKey(svc, fe)
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
