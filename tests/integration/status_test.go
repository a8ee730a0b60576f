// Package integration_test runs the controller against a real
// kube-apiserver (tests/kube), with the permissions the agent's RBAC grants.
package integration_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nodegress/nodegress/controller"
	"github.com/nodegress/nodegress/l7proxy"
	"github.com/nodegress/nodegress/loader"
	"github.com/nodegress/nodegress/tests/kube"
)

const (
	agentNS = "nodegress"
	appNS   = "app"
)

// agentRules are the permissions the status write-back and the Events need
// on top of reading what the agent follows; the manifests grant the same.
var (
	clusterRules = []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"services", "nodes", "secrets"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"ingresses", "ingressclasses"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"ingresses/status"}, Verbs: []string{"update"}},
		{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
	}
	namespaceRules = []rbacv1.PolicyRule{
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "list", "watch", "create", "update"}},
	}
)

type nopDatapath struct{}

func (nopDatapath) Apply([]loader.Service) error { return nil }

type nopProxy struct{}

func (nopProxy) Update(l7proxy.Config) []error { return nil }

// logBuffer keeps the agents' logs for a failing test.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type agent struct {
	name   string
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func (a *agent) stop(t *testing.T) {
	a.once.Do(func() {
		a.cancel()
		select {
		case err := <-a.done:
			if err != nil {
				t.Errorf("agent %s: %v", a.name, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("agent %s did not stop", a.name)
		}
	})
}

func (a *agent) running() bool {
	select {
	case <-a.done:
		return false
	default:
		return true
	}
}

func startAgent(t *testing.T, client kubernetes.Interface, node string, log *slog.Logger) *agent {
	t.Helper()
	c, err := controller.New(controller.Config{
		NodeName:          node,
		NodeIPs:           []netip.Addr{netip.MustParseAddr("192.0.2.10")},
		Client:            client,
		Logger:            log.With("node", node),
		L7:                &controller.L7Config{Proxy: nopProxy{}},
		UpdateStatus:      true,
		ElectionNamespace: agentNS,
	}, nopDatapath{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &agent{name: node, cancel: cancel, done: make(chan error, 1)}
	go func() { a.done <- c.Run(ctx) }()
	t.Cleanup(func() { a.stop(t) })
	return a
}

func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < limit {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s", limit, what)
	return 0
}

func ingress(name, class string, backend string) *networkingv1.Ingress {
	pt := networkingv1.PathTypePrefix
	return &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: name},
		Spec: networkingv1.IngressSpec{
			IngressClassName: &class,
			Rules: []networkingv1.IngressRule{{
				Host: name + ".example.com",
				IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
					Paths: []networkingv1.HTTPIngressPath{{
						Path: "/", PathType: &pt,
						Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
							Name: backend, Port: networkingv1.ServiceBackendPort{Number: 80},
						}},
					}},
				}},
			}},
		},
	}
}

func statusOf(ctx context.Context, t *testing.T, c kubernetes.Interface, name string) string {
	t.Helper()
	ing, err := c.NetworkingV1().Ingresses(appNS).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "error: " + err.Error()
	}
	var parts []string
	for _, a := range ing.Status.LoadBalancer.Ingress {
		parts = append(parts, a.IP+a.Hostname)
	}
	return strings.Join(parts, ",")
}

func must[T any](v T, err error) func(t *testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// TestStatusWriters runs two agents with the agent's RBAC against a real
// API server: one of them writes the node addresses into the status of
// nodegress's Ingresses and nothing else, both record an Event on an
// invalid Ingress, they ride out an API server restart, and the other
// agent takes over when the writer stops.
func TestStatusWriters(t *testing.T) {
	cp := kube.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	admin := cp.Client

	for _, ns := range []string{agentNS, appNS} {
		must(admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}))(t)
	}
	sa := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Namespace: agentNS, Name: "agent"}
	must(admin.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "nodegress-test"}, Rules: clusterRules}, metav1.CreateOptions{}))(t)
	must(admin.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "nodegress-test"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "nodegress-test"},
		Subjects:   []rbacv1.Subject{sa},
	}, metav1.CreateOptions{}))(t)
	must(admin.RbacV1().Roles(agentNS).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "nodegress-test"}, Rules: namespaceRules}, metav1.CreateOptions{}))(t)
	must(admin.RbacV1().RoleBindings(agentNS).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "nodegress-test"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "nodegress-test"},
		Subjects:   []rbacv1.Subject{sa},
	}, metav1.CreateOptions{}))(t)
	kc := must(cp.ServiceAccountKubeconfig(ctx, agentNS, "agent"))(t)
	cfg := must(clientcmd.BuildConfigFromFlags("", kc))(t)
	agentClient := must(kubernetes.NewForConfig(cfg))(t)

	for _, class := range []struct{ name, controller string }{{"nodegress", controller.DefaultControllerName}, {"nginx", "k8s.io/ingress-nginx"}} {
		must(admin.NetworkingV1().IngressClasses().Create(ctx, &networkingv1.IngressClass{
			ObjectMeta: metav1.ObjectMeta{Name: class.name},
			Spec:       networkingv1.IngressClassSpec{Controller: class.controller},
		}, metav1.CreateOptions{}))(t)
	}
	for i, n := range []string{"node-a", "node-b", "node-c"} {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}
		node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0." + string(rune('1'+i))}}
		node = must(admin.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}))(t)
		if len(node.Status.Addresses) == 0 {
			node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0." + string(rune('1'+i))}}
			must(admin.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}))(t)
		}
	}
	must(admin.CoreV1().Services(appNS).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{}))(t)
	must(admin.NetworkingV1().Ingresses(appNS).Create(ctx, ingress("web", "nodegress", "web"), metav1.CreateOptions{}))(t)
	bad := must(admin.NetworkingV1().Ingresses(appNS).Create(ctx, ingress("bad", "nodegress", "missing"), metav1.CreateOptions{}))(t)
	theirs := must(admin.NetworkingV1().Ingresses(appNS).Create(ctx, ingress("theirs", "nginx", "web"), metav1.CreateOptions{}))(t)
	theirs.Status.LoadBalancer.Ingress = []networkingv1.IngressLoadBalancerIngress{{IP: "198.51.100.7"}}
	must(admin.NetworkingV1().Ingresses(appNS).UpdateStatus(ctx, theirs, metav1.UpdateOptions{}))(t)

	logs := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent logs:\n%s", logs.String())
		}
	})
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	agents := map[string]*agent{
		"node-a": startAgent(t, agentClient, "node-a", log),
		"node-b": startAgent(t, agentClient, "node-b", log),
	}

	// A new leader watches the node Leases for a renewal period before
	// its first write.
	took := waitFor(t, "status of both agents' nodes", 60*time.Second, func() bool {
		return statusOf(ctx, t, admin, "web") == "10.0.0.1,10.0.0.2"
	})
	t.Logf("status written %v after the agents started", took.Round(time.Millisecond))
	if got := statusOf(ctx, t, admin, "theirs"); got != "198.51.100.7" {
		t.Errorf("status of another class's ingress: %q, want untouched 198.51.100.7", got)
	}
	election := must(admin.CoordinationV1().Leases(agentNS).Get(ctx, controller.StatusLeaseName, metav1.GetOptions{}))(t)
	holder := ""
	if election.Spec.HolderIdentity != nil {
		holder = *election.Spec.HolderIdentity
	}
	leaderNode, _, _ := strings.Cut(holder, "_")
	leader, ok := agents[leaderNode]
	if !ok {
		t.Fatalf("election lease held by %q", holder)
	}
	t.Logf("leader %s", holder)

	// Each agent records the problem once, on the Ingress itself.
	waitFor(t, "events from both agents", 30*time.Second, func() bool {
		evs := must(admin.CoreV1().Events(appNS).List(ctx, metav1.ListOptions{}))(t)
		hosts := map[string]bool{}
		for _, e := range evs.Items {
			if e.Reason == controller.ReasonBackendNotFound && e.InvolvedObject.UID == bad.UID && e.Source.Component == controller.EventComponent {
				hosts[e.Source.Host] = true
			}
		}
		return hosts["node-a"] && hosts["node-b"]
	})

	// The API server goes away and comes back: the agents keep running
	// and catch up.
	if err := cp.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	for n, a := range agents {
		if !a.running() {
			t.Fatalf("agent %s stopped with the API server", n)
		}
	}
	if err := cp.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	must(admin.NetworkingV1().Ingresses(appNS).Create(ctx, ingress("new", "nodegress", "web"), metav1.CreateOptions{}))(t)
	took = waitFor(t, "status of an ingress created after the restart", 90*time.Second, func() bool {
		return statusOf(ctx, t, admin, "new") == "10.0.0.1,10.0.0.2"
	})
	t.Logf("caught up %v after the API server came back", took.Round(time.Millisecond))

	// The writer stops: it releases its node Lease and the election; the
	// other agent takes over and drops the stopped node.
	election = must(admin.CoordinationV1().Leases(agentNS).Get(ctx, controller.StatusLeaseName, metav1.GetOptions{}))(t)
	leaderNode, _, _ = strings.Cut(*election.Spec.HolderIdentity, "_")
	leader = agents[leaderNode]
	want := "10.0.0.1"
	if leaderNode == "node-a" {
		want = "10.0.0.2"
	}
	leader.stop(t)
	var lease *coordinationv1.Lease
	lease = must(admin.CoordinationV1().Leases(agentNS).Get(ctx, controller.NodeLeasePrefix+leaderNode, metav1.GetOptions{}))(t)
	if lease.Spec.HolderIdentity != nil {
		t.Errorf("node lease of the stopped agent still held by %q", *lease.Spec.HolderIdentity)
	}
	if o := lease.OwnerReferences; len(o) != 1 || o[0].Kind != "Node" || o[0].Name != leaderNode {
		t.Errorf("node lease owners %+v, want Node %s", o, leaderNode)
	}
	took = waitFor(t, "status without the stopped node", 60*time.Second, func() bool {
		return statusOf(ctx, t, admin, "web") == want && statusOf(ctx, t, admin, "new") == want
	})
	t.Logf("taken over and rewritten %v after the writer stopped", took.Round(time.Millisecond))
	if got := statusOf(ctx, t, admin, "theirs"); got != "198.51.100.7" {
		t.Errorf("status of another class's ingress: %q, want untouched 198.51.100.7", got)
	}
}
