package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/netns"
)

// TestIngressBrokenAnnotation gives an Ingress an invalid nodegress.io/
// annotation: that Ingress alone stops being served (its host gets 404),
// with a log line naming the annotation, while the other Ingress keeps
// serving; fixing the value serves it again.
func TestIngressBrokenAnnotation(t *testing.T) {
	tp := netns.SingleNode(t, 2)
	p1a, p1b := tp.Pod("pod1a"), tp.Pod("pod1b")
	good := harness.Ingress{Name: "good", Rules: []harness.IngressRule{rule("good.test", path("/", "good"))}}
	bad := func(bodySize string) harness.Ingress {
		return harness.Ingress{
			Name:        "bad",
			Annotations: map[string]string{"nodegress.io/proxy-body-size": bodySize},
			Rules:       []harness.IngressRule{rule("bad.test", path("/", "bad"))},
		}
	}
	c := newL7Cluster(t, tp, []harness.Service{svc("good", p1a), svc("bad", p1b)}, good, bad("1m"))
	cl := c.nodeClient(harness.L7Options{})
	c.waitFor(t, cl, "http://bad.test/x", 5*settle, servedBy("pod1b"))

	// The good Ingress is polled all along: it must never miss a request.
	l := startL7Loop(c, "good.test", "/loop", "pod1a")
	c.applyIngress(bad("banana"))
	c.waitFor(t, cl, "http://bad.test/x", applyWithin+settle, status(404))
	if err := c.agent.WaitLog("banana", 2*time.Second); err != nil {
		t.Errorf("the invalid annotation is not logged: %v", err)
	} else {
		for _, line := range strings.Split(c.agent.Log(), "\n") {
			if strings.Contains(line, "banana") {
				t.Logf("agent: %s", line)
				if !strings.Contains(line, "default/bad") || !strings.Contains(line, "nodegress.io/proxy-body-size") {
					t.Errorf("log line does not name the Ingress and the annotation: %s", line)
				}
			}
		}
	}
	for i := range 5 {
		c.expect(t, cl, fmt.Sprintf("http://bad.test/%d", i), status(404))
		c.expect(t, cl, fmt.Sprintf("http://good.test/%d", i), servedBy("pod1a"))
	}
	c.applyIngress(bad("2m"))
	c.waitFor(t, cl, "http://bad.test/x", applyWithin+settle, servedBy("pod1b"))
	if n, fails, dials := l.finish(); len(fails) > 0 {
		t.Errorf("%d of %d requests to good.test failed while bad.test was broken:\n%s", len(fails), n, strings.Join(fails[:min(len(fails), 10)], "\n"))
	} else if dials != 1 {
		t.Errorf("good.test's kept-alive client needed %d connections for %d requests, want 1", dials, n)
	} else {
		t.Logf("good.test answered all %d requests on one connection while bad.test was broken", n)
	}
	if !c.agent.Running() {
		t.Error("agent exited")
	}
}

// l7Loop requests one path of a host every 10 ms (at most 2000 times) on
// one raw kept-alive connection, dialled again only after it failed (a raw
// connection, unlike net/http's, is replaced only when the proxy closes
// it).
type l7Loop struct {
	stop  chan struct{}
	done  chan struct{}
	n     int
	dials int
	fails []string
}

func startL7Loop(c *l7cluster, host, path string, pods ...string) *l7Loop {
	l := &l7Loop{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		var conn *harness.L7Conn
		defer func() {
			if conn != nil {
				conn.Close()
			}
		}()
		for range 2000 {
			var (
				r   *harness.L7Response
				err error
			)
			if conn == nil {
				l.dials++
				conn, err = harness.DialL7(c.ctx, c.client(), addrPort(c.node1().Addr, 80), host)
			}
			if err == nil {
				if r, err = conn.Get(c.ctx, path); err != nil {
					conn.Close()
					conn = nil
				} else {
					err = servedBy(pods...)(r)
				}
			}
			l.n++
			if err != nil {
				l.fails = append(l.fails, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), err))
			}
			select {
			case <-l.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	return l
}

// finish stops the loop and returns the number of requests, the failures
// and the number of connections the loop opened.
func (l *l7Loop) finish() (int, []string, int) {
	close(l.stop)
	<-l.done
	return l.n, l.fails, l.dials
}

// accessLine is one line of the proxy's JSON access log.
type accessLine struct {
	Time     string  `json:"time"`
	Client   string  `json:"client"`
	Method   string  `json:"method"`
	Host     string  `json:"host"`
	Path     string  `json:"path"`
	Proto    string  `json:"proto"`
	Status   int     `json:"status"`
	Bytes    int64   `json:"bytes"`
	Duration float64 `json:"duration_ms"`
	Upstream string  `json:"upstream"`
	Ingress  string  `json:"ingress"`
	Service  string  `json:"service"`
	// RequestID is the X-Request-ID sent upstream.
	RequestID string `json:"request_id"`
}

// TestIngressObservability checks the agent's JSON access log (one line per
// request, with status, Ingress, Service and endpoint) and its Prometheus
// metrics served with --metrics-addr inside the node's namespace
// (nodegress_http_requests_total by namespace, ingress, service and code).
func TestIngressObservability(t *testing.T) {
	tp := netns.SingleNode(t, 1)
	pod := tp.Pod("pod1a")
	obs := harness.Ingress{Name: "obs", Namespace: "shop", Rules: []harness.IngressRule{
		rule("obs.test", path("/", "obs"), path("/down", "down")),
	}}
	shop := func(s harness.Service) harness.Service { s.Namespace = "shop"; return s }
	c := newL7Cluster(t, tp, []harness.Service{shop(svc("obs", pod)), shop(svc("down"))}, obs)
	cl := c.nodeClient(harness.L7Options{})
	metrics := harness.NewL7Client(c.node1().NS, netip.MustParseAddr("127.0.0.1"), harness.L7Options{})
	scrape := func() map[string]float64 {
		t.Helper()
		r, err := metrics.Get(c.ctx, "http://"+metricsAddr+"/metrics")
		if err != nil || r.StatusCode != 200 {
			t.Fatalf("GET %s/metrics in %s: %v %v", metricsAddr, c.node1().NS.Name, r, err)
		}
		ms, err := harness.ParseMetrics(r.Body)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, m := range ms {
			if m.Name == "nodegress_http_requests_total" {
				out[fmt.Sprintf("%s/%s/%s/%s", m.Labels["namespace"], m.Labels["ingress"], m.Labels["service"], m.Labels["code"])] = m.Value
			}
		}
		return out
	}
	if r, err := metrics.Get(c.ctx, "http://"+metricsAddr+"/readyz"); err != nil || r.StatusCode != 200 {
		t.Errorf("/readyz: %v %v", r, err)
	}
	before := scrape()

	const n = 5
	tag := fmt.Sprintf("/obs-%d", time.Now().UnixNano())
	for i := range n {
		c.expect(t, cl, fmt.Sprintf("http://obs.test%s/%d", tag, i), servedBy("pod1a"))
	}
	c.expect(t, cl, "http://obs.test/down"+tag, status(503))
	c.expect(t, cl, "http://unknown.test"+tag, status(404))

	t.Run("access log", func(t *testing.T) {
		var lines []accessLine
		// The log is flushed every 100 ms.
		err := harness.Eventually(2*time.Second, 50*time.Millisecond, func() error {
			b, err := os.ReadFile(c.accessLog)
			if err != nil {
				return err
			}
			lines = lines[:0]
			sc := bufio.NewScanner(bytes.NewReader(b))
			for sc.Scan() {
				var l accessLine
				if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
					return fmt.Errorf("access log line %q is no JSON object: %w", sc.Text(), err)
				}
				if strings.Contains(l.Path, tag) {
					lines = append(lines, l)
				}
			}
			if len(lines) < n+2 {
				return fmt.Errorf("%d lines for this test's requests, want %d", len(lines), n+2)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(lines) != n+2 {
			t.Errorf("%d access log lines for %d requests", len(lines), n+2)
		}
		for _, l := range lines {
			t.Logf("%+v", l)
			if l.Client != netns.ClientIP.String() || l.Method != "GET" || l.Proto != "HTTP/1.1" || l.Time == "" {
				t.Errorf("line %+v: want client %s, GET, HTTP/1.1, a time", l, netns.ClientIP)
			}
			switch {
			case l.Host == "unknown.test":
				if l.Status != 404 || l.Ingress != "" || l.Upstream != "" {
					t.Errorf("unmatched request logged as %+v, want status 404 without ingress or upstream", l)
				}
			case strings.HasPrefix(l.Path, "/down"):
				if l.Status != 503 || l.Ingress != "shop/obs" || l.Upstream != "" {
					t.Errorf("request without endpoints logged as %+v, want status 503, ingress shop/obs", l)
				}
			default:
				want := addrPort(pod.Addr, harness.PodHTTPPort).String()
				if l.Status != 200 || l.Host != "obs.test" || l.Ingress != "shop/obs" || !strings.HasPrefix(l.Service, "shop/obs") || l.Upstream != want || l.Bytes == 0 {
					t.Errorf("line %+v: want status 200, host obs.test, ingress shop/obs, service shop/obs*, upstream %s, bytes", l, want)
				}
			}
		}
	})

	t.Run("metrics", func(t *testing.T) {
		after := scrape()
		for _, want := range []struct {
			series string
			delta  float64
		}{
			{"shop/obs/obs/200", n},
			{"shop/obs/down/503", 1},
			{"///404", 1},
		} {
			if got := after[want.series] - before[want.series]; got != want.delta {
				t.Errorf("nodegress_http_requests_total{namespace/ingress/service/code = %s} grew by %v, want %v (all: %v)", want.series, got, want.delta, after)
			}
		}
		t.Logf("nodegress_http_requests_total: %v", after)
	})
}
