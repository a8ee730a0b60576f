package l7proxy

import (
	"context"
	"net"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// failedDialWatchLinger is how long a failed connect stays watched: the
// kernel that refused it may free the dropped SYN just after sending the
// reset that failed the connect.
const failedDialWatchLinger = time.Second

// dial opens a TCP connection to an upstream endpoint, registered with w
// (when not nil) until the returned liveUpstream is closed. While a watch
// is set the socket is bound before it connects, so that the watch is
// told of its tuple before the SYN leaves. A failure is a *connectError
// naming the local address the connect was tried from, when known.
func (w *upstreamWatcher) dial(ctx context.Context, timeout time.Duration, address string) (net.Conn, *liveUpstream, error) {
	d := net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	if w == nil {
		c, err := d.DialContext(ctx, "tcp", address)
		if err != nil {
			return nil, nil, &connectError{err: err}
		}
		return c, nil, nil
	}
	u := &liveUpstream{w: w}
	if w.fn.Load() != nil {
		d.ControlContext = u.bindAndRegister
	}
	c, err := d.DialContext(ctx, "tcp", address)
	if err != nil {
		// The dialer returns an error only once every attempt ended.
		return nil, nil, &connectError{err: err, local: u.failed()}
	}
	u.connected(c)
	return c, u, nil
}

// connected registers the connection a dial returned, if its attempt did
// not. An IPv4 attempt that lost the race against the other family may
// still be connecting, or not yet past its Control: its registration is
// undone, and a later Control leaves u alone.
func (u *liveUpstream) connected(c net.Conn) {
	local, remote := tcpAddrPort(c.LocalAddr()), tcpAddrPort(c.RemoteAddr())
	u.attempts.Lock()
	defer u.attempts.Unlock()
	u.dialled = true
	if u.registered && (u.local != local || u.remote != remote) {
		u.failed()
	}
	if !u.registered {
		u.local, u.remote = local, remote
		u.w.add(u)
	}
}

// tcpAddrPort is a TCP address as an AddrPort, an IPv4-mapped one
// unmapped; zero for other addresses.
func tcpAddrPort(a net.Addr) netip.AddrPort {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}
	}
	ap := ta.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// bindAndRegister is the dialer's Control while a watch is set: it binds
// the new socket to the source address the route to the endpoint takes
// and an ephemeral port, so that the tuple is known before connect sends
// the SYN, and registers the connection. A failure leaves the socket
// unbound, to be registered once connected: tracing never fails a dial.
//
// Only IPv4 attempts touch u, under u.attempts: for a name with addresses
// of both families the dialer races an attempt of the other family
// against the IPv4 ones, from another goroutine, and the dial may return
// the other family's connection while an IPv4 attempt still runs.
func (u *liveUpstream) bindAndRegister(_ context.Context, _, address string, c syscall.RawConn) error {
	remote, err := netip.ParseAddrPort(address)
	if err != nil || !remote.Addr().Unmap().Is4() {
		return nil
	}
	u.attempts.Lock()
	defer u.attempts.Unlock()
	if u.dialled {
		return nil
	}
	if u.registered {
		// An earlier IPv4 attempt of the same dial: its socket is gone.
		u.failed()
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
	u.local, u.remote = local, remote
	u.w.add(u)
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

// failed unregisters a connection whose connect failed, ending its watch
// a little later, and returns the address it was dialled from (zero when
// it was not bound).
func (u *liveUpstream) failed() netip.AddrPort {
	if !u.registered {
		return netip.AddrPort{}
	}
	u.registered = false
	if unwatch := u.w.remove(u); unwatch != nil {
		time.AfterFunc(failedDialWatchLinger, unwatch)
	}
	return u.local
}

// registeredConn unregisters its connection when it is closed: the
// connections of an http.Transport are closed by the transport.
type registeredConn struct {
	net.Conn
	live *liveUpstream
}

func (c *registeredConn) Close() error {
	err := c.Conn.Close()
	c.live.closed()
	return err
}

// registered returns c unregistering u on Close; c itself without a
// registry.
func registered(c net.Conn, u *liveUpstream) net.Conn {
	if u == nil {
		return c
	}
	return &registeredConn{Conn: c, live: u}
}
