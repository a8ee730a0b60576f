package l7proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// makeCertPEM creates a self-signed certificate for names (DNS names, or
// URIs when they have a scheme).
func makeCertPEM(t testing.TB, cn string, names ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	var dns []string
	var uris []*url.URL
	for _, n := range names {
		if u, err := url.Parse(n); err == nil && u.Scheme != "" {
			uris = append(uris, u)
		} else {
			dns = append(dns, n)
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     dns,
		URIs:         uris,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb})
}

func makeCert(t testing.TB, cn string, names ...string) *tls.Certificate {
	t.Helper()
	c, k := makeCertPEM(t, cn, names...)
	cert, err := ParseCertificate(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestParseCertificate(t *testing.T) {
	certPEM, keyPEM := makeCertPEM(t, "a", "a.example")
	_, otherKey := makeCertPEM(t, "b", "b.example")
	tests := []struct {
		name    string
		cert    []byte
		key     []byte
		wantErr string
	}{
		{"valid", certPEM, keyPEM, ""},
		{"empty cert", nil, keyPEM, "tls.crt is empty"},
		{"empty key", certPEM, []byte(" \n"), "tls.key is empty"},
		{"not pem", []byte("MIIBdzCCAR2gAwIBAgI"), keyPEM, "tls.crt: no PEM data found"},
		{"key in cert", keyPEM, keyPEM, "tls.crt: no usable PEM block (found PRIVATE KEY)"},
		{"cert in key", certPEM, certPEM, "tls.key: no usable PEM block (found CERTIFICATE)"},
		{"mismatched key", certPEM, otherKey, "private key does not match public key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseCertificate(tt.cert, tt.key)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if c.Leaf == nil || c.Leaf.DNSNames[0] != "a.example" {
					t.Errorf("leaf not parsed: %+v", c.Leaf)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestCertStore(t *testing.T) {
	def := makeCert(t, "default")
	exact := makeCert(t, "exact", "a.example")
	wild := makeCert(t, "wild", "*.wild.example")
	fromLeaf := makeCert(t, "leaf", "leaf.example", "*.leafwild.example")
	first := makeCert(t, "first", "dup.example")
	second := makeCert(t, "second", "dup.example")
	s, errs := newCertStore([]Certificate{
		{Hosts: []string{"a.example"}, Cert: exact, Source: "ns/exact"},
		{Hosts: []string{"*.wild.example", "x.wild.example"}, Cert: wild, Source: "ns/wild"},
		{Cert: fromLeaf, Source: "ns/leaf"},
		{Hosts: []string{"dup.example"}, Cert: first, Source: "ns/first"},
		{Hosts: []string{"dup.example"}, Cert: second, Source: "ns/second"},
		{Hosts: []string{"broken.example"}, Source: "ns/broken"},
	}, def)
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "ns/broken") {
		t.Errorf("errors %v, want one for ns/broken", errs)
	}
	tests := []struct {
		sni  string
		want *tls.Certificate
	}{
		{"a.example", exact},
		{"A.Example.", exact},
		{"b.a.example", def},
		{"x.wild.example", wild},
		{"y.wild.example", wild},
		{"z.y.wild.example", def},
		{"wild.example", def},
		{"leaf.example", fromLeaf},
		{"q.leafwild.example", fromLeaf},
		{"dup.example", first},
		{"unknown.example", def},
		{"", def},
	}
	for _, tt := range tests {
		if got := s.get(tt.sni); got != tt.want {
			t.Errorf("get(%q) = %s, want %s", tt.sni, got.Leaf.Subject.CommonName, tt.want.Leaf.Subject.CommonName)
		}
	}
}

// servedCN connects with TLS using sni and returns the served
// certificate's common name and the negotiated protocol.
func servedCN(t *testing.T, addr, sni string, alpn []string) (string, string) {
	t.Helper()
	d := &net.Dialer{Timeout: 2 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: sni, InsecureSkipVerify: true, NextProtos: alpn})
	if err != nil {
		t.Fatalf("dial %s: %v", sni, err)
	}
	defer c.Close()
	st := c.ConnectionState()
	return st.PeerCertificates[0].Subject.CommonName, st.NegotiatedProtocol
}

func TestTLSServing(t *testing.T) {
	a := startBackend(t, "a", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Header.Get("X-Forwarded-Proto")+" "+r.Proto)
	}))
	cfg := Config{
		Routes:       []Route{{Host: "a.example", Path: "/", Upstream: "u", Ingress: "ns/a"}},
		Upstreams:    []Upstream{{Name: "u", Endpoints: ep(a)}},
		Certificates: []Certificate{{Hosts: []string{"a.example"}, Cert: makeCert(t, "cert-v1", "a.example"), Source: "ns/a-tls"}},
	}
	p := startProxy(t, Options{}, cfg)

	if cn, _ := servedCN(t, p.httpsAddr, "a.example", nil); cn != "cert-v1" {
		t.Errorf("a.example served %q", cn)
	}
	if cn, _ := servedCN(t, p.httpsAddr, "other.example", nil); cn != "nodegress default certificate" {
		t.Errorf("unknown SNI served %q", cn)
	}
	if cn, _ := servedCN(t, p.httpsAddr, "", nil); cn != "nodegress default certificate" {
		t.Errorf("no SNI served %q", cn)
	}
	for _, tt := range []struct {
		alpn []string
		want string
	}{
		{[]string{"h2", "http/1.1"}, "h2"},
		{[]string{"http/1.1"}, "http/1.1"},
	} {
		if _, proto := servedCN(t, p.httpsAddr, "a.example", tt.alpn); proto != tt.want {
			t.Errorf("ALPN %v negotiated %q, want %q", tt.alpn, proto, tt.want)
		}
	}

	// Requests over HTTP/2 and HTTP/1.1, with verification against the
	// served certificate.
	pool := x509.NewCertPool()
	pool.AddCert(cfg.Certificates[0].Cert.Leaf)
	for _, h2 := range []bool{true, false} {
		tr := &http.Transport{
			TLSClientConfig:   &tls.Config{ServerName: "a.example", RootCAs: pool},
			ForceAttemptHTTP2: h2,
		}
		if !h2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
		req, _ := http.NewRequest(http.MethodGet, "https://"+p.httpsAddr+"/", nil)
		req.Host = "a.example"
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("h2=%v: %v", h2, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		wantProto := "HTTP/1.1"
		if h2 {
			wantProto = "HTTP/2.0"
		}
		if resp.Proto != wantProto || string(body) != "https HTTP/1.1" {
			t.Errorf("h2=%v: proto %s body %q", h2, resp.Proto, body)
		}
	}

	// Rotation: a new Config with a new certificate, no restart.
	cfg.Certificates = []Certificate{{Hosts: []string{"a.example"}, Cert: makeCert(t, "cert-v2", "a.example"), Source: "ns/a-tls"}}
	if errs := p.Update(cfg); len(errs) > 0 {
		t.Fatal(errs)
	}
	if cn, _ := servedCN(t, p.httpsAddr, "a.example", nil); cn != "cert-v2" {
		t.Errorf("after rotation a.example served %q", cn)
	}
}
