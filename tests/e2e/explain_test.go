package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nodegress/nodegress/explain"
	"github.com/nodegress/nodegress/loader"
	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/netns"
)

// runExplain runs `nodegress explain --output json` on the agent's node
// and decodes its answer.
func runExplain(t *testing.T, c *l7cluster, args ...string) explain.Answer {
	t.Helper()
	out := explainOutput(t, c, append([]string{"--output", "json"}, args...)...)
	var a explain.Answer
	if err := json.Unmarshal(out, &a); err != nil {
		t.Fatalf("nodegress explain %v: %v\n%s", args, err, out)
	}
	return a
}

// explainOutput runs `nodegress explain` with args on the agent's node.
func explainOutput(t *testing.T, c *l7cluster, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	defer cancel()
	// The agent's explain socket is next to its trace socket.
	sock := filepath.Join(filepath.Dir(c.agent.Socket), "explain.sock")
	cmd := c.agent.Node.Command(ctx, harness.Nodegress(t), append([]string{"explain", "--socket", sock}, args...)...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("nodegress explain %v: %v\n%s", args, err, stderr.String())
	}
	t.Logf("nodegress explain %s:\n%s", strings.Join(args, " "), out.String())
	return out.Bytes()
}

// runExplainText runs `nodegress explain` on the agent's node and returns
// its text output.
func runExplainText(t *testing.T, c *l7cluster, args ...string) string {
	t.Helper()
	return string(explainOutput(t, c, args...))
}

// verdictOf is the one frontend's verdict of a.
func verdictOf(t *testing.T, a explain.Answer) explain.Verdict {
	t.Helper()
	if len(a.Frontends) != 1 {
		t.Fatalf("%d frontends in the answer for %s, want 1", len(a.Frontends), a.Target)
	}
	return a.Frontends[0].Verdict
}

// TestExplain asks the agent about a working NodePort, a Service without
// endpoints, an externalTrafficPolicy Local Service on a node without
// local endpoint, a LoadBalancer IP refusing the client by its source
// ranges, and Ingress paths with and without a route, and checks every
// answer against a real request on the same path: the forwarded ones are
// served, the refused ones fail the way the answer says.
func TestExplain(t *testing.T) {
	tp := netns.TwoNodes(t, 1, 1)
	pod1, pod2 := tp.Pod("pod1a"), tp.Pod("pod2a")
	svcs := []harness.Service{
		{Name: "web", Ports: []harness.Port{http80(30190)}, Endpoints: harness.Endpoints(pod1)},
		{Name: "empty", Ports: []harness.Port{http80(30191)}},
		{Name: "local", Ports: []harness.Port{http80(30192)}, ExternalTrafficPolicy: "Local", Endpoints: harness.Endpoints(pod2)},
		{Name: "guarded", Type: "LoadBalancer", Ports: []harness.Port{http80(30193)}, LoadBalancerIPs: []netip.Addr{lbIP},
			LoadBalancerSourceRanges: []string{"203.0.113.0/24"}, Endpoints: harness.Endpoints(pod1)},
		svc("shop", pod1),
	}
	ing := harness.Ingress{Name: "shop", Rules: []harness.IngressRule{rule("shop.example", path("/cart", "shop"))}}
	c := newL7Cluster(t, tp, svcs, ing)
	node := c.node1().Addr
	c.waitServed(addrPort(node, 30190), 5*settle)
	client := netns.ClientIP.String()

	// fails sends one request and returns its error, which must be one.
	fails := func(t *testing.T, addr netip.AddrPort) error {
		t.Helper()
		ctx, cancel := context.WithTimeout(c.ctx, 2*time.Second)
		defer cancel()
		r, err := harness.HTTPGet(ctx, c.client(), addr)
		if err == nil {
			t.Errorf("%s answered by %s, want the request to fail", addr, r.Pod)
		}
		return err
	}

	t.Run("working NodePort", func(t *testing.T) {
		a := runExplain(t, c, "--from", client, addrPort(node, 30190).String())
		v := verdictOf(t, a)
		want := netip.AddrPortFrom(pod1.Addr, harness.PodHTTPPort).String()
		if v.Action != "forward" || v.Reason != "fwd_local" || !strings.Contains(v.Text, want) {
			t.Errorf("verdict %+v, want forward fwd_local to %s", v, want)
		}
		if f := a.Frontends[0]; f.Service != "default/web:http/TCP" || f.Kind != "L4" || len(f.Backends) != 1 || f.Backends[0].Address != want || !f.Backends[0].Local {
			t.Errorf("frontend %+v", f)
		} else if b := f.Backends[0]; b.Pod != "default/"+pod1.Name || b.Node != pod1.Node.Name {
			t.Errorf("backend named %q on %q, want default/%s on %s", b.Pod, b.Node, pod1.Name, pod1.Node.Name)
		}
		text := runExplainText(t, c, "--from", client, addrPort(node, 30190).String())
		if !strings.Contains(text, "verdict: forward (fwd_local") || !strings.Contains(text, want) {
			t.Errorf("text output:\n%s\nwant the verdict and the backend %s", text, want)
		}
		if r, err := c.get(addrPort(node, 30190)); err != nil || r.Pod != pod1.Name {
			t.Errorf("request: %+v, %v; want an answer from %s", r, err, pod1.Name)
		}
	})
	t.Run("no endpoints", func(t *testing.T) {
		v := verdictOf(t, runExplain(t, c, "--from", client, "--proto", "tcp", "default/empty"))
		if v.Action != "reject" || v.Reason != "reject_no_backend" {
			t.Errorf("verdict %+v, want reject reject_no_backend", v)
		}
		if err := fails(t, addrPort(node, 30191)); err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("request failed with %v, want connection refused", err)
		}
	})
	t.Run("Local policy without a local endpoint", func(t *testing.T) {
		before := counted(t, c.agent, loader.ReasonDropNoBackend)
		v := verdictOf(t, runExplain(t, c, "--from", client, addrPort(node, 30192).String()))
		if v.Action != "drop" || v.Reason != "drop_no_backend" || !strings.Contains(v.Text, "externalTrafficPolicy Local") {
			t.Errorf("verdict %+v, want drop drop_no_backend for the Local policy", v)
		}
		if err := fails(t, addrPort(node, 30192)); errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("request refused, want it dropped unanswered")
		}
		after := verdictOf(t, runExplain(t, c, "--from", client, addrPort(node, 30192).String()))
		if after.Counted == nil || *after.Counted <= before {
			t.Errorf("drop_no_backend counted %v after the request, %d before", after.Counted, before)
		}
	})
	t.Run("source range", func(t *testing.T) {
		a := runExplain(t, c, "--from", client, "default/guarded:http")
		var lb, np *explain.FrontendAnswer
		for i, f := range a.Frontends {
			switch f.Frontend {
			case addrPort(lbIP, 80).String():
				lb = &a.Frontends[i]
			case addrPort(node, 30193).String():
				np = &a.Frontends[i]
			}
		}
		if lb == nil || np == nil {
			t.Fatalf("frontends %+v, want the LB IP and the NodePort", a.Frontends)
		}
		if lb.Verdict.Reason != "drop_source_range" || !strings.Contains(lb.Verdict.Text, client) || !lb.Restricted {
			t.Errorf("LB IP verdict %+v, want drop_source_range for %s", lb.Verdict, client)
		}
		if np.Verdict.Reason != "fwd_local" || np.Restricted {
			t.Errorf("NodePort verdict %+v, want fwd_local: ranges restrict the LB IP only", np.Verdict)
		}
		fails(t, addrPort(lbIP, 80))
		if r, err := c.get(addrPort(node, 30193)); err != nil || r.Pod != pod1.Name {
			t.Errorf("NodePort of the same service: %+v, %v", r, err)
		}
		in := runExplain(t, c, "--from", "203.0.113.9", addrPort(lbIP, 80).String())
		if v := verdictOf(t, in); v.Reason != "fwd_local" {
			t.Errorf("client inside the ranges: %+v, want fwd_local", v)
		}
	})
	cl := c.nodeClient(harness.L7Options{})
	t.Run("Ingress route", func(t *testing.T) {
		a := runExplain(t, c, "--from", client, "--via", addrPort(node, 80).String(), "shop.example/cart/items")
		r := a.Route
		if r == nil || r.Reason != "forward" || r.Source != "default/shop" || len(r.Backends) != 1 {
			t.Fatalf("route %+v, want forward by default/shop", r)
		}
		want := netip.AddrPortFrom(pod1.Addr, harness.PodHTTPPort).String()
		if eps := r.Backends[0].Endpoints; len(eps) != 1 || eps[0] != want {
			t.Errorf("endpoints %v, want %s", eps, want)
		}
		if v := verdictOf(t, a); v.Action != "steer" || v.Reason != "pass_l7" {
			t.Errorf("frontend verdict %+v, want steer pass_l7", v)
		}
		c.expect(t, cl, "http://shop.example/cart/items", servedBy(pod1.Name))
	})
	t.Run("no route", func(t *testing.T) {
		r := runExplain(t, c, "--from", client, "shop.example/checkout").Route
		if r == nil || r.Status != 404 || r.Reason != "no_route" {
			t.Errorf("route %+v, want 404 no_route", r)
		}
		c.expect(t, cl, "http://shop.example/checkout", status(404))
	})
}
