package controller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"

	"github.com/nodegress/nodegress/controller/healthcheck"
	"github.com/nodegress/nodegress/loader"
)

// fakeServiceHealth records what the controller hands the service health
// server; listenErr, when set, fails SyncServices for those Services.
type fakeServiceHealth struct {
	ports     map[types.NamespacedName]uint16
	counts    map[types.NamespacedName]int
	calls     int
	listenErr map[types.NamespacedName]error
}

func (f *fakeServiceHealth) SyncServices(ports map[types.NamespacedName]uint16) error {
	f.calls++
	f.ports = maps.Clone(ports)
	var errs []error
	for nn, err := range f.listenErr {
		if p, ok := ports[nn]; ok {
			errs = append(errs, &healthcheck.ListenError{Service: nn, Port: p, Err: err})
		}
	}
	return errors.Join(errs...)
}

func (f *fakeServiceHealth) SyncEndpoints(counts map[types.NamespacedName]int) error {
	f.counts = maps.Clone(counts)
	return nil
}

// fakeProxyHealth records the calls of the sync loop, in order.
type fakeProxyHealth struct {
	calls []string
	node  *corev1.Node
}

func (f *fakeProxyHealth) QueuedUpdate(family corev1.IPFamily) {
	f.calls = append(f.calls, "queued "+string(family))
}

func (f *fakeProxyHealth) Updated(family corev1.IPFamily) {
	f.calls = append(f.calls, "updated "+string(family))
}

func (f *fakeProxyHealth) SyncNode(node *corev1.Node) {
	name := "<nil>"
	if node != nil {
		name = node.Name
	}
	f.calls = append(f.calls, "node "+name)
	f.node = node
}

// take returns the calls recorded since the last take.
func (f *fakeProxyHealth) take() []string {
	c := f.calls
	f.calls = nil
	return c
}

// loopSync runs one sync as the runner's loop does: it takes the pending
// request first, so the sync covers every request made so far.
func loopSync(tc *testCluster) {
	tc.t.Helper()
	select {
	case <-tc.c.runner.pending:
	default:
	}
	tc.sync()
}

// withHealth gives tc's controller fake health servers.
func withHealth(tc *testCluster) (*fakeServiceHealth, *fakeProxyHealth) {
	sh, ph := &fakeServiceHealth{}, &fakeProxyHealth{}
	tc.c.cfg.ServiceHealth, tc.c.cfg.ProxyHealth = sh, ph
	return sh, ph
}

// lbLocal is a LoadBalancer Service with externalTrafficPolicy Local and
// the given healthCheckNodePort, ports http (80) and https (443) on node
// ports of their own.
func lbLocal(name string, hcPort int32) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeLoadBalancer,
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
			HealthCheckNodePort:   hcPort,
			ClusterIP:             "10.96.0.20",
			ClusterIPs:            []string{"10.96.0.20"},
			IPFamilies:            []corev1.IPFamily{corev1.IPv4Protocol},
			Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, NodePort: hcPort + 100, Protocol: corev1.ProtocolTCP},
				{Name: "https", Port: 443, NodePort: hcPort + 200, Protocol: corev1.ProtocolTCP},
			},
		},
	}
}

// hcEndpoint is an endpoint of a test slice.
type hcEndpoint struct {
	addr, node               string
	ready                    *bool // nil: condition absent (ready)
	serving, terminating     bool
	noNodeName, twoAddresses bool
}

func readyEP(addr, node string) hcEndpoint {
	return hcEndpoint{addr: addr, node: node, ready: ptr(true), serving: true}
}

// terminatingEP is an endpoint of a pod being deleted that still passes
// its readiness probe, as the EndpointSlice controller writes it.
func terminatingEP(addr, node string) hcEndpoint {
	return hcEndpoint{addr: addr, node: node, ready: ptr(false), serving: true, terminating: true}
}

// hcSlice is an EndpointSlice of svc with ports http (8080) and https
// (8443) unless ports are given.
func hcSlice(name, svc string, family discoveryv1.AddressType, eps []hcEndpoint, ports ...discoveryv1.EndpointPort) *discoveryv1.EndpointSlice {
	if ports == nil {
		ports = []discoveryv1.EndpointPort{
			{Name: ptr("http"), Port: ptr[int32](8080), Protocol: ptr(corev1.ProtocolTCP)},
			{Name: ptr("https"), Port: ptr[int32](8443), Protocol: ptr(corev1.ProtocolTCP)},
		}
	}
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: family,
		Ports:       ports,
	}
	for _, e := range eps {
		x := discoveryv1.Endpoint{
			Addresses:  []string{e.addr},
			Conditions: discoveryv1.EndpointConditions{Ready: e.ready, Serving: ptr(e.serving), Terminating: ptr(e.terminating)},
		}
		if e.twoAddresses {
			x.Addresses = append(x.Addresses, "10.9.9.9")
		}
		if !e.noNodeName {
			x.NodeName = ptr(e.node)
		}
		s.Endpoints = append(s.Endpoints, x)
	}
	return s
}

// TestHealthCheckPortsAndCounts checks which Services get a
// healthCheckNodePort and how their local endpoints are counted, case by
// case against kube-proxy's rules (pkg/proxy ServiceChangeTracker and
// EndpointsMap.LocalReadyEndpoints).
func TestHealthCheckPortsAndCounts(t *testing.T) {
	const node = "node-1"
	v4 := discoveryv1.AddressTypeIPv4
	tests := []struct {
		name  string
		objs  []any
		port  uint16 // 0: no health check port
		count int
	}{
		{
			name: "local ready endpoints count, remote ones do not",
			objs: []any{lbLocal("s", 31001), hcSlice("s-1", "s", v4, []hcEndpoint{
				readyEP("10.0.0.1", node), readyEP("10.0.0.2", node), readyEP("10.0.1.1", "node-2"),
			})},
			port: 31001, count: 2,
		},
		{
			name: "one pod behind two ports is one endpoint",
			objs: []any{lbLocal("s", 31001), hcSlice("s-1", "s", v4, []hcEndpoint{readyEP("10.0.0.1", node)})},
			port: 31001, count: 1,
		},
		{
			name: "a ready condition left out means ready",
			objs: []any{lbLocal("s", 31001), hcSlice("s-1", "s", v4, []hcEndpoint{{addr: "10.0.0.1", node: node, serving: true}})},
			port: 31001, count: 1,
		},
		{
			name: "serving but terminating endpoints do not count",
			objs: []any{lbLocal("s", 31001), hcSlice("s-1", "s", v4, []hcEndpoint{terminatingEP("10.0.0.1", node)})},
			port: 31001, count: 0,
		},
		{
			name: "not ready endpoints do not count",
			objs: []any{lbLocal("s", 31001), hcSlice("s-1", "s", v4, []hcEndpoint{{addr: "10.0.0.1", node: node, ready: ptr(false)}})},
			port: 31001, count: 0,
		},
		{
			name: "an endpoint without nodeName is not local",
			objs: []any{lbLocal("s", 31001), hcSlice("s-1", "s", v4, []hcEndpoint{{addr: "10.0.0.1", ready: ptr(true), noNodeName: true}})},
			port: 31001, count: 0,
		},
		{
			name: "an endpoint counts by its first address",
			objs: []any{lbLocal("s", 31001), hcSlice("s-1", "s", v4, []hcEndpoint{
				{addr: "10.0.0.1", node: node, ready: ptr(true), twoAddresses: true},
				{addr: "10.9.9.9", node: node, ready: ptr(true)},
			})},
			port: 31001, count: 2,
		},
		{
			name: "endpoints spread over slices add up",
			objs: []any{lbLocal("s", 31001),
				hcSlice("s-1", "s", v4, []hcEndpoint{readyEP("10.0.0.1", node)}),
				hcSlice("s-2", "s", v4, []hcEndpoint{readyEP("10.0.0.2", node)}),
			},
			port: 31001, count: 2,
		},
		{
			name: "an endpoint in two slices counts as its non-terminating copy (ready first)",
			objs: []any{lbLocal("s", 31001),
				hcSlice("s-a", "s", v4, []hcEndpoint{readyEP("10.0.0.1", node)}),
				hcSlice("s-b", "s", v4, []hcEndpoint{terminatingEP("10.0.0.1", node)}),
			},
			port: 31001, count: 1,
		},
		{
			name: "an endpoint in two slices counts as its non-terminating copy (terminating first)",
			objs: []any{lbLocal("s", 31001),
				hcSlice("s-a", "s", v4, []hcEndpoint{terminatingEP("10.0.0.1", node)}),
				hcSlice("s-b", "s", v4, []hcEndpoint{readyEP("10.0.0.1", node)}),
			},
			port: 31001, count: 1,
		},
		{
			name: "IPv6 slices are not this agent's",
			objs: []any{lbLocal("s", 31001), hcSlice("s-1", "s", discoveryv1.AddressTypeIPv6, []hcEndpoint{readyEP("fd00::1", node)})},
			port: 31001, count: 0,
		},
		{
			name: "slice ports without a name or a number are skipped",
			objs: []any{lbLocal("s", 31001), hcSlice("s-1", "s", v4, []hcEndpoint{readyEP("10.0.0.1", node)},
				discoveryv1.EndpointPort{Port: ptr[int32](8080)},
				discoveryv1.EndpointPort{Name: ptr("http")},
			)},
			port: 31001, count: 0,
		},
		{
			name: "a slice without ports has no endpoints",
			objs: []any{lbLocal("s", 31001), hcSlice("s-1", "s", v4, []hcEndpoint{readyEP("10.0.0.1", node)}, []discoveryv1.EndpointPort{}...)},
			port: 31001, count: 0,
		},
		{
			name: "no endpoints at all still serves the port (503)",
			objs: []any{lbLocal("s", 31001)},
			port: 31001, count: 0,
		},
		{
			name: "externalTrafficPolicy Cluster: no port",
			objs: []any{func() *corev1.Service {
				s := lbLocal("s", 31001)
				s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
				return s
			}(), hcSlice("s-1", "s", v4, []hcEndpoint{readyEP("10.0.0.1", node)})},
		},
		{
			name: "NodePort with externalTrafficPolicy Local: no port",
			objs: []any{func() *corev1.Service {
				s := lbLocal("s", 31001)
				s.Spec.Type = corev1.ServiceTypeNodePort
				return s
			}()},
		},
		{
			name: "no healthCheckNodePort: none",
			objs: []any{lbLocal("s", 0)},
		},
		{
			name: "another proxy's Service (service-proxy-name): none",
			objs: []any{func() *corev1.Service {
				s := lbLocal("s", 31001)
				s.Labels = map[string]string{"service.kubernetes.io/service-proxy-name": "other"}
				return s
			}()},
		},
		{
			name: "service-proxy-name with an empty value is still another proxy's",
			objs: []any{func() *corev1.Service {
				s := lbLocal("s", 31001)
				s.Labels = map[string]string{"service.kubernetes.io/service-proxy-name": ""}
				return s
			}()},
		},
		{
			name: "IPv6-only Service: none",
			objs: []any{func() *corev1.Service {
				s := lbLocal("s", 31001)
				s.Spec.ClusterIP, s.Spec.ClusterIPs = "fd00::20", []string{"fd00::20"}
				s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
				return s
			}()},
		},
		{
			name: "dual-stack Service counts its IPv4 slices",
			objs: []any{func() *corev1.Service {
				s := lbLocal("s", 31001)
				s.Spec.ClusterIP, s.Spec.ClusterIPs = "fd00::20", []string{"fd00::20", "10.96.0.20"}
				s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol}
				return s
			}(),
				hcSlice("s-4", "s", v4, []hcEndpoint{readyEP("10.0.0.1", node)}),
				hcSlice("s-6", "s", discoveryv1.AddressTypeIPv6, []hcEndpoint{readyEP("fd00::1", node), readyEP("fd00::2", node)}),
			},
			port: 31001, count: 1,
		},
		{
			name: "a Service without a cluster IP (standalone files) is served",
			objs: []any{func() *corev1.Service {
				s := lbLocal("s", 31001)
				s.Spec.ClusterIP, s.Spec.ClusterIPs, s.Spec.IPFamilies = "", nil, nil
				return s
			}(), hcSlice("s-1", "s", v4, []hcEndpoint{readyEP("10.0.0.1", node)})},
			port: 31001, count: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tc := newTestCluster(t)
			sh, _ := withHealth(tc)
			for _, o := range tt.objs {
				tc.apply(o)
			}
			tc.sync()
			nn := types.NamespacedName{Namespace: "default", Name: "s"}
			wantPorts := map[types.NamespacedName]uint16{}
			wantCounts := map[types.NamespacedName]int{}
			if tt.port != 0 {
				wantPorts[nn], wantCounts[nn] = tt.port, tt.count
			}
			if !maps.Equal(sh.ports, wantPorts) || !maps.Equal(sh.counts, wantCounts) {
				t.Errorf("ports %v counts %v, want ports %v counts %v", sh.ports, sh.counts, wantPorts, wantCounts)
			}
		})
	}
}

// TestHealthFollowsChanges checks that each sync hands the servers the
// current ports and counts, recomputing only what changed, and what the
// proxy health hears from the sync loop.
func TestHealthFollowsChanges(t *testing.T) {
	const node = "node-1"
	v4 := discoveryv1.AddressTypeIPv4
	a, b := types.NamespacedName{Namespace: "default", Name: "a"}, types.NamespacedName{Namespace: "default", Name: "b"}
	tc := newTestCluster(t)
	sh, ph := withHealth(tc)

	tc.apply(lbLocal("a", 31001))
	tc.apply(hcSlice("a-1", "a", v4, []hcEndpoint{readyEP("10.0.0.1", node)}))
	tc.apply(lbLocal("b", 31002))
	tc.apply(nodeWith("192.0.2.1"))
	loopSync(tc)
	check := func(step string, ports map[types.NamespacedName]uint16, counts map[types.NamespacedName]int, calls ...string) {
		t.Helper()
		if !maps.Equal(sh.ports, ports) || !maps.Equal(sh.counts, counts) {
			t.Errorf("%s: ports %v counts %v, want %v %v", step, sh.ports, sh.counts, ports, counts)
		}
		if got := ph.take(); !slices.Equal(got, calls) {
			t.Errorf("%s: proxy health calls %q, want %q", step, got, calls)
		}
	}
	check("initial", map[types.NamespacedName]uint16{a: 31001, b: 31002}, map[types.NamespacedName]int{a: 1, b: 0},
		"queued IPv4", "queued IPv4", "queued IPv4", "node node-1", "queued IPv4", "updated IPv4")

	tc.apply(hcSlice("b-1", "b", v4, []hcEndpoint{readyEP("10.0.0.2", node), readyEP("10.0.0.3", node)}))
	loopSync(tc)
	check("endpoints of b", map[types.NamespacedName]uint16{a: 31001, b: 31002}, map[types.NamespacedName]int{a: 1, b: 2},
		"queued IPv4", "updated IPv4")

	tc.apply(hcSlice("a-1", "a", v4, []hcEndpoint{terminatingEP("10.0.0.1", node)}))
	loopSync(tc)
	check("a's pod terminating", map[types.NamespacedName]uint16{a: 31001, b: 31002}, map[types.NamespacedName]int{a: 0, b: 2},
		"queued IPv4", "updated IPv4")

	tc.apply(lbLocal("a", 31005))
	loopSync(tc)
	check("a's port moved", map[types.NamespacedName]uint16{a: 31005, b: 31002}, map[types.NamespacedName]int{a: 0, b: 2},
		"queued IPv4", "updated IPv4")

	tc.remove(lbLocal("b", 0))
	loopSync(tc)
	check("b deleted", map[types.NamespacedName]uint16{a: 31005}, map[types.NamespacedName]int{a: 0},
		"queued IPv4", "updated IPv4")

	// Node events reach the proxy health even when they change nothing
	// the datapath serves, and trigger no sync.
	tainted := nodeWith("192.0.2.1")
	tainted.Spec.Taints = []corev1.Taint{{Key: healthcheck.ToBeDeletedTaint, Effect: corev1.TaintEffectNoSchedule}}
	tc.apply(tainted)
	check("node tainted", map[types.NamespacedName]uint16{a: 31005}, map[types.NamespacedName]int{a: 0}, "node node-1")
	if ph.node != tainted {
		t.Errorf("proxy health node %v, want the tainted one", ph.node)
	}
	// (A deleted Node makes the controller translate everything again,
	// whichever it was: a sync is queued.)
	tc.c.nodeChanged(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-2"}}, nil)
	check("another node deleted", map[types.NamespacedName]uint16{a: 31005}, map[types.NamespacedName]int{a: 0}, "queued IPv4")
	tc.c.nodeChanged(tainted, nil)
	check("this node deleted", map[types.NamespacedName]uint16{a: 31005}, map[types.NamespacedName]int{a: 0}, "node <nil>", "queued IPv4")
	loopSync(tc)
	ph.take()

	// A failed sync is not a sync: the proxy health hears nothing and
	// the servers keep the last good state.
	tc.c.dp = failingDatapath{}
	tc.apply(lbLocal("c", 31003))
	if err := tc.c.sync(); err == nil {
		t.Fatal("sync with a failing datapath succeeded")
	}
	check("failed sync", map[types.NamespacedName]uint16{a: 31005}, map[types.NamespacedName]int{a: 0}, "queued IPv4")
	tc.c.dp = tc.dp
	loopSync(tc)
	c := types.NamespacedName{Namespace: "default", Name: "c"}
	check("sync after the failure", map[types.NamespacedName]uint16{a: 31005, c: 31003}, map[types.NamespacedName]int{a: 0, c: 0}, "updated IPv4")

	// A request made while a sync runs (after the runner took the
	// pending ones) is still due once that sync is done.
	tc.c.runner.Request()
	tc.sync()
	check("request during a sync", map[types.NamespacedName]uint16{a: 31005, c: 31003}, map[types.NamespacedName]int{a: 0, c: 0},
		"queued IPv4", "updated IPv4", "queued IPv4")
}

type failingDatapath struct{}

func (failingDatapath) Apply([]loader.Service) error { return errors.New("datapath down") }
func (failingDatapath) Update([]loader.Service, []string) error {
	return errors.New("datapath down")
}

// TestHealthPortConflict checks that a port the server cannot open gets
// one Warning Event on its Service (not one per sync), leaves the sync a
// success, and is retried at every sync.
func TestHealthPortConflict(t *testing.T) {
	tc := newTestCluster(t)
	sh, ph := withHealth(tc)
	rec := record.NewFakeRecorder(10)
	tc.c.events = rec
	a := types.NamespacedName{Namespace: "default", Name: "a"}
	sh.listenErr = map[types.NamespacedName]error{a: fmt.Errorf("listen tcp :31001: %w", syscall.EADDRINUSE)}
	t.Cleanup(func() {
		if tc.c.health.retry != nil {
			tc.c.health.retry.Stop()
		}
	})

	tc.apply(lbLocal("a", 31001))
	for i := range 3 {
		tc.c.tracker.service("default/a")
		loopSync(tc)
		if i == 0 && tc.c.health.retry == nil {
			t.Fatal("no retry scheduled for the port that failed")
		}
	}
	if sh.calls != 3 {
		t.Errorf("SyncServices called %d times, want 3 (one per sync)", sh.calls)
	}
	events := drain(rec)
	if len(events) != 1 || !strings.Contains(events[0], ReasonFailedHealthCheckPort) || !strings.Contains(events[0], "31001") {
		t.Errorf("events %q, want one %s about port 31001", events, ReasonFailedHealthCheckPort)
	}
	if calls := ph.take(); calls[len(calls)-1] != "updated IPv4" {
		t.Errorf("proxy health calls %q: a port conflict must not fail the sync", calls)
	}

	// Fixed: no more Events, and a new failure is reported again.
	sh.listenErr = nil
	tc.c.tracker.service("default/a")
	loopSync(tc)
	sh.listenErr = map[types.NamespacedName]error{a: syscall.EADDRINUSE}
	tc.c.tracker.service("default/a")
	loopSync(tc)
	if events := drain(rec); len(events) != 1 {
		t.Errorf("events after the port failed again: %q, want one", events)
	}
}

// TestStandaloneHealthServers runs a standalone controller with the real
// health servers on loopback: the healthCheckNodePort of a Service in the
// directory answers 200 with its one local endpoint, 503 once the pod is
// terminating, and /healthz turns 503 when the Node's file goes away.
func TestStandaloneHealthServers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hcPort := ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	dir := t.TempDir()
	nodeFile, sliceFile := filepath.Join(dir, "node.yaml"), filepath.Join(dir, "slice.yaml")
	writeFile(t, nodeFile, "apiVersion: v1\nkind: Node\nmetadata: {name: node-a}\n")
	writeFile(t, filepath.Join(dir, "svc.yaml"), fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  healthCheckNodePort: %d
  ports: [{name: http, port: 80, nodePort: 30080}]
`, hcPort))
	slice := func(ready, terminating bool) string {
		return fmt.Sprintf(`apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- addresses: [10.0.0.1]
  nodeName: node-a
  conditions: {ready: %t, serving: true, terminating: %t}
`, ready, terminating)
	}
	writeFile(t, sliceFile, slice(true, false))

	log, _ := testLogger(t)
	proxy := healthcheck.NewProxy(0)
	services := healthcheck.NewServiceServer(proxy, healthcheck.ServiceConfig{Host: "127.0.0.1", Logger: log})
	t.Cleanup(services.Close)
	c, err := New(Config{
		NodeName: "node-a", StandaloneDir: dir, Logger: log,
		ProxyHealth: proxy, ServiceHealth: services,
	}, &fakeDatapath{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(waitLimit):
			t.Errorf("Run did not return within %v of cancel", waitLimit)
		}
	})

	cl := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	answers := func(code, endpoints int) func() bool {
		return func() bool {
			resp, err := cl.Get(fmt.Sprintf("http://127.0.0.1:%d/", hcPort))
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			return resp.StatusCode == code && strings.Contains(string(body), fmt.Sprintf(`"localEndpoints": %d,`, endpoints))
		}
	}
	healthz := func(code int) func() bool {
		return func() bool {
			rec := httptest.NewRecorder()
			proxy.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
			return rec.Code == code
		}
	}
	waitFor(t, "health check port 200 with one local endpoint", waitLimit, answers(http.StatusOK, 1))
	waitFor(t, "/healthz 200", waitLimit, healthz(http.StatusOK))

	writeFile(t, sliceFile, slice(false, true))
	waitFor(t, "health check port 503 with the pod terminating", waitLimit, answers(http.StatusServiceUnavailable, 0))

	if err := os.Remove(nodeFile); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "/healthz 503 without the Node", waitLimit, healthz(http.StatusServiceUnavailable))
}
