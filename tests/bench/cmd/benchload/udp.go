package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// udpTargets are where udp-rr may send: loopback and the address plan of
// the benchmark's network namespaces (tests/netns: the wire 10.100.0.0/24
// and the pod ranges 10.244.0.0/16), which exist only inside namespaces
// the benchmark created.
var udpTargets = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("10.100.0.0/24"),
	netip.MustParsePrefix("10.244.0.0/16"),
}

// udpTimeout is how long a request waits for its answer before it counts
// as lost and the worker sends the next one.
const udpTimeout = 500 * time.Millisecond

// udpRR runs -c workers, each with its own connected UDP socket (so its
// own flow, as distinct clients would be): send a 32-byte datagram, wait
// for the answer, repeat. It prints
//
//	requests N errors E rate R p50 D p99 D
//
// with the percentiles of the round-trip times.
func udpRR(args []string) error {
	fs := flag.NewFlagSet("udp-rr", flag.ContinueOnError)
	rawAddr := fs.String("addr", "", "IP:PORT of a UDP echo service")
	conns := fs.Int("c", 32, "concurrent sockets, one request in flight each")
	dur := fs.Duration("d", 10*time.Second, "duration")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ap, err := netip.ParseAddrPort(*rawAddr)
	if err != nil {
		return fmt.Errorf("--addr %q: %w", *rawAddr, err)
	}
	if !slices.ContainsFunc(udpTargets, func(p netip.Prefix) bool { return p.Contains(ap.Addr()) }) {
		// The benchmark must never send load off this machine.
		return fmt.Errorf("--addr %s: not loopback nor the benchmark namespaces' address plan", ap)
	}
	if *conns < 1 || *conns > 4096 || *dur <= 0 || *dur > 5*time.Minute {
		return errors.New("-c must be 1..4096 and -d at most 5m")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *dur)
	defer cancel()
	var (
		mu   sync.Mutex
		lat  []time.Duration
		errs = map[string]int{}
		wg   sync.WaitGroup
	)
	start := time.Now()
	for range *conns {
		wg.Go(func() {
			mine, bad := udpWorker(ctx, ap)
			mu.Lock()
			lat = append(lat, mine...)
			for k, n := range bad {
				errs[k] += n
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	report("requests", lat, errs, time.Since(start))
	return nil
}

func udpWorker(ctx context.Context, ap netip.AddrPort) ([]time.Duration, map[string]int) {
	bad := map[string]int{}
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(ap))
	if err != nil {
		bad[errorKind(err)]++
		return nil, bad
	}
	defer c.Close()
	req := []byte("benchload udp-rr 0123456789abcde")
	buf := make([]byte, 2048)
	var mine []time.Duration
	for ctx.Err() == nil {
		t0 := time.Now()
		_ = c.SetDeadline(t0.Add(udpTimeout))
		if _, err := c.Write(req); err != nil {
			bad[errorKind(err)]++
			// A refused datagram (no backend yet) must not spin.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if _, err := c.Read(buf); err != nil {
			if ctx.Err() == nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					bad["timeout"]++
				} else {
					bad[errorKind(err)]++
					time.Sleep(10 * time.Millisecond)
				}
			}
			continue
		}
		mine = append(mine, time.Since(t0))
	}
	return mine, bad
}

// report prints the summary line of a run and the most frequent errors.
func report(what string, lat []time.Duration, errs map[string]int, elapsed time.Duration) {
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))]
	}
	total := 0
	kinds := make([]string, 0, len(errs))
	for k, n := range errs {
		total += n
		kinds = append(kinds, k)
	}
	fmt.Printf("%s %d errors %d rate %.1f p50 %s p99 %s\n",
		what, len(lat), total, float64(len(lat))/elapsed.Seconds(), pct(0.50), pct(0.99))
	if len(kinds) > 0 {
		slices.SortFunc(kinds, func(a, b string) int { return errs[b] - errs[a] })
		var parts []string
		for _, k := range kinds[:min(3, len(kinds))] {
			parts = append(parts, fmt.Sprintf("%d× %s", errs[k], k))
		}
		fmt.Printf("last error: %s\n", strings.Join(parts, "; "))
	}
}
