package l7proxy

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// UpstreamWatch is told of every upstream connection the proxy dials
// while it is set, as local -> remote, before the connection's first
// packet leaves: the kernel drops of its packets can then be traced, even
// those of a connect that fails. It returns the function that ends the
// watch; the proxy calls it once the connection is closed, or shortly
// after its connect failed. It is called on the dialling goroutine and
// must not block.
type UpstreamWatch func(local, remote netip.AddrPort) (unwatch func())

// failedDialWatchLinger is how long a failed connect stays watched: the
// kernel that refused it may free the dropped SYN just after sending the
// reset that failed the connect.
const failedDialWatchLinger = time.Second

// upstreamWatcher holds the proxy's UpstreamWatch; nil while there is
// none, which is the one check a dial pays for it.
type upstreamWatcher struct {
	fn atomic.Pointer[UpstreamWatch]
}

// WatchUpstreams has w told of every upstream connection dialled from now
// on, until stop is called, and of every pooled HTTP/1.1 connection
// dialled before when it next carries a request (a connection of an
// http.Transport, for h2c and HTTPS upstreams, dialled before is not).
// There is one watch at a time: a later call replaces an earlier one.
// Plain TCP streams (TLS passthrough, TCPRoute) are not watched: they
// carry no request records.
func (p *Proxy) WatchUpstreams(w UpstreamWatch) (stop func()) {
	f := &w
	p.upstreamWatch.fn.Store(f)
	return func() { p.upstreamWatch.fn.CompareAndSwap(f, nil) }
}

// existing watches a connection dialled before the watch began (a pooled
// one about to carry a request): nil when there is no watch, or the
// addresses are not IPv4 ones the datapath knows.
func (w *upstreamWatcher) existing(local netip.AddrPort, c net.Conn) func() {
	if w == nil {
		return nil
	}
	fn := w.fn.Load()
	if fn == nil || !local.IsValid() {
		return nil
	}
	ra, ok := c.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return nil
	}
	remote := ra.AddrPort()
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	if !remote.Addr().Is4() || !local.Addr().Is4() {
		return nil
	}
	return (*fn)(local, remote)
}

// dialWatch is the watch of one dial: the dialer's Control binds the
// socket to learn its local address before connect, and registers it.
type dialWatch struct {
	fn UpstreamWatch
	// local is the bound address; unwatch ends its watch (nil: none).
	local   netip.AddrPort
	unwatch func()
}

// dialer returns d, with the watch of one dial when a watch is set (and
// nil when not).
func (w *upstreamWatcher) dialer(d net.Dialer) (net.Dialer, *dialWatch) {
	if w == nil {
		return d, nil
	}
	fn := w.fn.Load()
	if fn == nil {
		return d, nil
	}
	dw := &dialWatch{fn: *fn}
	d.ControlContext = dw.control
	return d, dw
}

// control binds the new socket to the source address the route to the
// endpoint takes and an ephemeral port, so that the tuple is known before
// connect sends the SYN, and registers it. A failure leaves the socket
// unbound and unwatched: tracing never fails a dial.
func (dw *dialWatch) control(_ context.Context, _, address string, c syscall.RawConn) error {
	remote, err := netip.ParseAddrPort(address)
	if err != nil || !remote.Addr().Unmap().Is4() {
		return nil
	}
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	src, err := routeSource(remote)
	if err != nil {
		return nil
	}
	var local netip.AddrPort
	_ = c.Control(func(fd uintptr) {
		if unix.Bind(int(fd), &unix.SockaddrInet4{Addr: src.As4()}) != nil {
			return
		}
		if sa, err := unix.Getsockname(int(fd)); err == nil {
			if in4, ok := sa.(*unix.SockaddrInet4); ok {
				local = netip.AddrPortFrom(netip.AddrFrom4(in4.Addr), uint16(in4.Port))
			}
		}
	})
	if !local.IsValid() || local.Port() == 0 {
		return nil
	}
	dw.done()
	dw.local, dw.unwatch = local, dw.fn(local, remote)
	return nil
}

// routeSource is the source address the kernel picks for a connection to
// remote: a connected UDP socket's local address (no packet is sent).
func routeSource(remote netip.AddrPort) (netip.Addr, error) {
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(remote))
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(), nil
}

// done ends the dial's watch now.
func (dw *dialWatch) done() {
	if dw != nil && dw.unwatch != nil {
		dw.unwatch()
		dw.unwatch = nil
	}
}

// failed ends the watch of a dial whose connect failed, a little later,
// and returns the address it had.
func (dw *dialWatch) failed() netip.AddrPort {
	if dw == nil {
		return netip.AddrPort{}
	}
	if u := dw.unwatch; u != nil {
		dw.unwatch = nil
		time.AfterFunc(failedDialWatchLinger, u)
	}
	return dw.local
}

// watchedConn ends its connection's watch when it is closed: connections
// of an http.Transport are closed by the transport.
type watchedConn struct {
	net.Conn
	once    sync.Once
	unwatch func()
}

func (c *watchedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.unwatch)
	return err
}

// take hands the watch of a dial that succeeded to its connection: the
// returned function (nil when there is no watch) ends it.
func (dw *dialWatch) take() func() {
	if dw == nil {
		return nil
	}
	u := dw.unwatch
	dw.unwatch = nil
	return u
}

// watched returns c ending dw's watch on Close; c itself when there is no
// watch.
func (dw *dialWatch) watched(c net.Conn) net.Conn {
	if u := dw.take(); u != nil {
		return &watchedConn{Conn: c, unwatch: u}
	}
	return c
}
