package l7proxy

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// startFlakyBackend fails the first fail requests of each key (query
// parameter key): with the status code, by a reset ("reset") or by a
// long wait ("slow"). It returns the attempts seen per key.
func startFlakyBackend(t *testing.T) (*backend, func(key string) int) {
	t.Helper()
	var mu sync.Mutex
	seen := map[string]int{}
	b := startDualBackend(t, "flaky", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		q := r.URL.Query()
		mu.Lock()
		seen[q.Get("key")]++
		n := seen[q.Get("key")]
		mu.Unlock()
		fail, _ := strconv.Atoi(q.Get("fail"))
		if n <= fail {
			switch how := q.Get("how"); how {
			case "reset":
				panic(http.ErrAbortHandler)
			case "slow":
				time.Sleep(time.Second)
			default:
				code, _ := strconv.Atoi(how)
				w.WriteHeader(code)
				_, _ = io.WriteString(w, "failed attempt "+strconv.Itoa(n))
				return
			}
		}
		_, _ = io.WriteString(w, "ok after "+strconv.Itoa(n))
	})
	return b, func(key string) int {
		mu.Lock()
		defer mu.Unlock()
		return seen[key]
	}
}

// TestGatewayRetry runs a rule's retry policy through every client side
// and upstream kind: retried codes up to the attempts, then the last
// answer; other codes, requests with a body and rules without a policy
// not retried; resets, backend timeouts and failed connects retried; and
// the request timeout bounding the whole.
func TestGatewayRetry(t *testing.T) {
	for _, pc := range pipelineCases {
		t.Run(pc.name, func(t *testing.T) {
			flaky, attempts := startFlakyBackend(t)
			ups := []Upstream{{Name: "flaky", Protocol: pc.protocol, Endpoints: ep(flaky)},
				{Name: "half-dead", Protocol: pc.protocol, Endpoints: []Endpoint{{Addr: deadAddr(t)}, {Addr: flaky.addr}}}}
			rule := func(path, upstream string, r *Retry, timeout, backendTimeout time.Duration) HTTPRouteRule {
				return HTTPRouteRule{Matches: []HTTPMatch{{PathType: PathPrefix, Path: path}}, Retry: r,
					Timeout: timeout, BackendTimeout: backendTimeout, Backends: []WeightedBackend{{Upstream: upstream, Weight: 1}}}
			}
			p := gwTestProxy(t, pc, Options{}, ups,
				rule("/500x3", "flaky", &Retry{Codes: []int{500}, Attempts: 3, Backoff: 5 * time.Millisecond}, 0, 0),
				rule("/all2", "flaky", &Retry{Codes: []int{500, 502, 503, 504}, Attempts: 2}, 0, 0),
				rule("/none", "flaky", nil, 0, 0),
				rule("/timeout", "flaky", &Retry{Attempts: 1}, 0, 200*time.Millisecond),
				rule("/bounded", "flaky", &Retry{Codes: []int{500}, Attempts: 5, Backoff: 300 * time.Millisecond}, 600*time.Millisecond, 0),
				rule("/connect", "half-dead", &Retry{Attempts: 1}, 0, 0),
			)
			for i, tt := range []struct {
				method, path string
				body         string
				code, seen   int
				max          time.Duration
			}{
				{"GET", "/500x3?how=500&fail=2", "", 200, 3, 0},
				{"GET", "/500x3?how=500&fail=4", "", 500, 4, 0},
				{"GET", "/500x3?how=503&fail=2", "", 503, 1, 0},
				{"HEAD", "/500x3?how=500&fail=1", "", 200, 2, 0},
				{"POST", "/500x3?how=500&fail=1", "payload", 500, 1, 0},
				{"GET", "/all2?how=502&fail=1", "", 200, 2, 0},
				{"GET", "/all2?how=504&fail=2", "", 200, 3, 0},
				{"GET", "/all2?how=503&fail=3", "", 503, 3, 0},
				{"GET", "/none?how=500&fail=1", "", 500, 1, 0},
				{"GET", "/500x3?how=reset&fail=2", "", 200, 3, 0},
				{"GET", "/timeout?how=slow&fail=1", "", 200, 2, 900 * time.Millisecond},
				{"GET", "/timeout?how=slow&fail=2", "", 504, 2, 900 * time.Millisecond},
				// 500 at once, retried after 300ms, 500 again: the next
				// wait would end after the request timeout.
				{"GET", "/bounded?how=500&fail=9", "", 500, 2, 390 * time.Millisecond},
			} {
				key := "k" + strconv.Itoa(i)
				c, base := pc.client(p, "gw.example")
				var body io.Reader
				if tt.body != "" {
					body = strings.NewReader(tt.body)
				}
				req, _ := http.NewRequest(tt.method, base+tt.path+"&key="+key, body)
				req.Host = "gw.example"
				start := time.Now()
				resp, err := c.Do(req)
				if err != nil {
					t.Fatalf("%s %s: %v", tt.method, tt.path, err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				took := time.Since(start)
				if resp.StatusCode != tt.code || attempts(key) != tt.seen {
					t.Errorf("%s %s: %d after %d attempts, want %d after %d", tt.method, tt.path, resp.StatusCode, attempts(key), tt.code, tt.seen)
				}
				if tt.max > 0 && (took > tt.max+300*time.Millisecond || tt.path[:8] == "/bounded" && took < tt.max-90*time.Millisecond) {
					t.Errorf("%s %s: took %s, want about %s", tt.method, tt.path, took.Round(time.Millisecond), tt.max)
				}
			}
			// A bodiless POST, not idempotent, is sent again after a
			// failed connect only under a retry policy.
			for i := range 4 {
				c, base := pc.client(p, "gw.example")
				req, _ := http.NewRequest(http.MethodPost, base+"/connect?key=c"+strconv.Itoa(i), nil)
				req.Host = "gw.example"
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Errorf("POST to a half-dead upstream: %d", resp.StatusCode)
				}
				for _, e := range p.state.Load().pools["half-dead"].all {
					e.ejectedUntil.Store(0) // keep the dead endpoint in rotation
				}
			}
		})
	}
}

func TestRetryBackoff(t *testing.T) {
	tx := &txn{retry: &Retry{Backoff: 300 * time.Millisecond}}
	var got []time.Duration
	for tx.retries = range 4 {
		got = append(got, tx.retryBackoff())
	}
	want := []time.Duration{300 * time.Millisecond, 600 * time.Millisecond, time.Second, time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("backoffs %v, want %v", got, want)
		}
	}
	tx = &txn{retry: &Retry{Backoff: 3 * time.Second}, retries: 2}
	if b := tx.retryBackoff(); b != 3*time.Second {
		t.Errorf("a backoff over the cap stays: %s", b)
	}
}
