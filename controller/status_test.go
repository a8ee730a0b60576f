package controller

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

var statusNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func node(name string, addrs ...string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name)}}
	for _, a := range addrs {
		typ, ip, _ := strings.Cut(a, "=")
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeAddressType(typ), Address: ip})
	}
	return n
}

// nodeLeaseObj is the Lease of node renewed at renewed, held by holder
// ("" for a released Lease).
func nodeLeaseObj(node, holder string, renewed time.Time, seconds int32) *coordinationv1.Lease {
	l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: "nodegress", Name: nodeLeaseName(node)}}
	if holder != "" {
		l.Spec.HolderIdentity = ptr(holder)
	}
	rt := metav1.NewMicroTime(renewed)
	l.Spec.RenewTime = &rt
	l.Spec.LeaseDurationSeconds = ptr(seconds)
	return l
}

func withStatus(addrs ...string) ingOpt {
	return func(i *networkingv1.Ingress) { i.Status.LoadBalancer.Ingress = lbAddrs(addrs...) }
}

// lbAddrs reads "1.2.3.4" as an IP and anything else as a hostname.
func lbAddrs(addrs ...string) []networkingv1.IngressLoadBalancerIngress {
	var out []networkingv1.IngressLoadBalancerIngress
	for _, a := range addrs {
		if _, err := netip.ParseAddr(a); err == nil {
			out = append(out, networkingv1.IngressLoadBalancerIngress{IP: a})
		} else {
			out = append(out, networkingv1.IngressLoadBalancerIngress{Hostname: a})
		}
	}
	return out
}

func publishSvc(ns, name string, lb ...corev1.LoadBalancerIngress) *corev1.Service {
	s := service(ns, name, corev1.ServiceTypeLoadBalancer)
	s.Status.LoadBalancer.Ingress = lb
	return s
}

func changeLines(changes []IngressStatusChange) []string {
	var out []string
	for _, c := range changes {
		out = append(out, c.Ingress.Namespace+"/"+c.Ingress.Name+" -> "+lbIngressString(c.Want))
	}
	return out
}

func TestDesiredIngressStatus(t *testing.T) {
	ours := ingressClass("nodegress", DefaultControllerName, false)
	other := ingressClass("nginx", "k8s.io/ingress-nginx", false)
	live := func(n string) *coordinationv1.Lease { return nodeLeaseObj(n, n, statusNow.Add(-5*time.Second), 40) }
	nodes := []*corev1.Node{
		node("node-a", "InternalIP=10.0.0.2", "ExternalIP=203.0.113.2", "Hostname=node-a"),
		node("node-b", "InternalIP=10.0.0.1", "InternalIP=fd00::1"),
		node("node-c", "InternalIP=10.0.0.3"),
		node("node-d", "ExternalIP=203.0.113.4"),
	}
	tests := []struct {
		name    string
		in      StatusInput
		want    []string
		wantErr error
	}{
		{
			name: "publish service IP, only our ingresses",
			in: StatusInput{
				Ingresses: []*networkingv1.Ingress{
					ingress("web", className("nodegress")),
					ingress("shop/api", annotated(legacyClassAnnotation, LegacyIngressClass)),
					ingress("theirs", className("nginx"), withStatus("198.51.100.9")),
					ingress("legacy-theirs", annotated(legacyClassAnnotation, "nginx")),
					ingress("unknown-class", className("missing")),
					ingress("no-class"),
				},
				PublishService: "nodegress/ingress",
				Services:       []*corev1.Service{publishSvc("nodegress", "ingress", corev1.LoadBalancerIngress{IP: "198.51.100.1"})},
			},
			want: []string{"default/web -> 198.51.100.1", "shop/api -> 198.51.100.1"},
		},
		{
			name: "publish service hostname and IPs, sorted and deduplicated",
			in: StatusInput{
				Ingresses:      []*networkingv1.Ingress{ingress("web", className("nodegress"))},
				PublishService: "nodegress/ingress",
				Services: []*corev1.Service{publishSvc("nodegress", "ingress",
					corev1.LoadBalancerIngress{Hostname: "lb.example.com"},
					corev1.LoadBalancerIngress{IP: "198.51.100.10"},
					corev1.LoadBalancerIngress{IP: "198.51.100.9"},
					corev1.LoadBalancerIngress{IP: "198.51.100.9"},
					corev1.LoadBalancerIngress{}, // pending entries carry nothing
				)},
			},
			want: []string{"default/web -> 198.51.100.9,198.51.100.10,lb.example.com"},
		},
		{
			name: "publish service without addresses yet clears a stale status",
			in: StatusInput{
				Ingresses:      []*networkingv1.Ingress{ingress("web", className("nodegress"), withStatus("10.0.0.1"))},
				PublishService: "nodegress/ingress",
				Services:       []*corev1.Service{publishSvc("nodegress", "ingress")},
			},
			want: []string{"default/web -> "},
		},
		{
			name: "missing publish service writes nothing",
			in: StatusInput{
				Ingresses:      []*networkingv1.Ingress{ingress("web", className("nodegress"))},
				PublishService: "nodegress/ingress",
				NodeLeases:     []*coordinationv1.Lease{live("node-a")},
				Nodes:          nodes,
			},
			wantErr: errPublishServiceMissing,
		},
		{
			name: "node InternalIPs from running node leases",
			in: StatusInput{
				Ingresses:  []*networkingv1.Ingress{ingress("web", className("nodegress"))},
				NodeLeases: []*coordinationv1.Lease{live("node-a"), live("node-b")},
				Nodes:      nodes,
			},
			// IPv4 InternalIPs only, sorted: no ExternalIP, no IPv6, no
			// node without a Lease (node-c).
			want: []string{"default/web -> 10.0.0.1,10.0.0.2"},
		},
		{
			name: "expired, released, foreign and orphan leases ignored",
			in: StatusInput{
				Ingresses: []*networkingv1.Ingress{ingress("web", className("nodegress"))},
				NodeLeases: []*coordinationv1.Lease{
					live("node-a"),
					nodeLeaseObj("node-b", "node-b", statusNow.Add(-41*time.Second), 40), // expired
					nodeLeaseObj("node-c", "", statusNow, 40),                            // released
					{ObjectMeta: metav1.ObjectMeta{Name: StatusLeaseName}, Spec: live("node-c").Spec},
					live("node-gone"),
					live("node-d"), // no InternalIP
				},
				Nodes: nodes,
			},
			want: []string{"default/web -> 10.0.0.2"},
		},
		{
			name: "no agent running clears the status",
			in: StatusInput{
				Ingresses: []*networkingv1.Ingress{ingress("web", className("nodegress"), withStatus("10.0.0.2"))},
				Nodes:     nodes,
			},
			want: []string{"default/web -> "},
		},
		{
			name: "equal in another order is no change",
			in: StatusInput{
				Ingresses: []*networkingv1.Ingress{
					ingress("same", className("nodegress"), withStatus("10.0.0.2", "10.0.0.1")),
					ingress("stale", className("nodegress"), withStatus("10.0.0.1", "10.0.0.3")),
					ingress("dup", className("nodegress"), withStatus("10.0.0.1", "10.0.0.2", "10.0.0.2")),
				},
				NodeLeases: []*coordinationv1.Lease{live("node-a"), live("node-b")},
				Nodes:      nodes,
			},
			want: []string{"default/dup -> 10.0.0.1,10.0.0.2", "default/stale -> 10.0.0.1,10.0.0.2"},
		},
		{
			name: "settling leader keeps unrenewed nodes a status shows",
			in: StatusInput{
				Ingresses: []*networkingv1.Ingress{
					ingress("shown", className("nodegress"), withStatus("10.0.0.1", "10.0.0.3")),
					ingress("new", className("nodegress")),
				},
				NodeLeases: []*coordinationv1.Lease{
					live("node-a"),
					nodeLeaseObj("node-b", "node-b", statusNow.Add(-5*time.Minute), 40), // stale: kept where shown
					nodeLeaseObj("node-c", "", statusNow.Add(-5*time.Minute), 40),       // released: dropped
				},
				Nodes:    nodes,
				Settling: true,
			},
			want: []string{"default/new -> 10.0.0.2", "default/shown -> 10.0.0.1,10.0.0.2"},
		},
		{
			name: "settled leader drops unrenewed nodes",
			in: StatusInput{
				Ingresses: []*networkingv1.Ingress{ingress("shown", className("nodegress"), withStatus("10.0.0.1", "10.0.0.2"))},
				NodeLeases: []*coordinationv1.Lease{
					live("node-a"),
					nodeLeaseObj("node-b", "node-b", statusNow.Add(-5*time.Minute), 40),
				},
				Nodes: nodes,
			},
			want: []string{"default/shown -> 10.0.0.2"},
		},
		{
			name: "default class takes ingresses without one",
			in: StatusInput{
				Ingresses:      []*networkingv1.Ingress{ingress("web"), ingress("theirs", className("nginx"))},
				IngressClasses: []*networkingv1.IngressClass{ingressClass("nodegress", DefaultControllerName, true), other},
				NodeLeases:     []*coordinationv1.Lease{live("node-c")},
				Nodes:          nodes,
			},
			want: []string{"default/web -> 10.0.0.3"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.in
			if in.IngressClasses == nil {
				in.IngressClasses = []*networkingv1.IngressClass{ours, other}
			}
			in.Now = statusNow
			changes, err := DesiredIngressStatus(in)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err %v, want %v", err, tt.wantErr)
			}
			if got := changeLines(changes); !slices.Equal(got, tt.want) {
				t.Errorf("changes\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestStatusAddressesNextExpiry(t *testing.T) {
	nodes := []*corev1.Node{node("a", "InternalIP=10.0.0.1"), node("b", "InternalIP=10.0.0.2"), node("c")}
	leases := []*coordinationv1.Lease{
		nodeLeaseObj("a", "a", statusNow.Add(-10*time.Second), 40),
		nodeLeaseObj("b", "b", statusNow.Add(-30*time.Second), 40),
		nodeLeaseObj("c", "c", statusNow.Add(-39*time.Second), 40), // no address: not counted
	}
	addrs, err := statusAddresses(false, nil, leases, nodes, statusNow)
	if err != nil {
		t.Fatal(err)
	}
	next := addrs.nextExpiry
	if want := statusNow.Add(10 * time.Second); !next.Equal(want) {
		t.Errorf("next expiry %v, want %v", next, want)
	}
	// At that moment the node drops out, and is stale.
	addrs, _ = statusAddresses(false, nil, leases, nodes, next)
	if got, stale := lbIngressString(addrs.live), lbIngressString(addrs.stale); got != "10.0.0.1" || stale != "10.0.0.2" {
		t.Errorf("after expiry: live %q, stale %q; want 10.0.0.1, 10.0.0.2", got, stale)
	}
}

func TestNodeLeaseName(t *testing.T) {
	if got := nodeLeaseName("node-a"); got != "nodegress-node-node-a" {
		t.Errorf("short name %q", got)
	}
	long := strings.Repeat("n", 250)
	a, b := nodeLeaseName(long), nodeLeaseName(long[:249]+"m")
	if len(a) > 253 || a == b || !strings.HasPrefix(a, NodeLeasePrefix) {
		t.Errorf("long names %q and %q", a, b)
	}
}

func TestLBIngressEqual(t *testing.T) {
	tests := []struct {
		a, b []string
		want bool
	}{
		{nil, nil, true},
		{nil, []string{}, true},
		{[]string{"10.0.0.1", "lb.example.com"}, []string{"lb.example.com", "10.0.0.1"}, true},
		{[]string{"10.0.0.1"}, []string{"10.0.0.2"}, false},
		{[]string{"10.0.0.1"}, []string{"10.0.0.1", "10.0.0.1"}, false},
	}
	for _, tt := range tests {
		if got := lbIngressEqual(lbAddrs(tt.a...), lbAddrs(tt.b...)); got != tt.want {
			t.Errorf("lbIngressEqual(%q, %q) = %v", tt.a, tt.b, got)
		}
	}
	// Ports make a difference: another writer's entry is rewritten.
	withPorts := []networkingv1.IngressLoadBalancerIngress{{IP: "10.0.0.1", Ports: []networkingv1.IngressPortStatus{{Port: 80}}}}
	if lbIngressEqual(withPorts, lbAddrs("10.0.0.1")) {
		t.Error("ports ignored")
	}
}

var ingressesGVR = schema.GroupVersionResource{Group: "networking.k8s.io", Version: "v1", Resource: "ingresses"}

func TestClientStatusWriter(t *testing.T) {
	ctx := context.Background()
	want := lbAddrs("10.0.0.1", "10.0.0.2")
	ours := func(ing *networkingv1.Ingress) bool {
		return ing.Spec.IngressClassName != nil && *ing.Spec.IngressClassName == "nodegress"
	}

	tests := []struct {
		name string
		// conflicts makes that many status updates fail with a conflict;
		// meanwhile changes the stored Ingress before the first re-get.
		conflicts   int
		meanwhile   func(*networkingv1.Ingress)
		wantWritten bool
		wantStatus  string
		wantUpdates int
		wantErr     bool
	}{
		{name: "written", wantWritten: true, wantStatus: "10.0.0.1,10.0.0.2", wantUpdates: 1},
		{name: "conflict retried", conflicts: 2, wantWritten: true, wantStatus: "10.0.0.1,10.0.0.2", wantUpdates: 3},
		{
			name: "class changed meanwhile: left alone", conflicts: 1,
			meanwhile:   func(i *networkingv1.Ingress) { i.Spec.IngressClassName = ptr("nginx") },
			wantStatus:  "192.0.2.1",
			wantUpdates: 1,
		},
		{
			name: "already right meanwhile: no write", conflicts: 1,
			meanwhile:   func(i *networkingv1.Ingress) { i.Status.LoadBalancer.Ingress = lbAddrs("10.0.0.2", "10.0.0.1") },
			wantStatus:  "10.0.0.2,10.0.0.1",
			wantUpdates: 1,
		},
		{name: "conflicts forever give up", conflicts: 100, wantStatus: "192.0.2.1", wantErr: true, wantUpdates: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ing := ingress("web", className("nodegress"), withStatus("192.0.2.1"))
			client := fake.NewClientset(ing)
			var updates atomic.Int32
			client.PrependReactor("update", "ingresses", func(a k8stesting.Action) (bool, runtime.Object, error) {
				if a.GetSubresource() != "status" {
					return false, nil, nil
				}
				n := updates.Add(1)
				if int(n) <= tt.conflicts {
					if n == 1 && tt.meanwhile != nil {
						cur, err := client.Tracker().Get(ingressesGVR, "default", "web")
						if err != nil {
							t.Fatal(err)
						}
						c := cur.(*networkingv1.Ingress).DeepCopy()
						tt.meanwhile(c)
						if err := client.Tracker().Update(ingressesGVR, c, "default"); err != nil {
							t.Fatal(err)
						}
					}
					return true, nil, apierrors.NewConflict(ingressesGVR.GroupResource(), "web", errors.New("stale"))
				}
				return false, nil, nil
			})
			written, err := clientStatusWriter{client: client}.writeStatus(ctx, ing, want, ours)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v, want error %v", err, tt.wantErr)
			}
			if written != tt.wantWritten {
				t.Errorf("written %v, want %v", written, tt.wantWritten)
			}
			if int(updates.Load()) != tt.wantUpdates {
				t.Errorf("%d status updates, want %d", updates.Load(), tt.wantUpdates)
			}
			got, err := client.NetworkingV1().Ingresses("default").Get(ctx, "web", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if s := lbIngressString(got.Status.LoadBalancer.Ingress); s != tt.wantStatus {
				t.Errorf("status %q, want %q", s, tt.wantStatus)
			}
		})
	}

	t.Run("deleted meanwhile", func(t *testing.T) {
		client := fake.NewClientset()
		written, err := clientStatusWriter{client: client}.writeStatus(ctx, ingress("web", className("nodegress")), want, ours)
		if written || err != nil {
			t.Errorf("written %v, err %v; want false, nil", written, err)
		}
	})
}

// countingWriter counts the writes of one agent.
type countingWriter struct {
	inner  ingressStatusWriter
	writes atomic.Int32
}

func (w *countingWriter) writeStatus(ctx context.Context, ing *networkingv1.Ingress, want []networkingv1.IngressLoadBalancerIngress, ours func(*networkingv1.Ingress) bool) (bool, error) {
	written, err := w.inner.writeStatus(ctx, ing, want, ours)
	if written {
		w.writes.Add(1)
	}
	return written, err
}

var fastStatusTiming = statusTiming{
	leaseDuration:     3 * time.Second,
	renewDeadline:     2 * time.Second,
	retryPeriod:       100 * time.Millisecond,
	nodeLeaseDuration: 2 * time.Second,
	nodeLeaseRenew:    100 * time.Millisecond,
	settle:            50 * time.Millisecond,
	resync:            time.Second,
	recompute:         20 * time.Millisecond,
	writeBackoff:      20 * time.Millisecond,
	maxWriteBackoff:   200 * time.Millisecond,
	apiTimeout:        time.Second,
}

// apiAgent is one agent of a simulated cluster sharing a fake clientset.
type apiAgent struct {
	c      *Controller
	dp     *fakeDatapath
	logs   *logBuffer
	writes *countingWriter
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func startAPIAgent(t *testing.T, client *fake.Clientset, nodeName string, publish string) *apiAgent {
	t.Helper()
	log, logs := testLogger(t)
	dp := &fakeDatapath{}
	c, err := New(Config{
		NodeName:     nodeName,
		NodeIPs:      []netip.Addr{addr("192.0.2.10")},
		Client:       client,
		Logger:       log.With("node", nodeName),
		L7:           &L7Config{Proxy: &fakeProxy{}, PublishService: publish},
		UpdateStatus: true,
	}, dp)
	if err != nil {
		t.Fatal(err)
	}
	if c.status == nil || (c.nodeLease == nil) != (publish != "") {
		t.Fatal("status write-back not set up in API mode")
	}
	a := &apiAgent{c: c, dp: dp, logs: logs, writes: &countingWriter{inner: c.status.writer}, done: make(chan error, 1)}
	c.status.writer = a.writes
	c.status.timing = fastStatusTiming
	if c.nodeLease != nil {
		c.nodeLease.timing = fastStatusTiming
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	go func() { a.done <- c.Run(ctx) }()
	t.Cleanup(func() { a.stop(t) })
	return a
}

// stop stops the agent, once.
func (a *apiAgent) stop(t *testing.T) {
	a.once.Do(func() {
		a.cancel()
		select {
		case err := <-a.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(waitLimit):
			t.Errorf("Run did not return within %v of cancel", waitLimit)
		}
	})
}

func ingressStatus(t *testing.T, client *fake.Clientset, ns, name string) string {
	t.Helper()
	ing, err := client.NetworkingV1().Ingresses(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return lbIngressString(ing.Status.LoadBalancer.Ingress)
}

func TestStatusLeaderElection(t *testing.T) {
	client := fake.NewClientset(
		ingressClass("nodegress", DefaultControllerName, false),
		ingressClass("nginx", "k8s.io/ingress-nginx", false),
		ingress("web", className("nodegress")),
		ingress("theirs", className("nginx"), withStatus("198.51.100.7")),
		node("node-a", "InternalIP=10.0.0.1"),
		node("node-b", "InternalIP=10.0.0.2"),
		node("node-c", "InternalIP=10.0.0.3"), // runs no agent
	)
	a := startAPIAgent(t, client, "node-a", "")
	b := startAPIAgent(t, client, "node-b", "")

	waitFor(t, "status with both nodes", 2*waitLimit, func() bool {
		return ingressStatus(t, client, "default", "web") == "10.0.0.1,10.0.0.2"
	})
	// Give a second leader time to show up, then check only one wrote.
	time.Sleep(300 * time.Millisecond)
	wa, wb := a.writes.writes.Load(), b.writes.writes.Load()
	if (wa == 0) == (wb == 0) {
		t.Fatalf("writes by node-a %d, by node-b %d: want exactly one writer", wa, wb)
	}
	if got := ingressStatus(t, client, "default", "theirs"); got != "198.51.100.7" {
		t.Errorf("other class's ingress status %q, want untouched 198.51.100.7", got)
	}
	lease, err := client.CoordinationV1().Leases(DefaultElectionNamespace).Get(context.Background(), nodeLeaseName("node-a"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if o := lease.OwnerReferences; len(o) != 1 || o[0].Kind != "Node" || o[0].Name != "node-a" || o[0].UID != "uid-node-a" {
		t.Errorf("node lease owner %+v, want Node node-a", o)
	}

	// The leader stops: it releases both Leases, the other agent takes
	// over and drops the stopped node.
	leader, follower := a, b
	if wb > 0 {
		leader, follower = b, a
	}
	leader.stop(t)
	want := "10.0.0.1"
	if follower == b {
		want = "10.0.0.2"
	}
	took := waitFor(t, "status without the stopped node", 2*waitLimit, func() bool {
		return ingressStatus(t, client, "default", "web") == want
	})
	t.Logf("takeover and rewrite after %v", took)
	if follower.writes.writes.Load() == 0 {
		t.Error("the remaining agent did not write")
	}
	// A class change makes the Ingress another controller's: it keeps the
	// status it has.
	ing, err := client.NetworkingV1().Ingresses("default").Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ing.Spec.IngressClassName = ptr("nginx")
	if _, err := client.NetworkingV1().Ingresses("default").Update(context.Background(), ing, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	writes := follower.writes.writes.Load()
	time.Sleep(1500 * time.Millisecond) // more than a resync
	if got := ingressStatus(t, client, "default", "web"); got != want || follower.writes.writes.Load() != writes {
		t.Errorf("ingress of another class now: status %q (want %q kept), %d writes", got, want, follower.writes.writes.Load()-writes)
	}
}

func TestStatusPublishService(t *testing.T) {
	client := fake.NewClientset(
		ingressClass("nodegress", DefaultControllerName, false),
		ingress("web", className("nodegress"), withStatus("10.9.9.9")),
		node("node-a", "InternalIP=10.0.0.1"),
	)
	a := startAPIAgent(t, client, "node-a", "nodegress/ingress")
	ctx := context.Background()

	// Missing publish Service: the leader looks for it, finds none and
	// leaves the status as it is.
	waitFor(t, "the leader to find no publish service", waitLimit, func() bool {
		return len(a.logs.lines("level=WARN", `msg="ingress status"`, "publish service not found")) > 0
	})
	if got := ingressStatus(t, client, "default", "web"); got != "10.9.9.9" {
		t.Fatalf("status %q changed without a publish service", got)
	}
	svc := publishSvc("nodegress", "ingress", corev1.LoadBalancerIngress{IP: "198.51.100.1"})
	svc, err := client.CoreV1().Services("nodegress").Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "publish service IP", waitLimit, func() bool { return ingressStatus(t, client, "default", "web") == "198.51.100.1" })
	svc.Status.LoadBalancer.Ingress = append(svc.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{Hostname: "lb.example.com"})
	if _, err := client.CoreV1().Services("nodegress").UpdateStatus(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "publish service hostname", waitLimit, func() bool {
		return ingressStatus(t, client, "default", "web") == "198.51.100.1,lb.example.com"
	})
	// A new Ingress gets it too.
	if _, err := client.NetworkingV1().Ingresses("shop").Create(ctx, ingress("shop/api", className("nodegress")), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "new ingress status", waitLimit, func() bool {
		return ingressStatus(t, client, "shop", "api") == "198.51.100.1,lb.example.com"
	})
}

// TestStatusAPIDown checks that a status write-back failing against the
// API server neither stops nor delays the datapath sync.
func TestStatusAPIDown(t *testing.T) {
	client := fake.NewClientset(
		ingressClass("nodegress", DefaultControllerName, false),
		ingress("web", className("nodegress")),
		node("node-a", "InternalIP=10.0.0.1"),
	)
	var failing atomic.Bool
	failing.Store(true)
	var refused atomic.Int32
	down := func(a k8stesting.Action) (bool, runtime.Object, error) {
		if !failing.Load() {
			return false, nil, nil
		}
		switch a.GetResource().Resource {
		case "leases", "events":
			refused.Add(1)
			return true, nil, apierrors.NewServiceUnavailable("api server away")
		case "ingresses":
			if a.GetSubresource() == "status" {
				refused.Add(1)
				return true, nil, apierrors.NewServiceUnavailable("api server away")
			}
		}
		return false, nil, nil
	}
	for _, verb := range []string{"get", "create", "update", "patch"} {
		client.PrependReactor(verb, "*", down)
	}
	a := startAPIAgent(t, client, "node-a", "")
	select {
	case <-a.c.Synced():
	case <-time.After(waitLimit):
		t.Fatal("no initial sync while leases and status are refused")
	}
	waitFor(t, "lease and status calls refused", waitLimit, func() bool { return refused.Load() > 3 })
	// Meanwhile the datapath follows changes as always.
	svc := service("default", "web", corev1.ServiceTypeNodePort, port("", corev1.ProtocolTCP, 80, 30080, intstr.FromInt32(80)))
	if _, err := client.CoreV1().Services("default").Create(context.Background(), svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	took := waitFor(t, "service applied while status writes fail", waitLimit, func() bool {
		_, ok := findService(a.dp.last(), "default/web:80/TCP")
		return ok
	})
	if took > time.Second {
		t.Errorf("service applied after %v while status writes fail, want < 1s", took)
	}
	failing.Store(false)
	waitFor(t, "status written once the API server is back", 2*waitLimit, func() bool {
		return ingressStatus(t, client, "default", "web") == "10.0.0.1"
	})
}

func TestNodeLeaseRenewAndRelease(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	n := node("node-a", "InternalIP=10.0.0.1")
	client := fake.NewClientset(n)
	log, _ := testLogger(t)
	uid := atomic.Pointer[string]{}
	h := &nodeLease{
		client: client, namespace: "ns", node: "node-a", name: nodeLeaseName("node-a"),
		nodeUID: func() types.UID {
			if p := uid.Load(); p != nil {
				return types.UID(*p)
			}
			return ""
		},
		timing: fastStatusTiming,
		log:    log,
	}
	done := make(chan struct{})
	go func() { defer close(done); h.run(ctx) }()
	get := func() *coordinationv1.Lease {
		l, err := client.CoordinationV1().Leases("ns").Get(context.Background(), nodeLeaseName("node-a"), metav1.GetOptions{})
		if err != nil {
			return nil
		}
		return l
	}
	waitFor(t, "lease created", waitLimit, func() bool { return get() != nil })
	l := get()
	if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != "node-a" || *l.Spec.LeaseDurationSeconds != 2 {
		t.Fatalf("lease spec %+v", l.Spec)
	}
	if len(l.OwnerReferences) != 0 {
		t.Errorf("owner %+v while the Node is unknown", l.OwnerReferences)
	}
	first := l.Spec.RenewTime.Time
	u := "uid-node-a"
	uid.Store(&u)
	waitFor(t, "lease renewed with its owner", waitLimit, func() bool {
		l := get()
		return l.Spec.RenewTime.After(first) && len(l.OwnerReferences) == 1 && l.OwnerReferences[0].UID == "uid-node-a"
	})
	// Someone else's write makes the cached copy stale; renewal recovers.
	l = get()
	l.Labels = map[string]string{"touched": "yes"}
	if _, err := client.CoordinationV1().Leases("ns").Update(context.Background(), l, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	before := get().Spec.RenewTime.Time
	waitFor(t, "renewal after an outside change", waitLimit, func() bool { return get().Spec.RenewTime.After(before) })

	cancel()
	select {
	case <-done:
	case <-time.After(waitLimit):
		t.Fatal("heartbeat did not stop")
	}
	if l := get(); l.Spec.HolderIdentity != nil {
		t.Errorf("holder %q after release, want none", *l.Spec.HolderIdentity)
	}
}

func TestStatusRBACVerbs(t *testing.T) {
	// The verbs the write-back uses, as listed for the manifests; this
	// keeps the list honest when the code changes.
	client := fake.NewClientset(
		ingressClass("nodegress", DefaultControllerName, false),
		ingress("web", className("nodegress")),
		node("node-a", "InternalIP=10.0.0.1"),
	)
	a := startAPIAgent(t, client, "node-a", "")
	waitFor(t, "status written", 2*waitLimit, func() bool { return ingressStatus(t, client, "default", "web") == "10.0.0.1" })
	a.stop(t)
	used := map[string]bool{}
	for _, act := range client.Actions() {
		r := act.GetResource().Resource
		if s := act.GetSubresource(); s != "" {
			r += "/" + s
		}
		used[fmt.Sprintf("%s %s", act.GetVerb(), r)] = true
	}
	allowed := map[string]bool{
		"get leases": true, "list leases": true, "watch leases": true, "create leases": true, "update leases": true,
		"list nodes": true, "watch nodes": true,
		"update ingresses/status": true,
		"create events":           true, "patch events": true,
	}
	t.Logf("API calls: %q", slices.Sorted(maps.Keys(used)))
	for k := range used {
		r := strings.Fields(k)[1]
		if (strings.HasPrefix(r, "leases") || strings.HasPrefix(r, "ingresses/") || r == "events" || k == "get nodes") && !allowed[k] {
			t.Errorf("status write-back uses %q, not in the documented RBAC", k)
		}
		if strings.Fields(k)[0] == "delete" || strings.Fields(k)[0] == "deletecollection" {
			t.Errorf("uses %q: the agent must not need delete", k)
		}
	}
	for _, k := range []string{"create leases", "update leases", "update ingresses/status"} {
		if !used[k] {
			t.Errorf("%q not used: test does not exercise the write-back", k)
		}
	}
}
