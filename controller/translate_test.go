package controller

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/nodegress/nodegress/loader"
)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func fe(a string, port uint16) loader.Frontend { return loader.Frontend{Addr: addr(a), Port: port} }

func be(a string, port uint16, local, terminating bool) loader.Backend {
	return loader.Backend{Addr: addr(a), Port: port, Local: local, Terminating: terminating}
}

type svcOpt func(*corev1.Service)

func service(ns, name string, typ corev1.ServiceType, opts ...svcOpt) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Type: typ, ClusterIP: "10.96.0.10"},
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

func port(name string, proto corev1.Protocol, p, nodePort int32, target intstr.IntOrString) svcOpt {
	return func(s *corev1.Service) {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: name, Protocol: proto, Port: p, NodePort: nodePort, TargetPort: target})
	}
}

func externalIPs(ips ...string) svcOpt {
	return func(s *corev1.Service) { s.Spec.ExternalIPs = ips }
}

func lbIPs(ips ...string) svcOpt {
	return func(s *corev1.Service) {
		for _, ip := range ips {
			s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
		}
	}
}

func created(t time.Time) svcOpt {
	return func(s *corev1.Service) { s.CreationTimestamp = metav1.NewTime(t) }
}

type sliceOpt func(*discoveryv1.EndpointSlice)

func epSlice(ns, name, svc string, opts ...sliceOpt) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

func slicePort(name string, proto corev1.Protocol, p int32) sliceOpt {
	return func(s *discoveryv1.EndpointSlice) {
		sp := discoveryv1.EndpointPort{Port: ptr(p)}
		if name != "" {
			sp.Name = ptr(name)
		}
		if proto != "" {
			sp.Protocol = ptr(proto)
		}
		s.Ports = append(s.Ports, sp)
	}
}

// endpoint adds an endpoint; ready/serving/terminating are "", "true" or
// "false" ("" leaves the condition unset).
func endpoint(ip, node, ready, serving, terminating string) sliceOpt {
	cond := func(v string) *bool {
		switch v {
		case "true":
			return ptr(true)
		case "false":
			return ptr(false)
		}
		return nil
	}
	return func(s *discoveryv1.EndpointSlice) {
		ep := discoveryv1.Endpoint{
			Addresses:  []string{ip},
			Conditions: discoveryv1.EndpointConditions{Ready: cond(ready), Serving: cond(serving), Terminating: cond(terminating)},
		}
		if node != "" {
			ep.NodeName = ptr(node)
		}
		s.Endpoints = append(s.Endpoints, ep)
	}
}

// targetPod names the pod of the slice's last endpoint, in the slice's
// namespace.
func targetPod(name string) sliceOpt {
	return func(s *discoveryv1.EndpointSlice) {
		s.Endpoints[len(s.Endpoints)-1].TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: s.Namespace, Name: name}
	}
}

func addressType(t discoveryv1.AddressType) sliceOpt {
	return func(s *discoveryv1.EndpointSlice) { s.AddressType = t }
}

func TestTranslate(t *testing.T) {
	node := NodeInfo{Name: "node-a", Addrs: []netip.Addr{addr("192.0.2.10"), addr("192.0.2.11")}}
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	webSlice := epSlice("default", "web-1", "web", slicePort("http", "", 8080),
		endpoint("10.0.0.1", "node-a", "", "", ""),
		endpoint("10.0.1.1", "node-b", "true", "true", "false"))

	tests := []struct {
		name     string
		node     NodeInfo
		svcs     []*corev1.Service
		slices   []*discoveryv1.EndpointSlice
		want     []loader.Service
		wantErrs []string // substrings, in order
	}{
		{
			name:   "NodePort on every node address, local and remote backends",
			node:   node,
			svcs:   []*corev1.Service{service("default", "web", corev1.ServiceTypeNodePort, port("http", "", 80, 30080, intstr.FromString("http")))},
			slices: []*discoveryv1.EndpointSlice{webSlice},
			want: []loader.Service{{
				Name: "default/web:http/TCP", Proto: loader.TCP,
				Frontends: []loader.Frontend{fe("192.0.2.10", 30080), fe("192.0.2.11", 30080)},
				Backends:  []loader.Backend{be("10.0.0.1", 8080, true, false), be("10.0.1.1", 8080, false, false)},
			}},
		},
		{
			name: "LoadBalancer: nodePort on node addresses and port on LB IPs, IPv6 and hostname skipped",
			node: node,
			svcs: []*corev1.Service{service("default", "web", corev1.ServiceTypeLoadBalancer,
				port("http", corev1.ProtocolTCP, 80, 30080, intstr.FromInt32(8080)),
				lbIPs("203.0.113.7", "2001:db8::7"),
				func(s *corev1.Service) {
					s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress,
						corev1.LoadBalancerIngress{Hostname: "lb.example.com"},
						corev1.LoadBalancerIngress{IP: "203.0.113.8", IPMode: ptr(corev1.LoadBalancerIPModeProxy)})
				})},
			slices: []*discoveryv1.EndpointSlice{webSlice},
			want: []loader.Service{{
				Name: "default/web:http/TCP", Proto: loader.TCP,
				Frontends: []loader.Frontend{fe("192.0.2.10", 30080), fe("192.0.2.11", 30080), fe("203.0.113.7", 80)},
				Backends:  []loader.Backend{be("10.0.0.1", 8080, true, false), be("10.0.1.1", 8080, false, false)},
			}},
			wantErrs: []string{"2001:db8::7"},
		},
		{
			name: "LoadBalancer without node ports only has LB IPs",
			node: node,
			svcs: []*corev1.Service{service("default", "web", corev1.ServiceTypeLoadBalancer,
				port("http", "", 80, 0, intstr.FromInt32(8080)), lbIPs("203.0.113.7"))},
			slices: []*discoveryv1.EndpointSlice{webSlice},
			want: []loader.Service{{
				Name: "default/web:http/TCP", Proto: loader.TCP,
				Frontends: []loader.Frontend{fe("203.0.113.7", 80)},
				Backends:  []loader.Backend{be("10.0.0.1", 8080, true, false), be("10.0.1.1", 8080, false, false)},
			}},
		},
		{
			name: "ClusterIP with externalIPs; LB status ignored for ClusterIP",
			node: node,
			svcs: []*corev1.Service{service("shop", "api", "",
				port("", "", 443, 0, intstr.FromInt32(8443)), externalIPs("198.51.100.1", "198.51.100.2"), lbIPs("203.0.113.9"))},
			slices: []*discoveryv1.EndpointSlice{epSlice("shop", "api-x", "api", slicePort("", "", 8443), endpoint("10.0.2.1", "node-b", "", "", ""))},
			want: []loader.Service{{
				Name: "shop/api:443/TCP", Proto: loader.TCP,
				Frontends: []loader.Frontend{fe("198.51.100.1", 443), fe("198.51.100.2", 443)},
				Backends:  []loader.Backend{be("10.0.2.1", 8443, false, false)},
			}},
		},
		{
			name: "ClusterIP without externalIPs, headless and ExternalName produce nothing",
			node: node,
			svcs: []*corev1.Service{
				service("default", "internal", corev1.ServiceTypeClusterIP, port("http", "", 80, 0, intstr.FromInt32(80))),
				service("default", "headless", "", port("http", "", 80, 0, intstr.FromInt32(80)), externalIPs("198.51.100.1"),
					func(s *corev1.Service) { s.Spec.ClusterIP = corev1.ClusterIPNone }),
				service("default", "ext", corev1.ServiceTypeExternalName, port("http", "", 80, 0, intstr.FromInt32(80)), externalIPs("198.51.100.1")),
			},
			slices: []*discoveryv1.EndpointSlice{webSlice,
				epSlice("default", "headless-1", "headless", slicePort("http", "", 80), endpoint("10.0.4.1", "node-a", "", "", ""))},
		},
		{
			name: "headless and ExternalName are not even checked: no problem reported",
			node: node,
			svcs: []*corev1.Service{
				service("default", "headless", corev1.ServiceTypeNodePort, port("http", corev1.ProtocolSCTP, 80, 70000, intstr.FromInt32(80)),
					externalIPs("not-an-ip", "2001:db8::1"), func(s *corev1.Service) { s.Spec.ClusterIP = corev1.ClusterIPNone }),
				service("default", "ext", corev1.ServiceTypeExternalName, port("http", "", 80, 0, intstr.FromInt32(80)), externalIPs("not-an-ip")),
			},
		},
		{
			name: "service-proxy-name label, whatever its value: left to that proxy, no problem reported",
			node: node,
			svcs: []*corev1.Service{
				service("default", "web", corev1.ServiceTypeLoadBalancer, port("http", "", 80, 30080, intstr.FromString("http")),
					lbIPs("203.0.113.7"), externalIPs("not-an-ip"),
					func(s *corev1.Service) { s.Labels = map[string]string{labelServiceProxyName: "other-proxy"} }),
				service("default", "empty", corev1.ServiceTypeNodePort, port("http", "", 80, 30081, intstr.FromString("http")),
					func(s *corev1.Service) { s.Labels = map[string]string{labelServiceProxyName: ""} }),
			},
			slices: []*discoveryv1.EndpointSlice{webSlice},
		},
		{
			name: "named ports resolve per slice: two slices with different target ports, two service ports",
			node: node,
			svcs: []*corev1.Service{service("default", "web", corev1.ServiceTypeNodePort,
				port("http", "", 80, 30080, intstr.FromString("web")),
				port("metrics", "", 9090, 30090, intstr.FromString("metrics")))},
			slices: []*discoveryv1.EndpointSlice{
				epSlice("default", "web-1", "web", slicePort("http", "", 8080), slicePort("metrics", "", 9100),
					endpoint("10.0.0.1", "node-a", "", "", "")),
				epSlice("default", "web-2", "web", slicePort("http", corev1.ProtocolTCP, 8081),
					endpoint("10.0.0.2", "node-b", "", "", "")),
				// Same name, other namespace: not ours.
				epSlice("other", "web-1", "web", slicePort("http", "", 1), endpoint("10.9.9.9", "", "", "", "")),
			},
			want: []loader.Service{
				{
					Name: "default/web:http/TCP", Proto: loader.TCP,
					Frontends: []loader.Frontend{fe("192.0.2.10", 30080), fe("192.0.2.11", 30080)},
					Backends:  []loader.Backend{be("10.0.0.1", 8080, true, false), be("10.0.0.2", 8081, false, false)},
				},
				{
					Name: "default/web:metrics/TCP", Proto: loader.TCP,
					Frontends: []loader.Frontend{fe("192.0.2.10", 30090), fe("192.0.2.11", 30090)},
					Backends:  []loader.Backend{be("10.0.0.1", 9100, true, false)},
				},
			},
		},
		{
			name: "not ready dropped, serving+terminating kept as Terminating, duplicate across slices prefers ready",
			node: node,
			svcs: []*corev1.Service{service("default", "web", corev1.ServiceTypeNodePort, port("http", "", 80, 30080, intstr.FromString("http")))},
			slices: []*discoveryv1.EndpointSlice{
				epSlice("default", "web-1", "web", slicePort("http", "", 8080),
					endpoint("10.0.0.1", "node-a", "false", "false", "false"), // not ready
					endpoint("10.0.0.2", "node-a", "false", "true", "true"),   // draining
					endpoint("10.0.0.3", "node-b", "false", "false", "true"),  // terminating, not serving
					endpoint("10.0.0.4", "node-b", "false", "", "true"),       // serving unset counts as serving
					endpoint("10.0.0.5", "node-b", "false", "true", "true"),
				),
				epSlice("default", "web-2", "web", slicePort("http", "", 8080),
					endpoint("10.0.0.5", "node-b", "true", "true", "false"),
				),
			},
			want: []loader.Service{{
				Name: "default/web:http/TCP", Proto: loader.TCP,
				Frontends: []loader.Frontend{fe("192.0.2.10", 30080), fe("192.0.2.11", 30080)},
				Backends: []loader.Backend{
					be("10.0.0.2", 8080, true, true),
					be("10.0.0.4", 8080, false, true),
					be("10.0.0.5", 8080, false, false),
				},
			}},
		},
		{
			name: "UDP and TCP on the same port number are two services; SCTP skipped",
			node: node,
			svcs: []*corev1.Service{service("kube-system", "dns", corev1.ServiceTypeNodePort,
				port("dns", corev1.ProtocolUDP, 53, 30053, intstr.FromInt32(5353)),
				port("dns-tcp", corev1.ProtocolTCP, 53, 30053, intstr.FromInt32(5353)),
				port("sig", corev1.ProtocolSCTP, 99, 30099, intstr.FromInt32(99)))},
			slices: []*discoveryv1.EndpointSlice{epSlice("kube-system", "dns-1", "dns",
				slicePort("dns", corev1.ProtocolUDP, 5353), slicePort("dns-tcp", corev1.ProtocolTCP, 5353),
				endpoint("10.0.3.1", "node-a", "", "", ""))},
			want: []loader.Service{
				{
					Name: "kube-system/dns:dns-tcp/TCP", Proto: loader.TCP,
					Frontends: []loader.Frontend{fe("192.0.2.10", 30053), fe("192.0.2.11", 30053)},
					Backends:  []loader.Backend{be("10.0.3.1", 5353, true, false)},
				},
				{
					Name: "kube-system/dns:dns/UDP", Proto: loader.UDP,
					Frontends: []loader.Frontend{fe("192.0.2.10", 30053), fe("192.0.2.11", 30053)},
					Backends:  []loader.Backend{be("10.0.3.1", 5353, true, false)},
				},
			},
			wantErrs: []string{"SCTP"},
		},
		{
			name: "IPv6 slices and IPv6 externalIPs skipped",
			node: node,
			svcs: []*corev1.Service{service("default", "web", "", port("http", "", 80, 0, intstr.FromString("http")),
				externalIPs("2001:db8::1", "198.51.100.1"))},
			slices: []*discoveryv1.EndpointSlice{
				webSlice,
				epSlice("default", "web-v6", "web", addressType(discoveryv1.AddressTypeIPv6), slicePort("http", "", 8080),
					endpoint("fd00::1", "node-a", "", "", "")),
			},
			want: []loader.Service{{
				Name: "default/web:http/TCP", Proto: loader.TCP,
				Frontends: []loader.Frontend{fe("198.51.100.1", 80)},
				Backends:  []loader.Backend{be("10.0.0.1", 8080, true, false), be("10.0.1.1", 8080, false, false)},
			}},
			wantErrs: []string{"2001:db8::1"},
		},
		{
			name: "no node addresses: NodePort service has no frontend",
			node: NodeInfo{Name: "node-a"},
			svcs: []*corev1.Service{service("default", "web", corev1.ServiceTypeNodePort, port("http", "", 80, 30080, intstr.FromString("http")))},
		},
		{
			name: "service without endpoints still gets its frontends",
			node: node,
			svcs: []*corev1.Service{service("default", "web", corev1.ServiceTypeNodePort, port("http", "", 80, 30080, intstr.FromString("http")))},
			want: []loader.Service{{
				Name: "default/web:http/TCP", Proto: loader.TCP,
				Frontends: []loader.Frontend{fe("192.0.2.10", 30080), fe("192.0.2.11", 30080)},
				Backends:  []loader.Backend{},
			}},
		},
		{
			name: "externalTrafficPolicy Local: only local backends take new connections, remote ones keep their flows",
			node: node,
			svcs: []*corev1.Service{service("default", "web", corev1.ServiceTypeNodePort, port("http", "", 80, 30080, intstr.FromString("http")),
				func(s *corev1.Service) { s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal })},
			slices: []*discoveryv1.EndpointSlice{webSlice},
			want: []loader.Service{{
				Name: "default/web:http/TCP", Proto: loader.TCP,
				Frontends: []loader.Frontend{fe("192.0.2.10", 30080), fe("192.0.2.11", 30080)},
				Backends:  []loader.Backend{be("10.0.0.1", 8080, true, false), be("10.0.1.1", 8080, false, true)},
			}},
		},
		{
			name: "zone hints: the node's zone takes new connections, the other zone keeps its flows",
			node: NodeInfo{Name: "node-a", Addrs: node.Addrs, Zone: "zone-a"},
			svcs: []*corev1.Service{service("default", "web", corev1.ServiceTypeNodePort, port("http", "", 80, 30080, intstr.FromString("http")))},
			slices: []*discoveryv1.EndpointSlice{epSlice("default", "web-1", "web", slicePort("http", "", 8080),
				endpoint("10.0.0.1", "node-b", "true", "true", "false"), hints([]string{"zone-a"}, nil),
				endpoint("10.0.0.2", "node-c", "true", "true", "false"), hints([]string{"zone-b"}, nil))},
			want: []loader.Service{{
				Name: "default/web:http/TCP", Proto: loader.TCP,
				Frontends: []loader.Frontend{fe("192.0.2.10", 30080), fe("192.0.2.11", 30080)},
				Backends:  []loader.Backend{be("10.0.0.1", 8080, false, false), be("10.0.0.2", 8080, false, true)},
			}},
		},
		{
			name: "every endpoint terminating: the serving ones take new connections",
			node: node,
			svcs: []*corev1.Service{service("default", "web", corev1.ServiceTypeNodePort, port("http", "", 80, 30080, intstr.FromString("http")))},
			slices: []*discoveryv1.EndpointSlice{epSlice("default", "web-1", "web", slicePort("http", "", 8080),
				endpoint("10.0.0.1", "node-a", "false", "true", "true"),
				endpoint("10.0.0.2", "node-b", "false", "true", "true"),
				endpoint("10.0.0.3", "node-b", "false", "false", "true"))},
			want: []loader.Service{{
				Name: "default/web:http/TCP", Proto: loader.TCP,
				Frontends: []loader.Frontend{fe("192.0.2.10", 30080), fe("192.0.2.11", 30080)},
				Backends:  []loader.Backend{be("10.0.0.1", 8080, true, false), be("10.0.0.2", 8080, false, false)},
			}},
		},
		{
			name: "frontend claimed by two services goes to the older one",
			node: node,
			svcs: []*corev1.Service{
				service("default", "b-new", "", port("http", "", 80, 0, intstr.FromInt32(80)), externalIPs("198.51.100.1", "198.51.100.2"), created(t0.Add(time.Hour))),
				service("default", "a-old", "", port("http", "", 80, 0, intstr.FromInt32(80)), externalIPs("198.51.100.1"), created(t0)),
			},
			want: []loader.Service{
				{Name: "default/a-old:http/TCP", Proto: loader.TCP, Frontends: []loader.Frontend{fe("198.51.100.1", 80)}, Backends: []loader.Backend{}},
				{Name: "default/b-new:http/TCP", Proto: loader.TCP, Frontends: []loader.Frontend{fe("198.51.100.2", 80)}, Backends: []loader.Backend{}},
			},
			wantErrs: []string{"198.51.100.1:80/TCP already used by default/a-old:http/TCP"},
		},
		{
			name: "endpoint on a node named like ours only when the name is set",
			node: NodeInfo{Addrs: node.Addrs},
			svcs: []*corev1.Service{service("default", "web", corev1.ServiceTypeNodePort, port("http", "", 80, 30080, intstr.FromString("http")))},
			slices: []*discoveryv1.EndpointSlice{epSlice("default", "web-1", "web", slicePort("http", "", 8080),
				endpoint("10.0.0.1", "", "", "", ""))},
			want: []loader.Service{{
				Name: "default/web:http/TCP", Proto: loader.TCP,
				Frontends: []loader.Frontend{fe("192.0.2.10", 30080), fe("192.0.2.11", 30080)},
				Backends:  []loader.Backend{be("10.0.0.1", 8080, false, false)},
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, errs := Translate(tt.node, tt.svcs, tt.slices)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("services:\n got %+v\nwant %+v", got, tt.want)
			}
			if len(errs) != len(tt.wantErrs) {
				t.Fatalf("errors: got %v, want %d matching %q", errs, len(tt.wantErrs), tt.wantErrs)
			}
			for i, e := range errs {
				if !strings.Contains(e.Error(), tt.wantErrs[i]) {
					t.Errorf("error %d: %q does not contain %q", i, e, tt.wantErrs[i])
				}
				var oe *ObjectError
				if !errors.As(e, &oe) {
					t.Errorf("error %d: %T is not an *ObjectError", i, e)
				}
			}
		})
	}
}

func TestTranslateDeterministic(t *testing.T) {
	node := NodeInfo{Name: "n", Addrs: []netip.Addr{addr("192.0.2.1")}}
	svcs := []*corev1.Service{
		service("b", "z", corev1.ServiceTypeNodePort, port("", "", 80, 30001, intstr.FromInt32(80))),
		service("a", "y", corev1.ServiceTypeNodePort, port("", "", 80, 30002, intstr.FromInt32(80))),
	}
	slices := []*discoveryv1.EndpointSlice{
		epSlice("b", "z-2", "z", slicePort("", "", 80), endpoint("10.0.0.9", "", "", "", ""), endpoint("10.0.0.3", "", "", "", "")),
		epSlice("b", "z-1", "z", slicePort("", "", 80), endpoint("10.0.0.5", "", "", "", "")),
	}
	first, _ := Translate(node, svcs, slices)
	for range 20 {
		// Reversed input must give the same output.
		rs := []*corev1.Service{svcs[1], svcs[0]}
		rsl := []*discoveryv1.EndpointSlice{slices[1], slices[0]}
		got, _ := Translate(node, rs, rsl)
		if !reflect.DeepEqual(got, first) {
			t.Fatalf("output depends on input order:\n%+v\n%+v", got, first)
		}
	}
	if first[0].Name != "a/y:80/TCP" || first[1].Backends[0].Addr != addr("10.0.0.3") {
		t.Errorf("not sorted: %+v", first)
	}
}

func TestNodeInfoFrom(t *testing.T) {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "node-a", Labels: map[string]string{corev1.LabelTopologyZone: "zone-a"}},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: "10.1.0.5"},
			{Type: corev1.NodeExternalIP, Address: "203.0.113.5"},
			{Type: corev1.NodeInternalIP, Address: "fd00::5"},
			{Type: corev1.NodeHostName, Address: "node-a"},
			{Type: corev1.NodeInternalIP, Address: "192.0.2.10"}, // also a device address
		}},
	}
	tests := []struct {
		name     string
		devices  []netip.Addr
		node     *corev1.Node
		want     []netip.Addr
		wantZone string
	}{
		{"devices only", []netip.Addr{addr("192.0.2.10"), addr("2001:db8::1"), addr("::ffff:192.0.2.11")}, nil,
			[]netip.Addr{addr("192.0.2.10"), addr("192.0.2.11")}, ""},
		{"devices and Node object, deduplicated", []netip.Addr{addr("192.0.2.10")}, n,
			[]netip.Addr{addr("10.1.0.5"), addr("192.0.2.10"), addr("203.0.113.5")}, "zone-a"},
		{"Node object only", nil, n,
			[]netip.Addr{addr("10.1.0.5"), addr("192.0.2.10"), addr("203.0.113.5")}, "zone-a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := NodeInfoFrom("node-a", tt.devices, tt.node)
			if got.Name != "node-a" || !reflect.DeepEqual(got.Addrs, tt.want) || got.Zone != tt.wantZone {
				t.Errorf("got %+v, want addrs %v, zone %q", got, tt.want, tt.wantZone)
			}
		})
	}

	// The Node's addresses become NodePort frontends.
	svc := service("default", "web", corev1.ServiceTypeNodePort, port("http", "", 80, 30080, intstr.FromInt32(80)))
	got, _ := Translate(NodeInfoFrom("node-a", nil, n), []*corev1.Service{svc}, nil)
	want := []loader.Frontend{fe("10.1.0.5", 30080), fe("192.0.2.10", 30080), fe("203.0.113.5", 30080)}
	if len(got) != 1 || !reflect.DeepEqual(got[0].Frontends, want) {
		t.Errorf("frontends from Node object: got %+v, want %v", got, want)
	}
}
