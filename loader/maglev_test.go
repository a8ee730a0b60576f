package loader

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

func maglevBackends(n int) []maglevBackend {
	bs := make([]maglevBackend, n)
	for i := range bs {
		bs[i] = maglevBackend{id: uint32(100 + i), name: fmt.Sprintf("10.244.%d.%d:8080", i/200, i%200+1)}
	}
	return bs
}

// TestMaglevTable checks the properties the datapath relies on: every
// backend gets its share of the table, the table does not depend on the
// order of the backends or on which node builds it, and removing a
// backend moves little more than that backend's own entries.
func TestMaglevTable(t *testing.T) {
	const m = DefaultMaglevTableSize
	for _, n := range []int{1, 2, 3, 10, 100} {
		t.Run(fmt.Sprintf("%d backends", n), func(t *testing.T) {
			bs := maglevBackends(n)
			table := maglevTable(bs, m, 7)
			share := map[uint32]int{}
			for _, id := range table {
				share[id]++
			}
			if len(share) != n {
				t.Fatalf("%d backends in the table, want %d", len(share), n)
			}
			for id, c := range share {
				if want := float64(m) / float64(n); float64(c) < want*0.9 || float64(c) > want*1.1 {
					t.Errorf("backend %d has %d entries, want about %.0f", id, c, want)
				}
			}
			shuffled := slices.Clone(bs)
			rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			if !slices.Equal(maglevTable(shuffled, m, 7), table) {
				t.Error("the table depends on the order of the backends")
			}
			if n < 2 {
				return
			}
			gone := bs[n/2]
			after := maglevTable(slices.Delete(slices.Clone(bs), n/2, n/2+1), m, 7)
			moved := 0
			for i := range table {
				if table[i] != gone.id && after[i] != table[i] {
					moved++
				}
			}
			// The paper measures a few percent of extra moves at this
			// table size; more means the permutation is broken.
			if frac := float64(moved) / float64(m); frac > 0.05 {
				t.Errorf("removing one of %d backends moved %.1f%% of other entries", n, frac*100)
			}
		})
	}
	if slices.Equal(maglevTable(maglevBackends(10), m, 7), maglevTable(maglevBackends(10), m, 8)) {
		t.Error("the seed changes nothing")
	}
	for _, c := range []struct {
		n    uint32
		want bool
	}{{0, false}, {1, false}, {2, true}, {251, true}, {16381, true}, {16383, false}, {65537, true}} {
		if IsPrime(c.n) != c.want {
			t.Errorf("IsPrime(%d) = %t", c.n, !c.want)
		}
	}
}

// TestMaglevDatapath runs flows through xdp_lb for a Maglev service: two
// nodes (different per-node seeds, backend ids and backend order) pick the
// same backend for every flow, and removing one of 10 backends moves only
// the flows that were on it and few others.
func TestMaglevDatapath(t *testing.T) {
	h := newHarness(t)
	const n, flows = 10, 2000
	var backends []Backend
	for i := range n {
		backends = append(backends, Backend{Addr: netip.AddrFrom4([4]byte{10, 244, 0, byte(10 + i)}), Port: 8080, Local: true})
	}
	svc := Service{Name: "ns/mag:http/TCP", Proto: TCP, Frontends: []Frontend{fe("10.0.0.1:30080")}, Backends: backends, Maglev: true}
	picks := func() []netip.AddrPort {
		out := make([]netip.AddrPort, flows)
		for i := range flows {
			f := tcpFrame(fmt.Sprintf("192.0.%d.%d:%d", 2+i/250, i%250+1, 40000+i), "10.0.0.1:30080", tcpSYN)
			res := h.expect(hookXDP, f.bytes(t), VerdictPass, ReasonFwdLocal)
			out[i] = decode(t, res.pkt).dst()
		}
		return out
	}
	h.apply(svc)
	node1 := picks()

	// Another node: its own hash seed, other backend ids (a backend it
	// knew first), the backends listed in another order.
	h.reset()
	cfg := h.config()
	cfg.HashSeed ^= 0xffff
	h.setConfig(cfg)
	h.apply(Service{Name: "ns/other:http/TCP", Proto: TCP, Frontends: []Frontend{fe("10.0.0.9:80")},
		Backends: []Backend{{Addr: netip.MustParseAddr("10.9.9.9"), Port: 80}}})
	rev := slices.Clone(backends)
	slices.Reverse(rev)
	svc2 := svc
	svc2.Backends = rev
	h.apply(svc2)
	if node2 := picks(); !slices.Equal(node1, node2) {
		diff := 0
		for i := range node1 {
			if node1[i] != node2[i] {
				diff++
			}
		}
		t.Errorf("two nodes disagree on %d of %d flows", diff, flows)
	}

	// A backend leaves; flows start afresh (no conntrack on a node that
	// never saw them, as after a load balancer moved them).
	gone := netip.AddrPortFrom(backends[3].Addr, backends[3].Port)
	svc3 := svc
	svc3.Backends = slices.Delete(slices.Clone(backends), 3, 4)
	h.reset()
	h.apply(svc3)
	after := picks()
	onGone, moved := 0, 0
	for i := range node1 {
		switch {
		case node1[i] == gone:
			onGone++
			if after[i] == gone {
				t.Fatalf("flow %d still goes to the removed backend", i)
			}
		case after[i] != node1[i]:
			moved++
		}
	}
	t.Logf("%d of %d flows were on the removed backend; %d others moved", onGone, flows, moved)
	if float64(moved) > 0.05*flows {
		t.Errorf("%d flows not on the removed backend moved (more than 5%%)", moved)
	}
	if onGone == 0 || float64(onGone+moved) > 1.5*flows/n {
		t.Errorf("%d flows moved in all, want about 1/%d of %d", onGone+moved, n, flows)
	}
}
