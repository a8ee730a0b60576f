package loader

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf/ringbuf"
)

// ErrNoEventReader is SyncEvents' answer when no ReadEvents runs.
var ErrNoEventReader = errors.New("no event reader running")

// SyncEvents returns once the running ReadEvents has handed its fn every
// event the datapath wrote to the ring buffer before the call: what
// happened to a packet before the caller learnt of it (a connection the
// proxy accepted, a request it answered) is then known, however far the
// reader lagged behind.
func (d *Datapath) SyncEvents(ctx context.Context) error {
	s := d.evSync.Load()
	if s == nil {
		return ErrNoEventReader
	}
	return s.wait(ctx)
}

// eventSync is the barrier SyncEvents waits on. The ring buffer reader's
// Flush makes its Read return every record already written, then
// ErrFlushed; but one ErrFlushed may answer a Flush made before a waiter
// came. So a waiter is armed at the first ErrFlushed after it came and
// released at the next, whose records include all written before it
// came; the reader flushes again while waiters are armed.
type eventSync struct {
	rd *ringbuf.Reader

	mu      sync.Mutex
	waiting []chan struct{} // came since the last ErrFlushed
	armed   []chan struct{} // released at the next one
	closed  bool            // the reader stopped
}

func (s *eventSync) wait(ctx context.Context) error {
	done := make(chan struct{})
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrNoEventReader
	}
	s.waiting = append(s.waiting, done)
	s.mu.Unlock()
	if err := s.rd.Flush(); err != nil {
		return fmt.Errorf("flush events ring buffer: %w", err)
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// flushed is the reader's ErrFlushed: every record before it was handed
// on.
func (s *eventSync) flushed() {
	s.mu.Lock()
	for _, done := range s.armed {
		close(done)
	}
	s.armed, s.waiting = s.waiting, nil
	again := len(s.armed) > 0
	s.mu.Unlock()
	if again {
		_ = s.rd.Flush()
	}
}

// close releases every waiter: the reader stops.
func (s *eventSync) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, done := range append(s.armed, s.waiting...) {
		close(done)
	}
	s.armed, s.waiting, s.closed = nil, nil, true
}
