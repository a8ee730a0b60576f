package e2e

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/netns"
)

// sample is one request of a connection loop.
type sample struct {
	at  time.Time // when the connection was opened
	r   harness.Reply
	err error
}

// loop opens a new connection to addr every interval, from the client, until
// stopped (at most max requests).
type loop struct {
	mu      sync.Mutex
	samples []sample
	stop    chan struct{}
	done    chan struct{}
}

func (c *cluster) startLoop(addr netip.AddrPort, interval time.Duration, max int) *loop {
	l := &loop{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for range max {
			at := time.Now()
			r, err := c.get(addr)
			l.mu.Lock()
			l.samples = append(l.samples, sample{at: at, r: r, err: err})
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

func (l *loop) finish() []sample {
	close(l.stop)
	<-l.done
	return l.samples
}

// window returns the samples opened in [from, to).
func window(ss []sample, from, to time.Time) []sample {
	var out []sample
	for _, s := range ss {
		if !s.at.Before(from) && s.at.Before(to) {
			out = append(out, s)
		}
	}
	return out
}

func podsOf(ss []sample) map[string]int {
	m := map[string]int{}
	for _, s := range ss {
		if s.err == nil {
			m[s.r.Pod]++
		}
	}
	return m
}

// TestBackendChurn rewrites a service's EndpointSlice while a client opens
// connections in a loop: added backends get new connections within settle,
// removed ones get none after it, and no connection fails (every pod keeps
// running; only the endpoint set changes).
func TestBackendChurn(t *testing.T) {
	tp := netns.SingleNode(t, 3)
	a, b, cc := tp.Pod("pod1a"), tp.Pod("pod1b"), tp.Pod("pod1c")
	svc := func(pods ...*netns.Pod) harness.Service {
		return harness.Service{Name: "churn", Ports: []harness.Port{http80(30100)}, Endpoints: harness.Endpoints(pods...)}
	}
	c := newCluster(t, tp, []int{1}, svc(a, b))
	addr := addrPort(c.node(1).Addr, 30100)
	c.waitServed(addr, 5*settle)

	const steady = 1500 * time.Millisecond
	l := c.startLoop(addr, 10*time.Millisecond, 3000)
	time.Sleep(steady)
	t1 := time.Now()
	c.apply(svc(a, b, cc))
	time.Sleep(settle + steady)
	t2 := time.Now()
	c.apply(svc(b, cc))
	time.Sleep(settle + steady)
	end := time.Now()
	ss := l.finish()

	var failures []string
	for _, s := range ss {
		switch {
		case s.err != nil:
			failures = append(failures, fmt.Sprintf("%s: %v", s.at.Format("15:04:05.000"), s.err))
		case s.r.Client != netns.ClientIP:
			t.Errorf("%s saw client %s, want %s", s.r.Pod, s.r.Client, netns.ClientIP)
		}
	}
	t.Logf("%d connections, %d failed; before add %v, after add %v, after removal %v",
		len(ss), len(failures), podsOf(window(ss, time.Time{}, t1)),
		podsOf(window(ss, t1.Add(settle), t2)), podsOf(window(ss, t2.Add(settle), end)))
	if len(failures) > 0 {
		t.Errorf("%d of %d connections failed while backends changed:\n%s", len(failures), len(ss), strings.Join(failures[:min(len(failures), 20)], "\n"))
	}

	checkSet := func(phase string, ss []sample, want ...string) {
		t.Helper()
		got := podsOf(ss)
		for p := range got {
			if !slices.Contains(want, p) {
				t.Errorf("%s: %s answered %d connections, want only %v", phase, p, got[p], want)
			}
		}
		for _, p := range want {
			if got[p] == 0 {
				t.Errorf("%s: %s answered none of %d connections (%v)", phase, p, len(ss), got)
			}
		}
	}
	checkSet("before the change", window(ss, time.Time{}, t1), "pod1a", "pod1b")
	checkSet("once pod1c was added", window(ss, t1.Add(settle), t2), "pod1a", "pod1b", "pod1c")
	checkSet("once pod1a was removed", window(ss, t2.Add(settle), end), "pod1b", "pod1c")

	// How long the datapath took, for the log and the bound.
	for _, s := range window(ss, t1, t2) {
		if s.err == nil && s.r.Pod == "pod1c" {
			t.Logf("added backend got its first connection %s after the file changed", s.at.Sub(t1).Round(time.Millisecond))
			break
		}
	}
	var last time.Time
	for _, s := range window(ss, t2, end) {
		if s.err == nil && s.r.Pod == "pod1a" {
			last = s.at
		}
	}
	if !last.IsZero() {
		t.Logf("removed backend got its last connection %s after the file changed", last.Sub(t2).Round(time.Millisecond))
	}
}

// TestTerminatingBackend marks a backend terminating: it gets no new
// connections, but a connection it already serves keeps working.
func TestTerminatingBackend(t *testing.T) {
	tp := netns.SingleNode(t, 2)
	a, b := tp.Pod("pod1a"), tp.Pod("pod1b")
	svc := harness.Service{Name: "term", Ports: []harness.Port{http80(30105)}, Endpoints: harness.Endpoints(a, b)}
	c := newCluster(t, tp, []int{1}, svc)
	addr := addrPort(c.node(1).Addr, 30105)
	c.waitServed(addr, 5*settle)

	conn := c.connTo(addr, "pod1a")
	defer conn.Close()

	svc.Endpoints = []harness.Endpoint{{Pod: a, Terminating: true}, {Pod: b}}
	c.apply(svc)
	c.waitBackends(addr, b)

	t.Run("established flow keeps its backend", func(t *testing.T) {
		for i := range 5 {
			r, err := conn.Get(c.ctx)
			if err != nil {
				t.Fatalf("request %d on the established connection: %v", i, err)
			}
			if r.Pod != "pod1a" {
				t.Errorf("request %d on the established connection answered by %s, want pod1a", i, r.Pod)
			}
		}
	})
	t.Run("new flows avoid it", func(t *testing.T) {
		c := c.with(t)
		tl := c.requests(addr, 24, false, map[string]netip.Addr{"pod1b": netns.ClientIP})
		t.Logf("%s: %s", addr, tl)
	})
}

// TestRemovedBackendKeepsEstablishedFlow removes a backend from the
// EndpointSlice while a connection to it is open and the pod keeps running
// (an endpoint can vanish without going through terminating: a YAML edit, a
// readiness flap, a missed update). The established connection must keep
// reaching that pod, as kube-proxy's conntrack entries do; moving it to
// another backend mid-stream can only end in a reset.
func TestRemovedBackendKeepsEstablishedFlow(t *testing.T) {
	tp := netns.SingleNode(t, 2)
	a, b := tp.Pod("pod1a"), tp.Pod("pod1b")
	svc := harness.Service{Name: "removed", Ports: []harness.Port{http80(30106)}, Endpoints: harness.Endpoints(a, b)}
	c := newCluster(t, tp, []int{1}, svc)
	addr := addrPort(c.node(1).Addr, 30106)
	c.waitServed(addr, 5*settle)
	conn := c.connTo(addr, "pod1a")
	defer conn.Close()

	svc.Endpoints = harness.Endpoints(b)
	c.apply(svc)
	c.waitBackends(addr, b)

	for i := range 3 {
		r, err := conn.Get(c.ctx)
		if err != nil {
			t.Fatalf("request %d on the connection opened before pod1a was removed: %v", i, err)
		}
		if r.Pod != "pod1a" {
			t.Errorf("request %d on the established connection answered by %s, want pod1a", i, r.Pod)
		}
	}
	c.with(t).requests(addr, 12, false, map[string]netip.Addr{"pod1b": netns.ClientIP})
}

// TestConfigReload changes the standalone directory under a running agent:
// a changed NodePort, a new service, a broken file. Each change must reach
// the datapath within settle; a broken file is logged and changes nothing
// else.
func TestConfigReload(t *testing.T) {
	tp := netns.SingleNode(t, 2)
	a, b := tp.Pod("pod1a"), tp.Pod("pod1b")
	first := harness.Service{Name: "first", Ports: []harness.Port{http80(30110)}, Endpoints: harness.Endpoints(a)}
	c := newCluster(t, tp, []int{1}, first)
	agent := c.agents[0]
	node := c.node(1).Addr
	c.waitServed(addrPort(node, 30110), 5*settle)

	servedWithin := func(t *testing.T, addr netip.AddrPort, pod string) {
		t.Helper()
		start := time.Now()
		var r harness.Reply
		err := harness.Eventually(settle, 20*time.Millisecond, func() error {
			var err error
			r, err = c.get(addr)
			if err == nil && r.Pod != pod {
				err = fmt.Errorf("answered by %s, want %s", r.Pod, pod)
			}
			return err
		})
		if err != nil {
			t.Fatalf("%s after the change: %v\nagent log:\n%s", addr, err, agent.Log())
		}
		t.Logf("%s served by %s %s after the change", addr, r.Pod, time.Since(start).Round(time.Millisecond))
	}

	t.Run("changed nodePort", func(t *testing.T) {
		moved := first
		moved.Ports = []harness.Port{http80(30111)}
		c.with(t).apply(moved)
		servedWithin(t, addrPort(node, 30111), "pod1a")
		// The old frontend is gone: the node itself has nothing on that
		// port, so the connection is refused.
		err := harness.Eventually(settle, 20*time.Millisecond, func() error {
			if r, err := c.get(addrPort(node, 30110)); err == nil {
				return fmt.Errorf("old nodePort 30110 still answered by %s", r.Pod)
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	})
	t.Run("new service file", func(t *testing.T) {
		c.with(t).apply(harness.Service{Name: "second", Ports: []harness.Port{http80(30112)}, Endpoints: harness.Endpoints(b)})
		servedWithin(t, addrPort(node, 30112), "pod1b")
	})
	t.Run("broken file", func(t *testing.T) {
		c.m.WriteRaw(t, "broken.yaml", "apiVersion: v1\nkind: Service\nmetadata:\n  name: broken\n spec: [unclosed\n")
		if err := agent.WaitLog("broken.yaml", 5*time.Second); err != nil {
			t.Errorf("broken file not reported: %v", err)
		}
		time.Sleep(settle)
		if !agent.Running() {
			t.Fatalf("agent exited after a broken file: %v\n%s", agent.ExitErr(), agent.Log())
		}
		cc := c.with(t)
		cc.requests(addrPort(node, 30111), 8, false, map[string]netip.Addr{"pod1a": netns.ClientIP})
		cc.requests(addrPort(node, 30112), 8, false, map[string]netip.Addr{"pod1b": netns.ClientIP})
		// Later changes still apply while the broken file is there.
		cc.apply(harness.Service{Name: "third", Ports: []harness.Port{http80(30113)}, Endpoints: harness.Endpoints(a)})
		servedWithin(t, addrPort(node, 30113), "pod1a")
	})
}

// connTo opens kept-alive connections to addr until one is served by pod
// (at most 40 attempts) and returns it.
func (c *cluster) connTo(addr netip.AddrPort, pod string) *harness.HTTPConn {
	c.t.Helper()
	for range 40 {
		hc, err := harness.DialHTTP(c.ctx, c.client(), addr)
		if err != nil {
			c.t.Fatal(err)
		}
		r, err := hc.Get(c.ctx)
		if err != nil {
			hc.Close()
			c.t.Fatal(err)
		}
		if r.Pod == pod {
			return hc
		}
		hc.Close()
	}
	c.t.Fatalf("no connection to %s landed on %s in 40 attempts", addr, pod)
	return nil
}
