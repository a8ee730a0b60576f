package e2e

import (
	"net/netip"
	"testing"

	"github.com/nodegress/nodegress/loader"
	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/netns"
)

// TestPodRedirect serves local pods with --pod-redirect on: tc hands each
// packet straight into the pod (bpf_redirect_peer), past the host's routing.
// Pods keep seeing the client's address, megabytes move both ways, a pod
// created after the agent started is redirected too, and with the default
// (auto, without --replace-kube-proxy) the same path goes through the host.
func TestPodRedirect(t *testing.T) {
	tp := netns.SingleNode(t, 2)
	pods := harness.Endpoints(tp.Pod("pod1a"), tp.Pod("pod1b"))
	svc := harness.Service{Name: "peer", Ports: []harness.Port{http80(30200)}, Endpoints: pods}
	c := newClusterWith(t, tp, harness.AgentConfig{Args: []string{"--pod-redirect", "on"}}, []int{1}, svc)
	n1, agent := c.node(1), c.agents[0]
	addr := addrPort(n1.Addr, 30200)
	c.waitServed(addr, 5*settle)

	t.Run("every pod, the client's address", func(t *testing.T) {
		c := c.with(t)
		peer, host := counted(t, agent, loader.ReasonFwdLocalPeer), counted(t, agent, loader.ReasonFwdLocal)
		tl := c.requests(addr, 20, false, map[string]netip.Addr{"pod1a": netns.ClientIP, "pod1b": netns.ClientIP})
		c.wantAll(tl, "pod1a", "pod1b")
		if got := counted(t, agent, loader.ReasonFwdLocalPeer); got < peer+20*3 {
			t.Errorf("%d packets handed to pods for 20 connections, want at least 60", got-peer)
		}
		// Only a pod's first packet may find no neighbour entry: the
		// host's routing then resolves it.
		if got := counted(t, agent, loader.ReasonFwdLocal); got > host+2 {
			t.Errorf("%d packets took the host's routing, want at most the first to each pod", got-host)
		}
	})

	t.Run("large transfers", func(t *testing.T) {
		c := c.with(t)
		const size = 8 << 20
		upload := randomBytes(t, size)
		if r, err := harness.HTTPDownload(c.ctx, c.client(), addr, size); err != nil || r.Client != netns.ClientIP {
			t.Fatalf("download: %v (%v)", err, r)
		}
		if r, err := harness.HTTPUpload(c.ctx, c.client(), addr, upload); err != nil || r.Client != netns.ClientIP {
			t.Fatalf("upload: %v (%v)", err, r)
		}
	})

	t.Run("a pod created later", func(t *testing.T) {
		c := c.with(t)
		late := tp.AddPod(t, n1)
		harness.StartPodServers(t, late)
		lateSvc := harness.Service{Name: "peer-late", Ports: []harness.Port{http80(30201)}, Endpoints: harness.Endpoints(late)}
		c.apply(lateSvc)
		lateAddr := addrPort(n1.Addr, 30201)
		c.waitServed(lateAddr, 5*settle)
		peer := counted(t, agent, loader.ReasonFwdLocalPeer)
		c.requests(lateAddr, 5, false, map[string]netip.Addr{late.Name: netns.ClientIP})
		if got := counted(t, agent, loader.ReasonFwdLocalPeer); got < peer+5*3 {
			t.Errorf("%d packets handed to %s for 5 connections, want at least 15", got-peer, late.Name)
		}
	})
}

// TestPodRedirectDefault: without --replace-kube-proxy the default (auto)
// leaves local pods to the host's routing.
func TestPodRedirectDefault(t *testing.T) {
	tp := netns.SingleNode(t, 1)
	svc := harness.Service{Name: "host", Ports: []harness.Port{http80(30202)}, Endpoints: harness.Endpoints(tp.Pod("pod1a"))}
	c := newCluster(t, tp, []int{1}, svc)
	addr := addrPort(c.node(1).Addr, 30202)
	c.waitServed(addr, 5*settle)
	host := counted(t, c.agents[0], loader.ReasonFwdLocal)
	c.requests(addr, 5, false, map[string]netip.Addr{"pod1a": netns.ClientIP})
	if got := counted(t, c.agents[0], loader.ReasonFwdLocal); got < host+5*3 {
		t.Errorf("%d packets took the host's routing for 5 connections, want at least 15", got-host)
	}
	if got := counted(t, c.agents[0], loader.ReasonFwdLocalPeer); got != 0 {
		t.Errorf("%d packets handed straight to the pod with the default setting", got)
	}
}
