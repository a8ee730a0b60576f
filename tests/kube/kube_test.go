package kube_test

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/nodegress/nodegress/tests/kube"
	"github.com/nodegress/nodegress/tests/netns"
)

const testNS = "demo"

// TestControlPlane stores objects through the clientset, reads them back
// with kubectl, restarts the API server and finds them again, and checks
// that a ServiceAccount gets only what RBAC grants it; once on the host's
// loopback and once inside a network namespace.
func TestControlPlane(t *testing.T) {
	tests := []struct {
		name  string
		netns bool
	}{
		{name: "loopback"},
		{name: "netns", netns: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opts []kube.Option
			if tt.netns {
				opts = inNetns(t)
			}
			cp := kube.Start(t, opts...)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()

			createObjects(ctx, t, cp)
			checkWithKubectl(t, cp)

			stop := time.Now()
			if err := cp.StopAPIServer(); err != nil {
				t.Fatal(err)
			}
			t.Logf("API server stopped in %s", time.Since(stop).Round(time.Millisecond))
			down, cancelDown := context.WithTimeout(ctx, 5*time.Second)
			_, err := cp.Client.CoreV1().Namespaces().Get(down, testNS, metav1.GetOptions{})
			cancelDown()
			if err == nil {
				t.Fatal("API server answered while stopped")
			}
			start := time.Now()
			if err := cp.StartAPIServer(); err != nil {
				t.Fatal(err)
			}
			t.Logf("API server ready again after %s", time.Since(start).Round(time.Millisecond))
			// etcd kept running: what was stored before is still there.
			if _, err := cp.Client.NetworkingV1().Ingresses(testNS).Get(ctx, "web", metav1.GetOptions{}); err != nil {
				t.Fatalf("ingress after restart: %v", err)
			}
			checkWithKubectl(t, cp)

			checkServiceAccount(ctx, t, cp)
		})
	}
}

// inNetns makes a namespace with an address on its loopback for the API
// server to listen on.
func inNetns(t *testing.T) []kube.Option {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	ns := netns.New(t, "kubecp-"+netns.RandomSuffix(5))
	addr := netip.MustParseAddr("10.123.0.1")
	ns.MustIP("addr", "add", addr.String()+"/32", "dev", "lo")
	return []kube.Option{kube.InNetns(ns), kube.ListenOn(addr)}
}

func createObjects(ctx context.Context, t *testing.T, cp *kube.ControlPlane) {
	t.Helper()
	c := cp.Client
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: testNS},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	if _, err := c.CoreV1().Services(testNS).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{
				Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(8080),
			}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create service: %v", err)
	}
	port, proto, ready := int32(8080), corev1.ProtocolTCP, true
	if _, err := c.DiscoveryV1().EndpointSlices(testNS).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:   "web-1",
			Labels: map[string]string{discoveryv1.LabelServiceName: "web"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{"10.244.1.10"},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
		}},
		Ports: []discoveryv1.EndpointPort{{Name: new("http"), Port: &port, Protocol: &proto}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create endpointslice: %v", err)
	}
	prefix := networkingv1.PathTypePrefix
	if _, err := c.NetworkingV1().Ingresses(testNS).Create(ctx, &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: networkingv1.IngressSpec{
			IngressClassName: new("nodegress"),
			Rules: []networkingv1.IngressRule{{
				Host: "web.example.test",
				IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
					Paths: []networkingv1.HTTPIngressPath{{
						Path:     "/",
						PathType: &prefix,
						Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
							Name: "web", Port: networkingv1.ServiceBackendPort{Name: "http"},
						}},
					}},
				}},
			}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create ingress: %v", err)
	}
}

// checkWithKubectl reads the objects back through kubectl, a client that
// shares nothing with the clientset.
func checkWithKubectl(t *testing.T, cp *kube.ControlPlane) {
	t.Helper()
	out := cp.MustKubectl("get", "-n", testNS, "service/web", "endpointslice/web-1", "ingress/web", "-o", "json")
	var list struct {
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		t.Fatalf("kubectl output: %v\n%s", err, out)
	}
	var got []string
	for _, raw := range list.Items {
		var obj struct {
			Kind     string            `json:"kind"`
			Metadata metav1.ObjectMeta `json:"metadata"`
		}
		if err := json.Unmarshal(raw, &obj); err != nil {
			t.Fatal(err)
		}
		got = append(got, obj.Kind+"/"+obj.Metadata.Name)
		switch obj.Kind {
		case "Service":
			var svc corev1.Service
			if err := json.Unmarshal(raw, &svc); err != nil {
				t.Fatal(err)
			}
			// The API server allocates ClusterIPs itself, no controller needed.
			if svc.Spec.ClusterIP == "" || !kube.DefaultServiceCIDR.Contains(netip.MustParseAddr(svc.Spec.ClusterIP)) {
				t.Errorf("service cluster IP %q not in %s", svc.Spec.ClusterIP, kube.DefaultServiceCIDR)
			}
		case "EndpointSlice":
			var es discoveryv1.EndpointSlice
			if err := json.Unmarshal(raw, &es); err != nil {
				t.Fatal(err)
			}
			if len(es.Endpoints) != 1 || !slices.Equal(es.Endpoints[0].Addresses, []string{"10.244.1.10"}) {
				t.Errorf("endpointslice endpoints = %+v", es.Endpoints)
			}
		case "Ingress":
			var ing networkingv1.Ingress
			if err := json.Unmarshal(raw, &ing); err != nil {
				t.Fatal(err)
			}
			if len(ing.Spec.Rules) != 1 || ing.Spec.Rules[0].Host != "web.example.test" {
				t.Errorf("ingress rules = %+v", ing.Spec.Rules)
			}
		}
	}
	want := []string{"Service/web", "EndpointSlice/web-1", "Ingress/web"}
	if !slices.Equal(got, want) {
		t.Errorf("kubectl get = %v, want %v", got, want)
	}
}

// checkServiceAccount checks that a ServiceAccount's kubeconfig authenticates
// and that RBAC, with no binding for it, grants it nothing.
func checkServiceAccount(ctx context.Context, t *testing.T, cp *kube.ControlPlane) {
	t.Helper()
	kc, err := cp.ServiceAccountKubeconfig(ctx, testNS, "agent")
	if err != nil {
		t.Fatal(err)
	}
	out, err := cp.KubectlAs(kc, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(out), "system:serviceaccount:"+testNS+":agent"; got != want {
		t.Errorf("whoami = %q, want %q", got, want)
	}
	if _, err := cp.KubectlAs(kc, "get", "services"); err == nil || !strings.Contains(err.Error(), "Forbidden") {
		t.Errorf("serviceaccount listing services: err = %v, want Forbidden", err)
	}
	// The admin may impersonate, which is how RBAC of the manifests is
	// checked; can-i answers "no" with exit status 1.
	out, err = cp.Kubectl("auth", "can-i", "list", "services", "--as=system:serviceaccount:"+testNS+":agent")
	if got := strings.TrimSpace(string(out)); got != "no" || err == nil {
		t.Errorf("can-i list services as the serviceaccount = %q, %v; want no", got, err)
	}
	out, err = cp.Kubectl("auth", "can-i", "list", "services")
	if got := strings.TrimSpace(string(out)); got != "yes" || err != nil {
		t.Errorf("can-i list services as admin = %q, %v; want yes", got, err)
	}
}
