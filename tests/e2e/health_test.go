package e2e

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"

	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/netns"
)

// TestAgentHealth: on a working node /healthz and /readyz answer 200 —
// which takes the proxy's listeners answering their probes, the sync
// loop and the datapath; once another tool detaches the datapath's tc
// ingress program from the node's device, both fail.
func TestAgentHealth(t *testing.T) {
	tp := netns.TwoNodes(t, 1, 0)
	site := harness.Ingress{Name: "site", Rules: []harness.IngressRule{rule("health.test", path("/", "web"))}}
	c := newL7ClusterArgs(t, tp, []harness.Service{svc("web", tp.Pod("pod1a"))}, nil, site)
	metrics := harness.NewL7Client(c.node1().NS, netip.MustParseAddr("127.0.0.1"), harness.L7Options{})
	status := func(path string) (int, string) {
		r, err := metrics.Get(c.ctx, "http://"+metricsAddr+path)
		if err != nil {
			return 0, err.Error()
		}
		return r.StatusCode, string(r.Body)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := status(path); code != 200 {
			t.Fatalf("%s on a working node: %d %q", path, code, body)
		}
	}
	pin := filepath.Join(c.agent.PinDir(), "links", c.node1().Dev+"_tcx-ingress")
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		pins, _ := c.agent.Pins()
		t.Fatalf("pinned tc ingress link: %v (pins %v)", err, pins)
	}
	defer l.Close()
	if err := l.Detach(); err != nil {
		t.Fatalf("detach: %v", err)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		err := harness.Eventually(5*settle, 50*time.Millisecond, func() error {
			if code, body := status(path); code != 503 {
				return fmt.Errorf("%d %q", code, body)
			}
			return nil
		})
		if err != nil {
			t.Errorf("%s with the tc ingress program detached: %v, want 503", path, err)
		}
	}
}
