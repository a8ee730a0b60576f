package apie2e

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwapi "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/nodegress/nodegress/tests/harness"
)

// gatewayLBIP is the load balancer IP this test, acting as the load
// balancer controller, gives the Gateway's Service. The client routes it
// via node1 (netns.ServiceNet).
var gatewayLBIP = netip.MustParseAddr("10.96.60.7")

// gatewayNamedIP is the address the test then names in the Gateway's
// spec.addresses, routed like gatewayLBIP.
var gatewayNamedIP = netip.MustParseAddr("10.96.60.8")

// TestGatewayServiceAddress runs two agents with --gateway-address-source
// service and the RBAC of manifests/gateway-api/service-addresses.yaml:
// the elected agent creates the Gateway's LoadBalancer Service (owned by
// the Gateway, gateway-name label, spec.infrastructure metadata, the
// listener's port, no selector) and the Gateway waits for an address
// (Programmed False AddressNotAssigned, nothing served). Once the test
// writes the Service's load balancer IP, the Gateway reports it and a
// route answers there through the datapath. A ListenerSet attached to
// the Gateway adds its port to the Service, and its deletion removes it;
// an address named in spec.addresses becomes the Service's externalIPs and
// the Gateway's only address, served in place of the load balancer IP, and
// the Service turns ClusterIP (no load balancer asked), then LoadBalancer
// again when an entry without a value asks for one.
// Deleting the Gateway deletes the Service (there is no garbage collector
// in this control plane: the agent does it).
func TestGatewayServiceAddress(t *testing.T) {
	c := newAPICluster(t, 1, 1)
	if err := harness.InstallGatewayAPI(c.cp.Kubectl); err != nil {
		t.Fatal(err)
	}
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	c.cp.MustKubectl("apply", "-f", filepath.Join(root, "manifests", "gateway-api", "service-addresses.yaml"))
	gw, err := gwclient.NewForConfig(c.cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	web := harness.Service{Name: "web", Namespace: appNS, Type: "ClusterIP",
		Ports:     []harness.Port{{Name: "http", Port: 80, TargetPort: harness.PodHTTPPort}},
		Endpoints: harness.Endpoints(c.tp.Pods()...)}
	c.applyService(t, web)
	g := harness.HTTPGatewayObject(appNS, "gw")
	g.Spec.Infrastructure = &gwapi.GatewayInfrastructure{
		Labels:      map[gwapi.LabelKey]gwapi.LabelValue{"team": "web"},
		Annotations: map[gwapi.AnnotationKey]gwapi.AnnotationValue{"lb.example.com/pool": "public"},
	}
	created, err := gw.GatewayV1().Gateways(appNS).Create(c.ctx, g, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	route := harness.HTTPRouteObject(appNS, "web", "gw", "web.test", web.Name, 80)
	if _, err := gw.GatewayV1().HTTPRoutes(appNS).Create(c.ctx, route, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.startAgents("--gateway-address-source", "service")

	programmed := func() (string, []gwapi.GatewayStatusAddress, error) {
		g, err := gw.GatewayV1().Gateways(appNS).Get(c.ctx, "gw", metav1.GetOptions{})
		if err != nil {
			return "", nil, err
		}
		for _, x := range g.Status.Conditions {
			if x.Type == string(gwapi.GatewayConditionProgrammed) {
				return fmt.Sprintf("%s/%s", x.Status, x.Reason), g.Status.Addresses, nil
			}
		}
		return "none", g.Status.Addresses, nil
	}
	const svcName = "nodegress-gateway-gw"
	services := c.admin.CoreV1().Services(appNS)
	var svc *corev1.Service
	err = harness.Eventually(statusWithin, 100*time.Millisecond, func() error {
		if svc, err = services.Get(c.ctx, svcName, metav1.GetOptions{}); err != nil {
			return err
		}
		if got, addrs, err := programmed(); err != nil || got != "False/AddressNotAssigned" || len(addrs) != 0 {
			return fmt.Errorf("gateway Programmed %s, addresses %v (%v)", got, addrs, err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("before a load balancer IP: %v", err)
	}
	owner := svc.OwnerReferences
	switch {
	case svc.Spec.Type != corev1.ServiceTypeLoadBalancer || svc.Spec.Selector != nil:
		t.Errorf("service type %s, selector %v", svc.Spec.Type, svc.Spec.Selector)
	case len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 80:
		t.Errorf("service ports %+v", svc.Spec.Ports)
	case len(owner) != 1 || owner[0].Kind != "Gateway" || owner[0].UID != created.UID:
		t.Errorf("owner references %+v", owner)
	case svc.Labels[gwapi.GatewayNameLabelKey] != "gw" || svc.Labels["team"] != "web" || svc.Annotations["lb.example.com/pool"] != "public":
		t.Errorf("labels %v, annotations %v", svc.Labels, svc.Annotations)
	}
	cl := harness.NewL7Client(c.client(), gatewayLBIP, harness.L7Options{})
	if r, err := cl.Get(c.ctx, "http://web.test/"); err == nil {
		t.Errorf("the load balancer IP answers before it is assigned: %s", r)
	}

	// The load balancer controller assigns the IP.
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: gatewayLBIP.String()}}
	if _, err := services.UpdateStatus(c.ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	assigned := time.Now()
	err = harness.Eventually(statusWithin, 100*time.Millisecond, func() error {
		got, addrs, err := programmed()
		if err != nil {
			return err
		}
		if got != "True/Programmed" || len(addrs) != 1 || addrs[0].Value != gatewayLBIP.String() {
			return fmt.Errorf("gateway Programmed %s, addresses %v", got, addrs)
		}
		r, err := cl.Get(c.ctx, "http://web.test/")
		if err != nil {
			return err
		}
		if r.StatusCode != 200 || r.Pod() == "" {
			return fmt.Errorf("web.test at %s: %s", gatewayLBIP, r)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("after the load balancer IP: %v", err)
	}
	t.Logf("gateway served at its load balancer IP %s after it was assigned", time.Since(assigned).Round(time.Millisecond))
	// The L4 datapath leaves the Service alone: served as an L4 Service,
	// its address would conflict with the Gateway's just served (a
	// Warning Event on it) and its ClusterIP would reject, having no
	// endpoints. TestTranslateSkipsGatewayServices checks both sides.
	events, err := c.admin.CoreV1().Events(appNS).List(c.ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + svcName})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events.Items {
		t.Errorf("event on the gateway's service: %s %s: %s", e.Type, e.Reason, e.Message)
	}

	patchGateway := func(patch string) {
		t.Helper()
		if _, err := gw.GatewayV1().Gateways(appNS).Patch(c.ctx, "gw", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	servicePorts := func(want ...int32) error {
		svc, err := services.Get(c.ctx, svcName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		var got []int32
		for _, p := range svc.Spec.Ports {
			got = append(got, p.Port)
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("service ports %v, want %v", got, want)
		}
		return nil
	}
	// A ListenerSet's port is the Service's too, until the set goes.
	patchGateway(`{"spec":{"allowedListeners":{"namespaces":{"from":"Same"}}}}`)
	set := &gwapi.ListenerSet{ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "extra"},
		Spec: gwapi.ListenerSetSpec{ParentRef: gwapi.ParentGatewayReference{Name: "gw"},
			Listeners: []gwapi.ListenerEntry{{Name: "alt", Port: 8080, Protocol: gwapi.HTTPProtocolType}}}}
	if _, err := gw.GatewayV1().ListenerSets(appNS).Create(c.ctx, set, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := harness.Eventually(statusWithin, 100*time.Millisecond, func() error { return servicePorts(80, 8080) }); err != nil {
		t.Errorf("with a ListenerSet: %v", err)
	}
	if err := gw.GatewayV1().ListenerSets(appNS).Delete(c.ctx, set.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := harness.Eventually(statusWithin, 100*time.Millisecond, func() error { return servicePorts(80) }); err != nil {
		t.Errorf("after deleting the ListenerSet: %v", err)
	}

	// A named address: the Service's externalIPs, the Gateway's address,
	// served; the load balancer IP no longer is, and the Service (of type
	// ClusterIP) asks for none.
	patchGateway(fmt.Sprintf(`{"spec":{"addresses":[{"type":"IPAddress","value":%q}]}}`, gatewayNamedIP))
	named := harness.NewL7Client(c.client(), gatewayNamedIP, harness.L7Options{})
	err = harness.Eventually(statusWithin, 100*time.Millisecond, func() error {
		svc, err := services.Get(c.ctx, svcName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !slices.Equal(svc.Spec.ExternalIPs, []string{gatewayNamedIP.String()}) {
			return fmt.Errorf("service externalIPs %v", svc.Spec.ExternalIPs)
		}
		if svc.Spec.Type != corev1.ServiceTypeClusterIP || svc.Spec.AllocateLoadBalancerNodePorts != nil {
			return fmt.Errorf("service type %s, allocateLoadBalancerNodePorts %v", svc.Spec.Type, svc.Spec.AllocateLoadBalancerNodePorts)
		}
		got, addrs, err := programmed()
		if err != nil {
			return err
		}
		if got != "True/Programmed" || len(addrs) != 1 || addrs[0].Value != gatewayNamedIP.String() {
			return fmt.Errorf("gateway Programmed %s, addresses %v", got, addrs)
		}
		if r, err := named.Get(c.ctx, "http://web.test/"); err != nil || r.StatusCode != 200 {
			return fmt.Errorf("web.test at %s: %v %v", gatewayNamedIP, r, err)
		}
		cl.CloseIdle() // a kept-alive connection outlives the address
		if r, err := cl.Get(c.ctx, "http://web.test/"); err == nil {
			return fmt.Errorf("the load balancer IP still answers: %s", r)
		}
		return nil
	})
	if err != nil {
		t.Errorf("with spec.addresses: %v", err)
	}

	// An entry without a value asks the load balancer again: the Service
	// is a LoadBalancer again, still with the named address.
	patchGateway(fmt.Sprintf(`{"spec":{"addresses":[{"type":"IPAddress","value":%q},{"type":"IPAddress"}]}}`, gatewayNamedIP))
	err = harness.Eventually(statusWithin, 100*time.Millisecond, func() error {
		svc, err := services.Get(c.ctx, svcName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || !slices.Equal(svc.Spec.ExternalIPs, []string{gatewayNamedIP.String()}) ||
			svc.Spec.AllocateLoadBalancerNodePorts == nil || *svc.Spec.AllocateLoadBalancerNodePorts {
			return fmt.Errorf("service type %s, externalIPs %v, allocateLoadBalancerNodePorts %v", svc.Spec.Type,
				svc.Spec.ExternalIPs, svc.Spec.AllocateLoadBalancerNodePorts)
		}
		return nil
	})
	if err != nil {
		t.Errorf("asking the load balancer again: %v", err)
	}

	if err := gw.GatewayV1().Gateways(appNS).Delete(c.ctx, "gw", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = harness.Eventually(statusWithin, 100*time.Millisecond, func() error {
		_, err := services.Get(c.ctx, svcName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return errors.Join(err, errors.New("service still there"))
	})
	if err != nil {
		t.Errorf("after deleting the gateway: %v", err)
	}
}
