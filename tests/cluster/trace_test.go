package cluster

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/nodegress/nodegress/tests/harness"
)

// The trace test's Service: one pod, port "open" served by it, port
// "closed" forwarded to a port nothing in the pod listens on.
const (
	traceNS        = "trace"
	openNodePort   = 30090
	closedNodePort = 30091
	closedPodPort  = 8081
)

// TestClusterTrace runs `kubectl nodegress trace` (the plugin, through the
// pods/exec API of the cluster's API server) against nodegress installed
// from the manifests on three nodes. A NodePort Service has its one pod on
// the first node: a connection to its served port is answered and traced
// as the datapath's forwarding decision; a SYN to its other port, whose
// target port nothing in the pod listens on, is passed on by the datapath
// and dropped by the pod's kernel, and the trace shows that drop with the
// kernel's reason (NO_SOCKET), the Service and the first node. No other
// node reports either flow. An Ingress request to the first node, routed
// to a pod on the second, is one request record, from the first node
// (checkRequestAcrossNodes). Stopping the plugin (SIGINT) stops the trace
// in every agent: tracing is switched off again. `--pcap -` on the first
// node, one capture per NodePort, holds that port's SYN as received and
// as sent to the pod, and no packet of the other port
// (checkNodePortCapture).
func TestClusterTrace(t *testing.T) {
	requireRoot(t)
	requireNoCluster(t)
	plugin := harness.KubectlPlugin(t)
	c := up(t, "NODES=3", "KUBE_PROXY=off", "NODEGRESS=on")
	checkAgents(t, c)
	node, nodeIP := c.nodes[0], c.nodeIPs[0]
	podIP := deployTraceTarget(t, c, node)

	tr := startPluginTrace[traceRecord](t, c, plugin, "--kernel-drops", "--service", traceNS+"/target", "--output", "json", "--duration", "5m")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	curl := func(port int) (string, error) { return curlHostname(c, fmt.Sprintf("%s:%d", nodeIP, port)) }

	// The served port: answered, and traced as the first node's
	// forwarding decision towards the pod.
	openFrontend := fmt.Sprintf("%s:%d", nodeIP, openNodePort)
	var answered int
	fwd, err := tr.waitFor(ctx, func() {
		if out, err := curl(openNodePort); err == nil && strings.HasPrefix(out, "target") {
			answered++
		}
	}, func(r traceRecord) bool {
		return r.Type == "event" && r.Stage != "kernel" && r.Orig.Dst == openFrontend && strings.HasPrefix(r.Reason, "fwd_")
	})
	if err != nil {
		c.dump(t)
		t.Fatalf("no datapath record of %s: %v\nplugin stderr:\n%s", openFrontend, err, tr.stderr())
	}
	t.Logf("datapath record: %+v (xlated %+v)", fwd, fwd.Xlated)
	if answered == 0 {
		t.Errorf("%s never answered", openFrontend)
	}
	if fwd.AgentNode != node || !strings.Contains(fwd.Service, traceNS+"/target:open") || fwd.Xlated == nil || fwd.Xlated.Dst != fmt.Sprintf("%s:8080", podIP) {
		t.Errorf("datapath record %+v (xlated %+v): want %s forwarding target:open to %s:8080", fwd, fwd.Xlated, node, podIP)
	}

	// The port nothing listens on: refused by the pod's kernel, which
	// dropped the SYN the datapath had passed to it.
	closedFrontend := fmt.Sprintf("%s:%d", nodeIP, closedNodePort)
	drop, err := tr.waitFor(ctx, func() {
		if out, err := curl(closedNodePort); err == nil {
			t.Errorf("%s answered %q: want the pod's kernel to refuse it", closedFrontend, out)
		}
	}, func(r traceRecord) bool {
		return r.Type == "event" && r.Stage == "kernel" && r.Orig.Dst == closedFrontend
	})
	if err != nil {
		c.dump(t)
		t.Fatalf("no kernel drop record of %s: %v\nplugin stderr:\n%s", closedFrontend, err, tr.stderr())
	}
	t.Logf("kernel drop record: %+v (xlated %+v)", drop, drop.Xlated)
	if drop.AgentNode != node || drop.Reason != "NO_SOCKET" || drop.Verdict != "DROP" ||
		!strings.Contains(drop.Service, traceNS+"/target:closed") ||
		drop.Xlated == nil || drop.Xlated.Dst != fmt.Sprintf("%s:%d", podIP, closedPodPort) {
		t.Errorf("kernel drop record %+v (xlated %+v): want %s, NO_SOCKET, target:closed, to %s:%d",
			drop, drop.Xlated, node, podIP, closedPodPort)
	}

	// Every agent was reached, and only the first node saw the flows.
	for _, r := range tr.all() {
		if r.AgentNode != node && (r.Orig.Dst == openFrontend || r.Orig.Dst == closedFrontend) {
			t.Errorf("%s reported a flow to the first node: %+v", r.AgentNode, r)
		}
	}
	if s := tr.stderr(); s != "" {
		t.Errorf("plugin reported:\n%s", s)
	}

	// An Ingress request to the first node for a pod on the second.
	checkRequestAcrossNodes(t, c, plugin)

	// Tracing is on while the plugin runs, and off in every agent once
	// the plugins are stopped: the agents' trace commands ended with them.
	if got := agentTracing(t, c, node); got != "true" {
		t.Errorf("tracing on %s while the plugin runs: %s, want true", node, got)
	}
	tr.stop(t)
	for _, n := range c.nodes {
		err := poll(ctx, 200*time.Millisecond, func() (bool, error) { return agentTracing(t, c, n) == "false", nil })
		if err != nil {
			t.Errorf("tracing still on in the agent of %s after the plugin stopped: %v", n, err)
		}
	}

	// The default text output, one node asked: the agent's own line after
	// the node's name; the trace ends with the agent's (--count 1).
	text := exec.CommandContext(ctx, plugin, "trace", "--kubeconfig", c.env["KUBECONFIG"], "--node", node,
		"--kernel-drops", "--reason", "NO_SOCKET", "--service", traceNS+"/target", "--count", "1")
	var textOut, textErr bytes.Buffer
	text.Stdout, text.Stderr = &textOut, &textErr
	if err := text.Start(); err != nil {
		t.Fatal(err)
	}
	textDone := make(chan error, 1)
	go func() { textDone <- text.Wait() }()
	for waiting := true; waiting; {
		select {
		case err := <-textDone:
			if err != nil {
				t.Errorf("text trace: %v\n%s", err, textErr.String())
			}
			waiting = false
		case <-time.After(500 * time.Millisecond):
			_, _ = curl(closedNodePort)
		}
	}
	t.Logf("kubectl nodegress trace --node %s ...:\n%s", node, textOut.String())
	if l := textOut.String(); !strings.HasPrefix(l, node+" ") || strings.Count(l, "\n") != 1 ||
		!strings.Contains(l, " NO_SOCKET ") || !strings.Contains(l, "svc="+traceNS+"/target:closed/TCP") {
		t.Errorf("text trace printed %q: want one line, %s first, the NO_SOCKET drop of target:closed", l, node)
	}

	// explain, through the first node's agent: how it serves the closed
	// port's frontend.
	closedOut, err := exec.Command(plugin, "explain", "--kubeconfig", c.env["KUBECONFIG"], "--node", node, closedFrontend).CombinedOutput()
	if err != nil || !strings.Contains(string(closedOut), "service "+traceNS+"/target:closed/TCP") {
		t.Errorf("kubectl nodegress explain --node %s %s: %v\n%s", node, closedFrontend, err, closedOut)
	}
	t.Logf("kubectl nodegress explain --node %s %s:\n%s", node, closedFrontend, closedOut)

	// Captures of one NodePort each, through the plugin.
	checkNodePortCapture(t, c, plugin, podIP)

	// A node without an agent is reported; the others are traced.
	out, err := exec.Command(plugin, "trace", "--kubeconfig", c.env["KUBECONFIG"], "--node", node,
		"--node", "no-such-node", "--duration", "2s").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "node no-such-node: no agent pod") ||
		!strings.Contains(string(out), "1 of 2 nodes could not be traced") {
		t.Errorf("trace of %s and a node without an agent: %v\n%s", node, err, out)
	}
}

// curlHostname asks hostPort for /hostname from the client namespace.
func curlHostname(c *cluster, hostPort string) (string, error) {
	out, err := exec.Command("ip", "netns", "exec", c.clientNS, "curl", "-sS", "-m", "2", "http://"+hostPort+"/hostname").CombinedOutput()
	return string(out), err
}

// deployTraceTarget runs one agnhost pod on node behind the NodePort
// Service "target" and returns the pod's address once it is ready.
func deployTraceTarget(t *testing.T, c *cluster, node string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: traceNS}}
	if _, err := c.client.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	createService(t, c, corev1.ServiceSpec{
		Type: corev1.ServiceTypeNodePort,
		Ports: []corev1.ServicePort{
			{Name: "open", Port: 80, TargetPort: intstr.FromString("http"), NodePort: openNodePort},
			{Name: "closed", Port: 81, TargetPort: intstr.FromInt32(closedPodPort), NodePort: closedNodePort},
		},
	}, "target")
	return runPodOn(t, c, "target", node)
}

// createService creates the Service name in traceNS for the pods labelled
// app=name.
func createService(t *testing.T, c *cluster, spec corev1.ServiceSpec, name string) {
	t.Helper()
	spec.Selector = map[string]string{"app": name}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: traceNS}, Spec: spec}
	if _, err := c.client.CoreV1().Services(traceNS).Create(context.Background(), svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// runPodOn runs the agnhost web pod name (labelled app=name) in traceNS on
// node and returns its address once it is ready.
func runPodOn(t *testing.T, c *cluster, name, node string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: traceNS, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{
			NodeSelector: map[string]string{"kubernetes.io/hostname": node},
			Containers:   []corev1.Container{agnhostWeb()},
		},
	}
	if _, err := c.client.CoreV1().Pods(traceNS).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var ip string
	err := poll(ctx, 500*time.Millisecond, func() (bool, error) {
		p, err := c.client.CoreV1().Pods(traceNS).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				ip = p.Status.PodIP
				return p.Spec.NodeName == node, nil
			}
		}
		return false, nil
	})
	if err != nil {
		c.dump(t)
		t.Fatalf("pod %s not ready on %s: %v", name, node, err)
	}
	return ip
}

// agentTracing reads "tracing: true|false" from `nodegress maps` in the
// agent of node.
func agentTracing(t *testing.T, c *cluster, node string) string {
	t.Helper()
	pods, err := c.client.CoreV1().Pods("nodegress").List(context.Background(), metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/name=nodegress", FieldSelector: "spec.nodeName=" + node,
	})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("agent pod of %s: %v (%d pods)", node, err, len(pods.Items))
	}
	out, err := c.kubectl("-n", "nodegress", "exec", pods.Items[0].Name, "-c", "agent", "--",
		"/nodegress", "maps")
	if err != nil {
		t.Fatalf("nodegress maps on %s: %v\n%s", node, err, out)
	}
	_, rest, ok := strings.Cut(out, "tracing: ")
	if !ok {
		t.Fatalf("nodegress maps on %s printed no tracing state:\n%s", node, out)
	}
	return strings.Fields(rest)[0]
}

// traceRecord is what the test reads of the plugin's JSON records.
type traceRecord struct {
	AgentNode string      `json:"agent_node"`
	Type      string      `json:"type"`
	Stage     string      `json:"stage"`
	Verdict   string      `json:"verdict"`
	Reason    string      `json:"reason"`
	Service   string      `json:"service"`
	Orig      traceTuple  `json:"orig"`
	Xlated    *traceTuple `json:"xlated"`
}

type traceTuple struct {
	Proto string `json:"proto"`
	Src   string `json:"src"`
	Dst   string `json:"dst"`
}
