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
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// The HTTP/1.x client side serves HTTP/1.1 and 1.0 (cleartext, and over
// TLS when ALPN picks http/1.1) with one goroutine per client connection:
// it parses requests itself (http1parse.go) and hands them to the
// pipeline (pipeline.go), which streams bodies between the client
// connection's buffers and a pooled upstream connection's. Nothing per
// request needs a goroutine, a context, a timer or a map; connection
// deadlines carry the timeouts. TLS connections negotiating HTTP/2, and
// plain ones opening with its preface, are handed to the HTTP/2 server
// (h2server.go). This file holds the
// connection's life and the local answers; client_h1_forward.go its part
// of forwarding.

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

// h1server tracks the HTTP/1.x listeners and connections.
type h1server struct {
	p       *Proxy
	limits  *connLimits
	closing atomic.Bool
	// opening counts accepted connections not yet tracked in conns or
	// streams (PROXY header, TLS handshake): shutdown waits for them too.
	opening atomic.Int64
	// loops are the accept loops running.
	loops sync.WaitGroup
	mu    sync.Mutex
	lns   map[net.Listener]struct{}
	conns map[*h1conn]struct{}
	// streams are the TLS stream connections (TLSRoutes), which shutdown
	// waits for like upgraded ones.
	streams map[net.Conn]struct{}
}

func newH1Server(p *Proxy) *h1server {
	return &h1server{p: p, limits: newConnLimits(&p.opts), lns: map[net.Listener]struct{}{}, conns: map[*h1conn]struct{}{},
		streams: map[net.Conn]struct{}{}}
}

// serve accepts connections until the listener is closed. With tlsConf,
// connections are TLS; those negotiating h2 go to the HTTP/2 server.
func (s *h1server) serve(l net.Listener, tlsConf *tls.Config) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		_ = l.Close()
		return nil
	}
	s.lns[l] = struct{}{}
	s.loops.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.lns, l)
		s.mu.Unlock()
		s.loops.Done()
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
		s.opening.Add(1)
		go s.serveConn(c, tlsConf)
	}
}

func (s *h1server) serveConn(c net.Conn, tlsConf *tls.Config) {
	o := &s.p.opts
	opened := true
	settle := func() {
		if opened {
			opened = false
			s.opening.Add(-1)
		}
	}
	defer settle()
	if s.p.proxyProtocolFrom(c) {
		pc, err := readProxyHeader(c, time.Now().Add(o.ReadHeaderTimeout))
		s.p.metrics.proxyProtocol(err)
		if err != nil {
			s.p.log.Debug("refused", "peer", c.RemoteAddr().String(), "err", err)
			_ = c.Close()
			return
		}
		c = pc
	}
	peer := peerAddr(c)
	if !s.limits.enter(peer, phaseNone, phaseHalfOpen) {
		s.p.metrics.capped.WithLabelValues("half_open").Inc()
		_ = c.Close()
		return
	}
	// Until the first request head (or the hand-over to HTTP/2 or a
	// stream), the connection counts as half-open.
	phase := phaseHalfOpen
	defer func() { s.limits.leave(peer, phase) }()
	active := func() {
		s.limits.leave(peer, phase)
		phase = phaseNone
	}
	c = &writeTimeoutConn{Conn: c, timeout: o.WriteTimeout}
	var stream *streamFrontend
	if tlsConf != nil {
		cur := s.p.state.Load()
		if stream = cur.streams.frontend(localAddrPort(c)); stream != nil && stream.passthrough {
			// The ClientHello's name chooses the listener: passthrough
			// forwards it, a terminating one completes the handshake.
			var done bool
			if c, stream, done = s.passthrough(c, stream, cur, active, settle); done {
				return
			}
		}
		tc := tls.Server(c, tlsConf)
		_ = tc.SetDeadline(time.Now().Add(o.ReadHeaderTimeout))
		if err := tc.HandshakeContext(context.Background()); err != nil {
			s.p.log.Debug("tls handshake", "peer", c.RemoteAddr().String(), "err", err)
			_ = c.Close()
			return
		}
		_ = tc.SetDeadline(time.Time{})
		if stream != nil {
			active()
			s.stream(tc, settle, func() {
				s.p.serveStream(tc, nil, stream, s.p.state.Load(), strings.ToLower(tc.ConnectionState().ServerName), time.Now())
			})
			return
		}
		if tc.ConnectionState().NegotiatedProtocol == "h2" {
			// The HTTP/2 server bounds its idle connections itself.
			active()
			s.p.h2.serveConn(tc, true, settle)
			return
		}
		c = tc
	}
	hc := newH1Conn(s, c, tlsConf != nil)
	hc.peer, hc.phase = peer, &phase
	// A plain connection may open with HTTP/2's preface (h2c with
	// prior knowledge): the HTTP/2 server then takes it.
	hc.h2c = tlsConf == nil
	// Accepted before a shutdown began: served, one request at most.
	s.mu.Lock()
	s.conns[hc] = struct{}{}
	s.mu.Unlock()
	settle()
	hc.serve()
	s.mu.Lock()
	delete(s.conns, hc)
	s.mu.Unlock()
	h2c := hc.h2cConn
	if h2c == nil && hc.state.Load() != connHijacked {
		_ = c.Close()
	}
	hc.free()
	if h2c != nil {
		s.p.h2.serveConn(h2c, false, nil)
	}
}

// passthrough reads the ClientHello of a connection to a frontend with
// TLS passthrough listeners, without answering it. When the server name
// chooses a passthrough listener the connection is forwarded (done);
// otherwise it returns the connection, replaying the ClientHello, for the
// TLS handshake, with the frontend when a terminating stream listener
// takes it (nil when the Ingress routes do: IngressFallback).
func (s *h1server) passthrough(c net.Conn, f *streamFrontend, cur *state, active, settle func()) (net.Conn, *streamFrontend, bool) {
	start := time.Now()
	sni, hello, err := readClientHello(c, start.Add(s.p.opts.ReadHeaderTimeout))
	if err != nil {
		s.p.streamDone(c, sni, "", nil, streamBadHello, 0, start, err)
		_ = c.Close()
		return nil, nil, true
	}
	sni = strings.ToLower(sni)
	l := f.listenerFor(sni)
	switch {
	case l == nil && f.fallback:
		return &prefixConn{Conn: c, pending: hello}, nil, false
	case l == nil || l.kind == ListenerTLSPassthrough:
		active()
		s.stream(c, settle, func() { s.p.serveStream(c, hello, f, cur, sni, start) })
		return nil, nil, true
	}
	return &prefixConn{Conn: c, pending: hello}, f, false
}

// stream serves a TLS stream connection with serve, tracked for shutdown
// from settle on.
func (s *h1server) stream(c net.Conn, settle, serve func()) {
	s.mu.Lock()
	s.streams[c] = struct{}{}
	s.mu.Unlock()
	settle()
	defer func() {
		s.mu.Lock()
		delete(s.streams, c)
		s.mu.Unlock()
	}()
	serve()
}

// drainIdleGrace is how long shutdown leaves a kept-alive connection idle
// before closing it. Closing an idle connection races with a request the
// client may be sending on it at that moment, which it then sees fail; a
// busy client sends its next request within the grace, gets its answer
// with "Connection: close" and opens its next connection elsewhere (on a
// handover, to the agent that took over the listener).
const drainIdleGrace = time.Second

// stopAccepting closes the listeners and waits, bounded by ctx, until the
// connections accepted so far are past their PROXY header and TLS
// handshake: those negotiating h2 are then with the HTTP/2 server, which
// may shut down next without refusing them.
func (s *h1server) stopAccepting(ctx context.Context) {
	s.mu.Lock()
	s.closing.Store(true)
	for l := range s.lns {
		_ = l.Close()
	}
	s.mu.Unlock()
	// A connection an accept loop got just before the close is counted
	// in opening before the loop sees the close.
	loopsDone := make(chan struct{})
	go func() {
		s.loops.Wait()
		close(loopsDone)
	}()
	select {
	case <-loopsDone:
	case <-ctx.Done():
		return
	}
	for s.opening.Load() > 0 && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
}

// shutdown closes the listeners, then idle connections as they have been
// idle for drainIdleGrace, until none is left or ctx ends. Upgraded connections (WebSocket)
// and TLS streams are left to finish too. When ctx ends, what is left is
// closed.
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
		n := len(s.streams) + int(s.opening.Load())
		idleBefore := time.Now().Add(-drainIdleGrace).UnixNano()
		for hc := range s.conns {
			if hc.idleSince.Load() <= idleBefore && hc.state.CompareAndSwap(connIdle, connClosed) {
				_ = hc.conn.Close()
			} else {
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
			s.closeAll()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}

// closeAll closes every connection still open, at the end of a shutdown.
func (s *h1server) closeAll() {
	// Closed outside the lock: a TLS connection's close may wait to write
	// its close_notify to a client that does not read.
	s.mu.Lock()
	conns := make([]net.Conn, 0, len(s.conns)+len(s.streams))
	for hc := range s.conns {
		conns = append(conns, hc.conn)
	}
	for c := range s.streams {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// h1conn is one HTTP/1.x client connection and everything its
// requests reuse.
type h1conn struct {
	srv  *h1server
	p    *Proxy
	conn net.Conn
	ci   *connInfo
	// peer and phase are the connection's place in the client limits
	// (client_limits.go); phase is shared with serveConn, which ends it.
	peer  netip.Addr
	phase *connPhase
	state atomic.Int32
	// hungUp is set when the client is known to have gone away.
	hungUp atomic.Bool
	// bodyInterrupted is set when the response no longer waits for the
	// request body (interruptBody); bodyDeadline bounds the whole body
	// (Options.ReadTimeout; zero: none).
	bodyInterrupted atomic.Bool
	bodyDeadline    time.Time

	rb      rbuf
	w       *bufio.Writer
	headBuf []byte
	pathBuf []byte
	req     h1req
	body    bodySrc // request body
	x       h1scratch
	tx      txn
	st      h1state
	fwd     forwarded
	// h2c: the connection may still open with HTTP/2's preface (plain
	// listeners, until the first request); h2cConn is the connection to
	// hand to the HTTP/2 server when it did.
	h2c     bool
	h2cConn net.Conn
	// watching is the running client watch, if any.
	watching chan struct{}
	// tReq and tBody are the request towards a Transport upstream.
	tReq  *http.Request
	tBody *h1BodyReader
	// idleSince is lastNow in nanoseconds, for shutdown, which closes a
	// connection only once it has been idle for drainIdleGrace.
	idleSince atomic.Int64
	// lastNow is when the previous request ended, the start of the idle
	// wait (saves a clock read per request).
	lastNow time.Time
	num     [24]byte
}

// h1state is what the HTTP/1.x client side tracks about one request
// beyond the pipeline's txn.
type h1state struct {
	host, path string // views of the request's buffers, valid for this request
	keep       bool   // keep the client connection after the response
	wroteHead  bool
	bodyDone   bool // the request body was read completely
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
		// During a shutdown the loop goes on: a response already sent
		// with keep-alive lets the client send one more request, which
		// is answered with "Connection: close"; a connection left idle is
		// closed by shutdown after drainIdleGrace.
		if hc.rb.buffered() == 0 {
			if hc.w.Buffered() > 0 && hc.w.Flush() != nil {
				return
			}
			// Waiting for a next request is idle (for the first one the
			// connection is still half-open).
			if *hc.phase == phaseNone {
				if !hc.srv.limits.enter(hc.peer, phaseNone, phaseIdle) {
					hc.p.metrics.capped.WithLabelValues("idle").Inc()
					return
				}
				*hc.phase = phaseIdle
			}
			if hc.lastNow.IsZero() {
				hc.lastNow = time.Now()
			}
			hc.idleSince.Store(hc.lastNow.UnixNano())
			hc.state.Store(connIdle)
			_ = hc.conn.SetReadDeadline(hc.lastNow.Add(o.ClientIdleTimeout))
			if err := hc.rb.fill(); err != nil {
				return
			}
			if *hc.phase == phaseIdle {
				hc.srv.limits.leave(hc.peer, phaseIdle)
				*hc.phase = phaseNone
			}
			if !hc.state.CompareAndSwap(connIdle, connActive) {
				return
			}
		}
		if hc.h2c {
			if hc.priorKnowledge() {
				hc.srv.limits.leave(hc.peer, *hc.phase)
				*hc.phase = phaseNone
				hc.state.Store(connHijacked)
				hc.h2cConn = &prefixConn{Conn: hc.conn, pending: bytes.Clone(hc.rb.bytes())}
				return
			}
			hc.h2c = false // only a connection's first bytes can be the preface
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
		if *hc.phase == phaseHalfOpen {
			hc.srv.limits.leave(hc.peer, phaseHalfOpen)
			*hc.phase = phaseNone
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
	*st = h1state{keep: q.keepAlive() && !hc.srv.closing.Load(), bodyDone: !q.hasBody()}
	tx := &hc.tx
	*tx = txn{start: start, series: p.notFound}
	hc.hungUp.Store(false)
	hc.bodyInterrupted.Store(false)
	hc.bodyDeadline = time.Time{}
	if q.hasBody() || q.upgrade != nil {
		// The header deadline must not cut a body or an upgraded stream.
		var d time.Time
		if p.opts.ReadTimeout > 0 && q.upgrade == nil {
			d = start.Add(p.opts.ReadTimeout)
		}
		hc.bodyDeadline = d
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

	if hc.ci.trusted {
		tx.id.takeFields(q.fields)
	}
	code := p.decide(tx, p.state.Load(), hc.ci, hc, st.host, st.path, q.contentLength)
	switch {
	case code == 0:
	case tx.location != "" || tx.local != nil:
		hc.writeLocal(code)
		return st.keep && hc.discardUnread()
	default:
		hc.writeError(code)
		return st.keep && hc.discardUnread()
	}
	kind := bodyNone
	switch {
	case q.chunked:
		kind = bodyChunked
	case q.contentLength > 0:
		kind = bodyLength
	}
	hc.body.reset(&hc.rb, kind, q.contentLength, true, p.opts.MaxHeaderBytes)
	hc.fwd.reset(hc.ci)
	if hc.ci.trusted {
		for i := range q.fields {
			f := &q.fields[i]
			hc.fwd.take(f.kind, bstr(f.value))
		}
	}
	hc.fwd.complete(hc.ci, st.host, p.opts.TrustedProxies)
	p.forward(hc, tx)
	if hc.tBody != nil {
		hc.tBody.stop()
	}
	hc.tReq, hc.tBody = nil, nil
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
	tx := &hc.tx
	if tx.status == 0 {
		tx.status = StatusClientClosed
	}
	now := time.Now()
	hc.lastNow = now
	var rl requestLine
	if hc.p.access != nil || hc.p.tracingRequests() {
		rl = requestLine{client: hc.ci.peerStr, method: methodString(hc.req.method), host: hc.st.host,
			path: hc.st.path, proto: "HTTP/1.1", ci: hc.ci}
		if hc.req.minor == 0 {
			rl.proto = "HTTP/1.0"
		}
	}
	hc.p.finish(tx, now, &rl)
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

// writeError answers a request with a short plain-text error, as
// writeError does for HTTP/2 streams. 400 and 413 close the
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
	hc.tx.status = code
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
		hc.tx.bytes = int64(len(body))
	}
}

func (hc *h1conn) writeEmpty(code int) {
	st := &hc.st
	hc.keepIfDiscardable()
	hc.tx.status, st.wroteHead = code, true
	hc.writeStatusLine(code)
	hc.writeDate()
	_, _ = hc.w.WriteString("Content-Length: 0\r\n")
	hc.writeConnection()
	_, _ = hc.w.WriteString("\r\n")
}

// writeLocal writes a local answer without a body: a redirect (to
// tx.location) or a CORS preflight's (tx.local fields).
func (hc *h1conn) writeLocal(code int) {
	hc.keepIfDiscardable()
	tx := &hc.tx
	tx.status, hc.st.wroteHead = code, true
	hc.writeStatusLine(code)
	if tx.location != "" {
		_, _ = hc.w.WriteString("Location: ")
		_, _ = hc.w.WriteString(tx.location)
		_, _ = hc.w.WriteString("\r\n")
	}
	for _, f := range tx.local {
		writeFieldLines(hc.w, f.Name, []string{f.Value})
	}
	hc.writeDate()
	if code != http.StatusNoContent {
		_, _ = hc.w.WriteString("Content-Length: 0\r\n")
	}
	hc.writeConnection()
	_, _ = hc.w.WriteString("\r\n")
}

// fail answers a request whose forwarding failed, through failStatus.
func (hc *h1conn) fail(err, bodyErr error) {
	st := &hc.st
	tx := &hc.tx
	code, err := failStatus(clientCtx{&hc.hungUp}, err, bodyErr)
	tx.err = err
	if code == StatusClientClosed {
		tx.status = code
		st.keep = false
		return
	}
	if tx.ep != nil {
		hc.p.log.Debug("upstream error", "upstream", tx.pool.name, "backend", tx.ep.hostport, "status", code, "err", err)
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
	hc.hungUp.Store(true)
	hc.st.keep = false
	return err
}

// h2cPreface opens every HTTP/2 connection (RFC 9113 §3.4).
var h2cPreface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// priorKnowledge reports whether the connection opens with the HTTP/2
// preface, reading more while what arrived is a part of it. Any other
// first bytes (an HTTP/1.x request line) answer false at once.
func (hc *h1conn) priorKnowledge() bool {
	hc.rb.deadline = time.Now().Add(hc.p.opts.ReadHeaderTimeout)
	defer func() { hc.rb.deadline = time.Time{} }()
	for {
		b := hc.rb.bytes()
		n := min(len(b), len(h2cPreface))
		if !bytes.Equal(b[:n], h2cPreface[:n]) {
			return false
		}
		if n == len(h2cPreface) {
			return true
		}
		if hc.rb.fill() != nil {
			return false
		}
	}
}

// prefixConn is a connection whose first bytes were already read: Read
// returns them before reading on.
type prefixConn struct {
	net.Conn
	pending []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
