package l7proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// flakyAttempt is what the flaky backend saw of one attempt.
type flakyAttempt struct {
	body, requestID string
}

// startFlakyBackend fails the first fail requests of each key (query
// parameter key): with the status code, by a reset ("reset") or by a
// long wait ("slow"). It returns the attempts seen per key.
func startFlakyBackend(t *testing.T) (*backend, func(key string) []flakyAttempt) {
	t.Helper()
	var mu sync.Mutex
	seen := map[string][]flakyAttempt{}
	b := startDualBackend(t, "flaky", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		q := r.URL.Query()
		mu.Lock()
		seen[q.Get("key")] = append(seen[q.Get("key")], flakyAttempt{string(body), r.Header.Get(hdrRequestID)})
		n := len(seen[q.Get("key")])
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
	return b, func(key string) []flakyAttempt {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen[key])
	}
}

// TestGatewayRetry runs a rule's retry policy through every client side
// and upstream kind: retried codes up to the attempts, then the last
// answer; other codes and rules without a policy not retried; resets, backend timeouts and failed connects retried; and
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
				{"POST", "/500x3?how=500&fail=1", "payload", 200, 2, 0},
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
				if resp.StatusCode != tt.code || len(attempts(key)) != tt.seen {
					t.Errorf("%s %s: %d after %d attempts, want %d after %d", tt.method, tt.path, resp.StatusCode, len(attempts(key)), tt.code, tt.seen)
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

// retryBody is a request body whose bytes tell their places apart.
func retryBody(n int) []byte {
	b := make([]byte, 0, n+8)
	for i := 0; len(b) < n; i++ {
		b = fmt.Appendf(b, "%07d\n", i)
	}
	return b[:n]
}

// abortingBody sends part of a body, then fails: the client gives up
// under way.
type abortingBody struct{ left []byte }

func (a *abortingBody) Read(p []byte) (int, error) {
	if len(a.left) == 0 {
		return 0, errors.New("client gave up")
	}
	n := copy(p, a.left)
	a.left = a.left[n:]
	return n, nil
}

// TestGatewayRetryBody retries requests with a body through every client
// side and upstream kind: each attempt's backend gets the same bytes and
// the same request ID, for bodies sent whole, streamed, and of unknown
// length, up to the copy's bound (Options.RetryBodyBytes); a longer body
// is not retried and its answer reaches the client; a failed connect
// sends the body to the next endpoint; a body the client aborted is not
// sent again.
func TestGatewayRetryBody(t *testing.T) {
	const bound = 64 << 10 // the default
	for _, pc := range pipelineCases {
		t.Run(pc.name, func(t *testing.T) {
			flaky, attempts := startFlakyBackend(t)
			ups := []Upstream{{Name: "flaky", Protocol: pc.protocol, Endpoints: ep(flaky)},
				{Name: "half-dead", Protocol: pc.protocol, Endpoints: []Endpoint{{Addr: deadAddr(t)}, {Addr: flaky.addr}}}}
			rule := func(path, upstream string, r *Retry) HTTPRouteRule {
				return HTTPRouteRule{Matches: []HTTPMatch{{PathType: PathPrefix, Path: path}}, Retry: r,
					Backends: []WeightedBackend{{Upstream: upstream, Weight: 1}}}
			}
			var logBuf syncBuffer
			p := gwTestProxy(t, pc, Options{AccessLog: &logBuf}, ups,
				rule("/503", "flaky", &Retry{Codes: []int{503}, Attempts: 2}),
				rule("/connect", "half-dead", &Retry{Attempts: 1}),
			)
			send := func(path string, body []byte, unknownLength bool) (int, error) {
				c, base := pc.client(p, "gw.example")
				req, _ := http.NewRequest(http.MethodPost, base+path, bytes.NewReader(body))
				if unknownLength {
					req.Body = io.NopCloser(struct{ io.Reader }{bytes.NewReader(body)})
					req.ContentLength = -1
				}
				req.Host = "gw.example"
				resp, err := c.Do(req)
				if err != nil {
					return 0, err
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				return resp.StatusCode, nil
			}
			for i, tt := range []struct {
				name          string
				size          int
				unknownLength bool
				code, seen    int
			}{
				{"small", 7, false, 200, 2},
				{"streamed", 40 << 10, false, 200, 2},
				{"unknown length", 40 << 10, true, 200, 2},
				{"at the bound", bound, false, 200, 2},
				{"unknown length at the bound", bound, true, 200, 2},
				{"over the bound", bound + 1, false, 503, 1},
				{"unknown length over the bound", bound + 1, true, 503, 1},
			} {
				key := "b" + strconv.Itoa(i)
				body := retryBody(tt.size)
				code, err := send("/503?how=503&fail=1&key="+key, body, tt.unknownLength)
				if err != nil {
					t.Fatalf("%s: %v", tt.name, err)
				}
				seen := attempts(key)
				if code != tt.code || len(seen) != tt.seen {
					t.Errorf("%s: %d after %d attempts, want %d after %d", tt.name, code, len(seen), tt.code, tt.seen)
				}
				for n, a := range seen {
					if a.body != string(body) {
						t.Errorf("%s: attempt %d got %d bytes, not the %d sent", tt.name, n+1, len(a.body), len(body))
					}
					if a.requestID == "" || a.requestID != seen[0].requestID {
						t.Errorf("%s: attempt %d has request ID %q, the first %q", tt.name, n+1, a.requestID, seen[0].requestID)
					}
				}
			}

			// A POST, not idempotent, goes with its body to the next
			// endpoint after a failed connect under a retry policy.
			body := retryBody(20 << 10)
			for i := range 4 {
				key := "c" + strconv.Itoa(i)
				code, err := send("/connect?key="+key, body, false)
				if err != nil {
					t.Fatal(err)
				}
				seen := attempts(key)
				if code != 200 || len(seen) != 1 || seen[0].body != string(body) {
					t.Errorf("POST with a body to a half-dead upstream: %d, %d attempts", code, len(seen))
				}
				for _, e := range p.state.Load().pools["half-dead"].all {
					e.ejectedUntil.Store(0) // keep the dead endpoint in rotation
				}
			}

			// A body the client gave up on is not sent again: the request
			// ends (its access log line) with at most the one attempt.
			for _, size := range []int{1 << 10, 30 << 10} {
				key := "abort" + strconv.Itoa(size)
				c, base := pc.client(p, "gw.example")
				req, _ := http.NewRequest(http.MethodPost, base+"/503/"+key+"?how=503&fail=1&key="+key,
					&abortingBody{left: retryBody(size)})
				req.ContentLength = int64(size) + 1000
				req.Host = "gw.example"
				if resp, err := c.Do(req); err == nil {
					resp.Body.Close()
					t.Errorf("aborted body of %d bytes: %d", size, resp.StatusCode)
				}
				waitFor(t, "the aborted request's end", func() bool { return strings.Contains(logBuf.String(), "/503/"+key) })
				if seen := attempts(key); len(seen) > 1 {
					t.Errorf("aborted body of %d bytes sent %d times", size, len(seen))
				}
			}
		})
	}
}

// TestRetryBodyExpectContinue retries an HTTP/1.1 request that waited
// for "100 Continue" before sending its body: the client is asked once,
// and the retry sends the body it kept.
func TestRetryBodyExpectContinue(t *testing.T) {
	for _, pc := range pipelineCases {
		if pc.h2 || pc.h2c {
			continue
		}
		t.Run(pc.name, func(t *testing.T) {
			flaky, attempts := startFlakyBackend(t)
			p := gwTestProxy(t, pc, Options{}, []Upstream{{Name: "flaky", Protocol: pc.protocol, Endpoints: ep(flaky)}},
				HTTPRouteRule{Matches: []HTTPMatch{{PathType: PathPrefix, Path: "/"}}, Retry: &Retry{Codes: []int{503}, Attempts: 1},
					Backends: []WeightedBackend{{Upstream: "flaky", Weight: 1}}})
			c, err := net.Dial("tcp", p.httpAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			body := retryBody(3000)
			_, _ = fmt.Fprintf(c, "POST /?how=503&fail=1&key=e HTTP/1.1\r\nHost: gw.example\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", len(body))
			br := bufio.NewReader(c)
			var statuses []int
			for {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("after %v: %v", statuses, err)
				}
				statuses = append(statuses, resp.StatusCode)
				if resp.StatusCode == http.StatusContinue {
					if len(statuses) == 1 {
						_, _ = c.Write(body)
					}
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				break
			}
			if want := []int{100, 200}; !slices.Equal(statuses, want) {
				t.Errorf("responses %v, want %v", statuses, want)
			}
			seen := attempts("e")
			if len(seen) != 2 || seen[0].body != string(body) || seen[1].body != string(body) {
				t.Errorf("%d attempts; bodies sent whole: %v", len(seen), len(seen) == 2 && seen[0].body == seen[1].body)
			}
		})
	}
}
