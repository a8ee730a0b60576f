// Package cluster tests the local multi-node cluster of scripts/cluster.sh:
// real kubelets with containerd in network namespaces, the control plane,
// locally built images, kube-proxy on or off, and nodegress installed from
// its manifests.
package cluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

const (
	agnhostImage = "registry.k8s.io/e2e-test-images/agnhost:2.66.1"
	nodePort     = 30080
	testNS       = "smoke"
)

// hostSysctls are the host-wide settings kubelet would rewrite; the
// cluster must leave them alone.
var hostSysctls = []string{
	"kernel/panic_on_oops",
	"kernel/panic",
	"vm/overcommit_memory",
	"vm/panic_on_oom",
}

// TestClusterSmoke brings a three-node cluster up three times: with
// kube-proxy alone, where a NodePort Service is answered through
// kube-proxy's rules; with nodegress instead of kube-proxy
// (tests/cluster/overlay), where the agents answer the same NodePort and
// pods reach Services by name, the API server and NodePorts through their
// socket load balancer; and with nodegress next to kube-proxy
// (tests/cluster/overlay-beside-kube-proxy), where nodegress serves the
// NodePorts and kube-proxy the ClusterIPs. Each time the workload is a
// real Deployment whose EndpointSlices Kubernetes writes, and `down` must
// leave nothing behind.
func TestClusterSmoke(t *testing.T) {
	requireRoot(t)
	requireNoCluster(t)
	before := readSysctls(t)

	t.Run("kube-proxy", func(t *testing.T) {
		c := up(t, "NODES=3", "KUBE_PROXY=on", "NODEGRESS=off")
		deployWeb(t, c)
		checkEndpointSlices(t, c)
		checkImageTools(t, c)
		checkImages(t, c)
		for _, ip := range c.nodeIPs {
			c.expectNodePort(t, ip)
		}
		c.down(t)
		checkClean(t)
	})

	t.Run("nodegress", func(t *testing.T) {
		c := up(t, "NODES=3", "KUBE_PROXY=off", "NODEGRESS=on")
		checkAgents(t, c)
		deployWeb(t, c)
		checkEndpointSlices(t, c)
		redirected := datapathCounted(t, c, c.nodes[0], "fwd_local_peer")
		for _, ip := range c.nodeIPs {
			c.expectNodePort(t, ip)
		}
		// Replacing kube-proxy, the agents hand local pods their packets
		// at tc (--pod-redirect auto).
		if after := datapathCounted(t, c, c.nodes[0], "fwd_local_peer"); after <= redirected {
			t.Errorf("%s handed no packet straight to its pod (fwd_local_peer %d, then %d)", c.nodes[0], redirected, after)
		}
		checkInCluster(t, c, true)
		checkDSR(t, c)
		c.down(t)
		checkClean(t)
	})

	// nodegress installed next to kube-proxy: it serves the NodePorts
	// (its datapath sees them first), kube-proxy the ClusterIPs.
	t.Run("nodegress beside kube-proxy", func(t *testing.T) {
		c := up(t, "NODES=3", "KUBE_PROXY=on", "NODEGRESS=on")
		checkAgents(t, c)
		deployWeb(t, c)
		before := datapathForwarded(t, c, c.nodes[0])
		c.expectNodePort(t, c.nodeIPs[0])
		if after := datapathForwarded(t, c, c.nodes[0]); after <= before {
			t.Errorf("NodePort traffic did not cross nodegress's datapath on %s (forwarded %d, then %d)", c.nodes[0], before, after)
		}
		// Beside kube-proxy, local pods are reached through the host.
		if n := datapathCounted(t, c, c.nodes[0], "fwd_local_peer"); n != 0 {
			t.Errorf("%s handed %d packets straight to pods beside kube-proxy", c.nodes[0], n)
		}
		checkInCluster(t, c, false)
		c.down(t)
		checkClean(t)
	})

	if after := readSysctls(t); !maps.Equal(before, after) {
		t.Errorf("host sysctls changed: before %v, after %v", before, after)
	}
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("the cluster test needs root, and CI runs as root")
	}
	t.Skip("the cluster test needs root (network namespaces, mounts, cgroups)")
}

// requireNoCluster skips (fails under CI) when a cluster made with `make
// cluster` is running: the test's `up` would refuse, and its `down` would
// take that cluster away.
func requireNoCluster(t *testing.T) {
	t.Helper()
	err := exec.Command(filepath.Join(repoRoot(t), "scripts", "cluster.sh"), "status").Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 3 {
		return
	}
	msg := "a local cluster is running (make cluster-down first)"
	if err != nil && !errors.As(err, &exit) {
		msg = fmt.Sprintf("cluster.sh status: %v", err)
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func repoRoot(t *testing.T) string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot find the test's source file")
	}
	return filepath.Join(filepath.Dir(file), "..", "..")
}

type cluster struct {
	script   string
	env      map[string]string
	client   *kubernetes.Clientset
	nodes    []string
	nodeIPs  []string
	clientNS string
}

// up runs `scripts/cluster.sh up` with env and registers `down` as cleanup.
func up(t *testing.T, env ...string) *cluster {
	t.Helper()
	c := &cluster{script: filepath.Join(repoRoot(t), "scripts", "cluster.sh")}
	start := time.Now()
	cmd := exec.Command(c.script, "up")
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 4 {
		// Someone else's cluster came up first: leave it alone.
		t.Fatalf("cluster.sh up: another cluster is up:\n%s", out.String())
	}
	t.Cleanup(func() { c.down(t) })
	if err != nil {
		logFailedRun(t)
		t.Fatalf("cluster.sh up: %v\n%s", err, out.String())
	}
	t.Logf("cluster up (%s) in %s", strings.Join(env, " "), time.Since(start).Round(time.Second))

	envOut, err := exec.Command(c.script, "env").Output()
	if err != nil {
		t.Fatalf("cluster.sh env: %v", err)
	}
	c.env = parseEnv(t, envOut)
	for _, k := range []string{"KUBECONFIG", "KUBECTL", "CLIENT_NETNS", "NODES", "NODE_IPS"} {
		if c.env[k] == "" {
			t.Fatalf("cluster.sh env printed no %s:\n%s", k, envOut)
		}
	}
	c.nodes = strings.Fields(c.env["NODES"])
	c.nodeIPs = strings.Fields(c.env["NODE_IPS"])
	c.clientNS = c.env["CLIENT_NETNS"]
	cfg, err := clientcmd.BuildConfigFromFlags("", c.env["KUBECONFIG"])
	if err != nil {
		t.Fatal(err)
	}
	if c.client, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	nodes, err := c.client.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != len(c.nodes) {
		t.Fatalf("%d Nodes, want %d", len(nodes.Items), len(c.nodes))
	}
	for _, n := range nodes.Items {
		if !nodeReady(&n) {
			t.Errorf("node %s not Ready after up", n.Name)
		}
	}
	return c
}

func (c *cluster) down(t *testing.T) {
	t.Helper()
	out, err := exec.Command(c.script, "down").CombinedOutput()
	if err != nil {
		t.Errorf("cluster.sh down: %v\n%s", err, out)
	}
}

// logFailedRun logs the ends of the component logs a failed up kept.
func logFailedRun(t *testing.T) {
	t.Helper()
	files, _ := filepath.Glob("/var/lib/nodegress-cluster.failed-logs/*.log")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) > 20 {
			lines = lines[len(lines)-20:]
		}
		t.Logf("%s:\n%s", filepath.Base(f), strings.Join(lines, "\n"))
	}
}

func parseEnv(t *testing.T, out []byte) map[string]string {
	t.Helper()
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			t.Fatalf("cluster.sh env: not an assignment: %q", sc.Text())
		}
		env[k] = strings.Trim(v, "'")
	}
	return env
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// deployWeb runs agnhost netexec on every node (a Deployment spread by
// hostname) behind a NodePort Service and waits for it to be available.
// Each change in changes is applied to the Deployment before it is created.
func deployWeb(t *testing.T, c *cluster, changes ...func(*appsv1.Deployment)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNS}}
	if _, err := c.client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"app": "web"}
	replicas := int32(len(c.nodes))
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: testNS},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
						MaxSkew:           1,
						TopologyKey:       "kubernetes.io/hostname",
						WhenUnsatisfiable: corev1.DoNotSchedule,
						LabelSelector:     &metav1.LabelSelector{MatchLabels: labels},
					}},
					Containers: []corev1.Container{agnhostWeb()},
				},
			},
		},
	}
	for _, change := range changes {
		change(dep)
	}
	if _, err := c.client.AppsV1().Deployments(testNS).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: testNS},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeNodePort,
			Selector: labels,
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), NodePort: nodePort}},
		},
	}
	if _, err := c.client.CoreV1().Services(testNS).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err := poll(ctx, time.Second, func() (bool, error) {
		d, err := c.client.AppsV1().Deployments(testNS).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return d.Status.AvailableReplicas == replicas, nil
	})
	if err != nil {
		c.dump(t)
		t.Fatalf("deployment web not available: %v", err)
	}
	t.Logf("deployment of %d pods available in %s", replicas, time.Since(start).Round(100*time.Millisecond))
}

// agnhostWeb serves HTTP on port 8080 ("http"), ready once it answers.
func agnhostWeb() corev1.Container {
	return corev1.Container{
		Name:            "web",
		Image:           agnhostImage,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Args:            []string{"netexec", "--http-port=8080"},
		Ports:           []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}},
			PeriodSeconds: 1,
		},
	}
}

// checkEndpointSlices expects the EndpointSlice controller to have written
// one ready endpoint per pod, each with its node.
func checkEndpointSlices(t *testing.T, c *cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var got []string
	err := poll(ctx, time.Second, func() (bool, error) {
		l, err := c.client.DiscoveryV1().EndpointSlices(testNS).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=web"})
		if err != nil {
			return false, err
		}
		got = got[:0]
		for _, s := range l.Items {
			if s.Labels[discoveryv1.LabelManagedBy] != "endpointslice-controller.k8s.io" {
				return false, fmt.Errorf("EndpointSlice %s managed by %q", s.Name, s.Labels[discoveryv1.LabelManagedBy])
			}
			for _, e := range s.Endpoints {
				if e.Conditions.Ready != nil && *e.Conditions.Ready && e.NodeName != nil {
					got = append(got, *e.NodeName)
				}
			}
		}
		slices.Sort(got)
		return slices.Equal(got, c.nodes), nil
	})
	if err != nil {
		t.Fatalf("EndpointSlices of web: ready endpoints on %v, want one on each of %v: %v", got, c.nodes, err)
	}
}

// checkImages expects every node's containerd to hold the locally built
// images under the names the manifests and suites use.
func checkImages(t *testing.T, c *cluster) {
	t.Helper()
	want := []string{
		"registry.k8s.io/pause:3.10.2",
		agnhostImage,
		"ghcr.io/nodegress/nodegress:dev",
		"registry.k8s.io/coredns/coredns:v1.12.2",
		"registry.k8s.io/gateway-api/echo-basic:v1.5.1",
		"registry.k8s.io/gateway-api/echo-basic:v1.6.0-dev.2",
		"registry.k8s.io/gateway-api/echo-basic:v1.6.0-dev.3",
	}
	for i := range c.nodes {
		sock := filepath.Join("/var/lib/nodegress-cluster/nodes", fmt.Sprintf("node%d", i+1), "containerd.sock")
		out, err := exec.Command("ctr", "--address", sock, "--namespace", "k8s.io", "images", "ls", "-q").CombinedOutput()
		if err != nil {
			t.Fatalf("images of node%d: %v\n%s", i+1, err, out)
		}
		have := strings.Fields(string(out))
		for _, w := range want {
			if !slices.Contains(have, w) {
				t.Errorf("node%d has no image %s (has %v)", i+1, w, have)
			}
		}
	}
}

// checkImageTools runs the tools e2e tests expect inside agnhost.
func checkImageTools(t *testing.T, c *cluster) {
	t.Helper()
	pods, err := c.client.CoreV1().Pods(testNS).List(context.Background(), metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil || len(pods.Items) == 0 {
		t.Fatalf("pods of web: %v", err)
	}
	pod := pods.Items[0].Name
	out, err := c.kubectl("-n", testNS, "exec", pod, "--", "sh", "-c",
		"for t in sh nc wget curl; do command -v $t || exit 1; done; curl -sS -m 5 http://127.0.0.1:8080/hostname")
	if err != nil {
		t.Fatalf("tools in agnhost: %v\n%s", err, out)
	}
	if !strings.HasSuffix(strings.TrimSpace(out), pod) {
		t.Errorf("curl inside %s answered %q", pod, out)
	}
}

// checkAgents expects a Ready nodegress agent on every node.
func checkAgents(t *testing.T, c *cluster) {
	t.Helper()
	ds, err := c.client.AppsV1().DaemonSets("nodegress").Get(context.Background(), "nodegress", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if int(ds.Status.NumberReady) != len(c.nodes) || ds.Status.DesiredNumberScheduled != ds.Status.NumberReady {
		c.dump(t)
		t.Fatalf("nodegress DaemonSet: %d of %d ready, want %d", ds.Status.NumberReady, ds.Status.DesiredNumberScheduled, len(c.nodes))
	}
	pods, err := c.client.CoreV1().Pods("nodegress").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var on []string
	for _, p := range pods.Items {
		on = append(on, p.Spec.NodeName)
	}
	slices.Sort(on)
	if !slices.Equal(on, c.nodes) {
		t.Errorf("nodegress pods on %v, want one on each of %v", on, c.nodes)
	}
}

// expectNodePort asks nodeIP:nodePort from the client namespace until
// agnhost answers with a pod name (at most 30 tries), then sends 30 more
// requests, each a new connection: every one must be answered, and every
// web pod (one per node, so pods on other nodes too) must answer some.
func (c *cluster) expectNodePort(t *testing.T, nodeIP string) {
	t.Helper()
	url := fmt.Sprintf("http://%s:%d/hostname", nodeIP, nodePort)
	get := func() (string, error) {
		out, err := exec.Command("ip", "netns", "exec", c.clientNS, "curl", "-sS", "-m", "2", url).CombinedOutput()
		if err == nil && !strings.HasPrefix(string(out), "web-") {
			err = errors.New("not an agnhost answer")
		}
		return string(out), err
	}
	// Wait until the dataplane serves every pod (kube-proxy programs
	// endpoints a sync period after the EndpointSlice says they are
	// ready), then measure.
	var out string
	var err error
	warm := map[string]bool{}
	for i := 0; i < 100 && len(warm) < len(c.nodes); i++ {
		if out, err = get(); err == nil {
			warm[out] = true
			time.Sleep(50 * time.Millisecond)
			continue
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(warm) == 0 {
		c.dump(t)
		t.Errorf("%s from %s: %v: %s", url, c.clientNS, err, out)
		return
	}
	answered := map[string]int{}
	// With one pod per node, a pod misses all 30 with probability
	// 3 x (2/3)^30, about 1.6e-5.
	const tries = 30
	var failed []string
	for i := 0; i < tries; i++ {
		out, err := get()
		if err != nil {
			failed = append(failed, fmt.Sprintf("%v: %s", err, out))
			continue
		}
		answered[out]++
	}
	t.Logf("%s: %d of %d new connections answered, by %v", url, tries-len(failed), tries, answered)
	if len(failed) > 0 {
		c.dump(t)
		t.Errorf("%s: %d of %d new connections failed, first: %s", url, len(failed), tries, failed[0])
	}
	if len(answered) != len(c.nodes) {
		t.Errorf("%s answered by %d pods %v, want all %d (one per node)", url, len(answered), answered, len(c.nodes))
	}
}

func (c *cluster) kubectl(args ...string) (string, error) {
	cmd := exec.Command(c.env["KUBECTL"], append([]string{"--kubeconfig", c.env["KUBECONFIG"]}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// dump logs what helps with a failure: pods, events, the nodegress agents'
// logs.
func (c *cluster) dump(t *testing.T) {
	t.Helper()
	for _, args := range [][]string{
		{"get", "nodes", "-o", "wide"},
		{"get", "pods", "-A", "-o", "wide"},
		{"get", "events", "-A", "--sort-by=.lastTimestamp"},
		{"-n", "nodegress", "logs", "-l", "app.kubernetes.io/name=nodegress", "--tail=60", "--prefix", "--all-containers"},
	} {
		out, _ := c.kubectl(args...)
		t.Logf("kubectl %s:\n%s", strings.Join(args, " "), out)
	}
}

// checkClean expects `down` to have left no namespace, process, mount,
// cgroup or host link of the cluster.
func checkClean(t *testing.T) {
	t.Helper()
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "ngc-") {
			t.Errorf("network namespace left: %s", l)
		}
	}
	if _, err := os.Stat("/sys/class/net/ngc-host"); err == nil {
		t.Error("host link ngc-host left")
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if bytes.Contains(mounts, []byte("nodegress-cluster")) {
		t.Errorf("mounts left:\n%s", grep(mounts, "nodegress-cluster"))
	}
	if _, err := os.Stat("/sys/fs/cgroup/pids/nodegress-cluster"); err == nil {
		t.Error("cgroup nodegress-cluster left")
	}
	if _, err := os.Stat("/var/lib/nodegress-cluster"); err == nil {
		t.Error("state directory /var/lib/nodegress-cluster left")
	}
}

func grep(b []byte, s string) string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func readSysctls(t *testing.T) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, s := range hostSysctls {
		b, err := os.ReadFile("/proc/sys/" + s)
		if err != nil {
			t.Fatal(err)
		}
		m[s] = strings.TrimSpace(string(b))
	}
	return m
}

// poll calls f every interval until it returns true, an error, or ctx ends.
func poll(ctx context.Context, interval time.Duration, f func() (bool, error)) error {
	var last error
	for {
		ok, err := f()
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), last)
		case <-time.After(interval):
		}
	}
}
