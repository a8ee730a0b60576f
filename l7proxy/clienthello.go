package l7proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"time"
)

// maxClientHello bounds what is read to find a ClientHello's end: the
// largest handshake message TLS allows plus record headers is far above
// any real ClientHello (a post-quantum key share makes it ~2 KiB).
const maxClientHello = 64 << 10

// errHelloRead ends the handshake once the ClientHello is in hand.
var errHelloRead = errors.New("client hello read")

// readClientHello reads a TLS ClientHello from c without answering it and
// returns the server name it asks for and every byte read, which the
// connection's next reader (a backend, or the TLS server) must get first.
// crypto/tls parses the message, so fragmented records and every
// extension layout are handled as the TLS server itself handles them.
func readClientHello(c net.Conn, deadline time.Time) (sni string, read []byte, err error) {
	var buf bytes.Buffer
	rc := &recordingConn{Conn: c, r: io.LimitReader(io.TeeReader(c, &buf), maxClientHello)}
	_ = c.SetReadDeadline(deadline)
	defer c.SetReadDeadline(time.Time{})
	var hello *tls.ClientHelloInfo
	herr := tls.Server(rc, &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			hello = h
			return nil, errHelloRead
		},
	}).Handshake()
	if hello == nil {
		return "", buf.Bytes(), herr
	}
	return hello.ServerName, buf.Bytes(), nil
}

// recordingConn is a connection whose reads come from r (recording what
// the peer sent) and whose writes go nowhere, so reading a ClientHello
// never answers the client (not even with an alert).
type recordingConn struct {
	net.Conn
	r io.Reader
}

func (c *recordingConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *recordingConn) Write(p []byte) (int, error) { return len(p), nil }
func (c *recordingConn) Close() error                { return nil }
