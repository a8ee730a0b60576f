package loader

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/nodegress/nodegress/tests/netns"
)

// TestKernelDrops attaches trace_drop and makes the kernel drop UDP
// datagrams to closed ports inside a namespace of the test's own: those of
// flows in conntrack (as the client sent them) or reverse_nat (as DNAT left
// them for a local backend) are reported with the kernel's reason name and
// the dropping function; the same drop of an untracked flow is not. A
// flow no map knows is reported while it is watched (WatchFlow, packets in
// either direction), and neither before nor after.
func TestKernelDrops(t *testing.T) {
	for _, tc := range []struct {
		name, hook     string
		onlyTracepoint bool
	}{
		{"tp_btf", "tp_btf/kfree_skb", false},
		{"tracepoint fallback", "tracepoint/skb/kfree_skb", true},
	} {
		t.Run(tc.name, func(t *testing.T) { testKernelDrops(t, tc.onlyTracepoint, tc.hook) })
	}
}

func testKernelDrops(t *testing.T, onlyTracepoint bool, hook string) {
	h := newHarness(t)
	ns := netns.New(t, "kdrop"+netns.RandomSuffix(6))
	ns.MustIP("link", "set", "lo", "up")

	dp := &Datapath{objs: h.objs, log: slog.Default()}
	dp.kdrop.onlyTracepoint = onlyTracepoint
	if onlyTracepoint {
		// The datapath mounts tracefs where it is missing (as on this
		// machine without systemd); the test unmounts what it mounted.
		leaveTracefsAsFound(t)
	}
	if err := dp.SetKernelDrops(true); err != nil {
		// A kernel without BTF tracepoints; CI's kernel has them.
		if os.Getenv("CI") == "true" {
			t.Fatalf("attach: %v", err)
		}
		t.Skipf("kernel drop tracing unavailable: %v", err)
	}
	// The tracepoint sees the whole machine's drops: detach whatever
	// happens.
	t.Cleanup(dp.kdrop.close)
	if dp.kdrop.hook != hook {
		t.Fatalf("attached to %s, want %s", dp.kdrop.hook, hook)
	}

	ap := netip.MustParseAddrPort
	tuple := func(src, dst string) datapathFlowTuple {
		return tupleToBPF(Tuple{Src: ap(src), Dst: ap(dst), Proto: UDP})
	}
	// A client's flow, dropped as it arrived (no socket on the frontend).
	ctFlow := tuple("127.0.0.1:40001", "127.0.0.1:40100")
	if err := h.objs.Conntrack.Put(ctFlow, datapathCtEntry{SvcId: 7, BackendId: 3}); err != nil {
		t.Fatal(err)
	}
	// A flow DNAT'd to a local backend (127.0.0.2:40200) that has no
	// socket: its reply key is in reverse_nat.
	client, frontend := "127.0.0.1:40002", "10.96.0.10:80"
	dnatFlow := tuple(client, frontend)
	if err := h.objs.Conntrack.Put(dnatFlow, datapathCtEntry{SvcId: 8, BackendId: 4}); err != nil {
		t.Fatal(err)
	}
	rn := datapathRevNatEntry{}
	rn.ClientAddr, rn.ClientPort = dnatFlow.Saddr, dnatFlow.Sport
	rn.FrontendAddr, rn.FrontendPort = dnatFlow.Daddr, dnatFlow.Dport
	if err := h.objs.ReverseNat.Put(tuple("127.0.0.2:40200", client), rn); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var got []Event
	ctx, cancel := context.WithCancel(context.Background())
	readDone := make(chan error, 1)
	go func() {
		readDone <- dp.ReadEvents(ctx, func(ev Event) {
			mu.Lock()
			got = append(got, ev)
			mu.Unlock()
		})
	}()
	defer func() {
		cancel()
		if err := <-readDone; err != nil {
			t.Errorf("read events: %v", err)
		}
	}()

	send := func(src, dst string) {
		t.Helper()
		err := ns.Do(func() error {
			c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(ap(src)), net.UDPAddrFromAddrPort(ap(dst)))
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte("nodegress kernel drop test"))
			return err
		})
		if err != nil {
			t.Fatalf("send %s -> %s: %v", src, dst, err)
		}
	}
	// The untracked drops go first, so that they would be read before
	// the tracked ones if they were reported: the watched flows' too,
	// before they are watched.
	untracked := ap("127.0.0.1:40003")
	send(untracked.String(), "127.0.0.1:40300")
	// A watched connection (as a proxy's to a pod), dropped in its own
	// direction and, for another one, in the reply's.
	watched := Tuple{ap("127.0.0.1:40004"), ap("127.0.0.1:40400"), UDP}
	watchedReply := Tuple{ap("127.0.0.1:40005"), ap("127.0.0.1:40500"), UDP}
	send(watched.Src.String(), watched.Dst.String())
	send(watchedReply.Dst.String(), watchedReply.Src.String())
	if err := dp.WatchFlow(watched); err != nil {
		t.Fatal(err)
	}
	if err := dp.WatchFlow(watchedReply); err != nil {
		t.Fatal(err)
	}
	send("127.0.0.1:40001", "127.0.0.1:40100")
	send(client, "127.0.0.2:40200")
	send(watched.Src.String(), watched.Dst.String())
	send(watchedReply.Dst.String(), watchedReply.Src.String())

	kernelEvents := func() []Event {
		mu.Lock()
		defer mu.Unlock()
		var out []Event
		for _, ev := range got {
			if ev.Stage == StageKernel {
				out = append(out, ev)
			}
		}
		return out
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(kernelEvents()) < 4 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	// No longer watched: not reported again.
	if err := dp.UnwatchFlow(watched); err != nil {
		t.Fatal(err)
	}
	send(watched.Src.String(), watched.Dst.String())
	// Room for an unwanted report to arrive.
	time.Sleep(200 * time.Millisecond)
	evs := kernelEvents()

	name := regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)
	want := []struct {
		name      string
		orig, pkt Tuple
		svc, be   uint32
	}{
		{"conntrack", Tuple{ap("127.0.0.1:40001"), ap("127.0.0.1:40100"), UDP}, Tuple{ap("127.0.0.1:40001"), ap("127.0.0.1:40100"), UDP}, 7, 3},
		{"dnat to local backend", Tuple{ap(client), ap(frontend), UDP}, Tuple{ap(client), ap("127.0.0.2:40200"), UDP}, 8, 4},
		{"watched", watched, watched, 0, 0},
		{"watched, reply dropped", watchedReply, Tuple{watchedReply.Dst, watchedReply.Src, UDP}, 0, 0},
	}
	for _, w := range want {
		t.Run(w.name, func(t *testing.T) {
			var ev *Event
			for i := range evs {
				if evs[i].Xlated == w.pkt {
					ev = &evs[i]
				}
			}
			if ev == nil {
				t.Fatalf("no kernel drop of %s reported; got %v", w.pkt, evs)
			}
			if ev.Orig != w.orig || ev.ServiceID != w.svc || ev.BackendID != w.be || ev.Verdict != VerdictDrop {
				t.Errorf("event %+v: want flow %s svc %d backend %d verdict DROP", ev, w.orig, w.svc, w.be)
			}
			kd := ev.KernelDrop
			if kd == nil {
				t.Fatal("kernel drop details missing")
			}
			if !name.MatchString(kd.ReasonName) {
				t.Errorf("reason %d named %q: want the kernel's name from BTF", kd.Reason, kd.ReasonName)
			}
			if kd.Location == 0 || strings.HasPrefix(kd.Symbol, "0x") {
				t.Errorf("location %#x named %q: want a kernel symbol", kd.Location, kd.Symbol)
			}
			// The drops happen in the test's namespace, not the
			// test process's.
			if kd.Netns == 0 || ev.Ifindex != 0 {
				t.Errorf("netns %d ifindex %d: want the namespace of the test and no ifindex", kd.Netns, ev.Ifindex)
			}
			t.Logf("kernel drop of %s: reason %s (%d) at %s", w.pkt, kd.ReasonName, kd.Reason, kd.Symbol)
		})
	}
	for _, ev := range evs {
		if ev.Orig.Src == untracked || ev.Xlated.Src == untracked {
			t.Errorf("drop of an untracked flow reported: %+v", ev)
		}
	}
	// Sent three times, watched for one.
	for _, w := range []Tuple{watched, watchedReply} {
		n := 0
		for _, ev := range evs {
			if ev.Orig == w {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d drops of %s reported, want 1: the one while it was watched", n, w)
		}
	}

	if err := dp.SetKernelDrops(false); err != nil {
		t.Errorf("detach: %v", err)
	}
	if dp.kdrop.link != nil {
		t.Error("link still attached after SetKernelDrops(false)")
	}
}

// TestWatchFlowUnloaded checks that watching a flow before kernel drop
// tracing was ever switched on is refused with the reason.
func TestWatchFlowUnloaded(t *testing.T) {
	dp := &Datapath{log: slog.Default()}
	flow := Tuple{Src: netip.MustParseAddrPort("10.0.0.1:40000"), Dst: netip.MustParseAddrPort("10.1.0.7:8080"), Proto: TCP}
	for name, fn := range map[string]func(Tuple) error{"watch": dp.WatchFlow, "unwatch": dp.UnwatchFlow} {
		if err := fn(flow); !errors.Is(err, errKernelDropsNotLoaded) {
			t.Errorf("%s: %v, want %v", name, err, errKernelDropsNotLoaded)
		}
	}
}

func TestDropReasonNames(t *testing.T) {
	e := &btf.Enum{Name: "skb_drop_reason", Values: []btf.EnumValue{
		{Name: "SKB_NOT_DROPPED_YET", Value: 0},
		{Name: "SKB_CONSUMED", Value: 1},
		{Name: "SKB_DROP_REASON_NOT_SPECIFIED", Value: 2},
		{Name: "SKB_DROP_REASON_NO_SOCKET", Value: 3},
	}}
	n := &kernelNames{}
	n.reasonsOnce.Do(func() { n.reasons = dropReasonNames(e) })
	for _, tc := range []struct {
		v    uint32
		want string
	}{
		{2, "NOT_SPECIFIED"},
		{3, "NO_SOCKET"},
		{1, "SKB_CONSUMED"},
		{999, "reason 999"},
	} {
		if got := n.reason(tc.v); got != tc.want {
			t.Errorf("reason(%d) = %q, want %q", tc.v, got, tc.want)
		}
	}
}

func TestSymbolize(t *testing.T) {
	syms := []ksym{{0x1000, "a"}, {0x2000, "b"}}
	for _, tc := range []struct {
		addr uint64
		want string
	}{
		{0x1000, "a"},
		{0x1010, "a+0x10"},
		{0x2fff, "b+0xfff"},
		{0x10, "0x10"},
		{0, "0x0"},
	} {
		if got := symbolize(syms, tc.addr); got != tc.want {
			t.Errorf("symbolize(%#x) = %q, want %q", tc.addr, got, tc.want)
		}
	}
	if got := symbolize(nil, 0xabc); got != "0xabc" {
		t.Errorf("no symbols: %q", got)
	}
}

// leaveTracefsAsFound unmounts at the end of the test the tracefs the
// datapath mounts (ensureTracefs) when none was mounted before.
func leaveTracefsAsFound(t *testing.T) {
	t.Helper()
	var st unix.Statfs_t
	if unix.Statfs(tracefsDir, &st) == nil && int64(st.Type) == unix.TRACEFS_MAGIC {
		return // mounted before the test: left as it is
	}
	t.Cleanup(func() {
		var st unix.Statfs_t
		if unix.Statfs(tracefsDir, &st) == nil && int64(st.Type) == unix.TRACEFS_MAGIC {
			if err := unix.Unmount(tracefsDir, unix.MNT_DETACH); err != nil {
				t.Errorf("unmount tracefs: %v", err)
			}
		}
	})
}
