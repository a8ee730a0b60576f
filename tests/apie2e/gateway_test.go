package apie2e

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/nodegress/nodegress/tests/harness"
)

// gatewayPool is the agents' --gateway-address-pool: one address, so the
// Gateway's is known. The client routes it via node1.
var gatewayPool = netip.MustParsePrefix("10.96.50.9/32")

// TestGatewayStatus installs the Gateway API's CRDs and GatewayClass from
// manifests/gateway-api as documented, runs an agent on each of two nodes
// with the manifests' RBAC, and checks what the elected agent writes: the
// GatewayClass accepted, the Gateway's address from the pool and its
// conditions, every listener's conditions and attached routes, each
// HTTPRoute's parents (accepted, refused by allowedRoutes, a backend that
// does not resolve) with observedGeneration; traffic through the
// Gateway's address follows; a route edit is reflected in its status.
func TestGatewayStatus(t *testing.T) {
	c := newAPICluster(t, 1, 1)
	if err := harness.InstallGatewayAPI(c.cp.Kubectl); err != nil {
		t.Fatal(err)
	}
	gw, err := gwclient.NewForConfig(c.cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	web := harness.Service{Name: "web", Namespace: appNS, Type: "ClusterIP",
		Ports:     []harness.Port{{Name: "http", Port: 80, TargetPort: harness.PodHTTPPort}},
		Endpoints: harness.Endpoints(c.tp.Pods()...)}
	c.applyService(t, web)
	c.cp.MustKubectl("create", "namespace", "elsewhere")
	applied := 0
	apply := func(yaml string) {
		t.Helper()
		applied++
		f := filepath.Join(t.TempDir(), fmt.Sprintf("objects-%d.yaml", applied))
		if err := os.WriteFile(f, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		c.cp.MustKubectl("apply", "-f", f)
	}
	apply(`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: app}
spec:
  gatewayClassName: nodegress
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: udp, port: 53, protocol: UDP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: app}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broken, namespace: app}
spec:
  parentRefs: [{name: gw}]
  hostnames: [broken.test]
  rules: [{backendRefs: [{name: nothing, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: outsider, namespace: elsewhere}
spec:
  parentRefs: [{name: gw, namespace: app}]
  rules: [{backendRefs: [{name: web, namespace: app, port: 80}]}]
`)
	c.startAgents("--gateway-address-pool", gatewayPool.String())

	cond := func(conds []metav1.Condition, typ string) string {
		for _, x := range conds {
			if x.Type == typ {
				return fmt.Sprintf("%s/%s", x.Status, x.Reason)
			}
		}
		return "none"
	}
	routeConds := func(ns, name string) (string, int64) {
		r, err := gw.GatewayV1().HTTPRoutes(ns).Get(c.ctx, name, metav1.GetOptions{})
		if err != nil || len(r.Status.Parents) == 0 {
			return "none", 0
		}
		p := r.Status.Parents[0]
		var gen int64
		for _, x := range p.Conditions {
			gen = x.ObservedGeneration
		}
		return cond(p.Conditions, "Accepted") + " " + cond(p.Conditions, "ResolvedRefs"), gen
	}
	start := time.Now()
	err = harness.Eventually(statusWithin, 100*time.Millisecond, func() error {
		gc, err := gw.GatewayV1().GatewayClasses().Get(c.ctx, "nodegress", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if got := cond(gc.Status.Conditions, "Accepted"); got != "True/Accepted" {
			return fmt.Errorf("gatewayclass Accepted %s", got)
		}
		g, err := gw.GatewayV1().Gateways(appNS).Get(c.ctx, "gw", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(g.Status.Addresses) != 1 || g.Status.Addresses[0].Value != gatewayPool.Addr().String() {
			return fmt.Errorf("gateway addresses %v", g.Status.Addresses)
		}
		if got := cond(g.Status.Conditions, "Accepted") + " " + cond(g.Status.Conditions, "Programmed"); got != "True/ListenersNotValid True/Programmed" {
			return fmt.Errorf("gateway %s", got)
		}
		var listeners []string
		for _, l := range g.Status.Listeners {
			listeners = append(listeners, fmt.Sprintf("%s:%s,%s,%d", l.Name, cond(l.Conditions, "Accepted"), cond(l.Conditions, "Programmed"), l.AttachedRoutes))
		}
		if want := []string{"http:True/Accepted,True/Programmed,2", "udp:False/UnsupportedProtocol,False/Invalid,0"}; !slices.Equal(listeners, want) {
			return fmt.Errorf("listeners %v, want %v", listeners, want)
		}
		for _, r := range []struct{ ns, name, want string }{
			{appNS, "web", "True/Accepted True/ResolvedRefs"},
			{appNS, "broken", "True/Accepted False/BackendNotFound"},
			{"elsewhere", "outsider", "False/NotAllowedByListeners False/RefNotPermitted"},
		} {
			if got, _ := routeConds(r.ns, r.name); got != r.want {
				return fmt.Errorf("httproute %s/%s: %s, want %s", r.ns, r.name, got, r.want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("statuses after %s: %v", time.Since(start).Round(time.Millisecond), err)
	}
	t.Logf("gateway api statuses written %s after the agents started", time.Since(start).Round(time.Millisecond))

	cl := harness.NewL7Client(c.client(), gatewayPool.Addr(), harness.L7Options{})
	err = harness.Eventually(5*time.Second, 50*time.Millisecond, func() error {
		r, err := cl.Get(c.ctx, "http://any.test/")
		if err != nil {
			return err
		}
		if r.StatusCode != 200 || r.Echo == nil && r.Pod() == "" {
			return fmt.Errorf("%s", r)
		}
		return nil
	})
	if err != nil {
		t.Errorf("gateway address: %v", err)
	}
	// The route whose backend does not resolve answers 500 for its host.
	if r, err := cl.Get(c.ctx, "http://broken.test/"); err != nil || r.StatusCode != 500 {
		t.Errorf("broken route: %v %v", r, err)
	}

	// An edit (generation 2) that fixes the backend is reflected.
	apply(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broken, namespace: app}
spec:
  parentRefs: [{name: gw}]
  hostnames: [broken.test]
  rules: [{backendRefs: [{name: web, port: 80}]}]
`)
	err = harness.Eventually(statusWithin, 100*time.Millisecond, func() error {
		if got, gen := routeConds(appNS, "broken"); got != "True/Accepted True/ResolvedRefs" || gen != 2 {
			return fmt.Errorf("broken route after the fix: %s generation %d", got, gen)
		}
		if r, err := cl.Get(c.ctx, "http://broken.test/"); err != nil || r.StatusCode != 200 {
			return fmt.Errorf("broken.test: %v %v", r, err)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}
