//go:build bench

// Package bench holds nodegress's benchmarks: `make bench` runs them
// through scripts/bench.sh. They are Go tests so that they can use the
// e2e network-namespace helpers, built only with -tags bench (which the
// script passes) and run only when NODEGRESS_BENCH is set; without the
// tag, `go test ./...` runs just the tables of the suites' pure helpers.
// See README.md beside this file.
package bench

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/nodegress/nodegress/tests/bench/benchkit"
)

// settings are a run's knobs, from the environment (make passes its
// command-line variables through).
type settings struct {
	// filter selects measurements by "row/peer" name, e.g. "http1",
	// "nginx", "h2/nodegress".
	filter *regexp.Regexp
	// duration of one measurement, rounds per row.
	duration time.Duration
	rounds   int
	// mode is "table" (the comparison), "pprof" (a CPU profile of
	// nodegress under load) or "all".
	mode string
	// results is where reports go; rundir holds configs, logs and the
	// process-group list the calling script cleans up from.
	results string
	rundir  string
	// command is how the run was started, for the report.
	command string
}

func loadSettings(t *testing.T) settings {
	t.Helper()
	if os.Getenv("NODEGRESS_BENCH") == "" {
		t.Skip("benchmarks run with `make bench` (NODEGRESS_BENCH=1)")
	}
	s := settings{duration: 10 * time.Second, rounds: 3, mode: "table", results: "results",
		command: os.Getenv("BENCH_COMMAND"), rundir: os.Getenv("BENCH_RUNDIR")}
	var err error
	if v := os.Getenv("BENCH_FILTER"); v != "" {
		if s.filter, err = regexp.Compile(v); err != nil {
			t.Fatalf("BENCH_FILTER: %v", err)
		}
	}
	if v := os.Getenv("BENCH_DURATION"); v != "" {
		if s.duration, err = time.ParseDuration(v); err != nil || s.duration < time.Second || s.duration > 2*time.Minute {
			t.Fatalf("BENCH_DURATION %q: want a duration from 1s to 2m", v)
		}
	}
	if v := os.Getenv("BENCH_ROUNDS"); v != "" {
		if s.rounds, err = strconv.Atoi(v); err != nil || s.rounds < 1 || s.rounds > 9 {
			t.Fatalf("BENCH_ROUNDS %q: want 1 to 9", v)
		}
	}
	if v := os.Getenv("BENCH_MODE"); v != "" {
		if v != "table" && v != "pprof" && v != "all" {
			t.Fatalf("BENCH_MODE %q: want table, pprof or all", v)
		}
		s.mode = v
	}
	if v := os.Getenv("BENCH_RESULTS"); v != "" {
		s.results = v
	}
	if s.rundir == "" {
		s.rundir = t.TempDir()
	}
	if s.command == "" {
		s.command = "NODEGRESS_BENCH=1 go test -tags bench -v -run " + t.Name() + " ./tests/bench"
	}
	if err := os.MkdirAll(s.results, 0o755); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s settings) match(name string) bool { return s.filter == nil || s.filter.MatchString(name) }

func (s settings) registry() *benchkit.Registry {
	return benchkit.NewRegistry(filepath.Join(s.rundir, "pgids"))
}

// stamp names a run's report files.
func stamp() string { return time.Now().Format("2006-01-02-150405") }
