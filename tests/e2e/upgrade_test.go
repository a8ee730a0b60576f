package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/netns"
)

// previousRelease is a build whose pinned maps have other layouts than
// today's (smaller frontend and config values, none of the maps added
// since): the agent an upgrade replaces.
const previousRelease = "375a2e8a1c32e6f1287f9a1bebad70d9bbdc10cd"

// trafficLoop runs fn every interval until stopped and keeps its errors.
type trafficLoop struct {
	name   string
	wg     sync.WaitGroup
	stop   chan struct{}
	mu     sync.Mutex
	n      int
	errors []string
}

func runLoop(name string, interval time.Duration, fn func() error) *trafficLoop {
	l := &trafficLoop{name: name, stop: make(chan struct{})}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for i := 0; i < 100000; i++ {
			err := fn()
			l.mu.Lock()
			l.n++
			if err != nil {
				l.errors = append(l.errors, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), err))
			}
			l.mu.Unlock()
			select {
			case <-l.stop:
				return
			case <-time.After(interval):
			}
		}
	}()
	return l
}

// count is how many times fn ran.
func (l *trafficLoop) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

// waitLoops waits until every loop ran n more times than in base.
func waitLoops(t *testing.T, loops []*trafficLoop, n int) {
	t.Helper()
	base := make([]int, len(loops))
	for i, l := range loops {
		base[i] = l.count()
	}
	err := harness.Eventually(30*time.Second, 10*time.Millisecond, func() error {
		for i, l := range loops {
			if l.count() < base[i]+n {
				return fmt.Errorf("%s ran %d times", l.name, l.count()-base[i])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (l *trafficLoop) finish() (int, []string) {
	close(l.stop)
	l.wg.Wait()
	return l.n, l.errors
}

// TestUpgradeUnderTraffic kills the agent of the previous release with
// SIGKILL while traffic runs and starts this build on its pinned state:
// keep-alive connections and new connections to a local and a remote
// backend, and UDP, see no failed request and no reset, because the new
// agent migrates the maps whose layout changed (frontends, config) instead
// of wiping them.
func TestUpgradeUnderTraffic(t *testing.T) {
	old := harness.NodegressAt(t, previousRelease)
	tp := netns.TwoNodes(t, 1, 1)
	pod1a, pod2a := tp.Pod("pod1a"), tp.Pod("pod2a")
	echo := harness.Port{Name: "echo", Protocol: "UDP", Port: 9090, TargetPort: harness.PodUDPPort, NodePort: 30152}
	c := newClusterWith(t, tp, harness.AgentConfig{Binary: old}, []int{1},
		harness.Service{Name: "local", Ports: []harness.Port{http80(30150)}, Endpoints: harness.Endpoints(pod1a)},
		harness.Service{Name: "remote", Ports: []harness.Port{http80(30151)}, Endpoints: harness.Endpoints(pod2a)},
		harness.Service{Name: "udp", Ports: []harness.Port{echo}, Endpoints: harness.Endpoints(pod1a, pod2a)},
	)
	agent := c.agents[0]
	n1 := c.node(1).Addr
	local, remote, udp := addrPort(n1, 30150), addrPort(n1, 30151), addrPort(n1, 30152)
	for _, a := range []netip.AddrPort{local, remote} {
		c.waitServed(a, 5*settle)
	}

	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	var loops []*trafficLoop
	for _, a := range []netip.AddrPort{local, remote} {
		conn, err := harness.DialHTTP(ctx, c.client(), a)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		loops = append(loops,
			runLoop("keep-alive "+a.String(), 10*time.Millisecond, func() error { _, err := conn.Get(ctx); return err }),
			runLoop("new connections "+a.String(), 10*time.Millisecond, func() error { _, err := harness.HTTPGet(ctx, c.client(), a); return err }))
	}
	loops = append(loops, runLoop("udp "+udp.String(), 10*time.Millisecond, func() error {
		_, err := harness.UDPRequest(ctx, c.client(), udp, "ping")
		return err
	}))

	waitLoops(t, loops, 20) // traffic through the old agent's datapath
	agent.Kill()
	start := time.Now()
	agent.StartBinary(harness.Nodegress(t))
	t.Logf("new agent ready %s after SIGKILL", time.Since(start).Round(time.Millisecond))
	if err := agent.WaitLog("migrated pinned map", 5*time.Second); err != nil {
		t.Errorf("the new agent migrated nothing: %v\n%s", err, agent.Log())
	}
	waitLoops(t, loops, 40) // and through the new one's

	for _, l := range loops {
		n, errs := l.finish()
		if len(errs) > 0 {
			t.Errorf("%s: %d of %d failed:\n%s", l.name, len(errs), n, strings.Join(errs, "\n"))
		} else {
			t.Logf("%s: %d requests, none failed", l.name, n)
		}
	}
}
