package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/netns"
)

// Gateway addresses: the pool's only address, and one a Gateway names
// itself. The client routes both via node1 (netns.ServiceNet).
var (
	gatewayPool  = netip.MustParsePrefix("10.96.40.1/32")
	gatewayFixed = netip.MustParseAddr("10.96.41.7")
)

const gatewayClassYAML = `apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: nodegress}
spec: {controllerName: nodegress.io/gateway-controller}
`

const gatewaysYAML = `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: nodegress
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: alt, port: 8080, protocol: HTTP, hostname: "*.gw.test"}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: fixed, namespace: default}
spec:
  gatewayClassName: nodegress
  addresses: [{type: IPAddress, value: 10.96.41.7}]
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: tls, port: 443, protocol: TLS, tls: {mode: Passthrough}}
`

// siteRoute attaches to both listeners of gw; apiService serves /api.
func siteRoute(apiService string) string {
	return fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: site, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [site.gw.test, "*.gw.test"]
  rules:
  - backendRefs: [{name: web, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: %s, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: x-canary, value: "yes"}]}]
    backendRefs: [{name: v2, port: 80}]
  - matches: [{path: {type: Exact, value: /old}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /new}, statusCode: 301}}]
  - matches: [{path: {type: PathPrefix, value: /rewrite}}]
    filters:
    - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /inner}}}
    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-gateway, value: nodegress}]}}
    backendRefs: [{name: web, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: fixed, namespace: default}
spec:
  parentRefs: [{name: fixed}]
  rules: [{backendRefs: [{name: v2, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: secure, namespace: default}
spec:
  parentRefs: [{name: fixed, sectionName: tls}]
  hostnames: [secure.gw.test]
  rules: [{backendRefs: [{name: secure, port: 443}]}]
`, apiService)
}

// TestGateway serves HTTPRoutes on Gateway addresses of node1, steered
// to the proxy by the datapath like the Ingress frontends: a pool address
// and a fixed one, two listeners (a second port with a wildcard
// hostname), path, header and host matching, a redirect, a rewrite with a
// header filter, TLS passthrough by SNI to pods with their own
// certificates, pods on both nodes, the Gateway's frontends kept apart
// from the node's Ingress frontends, and a route change applied while
// serving.
func TestGateway(t *testing.T) {
	tp := netns.TwoNodes(t, 2, 2)
	p1a, p1b, p2a, p2b := tp.Pod("pod1a"), tp.Pod("pod1b"), tp.Pod("pod2a"), tp.Pod("pod2b")
	secure := harness.Service{Name: "secure", Type: "ClusterIP", Endpoints: harness.Endpoints(p1a, p2b),
		Ports: []harness.Port{{Name: "https", Port: 443, TargetPort: harness.PodHTTPSPort}}}
	svcs := []harness.Service{svc("web", p1a, p2a), svc("api", p1b), svc("v2", p2b), secure}
	site := harness.Ingress{Name: "site", Rules: []harness.IngressRule{rule("site.gw.test", path("/", "api"))}}
	c := newL7ClusterArgs(t, tp, svcs, []string{"--gateway-address-pool", gatewayPool.String()}, site)
	c.m.Write(t, "gatewayclass.yaml", gatewayClassYAML)
	c.m.Write(t, "gateways.yaml", gatewaysYAML)
	c.m.Write(t, "routes.yaml", siteRoute("api"))
	gw := harness.NewL7Client(c.client(), gatewayPool.Addr(), harness.L7Options{})
	fixed := harness.NewL7Client(c.client(), gatewayFixed, harness.L7Options{})
	node := c.nodeClient(harness.L7Options{})
	c.waitFor(t, gw, "http://site.gw.test/", 5*settle, servedBy("pod1a", "pod2a"))

	t.Run("routing", func(t *testing.T) {
		c := c.withT(t)
		for _, tt := range []struct {
			cl   *harness.L7Client
			url  string
			want func(*harness.L7Response) error
		}{
			{gw, "http://site.gw.test/index.html", servedBy("pod1a", "pod2a")},
			{gw, "http://site.gw.test/api/users", servedBy("pod1b")},
			{gw, "http://SITE.gw.test/api", servedBy("pod1b")},
			{gw, "http://site.gw.test/apix", servedBy("pod1a", "pod2a")},
			// The route's wildcard hostname, on the port-80 listener.
			{gw, "http://deep.a.gw.test/api", servedBy("pod1b")},
			{gw, "http://other.test/", status(404)},
			// The second listener: its own port, its wildcard hostname.
			{gw, "http://x.gw.test:8080/api", servedBy("pod1b")},
			{gw, "http://site.gw.test:8080/", servedBy("pod1a", "pod2a")},
			{gw, "http://other.test:8080/", status(404)},
			// The fixed Gateway's address serves its own route only.
			{fixed, "http://site.gw.test/api", servedBy("pod2b")},
			{fixed, "http://anything.test/", servedBy("pod2b")},
			// The node's own address serves the Ingress, not the routes.
			{node, "http://site.gw.test/index.html", servedBy("pod1b")},
		} {
			c.expect(t, tt.cl, tt.url, tt.want)
		}
		r, err := gw.Get(c.ctx, "http://site.gw.test/api/x", "X-Canary", "yes")
		if err != nil || servedBy("pod2b")(r) != nil {
			t.Errorf("header match: %v %v", r, err)
		}
		r, err = gw.Get(c.ctx, "http://site.gw.test/old?q=1")
		if err != nil || r.StatusCode != 301 || r.Header.Get("Location") != "http://site.gw.test/new?q=1" {
			t.Errorf("redirect: %v %v", r, err)
		}
		r = c.expect(t, gw, "http://site.gw.test/rewrite/page?q=2", servedBy("pod1a", "pod2a"))
		if r != nil && r.Echo != nil {
			if r.Echo.Path != "/inner/page" || r.Echo.Query != "q=2" || r.Echo.Headers.Get("X-Gateway") != "nodegress" {
				t.Errorf("rewrite: pod saw path %q query %q x-gateway %q", r.Echo.Path, r.Echo.Query, r.Echo.Headers.Get("X-Gateway"))
			}
		}
	})

	// A TLS passthrough listener: the pods' own certificates prove the
	// proxy did not terminate; an unknown server name is refused on the
	// same address and port.
	t.Run("tls passthrough", func(t *testing.T) {
		c := c.withT(t)
		frontend := netip.AddrPortFrom(gatewayFixed, 443)
		byPod := map[string]int{}
		for range 8 {
			cn, body, err := tlsExchange(c.ctx, c.client(), frontend, "secure.gw.test")
			if err != nil {
				t.Fatalf("SNI secure.gw.test: %v", err)
			}
			if !strings.HasPrefix(body, "pod="+cn+" ") || (cn != "pod1a" && cn != "pod2b") {
				t.Fatalf("SNI secure.gw.test: certificate of %q, answer %q; want a pod's own, from that pod", cn, body)
			}
			byPod[cn]++
		}
		if byPod["pod1a"] == 0 || byPod["pod2b"] == 0 {
			t.Errorf("want connections to pods on both nodes, got %v", byPod)
		}
		if cn, body, err := tlsExchange(c.ctx, c.client(), frontend, "other.gw.test"); err == nil {
			t.Errorf("SNI other.gw.test served by %q: %q; want the connection refused", cn, body)
		}
	})

	t.Run("pods on both nodes", func(t *testing.T) {
		c := c.withT(t)
		byPod := map[string]int{}
		for range 12 {
			if r := c.expect(t, gw, "http://site.gw.test/", servedBy("pod1a", "pod2a")); r != nil {
				byPod[r.Pod()]++
			}
		}
		if byPod["pod1a"] == 0 || byPod["pod2a"] == 0 {
			t.Errorf("want answers from pods on both nodes, got %v", byPod)
		}
	})

	t.Run("route change", func(t *testing.T) {
		c := c.withT(t)
		start := time.Now()
		c.m.Write(t, "routes.yaml", siteRoute("v2"))
		c.waitFor(t, gw, "http://site.gw.test/api", 5*settle, servedBy("pod2b"))
		if d := time.Since(start); d > applyWithin {
			t.Errorf("route change served after %s, want within %s", d, applyWithin)
		}
		// Removing the Gateways takes their addresses out of service;
		// the node's Ingress keeps serving.
		c.m.Remove(t, "gateways.yaml")
		err := harness.Eventually(5*settle, 20*time.Millisecond, func() error {
			if r, err := gw.Get(c.ctx, "http://site.gw.test/"); err == nil {
				return fmt.Errorf("gateway address still answers: %s", r)
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
		c.expect(t, node, "http://site.gw.test/", servedBy("pod1b"))
	})
	if t.Failed() {
		if log := tail(c.accessLog, 20); strings.TrimSpace(log) != "" {
			t.Logf("access log:\n%s", log)
		}
	}
}

// tlsExchange sends GET / over TLS to addr from ns with server name sni,
// without verifying the certificate, and returns the certificate's CN
// and the answer's body.
func tlsExchange(ctx context.Context, ns *netns.NS, addr netip.AddrPort, sni string) (cn, body string, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	raw, err := ns.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return "", "", err
	}
	c := tls.Client(raw, &tls.Config{ServerName: sni, InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if err := c.HandshakeContext(ctx); err != nil {
		return "", "", err
	}
	cn = c.ConnectionState().PeerCertificates[0].Subject.CommonName
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+sni+"\r\nConnection: close\r\n\r\n"); err != nil {
		return cn, "", err
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return cn, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return cn, string(b), err
}
