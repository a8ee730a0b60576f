package controller

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/nodegress/nodegress/loader"
)

// serviceState is the translated L4 state, kept between syncs so that a
// sync re-translates only the Services that changed.
//
// Each Service is translated on its own (translateService) into ports that
// claim frontends. Claims are indexed by frontend and ordered (oldest
// service first, see svcOrder); the first claimant owns the frontend, the
// others are refused with a conflict. When a service changes, only the
// services claiming one of the frontends it claimed before or claims now
// are resolved again, so an owner going away hands its frontends to the
// next claimant, and the cost of a change follows its size.
type serviceState struct {
	quietFor string

	trans    map[string]*svcTranslation  // by Service key
	claims   map[frontendKey][]claimant  // ordered, owner first
	reserved map[frontendKey]string      // L7 frontends: they win over any claim
	out      map[string][]loader.Service // resolved, by Service key, sorted by name
	issues   map[string][]error          // by Service key, only non-empty
}

type claimant struct {
	order svcOrder
	index int    // port index within the service
	key   string // Service key
	name  string // loader service name of the port
}

func (a claimant) compare(b claimant) int {
	return cmp.Or(a.order.compare(b.order), cmp.Compare(a.index, b.index))
}

func newServiceState(quietFor string) *serviceState {
	return &serviceState{
		quietFor: quietFor,
		trans:    map[string]*svcTranslation{},
		claims:   map[frontendKey][]claimant{},
		reserved: map[frontendKey]string{},
		out:      map[string][]loader.Service{},
		issues:   map[string][]error{},
	}
}

// reservedFrontends indexes the L7 frontends by owner.
func reservedFrontends(l7 []loader.Service) map[frontendKey]string {
	out := make(map[frontendKey]string)
	for _, s := range l7 {
		for _, f := range s.Frontends {
			out[keyOf(f, s.Proto, s.Internal)] = s.Name
		}
	}
	return out
}

// serviceLookup returns a Service (nil when it does not exist) and its IPv4
// EndpointSlices.
type serviceLookup func(key string) (*corev1.Service, []*discoveryv1.EndpointSlice)

// stateChange is what an update changed: the datapath services to add or
// replace and the names of those to remove.
type stateChange struct {
	changed []loader.Service
	removed []string
	// services counts the Service keys resolved again, for logs and tests.
	services int
}

// update re-translates the Services keys (those gone are dropped), takes
// reserved as the new L7 frontends, resolves every service whose frontends
// may have changed hands and returns the difference.
func (st *serviceState) update(node NodeInfo, keys []string, lookup serviceLookup, reserved map[frontendKey]string) stateChange {
	affected := make(map[frontendKey]struct{})
	resolve := make(map[string]struct{}, len(keys))
	for _, key := range keys {
		resolve[key] = struct{}{}
		if old := st.trans[key]; old != nil {
			st.unclaim(key, old, affected)
			delete(st.trans, key)
		}
		svc, svcSlices := lookup(key)
		if svc == nil {
			continue
		}
		if t := translateService(node, svc, svcSlices); t != nil {
			st.trans[key] = t
			st.claim(key, t, affected)
		}
	}
	if !maps.Equal(st.reserved, reserved) {
		for fk, o := range st.reserved {
			if reserved[fk] != o {
				affected[fk] = struct{}{}
			}
		}
		for fk, o := range reserved {
			if st.reserved[fk] != o {
				affected[fk] = struct{}{}
			}
		}
		st.reserved = reserved
	}
	for fk := range affected {
		for _, c := range st.claims[fk] {
			resolve[c.key] = struct{}{}
		}
	}

	ch := stateChange{services: len(resolve)}
	for key := range resolve {
		out, issues := st.resolve(key)
		if len(issues) > 0 {
			st.issues[key] = issues
		} else {
			delete(st.issues, key)
		}
		old := st.out[key]
		if len(out) > 0 {
			st.out[key] = out
		} else {
			delete(st.out, key)
		}
		for _, s := range out {
			if i, ok := slices.BinarySearchFunc(old, s.Name, func(o loader.Service, n string) int { return strings.Compare(o.Name, n) }); !ok || !servicesEqual([]loader.Service{old[i]}, []loader.Service{s}) {
				ch.changed = append(ch.changed, s)
			}
		}
		for _, o := range old {
			if _, ok := slices.BinarySearchFunc(out, o.Name, func(s loader.Service, n string) int { return strings.Compare(s.Name, n) }); !ok {
				ch.removed = append(ch.removed, o.Name)
			}
		}
	}
	return ch
}

func (st *serviceState) claim(key string, t *svcTranslation, affected map[frontendKey]struct{}) {
	for _, it := range t.items {
		if it.port == nil {
			continue
		}
		c := claimant{order: t.order, index: it.port.index, key: key, name: it.port.svc.Name}
		for _, fe := range it.port.svc.Frontends {
			fk := keyOf(fe, it.port.svc.Proto, it.port.svc.Internal)
			list := st.claims[fk]
			i, _ := slices.BinarySearchFunc(list, c, claimant.compare)
			st.claims[fk] = slices.Insert(list, i, c)
			affected[fk] = struct{}{}
		}
	}
}

func (st *serviceState) unclaim(key string, t *svcTranslation, affected map[frontendKey]struct{}) {
	for _, it := range t.items {
		if it.port == nil {
			continue
		}
		for _, fe := range it.port.svc.Frontends {
			fk := keyOf(fe, it.port.svc.Proto, it.port.svc.Internal)
			list := slices.DeleteFunc(st.claims[fk], func(c claimant) bool { return c.key == key })
			if len(list) == 0 {
				delete(st.claims, fk)
			} else {
				st.claims[fk] = list
			}
			affected[fk] = struct{}{}
		}
	}
}

// resolve computes a Service's datapath services from its translation and
// the current owners of its frontends, with its problems in the order
// they were found.
func (st *serviceState) resolve(key string) ([]loader.Service, []error) {
	t := st.trans[key]
	if t == nil {
		return nil, nil
	}
	var out []loader.Service
	var errs []error
	for _, it := range t.items {
		if it.err != nil {
			errs = append(errs, it.err)
			continue
		}
		p := it.port
		errs = append(errs, p.preErrs...)
		ls := p.svc
		ls.Frontends = nil
		for _, fe := range p.svc.Frontends {
			fk := keyOf(fe, ls.Proto, ls.Internal)
			if owner, ok := st.reserved[fk]; ok {
				errs = append(errs, st.conflict(key, p.portID, key == st.quietFor, fk, owner))
				continue
			}
			if owner := st.claims[fk][0]; owner.name != ls.Name {
				errs = append(errs, st.conflict(key, p.portID, false, fk, owner.name))
				continue
			}
			ls.Frontends = append(ls.Frontends, fe)
		}
		if len(ls.Frontends) == 0 {
			continue
		}
		errs = append(errs, p.backendErrs...)
		sortService(&ls)
		out = append(out, ls)
	}
	slices.SortFunc(out, func(a, b loader.Service) int { return cmp.Compare(a.Name, b.Name) })
	return out, errs
}

func (st *serviceState) conflict(key, portID string, quiet bool, fk frontendKey, owner string) error {
	return &ObjectError{Kind: "Service", Object: key, Port: portID, Skipped: quiet,
		Err: withReason(ReasonFrontendConflict, fmt.Errorf("frontend %s/%s already used by %s, skipped", fk.fe, fk.proto, owner))}
}

// all is every datapath service, sorted by name.
func (st *serviceState) all() []loader.Service {
	var out []loader.Service
	for _, s := range st.out {
		out = append(out, s...)
	}
	slices.SortFunc(out, func(a, b loader.Service) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// issuesInOrder is every problem, services ordered as claims are (oldest
// first), so the same input always lists them the same way.
func (st *serviceState) issuesInOrder() []error {
	keys := make([]string, 0, len(st.issues))
	for k := range st.issues {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return st.trans[a].order.compare(st.trans[b].order) })
	var out []error
	for _, k := range keys {
		out = append(out, st.issues[k]...)
	}
	return out
}
