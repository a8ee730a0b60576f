package cp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/nodegress/nodegress/tests/netns"
)

// process is one control-plane binary running under the test.
type process struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	// exited is closed once the process has been reaped; err is then its
	// exit status.
	exited chan struct{}
	err    error
}

// startProcess runs bin with args, inside ns when it is not nil (through
// `ip netns exec`, which execs the binary, so the pid is the binary's own),
// appending its output to logPath.
func startProcess(ns *netns.NS, name, logPath, bin string, args ...string) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s log: %w", name, err)
	}
	defer logf.Close()
	var cmd *exec.Cmd
	if ns != nil {
		// Not tied to a context: the process must outlive the call.
		cmd = ns.Command(context.Background(), bin, args...)
	} else {
		cmd = exec.Command(bin, args...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// If the test binary dies without running its cleanups (a panic in
	// another goroutine, a timeout), the kernel still stops the process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, logPath: logPath, cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// running reports whether the process has not exited yet.
func (p *process) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop asks the process to terminate and kills it if it has not within
// grace. It returns an error only when the process outlives SIGKILL.
func (p *process) stop(grace time.Duration) error {
	if !p.running() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return nil
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.exited:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s (pid %d) still running after SIGKILL", p.name, p.cmd.Process.Pid)
	}
}

// exitError describes how the process ended, with the end of its log, for
// failures while waiting for it to become ready.
func (p *process) exitError() error {
	return fmt.Errorf("%s exited: %v\n%s", p.name, p.err, tail(p.logPath, 30))
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(read %s: %v)", path, err)
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// poll calls fn every interval until it returns nil, the process exits, or
// timeout passes; it returns the last error of fn on timeout.
func poll(p *process, timeout, interval time.Duration, fn func(ctx context.Context) error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		last = fn(ctx)
		cancel()
		if last == nil {
			return nil
		}
		select {
		case <-p.exited:
			return p.exitError()
		case <-time.After(interval):
		}
	}
	if last == nil {
		last = errors.New("no attempt made")
	}
	return fmt.Errorf("%s not ready after %s: %w\n%s", p.name, timeout, last, tail(p.logPath, 30))
}

// mergeArgs returns base with every "--flag=value" of extra replacing the
// same flag of base, and the others appended, so callers can override any
// default.
func mergeArgs(base, extra []string) []string {
	out := append([]string(nil), base...)
	for _, e := range extra {
		key, _, _ := strings.Cut(e, "=")
		replaced := false
		for i, b := range out {
			if k, _, _ := strings.Cut(b, "="); k == key {
				out[i], replaced = e, true
				break
			}
		}
		if !replaced {
			out = append(out, e)
		}
	}
	return out
}
