package cluster

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// checkInCluster has a web pod reach Services as in-cluster clients do: the
// web Service by name (CoreDNS through the kube-dns ClusterIP, then the
// web ClusterIP; pods on every node answer), the kubernetes Service, and
// its own node's NodePort. Whoever serves ClusterIPs (kube-proxy, or
// nodegress with replaceKubeProxy) must make all of it work; nodegress's
// socket load balancer must be attached exactly when it replaces
// kube-proxy, and then answer kube-proxy's health and status ports.
func checkInCluster(t *testing.T, c *cluster, replaceKubeProxy bool) {
	t.Helper()
	pods, err := c.client.CoreV1().Pods(testNS).List(context.Background(), metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil || len(pods.Items) == 0 {
		t.Fatalf("pods of web: %v", err)
	}
	pod := pods.Items[0]
	script := fmt.Sprintf(`set -e
for i in $(seq 1 30); do curl -sS -m 3 http://web.%s/hostname; echo; done
echo api=$(curl -sk -m 3 -o /dev/null -w '%%{http_code}' https://kubernetes.default/version)
echo nodeport=$(curl -sS -m 3 http://%s:%d/hostname)`, testNS, pod.Status.HostIP, nodePort)
	out, err := c.kubectl("-n", testNS, "exec", pod.Name, "--", "sh", "-c", script)
	if err != nil {
		c.dump(t)
		t.Fatalf("in-cluster requests from %s: %v\n%s", pod.Name, err, out)
	}
	answered := map[string]int{}
	for _, l := range strings.Fields(out) {
		switch {
		case strings.HasPrefix(l, "web-"):
			answered[l]++
		case strings.HasPrefix(l, "api="):
			if l != "api=200" {
				t.Errorf("kubernetes.default from a pod: %s", l)
			}
		case strings.HasPrefix(l, "nodeport="):
			if !strings.HasPrefix(l, "nodeport=web-") {
				t.Errorf("own node's NodePort from a pod: %s", l)
			}
		}
	}
	// New sockets, each balanced anew: a pod misses all 30 with
	// probability 3 x (2/3)^30, about 1.6e-5.
	if len(answered) != len(c.nodes) {
		if m, err := c.kubectl("-n", "nodegress", "exec", "ds/nodegress", "--", "/nodegress", "maps", "--bpffs", "/sys/fs/bpf/nodegress"); err == nil {
			t.Logf("maps of one agent:\n%s", m)
		}
		t.Errorf("web by name from %s answered by %v, want all %d pods", pod.Name, answered, len(c.nodes))
	}
	t.Logf("in-cluster from %s: web answered by %v", pod.Name, answered)

	logs, err := c.kubectl("-n", "nodegress", "logs", "ds/nodegress")
	if err != nil {
		t.Fatalf("agent logs: %v", err)
	}
	if attached := strings.Contains(logs, "socket load balancer attached"); attached != replaceKubeProxy {
		t.Errorf("socket load balancer attached: %t, want %t", attached, replaceKubeProxy)
	}
	if !replaceKubeProxy {
		return
	}
	node := "ngc-" + pod.Spec.NodeName
	for _, probe := range []struct{ url, want string }{
		{"http://127.0.0.1:10249/proxyMode", "nodegress"},
		{"http://127.0.0.1:10256/healthz", `"nodeEligible":true`},
	} {
		out, err := exec.Command("ip", "netns", "exec", node, "curl", "-sS", "-m", "3", probe.url).CombinedOutput()
		if err != nil || !strings.Contains(string(out), probe.want) {
			t.Errorf("%s on %s: %v %q, want %q", probe.url, node, err, out, probe.want)
		}
	}
}

// datapathForwarded is how many packets nodegress's datapath on node
// forwarded to backends (local and remote): NodePort traffic must cross it,
// with or without kube-proxy.
func datapathForwarded(t *testing.T, c *cluster, node string) int {
	t.Helper()
	return datapathCounted(t, c, node, "fwd_local", "fwd_remote")
}

// datapathCounted is how many packets nodegress's datapath on node counted
// under the reasons, from `nodegress maps` in the agent's pod.
func datapathCounted(t *testing.T, c *cluster, node string, reasons ...string) int {
	t.Helper()
	pods, err := c.client.CoreV1().Pods("nodegress").List(context.Background(), metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("agent pod on %s: %v", node, err)
	}
	out, err := c.kubectl("-n", "nodegress", "exec", pods.Items[0].Name, "--", "/nodegress", "maps", "--bpffs", "/sys/fs/bpf/nodegress")
	if err != nil {
		t.Fatalf("nodegress maps on %s: %v\n%s", node, err, out)
	}
	n := 0
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) == 3 && slices.Contains(reasons, f[0]) {
			v, _ := strconv.Atoi(f[1])
			n += v
		}
	}
	return n
}
