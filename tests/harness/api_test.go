package harness

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/nodegress/nodegress/tests/netns"
)

// TestObjects checks that the typed objects carry what the YAML says,
// status included, since Apply writes status through its subresource.
func TestObjects(t *testing.T) {
	node := &netns.Node{Name: "node2", Index: 2, Addr: netns.NodeIP(2), PodCIDR: netns.PodCIDR(2)}
	pod := &netns.Pod{Name: "pod2a", Addr: netip.MustParseAddr("10.244.2.10"), Node: node}
	svc, es, err := Service{
		Name: "lb", Namespace: "app", Type: "LoadBalancer",
		LoadBalancerIPs: []netip.Addr{netip.MustParseAddr("10.96.20.1")},
		Ports:           []Port{{Name: "http", Port: 80, TargetPort: 8080, NodePort: 30080}},
		Endpoints:       Endpoints(pod),
	}.Objects()
	if err != nil {
		t.Fatal(err)
	}
	if svc.Namespace != "app" || svc.Spec.Type != corev1.ServiceTypeLoadBalancer || svc.Spec.Ports[0].NodePort != 30080 {
		t.Errorf("service %s/%s type %s ports %+v", svc.Namespace, svc.Name, svc.Spec.Type, svc.Spec.Ports)
	}
	if lb := svc.Status.LoadBalancer.Ingress; len(lb) != 1 || lb[0].IP != "10.96.20.1" {
		t.Errorf("service status %+v, want 10.96.20.1", lb)
	}
	if len(es.Endpoints) != 1 || es.Endpoints[0].NodeName == nil || *es.Endpoints[0].NodeName != "node2" ||
		es.Labels["kubernetes.io/service-name"] != "lb" {
		t.Errorf("endpointslice %+v", es)
	}

	n, err := NodeObject(node)
	if err != nil {
		t.Fatal(err)
	}
	if a := n.Status.Addresses; len(a) == 0 || a[0].Type != corev1.NodeInternalIP || a[0].Address != "10.100.0.2" {
		t.Errorf("node addresses %+v", a)
	}

	ing, err := Ingress{Name: "web", Namespace: "app", Rules: []IngressRule{{Host: "a.test", Paths: []IngressPath{{
		Path: "/", Backend: IngressBackend{Service: "lb", Port: 80},
	}}}}}.Object()
	if err != nil {
		t.Fatal(err)
	}
	if ing.Spec.IngressClassName == nil || *ing.Spec.IngressClassName != IngressClassName || ing.Spec.Rules[0].Host != "a.test" {
		t.Errorf("ingress %+v", ing.Spec)
	}
}
