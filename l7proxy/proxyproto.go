package l7proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/pires/go-proxyproto"
)

// PROXY protocol (v1 text, v2 binary): a load balancer in front of the
// node prepends the client's address to each connection it opens. The
// proxy reads it only from the peers Options.ProxyProtocolFrom names —
// from anyone else a header would let a client choose its own address —
// and requires it from them. The client address then stands for the
// connection everywhere (forwarded headers, access log, trusted-proxy
// checks, metrics); the address the connection arrived at stays the
// node's, which selects Gateway listeners.

// proxiedConn is a connection whose PROXY header was read: RemoteAddr is
// the client's, and the bytes read past the header come first.
type proxiedConn struct {
	net.Conn
	remote  net.Addr
	pending []byte
}

func (c *proxiedConn) RemoteAddr() net.Addr { return c.remote }

func (c *proxiedConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// readProxyHeader reads the PROXY header a connection starts with. A
// LOCAL header (the load balancer's own health check) keeps the
// connection's addresses.
func readProxyHeader(c net.Conn, deadline time.Time) (net.Conn, error) {
	_ = c.SetReadDeadline(deadline)
	defer c.SetReadDeadline(time.Time{})
	br := bufio.NewReaderSize(c, 512)
	h, err := proxyproto.Read(br)
	if err != nil {
		return nil, fmt.Errorf("proxy protocol header: %w", err)
	}
	pc := &proxiedConn{Conn: c, remote: c.RemoteAddr()}
	if h.Command.IsProxy() {
		if src, _, ok := h.TCPAddrs(); ok {
			pc.remote = src
		}
	}
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		pc.pending = append([]byte(nil), b...)
	}
	return pc, nil
}

// proxyProtocolFrom reports whether a connection's peer is one whose
// PROXY header is read.
func (p *Proxy) proxyProtocolFrom(c net.Conn) bool {
	if len(p.opts.ProxyProtocolFrom) == 0 {
		return false
	}
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	return err == nil && inPrefixes(ap.Addr().Unmap(), p.opts.ProxyProtocolFrom)
}

// writeProxyHeader writes the PROXY header (version 1 or 2) of a client
// connection from client to local into w, ahead of the request.
func writeProxyHeader(w io.Writer, version uint8, client, local netip.AddrPort) {
	h := proxyproto.HeaderProxyFromAddrs(version, net.TCPAddrFromAddrPort(client), net.TCPAddrFromAddrPort(local))
	_, _ = h.WriteTo(w) // into the connection's buffer; its flush reports errors
}
