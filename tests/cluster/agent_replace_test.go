package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodegress/nodegress/tests/netns"
)

// tlsClient sends HTTPS requests from ns verified against pool for
// ingressHost, over HTTP/2 when h2 (else HTTP/1.1), on one kept-alive
// connection when keepAlive.
func tlsClient(ns *netns.NS, pool *x509.CertPool, h2, keepAlive bool) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return ns.DialContext(ctx, network, addr)
		},
		TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: ingressHost},
		ForceAttemptHTTP2: h2,
		DisableKeepAlives: !keepAlive,
		MaxConnsPerHost:   1,
	}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// loadSet is the traffic of the agent replacement tests: a NodePort
// (datapath only) and the Ingress over HTTP/1.1 (a connection per request
// and kept alive), HTTP/2 over TLS and HTTPS with a connection per request.
// Requests get 10 s: on a loaded machine a request may wait seconds for
// CPU, which is not what these tests are about; a connection refused,
// reset or closed under a request fails at once whatever the timeout. The
// slowest request of each load is logged.
type loadSet struct{ loads []*load }

func startLoads(ns *netns.NS, pool *x509.CertPool, nodePortURL, ingressURL, ingressHTTPS string) *loadSet {
	plain := func(keepAlive bool) *http.Client {
		cl := httpClient(ns, keepAlive)
		cl.Timeout = 10 * time.Second
		return cl
	}
	return &loadSet{loads: []*load{
		startLoadWith("nodeport", plain(false), nodePortURL, ""),
		startLoadWith("ingress http/1.1", plain(false), ingressURL, ingressHost),
		startLoadWith("ingress http/1.1 kept alive", plain(true), ingressURL, ingressHost),
		startLoadWith("ingress h2", tlsClient(ns, pool, true, true), ingressHTTPS, ingressHost),
		startLoadWith("ingress https", tlsClient(ns, pool, false, false), ingressHTTPS, ingressHost),
	}}
}

// stop ends the loads after two more seconds of traffic (on the new agents)
// and checks them: no refused connection, at most lost failed requests
// each, and answers.
func (s *loadSet) stop(t *testing.T, c *cluster, lost int) {
	t.Helper()
	time.Sleep(2 * time.Second)
	defer func() {
		if t.Failed() {
			c.dump(t)
		}
	}()
	for _, l := range s.loads {
		r := l.stop()
		t.Logf("%s", r)
		if r.refused > 0 || r.failed > lost {
			t.Errorf("%s: %d of %d requests failed (%d refused; at most %d may be lost), first: %s", r.name, r.failed, r.total(), r.refused, lost, r.firstErr)
		}
		if r.ok == 0 {
			t.Errorf("%s: no request answered", r.name)
		}
	}
}

// rollAgents starts a rollout of the agents with `kubectl -n nodegress
// args...`, waits until it is complete and every old agent is gone, and
// checks that the loads lost nothing meanwhile.
func rollAgents(t *testing.T, c *cluster, loads *loadSet, args ...string) {
	t.Helper()
	if out, err := c.kubectl(append([]string{"-n", "nodegress"}, args...)...); err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if out, err := c.kubectl("-n", "nodegress", "rollout", "status", "daemonset/nodegress", "--timeout=240s"); err != nil {
		c.dump(t)
		t.Fatalf("rollout status: %v\n%s", err, out)
	}
	waitReplacedAgentsGone(t, c)
	loads.stop(t, c, 0)
}

// waitReplacedAgentsGone waits until the DaemonSet has one agent pod per
// node again: a rollout with maxSurge ends before the last old pod is gone.
func waitReplacedAgentsGone(t *testing.T, c *cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var last int
	err := poll(ctx, 500*time.Millisecond, func() (bool, error) {
		pods, err := c.client.CoreV1().Pods("nodegress").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		last = len(pods.Items)
		return last == len(c.nodes), nil
	})
	if err != nil {
		t.Fatalf("%d agent pods, want %d: %v", last, len(c.nodes), err)
	}
}

// killAgent kills the agent container on node i with SIGKILL through the
// node's containerd and waits until the kubelet restarted it and it is
// ready again.
func killAgent(t *testing.T, c *cluster, i int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pod, status := agentOn(ctx, t, c, c.nodes[i])
	id, ok := strings.CutPrefix(status.ContainerID, "containerd://")
	if !ok {
		t.Fatalf("agent container id %q", status.ContainerID)
	}
	sock := filepath.Join("/var/lib/nodegress-cluster/nodes", fmt.Sprintf("node%d", i+1), "containerd.sock")
	if out, err := exec.Command("ctr", "--address", sock, "--namespace", "k8s.io", "tasks", "kill", "--signal", "SIGKILL", id).CombinedOutput(); err != nil {
		t.Fatalf("kill the agent on %s: %v\n%s", c.nodes[i], err, out)
	}
	killed := time.Now()
	err := poll(ctx, 200*time.Millisecond, func() (bool, error) {
		p, err := c.client.CoreV1().Pods("nodegress").Get(ctx, pod, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, s := range p.Status.ContainerStatuses {
			if s.Name == "agent" {
				return s.RestartCount > status.RestartCount && s.Ready, nil
			}
		}
		return false, nil
	})
	if err != nil {
		c.dump(t)
		t.Fatalf("agent on %s not restarted and ready: %v", c.nodes[i], err)
	}
	t.Logf("agent on %s killed, restarted and ready in %s", c.nodes[i], time.Since(killed).Round(100*time.Millisecond))
}

// agentOn returns the agent pod on node and its agent container's status.
func agentOn(ctx context.Context, t *testing.T, c *cluster, node string) (string, corev1.ContainerStatus) {
	t.Helper()
	pods, err := c.client.CoreV1().Pods("nodegress").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		for _, s := range p.Status.ContainerStatuses {
			if s.Name == "agent" && s.Ready {
				return p.Name, s
			}
		}
	}
	t.Fatalf("no ready agent on %s", node)
	return "", corev1.ContainerStatus{}
}
