package e2e

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/harness/testcert"
	"github.com/nodegress/nodegress/tests/netns"
)

// TestIngressTLS serves HTTPS on node1:443 with certificates from
// kubernetes.io/tls Secrets: the chain verifies against the test's CA for
// each host by SNI, unknown names get the self-signed default certificate,
// HTTP/2 is negotiated by ALPN, ssl-redirect answers plain HTTP with a 308,
// an h2c upstream streams chunks and trailers to an HTTP/2 client, and a
// rewritten Secret is served without a restart.
func TestIngressTLS(t *testing.T) {
	tp := netns.TwoNodes(t, 1, 1)
	p1a, p2a := tp.Pod("pod1a"), tp.Pod("pod2a")
	ca, err := testcert.NewCA("nodegress e2e CA")
	if err != nil {
		t.Fatal(err)
	}
	issue := func(hosts ...string) *testcert.Leaf {
		t.Helper()
		l, err := ca.Issue(hosts...)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	siteCert := issue("a.tls.test", "b.tls.test")
	streamCert := issue("stream.tls.test")

	streamSvc := harness.Service{
		Name:      "stream",
		Type:      "ClusterIP",
		Ports:     []harness.Port{{Name: "h2c", Port: 81, TargetPort: harness.PodH2CPort}},
		Endpoints: harness.Endpoints(p2a),
	}
	ings := []harness.Ingress{
		{
			Name:  "tls-a",
			TLS:   []harness.IngressTLS{{Hosts: []string{"a.tls.test"}, SecretName: "site-cert"}},
			Rules: []harness.IngressRule{rule("a.tls.test", path("/", "web"))},
		},
		{
			Name:        "tls-b",
			Annotations: map[string]string{"nodegress.io/ssl-redirect": "true"},
			TLS:         []harness.IngressTLS{{Hosts: []string{"b.tls.test"}, SecretName: "site-cert"}},
			Rules:       []harness.IngressRule{rule("b.tls.test", path("/", "web"))},
		},
		{
			Name:        "stream",
			Annotations: map[string]string{"nodegress.io/backend-protocol": "h2c"},
			TLS:         []harness.IngressTLS{{Hosts: []string{"stream.tls.test"}, SecretName: "stream-cert"}},
			Rules: []harness.IngressRule{rule("stream.tls.test", harness.IngressPath{
				Path: "/", Backend: harness.IngressBackend{Service: "stream", PortName: "h2c"},
			})},
		},
	}
	writeSecret := func(m *harness.Manifests, t *testing.T, name string, l *testcert.Leaf) {
		m.Write(t, "secret-"+name+".yaml", harness.TLSSecretYAML("default", name, l.CertPEM, l.KeyPEM))
	}
	c := newL7Cluster(t, tp, []harness.Service{svc("web", p1a, p2a), streamSvc}, ings...)
	writeSecret(c.m, t, "site-cert", siteCert)
	writeSecret(c.m, t, "stream-cert", streamCert)

	node := c.node1()
	https := addrPort(node.Addr, 443)
	h1 := c.nodeClient(harness.L7Options{RootCAs: ca.Pool()})
	h2 := c.nodeClient(harness.L7Options{RootCAs: ca.Pool(), HTTP2: true})
	c.waitFor(t, h1, "https://a.tls.test/ready", 5*settle, servedBy("pod1a", "pod2a"))

	t.Run("certificate by SNI", func(t *testing.T) {
		c := c.withT(t)
		for _, host := range []string{"a.tls.test", "b.tls.test"} {
			// The client verifies the chain against the CA for host.
			r := c.expect(t, h1, "https://"+host+"/sni", servedBy("pod1a", "pod2a"))
			if r == nil {
				continue
			}
			if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
				t.Fatalf("https://%s: no TLS state", host)
			}
			if leaf := r.TLS.PeerCertificates[0]; leaf.SerialNumber.Cmp(siteCert.Cert.SerialNumber) != 0 {
				t.Errorf("https://%s served certificate %s (serial %x), want the Secret's (serial %x)",
					host, leaf.Subject, leaf.SerialNumber, siteCert.Cert.SerialNumber)
			}
			if r.Echo != nil && r.Echo.Headers.Get("X-Forwarded-Proto") != "https" {
				t.Errorf("https://%s: pod saw X-Forwarded-Proto %q, want https", host, r.Echo.Headers.Get("X-Forwarded-Proto"))
			}
		}
		c.expect(t, h1, "https://stream.tls.test/sni", servedBy("pod2a"))
	})

	t.Run("default certificate for unknown names", func(t *testing.T) {
		c := c.withT(t)
		for _, sni := range []string{"unknown.tls.test", ""} {
			st, err := harness.TLSHandshake(c.ctx, c.client(), https, sni)
			if err != nil {
				t.Errorf("sni %q: %v", sni, err)
				continue
			}
			cert := st.PeerCertificates[0]
			if cert.SerialNumber.Cmp(siteCert.Cert.SerialNumber) == 0 || cert.SerialNumber.Cmp(streamCert.Cert.SerialNumber) == 0 {
				t.Errorf("sni %q got an Ingress's certificate %s, want the default one", sni, cert.Subject)
			}
			// Self-signed: issued by itself and signed with its own key.
			if !bytes.Equal(cert.RawIssuer, cert.RawSubject) {
				t.Errorf("sni %q: default certificate %s issued by %s, want self-signed", sni, cert.Subject, cert.Issuer)
			} else if err := cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
				t.Errorf("sni %q: default certificate %s not signed by its own key: %v", sni, cert.Subject, err)
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool()}); err == nil {
				t.Errorf("sni %q: default certificate verifies against the Secret's CA", sni)
			}
			t.Logf("sni %q: default certificate %q, issuer %q", sni, cert.Subject, cert.Issuer)
		}
		// Verifying clients refuse it.
		if r, err := h1.Get(c.ctx, "https://unknown.tls.test/"); err == nil {
			t.Errorf("a verifying client accepted the default certificate for unknown.tls.test: %s", r)
		}
	})

	t.Run("HTTP/2 by ALPN", func(t *testing.T) {
		c := c.withT(t)
		r := c.expect(t, h2, "https://a.tls.test/h2", servedBy("pod1a", "pod2a"))
		if r != nil && (r.ProtoMajor != 2 || r.TLS.NegotiatedProtocol != "h2") {
			t.Errorf("HTTP/2 client got %s over ALPN %q, want HTTP/2.0 over h2", r.Proto, r.TLS.NegotiatedProtocol)
		}
		r = c.expect(t, h1, "https://a.tls.test/h1", servedBy("pod1a", "pod2a"))
		if r != nil && (r.ProtoMajor != 1 || r.TLS.NegotiatedProtocol == "h2") {
			t.Errorf("HTTP/1.1 client got %s over ALPN %q", r.Proto, r.TLS.NegotiatedProtocol)
		}
		// Many requests multiplexed on one HTTP/2 connection.
		for i := range 10 {
			c.expect(t, h2, fmt.Sprintf("https://b.tls.test/h2/%d", i), servedBy("pod1a", "pod2a"))
		}
	})

	t.Run("ssl-redirect", func(t *testing.T) {
		c := c.withT(t)
		plain := c.nodeClient(harness.L7Options{})
		r := c.expect(t, plain, "http://b.tls.test/some/path?q=1&r=2", status(308))
		if r != nil {
			if loc := r.Header.Get("Location"); loc != "https://b.tls.test/some/path?q=1&r=2" {
				t.Errorf("redirect to %q, want https://b.tls.test/some/path?q=1&r=2", loc)
			}
		}
		// Over HTTPS the same Ingress serves; without the annotation
		// plain HTTP is served too.
		c.expect(t, h1, "https://b.tls.test/some/path", servedBy("pod1a", "pod2a"))
		r = c.expect(t, plain, "http://a.tls.test/plain", servedBy("pod1a", "pod2a"))
		if r != nil && r.Echo != nil && r.Echo.Headers.Get("X-Forwarded-Proto") != "http" {
			t.Errorf("plain http: pod saw X-Forwarded-Proto %q", r.Echo.Headers.Get("X-Forwarded-Proto"))
		}
	})

	t.Run("h2c streaming upstream", func(t *testing.T) {
		c := c.withT(t)
		const chunks, interval = 5, 100 * time.Millisecond
		stream := c.nodeClient(harness.L7Options{RootCAs: ca.Pool(), HTTP2: true, Timeout: 10 * time.Second})
		for _, tc := range []struct {
			name   string
			client *harness.L7Client
			url    string
			major  int
		}{
			{"HTTP/2 over TLS", stream, "https://stream.tls.test", 2},
			{"HTTP/1.1", c.nodeClient(harness.L7Options{Timeout: 10 * time.Second}), "http://stream.tls.test", 1},
		} {
			start := time.Now()
			resp, err := tc.client.Stream(c.ctx, fmt.Sprintf("%s/stream?n=%d&interval=%s", tc.url, chunks, interval))
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
				continue
			}
			if resp.StatusCode != 200 || resp.ProtoMajor != tc.major {
				resp.Body.Close()
				t.Errorf("%s: %s %s, want 200 over HTTP/%d", tc.name, resp.Proto, resp.Status, tc.major)
				continue
			}
			var lines []string
			var arrivals []time.Duration
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				arrivals = append(arrivals, time.Since(start))
				lines = append(lines, sc.Text())
			}
			resp.Body.Close()
			if err := sc.Err(); err != nil {
				t.Errorf("%s: reading the stream after %d chunks: %v", tc.name, len(lines), err)
			}
			if len(lines) != chunks {
				t.Errorf("%s: got %d chunks, want %d: %q", tc.name, len(lines), chunks, lines)
			}
			for i, l := range lines {
				// The pod saw HTTP/2: the proxy spoke h2c to it.
				if want := fmt.Sprintf("chunk %d pod=pod2a proto=HTTP/2.0", i); l != want {
					t.Errorf("%s: chunk %d is %q, want %q", tc.name, i, l, want)
				}
			}
			// Flushed chunk by chunk, not buffered until the end: the
			// chunks arrive spread over the time the pod took to send
			// them, not together. (A spread, not an absolute time, so a
			// loaded machine does not fail the test.)
			if len(arrivals) > 0 {
				if spread := arrivals[len(arrivals)-1] - arrivals[0]; spread < (chunks-1)*interval/2 {
					t.Errorf("%s: chunks arrived at %v: within %s although the pod sent them %s apart; the proxy buffered the stream", tc.name, arrivals, spread, interval)
				}
			}
			if got := resp.Trailer.Get("X-Stream-Chunks"); got != fmt.Sprint(chunks) {
				t.Errorf("%s: trailer X-Stream-Chunks %q, want %d (trailers %v)", tc.name, got, chunks, resp.Trailer)
			}
			if got := resp.Trailer.Get("X-Stream-Pod"); got != "pod2a" {
				t.Errorf("%s: trailer X-Stream-Pod %q, want pod2a", tc.name, got)
			}
			var at []string
			for _, d := range arrivals {
				at = append(at, d.Round(time.Millisecond).String())
			}
			t.Logf("%s: %d chunks arriving after %s, trailers %v", tc.name, len(lines), strings.Join(at, " "), resp.Trailer)
		}
	})

	t.Run("certificate rotation", func(t *testing.T) {
		c := c.withT(t)
		// A connection made before the rotation keeps working after it.
		keep := c.nodeClient(harness.L7Options{RootCAs: ca.Pool(), HTTP2: true, MaxConnsPerHost: 1})
		before := c.expect(t, keep, "https://a.tls.test/before", servedBy("pod1a", "pod2a"))

		rotated := issue("a.tls.test", "b.tls.test")
		writeSecret(c.m, t, "site-cert", rotated)
		start := time.Now()
		var got *x509.Certificate
		err := harness.Eventually(2*applyWithin, 20*time.Millisecond, func() error {
			st, err := harness.TLSHandshake(c.ctx, c.client(), https, "a.tls.test")
			if err != nil {
				return err
			}
			got = st.PeerCertificates[0]
			if got.SerialNumber.Cmp(rotated.Cert.SerialNumber) != 0 {
				return fmt.Errorf("still serving serial %x, want %x", got.SerialNumber, rotated.Cert.SerialNumber)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("rotated certificate not served: %v", err)
		}
		t.Logf("rotated certificate served after %s", time.Since(start).Round(time.Millisecond))
		if !c.agent.Running() {
			t.Fatal("agent exited")
		}
		// Verified end to end, for both names of the certificate.
		for _, host := range []string{"a.tls.test", "b.tls.test"} {
			fresh := c.nodeClient(harness.L7Options{RootCAs: ca.Pool()})
			r := c.expect(t, fresh, "https://"+host+"/after", servedBy("pod1a", "pod2a"))
			if r != nil && r.TLS.PeerCertificates[0].SerialNumber.Cmp(rotated.Cert.SerialNumber) != 0 {
				t.Errorf("https://%s: still the old certificate", host)
			}
		}
		if before != nil {
			r := c.expect(t, keep, "https://a.tls.test/after", servedBy("pod1a", "pod2a"))
			if r != nil && !bytes.Equal(r.TLS.PeerCertificates[0].Raw, before.TLS.PeerCertificates[0].Raw) {
				t.Errorf("the connection opened before the rotation was replaced (new handshake)")
			}
		}
	})
}
