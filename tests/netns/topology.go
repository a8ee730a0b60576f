package netns

import (
	"fmt"
	"net/netip"
	"testing"
)

// Address plan. Everything lives inside namespaces the test created, so
// these ranges never meet a real network.
var (
	// WireNet is the L2 segment between the client and the nodes.
	WireNet = netip.MustParsePrefix("10.100.0.0/24")
	// ClientIP is the client's address on the wire.
	ClientIP = netip.MustParseAddr("10.100.0.10")
	// ServiceNet holds ExternalIPs and LoadBalancer IPs; the client routes
	// it via node1, as an upstream router would route a cloud LB's address.
	ServiceNet = netip.MustParsePrefix("10.96.0.0/16")
	// PodGateway is the link-local next hop every pod's default route
	// points at; the pod resolves it to its host-side veth with a permanent
	// neighbour entry, so host-side veths need no address.
	PodGateway = netip.MustParseAddr("169.254.1.1")
)

const (
	// ExtDev is the name of every node's external (wire-facing) device.
	ExtDev = "ext0"
	// PodDev is the name of the device inside every pod and the client.
	PodDev = "eth0"
	// SwitchBridge is the bridge in the switch namespace of Nodes.
	SwitchBridge = "br0"
)

// NodeIP returns the wire address of node i (1-based): 10.100.0.i.
func NodeIP(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 100, 0, byte(i)}) }

// PodCIDR returns the pod range of node i (1-based): 10.244.i.0/24.
func PodCIDR(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i), 0}), 24)
}

// Host is an end host (the client) with one device on the wire.
type Host struct {
	*NS
	Addr netip.Addr
	Dev  string
}

// Node is a cluster node: IP forwarding on, ExtDev on the wire, pods behind
// host-side veths.
type Node struct {
	*NS
	// Name is the Kubernetes node name (node1, node2); it shadows the
	// namespace's name, which is NS.Name.
	Name    string
	Index   int
	Addr    netip.Addr
	Dev     string
	PodCIDR netip.Prefix
	Pods    []*Pod
}

// Pod is a pod namespace on a node, its eth0 addressed with a /32.
type Pod struct {
	*NS
	// Name is the pod's name (pod1a, pod1b, pod2a, ...); it shadows the
	// namespace's name, which is NS.Name.
	Name string
	Addr netip.Addr
	Node *Node
	// HostDev is the pod's veth on the node's side.
	HostDev string
}

// Checksums says how the topology's veths hand packets on.
type Checksums int

const (
	// OffloadChecksums leaves every veth's checksum offload as the kernel
	// sets it, as kind and container networks do: packets the client, the
	// pods and the switch send cross as CHECKSUM_PARTIAL skbs, whose L4
	// checksum field holds only the pseudo-header sum.
	OffloadChecksums Checksums = iota
	// FullChecksums turns TX checksum offload off on every veth that sends
	// into a node (client, switch ports, pods), so that frames carry the
	// complete checksums a real NIC puts on the wire. Only for tests about
	// XDP translating frames itself.
	FullChecksums
)

// Topology is a client and nodes on one L2 segment.
type Topology struct {
	// Suffix is shared by every namespace of the topology.
	Suffix    string
	Checksums Checksums
	Client    *Host
	// Switch is the namespace holding the bridge; nil in SingleNode.
	Switch *NS
	Nodes  []*Node
}

// Pods returns every pod of every node.
func (tp *Topology) Pods() []*Pod {
	var ps []*Pod
	for _, n := range tp.Nodes {
		ps = append(ps, n.Pods...)
	}
	return ps
}

// Pod returns the pod called name.
func (tp *Topology) Pod(name string) *Pod {
	for _, p := range tp.Pods() {
		if p.Name == name {
			return p
		}
	}
	panic("no pod " + name)
}

// SingleNode builds client <-veth-> node1 with pods pods on node1:
//
//	client eth0 10.100.0.10 ---- ext0 10.100.0.1 node1 ---- vpod1a -- eth0 pod1a 10.244.1.10
//	                                                   \--- vpod1b -- eth0 pod1b 10.244.1.11
//
// The client routes ServiceNet via node1.
func SingleNode(t testing.TB, pods int) *Topology {
	t.Helper()
	RequirePrivileged(t)
	tp := &Topology{Suffix: RandomSuffix(5)}
	tp.Client = &Host{NS: New(t, tp.name("client")), Addr: ClientIP, Dev: PodDev}
	node := tp.newNode(t, 1)

	// The node's ext0 and the client's eth0 are the two ends of the wire.
	node.MustIP("link", "add", "name", ExtDev, "type", "veth", "peer", "name", PodDev, "netns", tp.Client.Name)
	tp.Client.wire(t, tp)
	node.wire(t)
	// The client's eth0 is the peer of ext0: it receives what the node's
	// XDP program sends with XDP_TX/redirect.
	tp.Client.AttachXDPPass(PodDev)
	tp.Client.MustIP("route", "add", ServiceNet.String(), "via", node.Addr.String())

	for i := range pods {
		node.addPod(t, tp, i)
	}
	return tp
}

// TwoNodes builds a client, node1 and node2 on one bridge in a switch
// namespace, like a cluster network; node1 has pods1 pods and node2 pods2.
// It is Nodes(t, pods1, pods2).
func TwoNodes(t testing.TB, pods1, pods2 int) *Topology {
	t.Helper()
	return Nodes(t, pods1, pods2)
}

// Nodes builds a client and one node per entry of pods (node1, node2, ...,
// node i having pods[i-1] pods) on one bridge in a switch namespace, like a
// cluster network. Each node routes every other node's pod range via that
// node's wire address; the client routes ServiceNet via node1. The switch
// namespace has no address of its own: a test needing a host every node
// reaches on the wire (a control plane) may give br0 one in WireNet.
//
//	client eth0 ---- sw-client \
//	node1  ext0 ---- sw-node1  -- br0 (switch)
//	node2  ext0 ---- sw-node2  /
//	...
func Nodes(t testing.TB, pods ...int) *Topology {
	t.Helper()
	return NodesWith(t, OffloadChecksums, pods...)
}

// NodesWith is Nodes with the given checksum handling.
func NodesWith(t testing.TB, cs Checksums, pods ...int) *Topology {
	t.Helper()
	RequirePrivileged(t)
	// A tenth node would take ClientIP.
	if len(pods) < 2 || len(pods) > 9 {
		t.Fatalf("netns.Nodes: %d nodes, want 2 to 9", len(pods))
	}
	tp := &Topology{Suffix: RandomSuffix(5), Checksums: cs}
	tp.Switch = New(t, tp.name("sw"))
	tp.Client = &Host{NS: New(t, tp.name("client")), Addr: ClientIP, Dev: PodDev}
	for i := range pods {
		tp.newNode(t, i+1)
	}

	sw := tp.Switch
	sw.MustIP("link", "add", "name", SwitchBridge, "type", "bridge")
	sw.MustIP("link", "set", SwitchBridge, "up")

	port := func(name string, peer *NS, peerDev string) {
		sw.MustIP("link", "add", "name", name, "type", "veth", "peer", "name", peerDev, "netns", peer.Name)
		sw.MustIP("link", "set", name, "master", SwitchBridge)
		sw.MustIP("link", "set", name, "up")
		// The bridge forwards the skbs it gets: with offload on, a
		// CHECKSUM_PARTIAL skb from a peer reaches the node unfinished.
		tp.fullChecksums(t, sw, name)
	}
	port("sw-client", tp.Client.NS, PodDev)
	tp.Client.wire(t, tp)
	for _, n := range tp.Nodes {
		swDev := "sw-" + n.Name
		port(swDev, n.NS, ExtDev)
		n.wire(t)
		// The switch port is the peer of the node's ext0: it receives
		// what the node's XDP program sends with XDP_TX/redirect.
		sw.AttachXDPPass(swDev)
	}
	for _, n := range tp.Nodes {
		for _, other := range tp.Nodes {
			if other != n {
				n.MustIP("route", "add", other.PodCIDR.String(), "via", other.Addr.String())
			}
		}
	}
	tp.Client.MustIP("route", "add", ServiceNet.String(), "via", tp.Nodes[0].Addr.String())

	for i, n := range tp.Nodes {
		for j := range pods[i] {
			n.addPod(t, tp, j)
		}
	}
	return tp
}

func (tp *Topology) name(role string) string { return "ng" + tp.Suffix + "-" + role }

func (tp *Topology) newNode(t testing.TB, i int) *Node {
	t.Helper()
	name := fmt.Sprintf("node%d", i)
	n := &Node{
		NS:      New(t, tp.name(name)),
		Name:    name,
		Index:   i,
		Addr:    NodeIP(i),
		Dev:     ExtDev,
		PodCIDR: PodCIDR(i),
	}
	n.MustSysctl("net.ipv4.ip_forward", "1")
	tp.Nodes = append(tp.Nodes, n)
	return n
}

// fullChecksums turns TX checksum offload off on dev of ns when the topology
// asks for full checksums.
func (tp *Topology) fullChecksums(t testing.TB, ns *NS, dev string) {
	t.Helper()
	if tp.Checksums != FullChecksums {
		return
	}
	if err := ns.DisableTxChecksum(dev); err != nil {
		t.Fatal(err)
	}
}

// wire addresses and brings up the client's device once its veth exists. It
// transmits (directly or through the switch) into a node's ext0.
func (h *Host) wire(t testing.TB, tp *Topology) {
	t.Helper()
	h.MustIP("addr", "add", prefixOf(h.Addr, WireNet.Bits()), "dev", h.Dev)
	h.MustIP("link", "set", h.Dev, "up")
	tp.fullChecksums(t, h.NS, h.Dev)
}

// wire addresses the node's ext0 and brings it up. ext0 keeps its offloads,
// like a real NIC.
func (n *Node) wire(t testing.TB) {
	t.Helper()
	n.MustIP("addr", "add", prefixOf(n.Addr, WireNet.Bits()), "dev", n.Dev)
	n.MustIP("link", "set", n.Dev, "up")
}

// addPod creates pod number i of node n: pod<node><letter>.
func (n *Node) addPod(t testing.TB, tp *Topology, i int) {
	t.Helper()
	name := fmt.Sprintf("pod%d%c", n.Index, 'a'+i)
	cidr := n.PodCIDR.Addr().As4()
	cidr[3] = byte(10 + i)
	p := &Pod{
		NS:      New(t, tp.name(name)),
		Name:    name,
		Addr:    netip.AddrFrom4(cidr),
		Node:    n,
		HostDev: "v" + name,
	}
	n.MustIP("link", "add", "name", p.HostDev, "type", "veth", "peer", "name", PodDev, "netns", p.NS.Name)
	n.MustIP("link", "set", p.HostDev, "up")
	n.MustIP("route", "add", p.Addr.String()+"/32", "dev", p.HostDev)

	p.MustIP("addr", "add", p.Addr.String()+"/32", "dev", PodDev)
	p.MustIP("link", "set", PodDev, "up")
	mac, err := n.MAC(p.HostDev)
	if err != nil {
		t.Fatal(err)
	}
	p.MustIP("route", "add", PodGateway.String(), "dev", PodDev, "scope", "link")
	p.MustIP("route", "add", "default", "via", PodGateway.String(), "dev", PodDev)
	p.MustIP("neigh", "add", PodGateway.String(), "lladdr", mac.String(), "dev", PodDev, "nud", "permanent")
	// Pod replies cross the node and leave through ext0.
	tp.fullChecksums(t, p.NS, PodDev)
	n.Pods = append(n.Pods, p)
}

// AddPod adds a pod to node n of tp after the topology was built, as a
// pod scheduled later: the next letter.
func (tp *Topology) AddPod(t testing.TB, n *Node) *Pod {
	t.Helper()
	n.addPod(t, tp, len(n.Pods))
	return n.Pods[len(n.Pods)-1]
}

func prefixOf(a netip.Addr, bits int) string { return netip.PrefixFrom(a, bits).String() }
