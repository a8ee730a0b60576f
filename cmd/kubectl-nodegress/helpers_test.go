package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
)

// fakeExec runs a Go function per node in place of the command; it records
// the commands it was asked to run.
type fakeExec struct {
	mu    sync.Mutex
	cmds  map[string][]string
	nodes map[string]func(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer) error
}

func (e *fakeExec) exec(ctx context.Context, a agent, cmd []string, stdin io.Reader, stdout, stderr io.Writer) error {
	e.mu.Lock()
	if e.cmds == nil {
		e.cmds = map[string][]string{}
	}
	e.cmds[a.Node] = cmd
	run := e.nodes[a.Node]
	e.mu.Unlock()
	if run == nil {
		return fmt.Errorf("no fake for node %s", a.Node)
	}
	return run(ctx, stdin, stdout, stderr)
}

func (e *fakeExec) cmd(node string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cmds[node]
}

// agentPod is a running, ready agent pod on node.
func agentPod(node string, created time.Time) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:              "nodegress-" + node,
			Namespace:         defaultNamespace,
			Labels:            map[string]string{"app.kubernetes.io/name": "nodegress", "app.kubernetes.io/component": "agent"},
			CreationTimestamp: metav1.NewTime(created),
		},
		Spec: corev1.PodSpec{NodeName: node},
		Status: corev1.PodStatus{
			Phase:             corev1.PodRunning,
			ContainerStatuses: []corev1.ContainerStatus{{Name: defaultContainer, Ready: true}},
		},
	}
}

func agentPods(nodes ...string) []runtime.Object {
	var objs []runtime.Object
	for _, n := range nodes {
		objs = append(objs, agentPod(n, time.Unix(1000, 0)))
	}
	return objs
}

// runPlugin runs the plugin against fake pods and a fake exec.
func runPlugin(t *testing.T, ctx context.Context, pods []runtime.Object, ex execer, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	client := fake.NewClientset(pods...)
	connect := func(*options) (kubernetes.Interface, execer, error) { return client, ex, nil }
	var out, errOut syncBuffer
	code = run(ctx, args, &out, &errOut, connect)
	return code, out.String(), errOut.String()
}

// syncBuffer is an output the test can watch while the plugin writes it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor waits (bounded) until the output holds s.
func (b *syncBuffer) waitFor(s string) error {
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(b.String(), s) {
		if time.Now().After(deadline) {
			return fmt.Errorf("output never held %q: %q", s, b.String())
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// writeLines is a fake command that prints lines and ends.
func writeLines(lines ...string) func(context.Context, io.Reader, io.Writer, io.Writer) error {
	return func(_ context.Context, _ io.Reader, stdout, _ io.Writer) error {
		for _, l := range lines {
			if _, err := io.WriteString(stdout, l+"\n"); err != nil {
				return err
			}
		}
		return nil
	}
}

// untilStdinEOF is a fake trace that prints lines, then runs until its
// standard input ends, as `nodegress trace --stop-on-stdin-eof` does.
func untilStdinEOF(lines ...string) func(context.Context, io.Reader, io.Writer, io.Writer) error {
	return func(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer) error {
		if err := writeLines(lines...)(ctx, stdin, stdout, stderr); err != nil {
			return err
		}
		copied := make(chan error, 1)
		go func() {
			_, err := io.Copy(io.Discard, stdin)
			copied <- err
		}()
		// As an exec stream does, end when cut.
		select {
		case err := <-copied:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
