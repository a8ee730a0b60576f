package controller

import (
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"net/textproto"
	"regexp"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	gwapi "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/nodegress/nodegress/l7proxy"
	"github.com/nodegress/nodegress/loader"
)

// Gateway API translation.
//
// The GatewayClasses whose spec.controllerName is nodegress's are
// accepted; their Gateways get addresses (spec.addresses, else one from
// the configured pool, kept once given, or the load balancer IPs of a
// Service made for the Gateway: gateway_service.go), and each valid HTTP or HTTPS
// listener becomes an l7proxy.Listener on every address at its port plus a
// datapath frontend steered to the proxy. HTTPRoutes attach to listeners
// as the API defines (parentRefs, sectionName and port, allowedRoutes,
// hostname intersection); their backendRefs resolve to Services, across
// namespaces only with a ReferenceGrant. The translation also decides
// every status condition, which the elected writer writes.
//
// Precedence with Ingress: a Gateway listener owns its frontends; the
// Ingress routes serve the node's own addresses (and the publish Service's)
// on the HTTP and HTTPS ports. A Gateway given a node address and one of
// those ports takes that frontend over from the Ingresses.

// DefaultGatewayControllerName is the GatewayClass spec.controllerName
// nodegress implements.
const DefaultGatewayControllerName = "nodegress.io/gateway-controller"

// GatewayInput is everything the Gateway API translation reads.
type GatewayInput struct {
	// ControllerName selects the GatewayClasses (default
	// DefaultGatewayControllerName).
	ControllerName string
	Classes        []*gwapi.GatewayClass
	Gateways       []*gwapi.Gateway
	HTTPRoutes     []*gwapi.HTTPRoute
	GRPCRoutes     []*gwapi.GRPCRoute
	TLSRoutes      []*gwapi.TLSRoute
	// ListenerSets add listeners to Gateways.
	ListenerSets []*gwapi.ListenerSet
	// BackendTLSPolicies and the ConfigMaps their caCertificateRefs name.
	BackendTLSPolicies []*gwapi.BackendTLSPolicy
	ConfigMaps         []*corev1.ConfigMap
	Grants             []*gwapi.ReferenceGrant
	// Namespaces are needed for allowedRoutes namespace selectors.
	Namespaces []*corev1.Namespace
	// AddressPool gives addresses to Gateways without spec.addresses.
	AddressPool []netip.Prefix
	// AddressRanges are where spec.addresses may be (besides the pool);
	// empty: anywhere.
	AddressRanges []netip.Prefix
	// AddressSource is where Gateways without spec.addresses get theirs
	// (empty: the pool).
	AddressSource GatewayAddressSource
}

// GatewayStatuses are the statuses the translation decided, keyed by
// name (GatewayClasses) or namespace/name.
type GatewayStatuses struct {
	Classes  map[string][]metav1.Condition
	Gateways map[string]gwapi.GatewayStatus
	// Routes are the routes' parents of ours, by kind (HTTPRoute,
	// GRPCRoute, TLSRoute), then namespace/name.
	Routes map[string]map[string][]gwapi.RouteParentStatus
	// BackendTLSPolicies are the policies' ancestors of ours (the
	// Gateways whose routes use a Service they target), by namespace/name.
	BackendTLSPolicies map[string][]gwapi.PolicyAncestorStatus
	ListenerSets       map[string]gwapi.ListenerSetStatus
	// Services are the Services the Gateways ask for (with the address
	// source "service"), by namespace/name.
	Services map[string]*corev1.Service
}

// maxGatewayAddresses is the most addresses a Gateway's status may hold.
const maxGatewayAddresses = 16

const (
	kindGateway   = "Gateway"
	kindHTTPRoute = "HTTPRoute"
	kindGRPCRoute = "GRPCRoute"
	kindTLSRoute  = "TLSRoute"
	kindService   = "Service"
	kindSecret    = "Secret"
)

// gatewayListener is a listener being translated.
type gatewayListener struct {
	gw     *gwapi.Gateway
	owner  listenerOwner
	spec   *gwapi.Listener
	key    string // namespace/gateway/listener
	status *gwapi.ListenerStatus
	// accepted: routes may attach (and count in attachedRoutes); valid:
	// also refs resolved, no conflict and an address, so it serves.
	accepted bool
	valid    bool
	hostname string
	addrs    []netip.Addr
	routes   []l7proxy.HTTPRoute
	// tlsMode is a TLS listener's mode ("" for HTTP and HTTPS), and
	// tlsRoutes its attached TLSRoutes.
	tlsMode   gwapi.TLSModeType
	tlsRoutes []l7proxy.TLSRoute
	// clientValidation asks the listener's clients for certificates.
	clientValidation *l7proxy.ClientValidation
}

type gatewayTranslator struct {
	*ingressTranslator
	gin      GatewayInput
	ctrl     string
	status   GatewayStatuses
	classes  map[string]bool // accepted classes of ours
	gateways map[string]*gwapi.Gateway
	// listeners of each Gateway of ours, by Gateway key.
	listeners map[string][]*gatewayListener
	taken     map[netip.Addr]string // allocated addresses → Gateway key
	nsLabels  map[string]labels.Set
	// backendTLS are the BackendTLSPolicies by the Service port they
	// apply to; serviceGateways the Gateways whose attached routes name
	// each Service (namespace/name), the policies' ancestors.
	backendTLS      map[backendTLSTarget]*backendTLSPolicy
	tlsPolicies     []*backendTLSPolicy
	serviceGateways map[string][]string
	// clientCerts are the Gateways' backend client certificates, and
	// gatewayRefs their ResolvedRefs conditions, by Gateway key.
	clientCerts map[string]*tls.Certificate
	gatewayRefs map[string]metav1.Condition
	// sets are the ListenerSets of Gateways of ours, by namespace/name,
	// and setsOf those of each Gateway in precedence order.
	sets   map[string]*listenerSet
	setsOf map[string][]*listenerSet
	// serviceWanted are the Gateways that get a Service (address source
	// "service"), by Gateway key, with what it holds; hostnames the
	// hostnames its load balancer gave each.
	serviceWanted map[string]serviceWant
	hostnames     map[string][]string
}

// translateGateways adds the Gateway API's listeners, upstreams and
// certificates to t.out and returns the datapath frontends and statuses.
func (t *ingressTranslator) translateGateways(in GatewayInput) ([]loader.Service, GatewayStatuses) {
	g := &gatewayTranslator{
		ingressTranslator: t,
		gin:               in,
		ctrl:              cmp.Or(in.ControllerName, DefaultGatewayControllerName),
		status: GatewayStatuses{Classes: map[string][]metav1.Condition{}, Gateways: map[string]gwapi.GatewayStatus{},
			Routes:             map[string]map[string][]gwapi.RouteParentStatus{kindHTTPRoute: {}, kindGRPCRoute: {}, kindTLSRoute: {}},
			BackendTLSPolicies: map[string][]gwapi.PolicyAncestorStatus{},
			ListenerSets:       map[string]gwapi.ListenerSetStatus{},
			Services:           map[string]*corev1.Service{}},
		classes:   map[string]bool{},
		gateways:  map[string]*gwapi.Gateway{},
		listeners: map[string][]*gatewayListener{},
		taken:     map[netip.Addr]string{},
		nsLabels:  map[string]labels.Set{},

		backendTLS:      map[backendTLSTarget]*backendTLSPolicy{},
		serviceGateways: map[string][]string{},
		clientCerts:     map[string]*tls.Certificate{},
		gatewayRefs:     map[string]metav1.Condition{},
		sets:            map[string]*listenerSet{},
		setsOf:          map[string][]*listenerSet{},
		serviceWanted:   map[string]serviceWant{},
		hostnames:       map[string][]string{},
	}
	for _, ns := range in.Namespaces {
		g.nsLabels[ns.Name] = ns.Labels
	}
	g.translateClasses()
	g.resolveBackendTLS()
	gws := slices.Clone(in.Gateways)
	slices.SortFunc(gws, func(a, b *gwapi.Gateway) int { return compareObjects(&a.ObjectMeta, &b.ObjectMeta) })
	for _, gw := range gws {
		if g.classes[string(gw.Spec.GatewayClassName)] {
			g.gateways[gw.Namespace+"/"+gw.Name] = gw
		}
	}
	// Addresses first, in age order, so the oldest Gateway keeps an
	// address another asks for.
	addrs := map[string][]netip.Addr{}
	addrProblems := map[string]*metav1.Condition{}
	for _, gw := range gws {
		key := gw.Namespace + "/" + gw.Name
		if g.gateways[key] != nil {
			addrs[key], addrProblems[key] = g.addresses(gw, key)
		}
	}
	for _, gw := range gws {
		key := gw.Namespace + "/" + gw.Name
		if g.gateways[key] != nil {
			g.translateListeners(gw, key, addrs[key])
			g.clientCerts[key], g.gatewayRefs[key] = g.backendClientCert(gw)
		}
	}
	g.translateListenerSets(addrs)
	g.gatewayServices()
	routes := slices.Clone(in.HTTPRoutes)
	slices.SortFunc(routes, func(a, b *gwapi.HTTPRoute) int { return compareObjects(&a.ObjectMeta, &b.ObjectMeta) })
	for _, r := range routes {
		g.translateHTTPRoute(r)
	}
	grpcRoutes := slices.Clone(in.GRPCRoutes)
	slices.SortFunc(grpcRoutes, func(a, b *gwapi.GRPCRoute) int { return compareObjects(&a.ObjectMeta, &b.ObjectMeta) })
	for _, r := range grpcRoutes {
		g.translateGRPCRoute(r)
	}
	tlsRoutes := slices.Clone(in.TLSRoutes)
	slices.SortFunc(tlsRoutes, func(a, b *gwapi.TLSRoute) int { return compareObjects(&a.ObjectMeta, &b.ObjectMeta) })
	for _, r := range tlsRoutes {
		g.translateTLSRoute(r)
	}
	var fes []loader.Service
	for _, gw := range gws {
		key := gw.Namespace + "/" + gw.Name
		if g.gateways[key] == nil {
			continue
		}
		fes = append(fes, g.finishGateway(gw, key, addrs[key], addrProblems[key])...)
	}
	g.backendTLSStatuses()
	return fes, g.status
}

// compareObjects orders objects as the Gateway API's tie-breakers do:
// oldest first, then by namespace/name.
func compareObjects(a, b *metav1.ObjectMeta) int {
	if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
		return c
	}
	return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
}

func condition(typ string, ok bool, reason, msg string, gen int64) metav1.Condition {
	s := metav1.ConditionFalse
	if ok {
		s = metav1.ConditionTrue
	}
	return metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen}
}

func (g *gatewayTranslator) translateClasses() {
	for _, c := range g.gin.Classes {
		if string(c.Spec.ControllerName) != g.ctrl {
			continue
		}
		accepted := condition(string(gwapi.GatewayClassConditionStatusAccepted), true,
			string(gwapi.GatewayClassReasonAccepted), "Handled by nodegress", c.Generation)
		if c.Spec.ParametersRef != nil {
			accepted = condition(string(gwapi.GatewayClassConditionStatusAccepted), false,
				string(gwapi.GatewayClassReasonInvalidParameters), "nodegress takes no parameters", c.Generation)
		}
		g.status.Classes[c.Name] = []metav1.Condition{accepted,
			condition(string(gwapi.GatewayClassConditionStatusSupportedVersion), true,
				string(gwapi.GatewayClassReasonSupportedVersion), "Gateway API standard channel v1.6", c.Generation)}
		g.classes[c.Name] = c.Spec.ParametersRef == nil
	}
}

// addresses returns a Gateway's addresses: spec.addresses, else the one it
// already has from the pool, else the first free one from the pool
// starting at a hash of its name. A problem is returned as the condition
// to report.
func (g *gatewayTranslator) addresses(gw *gwapi.Gateway, key string) ([]netip.Addr, *metav1.Condition) {
	if inf := gw.Spec.Infrastructure; inf != nil && inf.ParametersRef != nil {
		c := condition(string(gwapi.GatewayConditionAccepted), false, string(gwapi.GatewayReasonInvalidParameters),
			"nodegress takes no infrastructure parameters", gw.Generation)
		return nil, &c
	}
	// An IPAddress entry without a value asks for an address from the
	// pool (or the load balancer), like no entry at all.
	fromPool := len(gw.Spec.Addresses) == 0 ||
		slices.ContainsFunc(gw.Spec.Addresses, func(a gwapi.GatewaySpecAddress) bool { return a.Value == "" })
	if len(gw.Spec.Addresses) > 0 {
		var out []netip.Addr
		for _, a := range gw.Spec.Addresses {
			if a.Type != nil && *a.Type != gwapi.IPAddressType {
				c := condition(string(gwapi.GatewayConditionAccepted), false, string(gwapi.GatewayReasonUnsupportedAddress),
					fmt.Sprintf("address type %s is not supported, only IPAddress", *a.Type), gw.Generation)
				return nil, &c
			}
			if a.Value == "" {
				continue
			}
			ip, err := parseIPv4(a.Value)
			if err == nil && slices.Contains(out, ip) {
				continue // named twice
			}
			if err != nil || g.taken[ip] != "" || !g.usable(ip) {
				msg := fmt.Sprintf("address %q is not a usable IPv4 address", a.Value)
				switch {
				case err != nil:
				case g.taken[ip] != "":
					msg = fmt.Sprintf("address %s is used by gateway %s", ip, g.taken[ip])
				default:
					msg = fmt.Sprintf("address %s is outside the pool and the ranges Gateways may use (--gateway-address-ranges)", ip)
				}
				c := condition(string(gwapi.GatewayConditionProgrammed), false, string(gwapi.GatewayReasonAddressNotUsable), msg, gw.Generation)
				if g.gin.AddressSource == GatewayAddressService {
					// Kept, with no address of a refused list.
					g.wantService(gw, key, serviceWant{loadBalancer: fromPool})
				}
				return nil, &c
			}
			out = append(out, ip)
		}
		// Reserved only once every entry is usable: a Gateway refused for
		// one address must not hold the others.
		for _, ip := range out {
			g.taken[ip] = key
		}
		if !fromPool {
			if g.gin.AddressSource == GatewayAddressService {
				// The Service only shows them: they are served whatever
				// becomes of it, and no load balancer is asked for one.
				g.wantService(gw, key, serviceWant{externalIPs: out})
			}
			return out, nil
		}
		more, c := g.assignedAddresses(gw, key, out)
		return append(out, more...), c
	}
	return g.assignedAddresses(gw, key, nil)
}

// assignedAddresses are the addresses of a Gateway that asks for some
// without naming them (besides the named ones): the load balancer IPs of
// its Service, or one from the pool.
func (g *gatewayTranslator) assignedAddresses(gw *gwapi.Gateway, key string, named []netip.Addr) ([]netip.Addr, *metav1.Condition) {
	if g.gin.AddressSource == GatewayAddressService {
		return g.serviceAddresses(gw, key, named)
	}
	ip, c := g.poolAddress(gw, key)
	if c != nil {
		return nil, c
	}
	return []netip.Addr{ip}, nil
}

// poolAddress gives a Gateway its pool address: the one in its status if
// still free, else a new one.
func (g *gatewayTranslator) poolAddress(gw *gwapi.Gateway, key string) (netip.Addr, *metav1.Condition) {
	for _, a := range gw.Status.Addresses {
		if ip, err := parseIPv4(a.Value); err == nil && g.inPool(ip) && g.taken[ip] == "" {
			g.taken[ip] = key
			return ip, nil
		}
	}
	if ip, ok := g.allocate(key); ok {
		g.taken[ip] = key
		return ip, nil
	}
	msg := "no address pool configured (--gateway-address-pool) and no spec.addresses"
	if len(g.gin.AddressPool) > 0 {
		msg = "the gateway address pool is exhausted"
	}
	c := condition(string(gwapi.GatewayConditionProgrammed), false, string(gwapi.GatewayReasonAddressNotAssigned), msg, gw.Generation)
	return netip.Addr{}, &c
}

// usable reports whether a Gateway may name ip in spec.addresses: an
// address of the pool or of the configured ranges, or any address when no
// range is configured.
func (g *gatewayTranslator) usable(ip netip.Addr) bool {
	if len(g.gin.AddressRanges) == 0 || g.inPool(ip) {
		return true
	}
	return slices.ContainsFunc(g.gin.AddressRanges, func(p netip.Prefix) bool { return p.Contains(ip) })
}

func (g *gatewayTranslator) inPool(ip netip.Addr) bool {
	for _, p := range g.gin.AddressPool {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// allocate picks a free pool address, starting at a hash of the key so
// that Gateways keep their address whatever order they come in, and every
// node computes the same one.
func (g *gatewayTranslator) allocate(key string) (netip.Addr, bool) {
	var total uint64
	for _, p := range g.gin.AddressPool {
		total += poolSize(p)
	}
	if total == 0 {
		return netip.Addr{}, false
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(key))
	start := h.Sum64() % total
	for i := range min(total, 1<<16) {
		ip := poolAddr(g.gin.AddressPool, (start+i)%total)
		if g.taken[ip] == "" {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// poolSize is the number of usable host addresses of an IPv4 prefix: the
// network and broadcast addresses of prefixes shorter than /31 are left
// out.
func poolSize(p netip.Prefix) uint64 {
	if !p.Addr().Is4() {
		return 0
	}
	n := uint64(1) << (32 - p.Bits())
	if p.Bits() < 31 {
		n -= 2
	}
	return n
}

func poolAddr(pool []netip.Prefix, i uint64) netip.Addr {
	for _, p := range pool {
		n := poolSize(p)
		if i >= n {
			i -= n
			continue
		}
		b := p.Masked().Addr().As4()
		v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		if p.Bits() < 31 {
			v++
		}
		v += uint32(i)
		return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	return netip.Addr{}
}

var (
	httpRouteKind = gwapi.RouteGroupKind{Group: ptr(gwapi.Group(gwapi.GroupName)), Kind: kindHTTPRoute}
	grpcRouteKind = gwapi.RouteGroupKind{Group: ptr(gwapi.Group(gwapi.GroupName)), Kind: kindGRPCRoute}
	tlsRouteKind  = gwapi.RouteGroupKind{Group: ptr(gwapi.Group(gwapi.GroupName)), Kind: kindTLSRoute}
)

// translateListeners validates a Gateway's listeners.
func (g *gatewayTranslator) translateListeners(gw *gwapi.Gateway, key string, addrs []netip.Addr) {
	own := listenerOwner{gw: gw, namespace: gw.Namespace, kind: kindGateway, generation: gw.Generation}
	byPort := map[gwapi.PortNumber][]int{}
	for i, l := range gw.Spec.Listeners {
		byPort[l.Port] = append(byPort[l.Port], i)
	}
	for i := range gw.Spec.Listeners {
		l := &gw.Spec.Listeners[i]
		gl := g.translateListener(own, key+"/"+string(l.Name), l, addrs, func(gl *gatewayListener, c *listenerConds) {
			// A Gateway's own listeners conflict with each other both ways.
			for _, j := range byPort[l.Port] {
				if j != i {
					c.conflictWith(gl, &gw.Spec.Listeners[j], false)
				}
			}
		})
		g.listeners[key] = append(g.listeners[key], gl)
	}
}

// listenerOwner is the object a listener belongs to: its Gateway, or a
// ListenerSet attached to it. Its namespace is the one allowedRoutes
// "Same" and certificate references mean.
type listenerOwner struct {
	gw         *gwapi.Gateway
	namespace  string
	kind       string // Gateway or ListenerSet, for ReferenceGrants
	generation int64
}

// listenerConds are a listener's conditions as they are decided.
type listenerConds struct {
	gen                            int64
	accepted, resolved, conflicted metav1.Condition
	conflictProgrammed             bool // Programmed says the conflict
}

// conflictWith applies a conflict with another listener on the same
// port: a different protocol, or the same hostname (TLS listeners of both
// modes may share a port: the server name chooses). rejected: the listener loses to one of higher precedence (it
// is not accepted); otherwise both are Conflicted.
func (c *listenerConds) conflictWith(gl *gatewayListener, o *gwapi.Listener, rejected bool) {
	l := gl.spec
	var reason gwapi.ListenerConditionReason
	var msg string
	switch {
	case o.Protocol != l.Protocol:
		reason, msg = gwapi.ListenerReasonProtocolConflict, fmt.Sprintf("listener %s uses port %d with protocol %s", o.Name, l.Port, o.Protocol)
	case ptrValue(o.Hostname) == ptrValue(l.Hostname):
		if c.conflicted.Status == metav1.ConditionTrue {
			return // a protocol conflict says more
		}
		reason, msg = gwapi.ListenerReasonHostnameConflict, fmt.Sprintf("listener %s uses port %d with the same hostname", o.Name, l.Port)
	default:
		return
	}
	c.conflicted = condition(string(gwapi.ListenerConditionConflicted), true, string(reason), msg, c.gen)
	if rejected {
		c.accepted = condition(string(gwapi.ListenerConditionAccepted), false, string(reason), msg, c.gen)
		c.conflictProgrammed = true
	}
}

// translateListener translates one listener; conflicts decides its
// conflicts with the others.
func (g *gatewayTranslator) translateListener(own listenerOwner, key string, l *gwapi.Listener, addrs []netip.Addr,
	conflicts func(*gatewayListener, *listenerConds)) *gatewayListener {
	gl := &gatewayListener{gw: own.gw, owner: own, spec: l, key: key, addrs: addrs,
		status: &gwapi.ListenerStatus{Name: l.Name, SupportedKinds: []gwapi.RouteGroupKind{}}}
	if l.Hostname != nil {
		gl.hostname = strings.ToLower(string(*l.Hostname))
	}
	gen := own.generation
	c := &listenerConds{gen: gen,
		accepted:   condition(string(gwapi.ListenerConditionAccepted), true, string(gwapi.ListenerReasonAccepted), "", gen),
		resolved:   condition(string(gwapi.ListenerConditionResolvedRefs), true, string(gwapi.ListenerReasonResolvedRefs), "", gen),
		conflicted: condition(string(gwapi.ListenerConditionConflicted), false, string(gwapi.ListenerReasonNoConflicts), "", gen),
	}
	// The route kinds a listener's protocol takes; the first ones are its
	// default.
	var protoKinds []gwapi.RouteGroupKind
	switch l.Protocol {
	case gwapi.HTTPProtocolType, gwapi.HTTPSProtocolType:
		protoKinds = []gwapi.RouteGroupKind{httpRouteKind, grpcRouteKind}
	case gwapi.TLSProtocolType:
		protoKinds = []gwapi.RouteGroupKind{tlsRouteKind}
		gl.tlsMode = tlsMode(l)
	default:
		c.accepted = condition(string(gwapi.ListenerConditionAccepted), false, string(gwapi.ListenerReasonUnsupportedProtocol),
			fmt.Sprintf("protocol %s is not supported", l.Protocol), gen)
	}
	kinds := protoKinds
	if l.AllowedRoutes != nil && len(l.AllowedRoutes.Kinds) > 0 {
		kinds = nil
		for _, k := range l.AllowedRoutes.Kinds {
			i := slices.IndexFunc(protoKinds, func(pk gwapi.RouteGroupKind) bool {
				return cmp.Or(ptrValue(k.Group), gwapi.GroupName) == gwapi.GroupName && k.Kind == pk.Kind
			})
			if i < 0 {
				c.resolved = condition(string(gwapi.ListenerConditionResolvedRefs), false, string(gwapi.ListenerReasonInvalidRouteKinds),
					fmt.Sprintf("route kind %s is not supported on a %s listener", k.Kind, l.Protocol), gen)
				continue
			}
			kinds = append(kinds, protoKinds[i])
		}
	}
	conflicts(gl, c)
	if c.accepted.Status == metav1.ConditionTrue && len(kinds) > 0 {
		slices.SortStableFunc(kinds, func(a, b gwapi.RouteGroupKind) int { return strings.Compare(string(a.Kind), string(b.Kind)) })
		gl.status.SupportedKinds = slices.CompactFunc(kinds, func(a, b gwapi.RouteGroupKind) bool { return a.Kind == b.Kind })
	}
	if (l.Protocol == gwapi.HTTPSProtocolType || gl.tlsMode == gwapi.TLSModeTerminate) && c.accepted.Status == metav1.ConditionTrue {
		if cond := g.listenerCertificates(own, l); cond != nil {
			c.resolved = *cond
		}
		if v := frontendValidation(own.gw, l.Port); v != nil {
			var problem []metav1.Condition
			if gl.clientValidation, problem = g.clientValidation(own.gw, v); problem != nil {
				c.resolved, c.accepted = problem[0], problem[1]
			}
		}
	}
	gl.accepted = c.accepted.Status == metav1.ConditionTrue
	gl.valid = gl.accepted && c.resolved.Status == metav1.ConditionTrue &&
		c.conflicted.Status == metav1.ConditionFalse && len(addrs) > 0
	programmed := condition(string(gwapi.ListenerConditionProgrammed), gl.valid, string(gwapi.ListenerReasonProgrammed), "", gen)
	switch {
	case gl.valid:
	case c.conflictProgrammed:
		programmed.Reason, programmed.Message = c.conflicted.Reason, c.conflicted.Message
	case len(addrs) == 0:
		programmed.Reason, programmed.Message = string(gwapi.ListenerReasonPending), "the gateway has no address"
	default:
		programmed.Reason = string(gwapi.ListenerReasonInvalid)
	}
	gl.status.Conditions = []metav1.Condition{c.accepted, c.resolved, c.conflicted, programmed}
	return gl
}

// tlsMode is a TLS listener's mode (Terminate unless set).
func tlsMode(l *gwapi.Listener) gwapi.TLSModeType {
	if l.TLS != nil && l.TLS.Mode != nil {
		return *l.TLS.Mode
	}
	return gwapi.TLSModeTerminate
}

func ptr[T any](v T) *T { return &v }

func ptrValue[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// listenerCertificates loads an HTTPS listener's certificates into the
// proxy; it returns the ResolvedRefs condition when one does not resolve.
func (g *gatewayTranslator) listenerCertificates(own listenerOwner, l *gwapi.Listener) *metav1.Condition {
	gen := own.generation
	bad := func(reason gwapi.ListenerConditionReason, msg string) *metav1.Condition {
		c := condition(string(gwapi.ListenerConditionResolvedRefs), false, string(reason), msg, gen)
		return &c
	}
	if l.TLS == nil || (l.TLS.Mode != nil && *l.TLS.Mode != gwapi.TLSModeTerminate) {
		return bad(gwapi.ListenerReasonInvalidCertificateRef, "an HTTPS listener terminates TLS (mode Terminate) and needs certificateRefs")
	}
	if len(l.TLS.CertificateRefs) == 0 {
		return bad(gwapi.ListenerReasonInvalidCertificateRef, "no certificateRefs")
	}
	var hosts []string
	if l.Hostname != nil {
		hosts = []string{string(*l.Hostname)}
	}
	for _, ref := range l.TLS.CertificateRefs {
		if ptrValue(ref.Group) != "" || cmp.Or(ptrValue(ref.Kind), kindSecret) != kindSecret {
			return bad(gwapi.ListenerReasonInvalidCertificateRef, fmt.Sprintf("certificateRef %s is not a core Secret", ref.Name))
		}
		ns := cmp.Or(string(ptrValue(ref.Namespace)), own.namespace)
		if ns != own.namespace && !g.granted(own.namespace, gwapi.GroupName, own.kind, ns, "", kindSecret, string(ref.Name)) {
			return bad(gwapi.ListenerReasonRefNotPermitted, fmt.Sprintf("no ReferenceGrant in %s allows secret %s", ns, ref.Name))
		}
		sec := g.secrets[ns+"/"+string(ref.Name)]
		if sec == nil {
			return bad(gwapi.ListenerReasonInvalidCertificateRef, fmt.Sprintf("secret %s/%s not found (or not kubernetes.io/tls)", ns, ref.Name))
		}
		cert, err := g.in.certs.parse(sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey])
		if err != nil {
			return bad(gwapi.ListenerReasonInvalidCertificateRef, fmt.Sprintf("secret %s/%s: %v", ns, ref.Name, err))
		}
		g.out.Certificates = append(g.out.Certificates, l7proxy.Certificate{Hosts: hosts, Cert: cert, Source: ns + "/" + string(ref.Name)})
	}
	return nil
}

// granted reports whether a ReferenceGrant in toNS lets fromKind objects
// of fromNS refer to the toKind object name.
func (g *gatewayTranslator) granted(fromNS, fromGroup, fromKind, toNS, toGroup, toKind, name string) bool {
	for _, rg := range g.gin.Grants {
		if rg.Namespace != toNS {
			continue
		}
		from := slices.ContainsFunc(rg.Spec.From, func(f gwapi.ReferenceGrantFrom) bool {
			return string(f.Group) == fromGroup && string(f.Kind) == fromKind && string(f.Namespace) == fromNS
		})
		to := slices.ContainsFunc(rg.Spec.To, func(t gwapi.ReferenceGrantTo) bool {
			return string(t.Group) == toGroup && string(t.Kind) == toKind && (t.Name == nil || string(*t.Name) == name)
		})
		if from && to {
			return true
		}
	}
	return false
}

// routeParent is the outcome of one parentRef.
type routeParent struct {
	ref      gwapi.ParentReference
	accepted metav1.Condition
}

// routeObject is an HTTPRoute or a GRPCRoute, translated to rules.
type routeObject struct {
	kind       string
	meta       *metav1.ObjectMeta
	parentRefs []gwapi.ParentReference
	hostnames  []gwapi.Hostname
	rules      []l7proxy.HTTPRouteRule
	// backends are a TLSRoute's, every rule's together.
	backends []l7proxy.WeightedBackend
	resolved metav1.Condition
	// services are those the backendRefs name (namespace/name).
	services []string
}

func (r *routeObject) key() string { return r.meta.Namespace + "/" + r.meta.Name }

func (g *gatewayTranslator) translateHTTPRoute(r *gwapi.HTTPRoute) {
	rules, res := g.routeRules(r)
	if parents := g.translateRoute(&routeObject{kind: kindHTTPRoute, meta: &r.ObjectMeta, parentRefs: r.Spec.ParentRefs,
		hostnames: r.Spec.Hostnames, rules: rules, resolved: res.cond, services: res.services}); len(parents) > 0 {
		g.status.Routes[kindHTTPRoute][r.Namespace+"/"+r.Name] = parents
	}
}

func (g *gatewayTranslator) translateGRPCRoute(r *gwapi.GRPCRoute) {
	rules, res := g.grpcRouteRules(r)
	if parents := g.translateRoute(&routeObject{kind: kindGRPCRoute, meta: &r.ObjectMeta, parentRefs: r.Spec.ParentRefs,
		hostnames: r.Spec.Hostnames, rules: rules, resolved: res.cond, services: res.services}); len(parents) > 0 {
		g.status.Routes[kindGRPCRoute][r.Namespace+"/"+r.Name] = parents
	}
}

func (g *gatewayTranslator) translateTLSRoute(r *gwapi.TLSRoute) {
	res := newRefResolution(r.Generation)
	var refs []ruleBackend
	for _, rule := range r.Spec.Rules {
		for _, b := range rule.BackendRefs {
			refs = append(refs, ruleBackend{ref: b})
		}
	}
	backends := g.ruleBackends(r.Namespace, kindTLSRoute, refs, false, res)
	if parents := g.translateRoute(&routeObject{kind: kindTLSRoute, meta: &r.ObjectMeta, parentRefs: r.Spec.ParentRefs,
		hostnames: r.Spec.Hostnames, backends: backends, resolved: res.cond, services: res.services}); len(parents) > 0 {
		g.status.Routes[kindTLSRoute][r.Namespace+"/"+r.Name] = parents
	}
}

// translateRoute attaches a route to the listeners of its parentRefs and
// returns its parents' statuses (those of Gateways of ours).
func (g *gatewayTranslator) translateRoute(r *routeObject) []gwapi.RouteParentStatus {
	var parents []gwapi.RouteParentStatus
	for _, ref := range r.parentRefs {
		if cmp.Or(string(ptrValue(ref.Group)), gwapi.GroupName) != gwapi.GroupName {
			continue
		}
		parentKey := cmp.Or(string(ptrValue(ref.Namespace)), r.meta.Namespace) + "/" + string(ref.Name)
		var gwKey string
		var listeners []*gatewayListener
		switch cmp.Or(string(ptrValue(ref.Kind)), kindGateway) {
		case kindGateway:
			gwKey, listeners = parentKey, g.listeners[parentKey]
		case kindListenerSet:
			if set := g.sets[parentKey]; set != nil {
				gwKey, listeners = set.gwKey, set.listeners
			}
		}
		if g.gateways[gwKey] == nil {
			continue // not ours to answer for
		}
		accepted := g.attach(r, ref, gwKey, listeners)
		parents = append(parents, gwapi.RouteParentStatus{
			ParentRef:      ref,
			ControllerName: gwapi.GatewayController(g.ctrl),
			Conditions:     []metav1.Condition{accepted, r.resolved},
		})
	}
	return parents
}

// attach attaches a route to the listeners its parentRef selects and
// returns its Accepted condition for that parent.
func (g *gatewayTranslator) attach(r *routeObject, ref gwapi.ParentReference, gwKey string, listeners []*gatewayListener) metav1.Condition {
	gen := r.meta.Generation
	reason, msg := gwapi.RouteReasonNoMatchingParent, "no listener of the parent matches sectionName and port"
	attached := false
	for _, gl := range listeners {
		if ref.SectionName != nil && *ref.SectionName != gl.spec.Name {
			continue
		}
		if ref.Port != nil && *ref.Port != gl.spec.Port {
			continue
		}
		if !gl.accepted || !g.allows(gl, r.meta.Namespace) || !gl.takes(r.kind) {
			if reason == gwapi.RouteReasonNoMatchingParent {
				reason, msg = gwapi.RouteReasonNotAllowedByListeners, "the listeners do not allow this route"
			}
			continue
		}
		hosts, ok := intersectHostnames(gl.hostname, r.hostnames)
		if !ok {
			if reason != gwapi.RouteReasonAccepted {
				reason, msg = gwapi.RouteReasonNoMatchingListenerHostname, "no hostname matches the listener's"
			}
			continue
		}
		gl.status.AttachedRoutes++
		for _, svc := range r.services {
			g.serviceGateways[svc] = append(g.serviceGateways[svc], gwKey)
		}
		if r.kind == kindTLSRoute {
			gl.tlsRoutes = append(gl.tlsRoutes, l7proxy.TLSRoute{Source: r.key(), Hostnames: hosts, Backends: r.backends})
		} else {
			gl.routes = append(gl.routes, l7proxy.HTTPRoute{Source: r.key(), Hostnames: hosts,
				Rules: g.withClientCert(r.rules, gwKey, g.clientCerts[gwKey])})
		}
		attached = true
		reason, msg = gwapi.RouteReasonAccepted, ""
	}
	return condition(string(gwapi.RouteConditionAccepted), attached, string(reason), msg, gen)
}

// takes reports whether the listener takes routes of kind.
func (gl *gatewayListener) takes(kind string) bool {
	return slices.ContainsFunc(gl.status.SupportedKinds, func(k gwapi.RouteGroupKind) bool { return string(k.Kind) == kind })
}

// allows applies a listener's allowedRoutes namespaces to a route's
// namespace.
func (g *gatewayTranslator) allows(gl *gatewayListener, ns string) bool {
	from := gwapi.NamespacesFromSame
	var sel *metav1.LabelSelector
	if ar := gl.spec.AllowedRoutes; ar != nil && ar.Namespaces != nil {
		if ar.Namespaces.From != nil {
			from = *ar.Namespaces.From
		}
		sel = ar.Namespaces.Selector
	}
	return g.namespaceAllowed(from, sel, ns, gl.owner.namespace)
}

// namespaceAllowed applies an allowedRoutes or allowedListeners rule to a
// namespace; same is the namespace "Same" means.
func (g *gatewayTranslator) namespaceAllowed(from gwapi.FromNamespaces, sel *metav1.LabelSelector, ns, same string) bool {
	switch from {
	case gwapi.NamespacesFromAll:
		return true
	case gwapi.NamespacesFromSame:
		return ns == same
	case gwapi.NamespacesFromSelector:
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil || sel == nil {
			return false
		}
		l, ok := g.nsLabels[ns]
		return ok && s.Matches(l)
	}
	return false
}

// intersectHostnames returns a route's hostnames on a listener: those the
// listener's hostname covers (a route wildcard covering the listener's
// hostname yields the listener's), or the listener's when the route has
// none. ok is false when none intersect.
func intersectHostnames(listener string, route []gwapi.Hostname) ([]string, bool) {
	if len(route) == 0 {
		if listener == "" {
			return nil, true
		}
		return []string{listener}, true
	}
	var out []string
	for _, rh := range route {
		h := strings.ToLower(string(rh))
		switch {
		case listener == "" || h == listener || hostCovers(listener, h):
			out = append(out, h)
		case hostCovers(h, listener):
			out = append(out, listener)
		}
	}
	slices.Sort(out)
	out = slices.Compact(out)
	return out, len(out) > 0
}

// hostCovers reports whether wildcard pattern "*.suffix" covers host (one
// or more labels more); a pattern without wildcard covers nothing else.
func hostCovers(pattern, host string) bool {
	if !strings.HasPrefix(pattern, "*.") {
		return false
	}
	s := pattern[1:]
	return len(host) > len(s) && strings.HasSuffix(host, s)
}

// refResolution is a route's ResolvedRefs condition (true until the
// first reference that does not resolve) and the Services its backendRefs
// name (namespace/name), whose BackendTLSPolicies get the route's
// Gateways as ancestors.
type refResolution struct {
	cond     metav1.Condition
	services []string
}

func newRefResolution(gen int64) *refResolution {
	return &refResolution{cond: condition(string(gwapi.RouteConditionResolvedRefs), true, string(gwapi.RouteReasonResolvedRefs), "", gen)}
}

func (r *refResolution) fail(reason gwapi.RouteConditionReason, msg string) {
	if r.cond.Status == metav1.ConditionTrue {
		r.cond = condition(string(gwapi.RouteConditionResolvedRefs), false, string(reason), msg, r.cond.ObservedGeneration)
	}
}

// ruleBackend is a backendRef with its own header filters; unsupported
// names a filter of it nodegress cannot apply.
type ruleBackend struct {
	ref               gwapi.BackendRef
	reqEdit, respEdit *l7proxy.HeaderEdit
	unsupported       string
}

// filter applies one of a backendRef's filters (of an HTTPRoute or a
// GRPCRoute: the same types and fields): the header modifiers; any other
// makes the backend answer 500.
func (rb *ruleBackend) filter(typ string, req, resp *gwapi.HTTPHeaderFilter) {
	switch {
	case typ == string(gwapi.HTTPRouteFilterRequestHeaderModifier) && req != nil:
		rb.reqEdit = headerEdit(req)
	case typ == string(gwapi.HTTPRouteFilterResponseHeaderModifier) && resp != nil:
		rb.respEdit = headerEdit(resp)
	default:
		rb.unsupported = fmt.Sprintf("filter %s is not supported on a backendRef", typ)
	}
}

// ruleBackends resolves a rule's backendRefs of a route of kind.
func (g *gatewayTranslator) ruleBackends(routeNS, kind string, refs []ruleBackend, grpc bool, res *refResolution) []l7proxy.WeightedBackend {
	out := make([]l7proxy.WeightedBackend, 0, len(refs))
	for _, b := range refs {
		if ptrValue(b.ref.Group) == "" && cmp.Or(string(ptrValue(b.ref.Kind)), kindService) == kindService {
			res.services = append(res.services, cmp.Or(string(ptrValue(b.ref.Namespace)), routeNS)+"/"+string(b.ref.Name))
		}
		up, reason, msg := g.routeBackend(routeNS, kind, b.ref, grpc)
		if reason != "" {
			res.fail(reason, msg)
		}
		if b.unsupported != "" && up != "" {
			// Never skipped: requests sent to this backend get 500.
			res.fail(gwapi.RouteReasonUnsupportedValue, fmt.Sprintf("backendRef %s: %s", b.ref.Name, b.unsupported))
			up = ""
		}
		out = append(out, l7proxy.WeightedBackend{Upstream: up, Weight: ptrValue(b.ref.Weight) + boolInt32(b.ref.Weight == nil),
			RequestHeaders: b.reqEdit, ResponseHeaders: b.respEdit})
	}
	return out
}

// requestMirror resolves a RequestMirror filter of a route of kind
// (HTTPRoute, or GRPCRoute, whose mirrors are spoken to over h2c like its
// backends) in routeNS. A backend that does not resolve fails
// ResolvedRefs and is left out (the API's answer): the rule serves
// without that mirror.
func (g *gatewayTranslator) requestMirror(routeNS, kind string, f *gwapi.HTTPRequestMirrorFilter, res *refResolution) (l7proxy.Mirror, bool) {
	up, reason, msg := g.routeBackend(routeNS, kind, gwapi.BackendRef{BackendObjectReference: f.BackendRef}, kind == kindGRPCRoute)
	if reason != "" {
		res.fail(reason, "requestMirror: "+msg)
		return l7proxy.Mirror{}, false
	}
	m := l7proxy.Mirror{Upstream: up}
	switch {
	case f.Percent != nil:
		m.Numerator, m.Denominator = *f.Percent, 100
	case f.Fraction != nil:
		m.Numerator, m.Denominator = f.Fraction.Numerator, cmp.Or(ptrValue(f.Fraction.Denominator), 100)
	}
	// The API server keeps 0 <= numerator <= denominator; anything else
	// is taken as the nearest meaningful share.
	m.Numerator = max(m.Numerator, 0)
	if m.Denominator <= 0 || m.Numerator >= m.Denominator {
		m.Numerator, m.Denominator = 0, 0 // every request
	}
	return m, true
}

// defaultRetryBackoff is the wait before a first retry when a rule's
// retry policy names none (the API leaves it to implementations).
const defaultRetryBackoff = 25 * time.Millisecond

// retryPolicy translates a rule's retry: without attempts, one retry.
func retryPolicy(rt *gwapi.HTTPRouteRetry) (*l7proxy.Retry, error) {
	out := &l7proxy.Retry{Attempts: 1, Backoff: defaultRetryBackoff}
	if rt.Attempts != nil {
		out.Attempts = max(*rt.Attempts, 0)
	}
	for _, c := range rt.Codes {
		if c < 400 || c > 599 {
			return nil, fmt.Errorf("retry code %d is not an error status", c)
		}
		out.Codes = append(out.Codes, int(c))
	}
	if rt.Backoff != nil {
		d, err := time.ParseDuration(string(*rt.Backoff))
		if err != nil {
			return nil, fmt.Errorf("retry backoff %q: %w", *rt.Backoff, err)
		}
		out.Backoff = d
	}
	return out, nil
}

// finishRule applies the API's answers to a rule that cannot forward: a
// filter that cannot be applied is never skipped, requests it would have
// processed get 500; so does a rule with no backend (and no redirect).
func (g *gatewayTranslator) finishRule(pr *l7proxy.HTTPRouteRule, kind, key, unsupported string) {
	switch {
	case unsupported != "":
		pr.Backends = []l7proxy.WeightedBackend{{Weight: 1}}
		pr.Filters = l7proxy.Filters{}
		g.report(kind, key, false, errors.New(unsupported+"; requests to the rule get 500"))
	case len(pr.Backends) == 0 && pr.Filters.Redirect == nil:
		pr.Backends = []l7proxy.WeightedBackend{{Weight: 1}}
	}
}

// routeRules translates an HTTPRoute's rules and returns its ResolvedRefs
// condition.
func (g *gatewayTranslator) routeRules(r *gwapi.HTTPRoute) ([]l7proxy.HTTPRouteRule, *refResolution) {
	res := newRefResolution(r.Generation)
	out := make([]l7proxy.HTTPRouteRule, 0, len(r.Spec.Rules))
	for _, rule := range r.Spec.Rules {
		pr := l7proxy.HTTPRouteRule{}
		for _, m := range rule.Matches {
			pr.Matches = append(pr.Matches, httpMatch(m))
		}
		unsupported := ""
		for _, f := range rule.Filters {
			if f.Type == gwapi.HTTPRouteFilterRequestMirror && f.RequestMirror != nil {
				if m, ok := g.requestMirror(r.Namespace, kindHTTPRoute, f.RequestMirror, res); ok {
					pr.Filters.Mirrors = append(pr.Filters.Mirrors, m)
				}
				continue
			}
			if err := applyFilter(&pr.Filters, f); err != nil {
				unsupported = err.Error()
			}
		}
		if t := rule.Timeouts; t != nil {
			// Validated by the API server's CEL rules; "0s" turns a
			// timeout off.
			for _, x := range []struct {
				v   *gwapi.Duration
				out *time.Duration
			}{{t.Request, &pr.Timeout}, {t.BackendRequest, &pr.BackendTimeout}} {
				if x.v == nil {
					continue
				}
				d, err := time.ParseDuration(string(*x.v))
				if err != nil {
					unsupported = fmt.Sprintf("timeout %q: %v", *x.v, err)
					continue
				}
				*x.out = d
			}
		}
		if rt := rule.Retry; rt != nil {
			var err error
			if pr.Retry, err = retryPolicy(rt); err != nil {
				unsupported = err.Error()
			}
		}
		if sp := rule.SessionPersistence; sp != nil {
			var err error
			if pr.Affinity, err = sessionAffinity(sp, r); err != nil {
				unsupported = err.Error()
			}
		}
		refs := make([]ruleBackend, 0, len(rule.BackendRefs))
		for _, b := range rule.BackendRefs {
			rb := ruleBackend{ref: b.BackendRef}
			for _, f := range b.Filters {
				rb.filter(string(f.Type), f.RequestHeaderModifier, f.ResponseHeaderModifier)
			}
			refs = append(refs, rb)
		}
		pr.Backends = g.ruleBackends(r.Namespace, kindHTTPRoute, refs, false, res)
		g.finishRule(&pr, kindHTTPRoute, r.Namespace+"/"+r.Name, unsupported)
		out = append(out, pr)
	}
	return out, res
}

func boolInt32(b bool) int32 {
	if b {
		return 1
	}
	return 0
}

func httpMatch(m gwapi.HTTPRouteMatch) l7proxy.HTTPMatch {
	out := l7proxy.HTTPMatch{PathType: l7proxy.PathPrefix, Path: "/"}
	if p := m.Path; p != nil {
		out.Path = cmp.Or(ptrValue(p.Value), "/")
		switch ptrValue(p.Type) {
		case gwapi.PathMatchExact:
			out.PathType = l7proxy.PathExact
		case gwapi.PathMatchRegularExpression:
			out.PathType = l7proxy.PathRegex
		}
	}
	if m.Method != nil {
		out.Method = string(*m.Method)
	}
	for _, h := range m.Headers {
		out.Headers = append(out.Headers, l7proxy.ValueMatch{Name: textproto.CanonicalMIMEHeaderKey(string(h.Name)),
			Value: h.Value, Regex: ptrValue(h.Type) == gwapi.HeaderMatchRegularExpression})
	}
	for _, q := range m.QueryParams {
		out.Query = append(out.Query, l7proxy.ValueMatch{Name: string(q.Name), Value: q.Value,
			Regex: ptrValue(q.Type) == gwapi.QueryParamMatchRegularExpression})
	}
	return out
}

func headerEdit(f *gwapi.HTTPHeaderFilter) *l7proxy.HeaderEdit {
	e := &l7proxy.HeaderEdit{}
	for _, h := range f.Set {
		e.Set = append(e.Set, l7proxy.Field{Name: textproto.CanonicalMIMEHeaderKey(string(h.Name)), Value: h.Value})
	}
	for _, h := range f.Add {
		e.Add = append(e.Add, l7proxy.Field{Name: textproto.CanonicalMIMEHeaderKey(string(h.Name)), Value: h.Value})
	}
	for _, n := range f.Remove {
		e.Remove = append(e.Remove, textproto.CanonicalMIMEHeaderKey(n))
	}
	return e
}

func pathModifier(m *gwapi.HTTPPathModifier) *l7proxy.PathModifier {
	if m == nil {
		return nil
	}
	switch m.Type {
	case gwapi.FullPathHTTPPathModifier:
		return &l7proxy.PathModifier{ReplaceFullPath: true, Value: ptrValue(m.ReplaceFullPath)}
	case gwapi.PrefixMatchHTTPPathModifier:
		return &l7proxy.PathModifier{ReplacePrefixMatch: true, Value: ptrValue(m.ReplacePrefixMatch)}
	}
	return nil
}

func corsFilter(c *gwapi.HTTPCORSFilter) *l7proxy.CORS {
	out := &l7proxy.CORS{AllowCredentials: ptrValue(c.AllowCredentials), MaxAge: c.MaxAge}
	for _, o := range c.AllowOrigins {
		out.AllowOrigins = append(out.AllowOrigins, string(o))
	}
	for _, m := range c.AllowMethods {
		out.AllowMethods = append(out.AllowMethods, string(m))
	}
	for _, h := range c.AllowHeaders {
		out.AllowHeaders = append(out.AllowHeaders, string(h))
	}
	for _, h := range c.ExposeHeaders {
		out.ExposeHeaders = append(out.ExposeHeaders, string(h))
	}
	return out
}

// applyFilter adds one rule filter; an error names a filter nodegress
// cannot apply.
func applyFilter(fs *l7proxy.Filters, f gwapi.HTTPRouteFilter) error {
	switch f.Type {
	case gwapi.HTTPRouteFilterRequestHeaderModifier:
		if f.RequestHeaderModifier != nil {
			fs.RequestHeaders = headerEdit(f.RequestHeaderModifier)
		}
	case gwapi.HTTPRouteFilterResponseHeaderModifier:
		if f.ResponseHeaderModifier != nil {
			fs.ResponseHeaders = headerEdit(f.ResponseHeaderModifier)
		}
	case gwapi.HTTPRouteFilterRequestRedirect:
		if r := f.RequestRedirect; r != nil {
			fs.Redirect = &l7proxy.Redirect{Scheme: ptrValue(r.Scheme), Hostname: string(ptrValue(r.Hostname)),
				Port: int(ptrValue(r.Port)), Path: pathModifier(r.Path), StatusCode: ptrValue(r.StatusCode)}
		}
	case gwapi.HTTPRouteFilterURLRewrite:
		if r := f.URLRewrite; r != nil {
			fs.Rewrite = &l7proxy.Rewrite{Hostname: string(ptrValue(r.Hostname)), Path: pathModifier(r.Path)}
		}
	case gwapi.HTTPRouteFilterCORS:
		if c := f.CORS; c != nil {
			pc := corsFilter(c)
			if err := l7proxy.CheckCORS(pc); err != nil {
				return fmt.Errorf("filter CORS: %w", err)
			}
			fs.CORS = pc
		}
	default:
		return fmt.Errorf("filter %s is not supported", f.Type)
	}
	return nil
}

// routeBackend resolves a backendRef of a route of kind in namespace
// routeNS; grpc makes the upstream h2c whatever the port's appProtocol.
func (g *gatewayTranslator) routeBackend(routeNS, kind string, b gwapi.BackendRef, grpc bool) (string, gwapi.RouteConditionReason, string) {
	if ptrValue(b.Group) != "" || cmp.Or(string(ptrValue(b.Kind)), kindService) != kindService {
		return "", gwapi.RouteReasonInvalidKind, fmt.Sprintf("backendRef %s: kind %s/%s is not supported", b.Name, ptrValue(b.Group), ptrValue(b.Kind))
	}
	ns := cmp.Or(string(ptrValue(b.Namespace)), routeNS)
	if ns != routeNS && !g.granted(routeNS, gwapi.GroupName, kind, ns, "", kindService, string(b.Name)) {
		return "", gwapi.RouteReasonRefNotPermitted, fmt.Sprintf("no ReferenceGrant in %s allows service %s", ns, b.Name)
	}
	if b.Port == nil {
		return "", gwapi.RouteReasonUnsupportedValue, fmt.Sprintf("backendRef %s has no port", b.Name)
	}
	svc, _ := g.service(ns + "/" + string(b.Name))
	if svc == nil {
		return "", gwapi.RouteReasonBackendNotFound, fmt.Sprintf("service %s/%s not found", ns, b.Name)
	}
	var ann ingressAnnotations
	var port *corev1.ServicePort
	for i := range svc.Spec.Ports {
		if p := &svc.Spec.Ports[i]; p.Port == int32(*b.Port) {
			port = p
			if grpc || ptrValue(p.AppProtocol) == "kubernetes.io/h2c" {
				ann.Protocol = l7proxy.ProtocolH2C
			}
		}
	}
	if port == nil {
		return "", gwapi.RouteReasonBackendNotFound, fmt.Sprintf("service %s/%s has no port %d", ns, b.Name, *b.Port)
	}
	if bt := g.backendTLSFor(ns, string(b.Name), port.Name); bt != nil && kind != kindTLSRoute {
		if bt.verify == nil {
			// The policy's status says why; requests get 500 rather
			// than go unverified.
			return "", "", ""
		}
		ann.Protocol, ann.TLS, ann.TLSPolicy = l7proxy.ProtocolHTTPS, bt.verify, bt.key
	}
	name, problem := g.serviceUpstream(serviceRef{Namespace: ns, Name: string(b.Name),
		Port: networkingv1.ServiceBackendPort{Number: int32(*b.Port)}}, ann)
	if problem != nil {
		return "", gwapi.RouteReasonBackendNotFound, problem.Error()
	}
	return name, "", ""
}

// finishGateway writes the proxy listeners and the status of a Gateway
// and returns its datapath frontends.
func (g *gatewayTranslator) finishGateway(gw *gwapi.Gateway, key string, addrs []netip.Addr, addrProblem *metav1.Condition) []loader.Service {
	gen := gw.Generation
	st := gwapi.GatewayStatus{Listeners: []gwapi.ListenerStatus{}}
	for _, a := range addrs {
		st.Addresses = append(st.Addresses, gwapi.GatewayStatusAddress{Type: ptr(gwapi.IPAddressType), Value: a.String()})
	}
	// A load balancer's hostnames are the Gateway's too, though only the
	// load balancer can use them.
	for _, h := range g.hostnames[key] {
		st.Addresses = append(st.Addresses, gwapi.GatewayStatusAddress{Type: ptr(gwapi.HostnameAddressType), Value: h})
	}
	// The API server refuses a status with more addresses than it holds
	// (named ones and a load balancer's together can be more): the IPs
	// come first, and each is served whether listed or not.
	leftOut := max(len(st.Addresses)-maxGatewayAddresses, 0)
	st.Addresses = st.Addresses[:len(st.Addresses)-leftOut]
	accepted := condition(string(gwapi.GatewayConditionAccepted), true, string(gwapi.GatewayReasonAccepted), "", gen)
	programmed := condition(string(gwapi.GatewayConditionProgrammed), true, string(gwapi.GatewayReasonProgrammed), "", gen)
	if addrProblem != nil {
		if addrProblem.Type == string(gwapi.GatewayConditionAccepted) {
			accepted = *addrProblem
			programmed = condition(string(gwapi.GatewayConditionProgrammed), false, string(gwapi.GatewayReasonInvalid), addrProblem.Message, gen)
		} else {
			programmed = *addrProblem
		}
	}
	valid := 0
	var invalid []string
	fes := map[string]*loader.Service{}
	var names []string
	for _, gl := range g.listeners[key] {
		st.Listeners = append(st.Listeners, *gl.status)
		if !gl.valid {
			invalid = append(invalid, string(gl.spec.Name))
			continue
		}
		valid++
		g.serveListener(gl, key, addrs, fes, &names)
	}
	switch {
	case addrProblem != nil || len(invalid) == 0:
	case valid == 0:
		accepted = condition(string(gwapi.GatewayConditionAccepted), false, string(gwapi.GatewayReasonListenersNotValid),
			"no listener is valid", gen)
		programmed = condition(string(gwapi.GatewayConditionProgrammed), false, string(gwapi.GatewayReasonInvalid), "no listener is valid", gen)
	default:
		// The valid listeners serve; the Gateway says some do not.
		accepted = condition(string(gwapi.GatewayConditionAccepted), true, string(gwapi.GatewayReasonListenersNotValid),
			"invalid listeners: "+strings.Join(invalid, ", "), gen)
	}
	if n := g.finishListenerSets(key, accepted.Status == metav1.ConditionTrue, addrs, fes, &names); len(g.setsOf[key]) > 0 {
		st.AttachedListenerSets = ptr(n)
	}
	if leftOut > 0 {
		note := fmt.Sprintf("%d addresses left out of status.addresses, which holds %d", leftOut, maxGatewayAddresses)
		programmed.Message = strings.TrimPrefix(programmed.Message+"; "+note, "; ")
	}
	st.Conditions = []metav1.Condition{accepted, programmed, g.gatewayRefs[key]}
	if insecureFrontend(gw) {
		st.Conditions = append(st.Conditions, condition(string(gwapi.GatewayConditionInsecureFrontendValidationMode), true,
			string(gwapi.GatewayReasonConfigurationChanged), "a client certificate validation accepts clients without a valid certificate", gen))
	}
	g.status.Gateways[key] = st
	slices.Sort(names)
	out := make([]loader.Service, 0, len(names))
	for _, n := range names {
		out = append(out, *fes[n])
	}
	return out
}

// serveListener gives a valid listener to the proxy and its frontends to
// the Gateway's datapath services.
func (g *gatewayTranslator) serveListener(gl *gatewayListener, key string, addrs []netip.Addr, fes map[string]*loader.Service, names *[]string) {
	pl := l7proxy.Listener{Name: gl.key, Hostname: gl.hostname, Routes: gl.routes, TLSRoutes: gl.tlsRoutes,
		ClientValidation: gl.clientValidation}
	switch gl.tlsMode {
	case gwapi.TLSModePassthrough:
		pl.Kind = l7proxy.ListenerTLSPassthrough
	case gwapi.TLSModeTerminate:
		pl.Kind = l7proxy.ListenerTLSTerminate
	}
	// TLS listeners arrive on the proxy's HTTPS listener too.
	kind := ListenerHTTP
	if gl.spec.Protocol != gwapi.HTTPProtocolType {
		kind = ListenerHTTPS
	}
	name := "gw/" + key + "/" + kind
	fe := fes[name]
	if fe == nil {
		fe = &loader.Service{Name: name, Proto: loader.TCP, L7: true, ProxyListener: kind}
		fes[name] = fe
		*names = append(*names, name)
	}
	for _, a := range addrs {
		f := loader.Frontend{Addr: a, Port: uint16(gl.spec.Port)}
		pl.Frontends = append(pl.Frontends, netip.AddrPortFrom(a, f.Port))
		if !slices.Contains(fe.Frontends, f) {
			fe.Frontends = append(fe.Frontends, f)
		}
	}
	g.out.Listeners = append(g.out.Listeners, pl)
}

// setConditions merges decided conditions into current ones, keeping the
// transition time of those whose status did not change.
func setConditions(cur []metav1.Condition, want []metav1.Condition, now metav1.Time) []metav1.Condition {
	out := slices.Clone(cur)
	for _, c := range want {
		c.LastTransitionTime = now
		meta.SetStatusCondition(&out, c)
	}
	return out
}

// grpcRouteRules translates a GRPCRoute's rules into the proxy's: a method
// match is a match on the request path (/service/method), and every
// backend speaks h2c.
func (g *gatewayTranslator) grpcRouteRules(r *gwapi.GRPCRoute) ([]l7proxy.HTTPRouteRule, *refResolution) {
	res := newRefResolution(r.Generation)
	out := make([]l7proxy.HTTPRouteRule, 0, len(r.Spec.Rules))
	for _, rule := range r.Spec.Rules {
		pr := l7proxy.HTTPRouteRule{}
		for _, m := range rule.Matches {
			pr.Matches = append(pr.Matches, grpcMatch(m))
		}
		unsupported := ""
		for _, f := range rule.Filters {
			switch {
			case f.Type == gwapi.GRPCRouteFilterRequestHeaderModifier && f.RequestHeaderModifier != nil:
				pr.Filters.RequestHeaders = headerEdit(f.RequestHeaderModifier)
			case f.Type == gwapi.GRPCRouteFilterResponseHeaderModifier && f.ResponseHeaderModifier != nil:
				pr.Filters.ResponseHeaders = headerEdit(f.ResponseHeaderModifier)
			case f.Type == gwapi.GRPCRouteFilterRequestMirror && f.RequestMirror != nil:
				if m, ok := g.requestMirror(r.Namespace, kindGRPCRoute, f.RequestMirror, res); ok {
					pr.Filters.Mirrors = append(pr.Filters.Mirrors, m)
				}
			default:
				unsupported = fmt.Sprintf("filter %s is not supported", f.Type)
			}
		}
		refs := make([]ruleBackend, 0, len(rule.BackendRefs))
		for _, b := range rule.BackendRefs {
			rb := ruleBackend{ref: b.BackendRef}
			for _, f := range b.Filters {
				rb.filter(string(f.Type), f.RequestHeaderModifier, f.ResponseHeaderModifier)
			}
			refs = append(refs, rb)
		}
		pr.Backends = g.ruleBackends(r.Namespace, kindGRPCRoute, refs, true, res)
		g.finishRule(&pr, kindGRPCRoute, r.Namespace+"/"+r.Name, unsupported)
		out = append(out, pr)
	}
	return out, res
}

// grpcMatch turns a GRPCRoute match into a path and header match: gRPC
// calls are POSTs to /service/method.
func grpcMatch(m gwapi.GRPCRouteMatch) l7proxy.HTTPMatch {
	out := l7proxy.HTTPMatch{PathType: l7proxy.PathPrefix, Path: "/"}
	if mm := m.Method; mm != nil {
		svc, method := ptrValue(mm.Service), ptrValue(mm.Method)
		if ptrValue(mm.Type) == gwapi.GRPCMethodMatchRegularExpression {
			out.PathType, out.Path = l7proxy.PathRegex, "/"+cmp.Or(svc, "[^/]+")+"/"+cmp.Or(method, "[^/]+")
		} else {
			switch {
			case svc != "" && method != "":
				out.PathType, out.Path = l7proxy.PathExact, "/"+svc+"/"+method
			case svc != "":
				out.PathType, out.Path = l7proxy.PathPrefix, "/"+svc
			case method != "":
				out.PathType, out.Path = l7proxy.PathRegex, "/[^/]+/"+regexp.QuoteMeta(method)
			}
		}
	}
	for _, h := range m.Headers {
		out.Headers = append(out.Headers, l7proxy.ValueMatch{Name: textproto.CanonicalMIMEHeaderKey(string(h.Name)),
			Value: h.Value, Regex: ptrValue(h.Type) == gwapi.GRPCHeaderMatchRegularExpression})
	}
	return out
}
