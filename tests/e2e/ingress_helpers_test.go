package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/netns"
)

// What every L7 test agent runs with: the proxy's metrics inside the
// node's namespace, and the LoadBalancer IPs of publishService served as
// well as the node's own addresses.
const (
	metricsAddr    = "127.0.0.1:9100"
	publishService = "default/ingress-lb"
	// applyWithin is how soon a change of Ingress, Service, EndpointSlice
	// or Secret must be served.
	applyWithin = time.Second
)

// publishLB is the LoadBalancer IP of publishService; the client routes
// it via node1 (netns.ServiceNet).
var publishLB = netip.MustParseAddr("10.96.30.1")

// l7cluster is a cluster whose agent on node1 serves Ingresses.
type l7cluster struct {
	*cluster
	agent *harness.Agent
	// accessLog is the agent's --access-log file.
	accessLog string
}

// newL7Cluster writes tp's Nodes, nodegress's IngressClass, the published
// LoadBalancer Service, svcs and ings, starts the pod servers and an agent
// on node1, and waits until it serves (the first Ingress's first rule
// answers something else than a connection error).
func newL7Cluster(t *testing.T, tp *netns.Topology, svcs []harness.Service, ings ...harness.Ingress) *l7cluster {
	t.Helper()
	return newL7ClusterArgs(t, tp, svcs, nil, ings...)
}

// newL7ClusterArgs is newL7Cluster with more agent arguments.
func newL7ClusterArgs(t *testing.T, tp *netns.Topology, svcs []harness.Service, args []string, ings ...harness.Ingress) *l7cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	c := &l7cluster{cluster: &cluster{t: t, ctx: ctx, tp: tp, m: harness.NewManifests(t)}}
	c.m.Write(t, "nodes.yaml", harness.NodesYAML(tp)...)
	c.m.Write(t, "class.yaml", harness.IngressClassYAML(harness.IngressClassName, harness.IngressControllerName, false))
	c.apply(harness.Service{
		Name: "ingress-lb", Type: "LoadBalancer", LoadBalancerIPs: []netip.Addr{publishLB},
		Ports: []harness.Port{
			{Name: "http", Port: 80, TargetPort: 80},
			{Name: "https", Port: 443, TargetPort: 443},
		},
	})
	for _, s := range svcs {
		c.apply(s)
	}
	for _, ing := range ings {
		c.applyIngress(ing)
	}
	harness.StartPodServers(t, tp.Pods()...)
	if harness.CaptureEnabled() {
		harness.Capture(t, tp.Client.NS, tp.Client.Dev)
		for _, n := range tp.Nodes {
			harness.Capture(t, n.NS, n.Dev)
		}
	}
	c.accessLog = filepath.Join(t.TempDir(), "access.log")
	c.agent = harness.StartAgent(t, tp.Nodes[0], harness.AgentConfig{Dir: c.m.Dir, Args: append([]string{
		"--access-log", c.accessLog,
		"--metrics-addr", metricsAddr,
		"--publish-service", publishService,
	}, args...)})
	c.agents = []*harness.Agent{c.agent}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("==== access log, lines without status 200 or 101 (first 40):\n%s", unusual(c.accessLog, 40))
			t.Logf("==== access log (last 40 lines):\n%s", tail(c.accessLog, 40))
		}
	})
	if len(ings) > 0 && len(ings[0].Rules) > 0 {
		r := ings[0].Rules[0]
		host := strings.Replace(r.Host, "*", "x", 1)
		url := "http://" + host + r.Paths[0].Path
		cl := c.nodeClient(harness.L7Options{})
		c.waitFor(t, cl, url, 5*settle, func(r *harness.L7Response) error {
			if r.StatusCode == 404 {
				return fmt.Errorf("%s: %s", url, r)
			}
			return nil
		})
	}
	return c
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// unusual returns the first n access log lines whose status is not 200 or
// 101: what to look at when requests failed.
func unusual(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l != "" && !strings.Contains(l, `"status":200,`) && !strings.Contains(l, `"status":101,`) {
			out = append(out, l)
			if len(out) == n {
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

func ingressFile(name string) string { return "ing-" + name + ".yaml" }

// applyIngress writes ing to its own file, replacing its previous version.
func (c *l7cluster) applyIngress(ing harness.Ingress) {
	c.t.Helper()
	c.m.Write(c.t, ingressFile(ing.Name), ing.YAML())
}

// node1 is where the agent runs and the client connects.
func (c *l7cluster) node1() *netns.Node { return c.node(1) }

// nodeClient is an HTTP(S) client in the client namespace connecting to
// node1's address.
func (c *l7cluster) nodeClient(o harness.L7Options) *harness.L7Client {
	return harness.NewL7Client(c.client(), c.node1().Addr, o)
}

// withT returns a copy of c reporting to t, for subtests.
func (c *l7cluster) withT(t *testing.T) *l7cluster {
	cp := *c
	cp.cluster = c.with(t)
	return &cp
}

// waitFor sends GET url until ok accepts the response (or timeout passes,
// which fails the test) and returns that response.
func (c *l7cluster) waitFor(t *testing.T, cl *harness.L7Client, url string, timeout time.Duration, ok func(*harness.L7Response) error) *harness.L7Response {
	t.Helper()
	var last *harness.L7Response
	start := time.Now()
	err := harness.Eventually(timeout, 20*time.Millisecond, func() error {
		r, err := cl.Get(c.ctx, url)
		if err != nil {
			return err
		}
		last = r
		return ok(r)
	})
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	t.Logf("GET %s: %s after %s", url, last, time.Since(start).Round(time.Millisecond))
	return last
}

// servedBy accepts a 200 answered by one of pods.
func servedBy(pods ...string) func(*harness.L7Response) error {
	return func(r *harness.L7Response) error {
		if r.StatusCode != 200 || !slices.Contains(pods, r.Pod()) {
			return fmt.Errorf("got %s, want 200 from one of %v", r, pods)
		}
		return nil
	}
}

// status accepts a response with code that no pod server answered: the
// proxy's own answer.
func status(code int) func(*harness.L7Response) error {
	return func(r *harness.L7Response) error {
		if r.StatusCode != code || r.Echo != nil {
			return fmt.Errorf("got %s, want the proxy's own %d", r, code)
		}
		return nil
	}
}

// expect sends one GET url and checks the response with ok.
func (c *l7cluster) expect(t *testing.T, cl *harness.L7Client, url string, ok func(*harness.L7Response) error) *harness.L7Response {
	t.Helper()
	r, err := cl.Get(c.ctx, url)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return nil
	}
	if err := ok(r); err != nil {
		t.Errorf("GET %s: %v", url, err)
	}
	return r
}

// svc is a ClusterIP Service with an "http" port 80 to the pods' HTTP port.
func svc(name string, pods ...*netns.Pod) harness.Service {
	return harness.Service{
		Name:      name,
		Type:      "ClusterIP",
		Ports:     []harness.Port{{Name: "http", Port: 80, TargetPort: harness.PodHTTPPort}},
		Endpoints: harness.Endpoints(pods...),
	}
}

// path is a Prefix path (or pathType pt when given) to service's port 80.
func path(p, service string, pt ...string) harness.IngressPath {
	ip := harness.IngressPath{Path: p, Backend: harness.IngressBackend{Service: service, Port: 80}}
	if len(pt) > 0 {
		ip.PathType = pt[0]
	}
	return ip
}

// rule is a host and its paths.
func rule(host string, paths ...harness.IngressPath) harness.IngressRule {
	return harness.IngressRule{Host: host, Paths: paths}
}

// podNames returns the names of pods.
func podNames(pods ...*netns.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.Name)
	}
	return out
}
