package l7proxy

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// exchangeRaw writes header (may be empty) then an HTTP/1.1 GET on a new
// connection, over TLS when sni is set, and returns the answer's status
// and body.
func exchangeRaw(t *testing.T, addr string, header []byte, sni string) (int, string, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(header); err != nil {
		return 0, "", err
	}
	var rw net.Conn = c
	if sni != "" {
		tc := tls.Client(c, &tls.Config{ServerName: sni, InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
		if err := tc.Handshake(); err != nil {
			return 0, "", err
		}
		rw = tc
	}
	if _, err := io.WriteString(rw, "GET / HTTP/1.1\r\nHost: pp.example\r\nConnection: close\r\n\r\n"); err != nil {
		return 0, "", err
	}
	res, err := http.ReadResponse(bufio.NewReader(rw), nil)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, string(b), err
}

func TestProxyProtocol(t *testing.T) {
	be := startBackend(t, "be", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Header.Get("X-Forwarded-For")+" "+r.Header.Get("X-Real-Ip"))
	}))
	cfg := Config{Upstreams: []Upstream{{Name: "be", Endpoints: ep(be)}},
		Routes:       []Route{{Host: "pp.example", Path: "/", Upstream: "be"}},
		Certificates: []Certificate{{Cert: makeCert(t, "pp", "pp.example")}}}
	trusted := startProxy(t, Options{ProxyProtocolFrom: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}, cfg)
	untrusted := startProxy(t, Options{ProxyProtocolFrom: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}, cfg)

	client := &net.TCPAddr{IP: net.ParseIP("203.0.113.9"), Port: 50123}
	dst := &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 80}
	v1, err := proxyproto.HeaderProxyFromAddrs(1, client, dst).Format()
	if err != nil {
		t.Fatal(err)
	}
	v2, err := proxyproto.HeaderProxyFromAddrs(2, client, dst).Format()
	if err != nil {
		t.Fatal(err)
	}
	local, err := (&proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}).Format()
	if err != nil {
		t.Fatal(err)
	}
	refused := func() float64 { return testutil.ToFloat64(trusted.metrics.proxied.WithLabelValues("refused")) }

	for _, tc := range []struct {
		name   string
		addr   string
		header []byte
		sni    string
		want   string // body; "" when the connection must be refused
	}{
		{"v1", trusted.httpAddr, v1, "", "203.0.113.9 203.0.113.9"},
		{"v2", trusted.httpAddr, v2, "", "203.0.113.9 203.0.113.9"},
		{"v2 then TLS", trusted.httpsAddr, v2, "pp.example", "203.0.113.9 203.0.113.9"},
		{"LOCAL keeps the peer", trusted.httpAddr, local, "", "127.0.0.1 127.0.0.1"},
		{"missing from a load balancer", trusted.httpAddr, nil, "", ""},
		{"garbage header", trusted.httpAddr, []byte("PROXY TCP4 nonsense\r\n"), "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := refused()
			code, body, err := exchangeRaw(t, tc.addr, tc.header, tc.sni)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("served %d %q; want the connection refused", code, body)
				}
				waitFor(t, "refusal counted", func() bool { return refused() == before+1 })
				return
			}
			if err != nil || code != 200 || body != tc.want {
				t.Fatalf("%d %q %v; want 200 %q", code, body, err, tc.want)
			}
		})
	}
	// From a peer not in the list a header is not read: a client cannot
	// choose its address (the header is a bad request line), while the
	// same peer's plain request is served with its own address.
	if code, _, err := exchangeRaw(t, untrusted.httpAddr, v1, ""); err == nil && code == 200 {
		t.Errorf("a PROXY header from an untrusted peer was honoured")
	}
	if code, body, err := exchangeRaw(t, untrusted.httpAddr, nil, ""); err != nil || code != 200 || !strings.HasPrefix(body, "127.0.0.1") {
		t.Errorf("untrusted peer's plain request: %d %q %v", code, body, err)
	}
}

// startProxyProtocolBackend serves HTTP/1.1 on connections that start
// with a PROXY header and answers each request with the header's source
// address; conns counts its connections.
func startProxyProtocolBackend(t *testing.T) (netip.AddrPort, *atomic.Int64) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	var conns atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				h, err := proxyproto.Read(br)
				if err != nil {
					return
				}
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					body := h.SourceAddr.String()
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
				}
			}()
		}
	}()
	return netip.MustParseAddrPort(l.Addr().String()), &conns
}

func TestProxyProtocolUpstream(t *testing.T) {
	for _, version := range []uint8{1, 2} {
		t.Run("v"+strconv.Itoa(int(version)), func(t *testing.T) {
			addr, conns := startProxyProtocolBackend(t)
			p := startProxy(t, Options{}, Config{
				Upstreams: []Upstream{{Name: "pp", ProxyProtocol: version, Endpoints: []Endpoint{{Addr: addr}}}},
				Routes:    []Route{{Host: "pp.example", Path: "/", Upstream: "pp"}}})
			// Two clients, each on its own connection, two requests each:
			// the upstream sees each client's own address and port, on
			// connections never shared between clients.
			for range 2 {
				c, err := net.Dial("tcp", p.httpAddr)
				if err != nil {
					t.Fatal(err)
				}
				br := bufio.NewReader(c)
				for range 2 {
					_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: pp.example\r\n\r\n")
					res, err := http.ReadResponse(br, nil)
					if err != nil {
						t.Fatal(err)
					}
					body, _ := io.ReadAll(res.Body)
					res.Body.Close()
					if string(body) != c.LocalAddr().String() {
						t.Errorf("upstream saw %q, want the client's %s", body, c.LocalAddr())
					}
				}
				_ = c.Close()
			}
			if n := conns.Load(); n != 4 {
				t.Errorf("upstream got %d connections for 4 requests; want one each, none reused", n)
			}
		})
	}
}
