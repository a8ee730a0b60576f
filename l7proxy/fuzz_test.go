package l7proxy

import (
	"bytes"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// bytesConn is a connection reading from a byte slice.
type bytesConn struct {
	net.Conn
	r *bytes.Reader
}

func (c *bytesConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *bytesConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *bytesConn) SetReadDeadline(time.Time) error  { return nil }
func (c *bytesConn) SetDeadline(time.Time) error      { return nil }
func (c *bytesConn) SetWriteDeadline(time.Time) error { return nil }
func (c *bytesConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1} }
func (c *bytesConn) LocalAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 80} }
func (c *bytesConn) Close() error                     { return nil }
func newBytesConn(b []byte) *bytesConn                { return &bytesConn{r: bytes.NewReader(b)} }

// FuzzReadProxyHeader: any bytes from a load balancer give a header and
// the rest of the stream unchanged, or an error; never a panic.
func FuzzReadProxyHeader(f *testing.F) {
	f.Add([]byte("PROXY TCP4 203.0.113.9 192.0.2.1 5555 80\r\nGET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte("PROXY UNKNOWN\r\nrest"))
	f.Add([]byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xcb\x00\x71\x09\xc0\x00\x02\x01\x15\xb3\x00\x50body"))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := readProxyHeader(newBytesConn(data), time.Time{})
		if err != nil {
			return
		}
		var rest bytes.Buffer
		_, _ = rest.ReadFrom(c)
		if !bytes.HasSuffix(data, rest.Bytes()) {
			t.Fatalf("the stream after the header is not the input's end: %q of %q", rest.Bytes(), data)
		}
		if _, err := netip.ParseAddrPort(c.RemoteAddr().String()); err != nil {
			t.Fatalf("client address %q: %v", c.RemoteAddr(), err)
		}
	})
}

// FuzzReadClientHello: any bytes give a server name and the bytes read
// (a prefix of the input, to replay), or an error; never a panic.
func FuzzReadClientHello(f *testing.F) {
	f.Add([]byte("\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00"))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		sni, read, err := readClientHello(newBytesConn(data), time.Time{})
		if !bytes.HasPrefix(data, read) {
			t.Fatalf("read %q is not a prefix of the input", read)
		}
		if err == nil && strings.ContainsAny(sni, "\x00\r\n") {
			t.Fatalf("server name %q", sni)
		}
	})
}

// FuzzGatewayMatch: any route and request never panic; a match honours
// the listener's and the route's hostnames and the path match.
func FuzzGatewayMatch(f *testing.F) {
	f.Add("*.example.com", "a.example.com", uint8(0), "/api", "x.example.com", "/api/v1", "GET")
	f.Add("", "", uint8(1), "/exact", "host", "/exact", "POST")
	f.Add("h", "*.h", uint8(2), "/re[a-z]+", "a.h", "/reab", "")
	f.Fuzz(func(t *testing.T, listenerHost, routeHost string, pt uint8, path, host, reqPath, method string) {
		fe := netip.MustParseAddrPort("192.0.2.1:80")
		tables, _ := compileGateways([]Listener{{Name: "l", Frontends: []netip.AddrPort{fe}, Hostname: listenerHost,
			Routes: []HTTPRoute{{Source: "r", Hostnames: []string{routeHost},
				Rules: []HTTPRouteRule{{Matches: []HTTPMatch{{PathType: PathType(pt % 3), Path: path, Method: method}},
					Backends: []WeightedBackend{{Upstream: "u", Weight: 1}}}}}}}})
		f := tables.frontend(fe)
		if f == nil {
			return
		}
		h := NormalizeHost(host)
		l, e := f.match(h, reqPath, fakeGWRequest{m: method})
		if e == nil {
			return
		}
		if !hostServes(l.host, l.wildcard, h) {
			t.Fatalf("listener %q served host %q", l.host, h)
		}
		if !e.matches(reqPath, fakeGWRequest{m: method}) {
			t.Fatalf("entry does not match %q", reqPath)
		}
	})
}
