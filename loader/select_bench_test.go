package loader

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// The cost of backend selection for a new flow inside xdp_lb: the
// default per-node hash, Maglev, and ClientIP affinity on top of the
// hash. The L4 benchmark (tests/bench) measures the same choices end to
// end, where the rest of the NodePort hop dwarfs them; these isolate the
// program's own time.
//
// BPF_PROG_TEST_RUN's repeat count cannot measure this: the kernel runs
// the program again and again on one buffer, which the first run has
// already translated to the backend, and whose flow is then in
// conntrack, so the repeats would time another path than selection.
// Every iteration instead runs the SYN of a flow the datapath has not
// seen, once, and ns/op is the run time the kernel measured around the
// program (Program.Benchmark), without the system call and the Go side
// around it. Those stay in the wall-clock time, which is why ns/op is
// reported explicitly.

// selectBenchFlows is how many distinct SYNs an iteration cycles through;
// conntrack and reverse NAT are emptied after each pass, so that every
// run is a new flow and the maps (1,024 entries in the harness) never
// fill up and start evicting.
const selectBenchFlows = 512

// selectBenchBackends is the size of the benchmarked service: enough that
// flows spread, as a Maglev table's entries do.
const selectBenchBackends = 10

func BenchmarkHashSelect(b *testing.B) { benchmarkSelect(b, selectBenchService()) }

func BenchmarkMaglevSelect(b *testing.B) {
	svc := selectBenchService()
	svc.Maglev = true
	benchmarkSelect(b, svc)
}

// BenchmarkAffinitySelect is the hash with ClientIP affinity, from one
// client as in the L4 benchmark's affinity row: after its first flow,
// every flow finds the client's backend in the affinity map, checks that
// it is still a member of the service and refreshes the entry.
func BenchmarkAffinitySelect(b *testing.B) {
	svc := selectBenchService()
	svc.AffinityTimeout = 3 * time.Hour
	benchmarkSelect(b, svc)
}

func selectBenchService() Service {
	var backends []Backend
	for i := range selectBenchBackends {
		backends = append(backends, Backend{Addr: netip.AddrFrom4([4]byte{10, 244, 0, byte(10 + i)}), Port: 8080, Local: true})
	}
	return Service{Name: "ns/bench:http/TCP", Proto: TCP, Frontends: []Frontend{fe("10.0.0.1:30080")}, Backends: backends}
}

// benchmarkSelect runs SYNs of fresh flows from one client to svc's
// frontend through xdp_lb. Backends are local, so that no route lookup
// (which test runs cannot make without a namespace) and no SNAT port
// allocation take part: what differs between the benchmarks is the
// selection alone.
func benchmarkSelect(b *testing.B, svc Service) {
	h := newHarness(b)
	h.apply(svc)
	pkts := make([][]byte, selectBenchFlows)
	for i := range pkts {
		pkts[i] = tcpFrame(fmt.Sprintf("192.0.2.10:%d", 20000+i), "10.0.0.1:30080", tcpSYN).bytes(b)
	}
	// The path under test really is a new flow to a local backend.
	h.expect(hookXDP, pkts[0], VerdictPass, ReasonFwdLocal)
	h.clear(h.objs.Conntrack, h.objs.ReverseNat)

	var inKernel time.Duration
	for i := 0; b.Loop(); i++ {
		if i > 0 && i%len(pkts) == 0 {
			h.clear(h.objs.Conntrack, h.objs.ReverseNat)
		}
		ret, d, err := h.objs.XdpLb.Benchmark(pkts[i%len(pkts)], 1, nil)
		if err != nil {
			b.Fatal(err)
		}
		if ret != xdpPass {
			b.Fatalf("flow %d: xdp_lb returned %d, want %d (pass to the local backend)", i, ret, xdpPass)
		}
		inKernel += d
	}
	b.ReportMetric(float64(inKernel.Nanoseconds())/float64(b.N), "ns/op")
}
