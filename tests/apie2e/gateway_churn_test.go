package apie2e

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapi "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/netns"
)

// churnRoutes is how many HTTPRoutes carry the load; the route counts of
// thousands are `make bench BENCH_SUITE=gateway`'s.
const churnRoutes = 50

// TestGatewayChurnUnderLoad keeps requests flowing through a Gateway's
// listener, from kept-alive connections and from a new connection per
// request, over 50 HTTPRoutes while HTTPRoutes are added, changed (every
// route moved to another Service) and removed, and endpoints are added to
// and removed from the Service behind them, all through the API server:
// not one request may get anything but a 2xx answer, and every phase must
// have carried load (at least minOK 2xx answers) after its change was seen
// through the proxy.
func TestGatewayChurnUnderLoad(t *testing.T) {
	const (
		minOK   = 1000
		added   = 10
		ofPhase = 20 * time.Second
	)
	c := newAPICluster(t, 3, 1)
	if err := harness.InstallGatewayAPI(c.cp.Kubectl); err != nil {
		t.Fatal(err)
	}
	gw, err := gwclient.NewForConfig(c.cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	pod := c.tp.Pod
	port := []harness.Port{{Name: "http", Port: 80, TargetPort: harness.PodHTTPPort}}
	// The routes start on web and move to web2; web2 gains pod2a (on the
	// other node) and then loses pod1c.
	web := harness.Service{Name: "web", Namespace: appNS, Type: "ClusterIP", Ports: port,
		Endpoints: harness.Endpoints(pod("pod1a"), pod("pod1b"))}
	web2 := harness.Service{Name: "web2", Namespace: appNS, Type: "ClusterIP", Ports: port,
		Endpoints: harness.Endpoints(pod("pod1c"))}
	c.applyService(t, web)
	c.applyService(t, web2)
	if _, err := gw.GatewayV1().Gateways(appNS).Create(c.ctx, harness.HTTPGatewayObject(appNS, "gw"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var routes []*gwapi.HTTPRoute
	for i := range churnRoutes {
		name := fmt.Sprintf("route-%d", i)
		routes = append(routes, harness.HTTPRouteObject(appNS, name, "gw", name+".test", web.Name, 80))
	}
	if err := harness.CreateHTTPRoutes(c.ctx, gw, routes, 8); err != nil {
		t.Fatal(err)
	}
	// One agent: the load goes to the Gateway's address through node1.
	c.startAgentsOn([]*netns.Node{c.tp.Nodes[0]}, "--gateway-address-pool", gatewayPool.String())

	began := time.Now()
	ctx, cancel := context.WithTimeout(c.ctx, 2*time.Minute)
	defer cancel()
	addr := netip.AddrPortFrom(gatewayPool.Addr(), 80)
	poll := harness.NewL7Client(c.client(), addr.Addr(), harness.L7Options{})
	wctx, wcancel := context.WithTimeout(ctx, statusWithin)
	err = harness.RouteAnswers(wctx, poll, routes, 200)
	wcancel()
	poll.CloseIdle()
	if err != nil {
		t.Fatalf("the %d routes before the load: %v", churnRoutes, err)
	}
	t.Logf("%d routes served %s after the agent started", churnRoutes, time.Since(began).Round(time.Millisecond))

	phases, err := harness.RouteChurn{
		GW: gw, Core: c.admin, Namespace: appNS, Gateway: "gw",
		Routes: routes, From: web, To: web2, Spare: []*netns.Pod{pod("pod2a")}, Added: added,
		Client: c.client(), Addr: addr, KeepAlive: 4, NewConn: 2,
		MinOK: minOK, PhaseTimeout: ofPhase, Parallel: 8, Logf: t.Logf,
	}.Run(ctx)
	if err != nil {
		t.Error(err)
	}
	want := []string{"steady", "add-routes", "change-routes", "remove-routes", "add-endpoints", "remove-endpoints"}
	if len(phases) != len(want) && err == nil {
		t.Errorf("%d phases, want %d", len(phases), len(want))
	}
	total := 0
	for i, p := range phases {
		total += p.Total()
		if p.Name != want[i] {
			t.Errorf("phase %d is %s, want %s", i, p.Name, want[i])
		}
		// The negative check: not one request without a 2xx answer.
		if p.Failed() != 0 {
			t.Errorf("%s", p.PhaseCounts)
		}
		// The positive one: load flowed through the whole phase.
		if p.OK < minOK {
			t.Errorf("%s: %d 2xx answers, want at least %d", p.Name, p.OK, minOK)
		}
	}
	t.Logf("%d requests in %s", total, time.Since(began).Round(time.Millisecond))
}
