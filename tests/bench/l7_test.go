//go:build bench

package bench

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nodegress/nodegress/tests/bench/benchkit"
)

// benchBody is what the backend answers: 20 bytes, as in the issue's
// reference measurement.
const benchBody = "0123456789abcdefghij"

// l7Peer is one proxy under comparison. All of them listen on loopback,
// run on benchkit.SUTCPU and forward to the same backend.
type l7Peer struct {
	name string
	// rows limits the peer to some rows (nil: all).
	rows []string
	// argv and env start it; the placeholders of its config are filled
	// in before.
	start func(e *l7Env, p *l7Peer) (*benchkit.Proc, error)

	httpPort, httpsPort, pprofPort int
	proc                           *benchkit.Proc
}

func (p *l7Peer) in(row string) bool {
	if p.rows == nil {
		return true
	}
	for _, r := range p.rows {
		if r == row {
			return true
		}
	}
	return false
}

func (p *l7Peer) httpURL() string  { return "http://127.0.0.1:" + strconv.Itoa(p.httpPort) + "/" }
func (p *l7Peer) httpsURL() string { return "https://127.0.0.1:" + strconv.Itoa(p.httpsPort) + "/" }

// l7Row is one line of the comparison.
type l7Row struct {
	name, title, unit string
	// latency says the tool reports percentiles.
	latency bool
	run     func(ctx context.Context, p *l7Peer, d time.Duration) (benchkit.Result, string, error)
}

var l7Rows = []l7Row{
	{
		name: "http1", title: "HTTP/1.1 keep-alive, wrk -t1 -c64", unit: "req/s", latency: true,
		run: func(ctx context.Context, p *l7Peer, d time.Duration) (benchkit.Result, string, error) {
			return benchkit.Wrk{URL: p.httpURL(), Threads: 1, Connections: 64, Duration: d}.Run(ctx, benchkit.LoadCPU)
		},
	},
	{
		// wrk cannot measure this: it speaks TLS 1.2 and resumes
		// sessions. benchload makes a full TLS 1.3 handshake (X25519,
		// ECDSA P-256 certificate) and one request per connection.
		name: "tls-new", title: "new TLS 1.3 connection per request, benchload tls-new -c64", unit: "conn/s", latency: true,
		run: func(ctx context.Context, p *l7Peer, d time.Duration) (benchkit.Result, string, error) {
			return benchkit.TLSNew{Bin: loadBin, URL: p.httpsURL(), SNI: "bench.example", Connections: 64,
				Duration: d}.Run(ctx, benchkit.LoadCPU)
		},
	},
	{
		name: "h2", title: "HTTP/2 over TLS, h2load -t1 -c64 -m10", unit: "req/s",
		run: func(ctx context.Context, p *l7Peer, d time.Duration) (benchkit.Result, string, error) {
			return benchkit.H2load{URL: p.httpsURL(), Threads: 1, Connections: 64, Streams: 10,
				Duration: d, WarmUp: time.Second}.Run(ctx, benchkit.LoadCPU)
		},
	},
}

// loadBin is the benchload binary (set by TestL7 before any row runs).
var loadBin string

// l7Env is the state shared by one run.
type l7Env struct {
	s           settings
	reg         *benchkit.Registry
	dir         string // configs and logs
	cert        benchkit.CertFiles
	backendPort int
	proxyBin    string
}

func newL7Peers() []*l7Peer {
	return []*l7Peer{
		{name: "nginx", start: startNginx},
		{name: "haproxy", start: startHaproxy},
		{name: "nodegress", start: startNodegress(false)},
		// The same proxy serving a Gateway listener (one HTTPRoute)
		// instead of an Ingress.
		{name: "nodegress-gateway", start: startNodegressGateway},
		// The access log costs a formatted line and a buffered write per
		// request; measured once, separately.
		{name: "nodegress+accesslog", rows: []string{"http1"}, start: startNodegress(true)},
	}
}

// TestL7 compares nodegress's L7 proxy with nginx and haproxy: the same
// backend, the same one proxy core, the same loopback path. It prints a
// Markdown table with ratios to nginx and writes it under results/.
func TestL7(t *testing.T) {
	s := loadSettings(t)
	for _, tool := range []string{"taskset", "wrk", "h2load", "nginx", "haproxy"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: run scripts/install-bench-deps.sh (make bench does)", tool)
		}
	}
	e := &l7Env{s: s, reg: s.registry(), dir: filepath.Join(s.rundir, "l7")}
	if err := os.MkdirAll(e.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var err error
	if e.cert, err = benchkit.WriteCert(e.dir, "bench.example", "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	e.proxyBin = benchBinary(t, e.dir, "BENCHPROXY_BIN", "benchproxy")
	loadBin = benchBinary(t, e.dir, "BENCHLOAD_BIN", "benchload")
	ctx := t.Context()

	backend := startBackend(t, e)
	peers := selectPeers(s, newL7Peers())
	if len(peers) == 0 {
		t.Fatalf("BENCH_FILTER %q selects nothing; rows: http1, tls-new, h2; peers: nginx, haproxy, nodegress, nodegress-gateway, nodegress+accesslog", s.filter)
	}
	if s.mode == "pprof" {
		peers = nil
		for _, p := range newL7Peers() {
			if p.name == "nodegress" {
				peers = append(peers, p)
			}
		}
	}
	for _, p := range peers {
		startPeer(t, e, p)
	}

	var report strings.Builder
	if s.mode != "pprof" {
		report.WriteString(runTable(ctx, t, e, backend, peers))
	}
	if s.mode != "table" {
		for _, p := range peers {
			if p.name == "nodegress" {
				report.WriteString(runProfile(ctx, t, e, p))
			}
		}
	}
	path := filepath.Join(s.results, "l7-"+stamp()+".md")
	if s.mode == "pprof" {
		path = filepath.Join(s.results, "l7-"+stamp()+"-pprof.md")
	}
	if err := os.WriteFile(path, []byte(report.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	fmt.Printf("\nreport written to %s\n", path)
}

// selectPeers keeps the peers that some selected row measures.
func selectPeers(s settings, all []*l7Peer) []*l7Peer {
	var out []*l7Peer
	for _, p := range all {
		for _, r := range l7Rows {
			if p.in(r.name) && s.match(r.name+"/"+p.name) {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

// runTable measures every selected (row, peer) pair, rounds alternating
// peers (nginx, haproxy, nodegress, nginx, …) so that slow drifts of the
// machine spread over all of them, and renders the report.
func runTable(ctx context.Context, t *testing.T, e *l7Env, backend *benchkit.Proc, peers []*l7Peer) string {
	s := e.s
	start := time.Now()

	// The backend alone, with wrk on the same core as in every
	// measurement: it must far outrun the proxies.
	d := min(s.duration, 5*time.Second)
	direct, _, err := benchkit.Wrk{URL: "http://127.0.0.1:" + strconv.Itoa(e.backendPort) + "/",
		Threads: 1, Connections: 64, Duration: d}.Run(ctx, benchkit.LoadCPU)
	if err != nil {
		t.Fatalf("backend alone: %v", err)
	}
	fmt.Printf("backend alone (wrk and backend on core %d): %s req/s, p99 %s\n",
		benchkit.LoadCPU, benchkit.Rate(direct.Rate), benchkit.Latency(direct.P99))

	// Warm up: upstream pools filled, code paged in, Go heap grown.
	for _, p := range peers {
		if _, _, err := (benchkit.Wrk{URL: p.httpURL(), Threads: 1, Connections: 64, Duration: time.Second}).Run(ctx, benchkit.LoadCPU); err != nil {
			t.Fatalf("warm up %s: %v", p.name, err)
		}
	}

	type cell struct {
		rounds []benchkit.Result
		failed int
	}
	results := map[string]*cell{}
	key := func(row, peer string) string { return row + "/" + peer }
	var best float64
	for _, row := range l7Rows {
		var todo []*l7Peer
		for _, p := range peers {
			if p.in(row.name) && s.match(key(row.name, p.name)) {
				todo = append(todo, p)
			}
		}
		for round := 1; round <= s.rounds && len(todo) > 0; round++ {
			for _, p := range todo {
				if ctx.Err() != nil {
					t.Fatal(ctx.Err())
				}
				c := results[key(row.name, p.name)]
				if c == nil {
					c = &cell{}
					results[key(row.name, p.name)] = c
				}
				if p.proc.Exited() {
					t.Errorf("%s exited:\n%s", p.name, p.proc.Tail(20))
					c.failed++
					continue
				}
				u := benchkit.BeginUsage(p.proc, backend)
				r, out, err := row.run(ctx, p, s.duration)
				u.End(&r)
				_ = os.WriteFile(filepath.Join(e.dir, fmt.Sprintf("%s-%s-%d.txt", row.name, p.name, round)), []byte(out), 0o644)
				if err != nil {
					t.Errorf("%s %s round %d: %v", row.name, p.name, round, err)
					c.failed++
					continue
				}
				c.rounds = append(c.rounds, r)
				if row.name == "http1" {
					best = max(best, r.Rate)
				}
				fmt.Printf("%-8s round %d/%d %-20s %8s %s  p50 %-9s p99 %-9s CPU proxy %4s (%s/req) load %4s other %4s  errors %d\n",
					row.name, round, s.rounds, p.name, benchkit.Rate(r.Rate), row.unit,
					benchkit.Latency(r.P50), benchkit.Latency(r.P99), benchkit.Percent(r.ProcCPU), benchkit.PerOp(r.ProcCPU, r.Rate),
					benchkit.Percent(r.LoadCPU), benchkit.Percent(r.Background), r.Errors)
				if r.LastError != "" {
					fmt.Printf("         last error: %s\n", r.LastError)
				}
				// Let sockets of the last run drain before the next.
				time.Sleep(500 * time.Millisecond)
			}
		}
	}

	tbl := benchkit.Table{Header: []string{"test", "proxy", "median", "vs nginx", "p50", "p99",
		"proxy CPU", "CPU/req", "load CPU", "other CPU", "errors", "rounds"}}
	var notes []string
	for _, row := range l7Rows {
		var base float64
		if c := results[key(row.name, "nginx")]; c != nil && len(c.rounds) > 0 {
			base = median(c.rounds, func(r benchkit.Result) float64 { return r.Rate })
		}
		for _, p := range peers {
			c := results[key(row.name, p.name)]
			if c == nil {
				continue
			}
			if len(c.rounds) == 0 {
				tbl.Rows = append(tbl.Rows, []string{row.name, p.name, "failed"})
				continue
			}
			rate := median(c.rounds, func(r benchkit.Result) float64 { return r.Rate })
			var p50, p99 []time.Duration
			var each []string
			var errs int64
			for _, r := range c.rounds {
				p50, p99 = append(p50, r.P50), append(p99, r.P99)
				each = append(each, benchkit.Rate(r.Rate))
				errs += r.Errors
				if r.ErrorShare() > 0.001 {
					msg := fmt.Sprintf("%s %s: %d of %d requests failed in a round: its rate is not comparable",
						row.name, p.name, r.Errors, r.Requests+r.Errors)
					if r.LastError != "" {
						msg += " (" + r.LastError + ")"
					}
					notes = append(notes, msg)
				}
			}
			procCPU := median(c.rounds, func(r benchkit.Result) float64 { return r.ProcCPU })
			loadCPU := median(c.rounds, func(r benchkit.Result) float64 { return r.LoadCPU })
			other := median(c.rounds, func(r benchkit.Result) float64 { return r.Background })
			perReq := median(c.rounds, func(r benchkit.Result) float64 { return r.ProcCPU / r.Rate })
			if procCPU < 0.9 {
				notes = append(notes, fmt.Sprintf("%s %s: the proxy used %s of its core (load side %s): its rate is a lower bound, CPU/req is the fairer figure",
					row.name, p.name, benchkit.Percent(procCPU), benchkit.Percent(loadCPU)))
			}
			if other > 0.15 {
				// Background work fills idle cycles, but it also delays
				// the benchmark's wakeups despite the priority.
				notes = append(notes, fmt.Sprintf("%s %s: other work took %s of a core on the two cores during the rounds: the machine was not quiet, compare CPU/req rather than rates",
					row.name, p.name, benchkit.Percent(other)))
			}
			tbl.Rows = append(tbl.Rows, []string{
				row.name, p.name, benchkit.Rate(rate) + " " + row.unit, benchkit.Ratio(rate, base),
				benchkit.Latency(benchkit.MedianDuration(p50)), benchkit.Latency(benchkit.MedianDuration(p99)),
				benchkit.Percent(procCPU), benchkit.PerOp(perReq, 1), benchkit.Percent(loadCPU), benchkit.Percent(other),
				strconv.FormatInt(errs, 10), strings.Join(each, " / "),
			})
		}
	}
	if best > 0 && direct.Rate < 1.3*best {
		notes = append(notes, fmt.Sprintf("the backend alone did %s req/s, less than 1.3× the best proxy (%s): core %d may have limited the fastest proxies",
			benchkit.Rate(direct.Rate), benchkit.Rate(best), benchkit.LoadCPU))
	}

	var b strings.Builder
	fmt.Fprintf(&b, "# L7 proxies: nodegress, nginx, haproxy (%s)\n\n", time.Now().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "Command: `%s` (%d round(s) of %s per cell, %s in all)\n\n", s.command, s.rounds, s.duration, time.Since(start).Round(time.Second))
	b.WriteString(benchkit.Machine([]string{"nginx", "-v"}, []string{"haproxy", "-v"}, []string{"wrk", "-v"},
		[]string{"h2load", "--version"}, []string{"openssl", "version"}))
	fmt.Fprintf(&b, "\nEach proxy runs alone on core %d (taskset; one nginx worker, haproxy nbthread 1, GOMAXPROCS=1 for nodegress); "+
		"wrk or h2load, the backend (nginx, one worker, a 20-byte body from memory) and the harness share core %d. "+
		"Everything talks over loopback. Scheduling priority of every benchmark process: %s. "+
		"The backend alone did %s req/s with p99 %s (wrk -c64 on the same core).\n\n",
		benchkit.SUTCPU, benchkit.LoadCPU, benchkit.PriorityNote(), benchkit.Rate(direct.Rate), benchkit.Latency(direct.P99))
	b.WriteString(tbl.Markdown())
	b.WriteString("\nmedian: of the rounds' rates; the other columns are medians of the rounds too. " +
		"proxy CPU: the proxy's processes' user+system time as a share of one core; CPU/req: that time per request (or connection), the proxy's efficiency whatever limited the rate; " +
		"load CPU: the load tool's and the backend's time (near 100%: the client side limited the rate); " +
		"other CPU: the rest of the two cores' busy time (other processes, softirqs not charged to a process). " +
		"Rounds alternate the proxies. http1 latencies are wrk's (per request), tls-new's benchload's (connect to last byte); h2load reports no percentiles.\n")
	if len(notes) > 0 {
		b.WriteString("\nNotes:\n")
		for _, n := range notes {
			b.WriteString("- " + n + "\n")
		}
	}
	fmt.Print("\n" + b.String())
	return b.String()
}

func median(rs []benchkit.Result, f func(benchkit.Result) float64) float64 {
	xs := make([]float64, len(rs))
	for i, r := range rs {
		xs[i] = f(r)
	}
	return benchkit.Median(xs)
}

// runProfile takes a CPU profile of nodegress's proxy under the http1
// load and prints the functions costing the most.
func runProfile(ctx context.Context, t *testing.T, e *l7Env, p *l7Peer) string {
	d := e.s.duration
	fmt.Printf("\nprofiling %s for %s under wrk -t1 -c64 (HTTP/1.1 keep-alive)\n", p.name, d)
	type res struct {
		r   benchkit.Result
		err error
	}
	load := make(chan res, 1)
	go func() {
		r, _, err := benchkit.Wrk{URL: p.httpURL(), Threads: 1, Connections: 64, Duration: d + 2*time.Second}.Run(ctx, benchkit.LoadCPU)
		load <- res{r, err}
	}()
	time.Sleep(time.Second)
	prof := filepath.Join(e.s.results, "l7-"+stamp()+"-nodegress.pprof")
	if err := fetchProfile(ctx, p.pprofPort, d, prof); err != nil {
		t.Fatalf("profile: %v", err)
	}
	lr := <-load
	if lr.err != nil {
		t.Fatalf("load while profiling: %v", lr.err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n## CPU profile of nodegress's proxy (%s, under %s req/s)\n\nCommand: `%s`; profile: `tests/bench/%s`\n\n",
		d, benchkit.Rate(lr.r.Rate), e.s.command, prof)
	for _, view := range []struct{ title, flag string }{{"flat", ""}, {"cumulative", "-cum"}} {
		args := []string{"tool", "pprof", "-top", "-nodecount=25"}
		if view.flag != "" {
			args = append(args, view.flag)
		}
		args = append(args, e.proxyBin, prof)
		out, err := exec.CommandContext(ctx, "go", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("go tool pprof: %v\n%s", err, out)
		}
		fmt.Fprintf(&b, "Top 25, %s:\n\n```\n%s```\n\n", view.title, out)
	}
	fmt.Print(b.String())
	return b.String()
}

func fetchProfile(ctx context.Context, port int, d time.Duration, path string) error {
	secs := int(d / time.Second)
	ctx, cancel := context.WithTimeout(ctx, d+15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", port, secs), nil)
	if err != nil {
		return err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 1024))
		return fmt.Errorf("pprof: %s: %s", res.Status, b)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, res.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// benchBinary is the binary named by env (make bench builds it), or a
// fresh build of ./cmd/name.
func benchBinary(t *testing.T, dir, env, name string) string {
	if p := os.Getenv(env); p != "" {
		return p
	}
	bin := filepath.Join(dir, name)
	out, err := exec.Command("go", "build", "-o", bin, "./cmd/"+name).CombinedOutput()
	if err != nil {
		t.Fatalf("build %s: %v\n%s", name, err, out)
	}
	return bin
}

func startBackend(t *testing.T, e *l7Env) *benchkit.Proc {
	var err error
	if e.backendPort, err = benchkit.FreePort(); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(e.dir, "backend-nginx.conf")
	if err := benchkit.Render("l7/backend-nginx.conf", conf, map[string]string{
		"RUNDIR": e.dir, "BACKEND_PORT": strconv.Itoa(e.backendPort),
	}); err != nil {
		t.Fatal(err)
	}
	p, err := benchkit.Start(e.reg, "backend", benchkit.LoadCPU, nil, filepath.Join(e.dir, "backend.log"),
		"nginx", "-c", conf, "-p", e.dir, "-e", filepath.Join(e.dir, "backend-nginx.error.log"), "-g", "daemon off;")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	addr := "127.0.0.1:" + strconv.Itoa(e.backendPort)
	if err := p.WaitTCP(addr, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := checkBody(&http.Client{Timeout: 2 * time.Second}, "http://"+addr+"/", ""); err != nil {
		t.Fatalf("backend: %v", err)
	}
	return p
}

func startPeer(t *testing.T, e *l7Env, p *l7Peer) {
	var err error
	for _, port := range []*int{&p.httpPort, &p.httpsPort, &p.pprofPort} {
		if *port, err = benchkit.FreePort(); err != nil {
			t.Fatal(err)
		}
	}
	if p.proc, err = p.start(e, p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.proc.Stop)
	for _, port := range []int{p.httpPort, p.httpsPort} {
		if err := p.proc.WaitTCP("127.0.0.1:"+strconv.Itoa(port), 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	// Every peer must really proxy to the backend, over HTTP/1.1 and
	// over HTTP/2 with TLS, before its numbers mean anything.
	insecure := &tls.Config{InsecureSkipVerify: true}
	h1 := &http.Client{Timeout: 2 * time.Second}
	h2 := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: insecure, ForceAttemptHTTP2: true}}
	if err := checkBody(h1, p.httpURL(), "HTTP/1.1"); err != nil {
		t.Fatalf("%s over http: %v", p.name, err)
	}
	if err := checkBody(h2, p.httpsURL(), "HTTP/2.0"); err != nil {
		t.Fatalf("%s over https: %v", p.name, err)
	}
}

func checkBody(c *http.Client, url, proto string) error {
	res, err := c.Get(url)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 1024))
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK || string(b) != benchBody {
		return fmt.Errorf("%s: %s %q, want 200 %q", url, res.Status, b, benchBody)
	}
	if proto != "" && res.Proto != proto {
		return fmt.Errorf("%s: answered over %s, want %s", url, res.Proto, proto)
	}
	return nil
}

func (e *l7Env) vars(p *l7Peer) map[string]string {
	return map[string]string{
		"RUNDIR":       e.dir,
		"BACKEND_PORT": strconv.Itoa(e.backendPort),
		"HTTP_PORT":    strconv.Itoa(p.httpPort),
		"HTTPS_PORT":   strconv.Itoa(p.httpsPort),
		"CERT":         e.cert.Cert,
		"KEY":          e.cert.Key,
		"CERT_BUNDLE":  e.cert.Bundle,
	}
}

func startNginx(e *l7Env, p *l7Peer) (*benchkit.Proc, error) {
	conf := filepath.Join(e.dir, "nginx.conf")
	if err := benchkit.Render("l7/nginx.conf", conf, e.vars(p)); err != nil {
		return nil, err
	}
	return benchkit.Start(e.reg, p.name, benchkit.SUTCPU, nil, filepath.Join(e.dir, "nginx.log"),
		"nginx", "-c", conf, "-p", e.dir, "-e", filepath.Join(e.dir, "nginx.error.log"), "-g", "daemon off;")
}

func startHaproxy(e *l7Env, p *l7Peer) (*benchkit.Proc, error) {
	conf := filepath.Join(e.dir, "haproxy.cfg")
	if err := benchkit.Render("l7/haproxy.cfg", conf, e.vars(p)); err != nil {
		return nil, err
	}
	// -db: foreground, no master process; one process, one thread.
	return benchkit.Start(e.reg, p.name, benchkit.SUTCPU, nil, filepath.Join(e.dir, "haproxy.log"),
		"haproxy", "-db", "-f", conf)
}

func startNodegressGateway(e *l7Env, p *l7Peer) (*benchkit.Proc, error) {
	return benchkit.Start(e.reg, p.name, benchkit.SUTCPU, []string{"GOMAXPROCS=1"},
		filepath.Join(e.dir, p.name+".log"), e.proxyBin,
		"--http", "127.0.0.1:"+strconv.Itoa(p.httpPort),
		"--https", "127.0.0.1:"+strconv.Itoa(p.httpsPort),
		"--backend", "127.0.0.1:"+strconv.Itoa(e.backendPort),
		"--cert", e.cert.Cert, "--key", e.cert.Key,
		"--pprof", "127.0.0.1:"+strconv.Itoa(p.pprofPort),
		"--gateway")
}

func startNodegress(accessLog bool) func(e *l7Env, p *l7Peer) (*benchkit.Proc, error) {
	return func(e *l7Env, p *l7Peer) (*benchkit.Proc, error) {
		argv := []string{e.proxyBin,
			"--http", "127.0.0.1:" + strconv.Itoa(p.httpPort),
			"--https", "127.0.0.1:" + strconv.Itoa(p.httpsPort),
			"--backend", "127.0.0.1:" + strconv.Itoa(e.backendPort),
			"--cert", e.cert.Cert, "--key", e.cert.Key,
			"--pprof", "127.0.0.1:" + strconv.Itoa(p.pprofPort),
		}
		if accessLog {
			// Formatting and the buffered write syscalls are the cost;
			// a file would also fill the disk by hundreds of MB a run.
			argv = append(argv, "--access-log", os.DevNull)
		}
		return benchkit.Start(e.reg, p.name, benchkit.SUTCPU, []string{"GOMAXPROCS=1"},
			filepath.Join(e.dir, p.name+".log"), argv...)
	}
}
