package trace

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nodegress/nodegress/loader"
)

func TestRunNoAgent(t *testing.T) {
	missing := socketPath(t)
	stale := socketPath(t)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: mkdir(t, stale), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()

	for name, path := range map[string]string{"missing socket": missing, "stale socket": stale} {
		t.Run(name, func(t *testing.T) {
			err := Run(context.Background(), path, Filter{}, new(bytes.Buffer), FormatText)
			if err == nil || !strings.HasPrefix(err.Error(), "no agent listening on "+path+": ") {
				t.Fatalf("got %v, want \"no agent listening on %s: ...\"", err, path)
			}
		})
	}
}

func TestRunRejectsBadArguments(t *testing.T) {
	path := socketPath(t) // never dialled: arguments are checked first
	if err := Run(context.Background(), path, Filter{Proto: "icmp"}, new(bytes.Buffer), FormatText); err == nil || !strings.Contains(err.Error(), "unknown protocol") {
		t.Errorf("bad filter: got %v", err)
	}
	if err := Run(context.Background(), path, Filter{}, new(bytes.Buffer), "xml"); err == nil || !strings.Contains(err.Error(), "unknown output format") {
		t.Errorf("bad format: got %v", err)
	}
}

// runAsync runs the CLI side and waits until the server has registered it.
func runAsync(t *testing.T, s *Server, path string, f Filter, format Format) (*bytes.Buffer, <-chan error) {
	t.Helper()
	var out bytes.Buffer
	done := make(chan error, 1)
	before := s.clientCount()
	go func() { done <- Run(context.Background(), path, f, &out, format) }()
	eventually(t, "the client to subscribe", func() bool { return s.clientCount() > before })
	return &out, done
}

func waitRun(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(wait):
		t.Fatal("Run did not return")
		return nil
	}
}

func TestRunText(t *testing.T) {
	src := newFakeSource()
	s, path := startServer(t, src, nil)
	out, done := runAsync(t, s, path, Filter{Service: "default/web", Count: 2}, FormatText)

	other := fwdEvent()
	other.ServiceID = 2 // filtered out by the agent
	src.emit(t, other)
	first := fwdEvent()
	src.emit(t, first)
	second := fwdEvent()
	second.Verdict, second.Reason = loader.VerdictDrop, loader.ReasonDropMapFull
	src.emit(t, second)
	src.emit(t, fwdEvent()) // beyond the count

	if err := waitRun(t, done); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2:\n%s", len(lines), out)
	}
	clock := testTime.In(time.Local).Format("15:04:05.000000")
	for i, want := range []string{
		clock + " eth0     xdp        TX       fwd_remote          TCP 192.0.2.10:40000 > 10.0.0.1:30080 -> 10.0.0.1:61000 > 10.1.0.7:8080 svc=default/web:http/TCP backend=10.1.0.7:8080",
		clock + " eth0     xdp        DROP     drop_map_full       TCP 192.0.2.10:40000 > 10.0.0.1:30080 -> 10.0.0.1:61000 > 10.1.0.7:8080 svc=default/web:http/TCP backend=10.1.0.7:8080",
	} {
		if lines[i] != want {
			t.Errorf("line %d:\ngot  %q\nwant %q", i, lines[i], want)
		}
	}
	eventually(t, "the client to leave", func() bool { return s.clientCount() == 0 })
}

func TestRunJSON(t *testing.T) {
	src := newFakeSource()
	s, path := startServer(t, src, nil)
	out, done := runAsync(t, s, path, Filter{Count: 1}, FormatJSON)
	src.emit(t, fwdEvent())
	if err := waitRun(t, done); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("output is not one JSON object: %v\n%s", err, out)
	}
	for key, want := range map[string]any{
		"type": "event", "time": "2025-03-04T10:31:07.123456789Z", "device": "eth0", "stage": "xdp",
		"verdict": "TX", "reason": "fwd_remote", "service": "default/web:http/TCP", "backend": "10.1.0.7:8080",
		"len": 74.0,
	} {
		if got[key] != want {
			t.Errorf("%s: got %v, want %v", key, got[key], want)
		}
	}
	orig, _ := got["orig"].(map[string]any)
	if orig["proto"] != "TCP" || orig["src"] != "192.0.2.10:40000" || orig["dst"] != "10.0.0.1:30080" {
		t.Errorf("orig: got %v", got["orig"])
	}
	if x, _ := got["xlated"].(map[string]any); x["dst"] != "10.1.0.7:8080" {
		t.Errorf("xlated: got %v", got["xlated"])
	}
}

func TestRunEnds(t *testing.T) {
	t.Run("duration", func(t *testing.T) {
		src := newFakeSource()
		_, path := startServer(t, src, nil)
		start := time.Now()
		err := Run(context.Background(), path, Filter{Duration: 100 * time.Millisecond}, new(bytes.Buffer), FormatText)
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < 100*time.Millisecond || d > wait {
			t.Errorf("returned after %s, want about 100ms", d)
		}
	})
	t.Run("interrupted", func(t *testing.T) {
		src := newFakeSource()
		s, path := startServer(t, src, nil)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- Run(ctx, path, Filter{}, new(bytes.Buffer), FormatText) }()
		eventually(t, "the client to subscribe", func() bool { return s.clientCount() == 1 })
		cancel()
		if err := waitRun(t, done); err != nil {
			t.Fatalf("got %v, want nil on interrupt", err)
		}
	})
	t.Run("agent stops", func(t *testing.T) {
		src := newFakeSource()
		path := socketPath(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		s := NewServer(path, src, nil, nil)
		served := make(chan error, 1)
		go func() { served <- s.Serve(ctx) }()
		eventually(t, "socket to appear", func() bool { _, err := os.Stat(path); return err == nil })
		_, done := runAsync(t, s, path, Filter{}, FormatText)
		cancel()
		if err := waitRun(t, done); err == nil || err.Error() != "agent closed the trace stream" {
			t.Fatalf("got %v, want a closed-stream error", err)
		}
		<-served
	})
	t.Run("agent never answers", func(t *testing.T) {
		path := socketPath(t)
		ln, err := net.Listen("unix", mkdir(t, path))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			if c, err := ln.Accept(); err == nil {
				defer c.Close()
				time.Sleep(wait) // holds the connection, says nothing
			}
		}()
		err = Run(context.Background(), path, Filter{Duration: 300 * time.Millisecond}, new(bytes.Buffer), FormatText)
		if err != nil {
			t.Fatalf("got %v, want the duration to end the wait quietly", err)
		}
	})
}
