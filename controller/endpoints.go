package controller

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/nodegress/nodegress/loader"
)

// portEndpoint is one endpoint of a service port with what the choice of
// backends reads from its EndpointSlice.
type portEndpoint struct {
	addr  netip.AddrPort
	local bool
	// The conditions as kube-proxy reads them: an unset ready or serving
	// counts as true, an unset terminating as false.
	ready, serving, terminating bool
	// hints.forZones and hints.forNodes names; nil without hints.
	zoneHints, nodeHints []string
	// pod ("namespace/name", from a Pod targetRef) and node name where
	// the endpoint runs; empty when the slice does not say.
	pod, node string
}

// endpointSelection says which endpoints of a service port take new
// connections. The zero value is cluster-wide traffic seen from no node in
// particular, which is what the L7 proxy needs: it reaches every pod
// directly.
type endpointSelection struct {
	// nodeName marks the endpoints on this node Local and is matched
	// against node hints.
	nodeName string
	// zone is this node's zone, matched against zone hints.
	zone string
	// localOnly is externalTrafficPolicy Local: only this node's endpoints
	// take new connections.
	localOnly bool
	// topology honours the endpoints' hints for cluster-wide traffic.
	topology bool
}

// topologyMode is which hints choose the endpoints of cluster-wide
// traffic.
type topologyMode int

const (
	topologyNone topologyMode = iota
	topologySameZone
	topologySameNode
)

// backendsFor returns the backends of one service port, gathered from the
// service's IPv4 EndpointSlices, sorted by address.
//
// Which of them take new connections follows kube-proxy's
// CategorizeEndpoints (KEP-1669): the ready endpoints; when there is none,
// the serving terminating ones, so that a rollout in which every pod is
// already terminating does not turn clients away while the pods still
// serve. With localOnly the same rule applies to this node's endpoints
// alone.
//
// For cluster-wide traffic, topology hints narrow the ready endpoints
// first (see topologyFromHints); the fallback to terminating endpoints
// ignores them, as kube-proxy's does. Traffic policy Local ignores hints:
// it already keeps this node's endpoints only.
//
// The others that still serve are listed with Terminating set, which the
// datapath reads as "keeps its flows, gets no new ones": kube-proxy leaves
// the conntrack entries of every serving endpoint alone, whatever the
// traffic policy or the terminating state (its CleanStaleEntries), so
// established flows survive a change of the chosen set there too.
// Endpoints that do not serve are left out.
func backendsFor(sp corev1.ServicePort, epSlices []*discoveryv1.EndpointSlice, sel endpointSelection) ([]loader.Backend, []error) {
	eps, errs := selectEndpoints(sp, epSlices, sel)
	out := make([]loader.Backend, 0, len(eps))
	for _, e := range eps {
		out = append(out, loader.Backend{Addr: e.addr.Addr(), Port: e.addr.Port(), Local: e.local, Terminating: !e.active})
	}
	return out, errs
}

// selectedEndpoint is an endpoint that is a backend: active ones take
// new connections, the others only keep theirs.
type selectedEndpoint struct {
	portEndpoint
	active bool
}

// selectEndpoints picks the backends of one service port: see backendsFor.
func selectEndpoints(sp corev1.ServicePort, epSlices []*discoveryv1.EndpointSlice, sel endpointSelection) ([]selectedEndpoint, []error) {
	eps, errs := endpointsFor(sp, epSlices, sel.nodeName)
	mode := topologyNone
	if sel.topology && !sel.localOnly {
		mode = topologyFromHints(eps, sel.nodeName, sel.zone)
	}
	takesNew := func(e portEndpoint) bool {
		return e.ready && (e.local || !sel.localOnly) && availableForTopology(e, mode, sel.nodeName, sel.zone)
	}
	if !slices.ContainsFunc(eps, takesNew) {
		// Non-serving terminating endpoints never get new connections:
		// the pod said it cannot take them.
		takesNew = func(e portEndpoint) bool {
			return e.serving && e.terminating && (e.local || !sel.localOnly)
		}
	}
	out := make([]selectedEndpoint, 0, len(eps))
	for _, e := range eps {
		active := takesNew(e)
		if !active && !e.serving {
			continue
		}
		out = append(out, selectedEndpoint{portEndpoint: e, active: active})
	}
	return out, errs
}

// topologyFromHints decides, as kube-proxy's topologyModeFromHints, which
// hints to follow, looking at the ready endpoints only: node hints when
// every one has some and one is for this node, else zone hints when every
// one has some and one is for this node's zone, else none. One endpoint
// without hints, or hints that leave this node or zone nothing, turn
// topology off rather than sending the traffic nowhere.
//
// The Service's spec.trafficDistribution (PreferClose, PreferSameZone,
// PreferSameNode) and the service.kubernetes.io/topology-mode annotation
// reach the datapath through these hints: the EndpointSlice controller
// writes them, and kube-proxy reads nothing else either.
func topologyFromHints(eps []portEndpoint, nodeName, zone string) topologyMode {
	anyReady := false
	allNodeHints, forNode := true, false
	allZoneHints, forZone := true, false
	for _, e := range eps {
		if !e.ready {
			continue
		}
		anyReady = true
		if len(e.nodeHints) == 0 {
			allNodeHints = false
		} else if slices.Contains(e.nodeHints, nodeName) {
			forNode = true
		}
		if len(e.zoneHints) == 0 {
			allZoneHints = false
		} else if slices.Contains(e.zoneHints, zone) {
			forZone = true
		}
	}
	switch {
	case !anyReady:
		return topologyNone
	case allNodeHints && forNode:
		return topologySameNode
	case allZoneHints && forZone:
		return topologySameZone
	default:
		return topologyNone
	}
}

// availableForTopology tells whether an endpoint is one the hints give
// this node, under a mode topologyFromHints chose.
func availableForTopology(e portEndpoint, mode topologyMode, nodeName, zone string) bool {
	switch mode {
	case topologySameNode:
		return slices.Contains(e.nodeHints, nodeName)
	case topologySameZone:
		return slices.Contains(e.zoneHints, zone)
	default:
		return true
	}
}

// endpointsFor collects the endpoints of one service port, sorted by
// address. The target port comes from the slice port with the service
// port's name and protocol, which is how the EndpointSlice controller
// resolves named target ports per pod.
func endpointsFor(sp corev1.ServicePort, epSlices []*discoveryv1.EndpointSlice, nodeName string) ([]portEndpoint, []error) {
	var errs []error
	byAddr := make(map[netip.AddrPort]portEndpoint)
	// The slices in name order, so the copy kept of an endpoint listed
	// twice does not depend on the order the caller had them in.
	if !slices.IsSortedFunc(epSlices, compareSliceNames) {
		epSlices = slices.SortedFunc(slices.Values(epSlices), compareSliceNames)
	}
	for _, s := range epSlices {
		var port int32
		found := false
		for _, p := range s.Ports {
			pname := ""
			if p.Name != nil {
				pname = *p.Name
			}
			pproto := corev1.ProtocolTCP
			if p.Protocol != nil {
				pproto = *p.Protocol
			}
			if pname == sp.Name && pproto == cmp.Or(sp.Protocol, corev1.ProtocolTCP) && p.Port != nil {
				port, found = *p.Port, true
				break
			}
		}
		if !found {
			continue
		}
		sliceKey := s.Namespace + "/" + s.Name
		if port < 1 || port > 65535 {
			errs = append(errs, &ObjectError{Kind: "EndpointSlice", Object: sliceKey, Port: cmp.Or(sp.Name, strconv.Itoa(int(sp.Port))), Err: fmt.Errorf("invalid port %d", port)})
			continue
		}
		for _, ep := range s.Endpoints {
			if len(ep.Addresses) == 0 {
				continue
			}
			e := portEndpoint{
				local:       ep.NodeName != nil && *ep.NodeName == nodeName && nodeName != "",
				ready:       ep.Conditions.Ready == nil || *ep.Conditions.Ready,
				serving:     ep.Conditions.Serving == nil || *ep.Conditions.Serving,
				terminating: ep.Conditions.Terminating != nil && *ep.Conditions.Terminating,
			}
			if ep.NodeName != nil {
				e.node = *ep.NodeName
			}
			if r := ep.TargetRef; r != nil && r.Kind == "Pod" && r.Name != "" {
				e.pod = cmp.Or(r.Namespace, s.Namespace) + "/" + r.Name
			}
			if ep.Hints != nil {
				for _, z := range ep.Hints.ForZones {
					e.zoneHints = append(e.zoneHints, z.Name)
				}
				for _, n := range ep.Hints.ForNodes {
					e.nodeHints = append(e.nodeHints, n.Name)
				}
			}
			// The addresses of one endpoint are fungible; like kube-proxy,
			// use the first.
			a, err := parseIPv4(ep.Addresses[0])
			if err != nil {
				if e.ready || e.serving {
					// Of an endpoint that is never a backend, a bad
					// address is not worth a warning.
					errs = append(errs, &ObjectError{Kind: "EndpointSlice", Object: sliceKey, Err: fmt.Errorf("endpoint address %q: %w", ep.Addresses[0], err)})
				}
				continue
			}
			e.addr = netip.AddrPortFrom(a, uint16(port))
			// An address listed twice is a pod moving between slices, or
			// a terminating pod whose address the network already gave to
			// a new one: like kube-proxy, a copy that is not terminating
			// wins.
			if _, dup := byAddr[e.addr]; dup && e.terminating {
				continue
			}
			byAddr[e.addr] = e
		}
	}
	out := make([]portEndpoint, 0, len(byAddr))
	for _, e := range byAddr {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b portEndpoint) int { return a.addr.Compare(b.addr) })
	return out, errs
}

func compareSliceNames(a, b *discoveryv1.EndpointSlice) int { return cmp.Compare(a.Name, b.Name) }
