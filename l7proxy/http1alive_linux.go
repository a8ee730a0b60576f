package l7proxy

import (
	"crypto/tls"
	"net"
	"syscall"
)

// connAlive reports whether an idle connection is still open: a peek that
// would block means nothing arrived, in particular no FIN. Anything else
// (EOF, an error, unexpected bytes from an idle server) makes it unusable.
func connAlive(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := false
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		_, _, rerr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		alive = rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK
		return true // never wait for readiness
	})
	return err == nil && alive
}

// peerClosed reports whether the peer of a connection closed or reset it,
// without reading: a peek that finds the end of the stream or an error
// other than "would block". Bytes waiting (a pipelined request, a TLS
// record) say the peer is there. A TLS connection is probed underneath.
func peerClosed(c net.Conn) bool {
	for unwrapped := false; !unwrapped; {
		switch x := c.(type) {
		case *tls.Conn:
			c = x.NetConn()
		case *writeTimeoutConn:
			c = x.Conn
		case *prefixConn:
			if len(x.pending) > 0 {
				return false
			}
			c = x.Conn
		case *proxiedConn:
			if len(x.pending) > 0 {
				return false
			}
			c = x.Conn
		default:
			unwrapped = true
		}
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		n, _, rerr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		closed = rerr == nil && n == 0 || rerr != nil && rerr != syscall.EAGAIN && rerr != syscall.EWOULDBLOCK && rerr != syscall.EINTR
		return true // never wait for readiness
	})
	return err == nil && closed
}
