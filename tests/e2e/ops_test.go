package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/nodegress/nodegress/loader"
	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/netns"
)

// traceRecord is the part of a `nodegress trace --output json` line the
// tests look at.
type traceRecord struct {
	Type    string `json:"type"`
	Stage   string `json:"stage"`
	Verdict string `json:"verdict"`
	Reason  string `json:"reason"`
	Orig    struct {
		Proto string `json:"proto"`
		Src   string `json:"src"`
		Dst   string `json:"dst"`
	} `json:"orig"`
	Xlated *struct {
		Src string `json:"src"`
		Dst string `json:"dst"`
	} `json:"xlated"`
}

// parseTrace decodes the event lines of `nodegress trace --output json`.
func parseTrace(t *testing.T, out string) []traceRecord {
	t.Helper()
	var rs []traceRecord
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var r traceRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("trace line %q: %v", sc.Text(), err)
		}
		if r.Verdict == loader.VerdictDrop.String() {
			t.Errorf("dropped: %s", sc.Text())
		}
		if r.Type == "event" {
			rs = append(rs, r)
		}
	}
	return rs
}

// runTrace runs `nodegress trace args...` on the agent's node while sending
// requests to addr until the trace exits (it is given --count) or 15 s pass,
// and returns its output.
func runTrace(t *testing.T, c *cluster, agent *harness.Agent, addr netip.AddrPort, args ...string) string {
	t.Helper()
	return runTraceDriving(t, c, agent, func() { _, _ = c.get(addr) }, args...)
}

// runTraceDriving is runTrace with drive making the traffic, every 100 ms.
func runTraceDriving(t *testing.T, c *cluster, agent *harness.Agent, drive func(), args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, 15*time.Second)
	defer cancel()
	var out, stderr bytes.Buffer
	cmd := agent.TraceCommand(ctx, args...)
	cmd.Stdout = &out
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// The trace subscribes asynchronously; keep traffic flowing until it
	// has seen enough.
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("nodegress trace %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out.String(), stderr.String())
			}
			return out.String()
		case <-time.After(100 * time.Millisecond):
			drive()
		}
	}
}

// TestTrace streams datapath decisions with `nodegress trace` while a client
// uses a NodePort: the forward decision and the reply's reverse translation
// both show up, with the client, frontend and backend addresses.
func TestTrace(t *testing.T) {
	tp := netns.SingleNode(t, 1)
	pod := tp.Pod("pod1a")
	c := newCluster(t, tp, []int{1}, harness.Service{Name: "traced", Ports: []harness.Port{http80(30120)}, Endpoints: harness.Endpoints(pod)})
	agent := c.agents[0]
	node := c.node(1)
	frontend := addrPort(node.Addr, 30120)
	backend := addrPort(pod.Addr, harness.PodHTTPPort)
	c.waitServed(frontend, 5*settle)

	t.Run("text", func(t *testing.T) {
		out := runTrace(t, c, agent, frontend, "--count", "10")
		t.Logf("nodegress trace --count 10:\n%s", out)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) < 10 {
			t.Errorf("got %d lines, want at least 10", len(lines))
		}
		var fwd bool
		for _, l := range lines {
			if strings.Contains(l, loader.ReasonFwdLocal.String()) && strings.Contains(l, frontend.String()) && strings.Contains(l, backend.String()) {
				fwd = true
			}
		}
		if !fwd {
			t.Errorf("no line shows %s forwarded to %s (%s)", frontend, backend, loader.ReasonFwdLocal)
		}
	})

	t.Run("json filtered by port", func(t *testing.T) {
		out := runTrace(t, c, agent, frontend, "--output", "json", "--port", "30120", "--count", "20")
		var fwd, reply int
		for _, r := range parseTrace(t, out) {
			switch r.Reason {
			case loader.ReasonFwdLocal.String():
				fwd++
				if r.Orig.Src == "" || !strings.HasPrefix(r.Orig.Src, netns.ClientIP.String()+":") || r.Orig.Dst != frontend.String() {
					t.Errorf("forward event orig %s > %s, want %s:* > %s", r.Orig.Src, r.Orig.Dst, netns.ClientIP, frontend)
				}
				if r.Xlated == nil || r.Xlated.Dst != backend.String() {
					t.Errorf("forward event not translated to %s: %+v", backend, r.Xlated)
				}
			case loader.ReasonReplyLocal.String():
				reply++
				if r.Xlated == nil || r.Xlated.Src != frontend.String() {
					t.Errorf("reply event not translated back to %s: %+v", frontend, r.Xlated)
				}
			}
		}
		if fwd == 0 || reply == 0 {
			t.Errorf("got %d %s and %d %s events, want both:\n%s", fwd, loader.ReasonFwdLocal, reply, loader.ReasonReplyLocal, out)
		}
	})
}

// TestStopAndCleanup stops the agent, checks that the pinned datapath keeps
// forwarding without it, then runs `nodegress cleanup` and checks that
// nothing is left attached or pinned.
func TestStopAndCleanup(t *testing.T) {
	tp := netns.SingleNode(t, 1)
	c := newCluster(t, tp, []int{1}, harness.Service{Name: "web", Ports: []harness.Port{http80(30130)}, Endpoints: harness.Endpoints(tp.Pod("pod1a"))})
	agent := c.agents[0]
	node := c.node(1)
	addr := addrPort(node.Addr, 30130)
	c.waitServed(addr, 5*settle)

	if err := agent.Stop(); err != nil {
		t.Errorf("agent did not exit cleanly on SIGTERM: %v\n%s", err, agent.Log())
	}
	t.Run("datapath forwards without the agent", func(t *testing.T) {
		c := c.with(t)
		c.requests(addr, 5, false, map[string]netip.Addr{"pod1a": netns.ClientIP})
	})

	out, err := agent.Cleanup()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if mode, err := node.XDPMode(node.Dev); err != nil || mode != netns.XDPAttachedNone {
		t.Errorf("after cleanup: xdp mode on %s = %d (%v), want none", node.Dev, mode, err)
	}
	if in, eg, err := node.TCXPrograms(node.Dev); err != nil || in+eg != 0 {
		t.Errorf("after cleanup: %d tcx ingress and %d tcx egress programs on %s (%v), want none", in, eg, node.Dev, err)
	}
	if pins, err := agent.Pins(); err != nil || len(pins) != 0 {
		t.Errorf("after cleanup: pins %v (%v), want none", pins, err)
	}
	// With nothing attached the node's kernel answers: nobody listens there.
	if r, err := c.get(addr); err == nil {
		t.Errorf("after cleanup %s still answered by %s", addr, r.Pod)
	}
	// A second cleanup on a clean directory succeeds too.
	if out, err := agent.Cleanup(); err != nil {
		t.Errorf("second cleanup: %v\n%s", err, out)
	}
}

// TestAgentRestart restarts the agent under an open connection: the
// connection survives, and the restarted agent picks up the pinned state and
// later changes.
func TestAgentRestart(t *testing.T) {
	tp := netns.SingleNode(t, 2)
	a, b := tp.Pod("pod1a"), tp.Pod("pod1b")
	c := newCluster(t, tp, []int{1}, harness.Service{Name: "web", Ports: []harness.Port{http80(30140)}, Endpoints: harness.Endpoints(a)})
	agent := c.agents[0]
	addr := addrPort(c.node(1).Addr, 30140)
	c.waitServed(addr, 5*settle)

	conn, err := harness.DialHTTP(c.ctx, c.client(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Get(c.ctx); err != nil {
		t.Fatal(err)
	}

	agent.Restart()

	for i := range 3 {
		if r, err := conn.Get(c.ctx); err != nil || r.Pod != "pod1a" {
			t.Errorf("request %d on the connection opened before the restart: %v %v", i, r, err)
		}
	}
	c.with(t).requests(addr, 5, false, map[string]netip.Addr{"pod1a": netns.ClientIP})

	c.apply(harness.Service{Name: "web", Ports: []harness.Port{http80(30140)}, Endpoints: harness.Endpoints(b)})
	if err := harness.Eventually(settle, 20*time.Millisecond, func() error {
		r, err := c.get(addr)
		if err == nil && r.Pod != "pod1b" {
			err = fmt.Errorf("answered by %s, want pod1b", r.Pod)
		}
		return err
	}); err != nil {
		t.Errorf("change after restart not applied: %v", err)
	}

	t.Run("changes made while the agent was down", func(t *testing.T) {
		if err := agent.Stop(); err != nil {
			t.Fatalf("stop: %v", err)
		}
		c := c.with(t)
		c.m.Remove(t, svcFile("web"))
		c.apply(harness.Service{Name: "web2", Ports: []harness.Port{http80(30141)}, Endpoints: harness.Endpoints(a)})
		agent.Start()
		if err := harness.Eventually(settle, 20*time.Millisecond, func() error {
			r, err := c.get(addrPort(c.node(1).Addr, 30141))
			if err == nil && r.Pod != "pod1a" {
				err = fmt.Errorf("answered by %s, want pod1a", r.Pod)
			}
			return err
		}); err != nil {
			t.Errorf("service added while the agent was down: %v", err)
		}
		if err := harness.Eventually(settle, 20*time.Millisecond, func() error {
			if r, err := c.get(addr); err == nil {
				return fmt.Errorf("service removed while the agent was down still answered by %s", r.Pod)
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
	})
}
