package loader

import (
	"fmt"
	"net/netip"
	"time"
)

// Proto is an IP protocol number as the datapath keys frontends by it.
type Proto uint8

// Protocols the datapath forwards.
const (
	TCP Proto = 6
	UDP Proto = 17
)

func (p Proto) String() string {
	switch p {
	case TCP:
		return "TCP"
	case UDP:
		return "UDP"
	default:
		return fmt.Sprintf("proto(%d)", uint8(p))
	}
}

// Frontend is one address and port clients send a service's traffic to:
// a node IP with a NodePort, an ExternalIP or a LoadBalancer IP with the
// service port.
type Frontend struct {
	Addr netip.Addr
	Port uint16
	// Restricted frontends accept new flows only from the service's
	// SourceRanges (a LoadBalancer's IPs with loadBalancerSourceRanges).
	Restricted bool
}

func (f Frontend) String() string { return netip.AddrPortFrom(f.Addr, f.Port).String() }

// Backend is one endpoint (pod address and target port) behind a service.
type Backend struct {
	Addr netip.Addr
	Port uint16
	// Local is true when the endpoint runs on this node: the datapath only
	// DNATs and hands the packet to the kernel; remote ones are SNAT'd and
	// sent back out.
	Local bool
	// Terminating endpoints keep their established flows but get no new ones.
	Terminating bool
}

func (b Backend) String() string { return netip.AddrPortFrom(b.Addr, b.Port).String() }

// Service is one service port as the datapath sees it: every frontend that
// reaches it and the backends behind it.
type Service struct {
	// Name identifies the service port across updates, for example
	// "default/web:http/TCP". It appears in traces and metrics.
	Name      string
	Proto     Proto
	Frontends []Frontend
	Backends  []Backend
	// L7 frontends are left to the local proxy (XDP_PASS) instead of being
	// forwarded to Backends: connections to them are steered to the proxy
	// listener registered under ProxyListener.
	L7            bool
	ProxyListener string
	// Internal services serve in-cluster clients through the socket-level
	// load balancer (Config.SocketLB): their frontends (ClusterIPs, and
	// the node's other frontends) are looked up by sockets, not packets,
	// and do not clash with external services' frontends.
	Internal bool
	// SourceRanges are the client prefixes Restricted frontends accept;
	// empty means every client.
	SourceRanges []netip.Prefix
	// AffinityTimeout, when positive, keeps ClientIP session affinity: a
	// client's new flows go to the backend of its last new flow if that
	// was less than AffinityTimeout ago and the backend is still active.
	AffinityTimeout time.Duration
	// Maglev picks backends through a Maglev table instead of a per-node
	// hash: every node picks the same backend for a flow, and a backend
	// change moves about 1/N of the flows.
	Maglev bool
	// DSR reaches remote backends by direct server return: a client's
	// packets go to the backend's node encapsulated (GENEVE), and that
	// node's datapath sends the replies to the client itself, from the
	// frontend. Backends behind a route without a gateway (on this node's
	// link) are SNAT'd all the same. Socket frontends (Internal) ignore it.
	DSR bool
	// NoBackendDrop drops new flows while no backend is active instead of
	// rejecting them (ICMP port unreachable): for a Local traffic policy
	// on a node without local endpoints, as kube-proxy does.
	NoBackendDrop bool
}
