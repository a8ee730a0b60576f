package benchkit

import (
	"strings"
	"testing"
	"time"
)

const wrkOK = `Running 10s test @ http://127.0.0.1:18080/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   520.85us   87.36us   2.79ms   80.95%
    Req/Sec    88.77k     2.04k   90.21k    94.00%
  Latency Distribution
     50%  528.00us
     75%  577.00us
     90%  608.00us
     99%    1.66ms
  441699 requests in 5.00s, 70.77MB read
Requests/sec:  88310.45
Transfer/sec:     14.15MB
`

const wrkErrors = `Running 1s test @ http://127.0.0.1:19002/
  1 threads and 4 connections
  Latency Distribution
     50%    1.20s
     75%    0.00us
     90%    0.00us
     99%    2.00s
  100 requests in 1.00s, 0.00B read
  Socket errors: connect 1, read 12, write 3, timeout 4
  Non-2xx or 3xx responses: 50
Requests/sec:    100.00
Transfer/sec:       0.00B
`

func TestParseWrk(t *testing.T) {
	for _, tc := range []struct {
		name    string
		out     string
		want    Result
		wantErr bool
	}{
		{"ok", wrkOK, Result{Rate: 88310.45, Requests: 441699, P50: 528 * time.Microsecond, P99: 1660 * time.Microsecond}, false},
		{"errors", wrkErrors, Result{Rate: 100, Requests: 100, Errors: 70, P50: 1200 * time.Millisecond, P99: 2 * time.Second}, false},
		{"garbage", "unable to connect to 127.0.0.1:1 Connection refused\n", Result{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseWrk(tc.out)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if !tc.wantErr && got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

const h2loadOK = `starting benchmark...
finished in 11.01s, 56712.30 req/s, 3.12MB/s
requests: 567123 total, 567123 started, 567123 done, 567123 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 567123 2xx, 0 3xx, 0 4xx, 0 5xx
`

const h2loadErrors = `finished in 2.00s, 500.00 req/s, 0B/s
requests: 1000 total, 1000 started, 1000 done, 990 succeeded, 10 failed, 2 errored, 1 timeout
status codes: 900 2xx, 0 3xx, 40 4xx, 50 5xx
`

func TestParseH2load(t *testing.T) {
	for _, tc := range []struct {
		name    string
		out     string
		want    Result
		wantErr bool
	}{
		{"ok", h2loadOK, Result{Rate: 56712.30, Requests: 567123}, false},
		{"errors", h2loadErrors, Result{Rate: 500, Requests: 900, Errors: 103}, false},
		{"garbage", "connect: Connection refused\n", Result{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseH2load(tc.out)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if !tc.wantErr && got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseBenchload(t *testing.T) {
	for _, tc := range []struct {
		name    string
		out     string
		want    Result
		wantErr bool
	}{
		{"ok", "connections 40000 errors 2 rate 3999.5 p50 15.2ms p99 27.18ms\n",
			Result{Rate: 3999.5, Requests: 40000, Errors: 2, P50: 15200 * time.Microsecond, P99: 27180 * time.Microsecond}, false},
		{"none", "connections 0 errors 9 rate 0.0 p50 0s p99 0s\nlast error: handshake: EOF\n",
			Result{Errors: 9, LastError: "handshake: EOF"}, false},
		{"garbage", "benchload: --url: not a loopback address\n", Result{}, true},
		{"udp-rr", "requests 300000 errors 2 rate 99999.5 p50 310µs p99 1.2ms\nlast error: 2× timeout\n",
			Result{Requests: 300000, Errors: 2, Rate: 99999.5, P50: 310 * time.Microsecond, P99: 1200 * time.Microsecond, LastError: "2× timeout"}, false},
		{"udp-rr garbage", "benchload: --addr: nope\n", Result{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseBenchload(tc.out)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if !tc.wantErr && got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := Median(tc.in); got != tc.want {
			t.Errorf("Median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestRenderString(t *testing.T) {
	vars := map[string]string{"PORT": "8080", "RUNDIR": "/tmp/x"}
	for _, tc := range []struct {
		name, in, want, wantErr string
	}{
		{"filled", "listen 127.0.0.1:@PORT@; pid @RUNDIR@/n.pid;", "listen 127.0.0.1:8080; pid /tmp/x/n.pid;", ""},
		{"no placeholders", "worker_processes 1;", "worker_processes 1;", ""},
		{"missing", "@PORT@ @CERT@ @CERT@ @KEY@", "", "no value for @CERT@, @KEY@"},
		{"lowercase is not a placeholder", "user@host", "user@host", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := RenderString(tc.in, vars)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestCheckLocal(t *testing.T) {
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"http://127.0.0.1:8080/", true},
		{"https://127.0.0.2:8443/", true},
		{"http://localhost/", true},
		{"http://[::1]:80/", true},
		{"http://10.0.0.1/", false},
		{"https://example.com/", false},
		// A name that merely starts like a loopback address.
		{"http://127.0.0.1.example.com/", false},
	} {
		err := CheckLocal(tc.url)
		if (err == nil) != tc.ok {
			t.Errorf("CheckLocal(%s) = %v, want ok %v", tc.url, err, tc.ok)
		}
	}
}

func TestParseProcStat(t *testing.T) {
	// The command name may hold spaces and parentheses.
	line := "4242 (nginx: worker (x)) S 4241 4241 4241 0 -1 4194624 100 0 0 0 1234 567 0 0 20 0 1 0 100 0 0"
	ppid, ticks, err := parseProcStat(line)
	if err != nil || ppid != 4241 || ticks != 1801 {
		t.Errorf("got ppid %d ticks %d err %v, want 4241 1801 nil", ppid, ticks, err)
	}
	if _, _, err := parseProcStat("4242 (x) S 1"); err == nil {
		t.Error("short line accepted")
	}
}

func TestParseCPUStat(t *testing.T) {
	stat := "cpu  10 0 10 100 0 0 0 0 0 0\ncpu0 1 2 3 40 5 6 7 8 0 0\ncpu1 10 20 30 400 50 60 70 80 0 0\n"
	busy, total, err := parseCPUStat(strings.NewReader(stat), 1)
	// Busy: everything but idle (400) and iowait (50).
	if err != nil || busy != 270 || total != 720 {
		t.Errorf("got busy %d total %d err %v, want 270 720 nil", busy, total, err)
	}
	if _, _, err := parseCPUStat(strings.NewReader(stat), 2); err == nil {
		t.Error("missing cpu2 not reported")
	}
}

func TestTableMarkdown(t *testing.T) {
	got := Table{Header: []string{"a", "bb"}, Rows: [][]string{{"xyz", "1"}, {"q"}}}.Markdown()
	want := "| a   | bb |\n|-----|----|\n| xyz | 1  |\n| q   |    |\n"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestFormat(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{Rate(51234), "51.2k"},
		{Rate(999), "999"},
		{Rate(1.5e6), "1.50M"},
		{Ratio(60, 50), "1.20×"},
		{Ratio(60, 0), "–"},
		{Latency(0), "–"},
		{Latency(528 * time.Microsecond), "528 µs"},
		{Latency(2500 * time.Microsecond), "2.50 ms"},
		{PerOp(0.95, 50000), "19.0 µs"},
		{PerOp(0.95, 0), "–"},
		{Percent(0.956), "96%"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}
