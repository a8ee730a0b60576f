package healthcheck

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// t0 has nanoseconds so that the bodies show the full RFC 3339 format
// encoding/json writes.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)

// fakeClock is the Proxy's clock in tests: time moves only when told.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time       { return c.t }
func (c *fakeClock) step(d time.Duration) { c.t = c.t.Add(d) }

func newTestProxy(c *fakeClock) *Proxy {
	p := NewProxy(time.Minute)
	p.now = c.now
	return p
}

func nodeNamed(name string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

func taintedNode(key string) *corev1.Node {
	n := nodeNamed("node-1")
	n.Spec.Taints = []corev1.Taint{{Key: key, Effect: corev1.TaintEffectNoSchedule}}
	return n
}

func deletedNode() *corev1.Node {
	n := nodeNamed("node-1")
	n.DeletionTimestamp = &metav1.Time{Time: t0}
	return n
}

func get(h http.Handler, path string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec
}

// TestProxyHealth checks /healthz and /livez, status and body byte for
// byte, through a proxy's life: starting up, synced, a change waiting
// for its sync, and the node's deletion or autoscaler taint.
func TestProxyHealth(t *testing.T) {
	const (
		at0     = `"2026-01-02T03:04:05.123456789Z"`
		at59s   = `"2026-01-02T03:05:04.123456789Z"`
		at60s   = `"2026-01-02T03:05:05.123456789Z"`
		at70s   = `"2026-01-02T03:05:15.123456789Z"`
		at1h    = `"2026-01-02T04:04:05.123456789Z"`
		at1h10s = `"2026-01-02T04:04:15.123456789Z"`
		zero    = `"0001-01-01T00:00:00Z"`
		status  = `"status":{"IPv4":{"lastUpdated":` + at0 + `,"healthy":true}}`
	)
	tests := []struct {
		name string
		// run acts on a proxy whose clock reads t0 and whose Node is
		// node-1, untainted.
		run                    func(p *Proxy, c *fakeClock)
		healthzCode, livezCode int
		healthz, livez         string
	}{
		{
			name:        "starting up: never synced is healthy",
			run:         func(p *Proxy, c *fakeClock) {},
			healthzCode: http.StatusOK, livezCode: http.StatusOK,
			healthz: `{"lastUpdated":` + at0 + `,"currentTime":` + at0 + `,"nodeEligible":true,"healthy":true}`,
			livez:   `{"lastUpdated":` + at0 + `,"currentTime":` + at0 + `,"healthy":true}`,
		},
		{
			name: "changes queued before the first sync do not count",
			run: func(p *Proxy, c *fakeClock) {
				p.QueuedUpdate(corev1.IPv4Protocol)
				c.step(time.Hour)
			},
			healthzCode: http.StatusOK, livezCode: http.StatusOK,
			healthz: `{"lastUpdated":` + at1h + `,"currentTime":` + at1h + `,"nodeEligible":true,"healthy":true}`,
			livez:   `{"lastUpdated":` + at1h + `,"currentTime":` + at1h + `,"healthy":true}`,
		},
		{
			name: "synced and idle stays healthy",
			run: func(p *Proxy, c *fakeClock) {
				p.Updated(corev1.IPv4Protocol)
				c.step(time.Hour)
			},
			healthzCode: http.StatusOK, livezCode: http.StatusOK,
			healthz: `{"lastUpdated":` + at1h + `,"currentTime":` + at1h + `,"nodeEligible":true,"healthy":true,` + status + `}`,
			livez:   `{"lastUpdated":` + at1h + `,"currentTime":` + at1h + `,"healthy":true,` + status + `}`,
		},
		{
			name: "a change waiting less than the timeout",
			run: func(p *Proxy, c *fakeClock) {
				p.Updated(corev1.IPv4Protocol)
				c.step(time.Second)
				p.QueuedUpdate(corev1.IPv4Protocol)
				c.step(58 * time.Second)
			},
			healthzCode: http.StatusOK, livezCode: http.StatusOK,
			healthz: `{"lastUpdated":` + at59s + `,"currentTime":` + at59s + `,"nodeEligible":true,"healthy":true,` + status + `}`,
			livez:   `{"lastUpdated":` + at59s + `,"currentTime":` + at59s + `,"healthy":true,` + status + `}`,
		},
		{
			name: "a change waiting the timeout turns both 503",
			run: func(p *Proxy, c *fakeClock) {
				p.Updated(corev1.IPv4Protocol)
				p.QueuedUpdate(corev1.IPv4Protocol)
				c.step(time.Minute)
			},
			healthzCode: http.StatusServiceUnavailable, livezCode: http.StatusServiceUnavailable,
			healthz: `{"lastUpdated":` + at0 + `,"currentTime":` + at60s + `,"nodeEligible":true,"healthy":false,"status":{"IPv4":{"lastUpdated":` + at0 + `,"healthy":false}}}`,
			livez:   `{"lastUpdated":` + at0 + `,"currentTime":` + at60s + `,"healthy":false,"status":{"IPv4":{"lastUpdated":` + at0 + `,"healthy":false}}}`,
		},
		{
			name: "later changes do not move the deadline",
			run: func(p *Proxy, c *fakeClock) {
				p.Updated(corev1.IPv4Protocol)
				p.QueuedUpdate(corev1.IPv4Protocol)
				c.step(50 * time.Second)
				p.QueuedUpdate(corev1.IPv4Protocol)
				c.step(20 * time.Second)
			},
			healthzCode: http.StatusServiceUnavailable, livezCode: http.StatusServiceUnavailable,
			healthz: `{"lastUpdated":` + at0 + `,"currentTime":` + at70s + `,"nodeEligible":true,"healthy":false,"status":{"IPv4":{"lastUpdated":` + at0 + `,"healthy":false}}}`,
			livez:   `{"lastUpdated":` + at0 + `,"currentTime":` + at70s + `,"healthy":false,"status":{"IPv4":{"lastUpdated":` + at0 + `,"healthy":false}}}`,
		},
		{
			name: "a sync after a late change makes it healthy again",
			run: func(p *Proxy, c *fakeClock) {
				p.Updated(corev1.IPv4Protocol)
				p.QueuedUpdate(corev1.IPv4Protocol)
				c.step(time.Hour)
				p.Updated(corev1.IPv4Protocol)
				c.step(10 * time.Second)
			},
			healthzCode: http.StatusOK, livezCode: http.StatusOK,
			healthz: `{"lastUpdated":` + at1h10s + `,"currentTime":` + at1h10s + `,"nodeEligible":true,"healthy":true,"status":{"IPv4":{"lastUpdated":` + at1h + `,"healthy":true}}}`,
			livez:   `{"lastUpdated":` + at1h10s + `,"currentTime":` + at1h10s + `,"healthy":true,"status":{"IPv4":{"lastUpdated":` + at1h + `,"healthy":true}}}`,
		},
		{
			name:        "node unknown: /healthz 503, /livez 200",
			run:         func(p *Proxy, c *fakeClock) { p.SyncNode(nil) },
			healthzCode: http.StatusServiceUnavailable, livezCode: http.StatusOK,
			healthz: `{"lastUpdated":` + zero + `,"currentTime":` + at0 + `,"nodeEligible":false,"healthy":true}`,
			livez:   `{"lastUpdated":` + at0 + `,"currentTime":` + at0 + `,"healthy":true}`,
		},
		{
			name: "node being deleted",
			run: func(p *Proxy, c *fakeClock) {
				p.Updated(corev1.IPv4Protocol)
				p.SyncNode(deletedNode())
			},
			healthzCode: http.StatusServiceUnavailable, livezCode: http.StatusOK,
			healthz: `{"lastUpdated":` + at0 + `,"currentTime":` + at0 + `,"nodeEligible":false,"healthy":true,` + status + `}`,
			livez:   `{"lastUpdated":` + at0 + `,"currentTime":` + at0 + `,"healthy":true,` + status + `}`,
		},
		{
			name:        "node tainted for removal by the cluster autoscaler",
			run:         func(p *Proxy, c *fakeClock) { p.SyncNode(taintedNode(ToBeDeletedTaint)) },
			healthzCode: http.StatusServiceUnavailable, livezCode: http.StatusOK,
			healthz: `{"lastUpdated":` + zero + `,"currentTime":` + at0 + `,"nodeEligible":false,"healthy":true}`,
			livez:   `{"lastUpdated":` + at0 + `,"currentTime":` + at0 + `,"healthy":true}`,
		},
		{
			name:        "other taints do not matter",
			run:         func(p *Proxy, c *fakeClock) { p.SyncNode(taintedNode("node.kubernetes.io/unschedulable")) },
			healthzCode: http.StatusOK, livezCode: http.StatusOK,
			healthz: `{"lastUpdated":` + at0 + `,"currentTime":` + at0 + `,"nodeEligible":true,"healthy":true}`,
			livez:   `{"lastUpdated":` + at0 + `,"currentTime":` + at0 + `,"healthy":true}`,
		},
		{
			name: "unhealthy and not eligible",
			run: func(p *Proxy, c *fakeClock) {
				p.Updated(corev1.IPv4Protocol)
				p.QueuedUpdate(corev1.IPv4Protocol)
				p.SyncNode(deletedNode())
				c.step(time.Minute)
			},
			healthzCode: http.StatusServiceUnavailable, livezCode: http.StatusServiceUnavailable,
			healthz: `{"lastUpdated":` + at0 + `,"currentTime":` + at60s + `,"nodeEligible":false,"healthy":false,"status":{"IPv4":{"lastUpdated":` + at0 + `,"healthy":false}}}`,
			livez:   `{"lastUpdated":` + at0 + `,"currentTime":` + at60s + `,"healthy":false,"status":{"IPv4":{"lastUpdated":` + at0 + `,"healthy":false}}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &fakeClock{t: t0}
			p := newTestProxy(c)
			p.SyncNode(nodeNamed("node-1"))
			tt.run(p, c)
			h := p.Handler()
			for _, check := range []struct {
				path string
				code int
				body string
			}{{"/healthz", tt.healthzCode, tt.healthz}, {"/livez", tt.livezCode, tt.livez}} {
				rec := get(h, check.path)
				if rec.Code != check.code {
					t.Errorf("%s: code %d, want %d", check.path, rec.Code, check.code)
				}
				if got := rec.Body.String(); got != check.body {
					t.Errorf("%s: body\n%s\nwant\n%s", check.path, got, check.body)
				}
				for k, v := range map[string]string{"Content-Type": "application/json", "X-Content-Type-Options": "nosniff"} {
					if got := rec.Header().Values(k); len(got) != 1 || got[0] != v {
						t.Errorf("%s: %s %q, want %q", check.path, k, got, v)
					}
				}
			}
			if got, want := p.Healthy(), tt.livezCode == http.StatusOK; got != want {
				t.Errorf("Healthy() = %v, want %v", got, want)
			}
		})
	}
}

// TestProxyOtherPaths checks that only /healthz and /livez are served.
func TestProxyOtherPaths(t *testing.T) {
	h := NewProxy(0).Handler()
	for _, path := range []string{"/", "/healthz/", "/readyz", "/metrics"} {
		if rec := get(h, path); rec.Code != http.StatusNotFound {
			t.Errorf("%s: code %d, want 404", path, rec.Code)
		}
	}
}

// TestProxyListenAndServe serves on a real loopback port: a taken port is
// an error (for the caller to retry), and a cancelled context stops the
// server without one.
func TestProxyListenAndServe(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	p := NewProxy(0)
	p.SyncNode(nodeNamed("node-1"))
	if err := p.ListenAndServe(t.Context(), taken.Addr().String()); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("ListenAndServe on a taken port: %v, want EADDRINUSE", err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, p.Handler()) }()
	cl := &http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz: %d %s", resp.StatusCode, body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("serve did not return after its context was cancelled")
	}
}
