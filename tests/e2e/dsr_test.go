package e2e

import (
	"cmp"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/nodegress/nodegress/controller"
	"github.com/nodegress/nodegress/loader"
	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/netns"
)

// dsrIP is an external IP served by both nodes (the client routes
// netns.ServiceNet via node1 until a test moves it).
var dsrIP = netip.MustParseAddr("10.96.30.1")

// counted reads one reason's packet counter from agent's datapath.
func counted(t *testing.T, a *harness.Agent, reason loader.Reason) uint64 {
	t.Helper()
	n, err := a.Counted(reason.String())
	if err != nil {
		t.Fatalf("counters of %s: %v", a.Node.Name, err)
	}
	return n
}

// TestDSR reaches a pod on node2 through node1 by direct server return:
// node1 sends the client's packets GENEVE-encapsulated to node2, whose
// datapath hands them to the pod and sends the pod's replies to the client
// itself, from the frontend. The pod sees the client's address; node1
// never sees a reply. The same Service without the annotation (SNAT) runs
// beside it on the same path. It runs in the default XDP mode (on veths:
// tc only), with XDP forced, and with --pod-redirect on (node2 hands the
// decapsulated packet straight into the pod).
func TestDSR(t *testing.T) {
	for _, mode := range []string{"", "native"} {
		t.Run("xdp-mode="+cmp.Or(mode, "auto"), func(t *testing.T) { testDSR(t, mode, false) })
	}
	t.Run("pod-redirect", func(t *testing.T) { testDSR(t, "", true) })
}

func testDSR(t *testing.T, xdpMode string, podRedirect bool) {
	base := harness.AgentConfig{XDPMode: xdpMode}
	decapReason := loader.ReasonDSRDecap
	if podRedirect {
		base.Args = []string{"--pod-redirect", "on"}
		decapReason = loader.ReasonDSRDecapPeer
	}
	tp := netns.TwoNodes(t, 1, 1)
	pod1a, pod2a := tp.Pod("pod1a"), tp.Pod("pod2a")
	dsr := map[string]string{controller.AnnotationForwardingMode: "dsr"}
	dsrMaglev := map[string]string{controller.AnnotationForwardingMode: "dsr", controller.AnnotationLBAlgorithm: "maglev"}
	c := newClusterWith(t, tp, base, []int{1, 2},
		harness.Service{Name: "dsr", Ports: []harness.Port{http80(30170)}, Annotations: dsr, Endpoints: harness.Endpoints(pod2a)},
		harness.Service{Name: "dsr-udp", Ports: []harness.Port{{Name: "echo", Protocol: "UDP", Port: 9090, TargetPort: harness.PodUDPPort, NodePort: 30171}}, Annotations: dsr, Endpoints: harness.Endpoints(pod2a)},
		harness.Service{Name: "snat", Ports: []harness.Port{http80(30172)}, Endpoints: harness.Endpoints(pod2a)},
		harness.Service{Name: "dsr-vip", Type: "ClusterIP", Ports: []harness.Port{http80(0)}, ExternalIPs: []netip.Addr{dsrIP},
			Annotations: dsrMaglev, Endpoints: harness.Endpoints(pod1a, pod2a)},
	)
	n1, n2 := c.node(1), c.node(2)
	a1, a2 := c.agents[0], c.agents[1]
	viaDSR, viaSNAT := addrPort(n1.Addr, 30170), addrPort(n1.Addr, 30172)
	c.waitServed(viaDSR, 5*settle)
	c.waitServed(viaSNAT, 5*settle)

	t.Run("the pod sees the client and answers it directly", func(t *testing.T) {
		c := c.with(t)
		fwd, replies, decap, direct := counted(t, a1, loader.ReasonFwdDSR), counted(t, a1, loader.ReasonReplyRemote),
			counted(t, a2, decapReason), counted(t, a2, loader.ReasonReplyDSR)
		tl := c.requests(viaDSR, 20, false, map[string]netip.Addr{"pod2a": netns.ClientIP})
		t.Logf("%s: %s", viaDSR, tl)
		if got := counted(t, a1, loader.ReasonReplyRemote); got != replies {
			t.Errorf("node1 translated %d replies of DSR flows, want none", got-replies)
		}
		if got := counted(t, a1, loader.ReasonFwdDSR); got < fwd+20*3 {
			t.Errorf("node1 encapsulated %d packets for 20 connections, want at least 60", got-fwd)
		}
		if got := counted(t, a2, decapReason); got < decap+20*3 {
			t.Errorf("node2 decapsulated %d packets for 20 connections, want at least 60", got-decap)
		}
		if got := counted(t, a2, loader.ReasonReplyDSR); got < direct+20*2 {
			t.Errorf("node2 sent %d replies from the frontend for 20 connections, want at least 40", got-direct)
		}

		// The same path with SNAT: the pod sees node1, whose datapath
		// translates every reply.
		tl = c.requests(viaSNAT, 5, false, map[string]netip.Addr{"pod2a": n1.Addr})
		t.Logf("%s: %s", viaSNAT, tl)
		if got := counted(t, a1, loader.ReasonReplyRemote); got < replies+5*2 {
			t.Errorf("node1 translated %d replies of SNAT flows, want at least 10", got-replies)
		}
	})

	t.Run("udp", func(t *testing.T) {
		c := c.with(t)
		tl := c.requests(addrPort(n1.Addr, 30171), 10, true, map[string]netip.Addr{"pod2a": netns.ClientIP})
		t.Logf("udp: %s", tl)
	})

	t.Run("trace on both nodes", func(t *testing.T) {
		c := c.with(t)
		checkDSRTrace(t, c, a1, a2, viaDSR, netip.AddrPortFrom(pod2a.Addr, harness.PodHTTPPort), decapReason)
	})

	t.Run("large transfers learn the smaller path MTU", func(t *testing.T) {
		c := c.with(t)
		const size = 8 << 20
		upload := randomBytes(t, size)
		want := harness.Reply{Pod: "pod2a", Client: netns.ClientIP}
		if r, err := harness.HTTPDownload(c.ctx, c.client(), viaDSR, size); err != nil || r != want {
			t.Fatalf("download: %v, answered by %v, want %v", err, r, want)
		}
		tooBig := counted(t, a1, loader.ReasonICMPFragNeeded)
		if r, err := harness.HTTPUpload(c.ctx, c.client(), viaDSR, upload); err != nil || r != want {
			t.Fatalf("upload: %v, answered by %v, want %v", err, r, want)
		}
		// Full-size segments do not fit with the encapsulation: the client
		// was told, and sent smaller ones.
		if counted(t, a1, loader.ReasonICMPFragNeeded) == tooBig {
			t.Errorf("the upload's full-size segments never got fragmentation needed")
		}
	})

	t.Run("a flow moved to another node keeps its backend", func(t *testing.T) {
		c := c.with(t)
		vip := netip.AddrPortFrom(dsrIP, 80)
		c.waitServed(vip, 5*settle)
		// Two kept-alive connections on each pod: pod1a's are local to
		// node1 and will go encapsulated from node2; pod2a's go
		// encapsulated from node1 and will be local to node2.
		var conns []*harness.HTTPConn
		var pods []string
		for _, p := range []string{"pod1a", "pod1a", "pod2a", "pod2a"} {
			conns = append(conns, c.connTo(vip, p))
			pods = append(pods, p)
		}
		t.Cleanup(func() {
			for _, hc := range conns {
				hc.Close()
			}
		})
		forwarded := func() uint64 {
			return counted(t, a2, loader.ReasonFwdLocal) + counted(t, a2, loader.ReasonFwdLocalPeer) + counted(t, a2, loader.ReasonFwdDSR)
		}
		before := forwarded()
		tp.Client.MustIP("route", "replace", netns.ServiceNet.String(), "via", n2.Addr.String())
		for i, hc := range conns {
			r, err := hc.Get(c.ctx)
			if err != nil {
				t.Errorf("connection %d (on %s) after the move: %v", i, pods[i], err)
				continue
			}
			if r.Pod != pods[i] || r.Client != netns.ClientIP {
				t.Errorf("connection %d moved from %s to %v", i, pods[i], r)
			}
		}
		if after := forwarded(); after < before+uint64(len(conns)) {
			t.Errorf("node2 forwarded %d packets, want the moved connections' requests", after-before)
		}
	})
}

// checkDSRTrace traces DSR flows to backend through frontend on node1
// (ingress) and node2 (the backend's), and checks what each says: node1
// encapsulates the client's packets DNAT'd with the client's address kept;
// node2 decapsulates them and sends replies from the frontend.
func checkDSRTrace(t *testing.T, c *cluster, ingress, backendNode *harness.Agent, frontend, backend netip.AddrPort, decapReason loader.Reason) {
	t.Helper()
	port := frontend.Port()
	var fwd int
	for _, r := range parseTrace(t, runTrace(t, c, ingress, frontend, "--output", "json", "--port", strconv.Itoa(int(port)), "--count", "10")) {
		switch r.Reason {
		case loader.ReasonFwdDSR.String():
			fwd++
			if r.Xlated == nil || r.Xlated.Dst != backend.String() || !strings.HasPrefix(r.Xlated.Src, netns.ClientIP.String()+":") {
				t.Errorf("DSR forward translated to %+v, want %s:* > %s", r.Xlated, netns.ClientIP, backend)
			}
		case loader.ReasonReplyRemote.String():
			t.Errorf("node1 traced a reply: %+v", r)
		}
	}
	var decap, reply int
	for _, r := range parseTrace(t, runTrace(t, c, backendNode, frontend, "--output", "json", "--port", strconv.Itoa(int(port)), "--count", "10")) {
		switch r.Reason {
		case decapReason.String():
			decap++
			if r.Orig.Dst != frontend.String() || r.Xlated == nil || r.Xlated.Dst != backend.String() {
				t.Errorf("decapsulated %+v -> %+v, want the flow to %s delivered to %s", r.Orig, r.Xlated, frontend, backend)
			}
		case loader.ReasonReplyDSR.String():
			reply++
			if r.Xlated == nil || r.Xlated.Src != frontend.String() || !strings.HasPrefix(r.Xlated.Dst, netns.ClientIP.String()+":") {
				t.Errorf("DSR reply translated to %+v, want %s > %s:*", r.Xlated, frontend, netns.ClientIP)
			}
		}
	}
	if fwd == 0 || decap == 0 || reply == 0 {
		t.Errorf("traced %d %s on node1, %d %s and %d %s on node2: want each", fwd, loader.ReasonFwdDSR, decap, decapReason, reply, loader.ReasonReplyDSR)
	}
}
