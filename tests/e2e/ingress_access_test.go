package e2e

import (
	"encoding/base64"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/netns"
)

// authSecretYAML is an Opaque Secret holding an htpasswd file under
// "auth", as `kubectl create secret generic --from-file=auth` makes it.
func authSecretYAML(name, htpasswd string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata:
  name: %s
  namespace: default
type: Opaque
data:
  auth: %s
`, name, base64.StdEncoding.EncodeToString([]byte(htpasswd)))
}

// TestIngressAccessControl runs the access-control annotations through the
// real agent: basic auth from a Secret (and failing closed when the Secret
// goes away), sticky sessions by cookie, a deny list matching the client,
// and a per-client rate limit.
func TestIngressAccessControl(t *testing.T) {
	tp := netns.SingleNode(t, 2)
	pods := podNames(tp.Pod("pod1a"), tp.Pod("pod1b"))
	web := svc("web", tp.Pod("pod1a"), tp.Pod("pod1b"))
	// {SHA} of "secret" (htpasswd -s).
	const users = "alice:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n"
	open := harness.Ingress{Name: "open", Rules: []harness.IngressRule{rule("open.test", path("/", "web"))}}
	locked := harness.Ingress{Name: "locked", Annotations: map[string]string{
		"nodegress.io/auth-type":   "basic",
		"nodegress.io/auth-secret": "users",
		"nodegress.io/auth-realm":  "staff",
		"nodegress.io/affinity":    "cookie",
	}, Rules: []harness.IngressRule{rule("locked.test", path("/", "web"))}}
	client := netip.PrefixFrom(tp.Client.Addr, 32)
	denied := harness.Ingress{Name: "denied", Annotations: map[string]string{
		"nodegress.io/denylist-source-range": "192.0.2.0/24," + client.String(),
	}, Rules: []harness.IngressRule{rule("denied.test", path("/", "web"))}}
	limited := harness.Ingress{Name: "limited", Annotations: map[string]string{
		"nodegress.io/limit-rps":              "1",
		"nodegress.io/limit-burst-multiplier": "1",
	}, Rules: []harness.IngressRule{rule("limited.test", path("/", "web"))}}

	c := newL7Cluster(t, tp, []harness.Service{web}, open)
	c.m.Write(t, "users.yaml", authSecretYAML("users", users))
	c.applyIngress(locked)
	c.applyIngress(denied)
	c.applyIngress(limited)
	cl := c.nodeClient(harness.L7Options{})
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:secret"))

	t.Run("basic auth", func(t *testing.T) {
		c := c.withT(t)
		r := c.waitFor(t, cl, "http://locked.test/", applyWithin+5*settle, status(401))
		if got := r.Header.Get("Www-Authenticate"); got != `Basic realm="staff"` {
			t.Errorf("WWW-Authenticate %q", got)
		}
		bad := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:wrong"))
		if r, err := cl.Get(c.ctx, "http://locked.test/", "Authorization", bad); err != nil || r.StatusCode != 401 || r.Echo != nil {
			t.Errorf("wrong password: %v %v", r, err)
		}
		r, err := cl.Get(c.ctx, "http://locked.test/", "Authorization", basic)
		if err != nil {
			t.Fatal(err)
		}
		if err := servedBy(pods...)(r); err != nil {
			t.Fatal(err)
		}

		// Sticky: the cookie keeps the pod, and does not name it.
		setCookie := r.Header.Get("Set-Cookie")
		cookie, _, _ := strings.Cut(setCookie, ";")
		if !strings.HasPrefix(cookie, "INGRESSCOOKIE=") {
			t.Fatalf("Set-Cookie %q", setCookie)
		}
		for _, p := range tp.Pods() {
			if strings.Contains(setCookie, p.Addr.String()) {
				t.Errorf("cookie %q reveals pod address %s", setCookie, p.Addr)
			}
		}
		first := r.Pod()
		for i := range 10 {
			r, err := cl.Get(c.ctx, fmt.Sprintf("http://locked.test/%d", i), "Authorization", basic, "Cookie", cookie)
			if err != nil {
				t.Fatal(err)
			}
			if err := servedBy(first)(r); err != nil {
				t.Errorf("request %d with the cookie: %v", i, err)
			}
		}

		// The Secret goes away: the Ingress fails closed, with 503.
		c.m.Remove(t, "users.yaml")
		c.waitFor(t, cl, "http://locked.test/", applyWithin+settle, status(503))
		if r, err := cl.Get(c.ctx, "http://locked.test/", "Authorization", basic); err != nil || r.StatusCode != 503 || r.Echo != nil {
			t.Errorf("without its Secret, the Ingress answered %v %v", r, err)
		}
		c.m.Write(t, "users.yaml", authSecretYAML("users", users))
		c.waitFor(t, cl, "http://locked.test/", applyWithin+settle, status(401))
	})

	t.Run("deny list", func(t *testing.T) {
		c := c.withT(t)
		c.waitFor(t, cl, "http://denied.test/", applyWithin+settle, status(403))
		c.expect(t, cl, "http://open.test/", servedBy(pods...))
	})

	t.Run("rate limit", func(t *testing.T) {
		c := c.withT(t)
		c.waitFor(t, cl, "http://limited.test/", applyWithin+settle, func(r *harness.L7Response) error {
			if r.StatusCode != 200 && r.StatusCode != 503 {
				return fmt.Errorf("got %s", r)
			}
			return nil
		})
		// At 1/s with a burst of 1, ten requests in a row cannot all
		// pass, and some must be refused with the proxy's own 503.
		var passed, limitedN int
		for range 10 {
			r, err := cl.Get(c.ctx, "http://limited.test/")
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case r.StatusCode == 200 && r.Echo != nil:
				passed++
			case r.StatusCode == 503 && r.Echo == nil:
				limitedN++
			default:
				t.Errorf("unexpected %s", r)
			}
		}
		if limitedN == 0 || passed > 4 {
			t.Errorf("%d passed, %d limited; want at most a burst through", passed, limitedN)
		}
		c.expect(t, cl, "http://open.test/", servedBy(pods...))
	})

	// Every refusal above is counted by route and reason.
	metrics := harness.NewL7Client(c.node1().NS, netip.MustParseAddr("127.0.0.1"), harness.L7Options{})
	r, err := metrics.Get(c.ctx, "http://"+metricsAddr+"/metrics")
	if err != nil || r.StatusCode != 200 {
		t.Fatalf("GET %s/metrics: %v %v", metricsAddr, r, err)
	}
	ms, err := harness.ParseMetrics(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	deniedBy := map[string]float64{}
	for _, m := range ms {
		if m.Name == "nodegress_http_denied_requests_total" {
			deniedBy[m.Labels["route"]+"/"+m.Labels["reason"]] = m.Value
		}
	}
	t.Logf("denied: %v", deniedBy)
	for _, k := range []string{"default/locked/basic_auth", "default/locked/misconfigured", "default/denied/source_range", "default/limited/rate_limit"} {
		if deniedBy[k] < 1 {
			t.Errorf("nodegress_http_denied_requests_total{%s} = %v, want at least 1", k, deniedBy[k])
		}
	}
}
