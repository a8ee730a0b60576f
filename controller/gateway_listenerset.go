package controller

import (
	"cmp"
	"net/netip"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapi "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/nodegress/nodegress/loader"
)

// ListenerSets add listeners to a Gateway from other objects (often other
// namespaces), as the Gateway's allowedListeners allows. Their listeners
// share the Gateway's addresses; routes attach to them by a parentRef of
// kind ListenerSet. Precedence: the Gateway's own listeners first, then
// the sets oldest first (then by namespace/name), each set's listeners in
// order; a listener that conflicts with one before it is not accepted,
// and only it.

const kindListenerSet = "ListenerSet"

// listenerSet is a ListenerSet being translated.
type listenerSet struct {
	set       *gwapi.ListenerSet
	key       string // namespace/name
	gwKey     string
	allowed   bool
	listeners []*gatewayListener
}

// translateListenerSets translates the ListenerSets of Gateways of ours.
func (g *gatewayTranslator) translateListenerSets(addrs map[string][]netip.Addr) {
	sets := slices.Clone(g.gin.ListenerSets)
	slices.SortFunc(sets, func(a, b *gwapi.ListenerSet) int { return compareObjects(&a.ObjectMeta, &b.ObjectMeta) })
	for _, ls := range sets {
		ref := ls.Spec.ParentRef
		if cmp.Or(string(ptrValue(ref.Group)), gwapi.GroupName) != gwapi.GroupName || cmp.Or(string(ptrValue(ref.Kind)), kindGateway) != kindGateway {
			continue
		}
		gwKey := cmp.Or(string(ptrValue(ref.Namespace)), ls.Namespace) + "/" + string(ref.Name)
		gw := g.gateways[gwKey]
		if gw == nil {
			continue // not ours to answer for
		}
		s := &listenerSet{set: ls, key: ls.Namespace + "/" + ls.Name, gwKey: gwKey, allowed: g.allowsListeners(gw, ls.Namespace)}
		g.sets[s.key] = s
		g.setsOf[gwKey] = append(g.setsOf[gwKey], s)
		if !s.allowed {
			continue
		}
		own := listenerOwner{gw: gw, namespace: ls.Namespace, kind: kindListenerSet, generation: ls.Generation}
		for i := range ls.Spec.Listeners {
			e := &ls.Spec.Listeners[i]
			l := &gwapi.Listener{Name: e.Name, Hostname: e.Hostname, Port: e.Port, Protocol: e.Protocol, TLS: e.TLS, AllowedRoutes: e.AllowedRoutes}
			gl := g.translateListener(own, s.key+"/"+string(e.Name), l, addrs[gwKey], func(gl *gatewayListener, c *listenerConds) {
				// Every accepted listener before this one wins.
				for _, o := range g.listenersBefore(gwKey) {
					if o.accepted && o.spec.Port == l.Port {
						c.conflictWith(gl, o.spec, true)
					}
				}
			})
			s.listeners = append(s.listeners, gl)
		}
	}
}

// listenersBefore are a Gateway's listeners translated so far: its own,
// then those of its sets.
func (g *gatewayTranslator) listenersBefore(gwKey string) []*gatewayListener {
	out := slices.Clone(g.listeners[gwKey])
	for _, s := range g.setsOf[gwKey] {
		out = append(out, s.listeners...)
	}
	return out
}

// allowsListeners applies a Gateway's allowedListeners (none by default)
// to a ListenerSet's namespace.
func (g *gatewayTranslator) allowsListeners(gw *gwapi.Gateway, ns string) bool {
	from := gwapi.NamespacesFromNone
	var sel *metav1.LabelSelector
	if al := gw.Spec.AllowedListeners; al != nil && al.Namespaces != nil {
		if al.Namespaces.From != nil {
			from = *al.Namespaces.From
		}
		sel = al.Namespaces.Selector
	}
	return g.namespaceAllowed(from, sel, ns, gw.Namespace)
}

// finishListenerSets serves the valid listeners of a Gateway's sets and
// decides the sets' statuses; it returns how many are accepted.
func (g *gatewayTranslator) finishListenerSets(gwKey string, parentAccepted bool, addrs []netip.Addr,
	fes map[string]*loader.Service, names *[]string) int32 {
	var accepted int32
	for _, s := range g.setsOf[gwKey] {
		gen := s.set.Generation
		st := gwapi.ListenerSetStatus{Listeners: []gwapi.ListenerEntryStatus{}}
		valid := 0
		for _, gl := range s.listeners {
			st.Listeners = append(st.Listeners, gwapi.ListenerEntryStatus{Name: gl.status.Name, SupportedKinds: gl.status.SupportedKinds,
				AttachedRoutes: gl.status.AttachedRoutes, Conditions: gl.status.Conditions})
			if gl.valid && parentAccepted {
				valid++
				g.serveListener(gl, gwKey, addrs, fes, names)
			}
		}
		reason, msg := gwapi.ListenerSetReasonAccepted, ""
		switch {
		case !s.allowed:
			reason, msg = gwapi.ListenerSetReasonNotAllowed, "the gateway's allowedListeners does not allow this namespace"
		case !parentAccepted:
			reason, msg = gwapi.ListenerSetReasonParentNotAccepted, "the gateway is not accepted"
		case valid == 0:
			reason, msg = gwapi.ListenerSetReasonListenersNotValid, "no listener is valid"
		}
		ok := reason == gwapi.ListenerSetReasonAccepted
		programmedReason := reason
		if ok {
			accepted++
			programmedReason = gwapi.ListenerSetReasonProgrammed
		}
		st.Conditions = []metav1.Condition{
			condition(string(gwapi.ListenerSetConditionAccepted), ok, string(reason), msg, gen),
			condition(string(gwapi.ListenerSetConditionProgrammed), ok, string(programmedReason), msg, gen),
		}
		g.status.ListenerSets[s.key] = st
	}
	return accepted
}
