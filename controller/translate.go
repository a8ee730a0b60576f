package controller

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/nodegress/nodegress/loader"
)

// NodeInfo is what translation needs to know about the node the agent runs
// on.
type NodeInfo struct {
	// Name is matched against endpoint.nodeName to mark backends Local.
	Name string
	// Addrs are the node's IPv4 addresses, each a NodePort frontend.
	Addrs []netip.Addr
	// Zone is the node's topology.kubernetes.io/zone label, matched
	// against the zone hints of endpoints.
	Zone string
	// SocketLB says the datapath also balances in-cluster clients'
	// sockets (kube-proxy replacement): every Service port then also
	// gets an Internal datapath service, reached at its ClusterIPs and
	// the node's other frontends.
	SocketLB bool
	// Maglev is the default backend selection of Services without a
	// nodegress.io/lb-algorithm annotation (--lb-algorithm).
	Maglev bool
	// DSR is the default forwarding to remote backends of Services
	// without a nodegress.io/forwarding-mode annotation (--forwarding-mode).
	DSR bool
}

// NodeInfoFrom merges the addresses of the agent's devices with the
// InternalIP and ExternalIP addresses of its Node object (nil when the Node
// is unknown), and takes the zone from the Node's labels. Only IPv4
// addresses are kept, because the datapath is IPv4-only; the result is
// sorted and free of duplicates.
func NodeInfoFrom(name string, deviceAddrs []netip.Addr, node *corev1.Node) NodeInfo {
	addrs := make([]netip.Addr, 0, len(deviceAddrs))
	for _, a := range deviceAddrs {
		if a = a.Unmap(); a.Is4() {
			addrs = append(addrs, a)
		}
	}
	zone := ""
	if node != nil {
		zone = node.Labels[corev1.LabelTopologyZone]
		for _, na := range node.Status.Addresses {
			if na.Type != corev1.NodeInternalIP && na.Type != corev1.NodeExternalIP {
				continue
			}
			a, err := netip.ParseAddr(na.Address)
			if err != nil {
				continue
			}
			if a = a.Unmap(); a.Is4() {
				addrs = append(addrs, a)
			}
		}
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	return NodeInfo{Name: name, Addrs: slices.Compact(addrs), Zone: zone}
}

// ObjectError is a problem translation found in one Kubernetes object. The
// rest of the object, and every other object, is still translated.
type ObjectError struct {
	Kind string // "Service", "EndpointSlice", "Ingress"
	// Object is "namespace/name".
	Object string
	// Port names the service port concerned, empty for the whole object.
	Port string
	Err  error
	// Skipped marks things that are valid Kubernetes but that the datapath
	// does not handle and that are routine (an IPv6 address next to IPv4
	// ones, another controller's Ingress): worth a debug line, not a
	// warning. Unsupported uses of a Service field are warnings (see
	// serviceFields).
	Skipped bool
}

func (e *ObjectError) Error() string {
	if e.Port != "" {
		return fmt.Sprintf("%s %s port %s: %v", e.Kind, e.Object, e.Port, e.Err)
	}
	return fmt.Sprintf("%s %s: %v", e.Kind, e.Object, e.Err)
}

func (e *ObjectError) Unwrap() error { return e.Err }

// errNotIPv4 is reported (as Skipped) for addresses the IPv4-only datapath
// ignores.
var errNotIPv4 = errors.New("not an IPv4 address, skipped")

// Translate computes the datapath's desired state from Services and
// EndpointSlices: one loader.Service per service port with frontends
//
//   - every node address × nodePort (type NodePort and LoadBalancer),
//   - spec.externalIPs × port,
//   - status.loadBalancer.ingress[].ip × port (type LoadBalancer),
//
// and, as backends, the IPv4 endpoints of the service's EndpointSlices
// chosen as kube-proxy chooses them (see backendsFor). With
// node.SocketLB, every port also gets an Internal service for in-cluster
// clients (its ClusterIPs and the frontends above, see internalPort);
// without, Services with no frontend (ClusterIP without externalIPs)
// produce nothing, their traffic being kube-proxy's. Those kube-proxy
// leaves alone produce nothing either (see skipService).
//
// Translate is a pure function of its arguments. The output is sorted by
// Name, with sorted frontends and backends, so the same objects always give
// the same slice. Problems are returned as *ObjectError and never stop the
// translation of other objects or ports.
func Translate(node NodeInfo, svcs []*corev1.Service, epSlices []*discoveryv1.EndpointSlice) ([]loader.Service, []error) {
	return translate(node, svcs, epSlices, nil, "")
}

// translate is Translate with frontends that are taken before any Service
// asks for them: those of reserved (the L7 frontends, which the agent
// itself listens on). A Service frontend colliding with one is skipped and
// reported; quietly (as Skipped) for the Service named quietFor, the
// ingress's own published Service, whose LoadBalancer IPs are expected to
// be L7 frontends. reserved is not part of the result.
//
// It is the incremental state of the controller (serviceState) fed
// everything at once, so the one-shot and the incremental translation
// cannot disagree.
func translate(node NodeInfo, svcs []*corev1.Service, epSlices []*discoveryv1.EndpointSlice, reserved []loader.Service, quietFor string) ([]loader.Service, []error) {
	slicesBySvc := make(map[string][]*discoveryv1.EndpointSlice)
	for _, s := range epSlices {
		if key, ok := sliceServiceKey(s); ok {
			slicesBySvc[key] = append(slicesBySvc[key], s)
		}
	}
	byKey := make(map[string]*corev1.Service, len(svcs))
	keys := make([]string, 0, len(svcs))
	for _, svc := range svcs {
		k := svc.Namespace + "/" + svc.Name
		if _, dup := byKey[k]; !dup {
			keys = append(keys, k)
		}
		byKey[k] = svc
	}
	st := newServiceState(quietFor)
	st.update(node, keys, func(k string) (*corev1.Service, []*discoveryv1.EndpointSlice) {
		return byKey[k], slicesBySvc[k]
	}, reservedFrontends(reserved))
	return st.all(), st.issuesInOrder()
}

// sliceServiceKey is the key of the Service an IPv4 EndpointSlice belongs
// to; false for slices translation ignores.
func sliceServiceKey(s *discoveryv1.EndpointSlice) (string, bool) {
	if s.AddressType != discoveryv1.AddressTypeIPv4 {
		// Dual-stack clusters always have IPv6 slices; not worth a log.
		return "", false
	}
	name := s.Labels[discoveryv1.LabelServiceName]
	if name == "" {
		return "", false
	}
	return s.Namespace + "/" + name, true
}

// frontendKey is a frontend as the datapath keys it: address, port and
// protocol.
type frontendKey struct {
	fe    loader.Frontend
	proto loader.Proto
	// internal frontends are the socket load balancer's, apart from the
	// external ones.
	internal bool
}

// keyOf is the key of a frontend; whether it is restricted to source
// ranges does not make it another frontend.
func keyOf(fe loader.Frontend, proto loader.Proto, internal bool) frontendKey {
	fe.Restricted = false
	return frontendKey{fe: fe, proto: proto, internal: internal}
}

// svcOrder ranks claims on a frontend: the oldest service keeps it, as the
// API server would have refused the younger one's nodePort; names break
// ties so the outcome does not depend on input order; within a service,
// the first port listed wins.
type svcOrder struct {
	created   time.Time
	namespace string
	name      string
}

func (a svcOrder) compare(b svcOrder) int {
	return cmp.Or(a.created.Compare(b.created), cmp.Compare(a.namespace, b.namespace), cmp.Compare(a.name, b.name))
}

// svcTranslation is one Service translated on its own: every port with
// all the frontends it asks for, before conflicts with other services are
// resolved. items keep the order problems were found in.
type svcTranslation struct {
	order svcOrder
	items []translationItem
}

// translationItem is either a problem of the service or one of its ports.
type translationItem struct {
	err  error
	port *portCandidate
}

type portCandidate struct {
	index  int    // in spec.ports: earlier ports win within a service
	portID string // name or number, for problems
	// svc has every frontend asked for, in the order asked, and sorted
	// backends.
	svc loader.Service
	// preErrs precede the frontend conflicts; backendErrs follow them and
	// count only when the port keeps a frontend.
	preErrs, backendErrs []error
}

// translateService translates one Service with its EndpointSlices (the
// IPv4 ones labelled with its name). It returns nil for services that ask
// for nothing and have nothing to report.
func translateService(node NodeInfo, svc *corev1.Service, svcSlices []*discoveryv1.EndpointSlice) *svcTranslation {
	key := svc.Namespace + "/" + svc.Name
	t := &svcTranslation{order: svcOrder{svc.CreationTimestamp.Time, svc.Namespace, svc.Name}}
	svcErr := func(port string, skipped bool, format string, args ...any) {
		t.items = append(t.items, translationItem{err: &ObjectError{Kind: "Service", Object: key, Port: port, Err: fmt.Errorf(format, args...), Skipped: skipped}})
	}
	if skipService(svc) {
		return nil
	}
	svcSlices = slices.DeleteFunc(slices.Clone(svcSlices), func(s *discoveryv1.EndpointSlice) bool { return proxyIgnores(s.Labels) })
	svcType := cmp.Or(svc.Spec.Type, corev1.ServiceTypeClusterIP)
	// Fields are only worth a word on Services that ask for what this
	// datapath serves; on the others every field is moot alike.
	if svcType == corev1.ServiceTypeNodePort || svcType == corev1.ServiceTypeLoadBalancer || len(svc.Spec.ExternalIPs) > 0 {
		for _, ue := range unsupportedFields(svc) {
			t.items = append(t.items, translationItem{err: &ObjectError{Kind: "Service", Object: key, Port: ue.Port,
				Err: withReason(ReasonUnsupportedServiceField, ue)}})
		}
	}
	if !servesIPv4(svc) {
		if len(t.items) == 0 {
			return nil
		}
		return t
	}
	var nodeAddrs, vips, lbIPs []netip.Addr
	if svcType == corev1.ServiceTypeNodePort || svcType == corev1.ServiceTypeLoadBalancer {
		nodeAddrs = node.Addrs
	}
	for _, s := range svc.Spec.ExternalIPs {
		a, err := parseIPv4(s)
		if err != nil {
			svcErr("", errors.Is(err, errNotIPv4), "externalIP %q: %w", s, err)
			continue
		}
		vips = append(vips, a)
	}
	if svcType == corev1.ServiceTypeLoadBalancer {
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			// ipMode Proxy means the load balancer terminates the
			// connection and reaches the node on its own address, as in
			// kube-proxy; such an IP never arrives here as a destination.
			if ing.IP == "" || (ing.IPMode != nil && *ing.IPMode == corev1.LoadBalancerIPModeProxy) {
				continue
			}
			a, err := parseIPv4(ing.IP)
			if err != nil {
				svcErr("", errors.Is(err, errNotIPv4), "load balancer ingress IP %q: %w", ing.IP, err)
				continue
			}
			vips = append(vips, a)
			lbIPs = append(lbIPs, a)
		}
	}
	sourceRanges := loadBalancerSourceRanges(node, svc, lbIPs, func(format string, args ...any) { svcErr("", false, format, args...) })
	affinity := sessionAffinityTimeout(svc)
	maglev, err := serviceMaglev(node, svc)
	if err != nil {
		t.items = append(t.items, translationItem{err: &ObjectError{Kind: "Service", Object: key, Err: err}})
	}
	dsr, err := serviceDSR(node, svc)
	if err != nil {
		t.items = append(t.items, translationItem{err: &ObjectError{Kind: "Service", Object: key, Err: err}})
	}
	var clusterIPs []netip.Addr
	if node.SocketLB {
		clusterIPs = serviceClusterIPs(svc)
	}
	if len(nodeAddrs) == 0 && len(vips) == 0 && len(clusterIPs) == 0 {
		if len(t.items) == 0 {
			return nil
		}
		return t
	}
	// With externalTrafficPolicy Local, new connections arriving from
	// outside (all of this datapath's traffic) only go to endpoints on
	// this node, which also keeps the client's source address.
	localOnly := svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal

	for i, sp := range svc.Spec.Ports {
		portID := cmp.Or(sp.Name, strconv.Itoa(int(sp.Port)))
		if sp.Protocol == corev1.ProtocolSCTP {
			continue // reported with the unsupported fields
		}
		proto, err := toProto(sp.Protocol)
		if err != nil {
			svcErr(portID, false, "%w", err)
			continue
		}
		if sp.Port < 1 || sp.Port > 65535 {
			svcErr(portID, false, "invalid port %d", sp.Port)
			continue
		}
		p := &portCandidate{
			index:  i,
			portID: portID,
			svc:    loader.Service{Name: fmt.Sprintf("%s:%s/%s", key, portID, proto), Proto: proto},
		}
		p.svc.SourceRanges = sourceRanges
		p.svc.AffinityTimeout = affinity
		p.svc.Maglev = maglev
		p.svc.DSR = dsr
		add := func(a netip.Addr, port uint16) {
			// Source ranges restrict the load balancer's IPs only, as in
			// kube-proxy: NodePorts and externalIPs stay open.
			fe := loader.Frontend{Addr: a, Port: port, Restricted: len(sourceRanges) > 0 && port == uint16(sp.Port) && slices.Contains(lbIPs, a)}
			if i := slices.IndexFunc(p.svc.Frontends, func(f loader.Frontend) bool { return f.Addr == fe.Addr && f.Port == fe.Port }); i >= 0 {
				p.svc.Frontends[i].Restricted = p.svc.Frontends[i].Restricted || fe.Restricted
				return
			}
			p.svc.Frontends = append(p.svc.Frontends, fe)
		}
		if len(nodeAddrs) > 0 && sp.NodePort != 0 {
			if sp.NodePort < 1 || sp.NodePort > 65535 {
				p.preErrs = append(p.preErrs, &ObjectError{Kind: "Service", Object: key, Port: portID, Err: fmt.Errorf("invalid nodePort %d", sp.NodePort)})
			} else {
				for _, a := range nodeAddrs {
					add(a, uint16(sp.NodePort))
				}
			}
		}
		for _, a := range vips {
			add(a, uint16(sp.Port))
		}
		if len(p.svc.Frontends) > 0 {
			sel := endpointSelection{nodeName: node.Name, zone: node.Zone, localOnly: localOnly, topology: true}
			p.svc.Backends, p.backendErrs = backendsFor(sp, svcSlices, sel)
			if localOnly {
				// Endpoints elsewhere but none here: external traffic is
				// dropped, not rejected (kube-proxy's rule); without any
				// endpoint it is rejected.
				p.svc.NoBackendDrop = len(p.svc.Backends) > 0 &&
					!slices.ContainsFunc(p.svc.Backends, func(b loader.Backend) bool { return !b.Terminating })
			}
		}
		if node.SocketLB {
			if q := internalPort(node, svc, sp, p, clusterIPs, svcSlices); q != nil {
				t.items = append(t.items, translationItem{port: q})
			}
		}
		if len(p.svc.Frontends) > 0 || len(p.preErrs) > 0 {
			t.items = append(t.items, translationItem{port: p})
		}
	}
	if len(t.items) == 0 {
		return nil
	}
	return t
}

// internalServiceSuffix ends the names of Internal datapath services.
const internalServiceSuffix = "/internal"

// internalPort is the Internal datapath service of one service port: what
// in-cluster clients (pods, the node, hostNetwork pods) get at connect
// time from the socket-level load balancer. Its frontends are the
// ClusterIPs and every frontend of the external service ext; its backends
// follow internalTrafficPolicy, never externalTrafficPolicy: kube-proxy
// sends in-cluster traffic to a Local-policy NodePort or load balancer
// IP to every endpoint too. Source ranges are not applied: a socket has
// no source address yet when it connects.
func internalPort(node NodeInfo, svc *corev1.Service, sp corev1.ServicePort, ext *portCandidate, clusterIPs []netip.Addr, svcSlices []*discoveryv1.EndpointSlice) *portCandidate {
	q := &portCandidate{index: ext.index, portID: ext.portID}
	q.svc = loader.Service{Name: ext.svc.Name + internalServiceSuffix, Proto: ext.svc.Proto, Internal: true,
		AffinityTimeout: ext.svc.AffinityTimeout, Maglev: ext.svc.Maglev}
	for _, a := range clusterIPs {
		q.svc.Frontends = append(q.svc.Frontends, loader.Frontend{Addr: a, Port: uint16(sp.Port)})
	}
	for _, f := range ext.svc.Frontends {
		f.Restricted = false
		if !slices.Contains(q.svc.Frontends, f) {
			q.svc.Frontends = append(q.svc.Frontends, f)
		}
	}
	if len(q.svc.Frontends) == 0 {
		return nil
	}
	localOnly := svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal
	sel := endpointSelection{nodeName: node.Name, zone: node.Zone, localOnly: localOnly, topology: true}
	// Endpoint problems are reported once, with the external service.
	q.svc.Backends, _ = backendsFor(sp, svcSlices, sel)
	if localOnly {
		q.svc.NoBackendDrop = len(q.svc.Backends) > 0 &&
			!slices.ContainsFunc(q.svc.Backends, func(b loader.Backend) bool { return !b.Terminating })
	}
	return q
}

// serviceClusterIPs are a Service's IPv4 cluster IPs.
func serviceClusterIPs(svc *corev1.Service) []netip.Addr {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	var out []netip.Addr
	for _, s := range ips {
		if a, err := parseIPv4(s); err == nil && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// AnnotationLBAlgorithm picks a Service's backend selection: "maglev" (the
// same backend for a flow on every node, few flows moved by a backend
// change) or "hash" (a per-node hash of the flow).
const AnnotationLBAlgorithm = AnnotationPrefix + "lb-algorithm"

// serviceMaglev tells whether svc's backends are picked by Maglev: its
// annotation, else the agent's default.
func serviceMaglev(node NodeInfo, svc *corev1.Service) (bool, error) {
	return annotationChoice(svc, AnnotationLBAlgorithm, "maglev", "hash", node.Maglev)
}

// annotationChoice reads an annotation of two values: true for yes, false
// for no, def when absent. Any other value is reported and def used.
func annotationChoice(svc *corev1.Service, key, yes, no string, def bool) (bool, error) {
	v, ok := svc.Annotations[key]
	if !ok {
		return def, nil
	}
	switch strings.TrimSpace(v) {
	case yes:
		return true, nil
	case no:
		return false, nil
	}
	return def, &AnnotationError{Annotation: key, Value: v, Err: fmt.Errorf("want %q or %q", yes, no)}
}

// AnnotationForwardingMode picks how a Service's remote backends are
// reached: "snat" (the node translates the client's address to its own, and
// replies return through it) or "dsr" (direct server return: the backend's
// node answers the client itself).
const AnnotationForwardingMode = AnnotationPrefix + "forwarding-mode"

// serviceDSR tells whether svc's remote backends are reached by direct
// server return: its annotation, else the agent's default.
func serviceDSR(node NodeInfo, svc *corev1.Service) (bool, error) {
	return annotationChoice(svc, AnnotationForwardingMode, "dsr", "snat", node.DSR)
}

// defaultAffinityTimeout is the API's default of
// sessionAffinityConfig.clientIP.timeoutSeconds (3 hours).
const defaultAffinityTimeout = 10800 * time.Second

// sessionAffinityTimeout is how long ClientIP affinity lasts for svc, 0
// without affinity.
func sessionAffinityTimeout(svc *corev1.Service) time.Duration {
	if svc.Spec.SessionAffinity != corev1.ServiceAffinityClientIP {
		return 0
	}
	if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil && *c.ClientIP.TimeoutSeconds > 0 {
		return time.Duration(*c.ClientIP.TimeoutSeconds) * time.Second
	}
	return defaultAffinityTimeout
}

// loadBalancerSourceRanges are the client prefixes svc's load balancer
// IPs accept, with kube-proxy's additions: when a range covers one of this
// node's addresses, the load balancer IPs themselves are allowed too
// (traffic the node sends to its own load balancer, hairpinned back with
// the LB IP as source). IPv6 ranges do not apply to the IPv4 datapath; if
// no IPv4 range is left (only IPv6 ones, or none parses), nobody may
// connect over IPv4 rather than everybody.
func loadBalancerSourceRanges(node NodeInfo, svc *corev1.Service, lbIPs []netip.Addr, report func(format string, args ...any)) []netip.Prefix {
	if len(svc.Spec.LoadBalancerSourceRanges) == 0 || len(lbIPs) == 0 {
		return nil
	}
	var out []netip.Prefix
	for _, r := range svc.Spec.LoadBalancerSourceRanges {
		p, err := netip.ParsePrefix(strings.TrimSpace(r))
		if err != nil {
			report("loadBalancerSourceRanges %q: %w", r, err)
			continue
		}
		if p.Addr().Is4() {
			out = append(out, p.Masked())
		}
	}
	if len(out) == 0 {
		// A prefix no IPv4 client has: the restriction stays closed.
		return []netip.Prefix{netip.MustParsePrefix("255.255.255.255/32")}
	}
	for _, p := range out {
		if slices.ContainsFunc(node.Addrs, p.Contains) {
			for _, a := range lbIPs {
				out = append(out, netip.PrefixFrom(a, 32))
			}
			break
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	return slices.Compact(out)
}

// labelHeadless on a Service or an EndpointSlice (set by the EndpointSlice
// controller for headless Services) tells service proxies to leave it
// alone: kube-proxy's informers select only objects without it.
const labelHeadless = "service.kubernetes.io/headless"

// proxyIgnores tells the objects kube-proxy's informers never see: those
// labelled for another proxy or as headless.
func proxyIgnores(labels map[string]string) bool {
	_, other := labels[labelServiceProxyName]
	_, headless := labels[labelHeadless]
	return other || headless
}

// labelServiceProxyName on a Service hands it to another service proxy:
// kube-proxy does not watch such Services (a label selector on its
// informers), and neither does the L4 datapath.
const labelServiceProxyName = "service.kubernetes.io/service-proxy-name"

// skipService tells the Services the L4 datapath leaves alone entirely,
// without a word, as kube-proxy does (its ShouldSkipService and informer
// label selector):
//
//   - ExternalName Services are DNS names, with nothing to forward;
//   - headless Services (clusterIP None) have clients reach the pods
//     directly;
//   - Services with the service-proxy-name label, whatever its value, are
//     another proxy's;
//   - the Services nodegress makes for Gateways (gateway_service.go) have
//     no endpoints: their load balancer IPs are the Gateways' addresses,
//     which the Gateway translation steers to the L7 proxy.
//
// The L7 proxy may still route an Ingress to the pods of a Service
// labelled for another proxy: it talks to pod addresses, not to the
// Service.
//
// Unlike kube-proxy, a Service without clusterIP is served: standalone
// objects never meet the API server's allocation, and through an API
// server every Service other than headless and ExternalName has one.
func skipService(svc *corev1.Service) bool {
	if proxyIgnores(svc.Labels) || isGatewayService(svc) {
		return true
	}
	return svc.Spec.Type == corev1.ServiceTypeExternalName || svc.Spec.ClusterIP == corev1.ClusterIPNone
}

func sortService(s *loader.Service) {
	slices.SortFunc(s.Frontends, func(a, b loader.Frontend) int {
		return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port))
	})
	slices.SortFunc(s.Backends, func(a, b loader.Backend) int {
		return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port))
	})
}

func toProto(p corev1.Protocol) (loader.Proto, error) {
	switch p {
	case "", corev1.ProtocolTCP:
		return loader.TCP, nil
	case corev1.ProtocolUDP:
		return loader.UDP, nil
	case corev1.ProtocolSCTP:
		return 0, errors.New("protocol SCTP is not supported by the datapath, skipped")
	default:
		return 0, fmt.Errorf("invalid protocol %q", p)
	}
}

func parseIPv4(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, err
	}
	if a = a.Unmap(); !a.Is4() {
		return netip.Addr{}, errNotIPv4
	}
	return a, nil
}
