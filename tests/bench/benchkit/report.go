package benchkit

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Median of xs (the mean of the middle two for an even count); 0 for none.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// MedianDuration is Median for durations.
func MedianDuration(ds []time.Duration) time.Duration {
	xs := make([]float64, len(ds))
	for i, d := range ds {
		xs[i] = float64(d)
	}
	return time.Duration(Median(xs))
}

// Table is a Markdown table.
type Table struct {
	Header []string
	Rows   [][]string
}

// Markdown renders the table with columns padded for reading as text.
func (t Table) Markdown() string {
	w := make([]int, len(t.Header))
	for i, h := range t.Header {
		w[i] = len(h)
	}
	for _, r := range t.Rows {
		for i, c := range r {
			if i < len(w) && len(c) > w[i] {
				w[i] = len(c)
			}
		}
	}
	var b strings.Builder
	line := func(cells []string) {
		b.WriteString("|")
		for i := range w {
			c := ""
			if i < len(cells) {
				c = cells[i]
			}
			fmt.Fprintf(&b, " %-*s |", w[i], c)
		}
		b.WriteString("\n")
	}
	line(t.Header)
	b.WriteString("|")
	for i := range w {
		b.WriteString(strings.Repeat("-", w[i]+2) + "|")
	}
	b.WriteString("\n")
	for _, r := range t.Rows {
		line(r)
	}
	return b.String()
}

// Rate formats a per-second rate compactly: 51234 → "51.2k".
func Rate(x float64) string {
	switch {
	case x >= 1e6:
		return strconv.FormatFloat(x/1e6, 'f', 2, 64) + "M"
	case x >= 1e3:
		return strconv.FormatFloat(x/1e3, 'f', 1, 64) + "k"
	}
	return strconv.FormatFloat(x, 'f', 0, 64)
}

// Ratio formats x/base as "1.07×", or "–" without a base.
func Ratio(x, base float64) string {
	if base <= 0 || math.IsNaN(x) {
		return "–"
	}
	return strconv.FormatFloat(x/base, 'f', 2, 64) + "×"
}

// Latency formats a latency in µs or ms; "–" for zero (not measured).
func Latency(d time.Duration) string {
	switch {
	case d <= 0:
		return "–"
	case d < time.Millisecond:
		return strconv.FormatFloat(float64(d)/1e3, 'f', 0, 64) + " µs"
	}
	return strconv.FormatFloat(float64(d)/1e6, 'f', 2, 64) + " ms"
}

// PerOp formats CPU time per operation from a CPU share (of one core) and
// an operation rate: 0.95 at 50000/s → "19.0 µs".
func PerOp(cpuShare, rate float64) string {
	if rate <= 0 {
		return "–"
	}
	return strconv.FormatFloat(cpuShare/rate*1e6, 'f', 1, 64) + " µs"
}

// Percent formats a fraction as a whole percentage.
func Percent(f float64) string { return strconv.FormatFloat(f*100, 'f', 0, 64) + "%" }

// Machine describes the machine and the versions of the tools a benchmark
// ran with, as Markdown list items. tools are command lines that print a
// version (on stdout or stderr); the first line of each is kept.
func Machine(tools ...[]string) string {
	var b strings.Builder
	n, model := cpus()
	fmt.Fprintf(&b, "- CPU: %d × %s\n", n, model)
	fmt.Fprintf(&b, "- kernel: %s\n", firstLine(output("uname", "-r")))
	if os.Getenv("CI") != "" {
		b.WriteString("- run under CI\n")
	}
	fmt.Fprintf(&b, "- Go: %s (harness and proxy)\n", runtime.Version())
	for _, t := range tools {
		fmt.Fprintf(&b, "- %s: %s\n", t[0], firstLine(output(t[0], t[1:]...)))
	}
	return b.String()
}

// cpus counts the machine's processors and names their model from
// /proc/cpuinfo: runtime.NumCPU (like nproc) would count only the CPUs
// the harness is pinned to.
func cpus() (n int, model string) {
	model = "unknown"
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.NumCPU(), model
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		switch k = strings.TrimSpace(k); {
		case !ok:
		case k == "processor":
			n++
		case k == "model name" && model == "unknown":
			model = strings.TrimSpace(v)
		}
	}
	return n, model
}

func output(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if len(out) == 0 && err != nil {
		return "not found (" + err.Error() + ")"
	}
	return string(out)
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}
