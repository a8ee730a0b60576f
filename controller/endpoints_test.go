package controller

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/nodegress/nodegress/loader"
)

// TestBackendsFor checks which endpoints take new connections (Terminating
// false), which only keep their flows (Terminating true) and which are
// left out, against kube-proxy's CategorizeEndpoints and KEP-1669.
func TestBackendsFor(t *testing.T) {
	http := corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}
	slice := func(name string, eps ...sliceOpt) *discoveryv1.EndpointSlice {
		return epSlice("default", name, "web", append([]sliceOpt{slicePort("http", "", 8080)}, eps...)...)
	}
	tests := []struct {
		name   string
		sel    endpointSelection
		slices []*discoveryv1.EndpointSlice
		want   []loader.Backend
	}{
		{
			name: "ready endpoints take new connections, serving terminating ones keep their flows",
			sel:  endpointSelection{nodeName: "node-a"},
			slices: []*discoveryv1.EndpointSlice{slice("web-1",
				endpoint("10.0.0.1", "node-a", "true", "true", "false"),
				endpoint("10.0.0.2", "node-b", "false", "true", "true"),
				endpoint("10.0.0.3", "node-b", "false", "false", "true"), // not serving: left out
				endpoint("10.0.0.4", "node-b", "false", "false", "false"),
			)},
			want: []loader.Backend{be("10.0.0.1", 8080, true, false), be("10.0.0.2", 8080, false, true)},
		},
		{
			name: "no ready endpoint: the serving terminating ones take new connections",
			sel:  endpointSelection{nodeName: "node-a"},
			slices: []*discoveryv1.EndpointSlice{slice("web-1",
				endpoint("10.0.0.1", "node-a", "false", "true", "true"),
				endpoint("10.0.0.2", "node-b", "false", "", "true"), // serving unset counts as serving
				endpoint("10.0.0.3", "node-b", "false", "false", "true"),
				endpoint("10.0.0.4", "node-b", "false", "false", "false"),
			)},
			want: []loader.Backend{be("10.0.0.1", 8080, true, false), be("10.0.0.2", 8080, false, false)},
		},
		{
			name: "only non-serving terminating endpoints: none is used",
			slices: []*discoveryv1.EndpointSlice{slice("web-1",
				endpoint("10.0.0.1", "node-a", "false", "false", "true"),
				endpoint("10.0.0.2", "node-b", "false", "false", "false"),
			)},
			want: []loader.Backend{},
		},
		{
			name: "serving but neither ready nor terminating: keeps its flows, never the fallback",
			slices: []*discoveryv1.EndpointSlice{slice("web-1",
				endpoint("10.0.0.1", "node-a", "false", "true", "false"),
			)},
			want: []loader.Backend{be("10.0.0.1", 8080, false, true)},
		},
		{
			name: "ready and terminating (publishNotReadyAddresses): ready wins",
			slices: []*discoveryv1.EndpointSlice{slice("web-1",
				endpoint("10.0.0.1", "node-a", "true", "false", "true"),
				endpoint("10.0.0.2", "node-b", "false", "true", "true"),
			)},
			want: []loader.Backend{be("10.0.0.1", 8080, false, false), be("10.0.0.2", 8080, false, true)},
		},
		{
			name: "conditions unset: ready",
			slices: []*discoveryv1.EndpointSlice{slice("web-1",
				endpoint("10.0.0.1", "node-a", "", "", ""),
			)},
			want: []loader.Backend{be("10.0.0.1", 8080, false, false)},
		},
		{
			name: "Local: local ready endpoints only; remote and terminating ones keep their flows",
			sel:  endpointSelection{nodeName: "node-a", localOnly: true},
			slices: []*discoveryv1.EndpointSlice{slice("web-1",
				endpoint("10.0.0.1", "node-a", "true", "true", "false"),
				endpoint("10.0.0.2", "node-a", "false", "true", "true"),
				endpoint("10.0.0.3", "node-b", "true", "true", "false"),
				endpoint("10.0.0.4", "node-b", "false", "false", "false"),
			)},
			want: []loader.Backend{be("10.0.0.1", 8080, true, false), be("10.0.0.2", 8080, true, true), be("10.0.0.3", 8080, false, true)},
		},
		{
			name: "Local: no local ready endpoint, local serving terminating ones take new connections, remote ready ones still do not",
			sel:  endpointSelection{nodeName: "node-a", localOnly: true},
			slices: []*discoveryv1.EndpointSlice{slice("web-1",
				endpoint("10.0.0.1", "node-a", "false", "true", "true"),
				endpoint("10.0.0.2", "node-a", "false", "false", "true"),
				endpoint("10.0.0.3", "node-b", "true", "true", "false"),
			)},
			want: []loader.Backend{be("10.0.0.1", 8080, true, false), be("10.0.0.3", 8080, false, true)},
		},
		{
			name: "Local: nothing local, nothing takes new connections",
			sel:  endpointSelection{nodeName: "node-a", localOnly: true},
			slices: []*discoveryv1.EndpointSlice{slice("web-1",
				endpoint("10.0.0.3", "node-b", "true", "true", "false"),
				endpoint("10.0.0.4", "node-c", "false", "true", "true"),
			)},
			want: []loader.Backend{be("10.0.0.3", 8080, false, true), be("10.0.0.4", 8080, false, true)},
		},
		{
			name: "address listed twice: the copy that is not terminating wins, whatever the slice order",
			sel:  endpointSelection{nodeName: "node-a"},
			slices: []*discoveryv1.EndpointSlice{
				slice("web-2", endpoint("10.0.0.1", "node-b", "false", "true", "true")),
				slice("web-1", endpoint("10.0.0.1", "node-a", "false", "false", "false")),
				slice("web-3", endpoint("10.0.0.2", "node-b", "true", "true", "false")),
			},
			// 10.0.0.1's new copy is not ready: the address is not used,
			// though the old copy still serves.
			want: []loader.Backend{be("10.0.0.2", 8080, false, false)},
		},
		{
			name: "address listed twice, both terminating: the first slice by name wins",
			sel:  endpointSelection{nodeName: "node-a"},
			slices: []*discoveryv1.EndpointSlice{
				slice("web-2", endpoint("10.0.0.1", "node-b", "false", "false", "true")),
				slice("web-1", endpoint("10.0.0.1", "node-a", "false", "true", "true")),
			},
			want: []loader.Backend{be("10.0.0.1", 8080, true, false)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, errs := backendsFor(http, tt.slices, tt.sel)
			if len(errs) > 0 {
				t.Fatalf("unexpected errors %v", errs)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("backends\n got %v\nwant %v", describeBackends(got), describeBackends(tt.want))
			}
		})
	}
}

// hints sets the topology hints of the slice's last endpoint.
func hints(zones, nodes []string) sliceOpt {
	return func(s *discoveryv1.EndpointSlice) {
		h := &discoveryv1.EndpointHints{}
		for _, z := range zones {
			h.ForZones = append(h.ForZones, discoveryv1.ForZone{Name: z})
		}
		for _, n := range nodes {
			h.ForNodes = append(h.ForNodes, discoveryv1.ForNode{Name: n})
		}
		s.Endpoints[len(s.Endpoints)-1].Hints = h
	}
}

// TestBackendsForTopology checks the choice of hints against kube-proxy's
// topologyModeFromHints and availableForTopology.
func TestBackendsForTopology(t *testing.T) {
	http := corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}
	slice := func(eps ...sliceOpt) []*discoveryv1.EndpointSlice {
		return []*discoveryv1.EndpointSlice{epSlice("default", "web-1", "web", append([]sliceOpt{slicePort("http", "", 8080)}, eps...)...)}
	}
	zoneA := endpointSelection{nodeName: "node-a", zone: "zone-a", topology: true}
	tests := []struct {
		name   string
		sel    endpointSelection
		slices []*discoveryv1.EndpointSlice
		want   []loader.Backend
	}{
		{
			name: "zone hints: endpoints for this zone take new connections, the others keep their flows",
			sel:  zoneA,
			slices: slice(
				endpoint("10.0.0.1", "node-b", "true", "true", "false"), hints([]string{"zone-a"}, nil),
				endpoint("10.0.0.2", "node-c", "true", "true", "false"), hints([]string{"zone-b"}, nil),
				endpoint("10.0.0.3", "node-c", "true", "true", "false"), hints([]string{"zone-b", "zone-a"}, nil),
				// Not ready: its missing hint does not count.
				endpoint("10.0.0.4", "node-c", "false", "true", "true"),
			),
			want: []loader.Backend{be("10.0.0.1", 8080, false, false), be("10.0.0.2", 8080, false, true), be("10.0.0.3", 8080, false, false), be("10.0.0.4", 8080, false, true)},
		},
		{
			name: "a ready endpoint without zone hint: hints ignored",
			sel:  zoneA,
			slices: slice(
				endpoint("10.0.0.1", "node-b", "true", "true", "false"), hints([]string{"zone-a"}, nil),
				endpoint("10.0.0.2", "node-c", "true", "true", "false"),
			),
			want: []loader.Backend{be("10.0.0.1", 8080, false, false), be("10.0.0.2", 8080, false, false)},
		},
		{
			name: "no endpoint hinted for this zone: hints ignored",
			sel:  zoneA,
			slices: slice(
				endpoint("10.0.0.1", "node-b", "true", "true", "false"), hints([]string{"zone-b"}, nil),
				endpoint("10.0.0.2", "node-c", "true", "true", "false"), hints([]string{"zone-c"}, nil),
			),
			want: []loader.Backend{be("10.0.0.1", 8080, false, false), be("10.0.0.2", 8080, false, false)},
		},
		{
			name: "node without zone label: zone hints ignored",
			sel:  endpointSelection{nodeName: "node-a", topology: true},
			slices: slice(
				endpoint("10.0.0.1", "node-b", "true", "true", "false"), hints([]string{"zone-a"}, nil),
				endpoint("10.0.0.2", "node-c", "true", "true", "false"), hints([]string{"zone-b"}, nil),
			),
			want: []loader.Backend{be("10.0.0.1", 8080, false, false), be("10.0.0.2", 8080, false, false)},
		},
		{
			name: "node hints win over zone hints",
			sel:  zoneA,
			slices: slice(
				endpoint("10.0.0.1", "node-a", "true", "true", "false"), hints([]string{"zone-a"}, []string{"node-a"}),
				endpoint("10.0.0.2", "node-b", "true", "true", "false"), hints([]string{"zone-a"}, []string{"node-b"}),
			),
			want: []loader.Backend{be("10.0.0.1", 8080, true, false), be("10.0.0.2", 8080, false, true)},
		},
		{
			name: "no node hint for this node: zone hints",
			sel:  zoneA,
			slices: slice(
				endpoint("10.0.0.1", "node-b", "true", "true", "false"), hints([]string{"zone-a"}, []string{"node-b"}),
				endpoint("10.0.0.2", "node-c", "true", "true", "false"), hints([]string{"zone-b"}, []string{"node-c"}),
			),
			want: []loader.Backend{be("10.0.0.1", 8080, false, false), be("10.0.0.2", 8080, false, true)},
		},
		{
			name: "a ready endpoint without node hint: zone hints",
			sel:  zoneA,
			slices: slice(
				endpoint("10.0.0.1", "node-a", "true", "true", "false"), hints([]string{"zone-b"}, []string{"node-a"}),
				endpoint("10.0.0.2", "node-c", "true", "true", "false"), hints([]string{"zone-a"}, nil),
			),
			want: []loader.Backend{be("10.0.0.1", 8080, true, true), be("10.0.0.2", 8080, false, false)},
		},
		{
			name: "no ready endpoint: the terminating fallback ignores hints",
			sel:  zoneA,
			slices: slice(
				endpoint("10.0.0.1", "node-b", "false", "true", "true"), hints([]string{"zone-b"}, nil),
				endpoint("10.0.0.2", "node-c", "false", "true", "true"), hints([]string{"zone-a"}, nil),
			),
			want: []loader.Backend{be("10.0.0.1", 8080, false, false), be("10.0.0.2", 8080, false, false)},
		},
		{
			name: "traffic policy Local ignores hints",
			sel:  endpointSelection{nodeName: "node-a", zone: "zone-a", topology: true, localOnly: true},
			slices: slice(
				endpoint("10.0.0.1", "node-a", "true", "true", "false"), hints([]string{"zone-b"}, nil),
				endpoint("10.0.0.2", "node-c", "true", "true", "false"), hints([]string{"zone-a"}, nil),
			),
			want: []loader.Backend{be("10.0.0.1", 8080, true, false), be("10.0.0.2", 8080, false, true)},
		},
		{
			name: "topology off (the L7 proxy): hints ignored",
			sel:  endpointSelection{},
			slices: slice(
				endpoint("10.0.0.1", "node-b", "true", "true", "false"), hints([]string{"zone-a"}, nil),
				endpoint("10.0.0.2", "node-c", "true", "true", "false"), hints([]string{"zone-b"}, nil),
			),
			want: []loader.Backend{be("10.0.0.1", 8080, false, false), be("10.0.0.2", 8080, false, false)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, errs := backendsFor(http, tt.slices, tt.sel)
			if len(errs) > 0 {
				t.Fatalf("unexpected errors %v", errs)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("backends\n got %v\nwant %v", describeBackends(got), describeBackends(tt.want))
			}
		})
	}
}

// describeBackends shows the flags, which %v of a loader.Backend does not.
func describeBackends(bs []loader.Backend) []string {
	out := make([]string, 0, len(bs))
	for _, b := range bs {
		s := b.String()
		if b.Local {
			s += " local"
		}
		if b.Terminating {
			s += " terminating"
		}
		out = append(out, s)
	}
	return out
}

// TestIngressUpstreamTerminatingFallback checks that an Ingress backend
// whose pods are all terminating still gets requests, like a Service.
func TestIngressUpstreamTerminatingFallback(t *testing.T) {
	in := ingressFixture(t)
	in.Services = append(in.Services, service("default", "drain", corev1.ServiceTypeClusterIP,
		port("http", corev1.ProtocolTCP, 80, 0, intstr.FromString("http"))))
	in.EndpointSlices = append(in.EndpointSlices, epSlice("default", "drain-1", "drain", slicePort("http", "", 8080),
		endpoint("10.0.5.1", "node-a", "false", "true", "true"),
		endpoint("10.0.5.2", "node-b", "false", "false", "true"),
	))
	in.Ingresses = []*networkingv1.Ingress{
		ingress("drain", className("nodegress"), rule("drain.example.com", path("/", networkingv1.PathTypePrefix, "drain:http"))),
		ingress("web", className("nodegress"), rule("web.example.com", path("/", networkingv1.PathTypePrefix, "web:http"))),
	}
	cfg, _, errs := TranslateIngress(in)
	if len(errs) > 0 {
		t.Fatalf("unexpected issues: %v", errs)
	}
	want := []string{
		"default/drain:http: 10.0.5.1:8080",
		"default/web:http: 10.0.0.1:8080 10.0.1.1:8080 10.0.1.2:8080~ 10.0.2.1:8080",
	}
	if got := upstreamLines(cfg); !reflect.DeepEqual(got, want) {
		t.Errorf("upstreams\n got %q\nwant %q", got, want)
	}
}

// TestIngressToServiceOfAnotherProxy checks that the L7 proxy still routes
// to the pods of a Service the L4 datapath leaves to another proxy.
func TestIngressToServiceOfAnotherProxy(t *testing.T) {
	in := ingressFixture(t)
	for i, s := range in.Services {
		if s.Name == "web" {
			s = s.DeepCopy()
			s.Labels = map[string]string{labelServiceProxyName: "other-proxy"}
			in.Services[i] = s
		}
	}
	in.Ingresses = []*networkingv1.Ingress{
		ingress("web", className("nodegress"), rule("web.example.com", path("/", networkingv1.PathTypePrefix, "web:http"))),
	}
	cfg, _, errs := TranslateIngress(in)
	if len(errs) > 0 {
		t.Fatalf("unexpected issues: %v", errs)
	}
	want := []string{"default/web:http: 10.0.0.1:8080 10.0.1.1:8080 10.0.1.2:8080~ 10.0.2.1:8080"}
	if got := upstreamLines(cfg); !reflect.DeepEqual(got, want) {
		t.Errorf("upstreams\n got %q\nwant %q", got, want)
	}
}
