package apie2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/harness/testcert"
	"github.com/nodegress/nodegress/tests/kube"
	"github.com/nodegress/nodegress/tests/netns"
)

const (
	// testTimeout bounds a whole test, whatever it waits for.
	testTimeout = 4 * time.Minute
	// appNS holds the application's objects.
	appNS = "app"
	// agentNS and agentSA are the namespace and ServiceAccount the
	// manifests create for the agent; its election Leases live there.
	agentNS = "nodegress"
	agentSA = "nodegress"
	// metricsAddr is each agent's --metrics-addr, on its node's loopback.
	metricsAddr = "127.0.0.1:9254"
	// applyWithin is how soon a change made through the API must reach
	// every node's datapath.
	applyWithin = time.Second
	// statusWithin is how soon the elected agent must write Ingress status.
	statusWithin = 10 * time.Second
	// catchUpWithin bounds how long agents take to apply a change made
	// right after the API server came back. client-go's informers retry a
	// broken watch with a jittered backoff that grows to 30-60 s, and
	// shared informers do not let it be tuned: the bound follows it.
	catchUpWithin = 75 * time.Second
)

// apiServerIP is the control plane's address: br0 in the switch
// namespace, on the wire every node and the client are on.
var apiServerIP = netip.MustParseAddr("10.100.0.254")

// apiCluster is a Nodes topology whose agents follow a real API server.
type apiCluster struct {
	t      *testing.T
	ctx    context.Context
	tp     *netns.Topology
	cp     *kube.ControlPlane
	admin  kubernetes.Interface
	agents []*harness.Agent
	// ca signs the certificates of the TLS Secrets.
	ca *testcert.CA
}

// newAPICluster builds a client and one node per entry of pods, starts
// etcd and kube-apiserver in the switch namespace, installs the agent's
// Namespace, RBAC and IngressClass from manifests/, creates the Node
// objects and starts the pod servers. Agents are started by startAgents,
// once the test has created what they should serve.
func newAPICluster(t *testing.T, pods ...int) *apiCluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	tp := netns.Nodes(t, pods...)
	tp.Switch.MustIP("addr", "add", netip.PrefixFrom(apiServerIP, netns.WireNet.Bits()).String(), "dev", netns.SwitchBridge)
	cp := kube.Start(t, kube.InNetns(tp.Switch), kube.ListenOn(apiServerIP),
		// By default kube-apiserver leaves open watches to its HTTP
		// server's shutdown, which waits for them: with agents watching it
		// outlives its SIGTERM until StopAPIServer kills it (20 s). Ending
		// the watches itself, it exits in about a second.
		kube.WithAPIServerArgs("--shutdown-watch-termination-grace-period=2s"))
	ca, err := testcert.NewCA("nodegress api e2e CA")
	if err != nil {
		t.Fatal(err)
	}
	c := &apiCluster{t: t, ctx: ctx, tp: tp, cp: cp, admin: cp.Client, ca: ca}

	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	// The parts of the install that matter without a kubelet: the
	// DaemonSet would create no Pods here, the agents run as processes.
	args := []string{"apply"}
	for _, f := range []string{"namespace.yaml", "rbac.yaml", "ingressclass.yaml"} {
		args = append(args, "-f", filepath.Join(root, "manifests", f))
	}
	if out, err := cp.Kubectl(args...); err != nil {
		t.Fatalf("kubectl apply manifests: %v\n%s", err, out)
	}
	c.apply(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: appNS}})
	for _, n := range tp.Nodes {
		obj, err := harness.NodeObject(n)
		if err != nil {
			t.Fatal(err)
		}
		c.apply(t, obj)
	}
	harness.StartPodServers(t, tp.Pods()...)
	watchStalls(t, ctx)
	if harness.CaptureEnabled() {
		harness.Capture(t, tp.Client.NS, tp.Client.Dev)
		for _, n := range tp.Nodes {
			harness.Capture(t, n.NS, n.Dev)
		}
	}
	return c
}

// startAgents starts an agent on every node with the manifests'
// ServiceAccount and extra appended to its flags, and returns when each
// has its datapath attached (not yet synced: see waitReady).
func (c *apiCluster) startAgents(extra ...string) {
	c.t.Helper()
	c.startAgentsOn(c.tp.Nodes, extra...)
}

// startAgentsOn is startAgents on some of the nodes only.
func (c *apiCluster) startAgentsOn(nodes []*netns.Node, extra ...string) {
	c.t.Helper()
	kc, err := c.cp.ServiceAccountKubeconfig(c.ctx, agentNS, agentSA)
	if err != nil {
		c.t.Fatal(err)
	}
	logs := c.t.TempDir()
	for _, n := range nodes {
		c.agents = append(c.agents, harness.StartAgent(c.t, n, harness.AgentConfig{
			Kubeconfig: kc,
			Args: append([]string{
				"--metrics-addr", metricsAddr,
				"--election-namespace", agentNS,
				"--access-log", filepath.Join(logs, n.Name+"-access.log"),
			}, extra...),
		}))
	}
}

// apply creates or replaces obj through the API server as the admin.
func (c *apiCluster) apply(t *testing.T, obj any) {
	t.Helper()
	if err := harness.Apply(c.ctx, c.admin, obj); err != nil {
		t.Fatal(err)
	}
}

// applyService creates or replaces s and its EndpointSlice. There is no
// controller-manager: the test writes the slice the EndpointSlice
// controller would, with each endpoint's nodeName.
func (c *apiCluster) applyService(t *testing.T, s harness.Service) {
	t.Helper()
	svc, es, err := s.Objects()
	if err != nil {
		t.Fatal(err)
	}
	c.apply(t, svc)
	c.apply(t, es)
}

// applySlice replaces only the EndpointSlice of s and returns when the
// API server has accepted it.
func (c *apiCluster) applySlice(t *testing.T, s harness.Service) {
	t.Helper()
	_, es, err := s.Objects()
	if err != nil {
		t.Fatal(err)
	}
	c.apply(t, es)
}

func (c *apiCluster) applyIngress(t *testing.T, ing harness.Ingress) {
	t.Helper()
	obj, err := ing.Object()
	if err != nil {
		t.Fatal(err)
	}
	c.apply(t, obj)
}

// applyTLSSecret creates a kubernetes.io/tls Secret for hosts, signed by
// the cluster's CA.
func (c *apiCluster) applyTLSSecret(t *testing.T, name string, hosts ...string) {
	t.Helper()
	leaf, err := c.ca.Issue(hosts...)
	if err != nil {
		t.Fatal(err)
	}
	c.apply(t, harness.TLSSecretObject(appNS, name, leaf.CertPEM, leaf.KeyPEM))
}

func (c *apiCluster) client() *netns.NS { return c.tp.Client.NS }

// nodeIPs are the wire addresses of every node, sorted.
func (c *apiCluster) nodeIPs() []string {
	var ips []string
	for _, n := range c.tp.Nodes {
		ips = append(ips, n.Addr.String())
	}
	slices.Sort(ips)
	return ips
}

// agentHTTP sends GET path to the agent's metrics address inside its node
// and returns the status code and body.
func agentHTTP(ctx context.Context, n *netns.Node, path string) (int, string, error) {
	return nodeHTTP(ctx, n, metricsAddr, path)
}

// nodeHTTP sends GET path to addr from inside the node and returns the
// status code and body.
func nodeHTTP(ctx context.Context, n *netns.Node, addr, path string) (int, string, error) {
	cl := &http.Client{
		Transport: &http.Transport{DialContext: n.DialContext, DisableKeepAlives: true},
		Timeout:   2 * time.Second,
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := cl.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(body)), err
}

// ingressStatus returns the sorted IPs and hostnames of the Ingress's
// status.loadBalancer.ingress.
func (c *apiCluster) ingressStatus(name string) ([]string, error) {
	ing, err := c.admin.NetworkingV1().Ingresses(appNS).Get(c.ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, a := range ing.Status.LoadBalancer.Ingress {
		out = append(out, a.IP+a.Hostname)
	}
	slices.Sort(out)
	return out, nil
}

// waitIngressStatus waits until the Ingress's status lists exactly the
// node IPs and returns how long that took.
func (c *apiCluster) waitIngressStatus(t *testing.T, name string, within time.Duration) time.Duration {
	t.Helper()
	want := c.nodeIPs()
	start := time.Now()
	var got []string
	err := harness.Eventually(within, 100*time.Millisecond, func() error {
		var err error
		if got, err = c.ingressStatus(name); err != nil {
			return err
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("status %v, want %v", got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("ingress %s/%s: %v", appNS, name, err)
	}
	return time.Since(start)
}

// sample is one request of a prober: when it was sent, when it was
// answered, and by which pod (empty on error).
type sample struct {
	sent, done time.Time
	pod        string
	err        error
}

// prober sends requests one after another, each on a new connection, and
// keeps every outcome.
type prober struct {
	name    string
	do      func(ctx context.Context) (string, error)
	pause   time.Duration
	mu      sync.Mutex
	samples []sample
	stop    context.CancelFunc
	done    chan struct{}
}

// startProber runs do until stopped (or ctx ends), pausing between
// requests.
func startProber(ctx context.Context, name string, pause time.Duration, do func(ctx context.Context) (string, error)) *prober {
	ctx, cancel := context.WithCancel(ctx)
	p := &prober{name: name, do: do, pause: pause, stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for ctx.Err() == nil {
			s := sample{sent: time.Now()}
			s.pod, s.err = do(ctx)
			s.done = time.Now()
			if ctx.Err() != nil && s.err != nil {
				// Cut short by the stop, not a failure of the path.
				return
			}
			p.mu.Lock()
			p.samples = append(p.samples, s)
			p.mu.Unlock()
			if p.pause > 0 {
				select {
				case <-ctx.Done():
				case <-time.After(p.pause):
				}
			}
		}
	}()
	return p
}

// Stop ends the prober and returns everything it saw.
func (p *prober) Stop() []sample {
	p.stop()
	<-p.done
	return p.snapshot()
}

func (p *prober) snapshot() []sample {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.samples)
}

// nodePortProbe answers which pod served a new connection to addr.
func (c *apiCluster) nodePortProbe(addr netip.AddrPort) func(ctx context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		r, err := harness.HTTPGet(ctx, c.client(), addr)
		return r.Pod, err
	}
}

// ingressProbe answers which pod served GET url through the proxy of
// node, on a new connection.
func (c *apiCluster) ingressProbe(n *netns.Node, url string) func(ctx context.Context) (string, error) {
	cl := harness.NewL7Client(c.client(), n.Addr, harness.L7Options{RootCAs: c.ca.Pool(), DisableKeepAlives: true})
	return func(ctx context.Context) (string, error) {
		r, err := cl.Get(ctx, url)
		if err != nil {
			return "", err
		}
		if r.StatusCode != http.StatusOK || r.Pod() == "" {
			return "", fmt.Errorf("GET %s via %s: %s", url, n.Name, r)
		}
		return r.Pod(), nil
	}
}

// watchStalls notes when the test process was not scheduled for a while
// (a busy machine) and logs it if the test fails: requests that time out
// all at once, on every node and path, during such a stall are the
// machine's doing, not the agents'.
func watchStalls(t *testing.T, ctx context.Context) {
	const tick, worth = 100 * time.Millisecond, 500 * time.Millisecond
	var (
		mu     sync.Mutex
		stalls []string
	)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		last := time.Now()
		tk := time.NewTicker(tick)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tk.C:
				if late := now.Sub(last) - tick; late > worth {
					mu.Lock()
					stalls = append(stalls, fmt.Sprintf("%s for %s", last.Format("15:04:05.000"), ms(late)))
					mu.Unlock()
				}
				last = now
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		if t.Failed() && len(stalls) > 0 {
			t.Logf("the test process was not scheduled from %s: the machine is overloaded", strings.Join(stalls, ", "))
		}
	})
}
