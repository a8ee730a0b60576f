package e2e

import (
	"context"
	"errors"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/nodegress/nodegress/loader"
	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/netns"
)

// Service fields enforced by the datapath, seen by a real client through
// the agent as a user runs it (defaults, veths with checksum offload).

// TestSourceRanges: a LoadBalancer IP with loadBalancerSourceRanges serves
// a client inside a range and drops one outside (counted under its
// reason), while the same service's NodePort stays open.
func TestSourceRanges(t *testing.T) {
	tp := netns.SingleNode(t, 1)
	backends := harness.Endpoints(tp.Pod("pod1a"))
	svc := harness.Service{Name: "web-lb", Type: "LoadBalancer", Ports: []harness.Port{http80(30085)},
		LoadBalancerIPs: []netip.Addr{lbIP}, LoadBalancerSourceRanges: []string{netns.ClientIP.String() + "/32"}, Endpoints: backends}
	c := newCluster(t, tp, []int{1}, svc)
	lb, np := addrPort(lbIP, 80), addrPort(c.node(1).Addr, 30085)
	c.waitServed(lb, 5*settle)

	// The client leaves the range: new connections to the LB IP die
	// unanswered, the NodePort still answers.
	svc.LoadBalancerSourceRanges = []string{"203.0.113.0/24"}
	c.apply(svc)
	agent := c.agents[0]
	err := harness.Eventually(settle, 100*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(c.ctx, 300*time.Millisecond)
		defer cancel()
		if _, err := harness.HTTPGet(ctx, c.client(), lb); err == nil {
			return errors.New("still served")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s after the client left the source ranges: %v", lb, err)
	}
	if n, err := agent.Counted(loader.ReasonDropSourceRange.String()); err != nil || n == 0 {
		t.Errorf("%s counted %d times (%v), want the dropped SYNs", loader.ReasonDropSourceRange, n, err)
	}
	if _, err := c.get(np); err != nil {
		t.Errorf("NodePort %s of the same service: %v", np, err)
	}
}

// TestRejectNoEndpoints: a service without endpoints refuses connections
// at once (ICMP port unreachable from the datapath), TCP and UDP, as
// kube-proxy does; a service with an endpoint on the same path answers.
func TestRejectNoEndpoints(t *testing.T) {
	tp := netns.SingleNode(t, 1)
	c := newCluster(t, tp, []int{1},
		harness.Service{Name: "empty", Ports: []harness.Port{http80(30086), {Name: "dns", Protocol: "UDP", Port: 53, TargetPort: harness.PodUDPPort, NodePort: 30087}}},
		harness.Service{Name: "web", Ports: []harness.Port{http80(30088)}, Endpoints: harness.Endpoints(tp.Pod("pod1a"))},
	)
	node := c.node(1).Addr
	c.waitServed(addrPort(node, 30088), 5*settle)

	refused := func(network string, addr netip.AddrPort) error {
		ctx, cancel := context.WithTimeout(c.ctx, 2*time.Second)
		defer cancel()
		start := time.Now()
		var err error
		if network == "tcp" {
			_, err = harness.HTTPGet(ctx, c.client(), addr)
		} else {
			_, err = harness.UDPRequest(ctx, c.client(), addr, "ping")
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return err
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("%s %s refused after %s, want at once", network, addr, d)
		}
		return nil
	}
	for _, tc := range []struct {
		network string
		addr    netip.AddrPort
	}{{"tcp", addrPort(node, 30086)}, {"udp", addrPort(node, 30087)}} {
		if err := harness.Eventually(settle, 100*time.Millisecond, func() error { return refused(tc.network, tc.addr) }); err != nil {
			t.Errorf("%s %s: %v, want connection refused", tc.network, tc.addr, err)
		}
	}
	if n, err := c.agents[0].Counted(loader.ReasonRejectNoBackend.String()); err != nil || n < 2 {
		t.Errorf("%s counted %d times (%v)", loader.ReasonRejectNoBackend, n, err)
	}
	if _, err := c.get(addrPort(node, 30088)); err != nil {
		t.Errorf("service with an endpoint: %v", err)
	}
}

// TestSessionAffinity: with ClientIP affinity every new connection of the
// client reaches one pod; without, the same pods share them.
func TestSessionAffinity(t *testing.T) {
	tp := netns.SingleNode(t, 3)
	backends := harness.Endpoints(tp.Pod("pod1a"), tp.Pod("pod1b"), tp.Pod("pod1c"))
	c := newCluster(t, tp, []int{1},
		harness.Service{Name: "sticky", Ports: []harness.Port{http80(30089)}, AffinitySeconds: 60, Endpoints: backends},
		harness.Service{Name: "plain", Ports: []harness.Port{http80(30090)}, Endpoints: backends},
	)
	node := c.node(1).Addr
	all := map[string]netip.Addr{"pod1a": netns.ClientIP, "pod1b": netns.ClientIP, "pod1c": netns.ClientIP}
	c.waitServed(addrPort(node, 30090), 5*settle)
	if tl := c.requests(addrPort(node, 30090), 24, false, all); len(tl.byPod) < 2 {
		t.Fatalf("without affinity: %s", tl)
	}
	c.waitServed(addrPort(node, 30089), 5*settle)
	if tl := c.requests(addrPort(node, 30089), 24, false, all); len(tl.byPod) != 1 || len(tl.failures) != 0 {
		t.Errorf("with affinity: %s, want one pod", tl)
	} else {
		t.Logf("with affinity: %s", tl)
	}
}
