package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/harness/testcert"
	"github.com/nodegress/nodegress/tests/netns"
)

// clientLoad runs workers that send requests in a loop, each outcome
// counted in the phase it started in: answered 2xx, refused (ECONNREFUSED,
// which a replaced agent must never cause), or failed otherwise. A failed
// request's connection is noted (from net/http's trace), so that requests
// lost with one connection count as one connection lost.
type clientLoad struct {
	name    string
	workers int
	mu      sync.Mutex
	phase   string
	counts  map[string]*loadCounts
	stop    context.CancelFunc
	wg      sync.WaitGroup
}

type loadCounts struct {
	ok, refused, failed int
	// failedConns are the connections failed requests were sent on; one
	// that failed before it had a connection counts as one of its own.
	failedConns map[string]bool
	examples    []string
}

func (c loadCounts) String() string {
	s := fmt.Sprintf("%d 2xx, %d refused, %d failed", c.ok, c.refused, c.failed)
	if len(c.examples) > 0 {
		s += " (first: " + strings.Join(c.examples, "; ") + ")"
	}
	return s
}

// startClientLoad runs workers calling send until stopped.
func startClientLoad(ctx context.Context, name string, workers int, send func(ctx context.Context) error) *clientLoad {
	ctx, cancel := context.WithCancel(ctx)
	l := &clientLoad{name: name, workers: workers, counts: map[string]*loadCounts{}, stop: cancel}
	l.setPhase("before")
	for range workers {
		l.wg.Go(func() {
			for ctx.Err() == nil {
				phase := l.current()
				var conn string
				trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
					conn = fmt.Sprintf("%s %p", i.Conn.LocalAddr(), i.Conn)
				}}
				err := send(httptrace.WithClientTrace(ctx, trace))
				if ctx.Err() != nil {
					return
				}
				l.record(phase, conn, err)
			}
		})
	}
	return l
}

func (l *clientLoad) setPhase(p string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.phase = p
	if l.counts[p] == nil {
		l.counts[p] = &loadCounts{failedConns: map[string]bool{}}
	}
}

func (l *clientLoad) current() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.phase
}

func (l *clientLoad) record(phase, conn string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.counts[phase]
	switch {
	case err == nil:
		c.ok++
		return
	case errors.Is(err, syscall.ECONNREFUSED):
		c.refused++
	default:
		c.failed++
		if conn == "" {
			conn = fmt.Sprintf("no connection #%d", c.failed)
		}
		c.failedConns[conn] = true
	}
	if len(c.examples) < 3 {
		c.examples = append(c.examples, time.Now().Format("15:04:05.000")+" "+err.Error())
	}
}

func (l *clientLoad) get(phase string) loadCounts {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c := l.counts[phase]; c != nil {
		return *c
	}
	return loadCounts{}
}

// waitOK waits until the current phase has n answers.
func (l *clientLoad) waitOK(t *testing.T, n int) {
	t.Helper()
	phase := l.current()
	if err := harness.Eventually(20*time.Second, 20*time.Millisecond, func() error {
		if c := l.get(phase); c.ok < n {
			return fmt.Errorf("%s load, phase %s: %s, want %d 2xx", l.name, phase, c, n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func (l *clientLoad) finish() { l.stop(); l.wg.Wait() }

// handoverLoads are HTTP/1.1 (kept-alive and one connection per request),
// HTTP/2 over TLS, and HTTPS with a new TLS connection per request, all to
// the node's address.
type handoverLoads struct {
	loads []*clientLoad
	h1    *harness.RouteLoad
}

func startHandoverLoads(t *testing.T, c *l7cluster, ca *testcert.CA, timeout time.Duration) *handoverLoads {
	t.Helper()
	h := &handoverLoads{}
	h.h1 = harness.StartRouteLoad(c.ctx, c.tp.Client.NS, addrPort(c.node1().Addr, 80), []string{"web.handover.test"},
		harness.RouteLoadConfig{KeepAlive: 2, NewConn: 2, Timeout: timeout, Phase: "before"})
	h2 := c.nodeClient(harness.L7Options{RootCAs: ca.Pool(), HTTP2: true, Timeout: timeout})
	tlsNew := c.nodeClient(harness.L7Options{RootCAs: ca.Pool(), DisableKeepAlives: true, Timeout: timeout})
	expect2xx := func(cl *harness.L7Client, url string) func(context.Context) error {
		return func(ctx context.Context) error {
			r, err := cl.Get(ctx, url)
			if err != nil {
				return err
			}
			if r.StatusCode/100 != 2 {
				return fmt.Errorf("HTTP %d (%s)", r.StatusCode, r.Proto)
			}
			return nil
		}
	}
	h.loads = []*clientLoad{
		startClientLoad(c.ctx, "h2", 4, expect2xx(h2, "https://web.handover.test/h2")),
		startClientLoad(c.ctx, "tls-new", 2, expect2xx(tlsNew, "https://web.handover.test/tls")),
	}
	t.Cleanup(h.finish)
	for _, l := range h.loads {
		l.waitOK(t, 20)
	}
	return h
}

func (h *handoverLoads) phase(p string) {
	h.h1.Phase(p)
	for _, l := range h.loads {
		l.setPhase(p)
	}
}

func (h *handoverLoads) waitOK(t *testing.T, n int) {
	t.Helper()
	for _, l := range h.loads {
		l.waitOK(t, n)
	}
	if err := harness.Eventually(20*time.Second, 20*time.Millisecond, func() error {
		if p := h.h1.Current(); p.OK < n {
			return fmt.Errorf("http/1.1 load: %s", p)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

var finishOnce sync.Map

func (h *handoverLoads) finish() {
	if _, done := finishOnce.LoadOrStore(h, true); done {
		return
	}
	h.h1.Stop()
	for _, l := range h.loads {
		l.finish()
	}
}

// handoverCluster serves web.handover.test over HTTP and HTTPS from two
// pods, with an agent started with args.
func handoverCluster(t *testing.T, tp *netns.Topology, args ...string) (*l7cluster, *testcert.CA) {
	t.Helper()
	ca, err := testcert.NewCA("nodegress handover CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue("web.handover.test")
	if err != nil {
		t.Fatal(err)
	}
	ing := harness.Ingress{
		Name:  "web",
		TLS:   []harness.IngressTLS{{Hosts: []string{"web.handover.test"}, SecretName: "web-cert"}},
		Rules: []harness.IngressRule{rule("web.handover.test", path("/", "web"))},
	}
	c := newL7ClusterArgs(t, tp, []harness.Service{svc("web", tp.Pod("pod1a"), tp.Pod("pod1b"))}, args)
	c.m.Write(t, "secret-web-cert.yaml", harness.TLSSecretYAML("default", "web-cert", leaf.CertPEM, leaf.KeyPEM))
	c.applyIngress(ing)
	c.waitFor(t, c.nodeClient(harness.L7Options{RootCAs: ca.Pool()}), "https://web.handover.test/ready", 5*settle, servedBy("pod1a", "pod1b"))
	return c, ca
}

// TestAgentHandover replaces a running agent by a new one under HTTP/1.1,
// HTTP/2 and TLS load, as a DaemonSet rolling update with maxSurge does:
// the new agent takes the proxy's listening sockets over, the old one
// drains. No request fails and no connection is refused, before, during
// or after, and a WebSocket opened before is served until it closes.
func TestAgentHandover(t *testing.T) {
	c, ca := handoverCluster(t, netns.SingleNode(t, 2))
	old := c.agent
	loads := startHandoverLoads(t, c, ca, harness.RequestTimeout)
	ws, err := harness.DialWebSocket(c.ctx, c.tp.Client.NS, addrPort(c.node1().Addr, 80), "web.handover.test", "/ws")
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if _, err := ws.Echo("before"); err != nil {
		t.Fatal(err)
	}

	loads.phase("handover")
	successor := old.StartSuccessor()
	if err := old.WaitLog("the new agent serves; draining", 10*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, old.Log())
	}
	// The WebSocket stays with the old agent, which drains it: it works
	// until its client closes it, which ends the drain.
	loads.waitOK(t, 20)
	if got, err := ws.Echo("during the drain"); err != nil || !strings.Contains(got, "echo=during the drain") {
		t.Errorf("WebSocket opened before the handover: %q %v", got, err)
	}
	ws.Close()
	if err := old.WaitLog("handed over and drained", 10*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, old.Log())
	}

	// The old agent, idle now, stops cleanly; the successor serves alone.
	loads.phase("after")
	if err := old.Stop(); err != nil {
		t.Errorf("old agent: %v\n%s", err, old.Log())
	}
	loads.waitOK(t, 50)
	if !successor.Running() {
		t.Fatalf("successor exited: %v", successor.ExitErr())
	}
	// The successor follows changes: a new path answers 404 → 200.
	c.applyIngress(harness.Ingress{Name: "web2", Rules: []harness.IngressRule{rule("new.handover.test", path("/", "web"))}})
	c.waitFor(t, c.nodeClient(harness.L7Options{}), "http://new.handover.test/", 5*settle, servedBy("pod1a", "pod1b"))

	loads.finish()
	for _, p := range loads.h1.Stop() {
		t.Logf("http/1.1 %s", p)
		if p.Failed() > 0 {
			t.Errorf("http/1.1 load, phase %s: %d requests failed: %s", p.Name, p.Failed(), p)
		}
	}
	for _, l := range loads.loads {
		for _, phase := range []string{"before", "handover", "after"} {
			cnt := l.get(phase)
			t.Logf("%s load, phase %s: %s", l.name, phase, cnt)
			if cnt.refused > 0 || cnt.failed > 0 || cnt.ok == 0 {
				t.Errorf("%s load, phase %s: %s", l.name, phase, cnt)
			}
		}
	}
}

// TestAgentKilled kills the agent with SIGKILL while a keeper process holds
// its listeners: connections made until a new agent runs wait in the
// listeners' accept queue and are answered; none is refused. What the
// killed process had is lost: the requests in flight on its connections
// and, on an HTTP/2 connection its workers share, the requests the client
// sent on it before it saw it reset. That is at most one connection per
// client worker (one per request for HTTP/1.1, whose client sends nothing
// more on a connection that failed).
func TestAgentKilled(t *testing.T) {
	tp := netns.SingleNode(t, 2)
	dir, err := os.MkdirTemp("", "ng-keeper-") // unix socket paths are short
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "keeper.sock")
	startKeeper(t, tp.Nodes[0], sock)
	c, ca := handoverCluster(t, tp, "--listener-keeper", sock)
	if err := c.agent.WaitLog("listeners kept", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// The clients wait longer than a new agent takes to start: what they
	// sent meanwhile waits in the kept listeners' queues.
	loads := startHandoverLoads(t, c, ca, 15*time.Second)

	loads.phase("killed")
	c.agent.Kill()
	killed := time.Now()
	c.agent.Start()
	t.Logf("new agent ready %s after the kill", time.Since(killed).Round(time.Millisecond))
	loads.phase("after")
	loads.waitOK(t, 50)

	// Requests in flight at the kill count in the phase they started in:
	// "before" or "killed".
	loads.finish()
	lostH1 := 0
	for _, p := range loads.h1.Stop() {
		t.Logf("http/1.1 %s", p)
		if p.Name != "after" {
			lostH1 += p.Failed()
		}
		if p.Refused > 0 || (p.Name == "after" && p.Failed() > 0) {
			t.Errorf("http/1.1 load, phase %s: %s", p.Name, p)
		}
	}
	if lostH1 > 4 {
		t.Errorf("http/1.1 load: %d requests lost to the kill, more than its 4 workers had in flight", lostH1)
	}
	for _, l := range loads.loads {
		lost := map[string]bool{}
		for _, phase := range []string{"before", "killed", "after"} {
			cnt := l.get(phase)
			t.Logf("%s load, phase %s: %s", l.name, phase, cnt)
			if phase != "after" {
				maps.Copy(lost, cnt.failedConns)
			}
			if cnt.refused > 0 || (phase == "after" && (cnt.failed > 0 || cnt.ok == 0)) {
				t.Errorf("%s load, phase %s: %s", l.name, phase, cnt)
			}
		}
		if len(lost) > l.workers {
			t.Errorf("%s load: requests lost on %d connections, more than its %d workers had: %v",
				l.name, len(lost), l.workers, slices.Sorted(maps.Keys(lost)))
		}
	}
}

// startKeeper runs `nodegress keep-listeners` in node's namespace until the
// test ends.
func startKeeper(t *testing.T, node *netns.Node, sock string) {
	t.Helper()
	cmd := node.Command(context.Background(), harness.Nodegress(t), "keep-listeners", "--socket", sock)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("==== keeper log:\n%s", out.String())
		}
	})
	if err := harness.Eventually(5*time.Second, 10*time.Millisecond, func() error {
		return exec.Command("test", "-S", sock).Run()
	}); err != nil {
		t.Fatalf("keeper socket %s: %v\n%s", sock, err, out.String())
	}
}
