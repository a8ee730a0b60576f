package l7proxy

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// mirrored is what a mirror backend received.
type mirrored struct {
	backend, method, uri, host, body string
	header                           http.Header
}

// startMirrorBackend records the requests it gets; block, when not nil,
// holds each one until it is closed.
func startMirrorBackend(t *testing.T, name string, block chan struct{}) (*backend, chan mirrored) {
	t.Helper()
	got := make(chan mirrored, 1024)
	b := startDualBackend(t, name, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- mirrored{name, r.Method, r.RequestURI, r.Host, string(body), r.Header.Clone()}
		if block != nil {
			<-block
		}
		_, _ = io.WriteString(w, strings.Repeat("mirror answer ", 10000))
	})
	return b, got
}

func waitMirror(t *testing.T, ch chan mirrored, what string) mirrored {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: no mirrored request", what)
	}
	return mirrored{}
}

func mirrorCount(p *testProxy, upstream, result string) float64 {
	return testutil.ToFloat64(p.metrics.mirrors.WithLabelValues(upstream, result))
}

// TestGatewayMirror runs RequestMirror through every client side and
// upstream kind: every mirror gets the request as the rule changed it
// (headers, rewrite, body), sampling follows the fraction, a body over
// the bound and a dead mirror are dropped and counted without touching
// the request, and so are mirrors beyond the concurrency bound.
func TestGatewayMirror(t *testing.T) {
	for _, pc := range pipelineCases {
		t.Run(pc.name, func(t *testing.T) {
			main := startGatewayEcho(t, "main")
			m1, got1 := startMirrorBackend(t, "m1", nil)
			m2, got2 := startMirrorBackend(t, "m2", nil)
			block := make(chan struct{})
			slow, gotSlow := startMirrorBackend(t, "slow", block)
			defer close(block)
			up := func(name string, b *backend) Upstream {
				return Upstream{Name: name, Protocol: pc.protocol, Endpoints: ep(b)}
			}
			dead := Upstream{Name: "dead", Protocol: pc.protocol, Endpoints: []Endpoint{{Addr: deadAddr(t)}}}
			ups := []Upstream{up("main", main), up("m1", m1), up("m2", m2), up("slow", slow), dead}
			mrule := func(path string, fl Filters) HTTPRouteRule {
				return HTTPRouteRule{Matches: []HTTPMatch{{PathType: PathPrefix, Path: path}}, Filters: fl,
					Backends: []WeightedBackend{{Upstream: "main", Weight: 1,
						RequestHeaders: &HeaderEdit{Set: []Field{{"X-Backend-Only", "main"}}}}}}
			}
			p := gwTestProxy(t, pc, Options{}, ups,
				mrule("/mirror", Filters{Mirrors: []Mirror{{Upstream: "m1"}, {Upstream: "m2"}},
					RequestHeaders: &HeaderEdit{Set: []Field{{"X-Set", "new"}}, Remove: []string{"X-Remove"}},
					Rewrite:        &Rewrite{Hostname: "internal.example", Path: &PathModifier{ReplacePrefixMatch: true, Value: "/v2"}}}),
				mrule("/fraction", Filters{Mirrors: []Mirror{{Upstream: "m1", Numerator: 1, Denominator: 4}}}),
				mrule("/none", Filters{Mirrors: []Mirror{{Upstream: "m1", Numerator: 0, Denominator: 100}}}),
				mrule("/dead", Filters{Mirrors: []Mirror{{Upstream: "dead"}}}),
			)

			// Both mirrors get the request as the rule changed it; the
			// backendRef's own filter is not theirs.
			resp, e := gwDo(t, pc, p, http.MethodGet, "/mirror/x?q=1", map[string]string{"X-Remove": "r", "X-Keep": "k"})
			if resp.StatusCode != 200 || e.Backend != "main" || e.URI != "/v2/x?q=1" || e.Headers.Get("X-Set") != "new" {
				t.Fatalf("mirrored request itself: %d %+v", resp.StatusCode, e)
			}
			for _, ch := range []chan mirrored{got1, got2} {
				m := waitMirror(t, ch, "GET")
				if m.method != "GET" || m.uri != "/v2/x?q=1" || m.host != "internal.example" || m.header.Get("X-Set") != "new" ||
					m.header.Get("X-Keep") != "k" || m.header.Values("X-Remove") != nil || m.header.Values("X-Backend-Only") != nil ||
					m.header.Get("X-Forwarded-For") != "127.0.0.1" || m.body != "" {
					t.Errorf("%s got %+v", m.backend, m)
				}
			}
			// A body within the bound is mirrored whole, sized or chunked.
			for _, body := range []io.Reader{strings.NewReader("payload"), io.MultiReader(strings.NewReader("pay"), strings.NewReader("load"))} {
				if resp, e := gwDoBody(t, pc, p, http.MethodPost, "/mirror/b", body, nil); resp.StatusCode != 200 || e.Backend != "main" {
					t.Fatalf("POST: %d", resp.StatusCode)
				}
				for _, ch := range []chan mirrored{got1, got2} {
					if m := waitMirror(t, ch, "POST"); m.method != "POST" || m.body != "payload" {
						t.Errorf("%s got %s with body %q", m.backend, m.method, m.body)
					}
				}
			}
			// A longer body reaches the backend, not the mirrors.
			long := strings.Repeat("x", mirrorBodyMax+1)
			if resp, _ := gwDoBody(t, pc, p, http.MethodPost, "/mirror/long", strings.NewReader(long), nil); resp.StatusCode != 200 {
				t.Fatalf("long POST: %d", resp.StatusCode)
			}
			deadline := time.Now().Add(5 * time.Second)
			for mirrorCount(p, "m1", mirrorBody) < 1 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if n := mirrorCount(p, "m1", mirrorBody); n != 1 {
				t.Errorf("m1 body drops %v, want 1", n)
			}

			// Sampling: a quarter of the requests, and none at 0/100.
			before := len(got1)
			for range 200 {
				if resp, _ := gwDo(t, pc, p, http.MethodGet, "/fraction", nil); resp.StatusCode != 200 {
					t.Fatalf("fraction: %d", resp.StatusCode)
				}
			}
			for range 20 {
				if resp, _ := gwDo(t, pc, p, http.MethodGet, "/none", nil); resp.StatusCode != 200 {
					t.Fatalf("none: %d", resp.StatusCode)
				}
			}
			deadline = time.Now().Add(5 * time.Second)
			for p.mirrorSlots.Load() > 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if n := len(got1) - before; n < 25 || n > 75 {
				t.Errorf("1/4 of 200 requests mirrored %d times", n)
			}
			for len(got1) > 0 {
				if m := <-got1; m.uri != "/fraction" {
					t.Errorf("mirrored %s", m.uri)
				}
			}

			// A dead mirror fails on its own.
			if resp, e := gwDo(t, pc, p, http.MethodGet, "/dead", nil); resp.StatusCode != 200 || e.Backend != "main" {
				t.Errorf("dead mirror: %d %q", resp.StatusCode, e.Backend)
			}
			deadline = time.Now().Add(5 * time.Second)
			for mirrorCount(p, "dead", mirrorFailed) != 1 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if n := mirrorCount(p, "dead", mirrorFailed); n != 1 {
				t.Errorf("dead mirror failures %v, want 1", n)
			}

			// With one mirror allowed under way: while the slow one holds
			// its slot, the next are dropped, and nothing waits for it.
			one := gwTestProxy(t, pc, Options{MaxMirrorRequests: 1}, ups, mrule("/slow", Filters{Mirrors: []Mirror{{Upstream: "slow"}}}))
			start := time.Now()
			if resp, _ := gwDo(t, pc, one, http.MethodGet, "/slow", nil); resp.StatusCode != 200 {
				t.Fatalf("slow: %d", resp.StatusCode)
			}
			waitMirror(t, gotSlow, "slow")
			for range 3 {
				if resp, _ := gwDo(t, pc, one, http.MethodGet, "/slow", nil); resp.StatusCode != 200 {
					t.Fatalf("slow: %d", resp.StatusCode)
				}
			}
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("requests waited for their mirror: %s", took)
			}
			// The response may reach the client before its request is
			// finished (and its mirror counted).
			deadline = time.Now().Add(5 * time.Second)
			for mirrorCount(one, "slow", mirrorOverloaded) < 3 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if n := mirrorCount(one, "slow", mirrorOverloaded); n != 3 {
				t.Errorf("overloaded drops %v, want 3", n)
			}
		})
	}
}
