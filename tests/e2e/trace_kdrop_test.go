package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/netns"
)

// TestTraceKernelDrops runs `nodegress trace --kernel-drops` on the node
// while a client connects to a NodePort whose only, local, backend has no
// socket on its target port: the datapath translates the SYN and passes it
// up, the pod's kernel drops it, and the trace shows that drop with the
// client's flow, the translated packet, the kernel's reason name and the
// dropping function.
func TestTraceKernelDrops(t *testing.T) {
	tp := netns.SingleNode(t, 1)
	pod := tp.Pod("pod1a")
	const closedPort = 9 // nothing listens there in the pod
	c := newCluster(t, tp, []int{1}, harness.Service{
		Name:      "closed",
		Ports:     []harness.Port{{Name: "http", Port: 80, TargetPort: closedPort, NodePort: 30122}},
		Endpoints: harness.Endpoints(pod),
	})
	agent := c.agents[0]
	frontend := addrPort(c.node(1).Addr, 30122)
	backend := addrPort(pod.Addr, closedPort)

	ctx, cancel := context.WithTimeout(c.ctx, 20*time.Second)
	defer cancel()
	var out, stderr bytes.Buffer
	cmd := agent.TraceCommand(ctx, "--kernel-drops", "--verdict", "drop", "--addr", backend.Addr().String(), "--output", "json", "--count", "1")
	cmd.Stdout = &out
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
wait:
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("nodegress trace: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), stderr.String())
			}
			break wait
		case <-time.After(100 * time.Millisecond):
			if _, err := c.get(frontend); err == nil {
				t.Fatalf("%s answered: want its backend %s refused", frontend, backend)
			}
		}
	}
	t.Logf("nodegress trace --kernel-drops:\n%s", out.String())

	var r struct {
		Type     string `json:"type"`
		Stage    string `json:"stage"`
		Verdict  string `json:"verdict"`
		Reason   string `json:"reason"`
		Device   string `json:"device"`
		Service  string `json:"service"`
		Location string `json:"location"`
		Orig     struct {
			Src, Dst string
		} `json:"orig"`
		Xlated *struct {
			Src, Dst string
		} `json:"xlated"`
	}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("trace line %q: %v", sc.Text(), err)
		}
		if r.Type == "event" {
			break
		}
	}
	if r.Type != "event" || r.Stage != "kernel" || r.Verdict != "DROP" {
		t.Fatalf("got %+v, want a kernel DROP event", r)
	}
	if !regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`).MatchString(r.Reason) {
		t.Errorf("reason %q: want the kernel's name for it", r.Reason)
	}
	if r.Location == "" || strings.HasPrefix(r.Location, "0x") {
		t.Errorf("location %q: want a kernel function", r.Location)
	}
	if !strings.HasPrefix(r.Orig.Src, netns.ClientIP.String()+":") || r.Orig.Dst != frontend.String() {
		t.Errorf("flow %s > %s, want %s:* > %s", r.Orig.Src, r.Orig.Dst, netns.ClientIP, frontend)
	}
	if r.Xlated == nil || r.Xlated.Dst != backend.String() {
		t.Errorf("dropped packet %+v, want one to %s", r.Xlated, backend)
	}
	// The pod's kernel dropped it, in the pod's namespace.
	if !strings.HasPrefix(r.Device, "netns:") {
		t.Errorf("device %q, want the pod's network namespace", r.Device)
	}
	if !strings.Contains(r.Service, "closed") {
		t.Errorf("service %q, want the closed service", r.Service)
	}
}
