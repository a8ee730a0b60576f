package loader

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/nodegress/nodegress/tests/netns"
)

// BenchmarkKernelDrop measures what kernel drop tracing costs: one UDP
// datagram to a closed port over loopback, the kernel dropping it
// (NO_SOCKET), with trace_drop detached (nothing), attached while the drop
// is of a flow nodegress does not know (every other drop on the node: the
// tuple read and the map lookups), and attached while it is of a tracked
// flow (an event on the ring buffer, read by the agent's reader). ns/op is
// the sender's whole send; prog-ns/drop is trace_drop's own run time per
// invocation from the kernel's BPF statistics.
func BenchmarkKernelDrop(b *testing.B) {
	h := newHarness(b)
	ns := netns.New(b, "kdropb"+netns.RandomSuffix(6))
	ns.MustIP("link", "set", "lo", "up")
	stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		b.Fatalf("enable bpf stats: %v", err)
	}
	defer stats.Close()

	src := netip.MustParseAddrPort("127.0.0.1:40011")
	dst := netip.MustParseAddrPort("127.0.0.1:40111")
	pc, err := ns.ListenPacket("udp4", src.String())
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Close()
	to := net.UDPAddrFromAddrPort(dst)
	payload := make([]byte, 64)

	dp := &Datapath{objs: h.objs, log: slog.Default()}
	b.Cleanup(dp.kdrop.close)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = dp.ReadEvents(ctx, func(Event) {}) }()

	for _, bc := range []struct {
		name     string
		attached bool
		tracked  bool
	}{
		{"detached", false, false},
		{"attached-untracked", true, false},
		{"attached-tracked", true, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			if err := dp.SetKernelDrops(bc.attached); err != nil {
				b.Fatal(err)
			}
			key := tupleToBPF(Tuple{Src: src, Dst: dst, Proto: UDP})
			if bc.tracked {
				if err := h.objs.Conntrack.Put(key, datapathCtEntry{SvcId: 1, BackendId: 1}); err != nil {
					b.Fatal(err)
				}
			} else {
				_ = h.objs.Conntrack.Delete(key)
			}
			var before ebpf.ProgramStats
			if bc.attached {
				st, err := dp.kdrop.prog.Stats()
				if err != nil {
					b.Fatal(err)
				}
				before = *st
			}
			b.ResetTimer()
			for b.Loop() {
				_, _ = pc.WriteTo(payload, to)
			}
			b.StopTimer()
			if bc.attached {
				st, err := dp.kdrop.prog.Stats()
				if err != nil {
					b.Fatal(err)
				}
				if n := st.RunCount - before.RunCount; n > 0 {
					b.ReportMetric(float64(st.Runtime-before.Runtime)/float64(n), "prog-ns/drop")
				}
			}
		})
	}
}
