package l7proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"time"
)

// upConn is a pooled HTTP/1.1 connection to an endpoint. It carries its own read buffer and writer, so a request costs
// no allocation once the pool is warm.
type upConn struct {
	conn net.Conn
	// local is the connection's own address, for request traces.
	local netip.AddrPort
	// live is the connection in the proxy's registry of upstream
	// connections (nil: none).
	live *liveUpstream
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

// closeIdleH1 closes every idle HTTP/1.1 connection of the endpoint.
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

// sweepIdle expires idle HTTP/1.1 connections of every endpoint.
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
			p.accessRT.sweep(now.UnixNano())
		}
	}
}

// dialUpstream opens a new connection to the endpoint. A failure is a
// *connectError: the request certainly did not reach the endpoint; its
// local address is known while upstream connections are watched.
// s.sendTimeout, when positive, bounds every write of the request
// (Upstream.SendTimeout).
func (e *endpoint) dialUpstream(s *poolSettings) (*upConn, error) {
	c, live, err := s.watch.dial(context.Background(), s.connectTimeout, e.hostport)
	if err != nil {
		return nil, err
	}
	var w io.Writer = c
	if s.sendTimeout > 0 {
		w = &writeTimeoutConn{Conn: c, timeout: s.sendTimeout}
	}
	uc := &upConn{conn: c, w: bufio.NewWriterSize(w, upWriteBufSize), live: live}
	uc.local = localAddrPort(c)
	uc.rb = rbuf{conn: c, buf: make([]byte, upReadBufSize), max: maxResponseHead + upReadBufSize}
	return uc, nil
}

func (uc *upConn) close() {
	_ = uc.conn.Close()
	uc.live.closed()
}

// h1scratch is the per-request state of an exchange over an HTTP/1.1
// upstream connection, reused by the client side.
type h1scratch struct {
	resp h1resp
	body bodySrc // the response body
	num  [24]byte
}

type bodyResult struct{ werr, berr error }

// exchangeH1 runs one request/response with ep over an idle keep-alive
// connection, or a new one when there is none or fresh is set. Failures
// have been answered by the client side unless the outcome asks the
// attempt loop to try again.
func (p *Proxy) exchangeH1(c client, tx *txn, ep *endpoint, fresh bool) (outcome, error) {
	s := &tx.pool.settings
	now := tx.start // microseconds ago: no need for another clock read
	if tx.retried || fresh {
		now = time.Now()
	}
	var uc *upConn
	// A connection that told the upstream its client's address is that
	// client's alone.
	private := s.proxyProtocol != 0
	if !fresh && !private {
		uc = ep.getConn(now.UnixNano(), s.idleTimeout)
	}
	if uc == nil {
		var err error
		if uc, err = ep.dialUpstream(s); err != nil {
			// The record names the connection that failed.
			tx.upLocal = dialedLocal(err)
			return outcomeRefused, err
		}
		if private {
			writeProxyHeader(uc.w, s.proxyProtocol, tx.client, tx.dest)
		}
	}
	tx.upstreamStart, tx.upLocal = now, uc.local
	x := c.scratch()
	c.writeRequestHead(uc.w, ep)

	plan := c.beginBody()
	var bodyc chan bodyResult
	var err error
	switch plan {
	case planNone:
		err = uc.w.Flush()
	case planSequential:
		var berr error
		if err, berr = c.copyRequestBody(uc.w, false); err == nil && berr == nil {
			err = uc.w.Flush()
		}
		if berr != nil {
			uc.close()
			c.fail(berr, berr)
			return outcomeDone, berr
		}
	case planStreamed:
		if err = uc.w.Flush(); err == nil {
			// The body streams while the response is read: the upstream
			// may answer (or stream back) before the body ends.
			ch := make(chan bodyResult, 1)
			go func() {
				werr, berr := c.copyRequestBody(uc.w, true)
				// Unblock the response read: the request is broken, or
				// the endpoint stopped reading it for the send timeout.
				if berr != nil || errors.Is(werr, os.ErrDeadlineExceeded) {
					uc.close()
				}
				ch <- bodyResult{werr, berr}
			}()
			bodyc = ch
		}
	}
	if err != nil {
		uc.close()
		if uc.reused && plan == planNone {
			return outcomeStale, err
		}
		if tx.canRetry(c) {
			return outcomeRetry, err
		}
		c.fail(err, nil)
		return outcomeDone, err
	}

	resp := &x.resp
	var head []byte
	for interim := 0; ; interim++ {
		var got bool
		head, got, err = readResponseHead(c, tx, uc, bodyc != nil)
		if err == nil {
			err = parseResponse(head, resp)
		}
		if err != nil {
			berr, _ := stopBody(c, uc, &bodyc, false)
			c.release(uc)
			uc.close()
			if !got && uc.reused && plan == planNone && !c.gone() && !isTimeout(err) {
				return outcomeStale, err
			}
			if berr == nil && tx.canRetry(c) {
				return outcomeRetry, err
			}
			c.fail(err, berr)
			return outcomeDone, err
		}
		if resp.status >= 200 || resp.status == http.StatusSwitchingProtocols {
			break
		}
		if interim >= maxInterim {
			stopBody(c, uc, &bodyc, false)
			c.release(uc)
			uc.close()
			c.fail(errTooManyInterim, nil)
			return outcomeDone, errTooManyInterim
		}
		c.interim(resp)
	}
	if tx.retry != nil && tx.retryStatus(c, resp.status) {
		// Dropped unread: the connection goes with it, and so does a
		// body copy still under way, which read the whole body already
		// (the request is replayable).
		stopBody(c, uc, &bodyc, false)
		c.release(uc)
		uc.close()
		return outcomeRetry, errRetryStatus
	}
	if tx.access.acc != nil && tx.errorPage(resp.status) {
		stopBody(c, uc, &bodyc, false)
		c.release(uc)
		uc.close()
		p.serveErrorPage(c, tx, resp.status)
		return outcomeDone, nil
	}
	uc.rb.timeout = s.readTimeout

	if resp.status == http.StatusSwitchingProtocols {
		if bodyc == nil && c.upgrade(uc, resp) {
			return outcomeDone, nil
		}
		stopBody(c, uc, &bodyc, false)
		c.release(uc)
		uc.close()
		c.fail(errUnexpectedUpgrade, nil)
		return outcomeDone, errUnexpectedUpgrade
	}

	kind := responseBodyKind(c.method(), resp)
	upKeep := resp.keepAlive() && kind != bodyUntilClose
	x.body.reset(&uc.rb, kind, resp.contentLength, false, maxResponseHead)
	uerr, cerr := c.respondH1(uc, resp, head, kind, &x.body)
	ok := uerr == nil && cerr == nil
	berr, bodyOK := stopBody(c, uc, &bodyc, ok && (c.waitsForBody() || !bodyPending(bodyc)))
	untouched := c.release(uc)
	if !ok {
		uc.close()
		c.abort(uerr, cerr, berr)
		return outcomeDone, nil
	}
	if upKeep && bodyOK && untouched && c.bodyDone() && !private {
		uc.reused = true
		ep.putConn(uc, time.Now().UnixNano(), s.idleTimeout)
	} else {
		uc.close()
	}
	return outcomeDone, nil
}

// readResponseHead reads the upstream's response head. got reports
// whether any byte of a response arrived. When the upstream takes longer
// than watchAfter, the client is watched meanwhile, so that a client
// going away ends the wait.
func readResponseHead(c client, tx *txn, uc *upConn, streamedBody bool) (head []byte, got bool, err error) {
	s := &tx.pool.settings
	deadline := tx.responseDeadline(s.readTimeout)
	first := deadline
	if deadline.Sub(tx.upstreamStart) > watchAfter && c.canWatch(streamedBody) {
		first = tx.upstreamStart.Add(watchAfter)
	}
	uc.rb.timeout = 0
	if uc.rb.buffered() == 0 {
		// The request was just sent: letting the goroutines that are
		// ready run first gives the response time to arrive, where a
		// read now would fail with EAGAIN and park.
		runtime.Gosched()
	}
	_ = uc.conn.SetReadDeadline(first)
	head, err = uc.rb.readHead(maxResponseHead, false)
	if err != nil && first != deadline && isTimeout(err) {
		c.watch(uc)
		_ = uc.conn.SetReadDeadline(deadline)
		head, err = uc.rb.readHead(maxResponseHead, false)
		c.unwatch()
	}
	if err != nil {
		return nil, uc.rb.buffered() > 0, err
	}
	return head, true, nil
}

// stopBody ends a streamed body copy: with wait it lets it finish,
// otherwise it is interrupted (closing uc). It returns the client's body
// failure, if that is what ended it, and whether the body went through.
func stopBody(c client, uc *upConn, bodyc *chan bodyResult, wait bool) (bodyErr error, ok bool) {
	if *bodyc == nil {
		return nil, true
	}
	if !wait {
		select {
		case res := <-*bodyc:
			*bodyc = nil
			return res.berr, res.werr == nil && res.berr == nil
		default:
		}
		uc.close()
		c.interruptBody()
	}
	res := <-*bodyc
	*bodyc = nil
	return res.berr, wait && res.werr == nil && res.berr == nil
}

// bodyPending reports whether a body copy is still running.
func bodyPending(c chan bodyResult) bool { return c != nil && len(c) == 0 }

var (
	errRetryStatus       = errors.New("response status retried")
	errTooManyInterim    = errors.New("too many interim responses")
	errUnexpectedUpgrade = errors.New("upstream switched protocols without being asked")
	aLongTimeAgo         = time.Unix(1, 0)
)
