package controller

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func podRef(ns, name string) sliceOpt {
	return func(s *discoveryv1.EndpointSlice) {
		ep := &s.Endpoints[len(s.Endpoints)-1]
		ep.TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: name}
	}
}

func TestEndpointOwner(t *testing.T) {
	tc := newTestCluster(t, addr("192.0.2.10"))
	tc.apply(service("default", "web", corev1.ServiceTypeNodePort, port("http", corev1.ProtocolTCP, 80, 30080, intstr.FromInt32(8080))))
	tc.apply(epSlice("default", "web-1", "web", slicePort("http", "", 8080),
		endpoint("10.0.1.5", "node-b", "", "", ""), podRef("default", "web-7d4f"),
		endpoint("10.0.1.6", "", "", "", "")))
	const name = "default/web:http/TCP"
	if pod, node := tc.c.EndpointOwner(name, addr("10.0.1.5")); pod != "" || node != "" {
		t.Errorf("before the first sync: %q on %q, want nothing", pod, node)
	}
	tc.must(tc.c.sync())
	tests := []struct {
		svc, addr, wantPod, wantNode string
	}{
		{name, "10.0.1.5", "default/web-7d4f", "node-b"},
		{"default/web:http/TCP/internal", "10.0.1.5", "default/web-7d4f", "node-b"},
		{name, "10.0.1.6", "", ""},
		{name, "10.0.1.7", "", ""},
		{"default/other:http/TCP", "10.0.1.5", "", ""},
	}
	for _, tt := range tests {
		pod, node := tc.c.EndpointOwner(tt.svc, netip.MustParseAddr(tt.addr))
		if pod != tt.wantPod || node != tt.wantNode {
			t.Errorf("EndpointOwner(%s, %s) = %q, %q; want %q, %q", tt.svc, tt.addr, pod, node, tt.wantPod, tt.wantNode)
		}
	}
}
