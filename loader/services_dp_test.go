package loader

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Service fields the datapath enforces, programmed through Apply and run
// through xdp_lb and tc_ingress.

var bothHooks = []hook{hookXDP, hookTCIngress}

func localBackends(addrs ...string) []Backend {
	out := make([]Backend, 0, len(addrs))
	for _, a := range addrs {
		ap := netip.MustParseAddrPort(a)
		out = append(out, Backend{Addr: ap.Addr(), Port: ap.Port(), Local: true})
	}
	return out
}

func fe(s string) Frontend {
	ap := netip.MustParseAddrPort(s)
	return Frontend{Addr: ap.Addr(), Port: ap.Port()}
}

// TestSourceRanges: a LoadBalancer frontend with source ranges takes new
// flows only from clients in them; the same service's NodePort, and a
// restricted frontend of a service without ranges, take everyone; one
// service's ranges never open another's frontend.
func TestSourceRanges(t *testing.T) {
	h := newHarness(t)
	lb := fe("203.0.113.10:80")
	lb.Restricted = true
	other := fe("203.0.113.11:80")
	other.Restricted = true
	open := fe("203.0.113.12:80")
	open.Restricted = true
	h.apply(
		Service{Name: "ns/restricted:http/TCP", Proto: TCP, Frontends: []Frontend{lb, fe("10.0.0.1:30080")},
			SourceRanges: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.7/32")},
			Backends:     localBackends("10.244.0.5:8080")},
		Service{Name: "ns/other:http/TCP", Proto: TCP, Frontends: []Frontend{other},
			SourceRanges: []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10")},
			Backends:     localBackends("10.244.0.6:8080")},
		Service{Name: "ns/open:http/TCP", Proto: TCP, Frontends: []Frontend{open},
			Backends: localBackends("10.244.0.7:8080")},
	)
	cases := []struct {
		name, client, frontend string
		reason                 Reason
	}{
		{"client in a range", "192.0.2.99:40000", "203.0.113.10:80", ReasonFwdLocal},
		{"client equal to a /32 range", "198.51.100.7:40001", "203.0.113.10:80", ReasonFwdLocal},
		{"client next to the /32 range", "198.51.100.8:40002", "203.0.113.10:80", ReasonDropSourceRange},
		{"client outside every range", "100.64.1.1:40003", "203.0.113.10:80", ReasonDropSourceRange},
		{"same client, the service's nodeport", "100.64.1.1:40004", "10.0.0.1:30080", ReasonFwdLocal},
		{"another service's range", "192.0.2.99:40005", "203.0.113.11:80", ReasonDropSourceRange},
		{"that service's own range", "100.64.1.1:40006", "203.0.113.11:80", ReasonFwdLocal},
		{"restricted frontend, no ranges", "100.64.1.1:40007", "203.0.113.12:80", ReasonFwdLocal},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h.t = t
			for _, k := range bothHooks {
				syn := tcpFrame(c.client, c.frontend, tcpSYN)
				syn.src = netip.AddrPortFrom(syn.src.Addr(), syn.src.Port()+uint16(k))
				verdict := VerdictPass
				if c.reason.IsDrop() {
					verdict = VerdictDrop
				}
				h.expect(k, syn.bytes(t), verdict, c.reason)
			}
		})
	}
}

// TestRejectNoBackend: a new flow to a service without an active backend
// gets an ICMP port unreachable from the frontend, built in tc (XDP passes
// it on); with NoBackendDrop it is dropped instead.
func TestRejectNoBackend(t *testing.T) {
	h := newHarness(t)
	h.apply(
		Service{Name: "ns/empty:http/TCP", Proto: TCP, Frontends: []Frontend{fe("10.0.0.1:30080")}},
		Service{Name: "ns/empty:dns/UDP", Proto: UDP, Frontends: []Frontend{fe("10.0.0.1:30053")}},
		Service{Name: "ns/local:http/TCP", Proto: TCP, Frontends: []Frontend{fe("10.0.0.1:30081")}, NoBackendDrop: true},
	)
	for _, f := range []frame{
		tcpFrame("192.0.2.10:40000", "10.0.0.1:30080", tcpSYN),
		udpFrame("192.0.2.10:40001", "10.0.0.1:30053"),
	} {
		in := f.bytes(t)
		res := h.expect(hookXDP, in, VerdictPass, ReasonPassReject)
		if !bytes.Equal(res.pkt, in) || res.done() {
			t.Errorf("%v: xdp changed the packet or marked it done", f.proto)
		}
		res = h.expect(hookTCIngress, in, VerdictRedirect, ReasonRejectNoBackend)
		checkPortUnreachable(t, in, res.pkt)
	}
	drop := tcpFrame("192.0.2.10:40002", "10.0.0.1:30081", tcpSYN)
	for _, k := range bothHooks {
		h.expect(k, drop.bytes(t), VerdictDrop, ReasonDropNoBackend)
	}
}

// checkPortUnreachable checks that out is the ICMP port unreachable a host
// would send for in: addresses and MACs swapped, valid checksums, the
// offending IP header and 8 bytes quoted.
func checkPortUnreachable(t *testing.T, in, out []byte) {
	t.Helper()
	p := gopacket.NewPacket(out, layers.LayerTypeEthernet, gopacket.Default)
	eth, _ := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	icmp, _ := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if eth == nil || ip == nil || icmp == nil {
		t.Fatalf("not an ICMP packet: %v", p)
	}
	orig := gopacket.NewPacket(in, layers.LayerTypeEthernet, gopacket.Default)
	oeth := orig.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	oip := orig.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if !bytes.Equal(eth.DstMAC, oeth.SrcMAC) || !bytes.Equal(eth.SrcMAC, oeth.DstMAC) {
		t.Errorf("MACs %v -> %v, want %v -> %v", eth.SrcMAC, eth.DstMAC, oeth.DstMAC, oeth.SrcMAC)
	}
	if !ip.SrcIP.Equal(oip.DstIP) || !ip.DstIP.Equal(oip.SrcIP) || ip.Protocol != layers.IPProtocolICMPv4 || ip.TTL != 64 {
		t.Errorf("IP %v -> %v proto %v ttl %d", ip.SrcIP, ip.DstIP, ip.Protocol, ip.TTL)
	}
	if int(ip.Length) != len(out)-ethLen || len(out) != ethLen+20+8+20+8 {
		t.Errorf("IP length %d, frame %d bytes", ip.Length, len(out))
	}
	if icmp.TypeCode != layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodePort) {
		t.Errorf("ICMP %v, want port unreachable", icmp.TypeCode)
	}
	if c := inetChecksum(0, out[ethLen:ethLen+20]); c != 0 {
		t.Errorf("IP checksum off by %#x", c)
	}
	if c := inetChecksum(0, out[ethLen+20:]); c != 0 {
		t.Errorf("ICMP checksum off by %#x", c)
	}
	if want := in[ethLen : ethLen+28]; !bytes.Equal(out[ethLen+28:], want) {
		t.Errorf("quoted % x, want % x", out[ethLen+28:], want)
	}
}

// TestAffinity: with ClientIP affinity every new flow of a client goes to
// one backend, per service, until the timeout after its last new flow or
// until that backend leaves the service.
func TestAffinity(t *testing.T) {
	h := newHarness(t)
	backends := localBackends("10.244.0.1:80", "10.244.0.2:80", "10.244.0.3:80", "10.244.0.4:80")
	sticky := Service{Name: "ns/sticky:http/TCP", Proto: TCP, Frontends: []Frontend{fe("10.0.0.1:30080")},
		Backends: backends, AffinityTimeout: 10 * time.Second}
	plain := Service{Name: "ns/plain:http/TCP", Proto: TCP, Frontends: []Frontend{fe("10.0.0.1:30081")}, Backends: backends}
	h.apply(sticky, plain)

	backendOf := func(client, frontend string) netip.AddrPort {
		t.Helper()
		f := tcpFrame(client, frontend, tcpSYN)
		res := h.expect(hookTCIngress, f.bytes(t), VerdictPass, ReasonFwdLocal)
		return decode(t, res.pkt).dst()
	}
	// Every call uses fresh client ports: a port reused while its flow
	// lives keeps that flow's backend.
	nextPort := uint16(41000)
	spread := func(frontend string) map[netip.AddrPort]int {
		got := map[netip.AddrPort]int{}
		for range 32 {
			nextPort++
			got[backendOf(netip.AddrPortFrom(netip.MustParseAddr("192.0.2.10"), nextPort).String(), frontend)]++
		}
		return got
	}
	// Without affinity a client's flows spread: the positive control.
	if got := spread("10.0.0.1:30081"); len(got) < 2 {
		t.Fatalf("without affinity 32 flows reached %v", got)
	}
	got := spread("10.0.0.1:30080")
	if len(got) != 1 {
		t.Fatalf("with affinity 32 flows reached %v", got)
	}
	var first netip.AddrPort
	for b := range got {
		first = b
	}
	// Another client has its own entry.
	if n := len(spreadOf(t, h, "10.0.0.1:30080", "192.0.2.11", backendOf)); n != 1 {
		t.Errorf("second client reached %d backends", n)
	}

	// The backend leaves the service: the client moves, and stays.
	var rest []Backend
	for _, b := range backends {
		if netip.AddrPortFrom(b.Addr, b.Port) != first {
			rest = append(rest, b)
		}
	}
	sticky.Backends = rest
	h.apply(sticky, plain)
	got = spread("10.0.0.1:30080")
	if len(got) != 1 || got[first] != 0 {
		t.Fatalf("after %v left, flows reached %v", first, got)
	}

	// Expired: the entry is older than the timeout, the next flow picks by
	// hash and records that.
	key := datapathAffinityKey{SvcId: h.dp.ids.services[sticky.Name], Client: addrToBE(netip.MustParseAddr("192.0.2.10"))}
	var v datapathAffinityValue
	if err := h.objs.Affinity.Lookup(key, &v); err != nil {
		t.Fatal(err)
	}
	v.LastUsedNs -= uint64(11 * time.Second)
	stale := v.LastUsedNs
	if err := h.objs.Affinity.Update(key, v, 0); err != nil {
		t.Fatal(err)
	}
	b := backendOf("192.0.2.10:42000", "10.0.0.1:30080")
	if err := h.objs.Affinity.Lookup(key, &v); err != nil {
		t.Fatal(err)
	}
	if v.LastUsedNs <= stale || h.dp.BackendName(v.BackendId) != b.String() {
		t.Errorf("after expiry the entry is %+v (%s), want refreshed for %v", v, h.dp.BackendName(v.BackendId), b)
	}
	// The moved client's new backend is its affinity now.
	if got := spread("10.0.0.1:30080"); len(got) != 1 || got[b] == 0 {
		t.Errorf("after expiry flows reached %v, want only %v", got, b)
	}
}

func spreadOf(t *testing.T, h *harness, frontend, client string, backendOf func(client, frontend string) netip.AddrPort) map[netip.AddrPort]int {
	got := map[netip.AddrPort]int{}
	for port := range 16 {
		got[backendOf(netip.AddrPortFrom(netip.MustParseAddr(client), uint16(43000+port)).String(), frontend)]++
	}
	return got
}
