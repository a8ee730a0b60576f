package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// record is the part of a tagged JSON record the tests look at.
type record struct {
	AgentNode string `json:"agent_node"`
	Type      string `json:"type"`
	Seq       int    `json:"seq"`
}

func event(seq int) string { return fmt.Sprintf(`{"type":"event","seq":%d}`, seq) }

func TestTraceTagsEveryRecordWithItsNode(t *testing.T) {
	ex := &fakeExec{nodes: map[string]func(context.Context, io.Reader, io.Writer, io.Writer) error{
		"node1": writeLines(event(1), event(2), `{"type":"lost","lost":3}`, event(3)),
		"node2": writeLines(event(1), event(2)),
		"node3": writeLines(`{}`, ` {"type":"request","node":"node1"} `),
	}}
	code, out, errOut := runPlugin(t, context.Background(), agentPods("node1", "node2", "node3"), ex, "trace", "--output", "json")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	seqs := map[string][]int{}
	types := map[string][]string{}
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		var r record
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("output line %q: %v", l, err)
		}
		types[r.AgentNode] = append(types[r.AgentNode], r.Type)
		if r.Type == "event" {
			seqs[r.AgentNode] = append(seqs[r.AgentNode], r.Seq)
		}
	}
	// Each node's records in its own order, under its own name; a
	// record's own "node" (here node1) is left alone.
	want := map[string][]string{
		"node1": {"event", "event", "lost", "event"},
		"node2": {"event", "event"},
		"node3": {"", "request"},
	}
	for n, w := range want {
		if !slices.Equal(types[n], w) {
			t.Errorf("records of %s: %q, want %q\noutput:\n%s", n, types[n], w, out)
		}
	}
	if !slices.Equal(seqs["node1"], []int{1, 2, 3}) || !slices.Equal(seqs["node2"], []int{1, 2}) {
		t.Errorf("events out of their node's order: %v", seqs)
	}
	if !strings.Contains(out, `{"agent_node":"node3","type":"request","node":"node1"}`) {
		t.Errorf("a record's own node field was changed:\n%s", out)
	}
}

func TestTraceTextPrefixesTheNode(t *testing.T) {
	ex := &fakeExec{nodes: map[string]func(context.Context, io.Reader, io.Writer, io.Writer) error{
		"n1":        writeLines("10:00:00.000001 eth0 xdp TX fwd_remote tcp 1.2.3.4:5 > 10.0.0.1:30080"),
		"node-long": writeLines("10:00:00.000002 eth0 tc-ingress PASS pass tcp 1.2.3.4:6 > 10.0.0.2:80"),
	}}
	code, out, errOut := runPlugin(t, context.Background(), agentPods("n1", "node-long"), ex, "trace")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	for _, want := range []string{
		"n1        10:00:00.000001 eth0 xdp TX fwd_remote tcp 1.2.3.4:5 > 10.0.0.1:30080\n",
		"node-long 10:00:00.000002 eth0 tc-ingress PASS pass tcp 1.2.3.4:6 > 10.0.0.2:80\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if got := ex.cmd("n1"); !slices.Contains(got, "text") {
		t.Errorf("agent asked for %q, want its text output", got)
	}
}

// Records are merged as they arrive: a node's record is out before another
// node's later record exists, not held back until its node's stream ends.
func TestTraceMergesInArrivalOrder(t *testing.T) {
	var out syncBuffer
	step := make(chan struct{})
	ex := &fakeExec{nodes: map[string]func(context.Context, io.Reader, io.Writer, io.Writer) error{
		"node1": func(_ context.Context, _ io.Reader, stdout, _ io.Writer) error {
			io.WriteString(stdout, event(1)+"\n")
			if err := out.waitFor(`"agent_node":"node1","type":"event","seq":1`); err != nil {
				return err
			}
			close(step)
			if err := out.waitFor(`"agent_node":"node2","type":"event","seq":2`); err != nil {
				return err
			}
			io.WriteString(stdout, event(3)+"\n")
			return nil
		},
		"node2": func(_ context.Context, _ io.Reader, stdout, _ io.Writer) error {
			<-step
			io.WriteString(stdout, event(2)+"\n")
			return nil
		},
	}}
	f := &fanOut{exec: ex, out: &out, errOut: io.Discard, json: true, grace: time.Second}
	agents := []agent{{Node: "node1"}, {Node: "node2"}}
	if failed, err := f.run(context.Background(), agents, nil); failed != 0 || err != nil {
		t.Fatalf("run: %d failed, %v", failed, err)
	}
	var seqs []int
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var r record
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, r.Seq)
	}
	if !slices.Equal(seqs, []int{1, 2, 3}) {
		t.Errorf("merged order %v, want [1 2 3] (as written)", seqs)
	}
}

func TestTraceReportsAFailingNodeAndKeepsTheOthers(t *testing.T) {
	ex := &fakeExec{nodes: map[string]func(context.Context, io.Reader, io.Writer, io.Writer) error{
		"node1": writeLines(event(1)),
		"node2": func(_ context.Context, _ io.Reader, _, stderr io.Writer) error {
			io.WriteString(stderr, "nodegress trace: no agent listening on /run/nodegress/trace.sock\n")
			return errors.New("command terminated with exit code 1")
		},
		"node3": writeLines(event(1)),
	}}
	// node4 has no agent at all.
	code, out, errOut := runPlugin(t, context.Background(), agentPods("node1", "node2", "node3"), ex,
		"trace", "-o", "json", "--node", "node1,node2", "--node", "node3", "--node", "node4")
	if code != 1 {
		t.Errorf("exit %d, want 1 (nodes failed)", code)
	}
	for _, n := range []string{"node1", "node3"} {
		if !strings.Contains(out, `{"agent_node":"`+n+`","type":"event","seq":1}`) {
			t.Errorf("no record of %s beside the failing node:\n%s", n, out)
		}
	}
	if strings.Contains(out, "node2") {
		t.Errorf("output has a record of the failing node2:\n%s", out)
	}
	for _, want := range []string{
		"node node2: nodegress trace: no agent listening on /run/nodegress/trace.sock (command terminated with exit code 1)",
		"node node4: no agent pod",
		"2 of 4 nodes could not be traced",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
}

func TestTracePassesFlagsThrough(t *testing.T) {
	ex := &fakeExec{nodes: map[string]func(context.Context, io.Reader, io.Writer, io.Writer) error{
		"node1": writeLines(),
	}}
	code, _, errOut := runPlugin(t, context.Background(), agentPods("node1"), ex,
		"trace", "--kubeconfig", "/nowhere", "--context", "c", "--service", "default/web",
		"-o", "json", "--requests", "--request-id", "abc", "--duration=1m", "--some-future-flag=x")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	want := []string{"/nodegress", "trace", "--stop-on-stdin-eof", "--output", "json", "--duration", "1m0s",
		"--service", "default/web", "--requests", "--request-id", "abc", "--some-future-flag=x"}
	if got := ex.cmd("node1"); !slices.Equal(got, want) {
		t.Errorf("agent command\n %q\nwant\n %q", got, want)
	}
}

func TestTraceStopsTheAgentsCommands(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ex := &fakeExec{nodes: map[string]func(context.Context, io.Reader, io.Writer, io.Writer) error{
		"node1": func(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer) error {
			cancel() // Ctrl-C, once the trace runs
			return untilStdinEOF(event(1))(ctx, stdin, stdout, stderr)
		},
		"node2": untilStdinEOF(event(2)),
	}}
	done := make(chan struct{})
	var code int
	var out, errOut string
	go func() {
		defer close(done)
		code, out, errOut = runPlugin(t, ctx, agentPods("node1", "node2"), ex, "trace", "-o", "json")
	}()
	select {
	case <-done:
	case <-time.After(stopGrace / 2):
		t.Fatal("the agents' commands were not asked to stop: plugin still running")
	}
	if code != 0 || errOut != "" {
		t.Errorf("exit %d, stderr %q; want a clean stop", code, errOut)
	}
	if !strings.Contains(out, `"agent_node":"node1"`) {
		t.Errorf("lost the records written before the stop:\n%s", out)
	}
}

func TestTraceCutsACommandIgnoringTheStop(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ex := &fakeExec{nodes: map[string]func(context.Context, io.Reader, io.Writer, io.Writer) error{
		"stubborn": func(ctx context.Context, _ io.Reader, _, _ io.Writer) error {
			cancel()
			<-ctx.Done() // what the exec stream does when cut
			return ctx.Err()
		},
		"polite": untilStdinEOF(),
	}}
	var errOut syncBuffer
	f := &fanOut{exec: ex, out: io.Discard, errOut: &errOut, json: true, grace: 10 * time.Millisecond}
	failed, err := f.run(ctx, []agent{{Node: "stubborn"}, {Node: "polite"}}, nil)
	if failed != 1 || err != nil {
		t.Errorf("run: %d failed, %v; want the stubborn node failed", failed, err)
	}
	if want := "node stubborn: did not stop within 10ms"; !strings.Contains(errOut.String(), want) {
		t.Errorf("stderr %q lacks %q", errOut.String(), want)
	}
}

func TestTraceBoundsALine(t *testing.T) {
	huge := `{"type":"event","pad":"` + strings.Repeat("x", maxLineBytes) + `"}`
	ex := &fakeExec{nodes: map[string]func(context.Context, io.Reader, io.Writer, io.Writer) error{
		"node1": writeLines(event(1), huge, event(2)),
		"node2": writeLines("not json", event(1)),
	}}
	code, out, errOut := runPlugin(t, context.Background(), agentPods("node1", "node2"), ex, "trace", "-o", "json")
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if !strings.Contains(out, `{"agent_node":"node1","type":"event","seq":1}`) || strings.Contains(out, `"seq":2`) {
		t.Errorf("want node1's stream up to the long line:\n%.300s", out)
	}
	if !strings.Contains(out, `{"agent_node":"node2","type":"event","seq":1}`) {
		t.Errorf("node2's record after a bad line is missing:\n%.300s", out)
	}
	for _, want := range []string{"node node1: a line of output longer than", `node node2: not a JSON record: "not json"`} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
}

func TestTracePcap(t *testing.T) {
	capture := "\xd4\xc3\xb2\xa1 binary\n\x00capture"
	ex := &fakeExec{nodes: map[string]func(context.Context, io.Reader, io.Writer, io.Writer) error{
		"node1": func(_ context.Context, _ io.Reader, stdout, stderr io.Writer) error {
			_, _ = io.WriteString(stderr, "nodegress trace: 3 matching events had no packet bytes\n")
			_, err := io.WriteString(stdout, capture)
			return err
		},
	}}
	pods := agentPods("node1", "node2")
	path := filepath.Join(t.TempDir(), "node1.pcap")
	code, out, errOut := runPlugin(t, context.Background(), pods, ex, "trace", "--node", "node1", "--pcap", path, "--service", "web")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != capture || out != "" {
		t.Errorf("capture file %q (%v), stdout %q; want the capture byte for byte in the file", b, err, out)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("capture file mode %v (%v), want 0600: packets are the user's alone", fi.Mode(), err)
	}
	if !strings.Contains(errOut, "3 matching events had no packet bytes") {
		t.Errorf("stderr %q: the agent's status lines are not passed on", errOut)
	}
	want := []string{"/nodegress", "trace", "--stop-on-stdin-eof", "--pcap", "-", "--service", "web"}
	if got := ex.cmd("node1"); !slices.Equal(got, want) {
		t.Errorf("agent command %q, want %q", got, want)
	}

	code, out, _ = runPlugin(t, context.Background(), pods, ex, "trace", "--node", "node1", "--pcap=-")
	if code != 0 || out != capture {
		t.Errorf("--pcap -: exit %d, stdout %q, want the capture", code, out)
	}

	code, _, errOut = runPlugin(t, context.Background(), pods, ex, "trace", "--pcap", "-")
	if code != 1 || !strings.Contains(errOut, "--pcap writes one node's capture") {
		t.Errorf("--pcap over two nodes: exit %d, stderr %q; want a refusal", code, errOut)
	}
}

func TestExplainAsksOneNode(t *testing.T) {
	ex := &fakeExec{nodes: map[string]func(context.Context, io.Reader, io.Writer, io.Writer) error{
		"node2": writeLines("explained"),
	}}
	pods := agentPods("node1", "node2")
	code, out, errOut := runPlugin(t, context.Background(), pods, ex, "explain", "--node", "node2", "tcp", "1.2.3.4:5", "10.0.0.2:30080")
	if code != 0 || out != "explained\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if got, want := ex.cmd("node2"), []string{"/nodegress", "explain", "tcp", "1.2.3.4:5", "10.0.0.2:30080"}; !slices.Equal(got, want) {
		t.Errorf("agent command %q, want %q", got, want)
	}
	code, _, errOut = runPlugin(t, context.Background(), pods, ex, "explain", "tcp")
	if code != 1 || !strings.Contains(errOut, "--node") {
		t.Errorf("explain without --node: exit %d, stderr %q; want a refusal", code, errOut)
	}
}
