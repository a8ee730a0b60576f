package controller

import (
	"context"
	"time"
)

// syncRunner runs one sync function on request, never more often than
// minInterval, and retries a failed sync with exponential backoff. Requests
// that arrive while a sync waits or runs are merged into the next one, so a
// burst of informer events costs one sync (kube-proxy's
// BoundedFrequencyRunner, reduced to what the controller needs).
type syncRunner struct {
	minInterval time.Duration
	maxBackoff  time.Duration
	fn          func() error
	onError     func(err error, retryIn time.Duration)
	// onRequest, when set before the first Request, runs at every
	// Request: the proxy health counts a sync as due from then on.
	onRequest func()
	pending   chan struct{}
}

func newSyncRunner(minInterval, maxBackoff time.Duration, fn func() error, onError func(error, time.Duration)) *syncRunner {
	return &syncRunner{
		minInterval: minInterval,
		maxBackoff:  maxBackoff,
		fn:          fn,
		onError:     onError,
		pending:     make(chan struct{}, 1),
	}
}

// Request asks for a sync. It never blocks.
func (r *syncRunner) Request() {
	if r.onRequest != nil {
		r.onRequest()
	}
	select {
	case r.pending <- struct{}{}:
	default:
	}
}

// Loop runs syncs until ctx is done.
func (r *syncRunner) Loop(ctx context.Context) {
	var last time.Time
	var backoff time.Duration
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.pending:
		case <-retry.C:
		}
		if wait := r.minInterval - time.Since(last); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		// Everything requested until now is covered by this sync, which
		// reads the current state.
		select {
		case <-r.pending:
		default:
		}
		retry.Stop()
		last = time.Now()
		if err := r.fn(); err != nil {
			backoff = min(max(2*backoff, r.minInterval, 100*time.Millisecond), r.maxBackoff)
			r.onError(err, backoff)
			retry.Reset(backoff)
			continue
		}
		backoff = 0
	}
}
