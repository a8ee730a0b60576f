package apie2e

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/netns"
)

// switchover is how one node's NodePort moved from the backends before a
// change to the backends after it, seen by a client opening one connection
// after another through that node.
type switchover struct {
	node string
	// firstNew is the time from the API update returning to the first
	// answer by an added backend; -1 when none was added.
	firstNew time.Duration
	// lastOld is the time from the API update returning to the sending of
	// the last connection a removed backend answered; 0 when none was
	// answered after the update, -1 when none was removed.
	lastOld time.Duration
	// inMaps is the time from the API update returning to `nodegress
	// maps` showing the new backends; -1 when not watched.
	inMaps   time.Duration
	requests int
	problems []string
}

func (s switchover) String() string {
	var parts []string
	if s.firstNew >= 0 {
		parts = append(parts, fmt.Sprintf("first answer by an added backend %s", ms(s.firstNew)))
	}
	if s.lastOld >= 0 {
		parts = append(parts, fmt.Sprintf("last connection to a removed backend sent %s", ms(s.lastOld)))
	}
	if s.inMaps >= 0 {
		parts = append(parts, fmt.Sprintf("in `nodegress maps` %s", ms(s.inMaps)))
	}
	return fmt.Sprintf("%s: %s after the update (%d requests)", s.node, strings.Join(parts, ", "), s.requests)
}

func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }

// settled reports whether a node's samples since the update show the new
// state for good: an added backend answered (when one was added) and the
// last 20 answers all came from backends of the new set.
func settled(samples []sample, applied time.Time, added, after []string) bool {
	var since []sample
	for _, s := range samples {
		if s.sent.After(applied) {
			since = append(since, s)
		}
	}
	const run = 20
	if len(since) < run {
		return false
	}
	if len(added) > 0 && !slices.ContainsFunc(since, func(s sample) bool { return slices.Contains(added, s.pod) }) {
		return false
	}
	for _, s := range since[len(since)-run:] {
		if !slices.Contains(after, s.pod) {
			return false
		}
	}
	return true
}

// change is an API update whose effect on a NodePort measureChange times.
type change struct {
	nodePort uint16
	// before and after are the pods behind the NodePort before and after
	// apply.
	before, after []*netns.Pod
	// apply makes the change; it returns once the API server accepted it.
	apply func()
	// limit is how long every node may take; measureChange waits that long
	// plus a margin, so a late switch is measured rather than just missed.
	limit time.Duration
	// pause between the requests of each node's prober: none for the
	// finest resolution over a short change, some over a long one so the
	// probers stay within the datapath's SNAT port budget (--snat-ports
	// ports, each held for a while after its connection closed).
	pause time.Duration
	// watchMaps also polls `nodegress maps` on every node until its
	// frontend lists the new backends.
	watchMaps bool
}

// measureChange probes ch.nodePort through every node while ch.apply runs,
// and measures on each node how long the datapath took to move from the
// backends before to the backends after. It returns one switchover per
// node.
func (c *apiCluster) measureChange(t *testing.T, ch change) []switchover {
	t.Helper()
	nodePort, before, after, limit, watchMaps := ch.nodePort, ch.before, ch.after, ch.limit, ch.watchMaps
	t.Helper()
	names := func(ps []*netns.Pod) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.Name)
		}
		return out
	}
	beforeN, afterN := names(before), names(after)
	var added, removed []string
	for _, p := range afterN {
		if !slices.Contains(beforeN, p) {
			added = append(added, p)
		}
	}
	for _, p := range beforeN {
		if !slices.Contains(afterN, p) {
			removed = append(removed, p)
		}
	}
	var wantMaps []string
	for _, p := range after {
		wantMaps = append(wantMaps, netip.AddrPortFrom(p.Addr, harness.PodHTTPPort).String())
	}
	slices.Sort(wantMaps)

	probers := make([]*prober, len(c.tp.Nodes))
	for i, n := range c.tp.Nodes {
		probers[i] = startProber(c.ctx, n.Name, ch.pause, c.nodePortProbe(netip.AddrPortFrom(n.Addr, nodePort)))
	}
	stopAll := func() [][]sample {
		out := make([][]sample, len(probers))
		for i, p := range probers {
			out[i] = p.Stop()
		}
		return out
	}
	// Every path answers from the old state before the change.
	if err := harness.Eventually(5*time.Second, 10*time.Millisecond, func() error {
		for _, p := range probers {
			ss := p.snapshot()
			if len(ss) < 5 {
				return fmt.Errorf("%s: %d requests so far", p.name, len(ss))
			}
			for _, s := range ss {
				if s.err != nil || !slices.Contains(beforeN, s.pod) {
					return fmt.Errorf("%s before the change: pod %q, error %v, want one of %v", p.name, s.pod, s.err, beforeN)
				}
			}
		}
		return nil
	}); err != nil {
		stopAll()
		t.Fatal(err)
	}

	ch.apply()
	applied := time.Now()

	inMaps := make([]time.Duration, len(c.tp.Nodes))
	var mapsWG sync.WaitGroup
	for i := range inMaps {
		inMaps[i] = -1
		if !watchMaps {
			continue
		}
		mapsWG.Add(1)
		go func(i int) {
			defer mapsWG.Done()
			a, n := c.agents[i], c.tp.Nodes[i]
			key := netip.AddrPortFrom(n.Addr, nodePort).String() + "/TCP"
			for time.Since(applied) < limit+time.Second {
				if m, err := a.ParsedMaps(); err == nil {
					got, _ := m.Backends(key)
					got = slices.Clone(got)
					slices.Sort(got)
					if slices.Equal(got, wantMaps) {
						inMaps[i] = time.Since(applied)
						return
					}
				}
				time.Sleep(20 * time.Millisecond)
			}
		}(i)
	}

	// Wait for every node to settle, or for the bound and a margin that
	// lets a late switch be measured rather than just missed.
	deadline := applied.Add(limit + time.Second)
	for time.Now().Before(deadline) {
		done := true
		for _, p := range probers {
			if !settled(p.snapshot(), applied, added, afterN) {
				done = false
				break
			}
		}
		if done {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	all := stopAll()
	mapsWG.Wait()

	results := make([]switchover, len(probers))
	for i, samples := range all {
		r := switchover{node: probers[i].name, firstNew: -1, lastOld: -1, inMaps: inMaps[i], requests: len(samples)}
		if len(removed) > 0 {
			r.lastOld = 0
		}
		var firstNewAt time.Time
		for _, s := range samples {
			switch {
			case s.err != nil:
				r.problems = append(r.problems, fmt.Sprintf("request sent %s after the update: %v", ms(s.sent.Sub(applied)), s.err))
			case slices.Contains(added, s.pod):
				if firstNewAt.IsZero() {
					firstNewAt = s.done
					// Answered before the API call returned to
					// the test: the watch event can reach the
					// agents before the response reaches the
					// writer.
					r.firstNew = max(s.done.Sub(applied), 0)
				}
			case slices.Contains(removed, s.pod):
				if d := s.sent.Sub(applied); d > r.lastOld {
					r.lastOld = d
				}
				if !firstNewAt.IsZero() && s.sent.After(firstNewAt) {
					r.problems = append(r.problems, fmt.Sprintf("removed %s answered a connection sent %s after the update, after an added backend had answered", s.pod, ms(s.sent.Sub(applied))))
				}
			case !slices.Contains(afterN, s.pod):
				r.problems = append(r.problems, fmt.Sprintf("answered by %s, in neither %v nor %v", s.pod, beforeN, afterN))
			}
		}
		if !settled(samples, applied, added, afterN) {
			r.problems = append(r.problems, fmt.Sprintf("not settled on %v after %s", afterN, ms(limit+time.Second)))
		}
		if watchMaps && r.inMaps < 0 {
			r.problems = append(r.problems, fmt.Sprintf("`nodegress maps` never showed %v", wantMaps))
		}
		results[i] = r
	}
	return results
}

// checkSwitchovers logs every node's measurements and fails the test when
// one took longer than limit or saw a problem.
func checkSwitchovers(t *testing.T, what string, rs []switchover, limit time.Duration) {
	t.Helper()
	for _, r := range rs {
		t.Logf("%s: %s", what, r)
		for i, p := range r.problems {
			if i == 10 {
				t.Errorf("%s: %s: ... and %d more", what, r.node, len(r.problems)-10)
				break
			}
			t.Errorf("%s: %s: %s", what, r.node, p)
		}
		if r.firstNew > limit {
			t.Errorf("%s: %s: added backend first answered %s after the update, want within %s", what, r.node, ms(r.firstNew), limit)
		}
		if r.lastOld > limit {
			t.Errorf("%s: %s: removed backend still chosen %s after the update, want at most %s", what, r.node, ms(r.lastOld), limit)
		}
		if r.inMaps > limit {
			t.Errorf("%s: %s: `nodegress maps` showed the change %s after the update, want within %s", what, r.node, ms(r.inMaps), limit)
		}
	}
}

// checkMaps fails the test unless every node's datapath lists exactly pods
// behind its NodePort nodePort.
func (c *apiCluster) checkMaps(t *testing.T, nodePort uint16, pods ...*netns.Pod) {
	t.Helper()
	var want []string
	for _, p := range pods {
		want = append(want, netip.AddrPortFrom(p.Addr, harness.PodHTTPPort).String())
	}
	slices.Sort(want)
	for i, a := range c.agents {
		n := c.tp.Nodes[i]
		m, err := a.ParsedMaps()
		if err != nil {
			t.Errorf("%s: %v", n.Name, err)
			continue
		}
		key := netip.AddrPortFrom(n.Addr, nodePort).String() + "/TCP"
		got, ok := m.Backends(key)
		got = slices.Clone(got)
		slices.Sort(got)
		if !ok || !slices.Equal(got, want) {
			t.Errorf("%s: nodegress maps: %s -> %v (present %t), want %v", n.Name, key, got, ok, want)
		}
	}
}
