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
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/nodegress/nodegress/loader"
)

// TestServiceFields covers the Service fields the datapath enforces beyond
// addresses: loadBalancerSourceRanges, ClientIP affinity and what a Local
// traffic policy does without local endpoints.
func TestServiceFields(t *testing.T) {
	node := NodeInfo{Name: "node-a", Addrs: []netip.Addr{addr("192.0.2.10")}}
	lbSvc := func(opts ...svcOpt) *corev1.Service {
		return service("default", "web", corev1.ServiceTypeLoadBalancer,
			append([]svcOpt{port("http", "", 80, 30080, intstr.FromInt(8080)), lbIPs("203.0.113.5"), externalIPs("198.51.100.9")}, opts...)...)
	}
	ranges := func(r ...string) svcOpt {
		return func(s *corev1.Service) { s.Spec.LoadBalancerSourceRanges = r }
	}
	affinity := func(timeout *int32) svcOpt {
		return func(s *corev1.Service) {
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
			if timeout != nil {
				s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: timeout}}
			}
		}
	}
	local := func(s *corev1.Service) { s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal }
	remoteOnly := epSlice("default", "web-1", "web", slicePort("http", "", 8080), endpoint("10.0.1.1", "node-b", "true", "", ""))
	restricted := func(f loader.Frontend) loader.Frontend { f.Restricted = true; return f }
	frontends := func(lb loader.Frontend) []loader.Frontend {
		return []loader.Frontend{fe("192.0.2.10", 30080), fe("198.51.100.9", 80), lb}
	}
	remote := []loader.Backend{be("10.0.1.1", 8080, false, false)}

	tests := []struct {
		name   string
		svc    *corev1.Service
		slices []*discoveryv1.EndpointSlice
		want   loader.Service
	}{
		{
			name: "source ranges restrict the load balancer IP only",
			svc:  lbSvc(ranges("100.64.0.0/10", " 10.1.0.0/16 ", "2001:db8::/32")),
			want: loader.Service{Frontends: frontends(restricted(fe("203.0.113.5", 80))),
				SourceRanges: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("100.64.0.0/10")}},
		},
		{
			name: "a range covering the node admits the load balancer IP itself",
			svc:  lbSvc(ranges("192.0.2.0/24")),
			want: loader.Service{Frontends: frontends(restricted(fe("203.0.113.5", 80))),
				SourceRanges: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("203.0.113.5/32")}},
		},
		{
			name: "only IPv6 ranges close the IPv4 load balancer",
			svc:  lbSvc(ranges("2001:db8::/32")),
			want: loader.Service{Frontends: frontends(restricted(fe("203.0.113.5", 80))),
				SourceRanges: []netip.Prefix{netip.MustParsePrefix("255.255.255.255/32")}},
		},
		{
			name: "ClientIP affinity with the API's default timeout",
			svc:  lbSvc(affinity(nil)),
			want: loader.Service{Frontends: frontends(fe("203.0.113.5", 80)), AffinityTimeout: 3 * time.Hour},
		},
		{
			name: "ClientIP affinity with its own timeout",
			svc:  lbSvc(affinity(ptr(int32(60)))),
			want: loader.Service{Frontends: frontends(fe("203.0.113.5", 80)), AffinityTimeout: time.Minute},
		},
		{
			name:   "Local policy, endpoints only elsewhere: drop",
			svc:    lbSvc(local),
			slices: []*discoveryv1.EndpointSlice{remoteOnly},
			// The remote endpoint keeps the flows it has, gets no new one.
			want: loader.Service{Frontends: frontends(fe("203.0.113.5", 80)), NoBackendDrop: true,
				Backends: []loader.Backend{be("10.0.1.1", 8080, false, true)}},
		},
		{
			name: "Local policy, no endpoint at all: reject",
			svc:  lbSvc(local),
			want: loader.Service{Frontends: frontends(fe("203.0.113.5", 80))},
		},
		{
			name:   "Cluster policy keeps every endpoint",
			svc:    lbSvc(),
			slices: []*discoveryv1.EndpointSlice{remoteOnly},
			want:   loader.Service{Frontends: frontends(fe("203.0.113.5", 80)), Backends: remote},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, errs := Translate(node, []*corev1.Service{tc.svc}, tc.slices)
			if len(errs) != 0 {
				t.Fatalf("errors: %v", errs)
			}
			tc.want.Name, tc.want.Proto = "default/web:http/TCP", loader.TCP
			sortService(&tc.want)
			if len(got) == 1 && len(got[0].Backends) == 0 {
				got[0].Backends = nil
			}
			if len(got) != 1 || !reflect.DeepEqual(got[0], tc.want) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// TestInternalServices: with the socket load balancer every service port
// also becomes an Internal service for in-cluster clients, at its
// ClusterIPs and the node's frontends, with backends by
// internalTrafficPolicy whatever the external policy.
func TestInternalServices(t *testing.T) {
	node := NodeInfo{Name: "node-a", Addrs: []netip.Addr{addr("192.0.2.10")}, SocketLB: true}
	slice := epSlice("default", "web-1", "web", slicePort("http", "", 8080),
		endpoint("10.0.0.1", "node-a", "true", "", ""), endpoint("10.0.1.1", "node-b", "true", "", ""))
	remoteOnly := epSlice("default", "web-1", "web", slicePort("http", "", 8080), endpoint("10.0.1.1", "node-b", "true", "", ""))
	itpLocal := func(s *corev1.Service) {
		s.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyLocal)
	}
	etpLocal := func(s *corev1.Service) { s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal }
	both := []loader.Backend{be("10.0.0.1", 8080, true, false), be("10.0.1.1", 8080, false, false)}

	tests := []struct {
		name   string
		svc    *corev1.Service
		slices []*discoveryv1.EndpointSlice
		want   loader.Service // the internal one
	}{
		{
			name: "ClusterIP service",
			svc:  service("default", "web", corev1.ServiceTypeClusterIP, port("http", "", 80, 0, intstr.FromInt(8080))),
			want: loader.Service{Frontends: []loader.Frontend{fe("10.96.0.10", 80)}, Backends: both},
		},
		{
			name: "Local external policy: in-cluster clients still reach every endpoint",
			svc: service("default", "web", corev1.ServiceTypeLoadBalancer, port("http", "", 80, 30080, intstr.FromInt(8080)),
				lbIPs("203.0.113.5"), etpLocal),
			want: loader.Service{Frontends: []loader.Frontend{fe("10.96.0.10", 80), fe("192.0.2.10", 30080), fe("203.0.113.5", 80)}, Backends: both},
		},
		{
			name: "Local internal policy: local endpoints only",
			svc:  service("default", "web", corev1.ServiceTypeClusterIP, port("http", "", 80, 0, intstr.FromInt(8080)), itpLocal),
			want: loader.Service{Frontends: []loader.Frontend{fe("10.96.0.10", 80)},
				Backends: []loader.Backend{be("10.0.0.1", 8080, true, false), be("10.0.1.1", 8080, false, true)}},
		},
		{
			name:   "Local internal policy without a local endpoint: dropped",
			svc:    service("default", "web", corev1.ServiceTypeClusterIP, port("http", "", 80, 0, intstr.FromInt(8080)), itpLocal),
			slices: []*discoveryv1.EndpointSlice{remoteOnly},
			want: loader.Service{Frontends: []loader.Frontend{fe("10.96.0.10", 80)}, NoBackendDrop: true,
				Backends: []loader.Backend{be("10.0.1.1", 8080, false, true)}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			slices := tc.slices
			if slices == nil {
				slices = []*discoveryv1.EndpointSlice{slice}
			}
			got, errs := Translate(node, []*corev1.Service{tc.svc}, slices)
			if len(errs) != 0 {
				t.Fatalf("errors: %v", errs)
			}
			tc.want.Name, tc.want.Proto, tc.want.Internal = "default/web:http/TCP/internal", loader.TCP, true
			sortService(&tc.want)
			var internal *loader.Service
			for i := range got {
				if got[i].Internal {
					internal = &got[i]
				}
			}
			if internal == nil {
				t.Fatalf("no internal service in %+v", got)
			}
			sortService(internal)
			if !reflect.DeepEqual(*internal, tc.want) {
				t.Fatalf("got %+v\nwant %+v", *internal, tc.want)
			}
		})
	}
	// Without the socket load balancer a ClusterIP service yields nothing.
	node.SocketLB = false
	if got, _ := Translate(node, []*corev1.Service{tests[0].svc}, []*discoveryv1.EndpointSlice{slice}); len(got) != 0 {
		t.Errorf("without the socket load balancer: %+v", got)
	}
}

// TestChoiceAnnotations: nodegress.io/lb-algorithm (Maglev or hash) and
// nodegress.io/forwarding-mode (DSR or SNAT) pick per Service over the
// agent's default; a bad value is reported and the default kept. DSR is
// for the external service only (sockets reach backends directly).
func TestChoiceAnnotations(t *testing.T) {
	kinds := []struct {
		annotation, yes, no string
		setDefault          func(*NodeInfo, bool)
		get                 func(loader.Service) bool
		externalOnly        bool
	}{
		{AnnotationLBAlgorithm, "maglev", "hash", func(n *NodeInfo, v bool) { n.Maglev = v }, func(s loader.Service) bool { return s.Maglev }, false},
		{AnnotationForwardingMode, "dsr", "snat", func(n *NodeInfo, v bool) { n.DSR = v }, func(s loader.Service) bool { return s.DSR }, true},
	}
	tests := []struct {
		name          string
		def           bool
		value         string // "" for none
		want, wantErr bool
	}{
		{name: "default no", want: false},
		{name: "default yes", def: true, want: true},
		{name: "annotated yes", value: "yes", want: true},
		{name: "annotated no over a yes default", def: true, value: " no ", want: false},
		{name: "bad value keeps the default", def: true, value: "round-robin", want: true, wantErr: true},
	}
	for _, k := range kinds {
		for _, tc := range tests {
			t.Run(k.annotation+"/"+tc.name, func(t *testing.T) {
				node := NodeInfo{Name: "node-a", Addrs: []netip.Addr{addr("192.0.2.10")}, SocketLB: true}
				k.setDefault(&node, tc.def)
				opts := []svcOpt{port("http", "", 80, 30080, intstr.FromInt(8080))}
				if tc.value != "" {
					v := strings.NewReplacer("yes", k.yes, "no", k.no).Replace(tc.value)
					opts = append(opts, func(s *corev1.Service) { s.Annotations = map[string]string{k.annotation: v} })
				}
				got, errs := Translate(node, []*corev1.Service{service("default", "web", corev1.ServiceTypeNodePort, opts...)}, nil)
				var ae *AnnotationError
				if tc.wantErr != (len(errs) == 1 && errors.As(errs[0], &ae)) {
					t.Fatalf("errors %v", errs)
				}
				if len(got) != 2 {
					t.Fatalf("got %+v, want the external and the internal service", got)
				}
				for _, s := range got {
					if want := tc.want && !(k.externalOnly && s.Internal); k.get(s) != want {
						t.Errorf("%s: %s %t, want %t", s.Name, k.annotation, k.get(s), want)
					}
				}
			})
		}
	}
}

// TestHeadlessLabel: EndpointSlices (and Services) labelled
// service.kubernetes.io/headless or for another proxy are not seen, as
// kube-proxy's informers do not see them: the Service has no endpoint.
func TestHeadlessLabel(t *testing.T) {
	node := NodeInfo{Name: "node-a", Addrs: []netip.Addr{addr("192.0.2.10")}}
	svc := service("default", "web", corev1.ServiceTypeNodePort, port("http", "", 80, 30080, intstr.FromInt(8080)))
	for _, label := range []string{"service.kubernetes.io/headless", "service.kubernetes.io/service-proxy-name"} {
		slice := epSlice("default", "web-1", "web", slicePort("http", "", 8080), endpoint("10.0.0.1", "node-a", "true", "", ""))
		got, _ := Translate(node, []*corev1.Service{svc}, []*discoveryv1.EndpointSlice{slice})
		if len(got) != 1 || len(got[0].Backends) != 1 {
			t.Fatalf("unlabelled slice: %+v", got)
		}
		slice.Labels[label] = ""
		got, _ = Translate(node, []*corev1.Service{svc}, []*discoveryv1.EndpointSlice{slice})
		if len(got) != 1 || len(got[0].Backends) != 0 {
			t.Errorf("slice labelled %s: %+v, want the service without backends", label, got)
		}
	}
	labelled := service("default", "web", corev1.ServiceTypeNodePort, port("http", "", 80, 30080, intstr.FromInt(8080)),
		func(s *corev1.Service) { s.Labels = map[string]string{"service.kubernetes.io/headless": ""} })
	if got, _ := Translate(node, []*corev1.Service{labelled}, nil); len(got) != 0 {
		t.Errorf("service labelled headless: %+v", got)
	}
}
