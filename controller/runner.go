package controller

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"k8s.io/utils/clock"
)

// syncRunner runs one sync function on request, never more often than
// minInterval, at least every maxInterval (a sync the interval asks for
// first runs onPeriodic), and retries a failed sync with exponential
// backoff up to maxBackoff. Requests that arrive while a sync waits or
// runs are merged into the next one, so a burst of informer events costs
// one sync. Modelled on kube-proxy's BoundedFrequencyRunner, with its
// clock injectable so tests step time instead of sleeping.
type syncRunner struct {
	clock       clock.WithTicker
	minInterval time.Duration
	maxInterval time.Duration // 0: no periodic sync
	maxBackoff  time.Duration
	fn          func() error
	onError     func(err error, retryIn time.Duration)
	// onRequest, when set before the first Request, runs at every
	// Request: the proxy health counts a sync as due from then on.
	onRequest func()
	// onPeriodic runs before a sync that maxInterval asked for.
	onPeriodic func()
	pending    chan struct{}
	// requested is when the oldest request not yet covered by a sync
	// came, running when the sync under way began (UnixNano; 0: none):
	// what stalled reads.
	requested, running atomic.Int64
}

func newSyncRunner(minInterval, maxInterval, maxBackoff time.Duration, fn func() error, onError func(error, time.Duration)) *syncRunner {
	return &syncRunner{
		clock:       clock.RealClock{},
		minInterval: minInterval,
		maxInterval: maxInterval,
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
	r.requested.CompareAndSwap(0, r.clock.Now().UnixNano())
	select {
	case r.pending <- struct{}{}:
	default:
	}
}

// stalled reports a loop that stopped making progress: a sync running,
// or a request waiting for one, for longer than limit (plus the minimum
// interval a request may wait by design).
func (r *syncRunner) stalled(limit time.Duration) error {
	now := r.clock.Now()
	if t := r.running.Load(); t != 0 && now.Sub(time.Unix(0, t)) > limit {
		return fmt.Errorf("a sync has been running for %s", now.Sub(time.Unix(0, t)).Round(time.Second))
	}
	if t := r.requested.Load(); t != 0 && now.Sub(time.Unix(0, t)) > limit+r.minInterval {
		return fmt.Errorf("a requested sync has not started for %s", now.Sub(time.Unix(0, t)).Round(time.Second))
	}
	return nil
}

// Loop runs syncs until ctx is done.
func (r *syncRunner) Loop(ctx context.Context) {
	var last time.Time
	var backoff time.Duration
	var retry, periodic clock.Timer
	stop := func(t clock.Timer) {
		if t != nil {
			t.Stop()
		}
	}
	defer func() { stop(retry); stop(periodic) }()
	if r.maxInterval > 0 {
		periodic = r.clock.NewTimer(r.maxInterval)
	}
	for {
		var retryC, periodicC <-chan time.Time
		if retry != nil {
			retryC = retry.C()
		}
		if periodic != nil {
			periodicC = periodic.C()
		}
		select {
		case <-ctx.Done():
			return
		case <-r.pending:
		case <-retryC:
			retry = nil
		case <-periodicC:
			if r.onPeriodic != nil {
				r.onPeriodic()
			}
		}
		if wait := r.minInterval - r.clock.Since(last); !last.IsZero() && wait > 0 {
			t := r.clock.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C():
			}
		}
		// Everything requested until now is covered by this sync, which
		// reads the current state.
		select {
		case <-r.pending:
		default:
		}
		stop(retry)
		retry = nil
		last = r.clock.Now()
		r.requested.Store(0)
		r.running.Store(last.UnixNano())
		err := r.fn()
		r.running.Store(0)
		if periodic != nil {
			stop(periodic)
			periodic = r.clock.NewTimer(r.maxInterval)
		}
		if err != nil {
			backoff = min(max(2*backoff, r.minInterval, 100*time.Millisecond), r.maxBackoff)
			r.onError(err, backoff)
			retry = r.clock.NewTimer(backoff)
			continue
		}
		backoff = 0
	}
}
