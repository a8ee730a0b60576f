package l7proxy

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// Slow and hostile clients. A connection is half-open from its accept
// until its first request head (TLS handshake included), then active,
// and idle while it waits for its next request. Half-open and idle
// connections cost memory and a goroutine and do nothing, which is what
// slowloris-style clients open by the thousand: both are capped per
// client address and in total (a connection over a cap is closed at
// once and counted), so one client cannot starve the others. Writes to
// a client must make progress (Options.WriteTimeout), so a client that
// stops reading (slow read) cannot hold a connection, its buffers and an
// upstream connection forever.

// connLimits counts half-open and idle client connections.
type connLimits struct {
	maxHalfOpenPerClient, maxIdlePerClient int
	maxHalfOpen, maxIdle                   int

	mu             sync.Mutex
	clients        map[netip.Addr]*clientConns
	halfOpen, idle int
}

func newConnLimits(o *Options) *connLimits {
	return &connLimits{maxHalfOpenPerClient: o.MaxHalfOpenPerClient, maxIdlePerClient: o.MaxIdlePerClient,
		maxHalfOpen: o.MaxHalfOpen, maxIdle: o.MaxIdle, clients: map[netip.Addr]*clientConns{}}
}

// peerAddr is a connection's client address (after any PROXY header).
func peerAddr(c net.Conn) netip.Addr {
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

type clientConns struct{ halfOpen, idle int }

// connPhase is where a connection stands for the limits.
type connPhase uint8

const (
	phaseNone connPhase = iota
	phaseHalfOpen
	phaseIdle
)

// enter moves a connection of client from phase from to phase to; it
// fails (and changes nothing) when to's caps are reached.
func (l *connLimits) enter(client netip.Addr, from, to connPhase) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.clients[client]
	if c == nil {
		c = &clientConns{}
		l.clients[client] = c
	}
	switch to {
	case phaseHalfOpen:
		if c.halfOpen >= l.maxHalfOpenPerClient || l.halfOpen >= l.maxHalfOpen {
			l.forget(client, c)
			return false
		}
	case phaseIdle:
		if c.idle >= l.maxIdlePerClient || l.idle >= l.maxIdle {
			return false
		}
	}
	l.move(c, from, -1)
	l.move(c, to, +1)
	l.forget(client, c)
	return true
}

// leave ends a connection's phase.
func (l *connLimits) leave(client netip.Addr, from connPhase) {
	if from == phaseNone {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if c := l.clients[client]; c != nil {
		l.move(c, from, -1)
		l.forget(client, c)
	}
}

func (l *connLimits) move(c *clientConns, p connPhase, d int) {
	switch p {
	case phaseHalfOpen:
		c.halfOpen += d
		l.halfOpen += d
	case phaseIdle:
		c.idle += d
		l.idle += d
	}
}

func (l *connLimits) forget(client netip.Addr, c *clientConns) {
	if c.halfOpen == 0 && c.idle == 0 {
		delete(l.clients, client)
	}
}

// writeTimeoutConn makes every write to the client make progress within
// timeout: a client that stops reading is cut off.
type writeTimeoutConn struct {
	net.Conn
	timeout time.Duration
}

func (c *writeTimeoutConn) Write(p []byte) (int, error) {
	_ = c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	return c.Conn.Write(p)
}
