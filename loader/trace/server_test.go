package trace

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nodegress/nodegress/loader"
)

func TestTracingFollowsClients(t *testing.T) {
	src := newFakeSource()
	s, path := startServer(t, src, nil)

	// The server resets a switch a previous agent may have left on.
	if on, calls := src.state(); on || !slices.Equal(calls, []bool{false}) {
		t.Fatalf("at start: on=%v calls=%v, want off after one reset", on, calls)
	}
	a := subscribe(t, path, Filter{})
	if on, calls := src.state(); !on || !slices.Equal(calls, []bool{false, true}) {
		t.Fatalf("first client: on=%v calls=%v, want switched on once", on, calls)
	}
	b := subscribe(t, path, Filter{Verdict: "drop"})
	if on, calls := src.state(); !on || len(calls) != 2 {
		t.Fatalf("second client: on=%v calls=%v, want no new switch", on, calls)
	}
	a.conn.Close()
	eventually(t, "first client to be removed", func() bool { return s.clientCount() == 1 })
	if on, calls := src.state(); !on || len(calls) != 2 {
		t.Fatalf("first client gone: on=%v calls=%v, want still on", on, calls)
	}
	b.conn.Close()
	eventually(t, "tracing off after the last client", func() bool {
		on, _ := src.state()
		return !on
	})
	if _, calls := src.state(); !slices.Equal(calls, []bool{false, true, false}) {
		t.Fatalf("calls=%v, want [false true false]", calls)
	}

	// And on again for the next session.
	subscribe(t, path, Filter{})
	if on, _ := src.state(); !on {
		t.Fatal("tracing not switched on for a new client")
	}
}

func TestEventsReachMatchingClients(t *testing.T) {
	src := newFakeSource()
	_, path := startServer(t, src, nil)
	all := subscribe(t, path, Filter{})
	drops := subscribe(t, path, Filter{Verdict: "drop"})

	fwd := fwdEvent()
	drop := fwdEvent()
	drop.Ifindex, drop.Verdict, drop.Reason, drop.ServiceID, drop.BackendID, drop.Xlated =
		9, loader.VerdictDrop, loader.ReasonDropNoBackend, 2, 0, loader.Tuple{}
	src.emit(t, fwd)
	src.emit(t, drop)

	got := all.next()
	want := line{Record: Record{
		Type: TypeEvent, Time: testTime, Device: "eth0", Ifindex: 2, Stage: "xdp", Verdict: "TX",
		Reason: "fwd_remote", Service: "default/web:http/TCP", ServiceID: 1, Backend: "10.1.0.7:8080", BackendID: 7,
		Orig:   Tuple{Proto: "TCP", Src: ap("192.0.2.10:40000"), Dst: ap("10.0.0.1:30080")},
		Xlated: &Tuple{Proto: "TCP", Src: ap("10.0.0.1:61000"), Dst: ap("10.1.0.7:8080")},
		Len:    74,
	}}
	if !equalLine(got, want) {
		t.Errorf("forwarded event:\ngot  %+v\nwant %+v", got, want)
	}
	got = all.next()
	if got.Device != "if9" || got.Verdict != "DROP" || got.Reason != "drop_no_backend" ||
		got.Service != "kube-system/dns:dns/UDP" || got.Backend != "" || got.Xlated != nil {
		t.Errorf("dropped event: got %+v", got)
	}
	if got := drops.next(); got.Verdict != "DROP" {
		t.Errorf("drop-only client: got verdict %q first, want only the drop", got.Verdict)
	}
}

func equalLine(a, b line) bool {
	if (a.Xlated == nil) != (b.Xlated == nil) || (a.Xlated != nil && *a.Xlated != *b.Xlated) {
		return false
	}
	a.Xlated, b.Xlated = nil, nil
	return a.Time.Equal(b.Time) && func() bool { a.Time, b.Time = time.Time{}, time.Time{}; return a == b }()
}

// A client that stops reading loses events, learns how many and where, and
// neither the event reader nor other clients wait for it.
func TestSlowClientLosesEventsWithoutBlockingOthers(t *testing.T) {
	src := newFakeSource()
	_, path := startServer(t, src, func(s *Server) { s.bufferSize = 4 })
	slow := subscribe(t, path, Filter{})
	fast := subscribe(t, path, Filter{})

	// Enough to fill the slow client's socket buffers many times over.
	const total = 5000
	for i := 1; i <= total; i++ {
		ev := fwdEvent()
		ev.Length = uint32(i)
		src.emit(t, ev) // fails the test if dispatch blocks
		if l := fast.next(); l.Type != TypeEvent || l.Len != uint32(i) {
			t.Fatalf("fast client: got %s #%d (lost %d), want event #%d", l.Type, l.Len, l.Lost, i)
		}
	}

	// The slow client now reads: every event is either received, in order,
	// or counted in a lost line placed exactly at its gap.
	var received, lost, last uint32
	for received+lost < total {
		l := slow.next()
		switch l.Type {
		case TypeEvent:
			if l.Len != last+1 {
				t.Fatalf("slow client: event #%d after #%d with no lost line between", l.Len, last)
			}
			last = l.Len
			received++
		case TypeLost:
			last += uint32(l.Lost)
			lost += uint32(l.Lost)
		default:
			t.Fatalf("slow client: unexpected %q line", l.Type)
		}
	}
	if lost == 0 || received == 0 {
		t.Fatalf("slow client: received %d, lost %d; want both > 0", received, lost)
	}
	if received+lost != total {
		t.Fatalf("slow client: received %d + lost %d != %d", received, lost, total)
	}
	t.Logf("slow client received %d and lost %d of %d events", received, lost, total)
}

func TestMalformedHandshake(t *testing.T) {
	src := newFakeSource()
	s, path := startServer(t, src, func(s *Server) { s.handshakeTimeout = 200 * time.Millisecond })
	tests := []struct {
		name    string
		hello   string
		wantErr string
	}{
		{"not json", "{not json\n", "decode filter"},
		{"not an object", "[1,2]\n", "decode filter"},
		{"unknown field", `{"service":"web","colour":"red"}` + "\n", `unknown field "colour"`},
		{"client-side field", `{"count":3}` + "\n", `unknown field "count"`},
		{"wrong type", `{"port":"http"}` + "\n", "decode filter"},
		{"port out of range", `{"port":70000}` + "\n", "decode filter"},
		{"trailing data", "{} {}\n", "trailing data"},
		{"bad address", `{"addr":"not-an-ip"}` + "\n", "address filter"},
		{"bad verdict", `{"verdict":"maybe"}` + "\n", `unknown verdict "maybe"`},
		{"too long", `{"service":"` + strings.Repeat("x", maxHandshake) + "\n", "longer than"},
		{"silent", "", "no filter line received within 200ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRaw(t, path, tt.hello)
			l := c.next()
			if l.Type != TypeError || !strings.Contains(l.Error, tt.wantErr) {
				t.Fatalf("got %q line %q, want an error containing %q", l.Type, l.Error, tt.wantErr)
			}
			if _, err := c.tryNext(); err == nil {
				t.Fatal("connection still open after the error line")
			}
		})
	}
	// A closed connection before the filter is just dropped.
	c := dialRaw(t, path, `{"service"`)
	c.conn.(*net.UnixConn).CloseWrite()
	if l := c.next(); l.Type != TypeError {
		t.Errorf("half-sent filter: got %q, want an error line", l.Type)
	}

	if _, calls := src.state(); !slices.Equal(calls, []bool{false}) {
		t.Errorf("rejected clients switched tracing: calls=%v", calls)
	}
	if n := s.clientCount(); n != 0 {
		t.Errorf("%d rejected clients still registered", n)
	}
	// The server survived all of it.
	subscribe(t, path, Filter{})
}

func TestClientRejected(t *testing.T) {
	tests := []struct {
		name    string
		src     func() *fakeSource
		tweak   func(*Server)
		wantErr string
	}{
		{
			name: "tracing cannot be switched on",
			src: func() *fakeSource {
				f := newFakeSource()
				f.onErr = errors.New("map update: permission denied")
				return f
			},
			wantErr: "switch tracing on: map update: permission denied",
		},
		{
			name:    "too many clients",
			src:     newFakeSource,
			tweak:   func(s *Server) { s.maxClients = 0 },
			wantErr: "too many trace clients (limit 0)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, path := startServer(t, tt.src(), tt.tweak)
			c := dialRaw(t, path, "{}\n")
			if l := c.next(); l.Type != TypeError || l.Error != tt.wantErr {
				t.Fatalf("got %q line %q, want error %q", l.Type, l.Error, tt.wantErr)
			}
			// Through the CLI side, the agent's reason is shown.
			err := Run(context.Background(), path, Filter{}, new(strings.Builder), FormatText)
			if err == nil || !strings.Contains(err.Error(), "agent refused the trace: "+tt.wantErr) {
				t.Fatalf("Run: got %v, want the agent's reason", err)
			}
		})
	}
}

func TestSocketLifecycle(t *testing.T) {
	src := newFakeSource()
	path := socketPath(t)

	// A stale socket left by a dead agent is replaced.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: mkdir(t, path), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- NewServer(path, src, nil, nil).Serve(ctx) }()
	eventually(t, "the socket to accept", func() bool {
		c, err := net.Dial("unix", path)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a 0600 socket", fi.Mode())
	}
	if di, err := os.Stat(filepath.Dir(path)); err != nil || di.Mode().Perm() != 0o755 {
		t.Errorf("socket directory: %v, %v; want 0755", di.Mode(), err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("socket directory holds %d entries, want only the socket", len(entries))
	}

	// A second agent does not steal the socket of a live one.
	err = NewServer(path, newFakeSource(), nil, nil).Serve(ctx)
	if err == nil || !strings.Contains(err.Error(), "another agent is listening") {
		t.Errorf("second server: got %v, want a refusal", err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("Serve did not return after cancel")
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket still there after Serve returned: %v", err)
	}

	// Something that is not a socket is left alone.
	if err := os.WriteFile(path, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	err = NewServer(path, newFakeSource(), nil, nil).Serve(context.Background())
	if err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("regular file at the path: got %v, want a refusal", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "keep" {
		t.Error("regular file at the socket path was modified")
	}
}

func mkdir(t *testing.T, path string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestServeEndsWhenTheReaderFails(t *testing.T) {
	src := newFakeSource()
	src.readErr = errors.New("ring buffer closed")
	done := make(chan error, 1)
	go func() { done <- NewServer(socketPath(t), src, nil, nil).Serve(context.Background()) }()
	select {
	case err := <-done:
		if err == nil || err.Error() != "read datapath events: ring buffer closed" {
			t.Fatalf("got %v, want the reader's error", err)
		}
	case <-time.After(wait):
		t.Fatal("Serve did not return after its reader failed")
	}
}

// Stopping the agent closes every session and switches tracing off.
func TestShutdownWithClients(t *testing.T) {
	src := newFakeSource()
	path := socketPath(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- NewServer(path, src, nil, nil).Serve(ctx) }()
	eventually(t, "socket to appear", func() bool { _, err := os.Stat(path); return err == nil })
	c := subscribe(t, path, Filter{})

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(wait):
		t.Fatal("Serve did not return with a client connected")
	}
	if _, err := c.tryNext(); err == nil {
		t.Error("client connection still open after shutdown")
	}
	if on, _ := src.state(); on {
		t.Error("tracing left on after shutdown")
	}
}

// A client that accepts nothing for the write timeout (a suspended process)
// is disconnected, so it cannot keep tracing on in the datapath.
func TestStalledClientIsDisconnected(t *testing.T) {
	src := newFakeSource()
	s, path := startServer(t, src, func(s *Server) {
		s.bufferSize = 4
		s.writeTimeout = 200 * time.Millisecond
	})
	subscribe(t, path, Filter{}) // never reads again
	// Keep events coming until the client's socket buffer is full and a
	// write times out; on a loaded machine the writer gets few turns, so a
	// fixed number of events may not fill the buffer.
	deadline := time.Now().Add(wait)
	for i := 0; s.clientCount() > 0 && time.Now().Before(deadline); i++ {
		src.emit(t, fwdEvent())
		if i%64 == 63 {
			time.Sleep(time.Millisecond)
		}
	}
	eventually(t, "the stalled client to be dropped", func() bool { return s.clientCount() == 0 })
	eventually(t, "tracing to be switched off", func() bool { on, _ := src.state(); return !on })
}

// TestDatapathLossReported checks that events the datapath's ring buffer
// had no room for reach every connected client as a lost notice naming
// the datapath, between the events around the gap, and that a client that
// connects later is not told of losses before its time.
func TestDatapathLossReported(t *testing.T) {
	src := newFakeSource()
	src.ringLost.Store(40) // losses from before any client: not reported
	_, path := startServer(t, src, func(s *Server) { s.lossCheck = 5 * time.Millisecond })
	a := subscribe(t, path, Filter{})
	b := subscribe(t, path, Filter{Verdict: "drop"}) // filters do not matter
	src.emit(t, fwdEvent())
	if l := a.next(); l.Type != TypeEvent {
		t.Fatalf("first line %+v, want the event", l)
	}
	src.ringLost.Add(5)
	for name, c := range map[string]*rawClient{"a": a, "b": b} {
		if l := c.next(); l.Type != TypeLost || l.Lost != 5 || l.Where != LostInDatapath {
			t.Errorf("client %s: %+v, want lost 5 in the datapath", name, l)
		}
	}
	late := subscribe(t, path, Filter{})
	src.emit(t, fwdEvent())
	for name, c := range map[string]*rawClient{"a": a, "late": late} {
		if l := c.next(); l.Type != TypeEvent {
			t.Errorf("client %s: %+v, want the next event", name, l)
		}
	}
}
