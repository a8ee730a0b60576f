package cluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// traceStopBudget bounds how long the plugin may take to end once
// interrupted: the agents' trace commands end first.
const traceStopBudget = 20 * time.Second

// pluginTrace is a running `kubectl nodegress trace --output json`, its
// records decoded as R.
type pluginTrace[R any] struct {
	cmd    *exec.Cmd
	errOut bytes.Buffer
	// exited is closed once the plugin ended, with waitErr its status.
	exited  chan struct{}
	waitErr error

	mu      sync.Mutex
	records []R
	readErr error
	added   chan struct{} // a token whenever records grew
}

func startPluginTrace[R any](t *testing.T, c *cluster, plugin string, args ...string) *pluginTrace[R] {
	t.Helper()
	p := &pluginTrace[R]{exited: make(chan struct{}), added: make(chan struct{}, 1)}
	p.cmd = exec.Command(plugin, append([]string{"trace", "--kubeconfig", c.env["KUBECONFIG"]}, args...)...)
	p.cmd.Stderr = &lockedWriter{mu: &p.mu, w: &p.errOut}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			var r R
			err := json.Unmarshal(sc.Bytes(), &r)
			p.mu.Lock()
			if err != nil && p.readErr == nil {
				p.readErr = fmt.Errorf("output line %q: %w", sc.Text(), err)
			}
			p.records = append(p.records, r)
			p.mu.Unlock()
			select {
			case p.added <- struct{}{}:
			default:
			}
		}
	}()
	go func() {
		<-read
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

// waitFor calls poke (sending traffic) and waits for a record matching
// match, again until one arrives, the plugin ends or ctx does; poke runs
// at most every half second.
func (p *pluginTrace[R]) waitFor(ctx context.Context, poke func(), match func(R) bool) (R, error) {
	var none R
	seen := 0
	for {
		p.mu.Lock()
		records, readErr := p.records[seen:], p.readErr
		seen = len(p.records)
		p.mu.Unlock()
		if readErr != nil {
			return none, readErr
		}
		for _, r := range records {
			if match(r) {
				return r, nil
			}
		}
		poke()
		next := time.NewTimer(500 * time.Millisecond)
		select {
		case <-ctx.Done():
			next.Stop()
			return none, fmt.Errorf("%w after %d records", ctx.Err(), seen)
		case <-p.exited:
			next.Stop()
			return none, fmt.Errorf("plugin exited: %v", p.waitErr)
		case <-p.added:
			next.Stop()
		case <-next.C:
		}
	}
}

func (p *pluginTrace[R]) all() []R {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]R(nil), p.records...)
}

func (p *pluginTrace[R]) stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.TrimSpace(p.errOut.String())
}

// stop interrupts the plugin as Ctrl-C does; it must end cleanly.
func (p *pluginTrace[R]) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
		if p.waitErr != nil {
			t.Errorf("plugin after SIGINT: %v\n%s", p.waitErr, p.stderr())
		}
	case <-time.After(traceStopBudget):
		t.Errorf("plugin still running %s after SIGINT", traceStopBudget)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}
