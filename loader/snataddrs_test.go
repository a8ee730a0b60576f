package loader

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
)

func TestSNATExtras(t *testing.T) {
	addrs := []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.5.1"), netip.MustParseAddr("10.0.5.2"), netip.MustParseAddr("192.0.2.7")}
	tests := []struct {
		prefixes string
		want     string
	}{
		{"", "[]"},
		{"10.0.5.0/24", "[10.0.5.1 10.0.5.2]"},
		{"10.0.0.0/8", "[10.0.5.1 10.0.5.2]"}, // the first is always used, never twice
		{"192.0.2.7/32,10.0.5.2/32", "[10.0.5.2 192.0.2.7]"},
	}
	for _, tc := range tests {
		var ps []netip.Prefix
		for _, s := range splitNonEmpty(tc.prefixes) {
			ps = append(ps, netip.MustParsePrefix(s))
		}
		if got := fmt.Sprint(snatExtras(addrs, ps)); got != tc.want {
			t.Errorf("snatExtras(%q) = %s, want %s", tc.prefixes, got, tc.want)
		}
	}
}

func splitNonEmpty(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			if i > start {
				out = append(out, s[start:i])
			}
			start = i + 1
		}
	}
	return out
}

// TestSNATAddresses: a device's extra SNAT addresses each hold the whole
// port range. With one port and two extra addresses, three client flows
// to one backend leave from three addresses, a fourth finds no port, and
// replies to an extra address are translated back.
func TestSNATAddresses(t *testing.T) {
	env := newFibEnv(t)
	extra := []string{"10.0.0.11", "10.0.0.12"}
	for _, k := range []hook{hookXDP, hookTCIngress} {
		t.Run(k.String(), func(t *testing.T) {
			h := onePortHarness(t, env)
			v := datapathDeviceValue{Addr: addrToBE(netip.MustParseAddr(nodeIP)), SnatExtra: uint32(len(extra))}
			for i, a := range extra {
				v.SnatAddrs[i] = addrToBE(netip.MustParseAddr(a))
			}
			if err := h.objs.Devices.Update(env.ext0, v, ebpf.UpdateAny); err != nil {
				t.Fatal(err)
			}
			var srcs []string
			for i := range 3 {
				f := tcpFrame(fmt.Sprintf("192.0.2.%d:40000", 10+i), feRemote, tcpSYN)
				res := h.expect(k, f.bytes(t), forwardVerdict(k, true), ReasonFwdRemote)
				d := decode(t, res.pkt)
				srcs = append(srcs, d.src().Addr().String())
				reply := remoteReply(f, beRemote, d.src().Addr().String(), d.src().Port(), tcpSYN|tcpACK)
				res = h.expect(k, reply.bytes(t), forwardVerdict(k, true), ReasonReplyRemote)
				if back := decode(t, res.pkt); back.src() != f.dst || back.dst() != f.src {
					t.Errorf("reply to %v reached the client as %v -> %v, want %v -> %v", d.src(), back.src(), back.dst(), f.dst, f.src)
				}
			}
			slices.Sort(srcs)
			if want := []string{nodeIP, extra[0], extra[1]}; !slices.Equal(srcs, want) {
				t.Errorf("flows left from %v, want one from each of %v", srcs, want)
			}
			h.expect(k, tcpFrame("192.0.2.20:40000", feRemote, tcpSYN).bytes(t), VerdictDrop, ReasonDropSNATExhausted)
		})
	}
}
