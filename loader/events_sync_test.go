package loader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"
)

// TestSyncEvents: SyncEvents returns once the reader has handed on every
// event written before the call, however far behind it is; not before
// (the reader is held in its callback), and the reader goes on reading
// afterwards.
func TestSyncEvents(t *testing.T) {
	h := newHarness(t)
	h.localServices()
	h.setTracing(true)
	dp := &Datapath{objs: h.objs, log: slog.Default()}
	if err := dp.SyncEvents(context.Background()); !errors.Is(err, ErrNoEventReader) {
		t.Fatalf("SyncEvents without a reader: %v, want %v", err, ErrNoEventReader)
	}

	gate := make(chan struct{})
	held := make(chan struct{}, 1)
	var handed atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	readDone := make(chan error, 1)
	go func() {
		readDone <- dp.ReadEvents(ctx, func(Event) {
			select {
			case held <- struct{}{}:
			default:
			}
			<-gate
			handed.Add(1)
		})
	}()
	released := false
	defer func() {
		if !released {
			close(gate)
		}
		cancel()
		if err := <-readDone; err != nil {
			t.Errorf("read events: %v", err)
		}
	}()

	send := func(i int) {
		t.Helper()
		h.expect(hookTCIngress, tcpFrame(fmt.Sprintf("192.0.2.10:%d", 41000+i), feLocal, tcpSYN).bytes(t), VerdictPass, ReasonFwdLocal)
	}
	const n = 20
	for i := range n {
		send(i)
	}
	select {
	case <-held:
	case <-time.After(5 * time.Second):
		t.Fatal("the reader got no event")
	}
	// Held in its callback, the reader cannot have handed them all on.
	short, stop := context.WithTimeout(context.Background(), 100*time.Millisecond)
	err := dp.SyncEvents(short)
	stop()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("SyncEvents with the reader held after %d of %d events: %v, want a timeout", handed.Load(), n, err)
	}

	close(gate)
	released = true
	sctx, sstop := context.WithTimeout(context.Background(), 5*time.Second)
	defer sstop()
	if err := dp.SyncEvents(sctx); err != nil {
		t.Fatalf("SyncEvents: %v", err)
	}
	if got := handed.Load(); got != n {
		t.Errorf("%d events handed on when SyncEvents returned, want %d", got, n)
	}
	// The reader goes on after a sync.
	send(n)
	if err := dp.SyncEvents(sctx); err != nil {
		t.Fatalf("second SyncEvents: %v", err)
	}
	if got := handed.Load(); got != n+1 {
		t.Errorf("%d events handed on after the second sync, want %d", got, n+1)
	}
}
