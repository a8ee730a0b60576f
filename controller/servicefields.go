package controller

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
)

// fieldHandling is how the L4 datapath treats a field of a Service's spec.
type fieldHandling int

const (
	// fieldServed: the datapath implements the field, or its absence
	// (what unsupported does not report).
	fieldServed fieldHandling = iota
	// fieldNotProxied: another component acts on the field (the API
	// server, the EndpointSlice controller, a load balancer controller)
	// and kube-proxy ignores it too.
	fieldNotProxied
	// fieldComing: not implemented yet, and not reported either, because
	// it is being implemented.
	fieldComing
)

// serviceField is one row of serviceFields.
type serviceField struct {
	// path is the field's JSON path, "spec.ports[].protocol".
	path     string
	handling fieldHandling
	// note says how, for the reader.
	note string
	// unsupported, when set, lists the uses of the field in svc the
	// datapath does not implement.
	unsupported func(svc *corev1.Service) []*unsupportedFieldError
}

// serviceFields is every field of a Service's spec (a test checks the list
// against corev1.ServiceSpec), so that none is ignored without a word: a
// use the datapath does not implement becomes a Warning Event on the
// Service with reason UnsupportedServiceField, and a log line. Adding a
// field is adding a row.
var serviceFields = []serviceField{
	{"spec.ports", fieldServed, "one datapath service per port", nil},
	{"spec.ports[].name", fieldServed, "matches the EndpointSlice port", nil},
	{"spec.ports[].protocol", fieldServed, "TCP and UDP", unsupportedProtocols},
	{"spec.ports[].appProtocol", fieldNotProxied, "a hint for implementations; the L4 datapath forwards bytes", nil},
	{"spec.ports[].port", fieldServed, "on externalIPs and LoadBalancer IPs", nil},
	{"spec.ports[].targetPort", fieldNotProxied, "resolved per pod by the EndpointSlice controller into the slices' ports", nil},
	{"spec.ports[].nodePort", fieldServed, "on this node's addresses", nil},
	{"spec.selector", fieldNotProxied, "the EndpointSlice controller turns it into endpoints", nil},
	{"spec.clusterIP", fieldComing, "None (headless) is skipped", nil},
	{"spec.clusterIPs", fieldComing, "", nil},
	{"spec.type", fieldServed, "ExternalName is skipped, as in kube-proxy", nil},
	{"spec.externalIPs", fieldServed, "IPv4 ones; IPv6 ones are skipped", nil},
	{"spec.sessionAffinity", fieldComing, "", nil},
	{"spec.loadBalancerIP", fieldNotProxied, "the load balancer controller writes the IPs it got into status", nil},
	{"spec.loadBalancerSourceRanges", fieldComing, "", nil},
	{"spec.externalName", fieldNotProxied, "answered by the cluster DNS; nothing to forward", nil},
	{"spec.externalTrafficPolicy", fieldServed, "Local: this node's endpoints only", nil},
	{"spec.healthCheckNodePort", fieldServed, "answered on every node address as kube-proxy does (healthsync.go), unless --health-check-node-ports=false", nil},
	{"spec.publishNotReadyAddresses", fieldNotProxied, "the EndpointSlice controller marks such endpoints ready", nil},
	{"spec.sessionAffinityConfig", fieldComing, "", nil},
	{"spec.ipFamilies", fieldServed, "IPv4", unsupportedIPFamilies},
	{"spec.ipFamilyPolicy", fieldNotProxied, "the API server chooses spec.ipFamilies from it", nil},
	{"spec.allocateLoadBalancerNodePorts", fieldNotProxied, "false leaves ports without nodePort, which then have no NodePort frontend", nil},
	{"spec.loadBalancerClass", fieldNotProxied, "picks the load balancer controller", nil},
	{"spec.internalTrafficPolicy", fieldComing, "", nil},
	{"spec.trafficDistribution", fieldNotProxied, "the EndpointSlice controller turns it into the hints the datapath follows", nil},
}

// unsupportedFieldError is a use of a Service field the datapath does not
// implement, and what nodegress does instead.
type unsupportedFieldError struct {
	Field string // JSON path, "spec.ipFamilies"
	Value string
	// Port names the service port concerned, empty for the whole
	// Service.
	Port    string
	Instead string
}

func (e *unsupportedFieldError) Error() string {
	return fmt.Sprintf("%s %s is not supported by the datapath: %s", e.Field, e.Value, e.Instead)
}

// unsupportedFields lists every use of a field the datapath does not
// implement in svc, in the order of serviceFields.
func unsupportedFields(svc *corev1.Service) []*unsupportedFieldError {
	var out []*unsupportedFieldError
	for _, f := range serviceFields {
		if f.unsupported != nil {
			out = append(out, f.unsupported(svc)...)
		}
	}
	return out
}

func unsupportedProtocols(svc *corev1.Service) []*unsupportedFieldError {
	var out []*unsupportedFieldError
	for _, sp := range svc.Spec.Ports {
		if sp.Protocol == corev1.ProtocolSCTP {
			out = append(out, &unsupportedFieldError{
				Field: "spec.ports[].protocol", Value: string(sp.Protocol),
				Port:    cmp.Or(sp.Name, strconv.Itoa(int(sp.Port))),
				Instead: "it forwards TCP and UDP only; this port is not served",
			})
		}
	}
	return out
}

func unsupportedIPFamilies(svc *corev1.Service) []*unsupportedFieldError {
	fams := ipFamilies(svc)
	if !slices.Contains(fams, corev1.IPv6Protocol) {
		return nil
	}
	e := &unsupportedFieldError{Field: "spec.ipFamilies", Value: fmt.Sprint(fams)}
	if servesIPv4(svc) {
		e.Instead = "it is IPv4-only; only the IPv4 frontends and endpoints are served"
	} else {
		e.Instead = "it is IPv4-only; the Service is not served"
	}
	return []*unsupportedFieldError{e}
}

// ipFamilies are the Service's IP families. An object that never went
// through the API server (standalone) may have none: its clusterIP tells,
// and without one it is IPv4, the datapath's family.
func ipFamilies(svc *corev1.Service) []corev1.IPFamily {
	if len(svc.Spec.IPFamilies) > 0 {
		return svc.Spec.IPFamilies
	}
	if a, err := netip.ParseAddr(svc.Spec.ClusterIP); err == nil && !a.Unmap().Is4() {
		return []corev1.IPFamily{corev1.IPv6Protocol}
	}
	return []corev1.IPFamily{corev1.IPv4Protocol}
}

// servesIPv4 tells whether the Service has an IPv4 side. kube-proxy's IPv4
// proxier skips a Service without one entirely (no IPv4 clusterIP), its
// NodePorts and IPv4 externalIPs included; so does the IPv4 datapath.
func servesIPv4(svc *corev1.Service) bool {
	return slices.Contains(ipFamilies(svc), corev1.IPv4Protocol)
}
