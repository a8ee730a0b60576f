package benchkit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"sync"
	"time"
)

// Result is one load run's outcome.
type Result struct {
	// Rate is completed requests (or connections) per second.
	Rate float64
	// P50 and P99 are latency percentiles; zero when the tool does not
	// report them.
	P50, P99 time.Duration
	// Requests is how many completed; Errors counts failed requests,
	// socket errors and non-2xx/3xx answers.
	Requests int64
	Errors   int64
	// LastError describes one failure, when the tool says.
	LastError string
	// ToolCPU is the CPU time the load tool used.
	ToolCPU time.Duration
	// ProcCPU is the system under test's CPU use, LoadCPU the load
	// tool's and the backends', Background what else ran on the two
	// cores (other processes, softirqs not charged to a process), all as
	// fractions of one core (see Usage).
	ProcCPU, LoadCPU, Background float64
}

// ErrorShare is the fraction of requests that failed.
func (r Result) ErrorShare() float64 {
	if r.Requests+r.Errors == 0 {
		return 0
	}
	return float64(r.Errors) / float64(r.Requests+r.Errors)
}

// Wrk describes one wrk run.
type Wrk struct {
	URL         string
	Threads     int
	Connections int
	Duration    time.Duration
	// Headers are "Name: value" lines; "Connection: close" makes every
	// request use a new connection (and, over https, a full handshake).
	Headers []string
	// Netns runs wrk inside that network namespace (`ip netns exec`);
	// empty: the harness's own.
	Netns string
}

// Argv is the wrk command line.
func (w Wrk) Argv() []string {
	argv := []string{"wrk", "-t" + strconv.Itoa(w.Threads), "-c" + strconv.Itoa(w.Connections),
		"-d" + secs(w.Duration), "--latency", "--timeout", "5s"}
	for _, h := range w.Headers {
		argv = append(argv, "-H", h)
	}
	return append(argv, w.URL)
}

// Run runs wrk on cpu and parses its report.
func (w Wrk) Run(ctx context.Context, cpu int) (Result, string, error) {
	if err := CheckLocal(w.URL); err != nil {
		return Result{}, "", err
	}
	out, used, err := RunBounded(ctx, w.Duration+30*time.Second, cpu, nil, InNetns(w.Netns, w.Argv()...)...)
	if err != nil {
		return Result{}, out, err
	}
	r, err := ParseWrk(out)
	r.ToolCPU = used
	return r, out, err
}

var (
	wrkRate      = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	wrkTotal     = regexp.MustCompile(`(?m)^\s*([0-9]+) requests in `)
	wrkPct       = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\b`)
	wrkSocketErr = regexp.MustCompile(`(?m)^\s*Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)`)
	wrkNon2xx    = regexp.MustCompile(`(?m)^\s*Non-2xx or 3xx responses: ([0-9]+)`)
)

// ParseWrk reads the report of `wrk --latency`.
func ParseWrk(out string) (Result, error) {
	var r Result
	m := wrkRate.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("wrk: no Requests/sec in output:\n%s", out)
	}
	r.Rate, _ = strconv.ParseFloat(m[1], 64)
	if m := wrkTotal.FindStringSubmatch(out); m != nil {
		r.Requests, _ = strconv.ParseInt(m[1], 10, 64)
	}
	for _, m := range wrkPct.FindAllStringSubmatch(out, -1) {
		d, err := parseDur(m[2], m[3])
		if err != nil {
			return r, err
		}
		if m[1] == "50" {
			r.P50 = d
		} else {
			r.P99 = d
		}
	}
	if m := wrkSocketErr.FindStringSubmatch(out); m != nil {
		for _, v := range m[1:] {
			n, _ := strconv.ParseInt(v, 10, 64)
			r.Errors += n
		}
	}
	if m := wrkNon2xx.FindStringSubmatch(out); m != nil {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		r.Errors += n
	}
	return r, nil
}

func parseDur(v, unit string) (time.Duration, error) {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return 0, err
	}
	switch unit {
	case "us":
		return time.Duration(f * float64(time.Microsecond)), nil
	case "ms":
		return time.Duration(f * float64(time.Millisecond)), nil
	case "s":
		return time.Duration(f * float64(time.Second)), nil
	}
	return 0, fmt.Errorf("unknown unit %q", unit)
}

// H2load describes one h2load run (HTTP/2, over TLS when the URL is https).
type H2load struct {
	URL         string
	Threads     int
	Connections int
	// Streams is the number of concurrent streams per connection (-m).
	Streams  int
	Duration time.Duration
	WarmUp   time.Duration
}

// Argv is the h2load command line.
func (h H2load) Argv() []string {
	return []string{"h2load", "-t" + strconv.Itoa(h.Threads), "-c" + strconv.Itoa(h.Connections),
		"-m" + strconv.Itoa(h.Streams), "-D", secs(h.Duration), "--warm-up-time=" + secs(h.WarmUp), h.URL}
}

// Run runs h2load on cpu and parses its report.
func (h H2load) Run(ctx context.Context, cpu int) (Result, string, error) {
	if err := CheckLocal(h.URL); err != nil {
		return Result{}, "", err
	}
	out, used, err := RunBounded(ctx, h.WarmUp+h.Duration+30*time.Second, cpu, nil, h.Argv()...)
	if err != nil {
		return Result{}, out, err
	}
	r, err := ParseH2load(out)
	r.ToolCPU = used
	return r, out, err
}

var (
	h2Finished = regexp.MustCompile(`(?m)^finished in [0-9.]+m?s, ([0-9.]+) req/s`)
	h2Requests = regexp.MustCompile(`(?m)^requests: [0-9]+ total, [0-9]+ started, [0-9]+ done, ([0-9]+) succeeded, ([0-9]+) failed, ([0-9]+) errored, ([0-9]+) timeout`)
	h2Status   = regexp.MustCompile(`(?m)^status codes: ([0-9]+) 2xx, ([0-9]+) 3xx, ([0-9]+) 4xx, ([0-9]+) 5xx`)
)

// ParseH2load reads h2load's report.
func ParseH2load(out string) (Result, error) {
	var r Result
	m := h2Finished.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("h2load: no 'finished in' line in output:\n%s", out)
	}
	r.Rate, _ = strconv.ParseFloat(m[1], 64)
	if m := h2Requests.FindStringSubmatch(out); m != nil {
		r.Requests, _ = strconv.ParseInt(m[1], 10, 64)
		for _, v := range m[2:] {
			n, _ := strconv.ParseInt(v, 10, 64)
			r.Errors += n
		}
	}
	if m := h2Status.FindStringSubmatch(out); m != nil {
		// Succeeded counts any answered request; 4xx and 5xx are errors
		// of the proxy path here.
		for _, v := range m[3:] {
			n, _ := strconv.ParseInt(v, 10, 64)
			r.Errors += n
			r.Requests -= n
		}
	}
	return r, nil
}

// TLSNew describes a run of benchload's tls-new mode: a full TLS 1.3
// handshake and one request per connection.
type TLSNew struct {
	// Bin is the benchload binary.
	Bin         string
	URL         string
	SNI         string
	Connections int
	Duration    time.Duration
}

// Argv is the benchload command line.
func (l TLSNew) Argv() []string {
	return []string{l.Bin, "tls-new", "--url", l.URL, "--sni", l.SNI,
		"-c", strconv.Itoa(l.Connections), "-d", l.Duration.String()}
}

// Run runs benchload on cpu, with one Go thread as wrk has, and parses
// its report.
func (l TLSNew) Run(ctx context.Context, cpu int) (Result, string, error) {
	if err := CheckLocal(l.URL); err != nil {
		return Result{}, "", err
	}
	out, used, err := RunBounded(ctx, l.Duration+30*time.Second, cpu, []string{"GOMAXPROCS=1"}, l.Argv()...)
	if err != nil {
		return Result{}, out, err
	}
	r, err := ParseBenchload(out)
	r.ToolCPU = used
	return r, out, err
}

var benchloadLine = regexp.MustCompile(`(?m)^(?:connections|requests) ([0-9]+) errors ([0-9]+) rate ([0-9.]+) p50 (\S+) p99 (\S+)$`)

var benchloadLastErr = regexp.MustCompile(`(?m)^last error: (.*)$`)

// ParseBenchload reads the report line every benchload mode prints.
func ParseBenchload(out string) (Result, error) {
	var r Result
	m := benchloadLine.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("benchload: no report line in output:\n%s", out)
	}
	r.Requests, _ = strconv.ParseInt(m[1], 10, 64)
	r.Errors, _ = strconv.ParseInt(m[2], 10, 64)
	r.Rate, _ = strconv.ParseFloat(m[3], 64)
	if m := benchloadLastErr.FindStringSubmatch(out); m != nil {
		r.LastError = m[1]
	}
	var err1, err2 error
	r.P50, err1 = time.ParseDuration(m[4])
	r.P99, err2 = time.ParseDuration(m[5])
	if err := errors.Join(err1, err2); err != nil {
		return r, fmt.Errorf("benchload: %w", err)
	}
	return r, nil
}

// secs formats a duration as whole seconds (at least 1) for wrk and h2load.
func secs(d time.Duration) string {
	s := int(d.Round(time.Second) / time.Second)
	if s < 1 {
		s = 1
	}
	return strconv.Itoa(s) + "s"
}

// InNetns prefixes argv with `ip netns exec ns` when ns is not empty.
func InNetns(ns string, argv ...string) []string {
	if ns == "" {
		return argv
	}
	return append([]string{"ip", "netns", "exec", ns}, argv...)
}

var allowed struct {
	sync.Mutex
	prefixes []netip.Prefix
}

// AllowTargets adds address ranges load may be sent to besides loopback:
// the address plan of network namespaces the suite created itself, whose
// traffic never leaves them.
func AllowTargets(prefixes ...netip.Prefix) {
	allowed.Lock()
	defer allowed.Unlock()
	allowed.prefixes = append(allowed.prefixes, prefixes...)
}

// CheckLocal refuses any load target outside loopback and the ranges
// given to AllowTargets: benchmarks never send traffic anywhere else.
func CheckLocal(rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return err
	}
	return CheckAddr(u.Hostname())
}

// CheckAddr is CheckLocal for a host name or address (with or without a
// port).
func CheckAddr(host string) error {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	a, err := netip.ParseAddr(host)
	if host == "localhost" || err == nil && a.IsLoopback() {
		return nil
	}
	if err == nil {
		allowed.Lock()
		defer allowed.Unlock()
		for _, p := range allowed.prefixes {
			if p.Contains(a) {
				return nil
			}
		}
	}
	return fmt.Errorf("load target %s is neither loopback nor in the benchmark's namespaces", host)
}

// UDPRR describes a run of benchload's udp-rr mode: Connections sockets,
// each with one datagram in flight, waiting for the answer before the
// next (request/response, like DNS).
type UDPRR struct {
	// Bin is the benchload binary.
	Bin         string
	Addr        string
	Connections int
	Duration    time.Duration
	// Netns runs the load inside that network namespace.
	Netns string
}

// Argv is the benchload command line.
func (l UDPRR) Argv() []string {
	return []string{l.Bin, "udp-rr", "--addr", l.Addr, "-c", strconv.Itoa(l.Connections), "-d", l.Duration.String()}
}

// Run runs benchload on cpu with one Go thread and parses its report.
func (l UDPRR) Run(ctx context.Context, cpu int) (Result, string, error) {
	return runBenchload(ctx, cpu, l.Addr, l.Netns, l.Duration, l.Argv())
}

// runBenchload runs a benchload mode aimed at addr on cpu, with one Go
// thread as wrk has, and parses its report.
func runBenchload(ctx context.Context, cpu int, addr, netns string, d time.Duration, argv []string) (Result, string, error) {
	if err := CheckAddr(addr); err != nil {
		return Result{}, "", err
	}
	out, used, err := RunBounded(ctx, d+30*time.Second, cpu, []string{"GOMAXPROCS=1"}, InNetns(netns, argv...)...)
	if err != nil {
		return Result{}, out, err
	}
	r, err := ParseBenchload(out)
	r.ToolCPU = used
	return r, out, err
}

// HTTPRR describes a run of benchload's tcp-crr mode (NewConn: a new
// connection per request, timed from connect() to the answer's last byte)
// or http-rr mode (keep-alive requests), closed loop with Connections in
// flight, or at Rate per second when Rate is set.
type HTTPRR struct {
	// Bin is the benchload binary.
	Bin         string
	Addr        string
	NewConn     bool
	Connections int
	Duration    time.Duration
	Rate        float64
	// Netns runs the load inside that network namespace.
	Netns string
}

// Argv is the benchload command line.
func (l HTTPRR) Argv() []string {
	mode := "http-rr"
	if l.NewConn {
		mode = "tcp-crr"
	}
	return []string{l.Bin, mode, "--addr", l.Addr, "-c", strconv.Itoa(l.Connections), "-d", l.Duration.String(),
		"--rate", strconv.FormatFloat(l.Rate, 'f', -1, 64)}
}

// Run runs benchload on cpu with one Go thread and parses its report.
func (l HTTPRR) Run(ctx context.Context, cpu int) (Result, string, error) {
	return runBenchload(ctx, cpu, l.Addr, l.Netns, l.Duration, l.Argv())
}
