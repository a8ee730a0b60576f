package e2e

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/netns"
)

// TestIngressNginxAnnotations serves Ingresses written for ingress-nginx
// through the real agent: a regular expression path rewritten by its
// groups with X-Forwarded-Prefix, a canary Ingress chosen by header, a
// permanent redirect, an Ingress refused for its nginx snippet, and TLS
// passed through by SNI to a pod beside the Ingresses' own HTTPS.
func TestIngressNginxAnnotations(t *testing.T) {
	tp := netns.TwoNodes(t, 2, 2)
	p1a, p1b, p2a := tp.Pod("pod1a"), tp.Pod("pod1b"), tp.Pod("pod2a")
	// secure's port 80 is the pods' HTTPS port: each pod's own certificate.
	secure := harness.Service{Name: "secure", Type: "ClusterIP", Endpoints: harness.Endpoints(p2a),
		Ports: []harness.Port{{Name: "http", Port: 80, TargetPort: harness.PodHTTPSPort}}}
	svcs := []harness.Service{svc("web", p1a, p2a), svc("canary", p1b), secure}
	const ngx = "nginx.ingress.kubernetes.io/"
	rewrite := harness.Ingress{Name: "rewrite",
		Annotations: map[string]string{ngx + "rewrite-target": "/$2", ngx + "x-forwarded-prefix": "/shop"},
		Rules:       []harness.IngressRule{rule("rw.test", path("/shop(/|$)(.*)", "web", "ImplementationSpecific"))}}
	main := harness.Ingress{Name: "main", CreatedAt: "2025-01-01T00:00:00Z",
		Rules: []harness.IngressRule{rule("canary.test", path("/", "web"))}}
	canary := harness.Ingress{Name: "main-canary", CreatedAt: "2025-01-02T00:00:00Z",
		Annotations: map[string]string{ngx + "canary": "true", ngx + "canary-by-header": "X-Canary"},
		Rules:       []harness.IngressRule{rule("canary.test", path("/", "canary"))}}
	moved := harness.Ingress{Name: "moved",
		Annotations: map[string]string{ngx + "permanent-redirect": "https://new.test/", ngx + "permanent-redirect-code": "308"},
		Rules:       []harness.IngressRule{rule("moved.test", path("/", "web"))}}
	snippet := harness.Ingress{Name: "snippet",
		Annotations: map[string]string{ngx + "configuration-snippet": "deny all;"},
		Rules:       []harness.IngressRule{rule("snip.test", path("/", "web"))}}
	pass := harness.Ingress{Name: "pass", Annotations: map[string]string{ngx + "ssl-passthrough": "true"},
		Rules: []harness.IngressRule{rule("pass.test", path("/", "secure"))}}
	c := newL7Cluster(t, tp, svcs, main, rewrite, canary, moved, snippet, pass)
	cl := c.nodeClient(harness.L7Options{})

	r := c.waitFor(t, cl, "http://rw.test/SHOP/items?x=1", 10*time.Second, servedBy("pod1a", "pod2a"))
	if r.Echo.Path != "/items" || r.Echo.Query != "x=1" || r.Echo.Headers.Get("X-Forwarded-Prefix") != "/shop" {
		t.Errorf("pod saw path %q query %q X-Forwarded-Prefix %q, want /items, x=1, /shop",
			r.Echo.Path, r.Echo.Query, r.Echo.Headers.Get("X-Forwarded-Prefix"))
	}
	c.expect(t, cl, "http://rw.test/other", status(404))

	c.waitFor(t, cl, "http://canary.test/a", 10*time.Second, servedBy("pod1a", "pod2a"))
	for _, tt := range []struct {
		value string
		want  func(*harness.L7Response) error
	}{
		{"always", servedBy("pod1b")},
		{"never", servedBy("pod1a", "pod2a")},
		{"other", servedBy("pod1a", "pod2a")}, // weight 0
	} {
		r, err := cl.Get(c.ctx, "http://canary.test/a", "X-Canary", tt.value)
		if err != nil {
			t.Fatalf("X-Canary %s: %v", tt.value, err)
		}
		if err := tt.want(r); err != nil {
			t.Errorf("X-Canary %s: %v", tt.value, err)
		}
	}

	c.expect(t, cl, "http://moved.test/a?b=1", func(r *harness.L7Response) error {
		if err := status(308)(r); err != nil {
			return err
		}
		if loc := r.Header.Get("Location"); loc != "https://new.test/" {
			return fmt.Errorf("Location %q, want https://new.test/", loc)
		}
		return nil
	})
	// Refused, so not served at all.
	c.expect(t, cl, "http://snip.test/", status(404))

	// ssl-passthrough: the pod's own certificate proves the proxy did not
	// terminate the TLS; another name on the same port still gets the
	// proxy's.
	https := netip.AddrPortFrom(c.node1().Addr, 443)
	for _, tt := range []struct {
		sni    string
		podsCN bool
	}{{"pass.test", true}, {"rw.test", false}, {"", false}} {
		cs, err := harness.TLSHandshake(c.ctx, tp.Client.NS, https, tt.sni)
		if err != nil {
			t.Errorf("SNI %q: %v", tt.sni, err)
			continue
		}
		if cn := cs.PeerCertificates[0].Subject.CommonName; (cn == "pod2a") != tt.podsCN {
			t.Errorf("SNI %q: certificate CN %q; pod's own: %v", tt.sni, cn, tt.podsCN)
		}
	}
}
