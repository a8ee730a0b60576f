package cluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nodegress/nodegress/loader/pcapng"
)

// traceStopBudget bounds how long the plugin may take to end once
// interrupted: the agents' trace commands end first.
const traceStopBudget = 20 * time.Second

// pluginTrace is a running `kubectl nodegress trace`, its output decoded
// as records R.
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

// startPluginTrace runs `kubectl nodegress trace --kubeconfig ... args`,
// its standard output JSON lines decoded as R.
func startPluginTrace[R any](t *testing.T, c *cluster, plugin string, args ...string) *pluginTrace[R] {
	t.Helper()
	return startPlugin(t, c, plugin, decodeJSONLines[R], args...)
}

// startPluginCapture runs `kubectl nodegress trace --kubeconfig ... --pcap -
// args`, its standard output read as a pcapng stream.
func startPluginCapture(t *testing.T, c *cluster, plugin string, args ...string) *pluginTrace[pcapng.Packet] {
	t.Helper()
	return startPlugin(t, c, plugin, decodePcap, append([]string{"--pcap", "-"}, args...)...)
}

// startPlugin runs the plugin's trace with decode reading its standard
// output: decode hands each record to add and returns what ended the
// stream (nil at its end).
func startPlugin[R any](t *testing.T, c *cluster, plugin string, decode func(r io.Reader, add func(R)) error, args ...string) *pluginTrace[R] {
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
		err := decode(stdout, func(r R) {
			p.mu.Lock()
			p.records = append(p.records, r)
			p.mu.Unlock()
			select {
			case p.added <- struct{}{}:
			default:
			}
		})
		if err != nil {
			p.mu.Lock()
			p.readErr = err
			p.mu.Unlock()
			// The plugin must not block on a pipe nobody reads.
			_, _ = io.Copy(io.Discard, stdout)
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

// decodeJSONLines reads one JSON record a line.
func decodeJSONLines[R any](r io.Reader, add func(R)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var rec R
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return fmt.Errorf("output line %q: %w", sc.Text(), err)
		}
		add(rec)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read output: %w", err)
	}
	return nil
}

// decodePcap reads a pcapng stream's packets.
func decodePcap(r io.Reader, add func(pcapng.Packet)) error {
	pr, err := pcapng.NewReader(r)
	if err != nil {
		return err
	}
	for {
		p, err := pr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		add(p)
	}
}

// waitFor calls poke (sending traffic) and waits for a record matching
// match, again until one arrives, the plugin ends or ctx does; poke runs
// at most every half second. A stream that could not be read is an error.
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
