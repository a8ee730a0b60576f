package l7proxy

import (
	"crypto/tls"
	"net/http"
	"net/netip"
	"testing"
	"time"
)

func TestClientValidation(t *testing.T) {
	trustedPEM, trustedKey := makeCertPEM(t, "client", "client.example")
	otherPEM, otherKey := makeCertPEM(t, "stranger", "client.example")
	trusted, err := tls.X509KeyPair(trustedPEM, trustedKey)
	if err != nil {
		t.Fatal(err)
	}
	other, err := tls.X509KeyPair(otherPEM, otherKey)
	if err != nil {
		t.Fatal(err)
	}
	be := startGatewayEcho(t, "be")
	ups := []Upstream{{Name: "be", Endpoints: ep(be)}}
	cert := Certificate{Cert: makeCert(t, "gw", "gw.example")}
	p := startProxy(t, Options{}, Config{Upstreams: ups, Certificates: []Certificate{cert}})
	strict, fallback := serveExtraHTTPS(t, p), serveExtraHTTPS(t, p)
	unparsable := serveExtraHTTPS(t, p)
	open := netip.MustParseAddrPort(p.httpsAddr)
	listener := func(name string, fe netip.AddrPort, v *ClientValidation) Listener {
		return Listener{Name: name, Frontends: []netip.AddrPort{fe}, ClientValidation: v,
			Routes: []HTTPRoute{{Source: "ns/r", Rules: []HTTPRouteRule{{Backends: []WeightedBackend{{Upstream: "be", Weight: 1}}}}}}}
	}
	errs := p.Update(Config{Upstreams: ups, Certificates: []Certificate{cert}, Listeners: []Listener{
		listener("ns/gw/strict", strict, &ClientValidation{CAPEM: trustedPEM}),
		listener("ns/gw/fallback", fallback, &ClientValidation{CAPEM: trustedPEM, AllowInsecureFallback: true}),
		listener("ns/gw/unparsable", unparsable, &ClientValidation{CAPEM: []byte("garbage")}),
		listener("ns/gw/open", open, nil),
	}})
	if len(errs) != 1 {
		t.Fatalf("Update errors %v; want the unparsable CA", errs)
	}
	for _, tc := range []struct {
		name   string
		fe     netip.AddrPort
		client *tls.Certificate
		ok     bool
	}{
		{"strict, trusted", strict, &trusted, true},
		{"strict, other", strict, &other, false},
		{"strict, none", strict, nil, false},
		{"fallback, trusted", fallback, &trusted, true},
		{"fallback, other", fallback, &other, true},
		{"fallback, none", fallback, nil, true},
		{"unparsable CA, trusted", unparsable, &trusted, false},
		{"no validation, none", open, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conf := &tls.Config{ServerName: "gw.example", InsecureSkipVerify: true}
			if tc.client != nil {
				conf.Certificates = []tls.Certificate{*tc.client}
			}
			for _, h2 := range []bool{false, true} {
				c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: conf.Clone(), ForceAttemptHTTP2: h2}}
				req, _ := http.NewRequest(http.MethodGet, "https://"+tc.fe.String()+"/", nil)
				req.Host = "gw.example"
				res, err := c.Do(req)
				if err == nil {
					res.Body.Close()
				}
				if ok := err == nil && res.StatusCode == 200; ok != tc.ok {
					t.Errorf("h2=%v: served %v (%v), want %v", h2, ok, err, tc.ok)
				}
			}
		})
	}
}
