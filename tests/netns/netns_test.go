package netns

import (
	"context"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// reach connects over TCP from one namespace to a listener on addr in
// another and exchanges a few bytes both ways.
func reach(t *testing.T, from, to *NS, addr netip.Addr) {
	t.Helper()
	l, err := to.Listen("tcp", netip.AddrPortFrom(addr, 7000).String())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := from.DialContext(ctx, "tcp", l.Addr().String())
	if err != nil {
		t.Fatalf("dial %s from %s: %v", l.Addr(), from.Name, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "ping" {
		t.Fatalf("echo from %s to %s: got %q, %v", from.Name, l.Addr(), got, err)
	}
}

func TestSingleNode(t *testing.T) {
	tp := SingleNode(t, 2)
	node := tp.Nodes[0]
	tests := []struct {
		name string
		from *NS
		to   *NS
		addr netip.Addr
	}{
		{"client to node", tp.Client.NS, node.NS, node.Addr},
		{"node to pod a", node.NS, tp.Pod("pod1a").NS, tp.Pod("pod1a").Addr},
		{"node to pod b", node.NS, tp.Pod("pod1b").NS, tp.Pod("pod1b").Addr},
		{"pod to node", tp.Pod("pod1a").NS, node.NS, node.Addr},
		{"pod to pod", tp.Pod("pod1a").NS, tp.Pod("pod1b").NS, tp.Pod("pod1b").Addr},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { reach(t, tt.from, tt.to, tt.addr) })
	}

	// As in kind: the kernel's default offloads stay on.
	t.Run("tx checksum offload on", func(t *testing.T) {
		for _, ns := range []*NS{tp.Client.NS, tp.Pod("pod1a").NS} {
			out := ns.MustExec("ethtool", "-k", PodDev)
			if !strings.Contains(out, "tx-checksumming: on") {
				t.Errorf("%s %s: tx checksumming not on:\n%s", ns.Name, PodDev, out)
			}
		}
	})

	t.Run("xdp stub on client", func(t *testing.T) {
		mode, err := tp.Client.XDPMode(PodDev)
		if err != nil {
			t.Fatal(err)
		}
		if mode != XDPAttachedNative {
			t.Errorf("client %s xdp mode = %d, want native (%d)", PodDev, mode, XDPAttachedNative)
		}
		for _, p := range tp.Pods() {
			if mode, err := p.XDPMode(PodDev); err != nil || mode != XDPAttachedNone {
				t.Errorf("pod %s xdp mode = %d (%v), want none", p.Name, mode, err)
			}
		}
	})
}

func TestTwoNodes(t *testing.T) {
	tp := TwoNodes(t, 1, 2)
	n1, n2 := tp.Nodes[0], tp.Nodes[1]
	tests := []struct {
		name string
		from *NS
		to   *NS
		addr netip.Addr
	}{
		{"client to node1", tp.Client.NS, n1.NS, n1.Addr},
		{"client to node2", tp.Client.NS, n2.NS, n2.Addr},
		{"node1 to remote pod", n1.NS, tp.Pod("pod2b").NS, tp.Pod("pod2b").Addr},
		{"node2 to remote pod", n2.NS, tp.Pod("pod1a").NS, tp.Pod("pod1a").Addr},
		{"pod to pod across nodes", tp.Pod("pod1a").NS, tp.Pod("pod2a").NS, tp.Pod("pod2a").Addr},
		{"remote pod to node1", tp.Pod("pod2a").NS, n1.NS, n1.Addr},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { reach(t, tt.from, tt.to, tt.addr) })
	}
	t.Run("xdp stubs on switch ports", func(t *testing.T) {
		for _, dev := range []string{"sw-node1", "sw-node2"} {
			if mode, err := tp.Switch.XDPMode(dev); err != nil || mode != XDPAttachedNative {
				t.Errorf("%s xdp mode = %d (%v), want native", dev, mode, err)
			}
		}
	})
}

// TestFullChecksums checks that FullChecksums turns TX checksum offload off
// on every veth that sends into a node, and only there: nodes keep theirs.
func TestFullChecksums(t *testing.T) {
	tp := NodesWith(t, FullChecksums, 1, 1)
	offloads := func(ns *NS, dev string) string {
		out := ns.MustExec("ethtool", "-k", dev)
		if strings.Contains(out, "tx-checksumming: on") {
			return "on"
		}
		return "off"
	}
	for _, c := range []struct {
		ns   *NS
		dev  string
		want string
	}{
		{tp.Client.NS, PodDev, "off"},
		{tp.Pod("pod1a").NS, PodDev, "off"},
		{tp.Pod("pod2a").NS, PodDev, "off"},
		{tp.Switch, "sw-node1", "off"},
		{tp.Switch, "sw-client", "off"},
		{tp.Nodes[0].NS, ExtDev, "on"},
	} {
		if got := offloads(c.ns, c.dev); got != c.want {
			t.Errorf("%s %s: tx checksumming %s, want %s", c.ns.Name, c.dev, got, c.want)
		}
	}
	reach(t, tp.Client.NS, tp.Nodes[1].NS, tp.Nodes[1].Addr)
	reach(t, tp.Pod("pod1a").NS, tp.Pod("pod2a").NS, tp.Pod("pod2a").Addr)
}

func TestThreeNodes(t *testing.T) {
	tp := Nodes(t, 1, 0, 1)
	n2, n3 := tp.Nodes[1], tp.Nodes[2]
	tests := []struct {
		name string
		from *NS
		to   *NS
		addr netip.Addr
	}{
		{"client to node3", tp.Client.NS, n3.NS, n3.Addr},
		{"node2 to node3", n2.NS, n3.NS, n3.Addr},
		{"node2 to pod on node3", n2.NS, tp.Pod("pod3a").NS, tp.Pod("pod3a").Addr},
		{"pod on node1 to pod on node3", tp.Pod("pod1a").NS, tp.Pod("pod3a").NS, tp.Pod("pod3a").Addr},
		{"pod on node3 to node2", tp.Pod("pod3a").NS, n2.NS, n2.Addr},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { reach(t, tt.from, tt.to, tt.addr) })
	}
}

// TestCleanupRemovesNamespaces checks that nothing a topology creates
// outlives its test.
func TestCleanupRemovesNamespaces(t *testing.T) {
	var names []string
	t.Run("build", func(t *testing.T) {
		tp := TwoNodes(t, 1, 1)
		for _, ns := range []*NS{tp.Switch, tp.Client.NS, tp.Nodes[0].NS, tp.Nodes[1].NS, tp.Pods()[0].NS} {
			names = append(names, ns.Name)
		}
	})
	for _, name := range names {
		if _, err := (&NS{Name: name}).Link("lo"); err == nil {
			t.Errorf("netns %s still exists after its test", name)
		}
	}
}
