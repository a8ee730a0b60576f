package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nodegress/nodegress/loader"
	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/netns"
)

// ClusterIP addresses of the socket load balancer tests: inside
// netns.ServiceNet, which no node routes anywhere of its own.
var (
	clusterIPWeb   = netip.MustParseAddr("10.96.100.10")
	clusterIPLocal = netip.MustParseAddr("10.96.100.11")
	clusterIPSelf  = netip.MustParseAddr("10.96.100.12")
	clusterIPEmpty = netip.MustParseAddr("10.96.100.13")
)

// inClusterClient runs podserver's client side as a process of a pod (or
// of the node, for hostNetwork clients) inside the node's cgroup, where the
// socket load balancer is attached: "get URL" or "udp ADDR MSG".
type inClusterClient struct {
	t       *testing.T
	bin     string
	cgroups map[string]string
}

func (c inClusterClient) run(ns *netns.NS, node string, inCgroup bool, args ...string) (harness.Reply, error) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := ns.Command(ctx, c.bin, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	var err error
	if inCgroup {
		err = harness.StartInCgroup(cmd, c.cgroups[node])
	} else {
		err = cmd.Start()
	}
	if err != nil {
		c.t.Fatalf("start client: %v", err)
	}
	if err := cmd.Wait(); err != nil {
		var ee *exec.ExitError
		if !asExit(err, &ee) {
			c.t.Fatalf("client: %v", err)
		}
		return harness.Reply{}, fmt.Errorf("%s", strings.TrimSpace(errOut.String()))
	}
	return harness.ParseReply(strings.TrimSpace(out.String()))
}

func asExit(err error, ee **exec.ExitError) bool {
	e, ok := err.(*exec.ExitError)
	*ee = e
	return ok
}

func (c inClusterClient) get(ns *netns.NS, node string, addr netip.AddrPort) (harness.Reply, error) {
	return c.run(ns, node, true, "get", "--timeout", "2s", "http://"+addr.String()+"/")
}

// TestSocketLB replaces kube-proxy in the namespace topology: pods and the
// node reach ClusterIPs, their own node's NodePort and their own pod
// through its Service, over TCP and UDP, with the backend choosing at
// connect time (the backend sees the client's own address: no NAT);
// internalTrafficPolicy Local keeps to the node's endpoints; a service
// without endpoints refuses at once; a process outside the node's cgroup is
// not served.
func TestSocketLB(t *testing.T) {
	tp := netns.TwoNodes(t, 2, 1)
	pod1a, pod1b, pod2a := tp.Pod("pod1a"), tp.Pod("pod1b"), tp.Pod("pod2a")
	cgroups := harness.NodeCgroups(t, tp.Nodes...)
	udp := harness.Port{Name: "echo", Protocol: "UDP", Port: 53, TargetPort: harness.PodUDPPort}
	c := newClusterWith(t, tp, harness.AgentConfig{SocketLB: cgroups}, []int{1, 2},
		harness.Service{Name: "web", ClusterIP: clusterIPWeb, Ports: []harness.Port{http80(30100), udp},
			Endpoints: harness.Endpoints(pod1a, pod2a)},
		harness.Service{Name: "local", Type: "ClusterIP", ClusterIP: clusterIPLocal, InternalTrafficPolicy: "Local",
			Ports: []harness.Port{http80(0)}, Endpoints: harness.Endpoints(pod2a)},
		harness.Service{Name: "self", Type: "ClusterIP", ClusterIP: clusterIPSelf, Ports: []harness.Port{http80(0)},
			Endpoints: harness.Endpoints(pod1b)},
		harness.Service{Name: "empty", Type: "ClusterIP", ClusterIP: clusterIPEmpty, Ports: []harness.Port{http80(0)}},
	)
	cl := inClusterClient{t: t, bin: harness.Podserver(t), cgroups: cgroups}
	web := addrPort(clusterIPWeb, 80)
	n1 := c.node(1)

	// The agents have programmed the socket frontends.
	for _, a := range c.agents {
		if err := harness.Eventually(settle, 50*time.Millisecond, func() error {
			m, err := a.ParsedMaps()
			if err != nil {
				return err
			}
			if _, ok := m.Backends(web.String() + "/TCP/socket"); !ok {
				return fmt.Errorf("no socket frontend %s", web)
			}
			return nil
		}); err != nil {
			t.Fatalf("%s: %v", a.Node.Name, err)
		}
	}

	t.Run("pod to ClusterIP, local and remote backends, no NAT", func(t *testing.T) {
		seen := map[string]int{}
		for range 24 {
			r, err := cl.get(pod1b.NS, "node1", web)
			if err != nil {
				t.Fatalf("pod1b -> %s: %v", web, err)
			}
			if r.Client != pod1b.Addr {
				t.Errorf("%s saw client %s, want pod1b's own %s", r.Pod, r.Client, pod1b.Addr)
			}
			seen[r.Pod]++
		}
		if seen["pod1a"] == 0 || seen["pod2a"] == 0 {
			t.Errorf("24 connections reached %v, want pod1a and pod2a", seen)
		}
	})
	t.Run("pod on another node", func(t *testing.T) {
		if r, err := cl.get(pod2a.NS, "node2", web); err != nil || r.Client != pod2a.Addr {
			t.Errorf("pod2a -> %s: %+v %v", web, r, err)
		}
	})
	t.Run("the node itself (hostNetwork)", func(t *testing.T) {
		if _, err := cl.get(n1.NS, "node1", web); err != nil {
			t.Errorf("node1 -> %s: %v", web, err)
		}
	})
	t.Run("pod to its own node's NodePort", func(t *testing.T) {
		if _, err := cl.get(pod1b.NS, "node1", addrPort(n1.Addr, 30100)); err != nil {
			t.Errorf("pod1b -> %s:30100: %v", n1.Addr, err)
		}
	})
	t.Run("hairpin: a pod reaches itself through its Service", func(t *testing.T) {
		if r, err := cl.get(pod1b.NS, "node1", addrPort(clusterIPSelf, 80)); err != nil || r.Pod != "pod1b" {
			t.Errorf("pod1b -> its own service: %+v %v", r, err)
		}
	})
	t.Run("UDP to ClusterIP", func(t *testing.T) {
		r, err := cl.run(pod1b.NS, "node1", true, "udp", addrPort(clusterIPWeb, 53).String(), "ping")
		if err != nil || (r.Pod != "pod1a" && r.Pod != "pod2a") {
			t.Errorf("pod1b -> udp %s:53: %+v %v", clusterIPWeb, r, err)
		}
	})
	t.Run("internalTrafficPolicy Local", func(t *testing.T) {
		local := addrPort(clusterIPLocal, 80)
		if r, err := cl.get(pod2a.NS, "node2", local); err != nil || r.Pod != "pod2a" {
			t.Errorf("on the endpoint's node: %+v %v", r, err)
		}
		if r, err := cl.get(pod1a.NS, "node1", local); err == nil {
			t.Errorf("on a node without a local endpoint: answered by %s", r.Pod)
		}
	})
	t.Run("no endpoints: refused at once", func(t *testing.T) {
		start := time.Now()
		_, err := cl.get(pod1b.NS, "node1", addrPort(clusterIPEmpty, 80))
		if err == nil || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("empty service: %v, want connection refused", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("refused after %s", d)
		}
		if n, err := c.agents[0].Counted(loader.ReasonSockReject.String()); err != nil || n == 0 {
			t.Errorf("%s counted %d (%v)", loader.ReasonSockReject, n, err)
		}
	})
	t.Run("outside the node's cgroup nothing is translated", func(t *testing.T) {
		if _, err := cl.run(pod1b.NS, "node1", true, "get", "--timeout", "1s", "http://"+web.String()+"/"); err != nil {
			t.Fatalf("inside: %v", err)
		}
		if r, err := cl.run(pod1b.NS, "node1", false, "get", "--timeout", "1s", "http://"+web.String()+"/"); err == nil {
			t.Errorf("a process outside the cgroup reached %s: %+v", web, r)
		}
	})
}
