package l7proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// The fast engine serves HTTP/1.1 (cleartext, and over TLS when ALPN
// picks http/1.1) with one goroutine per client connection: it parses
// requests itself (http1parse.go), routes them, and forwards them over
// pooled upstream connections it also speaks HTTP/1.1 on, streaming
// bodies between the two connections' buffers. Nothing per request needs
// a goroutine, a context, a timer or a map; connection deadlines carry
// the timeouts. HTTP/2 over TLS is handed to net/http, whose requests to
// plain-HTTP upstreams come back to the same pooled connections
// (h2upstream.go); upstreams spoken to over h2c or TLS go through the
// endpoint's http.Transport.

// Engine names for Options.Engine.
const (
	EngineFast   = "fast"
	EngineStdlib = "stdlib"
)

// watchAfter is how long a request waits for its upstream's response
// before a goroutine starts watching the client connection, so a client
// that hangs up is noticed (and logged as 499) while the upstream works.
// Fast responses never pay for the watch.
const watchAfter = 5 * time.Millisecond

// maxInterim bounds the 1xx responses accepted before the final one.
const maxInterim = 8

// seqBodyMax is the largest request body sent before reading the
// response. Longer (and chunked) bodies are sent by a second goroutine
// while the response is read, so an upstream answering early or
// streaming its answer cannot deadlock against the proxy.
const seqBodyMax = 16 << 10

// lingerMax bounds what is read and discarded from a client after an
// error response, so the close does not turn into a reset that destroys
// the response before the client read it.
const (
	lingerMax     = 256 << 10
	lingerTimeout = 500 * time.Millisecond
)

// Connection states, for Shutdown.
const (
	connIdle int32 = iota // waiting for a request; Shutdown may close it
	connActive
	connClosed   // closed by Shutdown
	connHijacked // upgraded; no longer an HTTP connection
)

// h1server tracks the fast engine's listeners and connections.
type h1server struct {
	p       *Proxy
	closing atomic.Bool
	mu      sync.Mutex
	lns     map[net.Listener]struct{}
	conns   map[*h1conn]struct{}
}

func newH1Server(p *Proxy) *h1server {
	return &h1server{p: p, lns: map[net.Listener]struct{}{}, conns: map[*h1conn]struct{}{}}
}

// serve accepts connections until the listener is closed. With tlsConf,
// connections are TLS; those negotiating h2 go to h2.
func (s *h1server) serve(l net.Listener, tlsConf *tls.Config, h2 *connQueue) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		_ = l.Close()
		return nil
	}
	s.lns[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.lns, l)
		s.mu.Unlock()
	}()
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if s.closing.Load() {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of file descriptors and the like: back off, as
			// net/http does, rather than spin or give up.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.p.log.Warn("accept", "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		go s.serveConn(c, tlsConf, h2)
	}
}

func (s *h1server) serveConn(c net.Conn, tlsConf *tls.Config, h2 *connQueue) {
	o := &s.p.opts
	if tlsConf != nil {
		tc := tls.Server(c, tlsConf)
		_ = tc.SetDeadline(time.Now().Add(o.ReadHeaderTimeout))
		if err := tc.HandshakeContext(context.Background()); err != nil {
			s.p.log.Debug("tls handshake", "peer", c.RemoteAddr().String(), "err", err)
			_ = c.Close()
			return
		}
		_ = tc.SetDeadline(time.Time{})
		if tc.ConnectionState().NegotiatedProtocol == "h2" {
			h2.deliver(tc)
			return
		}
		c = tc
	}
	hc := newH1Conn(s, c, tlsConf != nil)
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		_ = c.Close()
		hc.free()
		return
	}
	s.conns[hc] = struct{}{}
	s.mu.Unlock()
	hc.serve()
	s.mu.Lock()
	delete(s.conns, hc)
	s.mu.Unlock()
	if hc.state.Load() != connHijacked {
		_ = c.Close()
	}
	hc.free()
}

// shutdown closes the listeners, then idle connections as they become
// idle, until none is left or ctx ends.
func (s *h1server) shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing.Store(true)
	for l := range s.lns {
		_ = l.Close()
	}
	s.mu.Unlock()
	wait := time.Millisecond
	for {
		s.mu.Lock()
		n := 0
		for hc := range s.conns {
			switch {
			case hc.state.CompareAndSwap(connIdle, connClosed):
				_ = hc.conn.Close()
			case hc.state.Load() == connHijacked:
			default:
				n++
			}
		}
		s.mu.Unlock()
		if n == 0 {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}

// connQueue is a net.Listener fed with connections accepted and
// handshaken elsewhere: the fast engine hands h2 connections to net/http
// through it.
type connQueue struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newConnQueue(addr net.Addr) *connQueue {
	return &connQueue{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.addr }

func (q *connQueue) deliver(c net.Conn) {
	select {
	case q.ch <- c:
	case <-q.done:
		_ = c.Close()
	}
}

// h1conn is one client connection of the fast engine and everything its
// requests reuse.
type h1conn struct {
	srv   *h1server
	p     *Proxy
	conn  net.Conn
	ci    *connInfo
	state atomic.Int32
	// gone is set when the client is known to have gone away.
	gone atomic.Bool

	rb      rbuf
	w       *bufio.Writer
	headBuf []byte
	pathBuf []byte
	req     h1req
	resp    h1resp
	body    bodySrc // request body
	rbody   bodySrc // response body
	rbHead  []byte  // the upstream's response head, in uc's buffer
	st      h1state
	strs    []string // scratch for X-Forwarded-For values
	// lastNow is when the previous request ended, the start of the idle
	// wait (saves a clock read per request).
	lastNow time.Time
	num     [24]byte
	// Set by a concurrent request body copy before it signals.
	bodyWErr, bodyBErr error
}

// h1state is the per-request state of the fast engine.
type h1state struct {
	start         time.Time
	upstreamStart time.Time
	series        *series
	up            *Upstream
	ingress       string
	pool          *pool
	ep            *endpoint // acquired; released when the request ends
	status        int
	bytes         int64
	err           error
	host, path    string // views of the request's buffers, valid for this request
	keep          bool   // keep the client connection after the response
	wroteHead     bool
	bodyDone      bool // the request body was read completely
}

const (
	clientReadBufSize  = 4 << 10
	clientWriteBufSize = 4 << 10
)

var (
	readBufs  = sync.Pool{New: func() any { return new([clientReadBufSize]byte) }}
	writerBuf = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, clientWriteBufSize) }}
)

func newH1Conn(s *h1server, c net.Conn, isTLS bool) *h1conn {
	hc := &h1conn{srv: s, p: s.p, conn: c, ci: newConnInfo(c, isTLS, s.p.opts.TrustedProxies)}
	hc.rb = rbuf{conn: c, buf: readBufs.Get().(*[clientReadBufSize]byte)[:], max: s.p.opts.MaxHeaderBytes + clientReadBufSize}
	hc.w = writerBuf.Get().(*bufio.Writer)
	hc.w.Reset(c)
	hc.state.Store(connActive)
	return hc
}

// free returns the pooled buffers. A hijacked connection's goroutines are
// done with them by the time serve returns.
func (hc *h1conn) free() {
	if len(hc.rb.buf) == clientReadBufSize {
		readBufs.Put((*[clientReadBufSize]byte)(hc.rb.buf))
	}
	hc.rb.buf = nil
	hc.w.Reset(nil)
	writerBuf.Put(hc.w)
	hc.w = nil
}

// clientCtx is the context errorStatus consults: done once the client
// went away. It costs no allocation.
type clientCtx struct{ gone *atomic.Bool }

func (clientCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (clientCtx) Done() <-chan struct{}       { return nil }
func (clientCtx) Value(any) any               { return nil }
func (c clientCtx) Err() error {
	if c.gone.Load() {
		return context.Canceled
	}
	return nil
}

// serve reads and answers requests one at a time: pipelined requests
// wait in the buffer until the previous response is complete.
func (hc *h1conn) serve() {
	o := &hc.p.opts
	for {
		if hc.srv.closing.Load() {
			return
		}
		if hc.rb.buffered() == 0 {
			if hc.w.Buffered() > 0 && hc.w.Flush() != nil {
				return
			}
			hc.state.Store(connIdle)
			if hc.lastNow.IsZero() {
				hc.lastNow = time.Now()
			}
			_ = hc.conn.SetReadDeadline(hc.lastNow.Add(o.ClientIdleTimeout))
			if err := hc.rb.fill(); err != nil {
				return
			}
			if !hc.state.CompareAndSwap(connIdle, connActive) {
				return
			}
		}
		start := time.Now()
		// Only a head that needs more reads gets the header deadline.
		hc.rb.deadline = start.Add(o.ReadHeaderTimeout)
		head, err := hc.rb.readHead(o.MaxHeaderBytes, true)
		hc.rb.deadline = time.Time{}
		if err == nil {
			hc.headBuf = append(hc.headBuf[:0], head...)
			err = parseRequest(hc.headBuf, &hc.req)
		}
		if err != nil {
			var he *h1Error
			if errors.As(err, &he) {
				hc.p.log.Debug("bad request", "peer", hc.ci.peerStr, "err", err)
				hc.writePlain(he.status, false)
				_ = hc.w.Flush()
				hc.lingerClose()
			}
			return
		}
		keep := hc.handle(start)
		// Flushed only now, after the request was recorded: a client
		// that sees the response finds it in the metrics and log.
		// Responses to pipelined requests wait for the next one.
		if !keep || hc.rb.buffered() == 0 {
			if hc.w.Flush() != nil {
				return
			}
		}
		if !keep {
			return
		}
	}
}

// lingerClose half-closes and drains what the client still sends, so an
// error response is not destroyed by a reset (as nginx's lingering close).
func (hc *h1conn) lingerClose() {
	type closeWriter interface{ CloseWrite() error }
	cw, ok := hc.conn.(closeWriter)
	if !ok || cw.CloseWrite() != nil {
		return
	}
	_ = hc.conn.SetReadDeadline(time.Now().Add(lingerTimeout))
	hc.rb.r, hc.rb.w = 0, 0
	for n := 0; n < lingerMax; {
		k, err := hc.conn.Read(hc.rb.buf)
		n += k
		if err != nil {
			return
		}
	}
}

// handle answers one parsed request and reports whether the connection
// stays open.
func (hc *h1conn) handle(start time.Time) bool {
	p := hc.p
	q := &hc.req
	st := &hc.st
	*st = h1state{start: start, series: p.notFound, keep: q.keepAlive() && !hc.srv.closing.Load(), bodyDone: !q.hasBody()}
	hc.gone.Store(false)
	if q.hasBody() || q.upgrade != nil {
		// The header deadline must not cut a body or an upgraded stream.
		var d time.Time
		if p.opts.ReadTimeout > 0 && q.upgrade == nil {
			d = start.Add(p.opts.ReadTimeout)
		}
		_ = hc.conn.SetReadDeadline(d)
	}

	rawPath := q.path
	if q.slash {
		rawPath = slashPath
	}
	if len(q.uri) == 1 && q.uri[0] == '*' {
		// "OPTIONS *" asks about the server, not a resource; answered
		// here like net/http does, anything else with "*" is malformed.
		if equalFold(q.method, "options") {
			hc.writeEmpty(http.StatusOK)
			return st.keep && hc.discardUnread()
		}
		hc.writePlain(http.StatusBadRequest, false)
		return false
	}
	path := rawPath
	if bytes.IndexByte(rawPath, '%') >= 0 {
		var ok bool
		if hc.pathBuf, ok = decodePath(hc.pathBuf[:0], rawPath); !ok {
			hc.writePlain(http.StatusBadRequest, false)
			return false
		}
		path = hc.pathBuf
	}
	st.host, st.path = bstr(q.host), bstr(path)
	defer hc.finish()

	if string(q.method) == http.MethodConnect {
		hc.writeError(http.StatusMethodNotAllowed)
		return st.keep && hc.discardUnread()
	}
	if hasDotSegment(st.path) {
		hc.writeError(http.StatusBadRequest)
		return false
	}
	cur := p.state.Load()
	m, ok := cur.table.Match(st.host, st.path)
	if !ok {
		hc.writeError(http.StatusNotFound)
		return st.keep && hc.discardUnread()
	}
	st.up, st.ingress = m.Upstream, m.Ingress
	st.series = p.series.get(m.Ingress, m.Upstream)
	if !hc.ci.tls && m.Options.SSLRedirect {
		hc.redirect()
		return st.keep && hc.discardUnread()
	}
	var pl *pool
	if m.Upstream != nil {
		pl = cur.pools[m.Upstream.Name]
	}
	var ep *endpoint
	if pl != nil {
		ep = pl.pick(nil)
	}
	if ep == nil {
		hc.writeError(http.StatusServiceUnavailable)
		return st.keep && hc.discardUnread()
	}
	limit := m.Options.MaxBodyBytes
	if limit == 0 {
		limit = p.opts.DefaultMaxBodyBytes
	}
	if limit > 0 && q.contentLength > limit {
		hc.writeError(http.StatusRequestEntityTooLarge)
		return false
	}
	ep.acquire()
	st.pool, st.ep = pl, ep
	if pl.settings.protocol != ProtocolHTTP {
		hc.forwardTransport(limit)
	} else {
		hc.forward(limit)
	}
	return st.keep && st.bodyDone
}

var slashPath = []byte("/")

// bstr views b as a string without copying. The views handed out here
// point into connection buffers and are only used until the request ends
// (routing, headers, the access log line).
func bstr(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// keepIfDiscardable decides, before a local answer is written, whether
// the connection can stay: only when the request body, if any, is small
// enough to be read and dropped (discardUnread).
func (hc *h1conn) keepIfDiscardable() {
	q := &hc.req
	if !hc.st.bodyDone && (q.chunked || q.contentLength > seqBodyMax) {
		hc.st.keep = false
	}
}

// discardUnread reads a small unread request body so the connection can
// serve the next request; it reports false (close instead) for larger or
// chunked bodies.
func (hc *h1conn) discardUnread() bool {
	st := &hc.st
	if st.bodyDone {
		return true
	}
	q := &hc.req
	if q.chunked || q.contentLength > seqBodyMax {
		return false
	}
	hc.body.reset(&hc.rb, bodyLength, q.contentLength, true, 0)
	// A client that announced a body it does not send must not hold the
	// connection (no Options.ReadTimeout applies by default).
	hc.rb.deadline = time.Now().Add(hc.p.opts.ReadHeaderTimeout)
	defer func() { hc.rb.deadline = time.Time{} }()
	for {
		p, err := hc.body.next()
		if err == io.EOF {
			st.bodyDone = true
			return true
		}
		if err != nil {
			return false
		}
		if p == nil {
			if hc.w.Flush() != nil || hc.rb.fill() != nil {
				return false
			}
		}
	}
}

func (hc *h1conn) finish() {
	st := &hc.st
	p := hc.p
	if st.ep != nil {
		st.ep.release()
	}
	status := st.status
	if status == 0 {
		status = StatusClientClosed
	}
	now := time.Now()
	hc.lastNow = now
	d := now.Sub(st.start)
	st.series.inc(status)
	st.series.duration.Observe(d.Seconds())
	if !st.upstreamStart.IsZero() {
		st.series.upstream.Observe(now.Sub(st.upstreamStart).Seconds())
	}
	if p.access != nil {
		proto := "HTTP/1.1"
		if hc.req.minor == 0 {
			proto = "HTTP/1.0"
		}
		e := logEntry{
			time: st.start, client: hc.ci.peerStr, method: methodString(hc.req.method), host: st.host,
			path: st.path, proto: proto, status: status, bytes: st.bytes, duration: d,
			ingress: st.ingress, err: st.err,
		}
		if st.ep != nil {
			e.upstream = st.ep.hostport
		}
		if st.up != nil {
			e.service = st.up.Name
		}
		p.writeAccess(&e)
	}
}

// methodString avoids an allocation for the common methods.
func methodString(m []byte) string {
	for _, s := range [...]string{http.MethodGet, http.MethodPost, http.MethodHead, http.MethodPut,
		http.MethodDelete, http.MethodOptions, http.MethodPatch} {
		if string(m) == s {
			return s
		}
	}
	return string(m)
}

// statusLines are the "HTTP/1.1 NNN Reason\r\n" lines, built once.
var statusLines = func() (t [600][]byte) {
	for c := 100; c < 600; c++ {
		t[c] = []byte(fmt.Sprintf("HTTP/1.1 %03d %s\r\n", c, http.StatusText(c)))
	}
	return t
}()

func (hc *h1conn) writeStatusLine(code int) {
	if code >= 100 && code < 600 {
		_, _ = hc.w.Write(statusLines[code])
		return
	}
	_, _ = hc.w.WriteString("HTTP/1.1 ")
	_, _ = hc.w.Write(strconv.AppendInt(hc.num[:0], int64(code), 10))
	_, _ = hc.w.WriteString(" \r\n")
}

// date caches the Date header value for the current second.
var (
	dateSec atomic.Int64
	dateVal atomic.Pointer[[]byte]
)

func httpDate(now time.Time) []byte {
	s := now.Unix()
	if v := dateVal.Load(); v != nil && dateSec.Load() == s {
		return *v
	}
	b := now.UTC().AppendFormat(make([]byte, 0, 32), http.TimeFormat)
	dateVal.Store(&b)
	dateSec.Store(s)
	return b
}

func (hc *h1conn) writeDate() {
	_, _ = hc.w.WriteString("Date: ")
	_, _ = hc.w.Write(httpDate(time.Now()))
	_, _ = hc.w.WriteString("\r\n")
}

func (hc *h1conn) writeConnection() {
	switch {
	case !hc.st.keep:
		_, _ = hc.w.WriteString("Connection: close\r\n")
	case hc.req.minor == 0:
		_, _ = hc.w.WriteString("Connection: keep-alive\r\n")
	}
}

func (hc *h1conn) writeContentLength(n int64) {
	_, _ = hc.w.WriteString("Content-Length: ")
	_, _ = hc.w.Write(strconv.AppendInt(hc.num[:0], n, 10))
	_, _ = hc.w.WriteString("\r\n")
}

// writeError answers a routed request with a short plain-text error, as
// writeError does for the stdlib engine. 400 and 413 close the
// connection: the rest of the body may still be on the wire.
func (hc *h1conn) writeError(code int) {
	hc.writePlain(code, true)
}

// writePlain writes a plain-text error response. head: the request was
// parsed, so HEAD gets no body.
func (hc *h1conn) writePlain(code int, parsed bool) {
	st := &hc.st
	if !parsed || code == http.StatusBadRequest || code == http.StatusRequestEntityTooLarge {
		st.keep = false
	}
	hc.keepIfDiscardable()
	st.status = code
	st.wroteHead = true
	body := errorBody(code)
	hc.writeStatusLine(code)
	_, _ = hc.w.WriteString("Content-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n")
	hc.writeDate()
	hc.writeContentLength(int64(len(body)))
	hc.writeConnection()
	_, _ = hc.w.WriteString("\r\n")
	if !parsed || string(hc.req.method) != http.MethodHead {
		_, _ = hc.w.Write(body)
		st.bytes = int64(len(body))
	}
}

func (hc *h1conn) writeEmpty(code int) {
	st := &hc.st
	hc.keepIfDiscardable()
	st.status, st.wroteHead = code, true
	hc.writeStatusLine(code)
	hc.writeDate()
	_, _ = hc.w.WriteString("Content-Length: 0\r\n")
	hc.writeConnection()
	_, _ = hc.w.WriteString("\r\n")
}

// redirect answers plain HTTP with a 308 to HTTPS, keeping method, body
// and the request target as sent.
func (hc *h1conn) redirect() {
	st := &hc.st
	q := &hc.req
	hc.keepIfDiscardable()
	st.status, st.wroteHead = http.StatusPermanentRedirect, true
	hc.writeStatusLine(http.StatusPermanentRedirect)
	_, _ = hc.w.WriteString("Location: https://")
	_, _ = hc.w.WriteString(stripPort(st.host))
	_, _ = hc.w.WriteString(hc.p.redirectPort)
	if q.slash {
		_ = hc.w.WriteByte('/')
	}
	_, _ = hc.w.Write(q.uri)
	_, _ = hc.w.WriteString("\r\n")
	hc.writeDate()
	_, _ = hc.w.WriteString("Content-Length: 0\r\n")
	hc.writeConnection()
	_, _ = hc.w.WriteString("\r\n")
}

// fail answers a request whose forwarding failed, through errorStatus.
// bodyErr is the client's body failure, if any.
func (hc *h1conn) fail(err, bodyErr error) {
	st := &hc.st
	st.err = err
	ctx := clientCtx{&hc.gone}
	code := errorStatus(ctx, err)
	if bodyErr != nil && code != StatusClientClosed {
		// The client's body failed, not the upstream.
		st.err = bodyErr
		code = errorStatus(ctx, bodyErr)
		if code != http.StatusRequestEntityTooLarge && code != StatusClientClosed {
			code = http.StatusBadRequest
		}
	}
	if code == StatusClientClosed {
		st.status = code
		st.keep = false
		return
	}
	if st.ep != nil {
		hc.p.log.Debug("upstream error", "upstream", st.pool.name, "backend", st.ep.hostport, "status", code, "err", st.err)
	}
	if st.wroteHead {
		// A response already under way cannot be replaced: cut the
		// connection so the client does not take it for complete.
		st.keep = false
		return
	}
	if !st.bodyDone {
		// Part of the body may have been read: the rest cannot be
		// told apart from a next request.
		st.keep = false
	}
	hc.writeError(code)
}

// clientGone records that the client went away; it returns err.
func (hc *h1conn) clientGone(err error) error {
	hc.gone.Store(true)
	hc.st.keep = false
	return err
}

// idempotent reports whether a method may be sent again after a failed
// connect (RFC 9110 §9.2.2).
func idempotent(m []byte) bool {
	switch string(m) {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete, http.MethodTrace:
		return true
	}
	return false
}

// forward sends the request to the chosen endpoint over a pooled HTTP/1.1
// connection and streams the response back.
func (hc *h1conn) forward(limit int64) {
	st := &hc.st
	q := &hc.req
	s := &st.pool.settings
	kind := bodyNone
	switch {
	case q.chunked:
		kind = bodyChunked
	case q.contentLength > 0:
		kind = bodyLength
	}
	hc.body.reset(&hc.rb, kind, q.contentLength, true, hc.p.opts.MaxHeaderBytes)

	var uc *upConn
	stale := 0
	for attempt := 0; ; {
		ep := st.ep
		now := st.start // microseconds ago: no need for another clock read
		if attempt > 0 || stale > 0 {
			now = time.Now()
		}
		if stale == 0 {
			uc = ep.getConn(now.UnixNano(), s.idleTimeout)
		}
		if uc == nil {
			var err error
			if uc, err = ep.dialUpstream(s.connectTimeout); err != nil {
				b := ep.eject()
				hc.p.log.Warn("endpoint ejected after failed connect", "upstream", st.pool.name,
					"backend", ep.hostport, "backoff", b, "err", err)
				if attempt == 0 && idempotent(q.method) {
					if next := st.pool.pick(ep); next != nil {
						next.acquire()
						ep.release()
						st.ep = next
						attempt++
						continue
					}
				}
				hc.fail(err, nil)
				return
			}
		}
		st.upstreamStart = now
		retry, err := hc.exchange(uc, limit)
		if !retry {
			if err == nil {
				ep.succeeded()
			}
			return
		}
		if stale < 2 {
			// An idle connection the endpoint had closed: nothing of the
			// request reached it; try a fresh connection.
			stale++
			uc = nil
			continue
		}
		hc.fail(err, nil)
		return
	}
}

// exchange runs one request/response on uc. It reports retry when uc
// turned out to be a stale keep-alive connection before anything
// irrevocable happened; uc is closed then. Other errors have been
// answered (or the connection cut) already.
func (hc *h1conn) exchange(uc *upConn, limit int64) (retry bool, err error) {
	st := &hc.st
	q := &hc.req
	s := &st.pool.settings
	hc.writeRequestHead(uc)

	var bodyc chan error
	switch {
	case !q.hasBody():
		err = uc.w.Flush()
	case !q.chunked && q.contentLength <= seqBodyMax:
		hc.sendContinue()
		var bodyErr error
		if err, bodyErr = hc.copyRequestBody(uc, limit); err == nil && bodyErr == nil {
			err = uc.w.Flush()
		}
		if bodyErr != nil {
			uc.close()
			hc.fail(bodyErr, bodyErr)
			return false, bodyErr
		}
	default:
		hc.sendContinue()
		if err = uc.w.Flush(); err == nil {
			ch := make(chan error, 1)
			go hc.sendBody(uc, limit, ch)
			bodyc = ch
		}
	}
	if err != nil {
		uc.close()
		if uc.reused && !q.hasBody() {
			return true, err
		}
		hc.fail(err, nil)
		return false, err
	}

	resp := &hc.resp
	for interim := 0; ; interim++ {
		got, err := hc.readResponseHead(uc, bodyc == nil)
		if err == nil {
			err = parseResponse(hc.rbHead, resp)
		}
		if err != nil {
			berr := hc.abortBody(uc, &bodyc)
			uc.close()
			if !got && uc.reused && !q.hasBody() && !hc.gone.Load() && !isTimeout(err) {
				return true, err
			}
			hc.fail(err, berr)
			return false, err
		}
		if resp.status >= 200 || resp.status == http.StatusSwitchingProtocols {
			break
		}
		if interim >= maxInterim {
			hc.abortBody(uc, &bodyc)
			uc.close()
			hc.fail(errTooManyInterim, nil)
			return false, errTooManyInterim
		}
		hc.writeInterim(resp)
	}
	uc.rb.timeout = s.readTimeout

	if resp.status == http.StatusSwitchingProtocols {
		if q.upgrade == nil || bodyc != nil {
			uc.close()
			hc.fail(errUnexpectedUpgrade, nil)
			return false, errUnexpectedUpgrade
		}
		hc.upgrade(uc)
		return false, nil
	}

	kind := responseBodyKind(string(q.method), resp)
	chunkedOut := false
	if kind == bodyChunked || kind == bodyUntilClose {
		if q.minor >= 1 && kind == bodyChunked {
			chunkedOut = true
		} else {
			// Delimited by closing the connection, as HTTP/1.1 requires
			// when the length is not known in advance.
			st.keep = false
		}
	}
	upKeep := resp.keepAlive() && kind != bodyUntilClose
	hc.writeResponseHead(resp, kind == bodyNone, kind, chunkedOut)
	hc.rbody.reset(&uc.rb, kind, resp.contentLength, false, maxResponseHead)
	uerr, cerr := hc.copyResponseBody(uc, chunkedOut)
	if bodyc != nil {
		if uerr != nil || cerr != nil {
			hc.abortBody(uc, &bodyc)
		} else {
			<-bodyc
			bodyc = nil
			if hc.bodyWErr != nil || hc.bodyBErr != nil {
				st.keep = false
				upKeep = false
			}
		}
	}
	switch {
	case cerr != nil:
		uc.close()
		st.err = cerr
		st.status = StatusClientClosed
		hc.clientGone(cerr)
		return false, nil
	case uerr != nil:
		uc.close()
		hc.fail(uerr, nil)
		return false, nil
	}
	if upKeep && st.bodyDone {
		uc.reused = true
		st.ep.putConn(uc, time.Now().UnixNano(), s.idleTimeout)
	} else {
		uc.close()
	}
	return false, nil
}

// sendBody copies the request body while the response is read; it
// records its outcome in hc before signalling done.
func (hc *h1conn) sendBody(uc *upConn, limit int64, done chan<- error) {
	werr, berr := hc.copyRequestBody(uc, limit)
	if berr != nil {
		// Unblock the response read: the request is broken.
		uc.close()
	}
	hc.bodyWErr, hc.bodyBErr = werr, berr
	done <- nil
}

// abortBody stops a request body copy still running and returns the
// client's body failure, if that is what ended it.
func (hc *h1conn) abortBody(uc *upConn, bodyc *chan error) error {
	if *bodyc == nil {
		return nil
	}
	uc.close()
	_ = hc.conn.SetReadDeadline(aLongTimeAgo)
	<-*bodyc
	*bodyc = nil
	if !hc.st.bodyDone {
		hc.st.keep = false
	}
	return hc.bodyBErr
}

var (
	errTooManyInterim = errors.New("too many interim responses")
	aLongTimeAgo      = time.Unix(1, 0)
)

// sendContinue answers "Expect: 100-continue" right before the body is
// read: the request was accepted (routed, within limits), so the client
// may send it. The Expect field itself is not forwarded.
func (hc *h1conn) sendContinue() {
	if hc.req.expect100 && hc.req.minor >= 1 {
		_, _ = hc.w.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		_ = hc.w.Flush()
	}
}

// writeRequestHead writes the request line and header fields for the
// upstream into uc's buffer: end-to-end fields as received, the
// X-Forwarded-* set, and the framing the proxy chose.
func (hc *h1conn) writeRequestHead(uc *upConn) {
	q := &hc.req
	st := &hc.st
	ci := hc.ci
	w := uc.w
	_, _ = w.Write(q.method)
	_ = w.WriteByte(' ')
	if q.slash {
		_ = w.WriteByte('/')
	}
	_, _ = w.Write(q.uri)
	_, _ = w.WriteString(" HTTP/1.1\r\nHost: ")
	if len(q.host) > 0 {
		_, _ = w.Write(q.host)
	} else {
		_, _ = w.WriteString(st.ep.hostport)
	}
	_, _ = w.WriteString("\r\n")
	var xfProto, xfHost, xfPort bool
	hc.strs = hc.strs[:0]
	for i := range q.fields {
		f := &q.fields[i]
		switch f.kind {
		case hkOther, hkDate:
		case hkXFF:
			if ci.trusted {
				hc.strs = append(hc.strs, bstr(f.value))
			}
			continue
		case hkXFProto:
			if !ci.trusted || xfProto {
				continue
			}
			xfProto = true
		case hkXFHost:
			if !ci.trusted || xfHost {
				continue
			}
			xfHost = true
		case hkXFPort:
			if !ci.trusted {
				continue
			}
			xfPort = true
		case hkForwarded:
			if !ci.trusted {
				continue
			}
		default:
			// Host (written above), framing, hop-by-hop and
			// Connection-listed fields, Expect (answered here).
			continue
		}
		_, _ = w.Write(f.name)
		_, _ = w.WriteString(": ")
		_, _ = w.Write(f.value)
		_, _ = w.WriteString("\r\n")
	}
	_, _ = w.WriteString("X-Forwarded-For: ")
	if len(hc.strs) > 0 {
		for _, v := range hc.strs {
			_, _ = w.WriteString(v)
			_, _ = w.WriteString(", ")
		}
	}
	_, _ = w.WriteString(ci.peerStr)
	_, _ = w.WriteString("\r\nX-Real-Ip: ")
	if len(hc.strs) > 0 {
		_, _ = w.WriteString(realClient(hc.strs, ci.peerStr, hc.p.opts.TrustedProxies))
	} else {
		_, _ = w.WriteString(ci.peerStr)
	}
	_, _ = w.WriteString("\r\n")
	if !xfProto {
		_, _ = w.WriteString("X-Forwarded-Proto: ")
		_, _ = w.WriteString(ci.protoVal[0])
		_, _ = w.WriteString("\r\n")
	}
	if !xfHost {
		_, _ = w.WriteString("X-Forwarded-Host: ")
		_, _ = w.Write(q.host)
		_, _ = w.WriteString("\r\n")
	}
	if !xfPort {
		_, _ = w.WriteString("X-Forwarded-Port: ")
		_, _ = w.WriteString(ci.portVal[0])
		_, _ = w.WriteString("\r\n")
	}
	if q.teTrailers {
		_, _ = w.WriteString("Te: trailers\r\n")
	}
	switch {
	case q.chunked:
		_, _ = w.WriteString("Transfer-Encoding: chunked\r\n")
	case q.contentLength >= 0:
		_, _ = w.WriteString("Content-Length: ")
		_, _ = w.Write(strconv.AppendInt(hc.num[:0], q.contentLength, 10))
		_, _ = w.WriteString("\r\n")
	}
	if q.upgrade != nil {
		_, _ = w.WriteString("Connection: Upgrade\r\nUpgrade: ")
		_, _ = w.Write(q.upgrade)
		_, _ = w.WriteString("\r\n")
	}
	_, _ = w.WriteString("\r\n")
}

// copyRequestBody streams the client's body to the upstream, re-encoding
// chunked framing. werr is a write error towards the upstream; berr a
// failure of the client's body (malformed, too large, client gone).
func (hc *h1conn) copyRequestBody(uc *upConn, limit int64) (werr, berr error) {
	src := &hc.body
	chunked := hc.req.chunked
	w := uc.w
	var n int64
	for {
		p, err := src.next()
		if len(p) > 0 {
			n += int64(len(p))
			if limit > 0 && n > limit {
				return nil, &http.MaxBytesError{Limit: limit}
			}
			if chunked {
				_ = writeChunk(w, p, &hc.num)
			} else {
				_, _ = w.Write(p)
			}
			continue
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if w.Buffered() > 0 {
			if err := w.Flush(); err != nil {
				return err, nil
			}
		}
		if err := hc.rb.fill(); err != nil {
			return nil, hc.bodyReadError(err)
		}
	}
	if chunked {
		_, _ = w.WriteString("0\r\n\r\n")
	}
	hc.st.bodyDone = true
	return w.Flush(), nil
}

// bodyReadError classifies a failed read of the client's body: a
// timeout (Options.ReadTimeout) is the client's fault (400), anything else
// means it went away (499).
func (hc *h1conn) bodyReadError(err error) error {
	if isTimeout(err) && !hc.gone.Load() {
		hc.st.keep = false
		return badRequest("request body timeout")
	}
	return hc.clientGone(err)
}

// writeChunk writes p as one chunk.
func writeChunk(w *bufio.Writer, p []byte, num *[24]byte) error {
	_, _ = w.Write(strconv.AppendInt(num[:0], int64(len(p)), 16))
	_, _ = w.WriteString("\r\n")
	_, _ = w.Write(p)
	_, err := w.WriteString("\r\n")
	return err
}

// readResponseHead reads the upstream's response head into hc.rbHead.
// got reports whether any byte of a response arrived. When the upstream
// takes longer than watchAfter and watch is set, the client connection
// is watched meanwhile, so that a client hanging up aborts the wait.
func (hc *h1conn) readResponseHead(uc *upConn, watch bool) (got bool, err error) {
	s := &hc.st.pool.settings
	deadline := hc.st.upstreamStart.Add(s.readTimeout)
	first := deadline
	if watch && s.readTimeout > watchAfter {
		first = hc.st.upstreamStart.Add(watchAfter)
	}
	uc.rb.timeout = 0
	_ = uc.conn.SetReadDeadline(first)
	head, err := uc.rb.readHead(maxResponseHead, false)
	if err != nil && first != deadline && isTimeout(err) {
		done := hc.startWatch(uc)
		_ = uc.conn.SetReadDeadline(deadline)
		head, err = uc.rb.readHead(maxResponseHead, false)
		hc.stopWatch(done)
	}
	if err != nil {
		if hc.gone.Load() {
			return uc.rb.buffered() > 0, hc.clientGone(err)
		}
		return uc.rb.buffered() > 0, err
	}
	hc.rbHead = head
	return true, nil
}

// isTimeout reports a deadline error; unlike errors.As it costs no
// allocation.
func isTimeout(err error) bool {
	for err != nil {
		if t, ok := err.(interface{ Timeout() bool }); ok {
			return t.Timeout()
		}
		err = errors.Unwrap(err)
	}
	return false
}

// startWatch reads the client connection in the background until stopped;
// if the client hangs up, the upstream connection is closed so the
// request ends (as 499). Bytes of a pipelined next request are kept.
func (hc *h1conn) startWatch(uc *upConn) chan struct{} {
	rb := &hc.rb
	if rb.r == rb.w {
		rb.r, rb.w = 0, 0
	}
	if rb.w == len(rb.buf) {
		return nil // full of pipelined requests: the client is there
	}
	_ = hc.conn.SetReadDeadline(time.Time{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		n, err := hc.conn.Read(rb.buf[rb.w:])
		rb.w += n
		if n == 0 && err != nil && !isTimeout(err) {
			hc.gone.Store(true)
			uc.close()
		}
	}()
	return done
}

func (hc *h1conn) stopWatch(done chan struct{}) {
	if done == nil {
		return
	}
	_ = hc.conn.SetReadDeadline(aLongTimeAgo)
	<-done
	_ = hc.conn.SetReadDeadline(time.Time{})
}

// writeInterim forwards a 1xx response other than 101. 100 Continue is
// the proxy's own business (sendContinue); HTTP/1.0 clients get none.
func (hc *h1conn) writeInterim(resp *h1resp) {
	if resp.status == http.StatusContinue || hc.req.minor == 0 {
		return
	}
	hc.writeStatusLine(resp.status)
	hc.writeFields(resp.fields, false, false)
	_, _ = hc.w.WriteString("\r\n")
	_ = hc.w.Flush()
}

// writeFields writes a response's end-to-end fields. With trailer, an
// announced Trailer field is kept (the body goes out chunked); with
// upgrade, the Upgrade field is kept (101).
func (hc *h1conn) writeFields(fields []hfield, trailer, upgrade bool) {
	w := hc.w
	for i := range fields {
		f := &fields[i]
		switch f.kind {
		case hkOther, hkDate:
		case hkTrailer:
			if !trailer {
				continue
			}
		case hkUpgrade:
			if !upgrade {
				continue
			}
		default:
			continue
		}
		_, _ = w.Write(f.name)
		_, _ = w.WriteString(": ")
		_, _ = w.Write(f.value)
		_, _ = w.WriteString("\r\n")
	}
}

func (hc *h1conn) writeResponseHead(resp *h1resp, noBody bool, kind bodyKind, chunkedOut bool) {
	st := &hc.st
	st.status, st.wroteHead = resp.status, true
	hc.writeStatusLine(resp.status)
	hc.writeFields(resp.fields, chunkedOut, false)
	if !resp.hasDate {
		hc.writeDate()
	}
	switch {
	case noBody:
		// HEAD and 304 keep the length of the body they stand for.
		if resp.contentLength >= 0 && resp.status != http.StatusNoContent {
			hc.writeContentLength(resp.contentLength)
		}
	case kind == bodyLength:
		hc.writeContentLength(resp.contentLength)
	case chunkedOut:
		_, _ = hc.w.WriteString("Transfer-Encoding: chunked\r\n")
	}
	hc.writeConnection()
	_, _ = hc.w.WriteString("\r\n")
}

// copyResponseBody streams the upstream's body to the client, flushing
// whenever it has to wait for the upstream. uerr is an upstream failure,
// cerr a client write failure.
func (hc *h1conn) copyResponseBody(uc *upConn, chunkedOut bool) (uerr, cerr error) {
	src := &hc.rbody
	w := hc.w
	st := &hc.st
	for {
		p, err := src.next()
		if len(p) > 0 {
			st.bytes += int64(len(p))
			var werr error
			if chunkedOut {
				werr = writeChunk(w, p, &hc.num)
			} else {
				_, werr = w.Write(p)
			}
			if werr != nil {
				return nil, werr
			}
			continue
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err, nil
		}
		if w.Buffered() > 0 {
			if err := w.Flush(); err != nil {
				return nil, err
			}
		}
		if err := uc.rb.fill(); err != nil {
			if err == io.EOF && src.kind == bodyUntilClose {
				break
			}
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err, nil
		}
	}
	if chunkedOut {
		_, _ = w.WriteString("0\r\n")
		hc.writeTrailer(src.trailer)
		_, _ = w.WriteString("\r\n")
	}
	return nil, wErr(w)
}

// wErr returns the writer's sticky error, if any.
func wErr(w *bufio.Writer) error {
	_, err := w.Write(nil)
	return err
}

// writeTrailer forwards the end-to-end fields of an upstream's trailer.
func (hc *h1conn) writeTrailer(raw []byte) {
	for len(raw) > 0 {
		var line []byte
		line, raw = nextLine(raw)
		name, _, err := parseField(line)
		if err != nil || classify(name) != hkOther {
			continue
		}
		_, _ = hc.w.Write(line)
		_, _ = hc.w.WriteString("\r\n")
	}
}

// upgrade completes a protocol switch (WebSocket): the 101 goes to the
// client, then bytes flow both ways until both sides are done. The
// connection is no longer the proxy's HTTP connection.
func (hc *h1conn) upgrade(uc *upConn) {
	st := &hc.st
	st.status, st.wroteHead = http.StatusSwitchingProtocols, true
	hc.writeStatusLine(http.StatusSwitchingProtocols)
	hc.writeFields(hc.resp.fields, false, true)
	_, _ = hc.w.WriteString("Connection: Upgrade\r\n\r\n")
	// Bytes the upstream sent right after its 101.
	if uc.rb.buffered() > 0 {
		_, _ = hc.w.Write(uc.rb.bytes())
		uc.rb.r = uc.rb.w
	}
	if err := hc.w.Flush(); err != nil {
		uc.close()
		st.keep = false
		return
	}
	hc.state.Store(connHijacked)
	st.keep = false
	var pending []byte
	if hc.rb.buffered() > 0 {
		pending = hc.rb.bytes()
	}
	_ = uc.conn.SetDeadline(time.Time{})
	_ = hc.conn.SetDeadline(time.Time{})
	splice(hc.conn, pending, uc.conn)
}

// splice copies between a client and an upstream connection in both
// directions, half-closing each side as its peer finishes, and closes
// both at the end. pending are client bytes already read.
func splice(client net.Conn, pending []byte, upstream io.ReadWriteCloser) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		var err error
		if len(pending) > 0 {
			_, err = upstream.Write(pending)
		}
		if err == nil {
			_, err = io.Copy(upstream, client)
		}
		if cw, ok := upstream.(interface{ CloseWrite() error }); ok && err == nil {
			_ = cw.CloseWrite()
		} else {
			_ = upstream.Close()
		}
	}()
	_, err := io.Copy(client, upstream)
	if cw, ok := client.(interface{ CloseWrite() error }); ok && err == nil {
		_ = cw.CloseWrite()
	} else {
		_ = client.Close()
	}
	<-done
	_ = client.Close()
	_ = upstream.Close()
}
