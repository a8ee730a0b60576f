package controller

import (
	"cmp"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	gwapi "sigs.k8s.io/gateway-api/apis/v1"
)

// Gateway addresses from LoadBalancer Services.
//
// With the address source "service", a Gateway without spec.addresses gets
// no pool address: the elected agent gives it a Service of type
// LoadBalancer (no selector, the listeners' ports, owned by the Gateway),
// a load balancer controller (MetalLB, a cloud's) assigns that Service its
// IPs, and every agent serves them as the Gateway's addresses, steered to
// the proxy like any other; hostnames it assigns (AWS's) are reported,
// not served. A Gateway with spec.addresses gets its Service too, with
// them as externalIPs (as Envoy Gateway does), to show the addresses it
// is reached at; one that names all its addresses asks no load balancer
// for more, and its Service is of type ClusterIP. The L4 datapath leaves these Services alone
// (skipService): they have no endpoints, and serving their addresses as
// an L4 Service would reject what the Gateway serves.

// GatewayAddressSource tells where Gateways without spec.addresses get
// their addresses.
type GatewayAddressSource string

const (
	// GatewayAddressPool allocates from GatewayConfig.AddressPool.
	GatewayAddressPool GatewayAddressSource = "pool"
	// GatewayAddressService takes the load balancer IPs of a Service
	// created for each Gateway.
	GatewayAddressService GatewayAddressSource = "service"
)

// ParseGatewayAddressSource checks a --gateway-address-source value.
func ParseGatewayAddressSource(s string) (GatewayAddressSource, error) {
	switch src := GatewayAddressSource(s); src {
	case GatewayAddressPool, GatewayAddressService:
		return src, nil
	case "":
		return GatewayAddressPool, nil
	default:
		return "", fmt.Errorf("address source %q: want pool or service", s)
	}
}

const (
	// labelManagedBy marks the Services nodegress made for Gateways, with
	// the value managedByNodegress.
	labelManagedBy     = "app.kubernetes.io/managed-by"
	managedByNodegress = "nodegress"
	// annotationGatewayServiceHash holds a hash of what nodegress wants of
	// a Gateway's Service: a Service whose hash differs is applied again.
	annotationGatewayServiceHash = "nodegress.io/gateway-service-hash"
	// annotationGatewayController names the Gateway controller (the
	// GatewayClass controllerName) whose agents made the Service: an
	// install under another controller name leaves it alone.
	annotationGatewayController = "nodegress.io/gateway-controller"
	gatewayServicePrefix        = "nodegress-gateway-"
	gatewayAPIVersion           = gwapi.GroupName + "/v1"
)

// gatewayServiceName is the name of a Gateway's Service: the prefix and
// the Gateway's name. A name with dots (a DNS subdomain, which a Service
// name cannot be) has them replaced and a hash of the real name appended,
// so that Gateways "a.b" and "a-b" do not compete for one Service; a long
// one is shortened with the hash to a DNS label's 63 characters.
func gatewayServiceName(gwName string) string {
	name := gatewayServicePrefix + strings.ReplaceAll(gwName, ".", "-")
	if len(name) <= 63 && !strings.Contains(gwName, ".") {
		return name
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(gwName))
	return strings.TrimRight(name[:min(len(name), 54)], "-") + "-" + fmt.Sprintf("%08x", h.Sum32())
}

// madeBy reports whether the agents of Gateway controller ctrl made the
// Gateway Service svc (one without the annotation predates it: theirs).
func madeBy(svc *corev1.Service, ctrl string) bool {
	c, ok := svc.Annotations[annotationGatewayController]
	return isGatewayService(svc) && (!ok || c == ctrl)
}

// isGatewayService reports whether nodegress made the Service for a
// Gateway: its labels say so and a Gateway owns it.
func isGatewayService(svc *corev1.Service) bool {
	if svc.Labels[labelManagedBy] != managedByNodegress || svc.Labels[gwapi.GatewayNameLabelKey] == "" {
		return false
	}
	return slices.ContainsFunc(svc.OwnerReferences, func(o metav1.OwnerReference) bool {
		return o.Kind == kindGateway && strings.HasPrefix(o.APIVersion, gwapi.GroupName+"/")
	})
}

// serviceWant is what a Gateway's Service holds besides its ports and
// metadata.
type serviceWant struct {
	// externalIPs are the Gateway's usable spec.addresses.
	externalIPs []netip.Addr
	// loadBalancer: the Gateway asks a load balancer for addresses (no
	// spec.addresses, or an entry without a value), and its Service is of
	// type LoadBalancer; else ClusterIP, which takes no load balancer IP
	// that nobody would serve.
	loadBalancer bool
}

// desiredGatewayService is the Service the agents of Gateway controller
// ctrl want for a Gateway: its spec.infrastructure labels and annotations,
// the gateway-name label, the ports of its listeners and of the listeners
// of the ListenerSets attached to it, its spec.addresses as externalIPs
// (as Envoy Gateway writes them, so that the Service shows them), the
// type want asks, and the hash of all that.
func desiredGatewayService(gw *gwapi.Gateway, ctrl string, sets []*gwapi.ListenerSet, want serviceWant) *corev1.Service {
	labels := map[string]string{}
	annotations := map[string]string{}
	if inf := gw.Spec.Infrastructure; inf != nil {
		for k, v := range inf.Labels {
			labels[string(k)] = string(v)
		}
		for k, v := range inf.Annotations {
			annotations[string(k)] = string(v)
		}
	}
	annotations[annotationGatewayController] = ctrl
	labels[gwapi.GatewayNameLabelKey] = gw.Name
	labels[labelManagedBy] = managedByNodegress
	// kube-proxy, where it still runs beside nodegress, leaves a Service
	// with this label to the proxy it names: without it, it would reject
	// the Gateway's connections to the address (no endpoints) before the
	// steering hands them to the proxy.
	labels[labelServiceProxyName] = managedByNodegress
	var ips []string
	for _, ip := range want.externalIPs {
		ips = append(ips, ip.String())
	}
	// The API refuses allocateLoadBalancerNodePorts on a ClusterIP
	// Service; left out of the apply, it goes with the LoadBalancer type.
	spec := corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, Ports: gatewayServicePorts(gw, sets), ExternalIPs: ips}
	if want.loadBalancer {
		spec.Type, spec.AllocateLoadBalancerNodePorts = corev1.ServiceTypeLoadBalancer, ptr(false)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: gw.Namespace, Name: gatewayServiceName(gw.Name), Labels: labels, Annotations: annotations,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: gatewayAPIVersion, Kind: kindGateway,
				Name: gw.Name, UID: gw.UID, Controller: ptr(true)}},
		},
		Spec: spec,
	}
	b, _ := json.Marshal(svc)
	h := fnv.New64a()
	_, _ = h.Write(b)
	svc.Annotations[annotationGatewayServiceHash] = strconv.FormatUint(h.Sum64(), 16)
	return svc
}

// gatewayServicePorts are the ports of a Gateway's Service: one per port
// and protocol among its listeners and those of the ListenerSets attached
// to it, sorted. Every listener protocol nodegress serves (HTTP, HTTPS,
// TLS) is TCP. A port's name follows from its number and protocol alone,
// so that a set coming or going leaves the other ports as they were.
func gatewayServicePorts(gw *gwapi.Gateway, sets []*gwapi.ListenerSet) []corev1.ServicePort {
	var ports []corev1.ServicePort
	add := func(port gwapi.PortNumber) {
		p := corev1.ServicePort{Protocol: corev1.ProtocolTCP, Port: int32(port)}
		if !slices.ContainsFunc(ports, func(sp corev1.ServicePort) bool { return sp.Port == p.Port && sp.Protocol == p.Protocol }) {
			p.Name = strings.ToLower(string(p.Protocol)) + "-" + strconv.Itoa(int(p.Port))
			ports = append(ports, p)
		}
	}
	for _, l := range gw.Spec.Listeners {
		add(l.Port)
	}
	for _, s := range sets {
		for _, l := range s.Spec.Listeners {
			add(l.Port)
		}
	}
	slices.SortFunc(ports, func(a, b corev1.ServicePort) int {
		return cmp.Or(cmp.Compare(a.Port, b.Port), strings.Compare(string(a.Protocol), string(b.Protocol)))
	})
	return ports
}

// wantService asks for a Gateway's Service as want says, unless a Service
// of that name is someone else's; it returns the Service in the cache, or
// the problem with its name.
func (g *gatewayTranslator) wantService(gw *gwapi.Gateway, key string, want serviceWant) (*corev1.Service, string) {
	svcKey := gw.Namespace + "/" + gatewayServiceName(gw.Name)
	cur, _ := g.service(svcKey)
	if cur != nil && cur.Labels[labelManagedBy] != managedByNodegress {
		return nil, fmt.Sprintf("service %s exists and is not nodegress's; rename or delete it", svcKey)
	}
	if cur != nil && isGatewayService(cur) && !madeBy(cur, g.ctrl) {
		return nil, fmt.Sprintf("service %s was made by the agents of Gateway controller %q; rename or delete it",
			svcKey, cur.Annotations[annotationGatewayController])
	}
	// The Service itself is decided once the ListenerSets are known
	// (gatewayServices): their ports are its ports too.
	g.serviceWanted[key] = want
	if cur == nil || !ownedBy(cur, gw) {
		return nil, fmt.Sprintf("waiting for service %s to be created", svcKey)
	}
	return cur, ""
}

// gatewayServices decides the Services wanted by wantService.
func (g *gatewayTranslator) gatewayServices() {
	for key, want := range g.serviceWanted {
		gw := g.gateways[key]
		var sets []*gwapi.ListenerSet
		for _, s := range g.setsOf[key] {
			if s.allowed {
				sets = append(sets, s.set)
			}
		}
		svc := desiredGatewayService(gw, g.ctrl, sets, want)
		g.status.Services[svc.Namespace+"/"+svc.Name] = svc
	}
}

// serviceAddresses gives a Gateway the load balancer IPs of its Service,
// and asks for the Service with the Gateway's named addresses as its
// externalIPs. A problem is returned as the condition to report: no
// Service yet, no IP assigned yet, or only hostnames, which the datapath
// cannot steer (they are reported as the Gateway's addresses all the
// same, g.hostnames).
func (g *gatewayTranslator) serviceAddresses(gw *gwapi.Gateway, key string, named []netip.Addr) ([]netip.Addr, *metav1.Condition) {
	notAssigned := func(format string, args ...any) *metav1.Condition {
		c := condition(string(gwapi.GatewayConditionProgrammed), false, string(gwapi.GatewayReasonAddressNotAssigned),
			fmt.Sprintf(format, args...), gw.Generation)
		return &c
	}
	cur, problem := g.wantService(gw, key, serviceWant{externalIPs: named, loadBalancer: true})
	if cur == nil {
		return nil, notAssigned("%s", problem)
	}
	svcKey := cur.Namespace + "/" + cur.Name
	var out []netip.Addr
	var taken, hostnames, badHostnames []string
	for _, in := range cur.Status.LoadBalancer.Ingress {
		if in.IP == "" && in.Hostname != "" {
			// A status address that is no DNS name would have the API
			// server refuse the whole Gateway status.
			h := strings.ToLower(in.Hostname)
			switch {
			case len(validation.IsDNS1123Subdomain(h)) > 0:
				badHostnames = append(badHostnames, strconv.Quote(in.Hostname))
			case !slices.Contains(hostnames, h):
				hostnames = append(hostnames, h)
			}
			continue
		}
		ip, err := parseIPv4(in.IP)
		if err != nil || slices.Contains(out, ip) {
			continue // IPv6: the datapath steers IPv4
		}
		if owner := g.taken[ip]; owner != "" {
			taken = append(taken, fmt.Sprintf("%s (used by gateway %s)", ip, owner))
			continue
		}
		out = append(out, ip)
	}
	g.hostnames[key] = hostnames
	if len(out) == 0 {
		if len(taken) > 0 {
			c := condition(string(gwapi.GatewayConditionProgrammed), false, string(gwapi.GatewayReasonAddressNotUsable),
				"the load balancer IPs of service "+svcKey+" are not usable: "+strings.Join(taken, ", "), gw.Generation)
			return nil, &c
		}
		if len(hostnames) > 0 {
			return nil, notAssigned("the load balancer gave service %s only hostnames (%s), which nodegress cannot serve: "+
				"it steers IPv4 addresses; use a load balancer that assigns IPv4 addresses, or spec.addresses",
				svcKey, strings.Join(hostnames, ", "))
		}
		if len(badHostnames) > 0 {
			return nil, notAssigned("the load balancer gave service %s no IPv4 address, and hostnames that are not DNS names: %s",
				svcKey, strings.Join(badHostnames, ", "))
		}
		return nil, notAssigned("waiting for a load balancer controller to assign service %s an IPv4 address", svcKey)
	}
	for _, ip := range out {
		g.taken[ip] = key
	}
	return out, nil
}

// ownedBy reports whether the Gateway (this one, not an earlier one of the
// same name) owns svc.
func ownedBy(svc *corev1.Service, gw *gwapi.Gateway) bool {
	return slices.ContainsFunc(svc.OwnerReferences, func(o metav1.OwnerReference) bool {
		return o.Kind == kindGateway && o.Name == gw.Name && (gw.UID == "" || o.UID == gw.UID)
	})
}

// gatewayServiceCurrent reports whether svc already is what want asks:
// the same hash, owner and type (a load balancer controller's additions
// stay).
func gatewayServiceCurrent(svc, want *corev1.Service) bool {
	return svc.Annotations[annotationGatewayServiceHash] == want.Annotations[annotationGatewayServiceHash] &&
		svc.Spec.Type == want.Spec.Type && maps.Equal(pick(svc.Labels, want.Labels), want.Labels) &&
		slices.EqualFunc(svc.OwnerReferences, want.OwnerReferences, func(a, b metav1.OwnerReference) bool {
			return a.UID == b.UID && a.Name == b.Name && a.Kind == b.Kind
		})
}

// pick returns the entries of m whose keys are in keys.
func pick(m, keys map[string]string) map[string]string {
	out := make(map[string]string, len(keys))
	for k := range keys {
		if v, ok := m[k]; ok {
			out[k] = v
		}
	}
	return out
}
