package l7proxy

import (
	"bufio"
	"net"
	"sync"
	"time"
)

// upConn is a pooled HTTP/1.1 connection to an endpoint, used by the fast
// engine. It carries its own read buffer and writer, so a request costs
// no allocation once the pool is warm.
type upConn struct {
	conn net.Conn
	rb   rbuf
	w    *bufio.Writer
	// idleSince is when the connection went back to the pool (UnixNano).
	idleSince int64
	// reused is set when the connection served a request before: a
	// failure before any response byte then likely means the endpoint
	// closed it while idle, and the request may be sent again.
	reused bool
}

const (
	upReadBufSize  = 8 << 10
	upWriteBufSize = 4 << 10
	// maxResponseHead bounds an upstream's response head.
	maxResponseHead = 64 << 10
	// staleCheckAfter: a connection idle for longer is probed before use,
	// as endpoints close idle keep-alive connections on their own
	// schedule (Node.js after 5 s by default).
	staleCheckAfter = time.Second
)

// h1idle is an endpoint's stack of idle connections: the most recently
// used is reused first (warm in every cache), the oldest expire first.
type h1idle struct {
	mu    sync.Mutex
	conns []*upConn
}

// getConn returns an idle connection, or nil when there is none. Expired
// connections are closed on the way.
func (e *endpoint) getConn(now int64, idleTimeout time.Duration) *upConn {
	p := &e.h1
	for {
		p.mu.Lock()
		n := len(p.conns)
		if n == 0 {
			p.mu.Unlock()
			return nil
		}
		uc := p.conns[n-1]
		p.conns[n-1] = nil
		p.conns = p.conns[:n-1]
		if now-uc.idleSince > int64(idleTimeout) {
			// The newest is expired, so is every older one.
			old := p.conns
			p.conns = p.conns[:0]
			p.mu.Unlock()
			uc.close()
			for i, o := range old {
				o.close()
				old[i] = nil
			}
			return nil
		}
		p.mu.Unlock()
		if now-uc.idleSince > int64(staleCheckAfter) && !connAlive(uc.conn) {
			uc.close()
			continue
		}
		return uc
	}
}

// putConn returns a connection for reuse; it is closed instead when the
// endpoint is retired or the pool is full.
func (e *endpoint) putConn(uc *upConn, now int64, idleTimeout time.Duration) {
	uc.idleSince = now
	uc.reused = true
	p := &e.h1
	p.mu.Lock()
	if e.retired.Load() || len(p.conns) >= maxIdlePerEndpoint {
		p.mu.Unlock()
		uc.close()
		return
	}
	// Expire from the bottom (oldest) so an endpoint that saw a burst
	// does not keep its connections forever.
	var expired *upConn
	if len(p.conns) > 0 && now-p.conns[0].idleSince > int64(idleTimeout) {
		expired = p.conns[0]
		copy(p.conns, p.conns[1:])
		p.conns[len(p.conns)-1] = nil
		p.conns = p.conns[:len(p.conns)-1]
	}
	p.conns = append(p.conns, uc)
	p.mu.Unlock()
	if expired != nil {
		expired.close()
	}
}

// closeIdleH1 closes every idle fast-engine connection of the endpoint.
func (e *endpoint) closeIdleH1() {
	p := &e.h1
	p.mu.Lock()
	old := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, uc := range old {
		uc.close()
	}
}

// sweepIdle closes the idle connections older than idleTimeout, for
// pools that see no traffic to expire them on the way.
func (e *endpoint) sweepIdle(now int64, idleTimeout time.Duration) {
	p := &e.h1
	p.mu.Lock()
	n := 0
	for n < len(p.conns) && now-p.conns[n].idleSince > int64(idleTimeout) {
		n++
	}
	old := append([]*upConn(nil), p.conns[:n]...)
	rest := copy(p.conns, p.conns[n:])
	clear(p.conns[rest:])
	p.conns = p.conns[:rest]
	p.mu.Unlock()
	for _, uc := range old {
		uc.close()
	}
}

// sweepIdle expires idle fast-engine connections of every endpoint.
func (p *pool) sweepIdle(now int64) {
	p.mu.Lock()
	eps := make([]*endpoint, 0, len(p.all))
	for _, e := range p.all {
		eps = append(eps, e)
	}
	p.mu.Unlock()
	for _, e := range eps {
		e.sweepIdle(now, p.settings.idleTimeout)
	}
}

// idleSweepInterval is how often idle upstream connections are expired
// when no request does it.
const idleSweepInterval = 5 * time.Second

// sweeper expires idle upstream connections until stop is closed.
func (p *Proxy) sweeper(stop <-chan struct{}) {
	t := time.NewTicker(idleSweepInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			for _, pl := range p.state.Load().pools {
				pl.sweepIdle(now.UnixNano())
			}
		}
	}
}

// dialUpstream opens a new connection to the endpoint. A failure is a
// *connectError: the request certainly did not reach the endpoint.
func (e *endpoint) dialUpstream(timeout time.Duration) (*upConn, error) {
	d := net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	c, err := d.Dial("tcp", e.hostport)
	if err != nil {
		return nil, &connectError{err: err}
	}
	uc := &upConn{conn: c, w: bufio.NewWriterSize(c, upWriteBufSize)}
	uc.rb = rbuf{conn: c, buf: make([]byte, upReadBufSize), max: maxResponseHead + upReadBufSize}
	return uc, nil
}

func (uc *upConn) close() { _ = uc.conn.Close() }
