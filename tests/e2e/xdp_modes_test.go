package e2e

import (
	"net/netip"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/nodegress/nodegress/loader"
	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/netns"
)

// TestXDPModes forwards to local and remote backends, TCP and UDP, small and
// large, with each way the datapath can sit on a veth device:
//   - auto (the default): tc only, since a veth may receive frames whose
//     checksum is unfinished (CHECKSUM_PARTIAL);
//   - native XDP forced, peers with the kernel's default offloads: XDP hands
//     the frames it cannot verify to tc, so nothing breaks;
//   - native XDP forced, peers sending full checksums: XDP translates and
//     sends remote flows itself.
//
// Before XDP verified checksums on virtual devices, the second case (and
// auto, which attached XDP) lost every remote flow.
func TestXDPModes(t *testing.T) {
	for _, tc := range []struct {
		name      string
		mode      string
		checksums netns.Checksums
		wantXDP   uint32
		// wantStage translates remote flows.
		wantStage loader.Stage
		// wantPartial: XDP must have handed frames to tc.
		wantPartial bool
	}{
		{"auto", "", netns.OffloadChecksums, netns.XDPAttachedNone, loader.StageTCIngress, false},
		{"native with offloaded checksums", "native", netns.OffloadChecksums, netns.XDPAttachedNative, loader.StageTCIngress, true},
		{"native with full checksums", "native", netns.FullChecksums, netns.XDPAttachedNative, loader.StageXDP, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := netns.NodesWith(t, tc.checksums, 1, 1)
			pod1a, pod2a := tp.Pod("pod1a"), tp.Pod("pod2a")
			c := newClusterWith(t, tp, harness.AgentConfig{XDPMode: tc.mode}, []int{1, 2},
				harness.Service{Name: "local", Ports: []harness.Port{http80(30180)}, Endpoints: harness.Endpoints(pod1a)},
				harness.Service{Name: "remote", Ports: []harness.Port{http80(30181)}, Endpoints: harness.Endpoints(pod2a)},
				harness.Service{Name: "remote-udp", Ports: []harness.Port{{Name: "echo", Protocol: "UDP", Port: 9090, TargetPort: harness.PodUDPPort, NodePort: 30182}}, Endpoints: harness.Endpoints(pod2a)},
			)
			n1 := c.node(1)
			for _, n := range tp.Nodes {
				if mode, err := n.XDPMode(n.Dev); err != nil || mode != tc.wantXDP {
					out, _ := n.IP("-d", "link", "show", "dev", n.Dev)
					t.Errorf("%s %s: xdp mode %d (%v), want %d\n%s", n.Name, n.Dev, mode, err, tc.wantXDP, out)
				}
			}
			local, remote, udp := addrPort(n1.Addr, 30180), addrPort(n1.Addr, 30181), addrPort(n1.Addr, 30182)

			t.Run("tcp", func(t *testing.T) {
				c := c.with(t)
				c.waitServed(local, 5*settle)
				c.waitServed(remote, 5*settle)
				c.requests(local, 10, false, map[string]netip.Addr{"pod1a": netns.ClientIP})
				c.requests(remote, 10, false, map[string]netip.Addr{"pod2a": n1.Addr})
			})
			t.Run("udp", func(t *testing.T) {
				c := c.with(t)
				if err := harness.Eventually(5*settle, 50*time.Millisecond, func() error {
					_, err := harness.UDPRequest(c.ctx, c.client(), udp, "hello")
					return err
				}); err != nil {
					t.Fatalf("udp %s not served: %v", udp, err)
				}
				c.requests(udp, 10, true, map[string]netip.Addr{"pod2a": n1.Addr})
			})
			t.Run("large transfers", func(t *testing.T) {
				c := c.with(t)
				const size = 4 << 20
				upload := randomBytes(t, size)
				for _, tt := range []struct {
					addr netip.AddrPort
					want harness.Reply
				}{
					{local, harness.Reply{Pod: "pod1a", Client: netns.ClientIP}},
					{remote, harness.Reply{Pod: "pod2a", Client: n1.Addr}},
				} {
					if r, err := harness.HTTPDownload(c.ctx, c.client(), tt.addr, size); err != nil || r != tt.want {
						t.Errorf("download through %s: %v (answered by %v, want %v)", tt.addr, err, r, tt.want)
					}
					if r, err := harness.HTTPUpload(c.ctx, c.client(), tt.addr, upload); err != nil || r != tt.want {
						t.Errorf("upload through %s: %v (answered by %v, want %v)", tt.addr, err, r, tt.want)
					}
				}
			})
			t.Run("remote flows translated at "+tc.wantStage.String(), func(t *testing.T) {
				checkRemoteTrace(t, c.with(t), c.agents[0], remote, addrPort(pod2a.Addr, harness.PodHTTPPort), tc.wantStage)
			})
			t.Run("frames xdp left to tc", func(t *testing.T) {
				out, err := c.agents[0].Maps()
				if err != nil {
					t.Fatalf("%v\n%s", err, out)
				}
				n := reasonPackets(t, out, loader.ReasonPassCsumPartial)
				if got := n > 0; got != tc.wantPartial {
					t.Errorf("%d packets counted as %s, want some: %v\n%s", n, loader.ReasonPassCsumPartial, tc.wantPartial, out)
				}
			})
		})
	}
}

// reasonPackets reads the packet count of reason from `nodegress maps`.
func reasonPackets(t *testing.T, maps string, reason loader.Reason) uint64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(reason.String()) + `\s+(\d+)\s`).FindStringSubmatch(maps)
	if m == nil {
		return 0
	}
	n, err := strconv.ParseUint(m[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
