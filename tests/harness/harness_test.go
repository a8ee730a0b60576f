package harness

import (
	"context"
	"crypto/rand"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/yaml"

	"github.com/nodegress/nodegress/tests/netns"
)

// TestServiceYAML decodes the generated documents strictly into the
// Kubernetes types: a typo in a field name would fail here rather than be
// silently ignored by the agent.
func TestServiceYAML(t *testing.T) {
	node := &netns.Node{Name: "node2", Index: 2, Addr: netns.NodeIP(2), PodCIDR: netns.PodCIDR(2)}
	pod := &netns.Pod{Name: "pod2a", Addr: netip.MustParseAddr("10.244.2.10"), Node: node}
	lb := netip.MustParseAddr("10.96.20.1")
	ext := netip.MustParseAddr("10.96.10.1")
	tests := []struct {
		name string
		svc  Service
		want func(t *testing.T, svc *corev1.Service, es *discoveryv1.EndpointSlice)
	}{
		{
			name: "load balancer with terminating endpoint",
			svc: Service{Name: "web", Type: "LoadBalancer", LoadBalancerIPs: []netip.Addr{lb}, ExternalIPs: []netip.Addr{ext},
				Ports:     []Port{{Name: "http", Port: 80, TargetPort: 8080, NodePort: 30080}},
				Endpoints: []Endpoint{{Pod: pod, Terminating: true}}},
			want: func(t *testing.T, svc *corev1.Service, es *discoveryv1.EndpointSlice) {
				if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || svc.Status.LoadBalancer.Ingress[0].IP != lb.String() {
					t.Errorf("service: %+v", svc)
				}
				if svc.Spec.ExternalIPs[0] != ext.String() || svc.Spec.Ports[0].NodePort != 30080 || svc.Spec.Ports[0].TargetPort.IntVal != 8080 {
					t.Errorf("service spec: %+v", svc.Spec)
				}
				if svc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyCluster {
					t.Errorf("externalTrafficPolicy %q", svc.Spec.ExternalTrafficPolicy)
				}
				ep := es.Endpoints[0]
				if ep.Addresses[0] != "10.244.2.10" || *ep.NodeName != "node2" || *ep.Conditions.Ready || !*ep.Conditions.Terminating {
					t.Errorf("endpoint: %+v", ep)
				}
				if es.Labels[discoveryv1.LabelServiceName] != "web" || *es.Ports[0].Port != 8080 || *es.Ports[0].Name != "http" {
					t.Errorf("slice: %+v", es)
				}
			},
		},
		{
			name: "udp node port without endpoints",
			svc:  Service{Name: "echo", Namespace: "apps", Ports: []Port{{Protocol: "UDP", Port: 9090, TargetPort: 9090, NodePort: 30095}}},
			want: func(t *testing.T, svc *corev1.Service, es *discoveryv1.EndpointSlice) {
				if svc.Namespace != "apps" || svc.Spec.Type != corev1.ServiceTypeNodePort || svc.Spec.Ports[0].Protocol != corev1.ProtocolUDP || svc.Spec.Ports[0].Name != "udp" {
					t.Errorf("service: %+v", svc)
				}
				if len(es.Endpoints) != 0 || es.Namespace != "apps" {
					t.Errorf("slice: %+v", es)
				}
			},
		},
		{
			name: "cluster IP with external IP",
			svc:  Service{Name: "ext", Type: "ClusterIP", ExternalIPs: []netip.Addr{ext}, Ports: []Port{{Port: 80, TargetPort: 8080, NodePort: 30000}}},
			want: func(t *testing.T, svc *corev1.Service, es *discoveryv1.EndpointSlice) {
				if svc.Spec.Ports[0].NodePort != 0 || svc.Spec.ExternalTrafficPolicy != "" {
					t.Errorf("cluster IP service has node port fields: %+v", svc.Spec)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			docs := tt.svc.YAML()
			if len(docs) != 2 {
				t.Fatalf("got %d documents, want 2", len(docs))
			}
			var svc corev1.Service
			var es discoveryv1.EndpointSlice
			if err := yaml.UnmarshalStrict([]byte(docs[0]), &svc); err != nil {
				t.Fatalf("service: %v\n%s", err, docs[0])
			}
			if err := yaml.UnmarshalStrict([]byte(docs[1]), &es); err != nil {
				t.Fatalf("endpointslice: %v\n%s", err, docs[1])
			}
			if svc.APIVersion != "v1" || svc.Kind != "Service" || es.APIVersion != "discovery.k8s.io/v1" || es.Kind != "EndpointSlice" {
				t.Errorf("type meta: %v %v", svc.TypeMeta, es.TypeMeta)
			}
			tt.want(t, &svc, &es)
		})
	}

	t.Run("node", func(t *testing.T) {
		var n corev1.Node
		if err := yaml.UnmarshalStrict([]byte(NodeYAML(node)), &n); err != nil {
			t.Fatal(err)
		}
		if n.Name != "node2" || n.Spec.PodCIDR != "10.244.2.0/24" || n.Status.Addresses[0].Address != "10.100.0.2" {
			t.Errorf("node: %+v", n)
		}
	})
}

func TestParseReply(t *testing.T) {
	tests := []struct {
		in      string
		want    Reply
		wantErr bool
	}{
		{in: "pod=pod1a client=10.100.0.10\n", want: Reply{Pod: "pod1a", Client: netns.ClientIP}},
		{in: "pod=x client=1.2.3.4", want: Reply{Pod: "x", Client: netip.MustParseAddr("1.2.3.4")}},
		{in: "pod= client=1.2.3.4", wantErr: true},
		{in: "pod=x client=nope", wantErr: true},
		{in: "<html>", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseReply(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseReply(%q) = %v, %v; want %v, error %t", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

// TestPodServers starts pod servers and talks to them from their node, with
// the clients the e2e tests use, without any agent involved.
func TestPodServers(t *testing.T) {
	tp := netns.SingleNode(t, 2)
	StartPodServers(t, tp.Pods()...)
	node := tp.Nodes[0]
	ctx := context.Background()
	for _, p := range tp.Pods() {
		t.Run(p.Name, func(t *testing.T) {
			// The node reaches pods through a device without an address;
			// the kernel picks its ext0 address as the source.
			want := Reply{Pod: p.Name, Client: node.Addr}
			r, err := HTTPGet(ctx, node.NS, netip.AddrPortFrom(p.Addr, PodHTTPPort))
			if err != nil || r != want {
				t.Errorf("http: %v, %v; want %v", r, err, want)
			}
			r, err = UDPRequest(ctx, node.NS, netip.AddrPortFrom(p.Addr, PodUDPPort), "hi")
			if err != nil || r != want {
				t.Errorf("udp: %v, %v; want %v", r, err, want)
			}
			if r, err := HTTPDownload(ctx, node.NS, netip.AddrPortFrom(p.Addr, PodHTTPPort), 1<<20+7); err != nil || r != want {
				t.Errorf("download: %v, %v; want %v", r, err, want)
			}
			data := make([]byte, 1<<20+13)
			_, _ = rand.Read(data)
			if r, err := HTTPUpload(ctx, node.NS, netip.AddrPortFrom(p.Addr, PodHTTPPort), data); err != nil || r != want {
				t.Errorf("upload: %v, %v; want %v", r, err, want)
			}
			c, err := DialHTTP(ctx, node.NS, netip.AddrPortFrom(p.Addr, PodHTTPPort))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for i := range 3 {
				if r, err := c.Get(ctx); err != nil || r != want {
					t.Errorf("keep-alive request %d: %v, %v; want %v", i, r, err, want)
				}
			}
		})
	}
	t.Run("podserver client modes", func(t *testing.T) {
		bin := Podserver(t)
		p := tp.Pod("pod1b")
		out := node.MustExec(bin, "get", "http://"+netip.AddrPortFrom(p.Addr, PodHTTPPort).String()+"/")
		if strings.TrimSpace(out) != "pod=pod1b client=10.100.0.1" {
			t.Errorf("podserver get: %q", out)
		}
		out = node.MustExec(bin, "udp", netip.AddrPortFrom(p.Addr, PodUDPPort).String(), "hi")
		if strings.TrimSpace(out) != "pod=pod1b client=10.100.0.1" {
			t.Errorf("podserver udp: %q", out)
		}
	})
}

func TestMain(m *testing.M) { Main(m) }
