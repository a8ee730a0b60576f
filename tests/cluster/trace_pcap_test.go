package cluster

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nodegress/nodegress/loader/pcapng"
	"github.com/nodegress/nodegress/tests/harness"
)

// checkNodePortCapture runs two `kubectl nodegress trace --node NODE --pcap
// - --port P` on the first node at once, one for each NodePort of the
// trace target, while a client connects to both. Each stream is pcapng
// that loader/pcapng reads; each holds its port's SYN as the node received
// it and, right after, as the datapath sent it on, translated to the pod,
// both commented with the Service's port; neither holds a packet of the
// other port, which the other capture shows went through the same node.
func checkNodePortCapture(t *testing.T, c *cluster, plugin, podIP string) {
	t.Helper()
	node, nodeIP := c.nodes[0], netip.MustParseAddr(c.nodeIPs[0])
	pod := netip.MustParseAddr(podIP)
	type port struct {
		name              string
		frontend, backend netip.AddrPort
		answered          bool // whether the pod serves the port
		capture           *pluginTrace[pcapng.Packet]
	}
	ports := []*port{
		{name: "open", frontend: netip.AddrPortFrom(nodeIP, openNodePort), backend: netip.AddrPortFrom(pod, 8080), answered: true},
		{name: "closed", frontend: netip.AddrPortFrom(nodeIP, closedNodePort), backend: netip.AddrPortFrom(pod, closedPodPort)},
	}
	for _, p := range ports {
		p.capture = startPluginCapture(t, c, plugin, "--node", node, "--port", strconv.Itoa(int(p.frontend.Port())), "--duration", "5m")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	for _, p := range ports {
		_, err := p.capture.waitFor(ctx, func() {
			out, err := curlHostname(c, p.frontend.String())
			if answered := err == nil && strings.HasPrefix(out, "target"); answered != p.answered {
				t.Errorf("%s answered %v (%q, %v), want %v", p.frontend, answered, out, err, p.answered)
			}
		}, func(pkt pcapng.Packet) bool {
			seg, ok := harness.ParseTCP(pkt.Data)
			return ok && seg.IsSYN() && seg.Dst == p.backend && strings.HasSuffix(pkt.Comment, "(as sent)")
		})
		if err != nil {
			c.dump(t)
			t.Fatalf("no SYN to %s in the capture of port %d: %v\nplugin stderr:\n%s", p.backend, p.frontend.Port(), err, p.capture.stderr())
		}
	}
	for _, p := range ports {
		p.capture.stop(t)
	}

	for i, p := range ports {
		other := ports[1-i]
		pkts := p.capture.all()
		if failed := checkCapturedSYN(t, pkts, p.frontend, p.backend, "svc="+traceNS+"/target:"+p.name); failed {
			for j, pkt := range pkts {
				t.Logf("capture of port %d, packet %d: %d of %d bytes, %s", p.frontend.Port(), j, len(pkt.Data), pkt.OrigLen, pkt.Comment)
			}
		}
		for _, pkt := range pkts {
			seg, _ := harness.ParseTCP(pkt.Data)
			for _, ap := range []netip.AddrPort{seg.Src, seg.Dst} {
				if ap == other.frontend || ap == other.backend {
					t.Errorf("capture of port %d holds a packet of port %d: %s", p.frontend.Port(), other.frontend.Port(), pkt.Comment)
				}
			}
		}
		t.Logf("capture of port %d: %d packets; plugin stderr: %q", p.frontend.Port(), len(pkts), p.capture.stderr())
	}
}

// checkCapturedSYN finds the first SYN to frontend as received in pkts and
// checks that the next packet is that SYN translated to backend, as sent,
// both comments naming svc; it reports whether it failed.
func checkCapturedSYN(t *testing.T, pkts []pcapng.Packet, frontend, backend netip.AddrPort, svc string) bool {
	t.Helper()
	for i, pkt := range pkts {
		seg, ok := harness.ParseTCP(pkt.Data)
		if !ok || !seg.IsSYN() || seg.Dst != frontend || !strings.HasSuffix(pkt.Comment, "(as received)") {
			continue
		}
		var problems []string
		if !strings.Contains(pkt.Comment, svc) || !strings.Contains(pkt.Comment, "-> ") || !strings.Contains(pkt.Comment, backend.String()) {
			problems = append(problems, fmt.Sprintf("SYN's comment %q: want %s and the translation to %s", pkt.Comment, svc, backend))
		}
		if i+1 == len(pkts) {
			problems = append(problems, fmt.Sprintf("SYN to %s is the last packet: want its translation to %s after it", frontend, backend))
		} else {
			next := pkts[i+1]
			out, ok := harness.ParseTCP(next.Data)
			if !ok || !out.IsSYN() || out.Dst != backend || out.Src != seg.Src ||
				!strings.HasSuffix(next.Comment, "(as sent)") || !strings.Contains(next.Comment, svc) {
				problems = append(problems, fmt.Sprintf("packet after the SYN to %s: %+v %q, want the SYN from %s to %s, as sent, with %s",
					frontend, out, next.Comment, seg.Src, backend, svc))
			}
		}
		for _, p := range problems {
			t.Error(p)
		}
		if len(problems) == 0 {
			t.Logf("%s\n  %s", pkt.Comment, pkts[i+1].Comment)
		}
		return len(problems) > 0
	}
	t.Errorf("no SYN to %s as received in %d packets", frontend, len(pkts))
	return true
}
