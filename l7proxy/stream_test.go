package l7proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// startTLSBackend serves HTTPS with its own certificate (CN name) and
// answers "name sni".
func startTLSBackend(t *testing.T, name string, hosts ...string) *backend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: name, addr: netip.MustParseAddrPort(l.Addr().String())}
	b.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b.hits.Add(1)
			fmt.Fprintf(w, "%s %s", name, r.TLS.ServerName)
		}),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{*makeCert(t, name, hosts...)}},
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() { _ = b.srv.ServeTLS(l, "", "") }()
	t.Cleanup(func() { _ = b.srv.Close() })
	return b
}

// serveExtraHTTPS serves the proxy's HTTPS side on one more loopback
// port, a frontend of its own.
func serveExtraHTTPS(t *testing.T, p *testProxy) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.ServeHTTPS(l) }()
	t.Cleanup(func() { _ = l.Close() })
	return netip.MustParseAddrPort(l.Addr().String())
}

// tlsGet sends GET / over TLS with the given SNI and returns the served
// certificate's CN and the body.
func tlsGet(addr netip.AddrPort, sni string) (cn, body string, err error) {
	d := &net.Dialer{Timeout: 2 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr.String(), &tls.Config{ServerName: sni, InsecureSkipVerify: true,
		NextProtos: []string{"http/1.1"}})
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
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

func TestTLSPassthrough(t *testing.T) {
	a := startTLSBackend(t, "backend-a", "a.example")
	b := startTLSBackend(t, "backend-b", "*.wild.example")
	ups := []Upstream{
		{Name: "a", Endpoints: append(ep(a), Endpoint{Addr: deadAddr(t)})},
		{Name: "b", Endpoints: ep(b)},
		{Name: "ing", Endpoints: ep(startBackend(t, "ingress", nil))},
	}
	ingress := Route{Host: "ing.example", Path: "/", Upstream: "ing", Ingress: "ns/ing"}
	proxyCert := Certificate{Cert: makeCert(t, "proxy", "ing.example", "a.example")}
	p := startProxy(t, Options{}, Config{Upstreams: ups, Routes: []Route{ingress}, Certificates: []Certificate{proxyCert}})
	front := serveExtraHTTPS(t, p)
	listener := Listener{Name: "ns/gw/tls", Kind: ListenerTLSPassthrough, Frontends: []netip.AddrPort{front}, TLSRoutes: []TLSRoute{
		{Source: "ns/a", Hostnames: []string{"a.example"}, Backends: []WeightedBackend{{Upstream: "a", Weight: 1}}},
		{Source: "ns/wild", Hostnames: []string{"*.wild.example"}, Backends: []WeightedBackend{{Upstream: "b", Weight: 1}}},
		{Source: "ns/broken", Hostnames: []string{"broken.example"}, Backends: []WeightedBackend{{Weight: 1}}},
	}}
	if errs := p.Update(Config{Upstreams: ups, Routes: []Route{ingress}, Certificates: []Certificate{proxyCert},
		Listeners: []Listener{listener}}); len(errs) > 0 {
		t.Fatal(errs)
	}
	count := func(route, result string) float64 {
		return testutil.ToFloat64(p.metrics.streams.WithLabelValues(route, result))
	}

	for _, tc := range []struct {
		sni, cn, body, route string
	}{
		// The backend's own certificate proves the TLS was not terminated.
		{"a.example", "backend-a", "backend-a a.example", "ns/a"},
		{"x.wild.example", "backend-b", "backend-b x.wild.example", "ns/wild"},
		{"y.z.wild.example", "backend-b", "backend-b y.z.wild.example", "ns/wild"},
	} {
		before := count(tc.route, streamForwarded)
		// Each connection to route a may pick the dead endpoint first:
		// it is ejected and the connection goes to the live one.
		for range 3 {
			cn, body, err := tlsGet(front, tc.sni)
			if err != nil || cn != tc.cn || body != tc.body {
				t.Fatalf("SNI %s: cn %q body %q err %v; want cn %q body %q", tc.sni, cn, body, err, tc.cn, tc.body)
			}
		}
		waitFor(t, "forwarded count "+tc.route, func() bool { return count(tc.route, streamForwarded) == before+3 })
	}

	// Refusals close the connection: the handshake fails. Each is
	// counted under its reason.
	for _, tc := range []struct {
		sni, route, result string
	}{
		{"other.example", "", streamNoRoute},
		{"wild.example", "", streamNoRoute}, // a wildcard needs one more label
		{"", "", streamNoRoute},
		{"broken.example", "ns/broken", streamNoEndpoint},
	} {
		before := count(tc.route, tc.result)
		if _, _, err := tlsGet(front, tc.sni); err == nil {
			t.Errorf("SNI %q: connection served; want it refused", tc.sni)
		}
		waitFor(t, tc.result+" count", func() bool { return count(tc.route, tc.result) == before+1 })
	}

	// Not TLS at all: closed without an answer.
	before := count("", streamBadHello)
	c, err := net.Dial("tcp", front.String())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 64)); err == nil {
		t.Errorf("plain HTTP to a passthrough frontend got %d bytes; want the connection closed", n)
	}
	_ = c.Close()
	waitFor(t, "bad hello count", func() bool { return count("", streamBadHello) == before+1 })

	// The proxy's own HTTPS frontend still terminates TLS for Ingresses,
	// with the proxy's certificate, for a name a TLSRoute also has.
	for _, tc := range []struct{ sni, body string }{{"ing.example", "ingress"}, {"a.example", ""}} {
		cn, body, err := tlsGet(netip.MustParseAddrPort(p.httpsAddr), tc.sni)
		if err != nil || cn != "proxy" || tc.body != "" && body != tc.body {
			t.Errorf("Ingress frontend, SNI %s: cn %q body %q err %v; want cn proxy, body %q", tc.sni, cn, body, err, tc.body)
		}
	}
}

func TestTLSTerminateStream(t *testing.T) {
	plain := startBackend(t, "plain", nil)
	ups := []Upstream{{Name: "plain", Endpoints: ep(plain)}}
	certs := []Certificate{{Hosts: []string{"t.example"}, Cert: makeCert(t, "terminating", "t.example")}}
	p := startProxy(t, Options{}, Config{Upstreams: ups, Certificates: certs})
	front := serveExtraHTTPS(t, p)
	listener := Listener{Name: "ns/gw/tls", Kind: ListenerTLSTerminate, Hostname: "t.example", Frontends: []netip.AddrPort{front},
		TLSRoutes: []TLSRoute{{Source: "ns/t", Backends: []WeightedBackend{{Upstream: "plain", Weight: 1}}}}}
	if errs := p.Update(Config{Upstreams: ups, Certificates: certs, Listeners: []Listener{listener}}); len(errs) > 0 {
		t.Fatal(errs)
	}
	// The proxy terminates with the listener's certificate; the backend
	// gets the plain stream (an HTTP request, answered as such).
	cn, body, err := tlsGet(front, "t.example")
	if err != nil || cn != "terminating" || body != "plain" {
		t.Fatalf("terminate: cn %q body %q err %v; want cn terminating, body plain", cn, body, err)
	}
	if _, _, err := tlsGet(front, "other.example"); err == nil {
		t.Error("a name the listener does not serve was forwarded")
	}
	// A client offering HTTP/2 (browsers, curl, gRPC) must not get it:
	// the backend gets the stream as the client sends it.
	c, err := tls.Dial("tcp", front.String(), &tls.Config{ServerName: "t.example", InsecureSkipVerify: true,
		NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if p := c.ConnectionState().NegotiatedProtocol; p != "" {
		t.Errorf("terminating stream listener negotiated %q by ALPN, want nothing", p)
	}
}

func TestStreamCompileErrors(t *testing.T) {
	fe := netip.MustParseAddrPort("192.0.2.1:443")
	_, errs := compileStreams([]Listener{
		{Name: "pass", Kind: ListenerTLSPassthrough, Hostname: "a.example", Frontends: []netip.AddrPort{fe}},
		{Name: "term", Kind: ListenerTLSTerminate, Hostname: "b.example", Frontends: []netip.AddrPort{fe}},
		{Name: "nofront", Kind: ListenerTLSPassthrough},
		{Name: "http", Frontends: []netip.AddrPort{fe}},
	})
	if len(errs) != 1 {
		t.Fatalf("errors %v; want the missing frontend only", errs)
	}
}

// TestTLSMixedFrontend: passthrough and terminating listeners on one
// frontend, chosen by the ClientHello's server name.
func TestTLSMixedFrontend(t *testing.T) {
	tlsBackend := startTLSBackend(t, "backend-a", "a.example")
	plain := startBackend(t, "plain", nil)
	ups := []Upstream{{Name: "a", Endpoints: ep(tlsBackend)}, {Name: "plain", Endpoints: ep(plain)}}
	certs := []Certificate{{Hosts: []string{"t.example"}, Cert: makeCert(t, "terminating", "t.example")}}
	p := startProxy(t, Options{}, Config{Upstreams: ups, Certificates: certs})
	front := []netip.AddrPort{serveExtraHTTPS(t, p)}
	listeners := []Listener{
		{Name: "ns/gw/pass", Kind: ListenerTLSPassthrough, Hostname: "a.example", Frontends: front,
			TLSRoutes: []TLSRoute{{Source: "ns/a", Backends: []WeightedBackend{{Upstream: "a", Weight: 1}}}}},
		{Name: "ns/gw/term", Kind: ListenerTLSTerminate, Hostname: "t.example", Frontends: front,
			TLSRoutes: []TLSRoute{{Source: "ns/t", Backends: []WeightedBackend{{Upstream: "plain", Weight: 1}}}}},
	}
	if errs := p.Update(Config{Upstreams: ups, Certificates: certs, Listeners: listeners}); len(errs) > 0 {
		t.Fatal(errs)
	}
	for _, tc := range []struct{ sni, cn, body string }{
		{"a.example", "backend-a", "backend-a a.example"},
		{"t.example", "terminating", "plain"},
	} {
		cn, body, err := tlsGet(front[0], tc.sni)
		if err != nil || cn != tc.cn || body != tc.body {
			t.Errorf("SNI %s: cn %q body %q err %v; want cn %q body %q", tc.sni, cn, body, err, tc.cn, tc.body)
		}
	}
	if _, _, err := tlsGet(front[0], "other.example"); err == nil {
		t.Error("a name no listener serves was forwarded")
	}
}

func TestReadClientHello(t *testing.T) {
	for _, tc := range []struct {
		name string
		sni  string
	}{{"with SNI", "a.example"}, {"without SNI", ""}} {
		t.Run(tc.name, func(t *testing.T) {
			cs, ss := net.Pipe()
			defer cs.Close()
			defer ss.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			go func() {
				_ = tls.Client(cs, &tls.Config{ServerName: tc.sni, InsecureSkipVerify: true}).HandshakeContext(ctx)
			}()
			sni, read, err := readClientHello(ss, time.Now().Add(5*time.Second))
			if err != nil || sni != tc.sni {
				t.Fatalf("sni %q err %v; want %q", sni, err, tc.sni)
			}
			// What was read is the whole ClientHello record, ready to be
			// replayed: a handshake record (22) of the announced length.
			if len(read) < 5 || read[0] != 22 || int(read[3])<<8|int(read[4]) != len(read)-5 {
				t.Fatalf("read %d bytes, not one complete handshake record", len(read))
			}
		})
	}
}

// TestTLSStreamIdleTimeout: a passthrough stream that keeps moving
// outlives the idle timeout; one where nothing moves is closed after it.
func TestTLSStreamIdleTimeout(t *testing.T) {
	a := startTLSBackend(t, "backend-a", "a.example")
	ups := []Upstream{{Name: "a", Endpoints: ep(a)}}
	p := startProxy(t, Options{StreamIdleTimeout: 400 * time.Millisecond}, Config{Upstreams: ups})
	front := serveExtraHTTPS(t, p)
	if errs := p.Update(Config{Upstreams: ups, Listeners: []Listener{{Name: "ns/gw/tls", Kind: ListenerTLSPassthrough,
		Frontends: []netip.AddrPort{front}, TLSRoutes: []TLSRoute{{Source: "ns/a", Backends: []WeightedBackend{{Upstream: "a", Weight: 1}}}}}}}); len(errs) > 0 {
		t.Fatal(errs)
	}
	c, err := tls.Dial("tcp", front.String(), &tls.Config{ServerName: "a.example", InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	get := func() error {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"); err != nil {
			return err
		}
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, res.Body)
		return res.Body.Close()
	}
	// Requests every 100 ms for over twice the idle timeout.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if err := get(); err != nil {
			t.Fatalf("active stream closed: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // the client's pace
	}
	// Then nothing: the proxy closes it.
	idle := func() float64 { return testutil.ToFloat64(p.metrics.streams.WithLabelValues("ns/a", streamIdle)) }
	waitFor(t, "the idle stream closed", func() bool { return idle() == 1 })
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("the idle stream still answers")
	}
}

// TestTLSPassthroughIngressFallback: on a frontend that is also the
// Ingress HTTPS frontend, the passthrough listener takes its server name
// and every other name (or none) is terminated and routed by the Ingress
// routes, over HTTP/1.1 and HTTP/2.
func TestTLSPassthroughIngressFallback(t *testing.T) {
	pass := startTLSBackend(t, "backend-pass", "pass.example")
	ups := []Upstream{
		{Name: "pass", Endpoints: ep(pass)},
		{Name: "ing", Endpoints: ep(startBackend(t, "ingress", nil))},
	}
	ingress := Route{Host: "ing.example", Path: "/", Upstream: "ing", Ingress: "ns/ing"}
	proxyCert := Certificate{Cert: makeCert(t, "proxy", "ing.example", "pass.example")}
	p := startProxy(t, Options{}, Config{})
	front := netip.MustParseAddrPort(p.httpsAddr)
	listener := Listener{Name: "ingress ns/pass pass.example", Kind: ListenerTLSPassthrough, Hostname: "pass.example",
		IngressFallback: true, Frontends: []netip.AddrPort{front},
		TLSRoutes: []TLSRoute{{Source: "ns/pass", Backends: []WeightedBackend{{Upstream: "pass", Weight: 1}}}}}
	if errs := p.Update(Config{Upstreams: ups, Routes: []Route{ingress}, Certificates: []Certificate{proxyCert},
		Listeners: []Listener{listener}}); len(errs) > 0 {
		t.Fatal(errs)
	}
	tests := []struct{ sni, cn, body string }{
		{"pass.example", "backend-pass", "backend-pass pass.example"}, // the backend's own certificate: not terminated
		{"PASS.example", "backend-pass", "backend-pass PASS.example"}, // server names are case-insensitive
		{"ing.example", "proxy", "ingress"},
	}
	for _, tt := range tests {
		cn, body, err := tlsGet(front, tt.sni)
		if err != nil || cn != tt.cn || !strings.HasPrefix(body, tt.body) {
			t.Errorf("SNI %s: cn %q body %q err %v; want cn %q body %q", tt.sni, cn, body, err, tt.cn, tt.body)
		}
	}
	// Without the fallback the same frontend refuses other names.
	listener.IngressFallback = false
	if errs := p.Update(Config{Upstreams: ups, Routes: []Route{ingress}, Certificates: []Certificate{proxyCert},
		Listeners: []Listener{listener}}); len(errs) > 0 {
		t.Fatal(errs)
	}
	if _, _, err := tlsGet(front, "ing.example"); err == nil {
		t.Error("SNI ing.example served without the Ingress fallback")
	}
	// HTTP/2 through the fallback.
	listener.IngressFallback = true
	if errs := p.Update(Config{Upstreams: ups, Routes: []Route{ingress}, Certificates: []Certificate{proxyCert},
		Listeners: []Listener{listener}}); len(errs) > 0 {
		t.Fatal(errs)
	}
	req, _ := http.NewRequest(http.MethodGet, "https://"+p.httpsAddr+"/", nil)
	req.Host = "ing.example"
	resp, err := tlsClient("ing.example", true).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		t.Errorf("HTTP/2 through the fallback: %d %s", resp.StatusCode, resp.Proto)
	}
}
