package main

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nodegress/nodegress/cmd/nodegress/handover"
)

// syncBuffer is a log sink the test reads while the agent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) contains(sub string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Contains(s.b.String(), sub)
}

// TestTakeNodeOverWaits: an agent that finds nobody to take over from
// still waits while another one writes to the datapath (it holds the
// writer lock: starting up, or restarted), and while an agent that takes no
// lock serves the trace socket; it goes on once they are gone.
func TestTakeNodeOverWaits(t *testing.T) {
	for _, tc := range []struct {
		name    string
		occupy  func(t *testing.T, traceSocket string) (release func())
		waitLog string
	}{
		{"writer lock held", func(t *testing.T, trace string) func() {
			l, err := handover.TryLock(lockPath(trace))
			if err != nil {
				t.Fatal(err)
			}
			return l.Release
		}, "another agent on this node writes to the datapath"},
		{"agent without handover support", func(t *testing.T, trace string) func() {
			ln, err := net.Listen("unix", trace)
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
			return func() { ln.Close() }
		}, "an agent without handover support serves the trace socket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			trace := filepath.Join(t.TempDir(), "trace.sock")
			release := tc.occupy(t, trace)
			var logs syncBuffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			done := make(chan error, 1)
			go func() {
				to, ls, lock, err := takeNodeOver(ctx, handoverFlags{}, trace, log)
				if to != nil || len(ls) != 0 {
					t.Errorf("took over %v with listeners %v from nobody", to, ls)
				}
				lock.Release()
				done <- err
			}()
			for !logs.contains(tc.waitLog) {
				select {
				case err := <-done:
					t.Fatalf("went on (%v) without waiting", err)
				case <-ctx.Done():
					t.Fatalf("no %q logged", tc.waitLog)
				case <-time.After(10 * time.Millisecond):
				}
			}
			release()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-ctx.Done():
				t.Fatal("still waiting after the other agent went away")
			}
		})
	}
}
