package l7proxy

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"
)

// startVerifiableBackend serves HTTPS with certPEM/keyPEM and answers with
// the SNI it was asked for and the CN of the client certificate, if any.
func startVerifiableBackend(t *testing.T, certPEM, keyPEM []byte) *backend {
	t.Helper()
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: "tls", addr: netip.MustParseAddrPort(l.Addr().String())}
	b.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b.hits.Add(1)
			fmt.Fprintf(w, "sni=%s", r.TLS.ServerName)
			if pc := r.TLS.PeerCertificates; len(pc) > 0 {
				fmt.Fprintf(w, " client=%s", pc[0].Subject.CommonName)
			}
		}),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequestClientCert},
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() { _ = b.srv.ServeTLS(l, "", "") }()
	t.Cleanup(func() { _ = b.srv.Close() })
	return b
}

func TestUpstreamTLSVerification(t *testing.T) {
	certPEM, keyPEM := makeCertPEM(t, "backend", "abc.example.com", "*.wild.example.com", "spiffe://cluster/ns/app/sa/web")
	otherCA, _ := makeCertPEM(t, "other", "abc.example.com")
	be := startVerifiableBackend(t, certPEM, keyPEM)

	for _, tc := range []struct {
		name      string
		tls       *UpstreamTLS
		want      int
		updateErr bool
	}{
		{"hostname", &UpstreamTLS{ServerName: "abc.example.com", CAPEM: certPEM}, 200, false},
		{"hostname mismatch", &UpstreamTLS{ServerName: "abc.example.org", CAPEM: certPEM}, 502, false},
		{"untrusted CA", &UpstreamTLS{ServerName: "abc.example.com", CAPEM: otherCA}, 502, false},
		{"system roots only", &UpstreamTLS{ServerName: "abc.example.com", SystemRoots: true}, 502, false},
		{"DNS SAN", &UpstreamTLS{ServerName: "abc.example.com", CAPEM: certPEM, DNSNames: []string{"x.wild.example.com"}}, 200, false},
		{"DNS SAN mismatch", &UpstreamTLS{ServerName: "abc.example.com", CAPEM: certPEM, DNSNames: []string{"abc.example.org"}}, 502, false},
		{"URI SAN", &UpstreamTLS{ServerName: "abc.example.com", CAPEM: certPEM, URIs: []string{"spiffe://cluster/ns/app/sa/web"}}, 200, false},
		{"URI SAN mismatch", &UpstreamTLS{ServerName: "abc.example.com", CAPEM: certPEM, URIs: []string{"spiffe://cluster/ns/app/sa/db"}}, 502, false},
		{"skip verify", &UpstreamTLS{ServerName: "abc.example.org", CAPEM: otherCA, SkipVerify: true}, 200, false},
		{"verify depth", &UpstreamTLS{ServerName: "abc.example.com", CAPEM: certPEM, MaxDepth: 1}, 200, false},
		{"no CA", &UpstreamTLS{ServerName: "abc.example.com", CAPEM: []byte("not PEM")}, 502, true},
		{"client certificate", &UpstreamTLS{ServerName: "abc.example.com", CAPEM: certPEM, ClientCert: makeCert(t, "gateway-client")}, 200, false},
		// Without a policy the connection is encrypted, not verified.
		{"unverified", nil, 200, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := Upstream{Name: "tls", Protocol: ProtocolHTTPS, Endpoints: ep(be), TLS: tc.tls}
			cfg := Config{Upstreams: []Upstream{up}, Routes: []Route{{Host: "a.test", Path: "/", Upstream: "tls"}}}
			p := startProxy(t, Options{}, Config{})
			if errs := p.Update(cfg); (len(errs) > 0) != tc.updateErr {
				t.Fatalf("Update errors %v; want errors: %v", errs, tc.updateErr)
			}
			code, body := get(t, httpClient(), p.httpAddr, "a.test", "/")
			if code != tc.want {
				t.Fatalf("status %d (%q), want %d", code, body, tc.want)
			}
			want := "sni=" + tc.tls.serverName()
			if tc.tls != nil && tc.tls.ClientCert != nil {
				want += " client=gateway-client"
			}
			if code == 200 && tc.tls != nil && body != want {
				t.Errorf("backend saw %q, want %q", body, want)
			}
		})
	}
}

func (u *UpstreamTLS) serverName() string {
	if u == nil {
		return ""
	}
	return u.ServerName
}

// TestUpstreamTLSKeepsPool: an unchanged verification keeps the pool (and
// its connections) across updates; a changed one replaces it.
func TestUpstreamTLSKeepsPool(t *testing.T) {
	certPEM, _ := makeCertPEM(t, "backend", "abc.example.com")
	mk := func(name string) Config {
		return Config{Upstreams: []Upstream{{Name: "u", Protocol: ProtocolHTTPS, Endpoints: []Endpoint{{Addr: deadAddr(t)}},
			TLS: &UpstreamTLS{ServerName: name, CAPEM: append([]byte(nil), certPEM...)}}}}
	}
	p := startProxy(t, Options{}, mk("abc.example.com"))
	first := p.state.Load().pools["u"]
	if errs := p.Update(mk("abc.example.com")); len(errs) > 0 {
		t.Fatal(errs)
	}
	if p.state.Load().pools["u"] != first {
		t.Error("an identical verification replaced the pool")
	}
	if errs := p.Update(mk("other.example.com")); len(errs) > 0 {
		t.Fatal(errs)
	}
	if p.state.Load().pools["u"] == first {
		t.Error("a changed server name kept the pool")
	}
}

// TestUpstreamTLSClientCertIdentity: a client certificate parsed anew (as
// every translation does) is the same verification; another one is not.
func TestUpstreamTLSClientCertIdentity(t *testing.T) {
	certPEM, keyPEM := makeCertPEM(t, "client", "client.example")
	parse := func() *tls.Certificate {
		c, err := ParseCertificate(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a := &UpstreamTLS{ServerName: "x", SystemRoots: true, ClientCert: parse()}
	if !a.equal(&UpstreamTLS{ServerName: "x", SystemRoots: true, ClientCert: parse()}) {
		t.Error("the same client certificate parsed again differs")
	}
	if a.equal(&UpstreamTLS{ServerName: "x", SystemRoots: true, ClientCert: makeCert(t, "other")}) {
		t.Error("another client certificate is equal")
	}
	if a.equal(&UpstreamTLS{ServerName: "x", SystemRoots: true}) {
		t.Error("no client certificate is equal")
	}
}
