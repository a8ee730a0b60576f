package cluster

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/nodegress/nodegress/tests/harness/testcert"
	"github.com/nodegress/nodegress/tests/netns"
)

// ingressHost is the host of the test's Ingress.
const ingressHost = "web.cluster.test"

// TestClusterTraffic runs nodegress alone (kube-proxy off) on a three-node
// cluster and changes the workload under load, as users do:
//   - a Deployment rolled out while new connections arrive through a
//     NodePort and through an Ingress: no request may fail;
//   - a pod deleted with a grace period while a keep-alive connection to it
//     runs: the EndpointSlice controller marks it terminating, the
//     connection keeps being served by that pod, new connections avoid it;
//   - the nodegress DaemonSet restarted, then rolled to a new image, under
//     HTTP/1.1, HTTP/2 and TLS load through the Ingress and a NodePort:
//     each new agent takes over from the old one on its node, no request
//     may fail;
//   - an agent killed (SIGKILL) under the same load: its pod's listener
//     keeper holds the proxy's sockets until the agent is back, so no
//     connection is refused; only requests the killed process had in
//     flight may be lost.
func TestClusterTraffic(t *testing.T) {
	requireRoot(t)
	requireNoCluster(t)
	c := up(t, "NODES=3", "KUBE_PROXY=off", "NODEGRESS=on")
	// Pods keep serving while their endpoint is withdrawn (kubelet's own
	// sleep, no binary needed), as any Deployment that wants zero-downtime
	// rollouts does; the rollout adds a pod before it removes one.
	deployWeb(t, c, func(d *appsv1.Deployment) {
		zero, one := intstr.FromInt32(0), intstr.FromInt32(1)
		d.Spec.Strategy = appsv1.DeploymentStrategy{
			Type:          appsv1.RollingUpdateDeploymentStrategyType,
			RollingUpdate: &appsv1.RollingUpdateDeployment{MaxUnavailable: &zero, MaxSurge: &one},
		}
		grace := int64(30)
		d.Spec.Template.Spec.TerminationGracePeriodSeconds = &grace
		d.Spec.Template.Spec.Containers[0].Lifecycle = &corev1.Lifecycle{
			PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 8}},
		}
	})
	pool := createIngress(t, c)
	client := &netns.NS{Name: c.clientNS}
	nodePortURL := fmt.Sprintf("http://%s:%d/hostname", c.nodeIPs[0], nodePort)
	ingressURL := fmt.Sprintf("http://%s/hostname", c.nodeIPs[1])
	waitAnswered(t, client, nodePortURL, "")
	waitAnswered(t, client, ingressURL, ingressHost)

	t.Run("deployment rollout under load", func(t *testing.T) {
		before := webPods(t, c)
		np := startLoad(client, nodePortURL, "")
		ing := startLoad(client, ingressURL, ingressHost)
		if out, err := c.kubectl("-n", testNS, "rollout", "restart", "deployment/web"); err != nil {
			t.Fatalf("rollout restart: %v\n%s", err, out)
		}
		if out, err := c.kubectl("-n", testNS, "rollout", "status", "deployment/web", "--timeout=180s"); err != nil {
			c.dump(t)
			t.Fatalf("rollout status: %v\n%s", err, out)
		}
		// Until the old pods are gone: they are still terminating.
		waitPodsGone(t, c, before)
		time.Sleep(2 * time.Second) // load after the rollout, on the new pods only
		for _, r := range []*loadResult{np.stop(), ing.stop()} {
			t.Logf("%s", r)
			if r.failed > 0 {
				t.Errorf("%s: %d of %d requests failed during the rollout, first: %s", r.url, r.failed, r.total(), r.firstErr)
			}
			if r.ok == 0 {
				t.Errorf("%s: no request answered", r.url)
			}
			after := webPods(t, c)
			if !r.sawAny(after) {
				t.Errorf("%s: no answer from the new pods %v (answers %v)", r.url, after, r.byPod)
			}
		}
	})

	t.Run("pod deleted with a grace period while a connection runs", func(t *testing.T) {
		conn := newKeepAlive(t, client, nodePortURL)
		victim := conn.get(t)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		grace := int64(20)
		if err := c.client.CoreV1().Pods(testNS).Delete(ctx, victim, metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil {
			t.Fatal(err)
		}
		// The EndpointSlice controller's view while the pod's preStop runs.
		err := poll(ctx, 200*time.Millisecond, func() (bool, error) {
			ep, err := endpointOf(ctx, c, victim)
			if err != nil || ep == nil {
				return false, err
			}
			cond := ep.Conditions
			return cond.Terminating != nil && *cond.Terminating && cond.Ready != nil && !*cond.Ready, nil
		})
		if err != nil {
			t.Fatalf("endpoint of %s never marked terminating: %v", victim, err)
		}
		waitAgentsTerminating(ctx, t, c, victim)
		// The running connection stays with its pod; new ones go elsewhere.
		for i := range 5 {
			if got := conn.get(t); got != victim {
				t.Errorf("request %d on the running connection answered by %s, want %s", i, got, victim)
			}
		}
		for i := range 20 {
			got, err := getOnce(client, nodePortURL, "")
			if err != nil {
				t.Errorf("new connection %d: %v", i, err)
			} else if got == victim {
				t.Errorf("new connection %d answered by the terminating pod %s", i, victim)
			}
		}
		conn.close()
	})

	ingressHTTPS := fmt.Sprintf("https://%s/hostname", c.nodeIPs[1])
	waitAnswered(t, client, ingressHTTPS, ingressHost, pool)
	agentLoads := func() *loadSet {
		return startLoads(client, pool, nodePortURL, ingressURL, ingressHTTPS)
	}

	t.Run("nodegress agents restarted under load", func(t *testing.T) {
		rollAgents(t, c, agentLoads(), "rollout", "restart", "daemonset/nodegress")
	})

	t.Run("nodegress DaemonSet rolled to a new image under load", func(t *testing.T) {
		const newImage = "ghcr.io/nodegress/nodegress:dev-rolled"
		for i := range c.nodes {
			sock := filepath.Join("/var/lib/nodegress-cluster/nodes", fmt.Sprintf("node%d", i+1), "containerd.sock")
			out, err := exec.Command("ctr", "--address", sock, "--namespace", "k8s.io", "images", "tag", "--force",
				"ghcr.io/nodegress/nodegress:dev", newImage).CombinedOutput()
			if err != nil {
				t.Fatalf("tag the agent image on node%d: %v\n%s", i+1, err, out)
			}
		}
		rollAgents(t, c, agentLoads(), "set", "image", "daemonset/nodegress", "agent="+newImage)
	})

	t.Run("an agent killed under load", func(t *testing.T) {
		loads := agentLoads()
		killAgent(t, c, 1) // the node the Ingress loads go to
		// Each load has one request at a time: the one in flight on the
		// killed process may be lost.
		loads.stop(t, c, 1)
	})
}

// waitAgentsTerminating waits until every agent's datapath has pod's
// backend marked terminating (or gone): from then on no new connection may
// pick it.
func waitAgentsTerminating(ctx context.Context, t *testing.T, c *cluster, pod string) {
	t.Helper()
	p, err := c.client.CoreV1().Pods(testNS).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	addr := p.Status.PodIP + ":8080"
	agents, err := c.client.CoreV1().Pods("nodegress").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range agents.Items {
		var last string
		err := poll(ctx, 200*time.Millisecond, func() (bool, error) {
			out, err := c.kubectl("-n", "nodegress", "exec", a.Name, "--", "/nodegress", "maps")
			if err != nil {
				return false, fmt.Errorf("%v: %s", err, out)
			}
			last = out
			for _, line := range strings.Split(out, "\n") {
				f := strings.Fields(line)
				// BACKEND ID, ADDRESS, LOCAL, TERMINATING
				if len(f) == 4 && f[1] == addr {
					return f[3] == "true", nil
				}
			}
			return true, nil
		})
		if err != nil {
			t.Fatalf("agent %s never marked %s (%s) terminating: %v\n%s", a.Name, pod, addr, err, last)
		}
	}
}

// createIngress routes ingressHost to the web Service, over HTTPS too with
// a certificate of a CA it returns.
func createIngress(t *testing.T, c *cluster) *x509.CertPool {
	t.Helper()
	ca, err := testcert.NewCA("nodegress cluster test CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(ingressHost)
	if err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "web-tls", Namespace: testNS},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: leaf.CertPEM, corev1.TLSPrivateKeyKey: leaf.KeyPEM},
	}
	if _, err := c.client.CoreV1().Secrets(testNS).Create(context.Background(), secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ing := ingressTo(testNS, "web", ingressHost)
	ing.Spec.TLS = []networkingv1.IngressTLS{{Hosts: []string{ingressHost}, SecretName: "web-tls"}}
	if _, err := c.client.NetworkingV1().Ingresses(testNS).Create(context.Background(), ing, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return ca.Pool()
}

// ingressTo routes every path of host, in the nodegress IngressClass, to
// port "http" of the Service name in ns.
func ingressTo(ns, name, host string) *networkingv1.Ingress {
	class := "nodegress"
	prefix := networkingv1.PathTypePrefix
	return &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: networkingv1.IngressSpec{
			IngressClassName: &class,
			Rules: []networkingv1.IngressRule{{
				Host: host,
				IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
					Paths: []networkingv1.HTTPIngressPath{{
						Path:     "/",
						PathType: &prefix,
						Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
							Name: name, Port: networkingv1.ServiceBackendPort{Name: "http"},
						}},
					}},
				}},
			}},
		},
	}
}

// webPods lists the names of the web Deployment's pods that are not being
// deleted.
func webPods(t *testing.T, c *cluster) []string {
	t.Helper()
	pods, err := c.client.CoreV1().Pods(testNS).List(context.Background(), metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			names = append(names, p.Name)
		}
	}
	slices.Sort(names)
	return names
}

func waitPodsGone(t *testing.T, c *cluster, names []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := poll(ctx, 500*time.Millisecond, func() (bool, error) {
		pods, err := c.client.CoreV1().Pods(testNS).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return false, err
		}
		for _, p := range pods.Items {
			if slices.Contains(names, p.Name) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("old pods %v still there: %v", names, err)
	}
}

// endpointOf returns pod's endpoint in the web Service's EndpointSlices.
func endpointOf(ctx context.Context, c *cluster, pod string) (*discoveryv1.Endpoint, error) {
	l, err := c.client.DiscoveryV1().EndpointSlices(testNS).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=web"})
	if err != nil {
		return nil, err
	}
	for _, s := range l.Items {
		for i, e := range s.Endpoints {
			if e.TargetRef != nil && e.TargetRef.Name == pod {
				return &s.Endpoints[i], nil
			}
		}
	}
	return nil, nil
}

// httpClient sends requests from inside ns, each on a new connection
// unless keepAlive.
func httpClient(ns *netns.NS, keepAlive bool) *http.Client {
	return &http.Client{
		Timeout: 3 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return ns.DialContext(ctx, network, addr)
			},
			DisableKeepAlives: !keepAlive,
			MaxConnsPerHost:   1,
		},
		// A redirect would hide what the first hop answered.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func getWith(cl *http.Client, url, host string) (string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	if host != "" {
		req.Host = host
	}
	resp, err := cl.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return strings.TrimSpace(string(body)), nil
}

func getOnce(ns *netns.NS, url, host string) (string, error) {
	return getWith(httpClient(ns, false), url, host)
}

// waitAnswered waits until url answers (the first sync of a new object);
// an https URL is verified against pool.
func waitAnswered(t *testing.T, ns *netns.NS, url, host string, pool ...*x509.CertPool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl := httpClient(ns, false)
	if len(pool) > 0 {
		cl = tlsClient(ns, pool[0], false, false)
	}
	var last error
	err := poll(ctx, 200*time.Millisecond, func() (bool, error) {
		_, last = getWith(cl, url, host)
		return last == nil, nil
	})
	if err != nil {
		t.Fatalf("%s (host %q) not answered: %v", url, host, last)
	}
}

// A load sends a request on a new connection every 20 ms until stopped.
type load struct {
	stopc chan struct{}
	done  chan *loadResult
}

type loadResult struct {
	name       string
	url        string
	ok, failed int
	// refused counts the failed requests whose connection was refused.
	refused int
	// slowest is the longest a request took, failed or not.
	slowest  time.Duration
	firstErr string
	byPod    map[string]int
}

func (r *loadResult) total() int { return r.ok + r.failed }

func (r *loadResult) sawAny(pods []string) bool {
	for _, p := range pods {
		if r.byPod[p] > 0 {
			return true
		}
	}
	return false
}

func (r *loadResult) String() string {
	return fmt.Sprintf("%s %s: %d answered, %d failed (%d refused), slowest %s, by pod %v", r.name, r.url, r.ok, r.failed, r.refused,
		r.slowest.Round(time.Millisecond), r.byPod)
}

func startLoad(ns *netns.NS, url, host string) *load {
	return startLoadWith("", httpClient(ns, false), url, host)
}

// startLoadWith is startLoad with a client of its own.
func startLoadWith(name string, cl *http.Client, url, host string) *load {
	l := &load{stopc: make(chan struct{}), done: make(chan *loadResult, 1)}
	go func() {
		r := &loadResult{name: name, url: url, byPod: map[string]int{}}
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		// Bounded: a test that forgets to stop it still ends.
		deadline := time.After(10 * time.Minute)
		for {
			select {
			case <-l.stopc:
				l.done <- r
				return
			case <-deadline:
				l.done <- r
				return
			case <-tick.C:
			}
			start := time.Now()
			pod, err := getWith(cl, url, host)
			r.slowest = max(r.slowest, time.Since(start))
			if err != nil {
				r.failed++
				if errors.Is(err, syscall.ECONNREFUSED) {
					r.refused++
				}
				if r.firstErr == "" {
					r.firstErr = fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), err)
				}
				continue
			}
			r.ok++
			r.byPod[pod]++
		}
	}()
	return l
}

func (l *load) stop() *loadResult {
	close(l.stopc)
	return <-l.done
}

// keepAlive is one HTTP connection reused for every request.
type keepAlive struct {
	cl  *http.Client
	url string
	mu  sync.Mutex
}

func newKeepAlive(t *testing.T, ns *netns.NS, url string) *keepAlive {
	t.Helper()
	return &keepAlive{cl: httpClient(ns, true), url: url}
}

func (k *keepAlive) get(t *testing.T) string {
	t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	pod, err := getWith(k.cl, k.url, "")
	if err != nil {
		t.Fatalf("request on the running connection: %v", err)
	}
	return pod
}

func (k *keepAlive) close() { k.cl.CloseIdleConnections() }
