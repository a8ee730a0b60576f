package trace

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nodegress/nodegress/loader"
)

// wait bounds every wait in these tests.
const wait = 5 * time.Second

// fakeSource stands in for the loader: tests push events through emit,
// which returns once the server has dispatched them.
type fakeSource struct {
	mu    sync.Mutex
	on    bool
	calls []bool
	onErr error // returned by SetTracing(true)
	// kernelDrops and kernelCalls follow SetKernelDrops; kernelErr is
	// returned by SetKernelDrops(true).
	kernelDrops bool
	kernelCalls []bool
	kernelErr   error
	readErr     error // returned by ReadEvents at once when set
	requests    chan emitRequest
	// lagging are events written to the ring buffer but not read yet
	// (lag): SyncEvents hands them on.
	lagging []loader.Event
	syncs   int
	// snaplens follows SetPacketCapture (see pcap_test.go).
	snaplens []int
	// ringLost is what TraceLost reports: events the ring buffer lost.
	ringLost atomic.Uint64
}

func (f *fakeSource) TraceLost() (uint64, error) { return f.ringLost.Load(), nil }

type emitRequest struct {
	ev   loader.Event
	done chan struct{}
}

func newFakeSource() *fakeSource {
	return &fakeSource{requests: make(chan emitRequest)}
}

func (f *fakeSource) SetTracing(on bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, on)
	if on && f.onErr != nil {
		return f.onErr
	}
	f.on = on
	return nil
}

func (f *fakeSource) SetKernelDrops(on bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kernelCalls = append(f.kernelCalls, on)
	if on && f.kernelErr != nil {
		return f.kernelErr
	}
	f.kernelDrops = on
	return nil
}

func (f *fakeSource) kernelState() (bool, []bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.kernelDrops, slices.Clone(f.kernelCalls)
}

func (f *fakeSource) ReadEvents(ctx context.Context, fn func(loader.Event)) error {
	if f.readErr != nil {
		return f.readErr
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case r := <-f.requests:
			fn(r.ev)
			close(r.done)
		}
	}
}

// lag writes ev without the reader reading it: it is handed on at the
// next SyncEvents, as a reader behind the datapath would.
func (f *fakeSource) lag(ev loader.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lagging = append(f.lagging, ev)
}

// SyncEvents implements EventSyncer: the reader catches up with what lag
// wrote.
func (f *fakeSource) SyncEvents(ctx context.Context) error {
	f.mu.Lock()
	evs := f.lagging
	f.lagging = nil
	f.syncs++
	f.mu.Unlock()
	for _, ev := range evs {
		r := emitRequest{ev: ev, done: make(chan struct{})}
		select {
		case f.requests <- r:
		case <-ctx.Done():
			return ctx.Err()
		}
		select {
		case <-r.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (f *fakeSource) syncCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.syncs
}

func (f *fakeSource) emit(t *testing.T, ev loader.Event) {
	t.Helper()
	r := emitRequest{ev: ev, done: make(chan struct{})}
	select {
	case f.requests <- r:
	case <-time.After(wait):
		t.Fatal("event reader did not take the event")
	}
	select {
	case <-r.done:
	case <-time.After(wait):
		t.Fatal("dispatching an event blocked")
	}
}

func (f *fakeSource) state() (bool, []bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.on, slices.Clone(f.calls)
}

type fakeNames map[uint32]string

func (n fakeNames) ServiceName(id uint32) string { return n[id] }
func (n fakeNames) BackendName(id uint32) string { return n[id+1000] }

// socketPath returns a path under a fresh short directory: unix socket
// paths are limited to 107 bytes and test names make t.TempDir long.
func socketPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ngtrace")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "run", "trace.sock")
}

// startServer runs a server until the test ends and asserts it stops
// cleanly.
func startServer(t *testing.T, src *fakeSource, tweak func(*Server)) (*Server, string) {
	t.Helper()
	path := socketPath(t)
	s := NewServer(path, src, fakeNames{1: "default/web:http/TCP", 2: "kube-system/dns:dns/UDP", 1007: "10.1.0.7:8080"}, nil)
	s.devices.lookup = func(ifindex int) (string, error) {
		if ifindex == 2 {
			return "eth0", nil
		}
		return "", errors.New("no such device")
	}
	if tweak != nil {
		tweak(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(wait):
			t.Error("Serve did not return after cancel")
		}
	})
	eventually(t, "socket to appear", func() bool {
		_, err := os.Stat(path)
		return err == nil
	})
	return s, path
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (s *Server) clientCount() int {
	if p := s.clients.Load(); p != nil {
		return len(*p)
	}
	return 0
}

// rawClient speaks the protocol directly, to observe exactly what the
// server sends.
type rawClient struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dialRaw(t *testing.T, path, hello string) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("unix", path, wait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if hello != "" {
		if _, err := conn.Write([]byte(hello)); err != nil {
			t.Fatal(err)
		}
	}
	return &rawClient{t: t, conn: conn, r: bufio.NewReaderSize(conn, 1<<20)}
}

// subscribe connects with filter f and waits for the server's ready line.
func subscribe(t *testing.T, path string, f Filter) *rawClient {
	t.Helper()
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	c := dialRaw(t, path, string(b)+"\n")
	if l := c.next(); l.Type != TypeReady {
		t.Fatalf("first line: got type %q (error %q), want ready", l.Type, l.Error)
	}
	return c
}

// next reads one line; it fails the test at EOF.
func (c *rawClient) next() line {
	c.t.Helper()
	l, err := c.tryNext()
	if err != nil {
		c.t.Fatalf("read trace line: %v", err)
	}
	return l
}

func (c *rawClient) tryNext() (line, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(wait))
	b, err := c.r.ReadBytes('\n')
	if err != nil {
		return line{}, err
	}
	var l line
	if err := json.Unmarshal(b, &l); err != nil {
		return line{}, errors.New("decode " + strings.TrimSpace(string(b)) + ": " + err.Error())
	}
	return l, nil
}

var testTime = time.Date(2025, 3, 4, 10, 31, 7, 123456789, time.UTC)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// fwdEvent is a NodePort packet forwarded to a remote backend.
func fwdEvent() loader.Event {
	return loader.Event{
		Time:      testTime,
		Ifindex:   2,
		Stage:     loader.StageXDP,
		Verdict:   loader.VerdictTX,
		Reason:    loader.ReasonFwdRemote,
		ServiceID: 1,
		BackendID: 7,
		Orig:      loader.Tuple{Src: ap("192.0.2.10:40000"), Dst: ap("10.0.0.1:30080"), Proto: loader.TCP},
		Xlated:    loader.Tuple{Src: ap("10.0.0.1:61000"), Dst: ap("10.1.0.7:8080"), Proto: loader.TCP},
		Length:    74,
	}
}

// kernelDropEvent is a packet of a NodePort flow DNAT'd to a local backend
// that the kernel dropped for want of a socket.
func kernelDropEvent() loader.Event {
	return loader.Event{
		Time:      testTime,
		Ifindex:   2,
		Stage:     loader.StageKernel,
		Verdict:   loader.VerdictDrop,
		ServiceID: 1,
		BackendID: 7,
		Orig:      loader.Tuple{Src: ap("192.0.2.10:40000"), Dst: ap("10.0.0.1:30080"), Proto: loader.TCP},
		Xlated:    loader.Tuple{Src: ap("192.0.2.10:40000"), Dst: ap("10.1.0.7:8080"), Proto: loader.TCP},
		Length:    60,
		KernelDrop: &loader.KernelDrop{
			Reason: 3, ReasonName: "NO_SOCKET", Location: 0xffffffff81abcdef, Symbol: "tcp_v4_rcv+0x1b2",
		},
	}
}

// The agent hands the loader's Datapath to NewServer as Source, Names,
// KernelDropSource and PacketSource.
var _ interface {
	Source
	Names
	KernelDropSource
	PacketSource
} = (*loader.Datapath)(nil)
