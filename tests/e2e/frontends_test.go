package e2e

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/nodegress/nodegress/loader"
	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/netns"
)

// Addresses of service frontends; the client routes netns.ServiceNet via
// node1.
var (
	externalIP = netip.MustParseAddr("10.96.10.1")
	lbIP       = netip.MustParseAddr("10.96.20.1")
)

// TestLocalBackends reaches pods on the node the client talks to through
// each kind of frontend. Local backends are only DNAT'd, so every pod must
// see the client's own address.
func TestLocalBackends(t *testing.T) {
	tp := netns.SingleNode(t, 2)
	backends := harness.Endpoints(tp.Pod("pod1a"), tp.Pod("pod1b"))
	c := newCluster(t, tp, []int{1},
		harness.Service{Name: "web-np", Ports: []harness.Port{http80(30080)}, Endpoints: backends},
		harness.Service{Name: "web-ext", Type: "ClusterIP", Ports: []harness.Port{http80(0)},
			ExternalIPs: []netip.Addr{externalIP}, Endpoints: backends},
		harness.Service{Name: "web-lb", Type: "LoadBalancer", Ports: []harness.Port{http80(30081)},
			LoadBalancerIPs: []netip.Addr{lbIP}, Endpoints: backends},
	)
	node := c.node(1)
	want := map[string]netip.Addr{"pod1a": netns.ClientIP, "pod1b": netns.ClientIP}

	tests := []struct {
		name string
		addr netip.AddrPort
	}{
		{"NodePort", addrPort(node.Addr, 30080)},
		{"ExternalIP", addrPort(externalIP, 80)},
		{"LoadBalancerIP", addrPort(lbIP, 80)},
		{"LoadBalancer NodePort", addrPort(node.Addr, 30081)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := c.with(t)
			c.waitServed(tt.addr, 5*settle)
			tl := c.requests(tt.addr, 24, false, want)
			c.wantAll(tl, "pod1a", "pod1b")
			t.Logf("%s: %s", tt.addr, tl)
		})
	}
}

// TestRemoteBackends reaches pods on another node through node1. A remote
// backend's flow is SNAT'd to node1's address so the reply comes back through
// node1; a local one keeps the client's address.
func TestRemoteBackends(t *testing.T) {
	tp := netns.TwoNodes(t, 1, 1)
	pod1a, pod2a := tp.Pod("pod1a"), tp.Pod("pod2a")
	c := newCluster(t, tp, []int{1, 2},
		harness.Service{Name: "remote-only", Ports: []harness.Port{http80(30090)}, Endpoints: harness.Endpoints(pod2a)},
		harness.Service{Name: "mixed", Ports: []harness.Port{http80(30091)}, Endpoints: harness.Endpoints(pod1a, pod2a)},
	)
	n1, n2 := c.node(1), c.node(2)

	t.Run("only backend on node2", func(t *testing.T) {
		c := c.with(t)
		addr := addrPort(n1.Addr, 30090)
		c.waitServed(addr, 5*settle)
		tl := c.requests(addr, 12, false, map[string]netip.Addr{"pod2a": n1.Addr})
		t.Logf("%s: %s", addr, tl)
	})
	t.Run("remote flows are translated in tc on a veth", func(t *testing.T) {
		c := c.with(t)
		checkRemoteTrace(t, c, c.agents[0], addrPort(n1.Addr, 30090), addrPort(pod2a.Addr, harness.PodHTTPPort), loader.StageTCIngress)
	})
	t.Run("one local one remote backend", func(t *testing.T) {
		c := c.with(t)
		addr := addrPort(n1.Addr, 30091)
		c.waitServed(addr, 5*settle)
		tl := c.requests(addr, 30, false, map[string]netip.Addr{"pod1a": netns.ClientIP, "pod2a": n1.Addr})
		c.wantAll(tl, "pod1a", "pod2a")
		t.Logf("%s: %s", addr, tl)
	})
	t.Run("node2 serves its local backend", func(t *testing.T) {
		c := c.with(t)
		addr := addrPort(n2.Addr, 30090)
		c.waitServed(addr, 5*settle)
		tl := c.requests(addr, 12, false, map[string]netip.Addr{"pod2a": netns.ClientIP})
		t.Logf("%s: %s", addr, tl)
	})
}

// checkRemoteTrace traces a flow through frontend to the remote backend and
// checks that its packets and the replies were translated by the hook of
// stage and sent straight back out of the node's device, never up its stack.
func checkRemoteTrace(t *testing.T, c *cluster, agent *harness.Agent, frontend, backend netip.AddrPort, stage loader.Stage) {
	t.Helper()
	node := agent.Node
	out := runTrace(t, c, agent, frontend, "--output", "json", "--port", fmt.Sprint(frontend.Port()), "--count", "20")
	var fwd, reply int
	for _, r := range parseTrace(t, out) {
		switch r.Reason {
		case loader.ReasonFwdRemote.String(), loader.ReasonReplyRemote.String():
			if r.Stage != stage.String() || (r.Verdict != loader.VerdictTX.String() && r.Verdict != loader.VerdictRedirect.String()) {
				t.Errorf("%s at %s with verdict %s, want %s TX or REDIRECT", r.Reason, r.Stage, r.Verdict, stage)
			}
		}
		switch r.Reason {
		case loader.ReasonFwdRemote.String():
			fwd++
			if r.Xlated == nil || r.Xlated.Dst != backend.String() || !strings.HasPrefix(r.Xlated.Src, node.Addr.String()+":") {
				t.Errorf("remote forward translated to %+v, want %s:* > %s", r.Xlated, node.Addr, backend)
			}
		case loader.ReasonReplyRemote.String():
			reply++
			if r.Xlated == nil || r.Xlated.Src != frontend.String() || !strings.HasPrefix(r.Xlated.Dst, netns.ClientIP.String()+":") {
				t.Errorf("remote reply translated to %+v, want %s > %s:*", r.Xlated, frontend, netns.ClientIP)
			}
		}
	}
	if fwd == 0 || reply == 0 {
		t.Errorf("got %d %s and %d %s events, want both:\n%s", fwd, loader.ReasonFwdRemote, reply, loader.ReasonReplyRemote, out)
	}
}

// TestUDPNodePort sends datagrams through a NodePort: each new socket is a
// new flow that gets a backend, and every datagram of one flow goes to the
// same backend.
func TestUDPNodePort(t *testing.T) {
	tp := netns.SingleNode(t, 2)
	c := newCluster(t, tp, []int{1}, harness.Service{
		Name:      "echo",
		Ports:     []harness.Port{{Name: "echo", Protocol: "UDP", Port: 9090, TargetPort: harness.PodUDPPort, NodePort: 30095}},
		Endpoints: harness.Endpoints(tp.Pod("pod1a"), tp.Pod("pod1b")),
	})
	addr := addrPort(c.node(1).Addr, 30095)
	want := map[string]netip.Addr{"pod1a": netns.ClientIP, "pod1b": netns.ClientIP}

	if err := harness.Eventually(5*settle, 50*time.Millisecond, func() error {
		_, err := harness.UDPRequest(c.ctx, c.client(), addr, "hello")
		return err
	}); err != nil {
		t.Fatalf("udp %s not served: %v", addr, err)
	}
	t.Run("new flows", func(t *testing.T) {
		c := c.with(t)
		tl := c.requests(addr, 24, true, want)
		c.wantAll(tl, "pod1a", "pod1b")
		t.Logf("%s: %s", addr, tl)
	})
	t.Run("one flow keeps its backend", func(t *testing.T) {
		conn, err := c.client().DialContext(c.ctx, "udp", addr.String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		first := ""
		buf := make([]byte, 2048)
		for i := range 10 {
			_ = conn.SetDeadline(time.Now().Add(harness.RequestTimeout))
			if _, err := conn.Write([]byte("same flow")); err != nil {
				t.Fatal(err)
			}
			n, err := conn.Read(buf)
			if err != nil {
				t.Fatalf("datagram %d: %v", i, err)
			}
			r, err := harness.ParseReply(string(buf[:n]))
			if err != nil {
				t.Fatal(err)
			}
			if r.Client != netns.ClientIP {
				t.Errorf("datagram %d: %s saw client %s, want %s", i, r.Pod, r.Client, netns.ClientIP)
			}
			if first == "" {
				first = r.Pod
			} else if r.Pod != first {
				t.Errorf("datagram %d of one flow answered by %s, earlier ones by %s", i, r.Pod, first)
			}
		}
	})
}
