package loader

import (
	"math/rand/v2"
	"net/netip"
	"os"
	"strconv"
	"testing"

	"github.com/cilium/ebpf"
)

// TestPacketFuzz feeds mutated frames (PACKET_FUZZ_FRAMES, 1,200,000 by
// default, split over the three packet programs) through
// BPF_PROG_TEST_RUN with services configured: every run must succeed
// (no verifier or bounds surprise turns into an error), return a code
// its hook may return, and count the frame exactly once, under some
// reason: every frame is accounted for. The mutations are seeded, so a
// failure names the frame that reproduces it.
func TestPacketFuzz(t *testing.T) {
	frames := 1_200_000
	if v := os.Getenv("PACKET_FUZZ_FRAMES"); v != "" {
		var err error
		if frames, err = strconv.Atoi(v); err != nil {
			t.Fatalf("PACKET_FUZZ_FRAMES: %v", err)
		}
	}
	h := newHarness(t)
	h.localServices()
	client := netip.MustParseAddrPort("192.0.2.77:40000")
	ap := func(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
	seeds := [][]byte{
		frame{src: client, dst: ap(feLocal), proto: TCP, flags: tcpSYN, payload: []byte("x")}.bytes(t),
		frame{src: client, dst: ap(feLocal), proto: TCP, flags: tcpACK, payload: []byte("hello")}.bytes(t),
		frame{src: client, dst: ap(feUDP), proto: UDP, payload: []byte("query")}.bytes(t),
		frame{src: client, dst: ap(feL7), proto: TCP, flags: tcpSYN}.bytes(t),
		frame{src: client, dst: ap(fePair), proto: TCP, flags: tcpSYN, ttl: 1}.bytes(t),
		frame{src: client, dst: ap(feEmpty), proto: TCP, flags: tcpSYN}.bytes(t),
		frame{src: client, dst: ap(feLocal), proto: TCP, flags: tcpSYN, moreFragments: true, payload: make([]byte, 64)}.bytes(t),
		replyOf(frame{src: client, dst: ap(feLocal), proto: TCP}, beLocal.addrPort(), tcpSYN|tcpACK).bytes(t),
	}
	rng := rand.New(rand.NewPCG(1, 2))
	mutate := func(seed []byte) []byte {
		b := append([]byte(nil), seed...)
		for range 1 + rng.IntN(4) {
			switch n := len(b); rng.IntN(7) {
			case 0, 1: // flip a bit
				if n > 0 {
					b[rng.IntN(n)] ^= 1 << rng.IntN(8)
				}
			case 2: // a random byte
				if n > 0 {
					b[rng.IntN(n)] = byte(rng.Uint32())
				}
			case 3: // truncate
				b = b[:rng.IntN(n+1)]
			case 4: // extend
				for range rng.IntN(64) {
					b = append(b, byte(rng.Uint32()))
				}
			case 5: // an interesting value in the IP or L4 header
				if n > 14 {
					i := 14 + rng.IntN(min(n-14, 40))
					b[i] = [...]byte{0, 1, 0x45, 0x46, 0x4f, 0x7f, 0x80, 0xff, 6, 17, 1}[rng.IntN(11)]
				}
			case 6: // random bytes altogether
				b = make([]byte, rng.IntN(128))
				for i := range b {
					b[i] = byte(rng.Uint32())
				}
			}
		}
		return b
	}
	valid := map[hook]map[uint32]bool{
		hookXDP:       {xdpPass: true, xdpDrop: true, xdpTX: true, xdpRedirect: true},
		hookTCIngress: {tcActOK: true, tcActShot: true, tcActRedirect: true},
		hookTCEgress:  {tcActOK: true, tcActShot: true, tcActRedirect: true},
	}
	out := make([]byte, 2048)
	for k := hookXDP; k <= hookTCEgress; k++ {
		n, refused := frames/3, 0
		before := h.stats()
		for i := range n {
			pkt := mutate(seeds[rng.IntN(len(seeds))])
			opts := &ebpf.RunOptions{Data: pkt, DataOut: out}
			if k == hookXDP {
				opts.Context = xdpMD{DataEnd: uint32(len(pkt))}
			}
			ret, err := h.prog(k).Run(opts)
			if err != nil {
				// The kernel refuses frames shorter than an Ethernet
				// header (and, for tc, an IPv4 one after an IPv4
				// ethertype) before the program runs: not the program's.
				short := ethLen
				if k != hookXDP {
					short += 20
				}
				if len(pkt) < short {
					n--
					refused++
					continue
				}
				t.Fatalf("%s frame %d (% x): run: %v", k, i, pkt, err)
			}
			if !valid[k][ret] {
				t.Fatalf("%s frame %d (% x): returned %d", k, i, pkt, ret)
			}
			if i%50_000 == 0 {
				// Keep the flow tables from filling up with garbage:
				// what the fuzzer exercises is each frame's parsing.
				h.reset()
			}
		}
		after := h.stats()
		var counted uint64
		for _, r := range Reasons() {
			counted += after[r].Packets - before[r].Packets
		}
		if counted != uint64(n) {
			t.Errorf("%s: %d frames run, %d counted: every frame must be accounted for once", k, n, counted)
		}
		t.Logf("%s: %d mutated frames run, every one counted (%d too short for the kernel to run)", k, n, refused)
	}
}
