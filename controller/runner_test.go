package controller

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"
)

// recordingClock reports every timer the runner starts, which is how a
// test knows the runner decided to wait (and for how long) before it
// steps time.
type recordingClock struct {
	*clocktesting.FakeClock
	timers chan time.Duration
}

func (c *recordingClock) NewTimer(d time.Duration) clock.Timer {
	c.timers <- d
	return c.FakeClock.NewTimer(d)
}

// runnerHarness drives a syncRunner on a fake clock: every sync reports
// on syncs and returns the next queued result.
type runnerHarness struct {
	t        *testing.T
	clock    *recordingClock
	r        *syncRunner
	syncs    chan struct{}
	errs     chan time.Duration
	periodic chan struct{}
	mu       sync.Mutex
	results  []error
}

func newRunnerHarness(t *testing.T, minInterval, maxInterval time.Duration) *runnerHarness {
	h := &runnerHarness{t: t, clock: &recordingClock{clocktesting.NewFakeClock(time.Unix(1_000_000, 0)), make(chan time.Duration, 64)},
		syncs: make(chan struct{}, 16), errs: make(chan time.Duration, 16), periodic: make(chan struct{}, 16)}
	h.r = newSyncRunner(minInterval, maxInterval, 30*time.Second, func() error {
		h.mu.Lock()
		var err error
		if len(h.results) > 0 {
			err, h.results = h.results[0], h.results[1:]
		}
		h.mu.Unlock()
		h.syncs <- struct{}{}
		return err
	}, func(_ error, retryIn time.Duration) { h.errs <- retryIn })
	h.r.clock = h.clock
	h.r.onPeriodic = func() { h.periodic <- struct{}{} }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.r.Loop(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return h
}

func (h *runnerHarness) fail(errs ...error) {
	h.mu.Lock()
	h.results = append(h.results, errs...)
	h.mu.Unlock()
}

// expectSync waits for one sync, bounded in real time.
func (h *runnerHarness) expectSync(what string) {
	h.t.Helper()
	select {
	case <-h.syncs:
	case <-time.After(5 * time.Second):
		h.t.Fatalf("%s: no sync", what)
	}
}

// expectTimer waits until the runner starts a timer of d: it has decided
// to wait for it.
func (h *runnerHarness) expectTimer(d time.Duration) {
	h.t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case got := <-h.clock.timers:
			if got == d {
				return
			}
		case <-deadline:
			h.t.Fatalf("runner never waited %v", d)
		}
	}
}

// expectNoSync checks that no sync ran. It is called only while the
// runner waits on a timer the test has not run out, so nothing can come
// later.
func (h *runnerHarness) expectNoSync(what string) {
	h.t.Helper()
	select {
	case <-h.syncs:
		h.t.Fatalf("%s: unexpected sync", what)
	default:
	}
}

func TestSyncRunnerMergesBurstsWithinMinInterval(t *testing.T) {
	h := newRunnerHarness(t, time.Second, time.Hour)
	h.r.Request()
	h.expectSync("first request")
	h.expectTimer(time.Hour) // idle again
	// Three requests right after a sync wait out the min interval
	// together and cost one sync.
	h.r.Request()
	h.r.Request()
	h.r.Request()
	h.expectTimer(time.Second)
	h.expectNoSync("within the min interval")
	h.clock.Step(999 * time.Millisecond)
	h.expectNoSync("1 ms before the min interval")
	h.clock.Step(time.Millisecond)
	h.expectSync("at the min interval")
	h.expectTimer(time.Hour)
	h.expectNoSync("merged requests")
}

func TestSyncRunnerBackoff(t *testing.T) {
	h := newRunnerHarness(t, 10*time.Millisecond, time.Hour)
	boom := errors.New("boom")
	h.fail(boom, boom, boom)
	h.r.Request()
	for i, want := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond} {
		h.expectSync("attempt")
		if got := <-h.errs; got != want {
			t.Fatalf("failure %d: retry in %v, want %v", i+1, got, want)
		}
		h.expectTimer(want)
		h.expectNoSync("before the backoff")
		h.clock.Step(want)
	}
	h.expectSync("succeeding attempt")
	// Success resets the backoff and ends the retries.
	h.expectTimer(time.Hour)
	h.clock.Step(time.Minute)
	h.expectNoSync("a minute after success")
	h.fail(boom)
	h.r.Request()
	h.expectSync("new failure")
	if got := <-h.errs; got != 100*time.Millisecond {
		t.Errorf("backoff after success: %v, want 100ms", got)
	}
}

func TestSyncRunnerMaxInterval(t *testing.T) {
	h := newRunnerHarness(t, time.Millisecond, time.Minute)
	h.expectTimer(time.Minute)
	h.expectNoSync("nothing requested")
	h.clock.Step(time.Minute)
	h.expectSync("max interval")
	<-h.periodic
	// A requested sync restarts the period.
	h.expectTimer(time.Minute)
	h.clock.Step(30 * time.Second)
	h.r.Request()
	h.expectSync("request")
	h.expectTimer(time.Minute)
	h.clock.Step(59 * time.Second)
	h.expectNoSync("59 s after the last sync")
	h.clock.Step(time.Second)
	h.expectSync("a full period after the last sync")
	select {
	case <-h.periodic:
	default:
		t.Error("periodic hook not run")
	}
}

// TestSyncRunnerStalled: a sync running, or a request waiting to be
// synced, past the limit is reported; a loop that keeps up is not.
func TestSyncRunnerStalled(t *testing.T) {
	fake := clocktesting.NewFakeClock(time.Unix(1_000_000, 0))
	started, release := make(chan struct{}, 1), make(chan struct{})
	r := newSyncRunner(100*time.Millisecond, 0, time.Second, func() error {
		started <- struct{}{}
		<-release
		return nil
	}, func(error, time.Duration) {})
	r.clock = fake
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Loop(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	if err := r.stalled(time.Minute); err != nil {
		t.Fatalf("idle runner: %v", err)
	}
	r.Request()
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("no sync")
	}
	if err := r.stalled(time.Minute); err != nil {
		t.Fatalf("sync just started: %v", err)
	}
	fake.Step(2 * time.Minute)
	if err := r.stalled(time.Minute); err == nil {
		t.Fatal("a sync running for 2m with a 1m limit is not reported")
	}
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for r.running.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if err := r.stalled(time.Minute); err != nil {
		t.Fatalf("after the sync returned: %v", err)
	}

	// A loop that no longer picks requests up.
	idle := newSyncRunner(100*time.Millisecond, 0, time.Second, func() error { return nil }, func(error, time.Duration) {})
	idle.clock = fake
	idle.Request()
	fake.Step(30 * time.Second)
	if err := idle.stalled(time.Minute); err != nil {
		t.Fatalf("request waiting 30s with a 1m limit: %v", err)
	}
	fake.Step(time.Minute)
	if err := idle.stalled(time.Minute); err == nil {
		t.Fatal("a request not picked up for 90s with a 1m limit is not reported")
	}
}
