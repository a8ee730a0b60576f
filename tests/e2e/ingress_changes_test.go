package e2e

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/netns"
)

// TestIngressHotChanges applies 100 changes to the standalone YAML, 20-50
// ms apart, alternately an Ingress path added and another removed, and an
// endpoint added to or removed from the EndpointSlice (never all of them),
// while four workers send keep-alive requests, a WebSocket and a kept-alive
// connection stay open. No request may fail, the WebSocket and the
// connection must survive, and the last configuration must be served
// within applyWithin of the last change.
func TestIngressHotChanges(t *testing.T) {
	tp := netns.TwoNodes(t, 2, 2)
	p1a, p1b, p2a, p2b := tp.Pod("pod1a"), tp.Pod("pod1b"), tp.Pod("pod2a"), tp.Pod("pod2b")
	// "hot" always has pod1a and pod2a; pod1b comes and goes.
	hotSvc := func(withB bool) harness.Service {
		pods := []*netns.Pod{p1a, p2a}
		if withB {
			pods = append(pods, p1b)
		}
		return svc("hot", pods...)
	}
	// The Ingress always routes "/" and "/stable"; "/v<i>" is the path
	// added by change i, removing the one change i-2 added.
	hotIngress := func(i int) harness.Ingress {
		paths := []harness.IngressPath{path("/", "hot"), path("/stable", "stable")}
		if i >= 0 {
			paths = append(paths, path(fmt.Sprintf("/v%d", i), "extra", "Exact"))
		}
		return harness.Ingress{Name: "hot", Rules: []harness.IngressRule{rule("hot.test", paths...)}}
	}
	c := newL7Cluster(t, tp, []harness.Service{hotSvc(false), svc("stable", p2b), svc("extra", p2b)}, hotIngress(-1))
	addr := addrPort(c.node1().Addr, 80)
	hotPods := []string{"pod1a", "pod2a", "pod1b"}

	// Long-lived connections, opened before any change.
	ws, err := harness.DialWebSocket(c.ctx, c.client(), addr, "hot.test", "/ws")
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	wsEcho := func(when string) {
		t.Helper()
		msg := "ping " + when
		got, err := ws.Echo(msg)
		if err != nil {
			t.Errorf("websocket %s: %v", when, err)
			return
		}
		if !strings.HasSuffix(got, " echo="+msg) {
			t.Errorf("websocket %s: got %q", when, got)
		}
	}
	wsEcho("before the changes")
	kept, err := harness.DialL7(c.ctx, c.client(), addr, "hot.test")
	if err != nil {
		t.Fatal(err)
	}
	defer kept.Close()
	keptGet := func(when string) {
		t.Helper()
		r, err := kept.Get(c.ctx, "/stable/kept")
		if err != nil {
			t.Errorf("kept-alive connection %s: %v", when, err)
			return
		}
		if err := servedBy("pod2b")(r); err != nil {
			t.Errorf("kept-alive connection %s: %v", when, err)
		}
	}
	keptGet("before the changes")

	// Workers: keep-alive requests to paths no change touches, each on
	// one raw connection. Unlike net/http, which retries an idempotent
	// request on a new connection when the proxy closed the old one (and
	// drops a kept-alive connection of its own when its writer goroutine
	// is slow to report the request written), a raw connection the proxy
	// closes fails the request on it.
	const workers, maxPerWorker = 4, 20000
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		total    int
		dials    int
		byPod    = map[string]int{}
		failures []string
	)
	stop := make(chan struct{})
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var conn *harness.L7Conn
			defer func() {
				if conn != nil {
					conn.Close()
				}
			}()
			for i := range maxPerWorker {
				select {
				case <-stop:
					return
				default:
				}
				path, want := fmt.Sprintf("/w%d/%d", w, i), hotPods
				if i%2 == 1 {
					path, want = fmt.Sprintf("/stable/w%d/%d", w, i), []string{"pod2b"}
				}
				at := time.Now()
				var (
					r   *harness.L7Response
					err error
				)
				if conn == nil {
					mu.Lock()
					dials++
					mu.Unlock()
					conn, err = harness.DialL7(c.ctx, c.client(), addr, "hot.test")
				}
				if err == nil {
					r, err = conn.Get(c.ctx, path)
					if err != nil {
						conn.Close()
						conn = nil
					} else {
						err = servedBy(want...)(r)
					}
				}
				mu.Lock()
				total++
				if err != nil {
					failures = append(failures, fmt.Sprintf("%s GET %s (request %d of worker %d): %v", at.Format("15:04:05.000"), path, i, w, err))
				} else {
					byPod[r.Pod()]++
				}
				mu.Unlock()
			}
		}()
	}

	const changes = 100
	withB := false
	start := time.Now()
	var last time.Time
	for i := range changes {
		if i%2 == 0 {
			c.applyIngress(hotIngress(i))
		} else {
			withB = !withB
			c.apply(hotSvc(withB))
		}
		last = time.Now()
		if i%25 == 24 {
			wsEcho(fmt.Sprintf("after change %d", i))
		}
		time.Sleep(time.Duration(20+(i*7)%31) * time.Millisecond)
	}
	changed := time.Since(start)

	// The workers stop first: they share the upstream's round-robin with
	// the checks below, whose few requests could otherwise all miss pod1b
	// while it is still an endpoint.
	close(stop)
	wg.Wait()

	// The last configuration: path /v98 to "extra", /v96 gone (so "/"
	// serves it), and pod1b out of "hot" (the 50th toggle): of 6
	// consecutive requests round-robin over three endpoints, some would
	// go to pod1b.
	if withB {
		t.Fatal("test bug: the last change should have removed pod1b")
	}
	cl := c.nodeClient(harness.L7Options{})
	var applied time.Duration
	err = harness.Eventually(2*applyWithin, 10*time.Millisecond, func() error {
		applied = time.Since(last)
		r, err := cl.Get(c.ctx, "http://hot.test/v98")
		if err != nil {
			return err
		}
		if err := servedBy("pod2b")(r); err != nil {
			return fmt.Errorf("/v98: %w", err)
		}
		r, err = cl.Get(c.ctx, "http://hot.test/v96")
		if err != nil {
			return err
		}
		if err := servedBy("pod1a", "pod2a")(r); err != nil {
			return fmt.Errorf("/v96: %w", err)
		}
		for range 6 {
			r, err := cl.Get(c.ctx, "http://hot.test/final")
			if err != nil {
				return err
			}
			if err := servedBy("pod1a", "pod2a")(r); err != nil {
				return fmt.Errorf("/final: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		t.Errorf("last configuration not served: %v", err)
	} else {
		t.Logf("last configuration served %s after the last change", applied.Round(time.Millisecond))
		if applied > applyWithin {
			t.Errorf("last configuration served %s after the last change, want within %s", applied.Round(time.Millisecond), applyWithin)
		}
	}

	t.Logf("%d changes in %s; %d requests by %d workers on %d connections, answered by %v, %d failed",
		changes, changed.Round(time.Millisecond), total, workers, dials, byPod, len(failures))
	// Each worker kept its one connection: none was closed by the proxy.
	if dials != workers {
		t.Errorf("the workers opened %d connections, want %d: the proxy closed kept-alive connections during the changes", dials, workers)
	}
	if len(failures) > 0 {
		t.Errorf("%d of %d requests failed during the changes:\n%s", len(failures), total, strings.Join(failures[:min(len(failures), 20)], "\n"))
	}
	if total < 100 {
		t.Errorf("only %d requests during the changes", total)
	}
	for _, p := range []string{"pod1a", "pod2a", "pod1b", "pod2b"} {
		if byPod[p] == 0 {
			t.Errorf("%s answered none of the requests: %v", p, byPod)
		}
	}
	wsEcho("after all changes")
	keptGet("after all changes")

	// Settled: pod1b gets nothing any more.
	tl := map[string]int{}
	for i := range 12 {
		if r := c.expect(t, cl, fmt.Sprintf("http://hot.test/settled/%d", i), servedBy("pod1a", "pod2a")); r != nil {
			tl[r.Pod()]++
		}
	}
	if keys := keys(tl); !slices.Equal(keys, []string{"pod1a", "pod2a"}) {
		t.Errorf("after the changes hot.test answered by %v, want pod1a and pod2a", tl)
	}
}
