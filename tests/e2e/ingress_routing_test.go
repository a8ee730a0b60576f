package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"testing"

	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/netns"
)

// TestIngressRouting sends HTTP requests from the client to node1:80, where
// the agent's proxy routes them by Ingress host and path straight to pods
// on node1 and on node2: exact and prefix paths, several hosts, a wildcard
// host, 404 when nothing matches, 503 for a Service without endpoints, a
// defaultBackend, the published LoadBalancer IP, the X-Forwarded-* headers
// the pods see, and a WebSocket.
func TestIngressRouting(t *testing.T) {
	tp := netns.TwoNodes(t, 2, 2)
	p1a, p1b, p2a, p2b := tp.Pod("pod1a"), tp.Pod("pod1b"), tp.Pod("pod2a"), tp.Pod("pod2b")
	svcs := []harness.Service{
		svc("web", p1a, p2a),
		svc("api", p1b),
		svc("v2", p2b),
		svc("empty"),
		svc("fallback", p2b),
	}
	site := harness.Ingress{Name: "site", Rules: []harness.IngressRule{
		rule("site.test",
			path("/", "web"),
			path("/api", "api"),
			path("/api/v2", "v2", "Exact"),
			path("/down", "empty"),
			path("/gone", "missing"),
		),
		rule("other.test", path("/", "v2", "ImplementationSpecific")),
	}}
	wild := harness.Ingress{Name: "wild", Rules: []harness.IngressRule{rule("*.wild.test", path("/", "api"))}}
	empty := harness.Ingress{Name: "empty", Rules: []harness.IngressRule{rule("empty.test", path("/", "empty"))}}
	c := newL7Cluster(t, tp, svcs, site, wild, empty)
	cl := c.nodeClient(harness.L7Options{})

	t.Run("hosts and paths", func(t *testing.T) {
		c := c.withT(t)
		tests := []struct {
			url  string
			want func(*harness.L7Response) error
		}{
			{"http://site.test/index.html", servedBy("pod1a", "pod2a")},
			{"http://site.test/api", servedBy("pod1b")},
			{"http://site.test/api/", servedBy("pod1b")},
			{"http://site.test/api/users", servedBy("pod1b")},
			// Prefix matches whole path elements only.
			{"http://site.test/apix", servedBy("pod1a", "pod2a")},
			// Exact beats the shorter prefix, and only the exact path.
			{"http://site.test/api/v2", servedBy("pod2b")},
			{"http://site.test/api/v2/", servedBy("pod1b")},
			{"http://site.test/api/v2/users", servedBy("pod1b")},
			{"http://other.test/anything", servedBy("pod2b")},
			// Host names are case-insensitive; the port is not part of them.
			{"http://SITE.Test:80/api", servedBy("pod1b")},
			// A wildcard covers exactly one label.
			{"http://a.wild.test/", servedBy("pod1b")},
			{"http://b.a.wild.test/", status(404)},
			{"http://wild.test/", status(404)},
			{"http://nothing.test/", status(404)},
			{"http://" + c.node1().Addr.String() + "/", status(404)},
			// Matched, but no endpoint to send it to.
			{"http://site.test/down", status(503)},
			{"http://site.test/down/deeper", status(503)},
			{"http://site.test/gone", status(503)},
			{"http://empty.test/", status(503)},
		}
		for _, tt := range tests {
			r := c.expect(t, cl, tt.url, tt.want)
			if r != nil && r.Echo != nil && !r.Echo.Line {
				// The pod sees the request as the client sent it.
				if want := urlPath(tt.url); r.Echo.Path != want {
					t.Errorf("GET %s: pod saw path %q, want %q", tt.url, r.Echo.Path, want)
				}
				if want := urlHost(tt.url); r.Echo.Host != want {
					t.Errorf("GET %s: pod saw host %q, want %q", tt.url, r.Echo.Host, want)
				}
			}
		}
	})

	t.Run("pods on both nodes", func(t *testing.T) {
		c := c.withT(t)
		// A Service's endpoints on node1 and node2 all get requests:
		// node1's proxy reaches node2's pod directly by its pod IP.
		byPod := map[string]int{}
		for range 12 {
			if r := c.expect(t, cl, "http://site.test/", servedBy("pod1a", "pod2a")); r != nil {
				byPod[r.Pod()]++
			}
		}
		t.Logf("site.test/ answered by %v", byPod)
		if byPod["pod1a"] == 0 || byPod["pod2a"] == 0 {
			t.Errorf("want answers from pod1a (node1) and pod2a (node2), got %v", byPod)
		}
	})

	t.Run("forwarded headers", func(t *testing.T) {
		c := c.withT(t)
		for _, url := range []string{"http://site.test/headers", "http://site.test/api/headers", "http://other.test/headers"} {
			r, err := cl.Get(c.ctx, url,
				"X-Forwarded-For", "192.0.2.1, 198.51.100.7",
				"X-Real-IP", "192.0.2.2",
				"X-Forwarded-Proto", "https",
				"X-Forwarded-Host", "evil.test",
				"Forwarded", "for=192.0.2.3")
			if err != nil {
				t.Errorf("GET %s: %v", url, err)
				continue
			}
			if r.Echo == nil {
				t.Errorf("GET %s: %s", url, r)
				continue
			}
			h := r.Echo.Headers
			client := netns.ClientIP.String()
			for _, want := range []struct{ key, value string }{
				{"X-Forwarded-For", client},
				{"X-Real-Ip", client},
				{"X-Forwarded-Proto", "http"},
				{"X-Forwarded-Host", urlHost(url)},
				{"X-Forwarded-Port", "80"},
			} {
				if got := h.Values(want.key); len(got) != 1 || got[0] != want.value {
					t.Errorf("GET %s (%s): pod saw %s %q, want %q", url, r.Pod(), want.key, got, want.value)
				}
			}
			if got := h.Values("Forwarded"); len(got) > 0 {
				t.Errorf("GET %s: client-supplied Forwarded %q reached the pod", url, got)
			}
		}
	})

	t.Run("websocket", func(t *testing.T) {
		c := c.withT(t)
		addr := addrPort(c.node1().Addr, 80)
		for i := range 4 {
			ws, err := harness.DialWebSocket(c.ctx, c.client(), addr, "site.test", "/ws")
			if err != nil {
				t.Fatal(err)
			}
			var pod string
			for j := range 3 {
				msg := fmt.Sprintf("hello %d.%d", i, j)
				got, err := ws.Echo(msg)
				if err != nil {
					t.Fatalf("websocket %d message %d: %v", i, j, err)
				}
				if _, err := fmt.Sscanf(got, "pod=%s echo=", &pod); err != nil || !slices.Contains([]string{"pod1a", "pod2a"}, pod) {
					t.Errorf("websocket %d: answer %q, want one from pod1a or pod2a", i, got)
				}
				if want := "pod=" + pod + " echo=" + msg; got != want {
					t.Errorf("websocket %d: got %q, want %q", i, got, want)
				}
			}
			ws.Close()
		}
	})

	t.Run("published load balancer IP", func(t *testing.T) {
		c := c.withT(t)
		lb := harness.NewL7Client(c.client(), publishLB, harness.L7Options{})
		// The agent routes the IP locally: its first sync may still run.
		c.waitFor(t, lb, "http://site.test/api/lb", 5*settle, servedBy("pod1b"))
		c.expect(t, lb, "http://other.test/", servedBy("pod2b"))
		c.expect(t, lb, "http://nothing.test/", status(404))
		r := c.expect(t, lb, "http://site.test/api/headers", servedBy("pod1b"))
		if r != nil && r.Echo != nil {
			if got := r.Echo.Headers.Get("X-Forwarded-For"); got != netns.ClientIP.String() {
				t.Errorf("via %s the pod saw X-Forwarded-For %q, want %s", publishLB, got, netns.ClientIP)
			}
		}
		// The IP is served on the HTTP and HTTPS ports only.
		ctx, cancel := context.WithTimeout(c.ctx, harness.RequestTimeout)
		defer cancel()
		if conn, err := c.client().DialContext(ctx, "tcp", netip.AddrPortFrom(publishLB, 8080).String()); err == nil {
			conn.Close()
			t.Errorf("%s:8080 accepted a connection, want nothing there", publishLB)
		}
	})

	t.Run("default backend", func(t *testing.T) {
		c := c.withT(t)
		c.applyIngress(harness.Ingress{Name: "fallback", DefaultBackend: &harness.IngressBackend{Service: "fallback", Port: 80}})
		c.waitFor(t, cl, "http://nothing.test/x", applyWithin+settle, servedBy("pod2b"))
		c.expect(t, cl, "http://b.a.wild.test/", servedBy("pod2b"))
		c.expect(t, cl, "http://"+c.node1().Addr.String()+"/", servedBy("pod2b"))
		// Matching rules still win over the default backend.
		c.expect(t, cl, "http://site.test/api", servedBy("pod1b"))
		c.expect(t, cl, "http://site.test/down", status(503))

		c.m.Remove(t, ingressFile("fallback"))
		c.waitFor(t, cl, "http://nothing.test/x", applyWithin+settle, status(404))
	})
}

// urlHost and urlPath are the host (with its port, if any) and path of
// an absolute URL.
func urlHost(u string) string {
	pu, err := url.Parse(u)
	if err != nil {
		panic(err)
	}
	return pu.Host
}

func urlPath(u string) string {
	pu, err := url.Parse(u)
	if err != nil {
		panic(err)
	}
	return pu.Path
}
