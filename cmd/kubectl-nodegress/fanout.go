package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Bounds of the merge: a longer line ends that node's stream with an
// error; a full queue holds back the nodes' streams (and so, on the agents,
// the trace clients, whose agent then reports the events it had to drop as
// "lost" rather than buffering them without bound).
const (
	maxLineBytes = 1 << 20
	queuedLines  = 256
	stderrBytes  = 4 << 10
)

// stopGrace is how long an agent's command may take to end once the
// plugin stops (Ctrl-C, --duration) before its stream is cut.
const stopGrace = 5 * time.Second

// nodeKey is the field naming the reporting node that JSON output adds to
// every record. Not "node": records of their own may name a node (where a
// request's backend runs).
const nodeKey = "agent_node"

// fanOut runs one command in several agents and merges their standard
// outputs into one, line by line, each line tagged with its node.
type fanOut struct {
	exec   execer
	out    io.Writer
	errOut io.Writer
	// json adds nodeKey to every line (a JSON object); otherwise lines
	// are prefixed with the node's name.
	json  bool
	grace time.Duration
	// passStderr, when set, also gets the agents' standard error as it
	// comes: a capture's status lines (events lost, events without
	// packet bytes) belong to the user even when the command succeeds.
	passStderr io.Writer

	errMu sync.Mutex
}

type nodeLine struct {
	node string
	line []byte
}

// run streams until every agent's command has ended; ctx ending asks them
// to end. It returns how many agents failed (each reported on errOut as
// it fails, the others carrying on) and the first output write error.
//
// Lines are merged in the order they arrive, each node's in its own order.
// Sorting by the records' times would need holding lines back, and would
// still mislead: the nodes' clocks are not the same clock.
func (f *fanOut) run(ctx context.Context, agents []agent, cmd []string) (failed int, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lines := make(chan nodeLine, queuedLines)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f.stream(ctx, a, cmd, lines); err != nil {
				f.report(a.Node, err)
				mu.Lock()
				failed++
				mu.Unlock()
			}
		}()
	}
	go func() {
		wg.Wait()
		close(lines)
	}()

	width := 0
	for _, a := range agents {
		width = max(width, len(a.Node))
	}
	var buf []byte
	for l := range lines {
		if err != nil {
			continue // draining, so that every stream can end
		}
		var ok bool
		if buf, ok = f.tag(buf[:0], l, width); !ok {
			continue
		}
		if _, werr := f.out.Write(buf); werr != nil {
			err = fmt.Errorf("write output: %w", werr)
			cancel()
		}
	}
	return failed, err
}

// stream runs cmd in one agent and sends its output's lines to lines.
func (f *fanOut) stream(ctx context.Context, a agent, cmd []string, lines chan<- nodeLine) error {
	pr, pw := io.Pipe()
	scanned := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 0, 64<<10), maxLineBytes)
		for sc.Scan() {
			lines <- nodeLine{node: a.Node, line: bytes.Clone(sc.Bytes())}
		}
		err := sc.Err()
		if errors.Is(err, bufio.ErrTooLong) {
			err = fmt.Errorf("a line of output longer than %d bytes", maxLineBytes)
		}
		// Fails the command's further writes, so a stream that cannot
		// be read any more ends.
		pr.CloseWithError(errors.Join(err, errors.New("output no longer read")))
		scanned <- err
	}()
	err := f.execOne(ctx, a, cmd, pw)
	pw.Close()
	if serr := <-scanned; serr != nil {
		return serr
	}
	return err
}

// execOne runs cmd in one agent with its output going to stdout. ctx
// ending closes the command's standard input, which ends it cleanly with
// its last output delivered; only a command that ignores that for the
// grace period is cut.
func (f *fanOut) execOne(ctx context.Context, a agent, cmd []string, stdout io.Writer) error {
	done := make(chan struct{})
	defer close(done)
	execCtx, cut := context.WithCancel(context.WithoutCancel(ctx))
	defer cut()
	go func() {
		select {
		case <-done:
			return
		case <-ctx.Done():
		}
		t := time.NewTimer(f.grace)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			cut()
		}
	}()
	var stderr tail
	var errOut io.Writer = &stderr
	if f.passStderr != nil {
		errOut = io.MultiWriter(&stderr, f.passStderr)
	}
	err := f.exec.exec(execCtx, a, cmd, untilDone(ctx, done), stdout, errOut)
	switch {
	case err == nil:
		return nil
	case execCtx.Err() != nil:
		return fmt.Errorf("did not stop within %s of being asked; cut", f.grace)
	case stderr.String() != "":
		return fmt.Errorf("%s (%w)", stderr.String(), err)
	default:
		return err
	}
}

// tag appends l as the output shows it; false when l is not a record.
func (f *fanOut) tag(b []byte, l nodeLine, width int) ([]byte, bool) {
	if !f.json {
		b = append(b, l.node...)
		for n := len(l.node); n < width; n++ {
			b = append(b, ' ')
		}
		b = append(b, ' ')
		b = append(b, l.line...)
		return append(b, '\n'), true
	}
	obj := bytes.TrimSpace(l.line)
	if len(obj) < 2 || obj[0] != '{' || !json.Valid(obj) {
		f.report(l.node, fmt.Errorf("not a JSON record: %.200q", l.line))
		return b, false
	}
	name, _ := json.Marshal(l.node) // a string cannot fail
	b = append(b, `{"`+nodeKey+`":`...)
	b = append(b, name...)
	if rest := bytes.TrimSpace(obj[1:]); rest[0] != '}' {
		b = append(b, ',')
	}
	b = append(b, obj[1:]...)
	return append(b, '\n'), true
}

func (f *fanOut) report(node string, err error) {
	f.errMu.Lock()
	defer f.errMu.Unlock()
	fmt.Fprintf(f.errOut, "kubectl nodegress: node %s: %v\n", node, err)
}

// untilDone is a standard input that ends (EOF) once ctx or done does: how
// the command learns that the plugin stops.
func untilDone(ctx context.Context, done <-chan struct{}) io.Reader {
	return readerFunc(func([]byte) (int, error) {
		select {
		case <-ctx.Done():
		case <-done:
		}
		return 0, io.EOF
	})
}

type readerFunc func([]byte) (int, error)

func (r readerFunc) Read(p []byte) (int, error) { return r(p) }

// tail keeps the last stderrBytes written to it: what a failing command
// said last is what explains its failure.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - stderrBytes; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.buf))
}
