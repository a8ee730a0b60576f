package l7proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2/hpack"
)

// The streams of the HTTP/2 server: decoding a request's header block
// into the stream's pooled request, its body as the client sends it
// (flow-controlled by what the pipeline reads), and the response written
// back as frames.

// headerBlock is a header block being received (HEADERS, then
// CONTINUATION frames until END_HEADERS).
type headerBlock struct {
	sid                                         uint32
	st                                          *h2srvStream // nil: the block is decoded only for HPACK's state
	trailers                                    bool         // the block is a request's trailer section
	endStream                                   bool
	frames                                      int
	size                                        int // decoded header list size so far
	tooLarge                                    bool
	malformed                                   string
	regular                                     bool // a regular field was seen (pseudo-fields must come first)
	method, scheme, authority, path             string
	sawMethod, sawScheme, sawAuthority, sawPath bool
}

func (c *h2conn) onHeaders(flags byte, sid uint32, p []byte) error {
	if sid == 0 {
		return connError{codeProtocol, "HEADERS on stream 0"}
	}
	if sid%2 == 0 {
		return connError{codeProtocol, "HEADERS on an even stream id"}
	}
	frag, err := unpad(flags, p)
	if err != nil {
		return err
	}
	if flags&flagPriority != 0 {
		if len(frag) < 5 {
			return connError{codeFrameSize, "HEADERS priority fields"}
		}
		dep := uint32(frag[0])<<24&0x7f000000 | uint32(frag[1])<<16 | uint32(frag[2])<<8 | uint32(frag[3])
		frag = frag[5:]
		if dep == sid {
			// Decoded anyway (HPACK state), then the stream is reset.
			c.mu.Lock()
			if sid > c.maxID {
				c.maxID = sid
			}
			c.mu.Unlock()
			c.block = headerBlock{sid: sid, endStream: flags&flagEndStream != 0, malformed: "depends on itself"}
			return c.blockFragment(flags, frag)
		}
	}
	b := headerBlock{sid: sid, endStream: flags&flagEndStream != 0}
	c.mu.Lock()
	st := c.streams[sid]
	switch {
	case st != nil:
		// A trailer section: it must end the stream.
		c.mu.Unlock()
		if st.remoteDone {
			c.resetStream(sid, codeStreamClosed)
			c.block = b
			return c.blockFragment(flags, frag)
		}
		if flags&flagEndStream == 0 {
			return connError{codeProtocol, "trailers without END_STREAM"}
		}
		b.st, b.trailers = st, true
	case sid <= c.maxID:
		closed := c.wasClosed(sid)
		c.mu.Unlock()
		if closed {
			return connError{codeStreamClosed, "HEADERS on a closed stream"}
		}
		return connError{codeProtocol, "stream id not increasing"}
	default:
		c.maxID = sid
		refuse := c.goingAway || c.dead
		c.mu.Unlock()
		if !refuse {
			b.st = newSrvStream(c, sid)
		}
	}
	c.block = b
	return c.blockFragment(flags, frag)
}

func (c *h2conn) onContinuation(flags byte, sid uint32, p []byte) error {
	if c.block.sid == 0 || sid != c.block.sid {
		return connError{codeProtocol, "CONTINUATION without a header block"}
	}
	if len(p) == 0 && flags&flagEndHeaders == 0 {
		if err := c.count(&c.churn, h2MaxChurnPerSec); err != nil {
			return err
		}
	}
	return c.blockFragment(flags, p)
}

// blockFragment decodes one fragment of the header block in progress, and
// ends the block on END_HEADERS.
func (c *h2conn) blockFragment(flags byte, frag []byte) error {
	b := &c.block
	b.frames++
	if b.frames > h2MaxContinuations {
		return connError{codeEnhanceYourCalm, "too many CONTINUATION frames"}
	}
	if _, err := c.hdec.Write(frag); err != nil {
		return connError{codeCompression, err.Error()}
	}
	if b.tooLarge && b.size > 4*c.p.opts.MaxHeaderBytes {
		// Decoding on would only feed a flood.
		return connError{codeEnhanceYourCalm, "header block far over the limit"}
	}
	if flags&flagEndHeaders == 0 {
		if b.frames == 1 {
			// A slow header block must complete in time.
			_ = c.conn.SetReadDeadline(time.Now().Add(c.p.opts.ReadHeaderTimeout))
		}
		return nil
	}
	if err := c.hdec.Close(); err != nil {
		return connError{codeCompression, err.Error()}
	}
	c.hdec.SetEmitEnabled(true)
	if b.frames > 1 {
		_ = c.conn.SetReadDeadline(time.Time{})
		c.mu.Lock()
		c.idleSet = false
		c.setIdleDeadline()
		c.mu.Unlock()
	}
	blk := *b
	c.block = headerBlock{}
	return c.endBlock(&blk)
}

// onField receives each decoded field of the block in progress.
func (c *h2conn) onField(f hpack.HeaderField) {
	b := &c.block
	b.size += len(f.Name) + len(f.Value) + 32
	if b.size > c.p.opts.MaxHeaderBytes {
		b.tooLarge = true
		c.hdec.SetEmitEnabled(false)
		return
	}
	if b.malformed != "" || b.st == nil {
		return
	}
	if f.IsPseudo() {
		if b.regular || b.trailers {
			b.malformed = "pseudo-header field after a regular one"
			return
		}
		var seen *bool
		switch f.Name {
		case ":method":
			seen, b.method = &b.sawMethod, f.Value
		case ":scheme":
			seen, b.scheme = &b.sawScheme, f.Value
		case ":authority":
			seen, b.authority = &b.sawAuthority, f.Value
		case ":path":
			seen, b.path = &b.sawPath, f.Value
		default:
			b.malformed = "unknown pseudo-header field"
			return
		}
		if *seen {
			b.malformed = "repeated pseudo-header field"
		}
		*seen = true
		return
	}
	b.regular = true
	if !validFieldName(f.Name) {
		b.malformed = "invalid field name"
		return
	}
	if !httpguts.ValidHeaderFieldValue(f.Value) {
		b.malformed = "invalid field value"
		return
	}
	switch f.Name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		b.malformed = "connection-specific field"
		return
	case "te":
		if f.Value != "trailers" {
			b.malformed = "TE other than trailers"
			return
		}
	}
	st := b.st
	if b.trailers {
		if st.req.Trailer == nil {
			st.req.Trailer = make(http.Header)
		}
		k := c.canonical(f.Name)
		st.req.Trailer[k] = append(st.req.Trailer[k], f.Value)
		return
	}
	if f.Name == "expect" && strings.EqualFold(f.Value, "100-continue") {
		st.expect = true
	}
	if f.Name == "content-length" {
		n, err := strconv.ParseInt(f.Value, 10, 64)
		if err != nil || n < 0 || st.declared >= 0 && st.declared != n {
			b.malformed = "invalid content-length"
			return
		}
		st.declared = n
	}
	st.addField(c.canonical(f.Name), f.Value)
}

// validFieldName: a token in lower case (RFC 9113 §8.2.1).
func validFieldName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' || !httpguts.IsTokenRune(rune(c)) {
			return false
		}
	}
	return true
}

// endBlock acts on a complete header block: a new request starts, a
// trailer section ends a body, a malformed one resets its stream.
func (c *h2conn) endBlock(b *headerBlock) error {
	st := b.st
	if b.trailers {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.streams[b.sid] != st {
			return nil
		}
		if b.malformed != "" || b.tooLarge {
			c.resetLocked(st, codeProtocol)
			return nil
		}
		if st.declared >= 0 && st.bodyN != st.declared {
			c.resetLocked(st, codeProtocol)
			return nil
		}
		st.remoteEnd()
		return nil
	}
	if st == nil {
		if b.malformed != "" {
			c.resetStream(b.sid, codeProtocol)
		}
		return nil // a refused stream: the client retries it elsewhere
	}
	if b.malformed == "" && !b.tooLarge {
		b.malformed = st.setRequest(b)
	}
	if b.malformed != "" {
		c.p.log.Debug("malformed http2 request", "peer", c.ci.peerStr, "err", b.malformed)
		st.free()
		c.resetStream(b.sid, codeProtocol)
		return nil
	}
	c.mu.Lock()
	if c.active >= h2MaxStreams {
		c.mu.Unlock()
		st.free()
		c.resetStream(b.sid, codeRefusedStream)
		return nil
	}
	st.sendWindow = c.peerInitWindow
	st.remoteDone = b.endStream
	c.streams[b.sid] = st
	c.active++
	c.setIdleDeadline()
	c.mu.Unlock()
	if b.tooLarge {
		st.tooLarge = true
	}
	c.handlers.Add(1)
	go st.run()
	return nil
}

// commonCanonical maps the lower-case names most requests carry to their
// canonical form without allocating.
var commonCanonical = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language", "Authorization",
		"Cache-Control", "Content-Encoding", "Content-Length", "Content-Type", "Cookie", "Date", "Etag", "Expect",
		"Forwarded", "From", "Grpc-Accept-Encoding", "Grpc-Encoding", "Grpc-Message", "Grpc-Status", "Grpc-Timeout",
		"Host", "If-Match", "If-Modified-Since", "If-None-Match", "If-Range", "If-Unmodified-Since", "Last-Modified",
		"Location", "Origin", "Pragma", "Range", "Referer", "Server", "Set-Cookie", "Te", "Trailer", "User-Agent",
		"Vary", "Via", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Port", "X-Forwarded-Proto",
		"X-Real-Ip", "X-Request-Id"} {
		m[strings.ToLower(k)] = k
	}
	return m
}()

// commonLower is commonCanonical the other way round.
var commonLower = func() map[string]string {
	m := map[string]string{}
	for l, k := range commonCanonical {
		m[k] = l
	}
	return m
}()

const h2NameCacheMax = 128

// canonical returns the canonical form of a lower-case field name,
// remembering the connection's own names.
func (c *h2conn) canonical(name string) string {
	if k, ok := commonCanonical[name]; ok {
		return k
	}
	if k, ok := c.canon[name]; ok {
		return k
	}
	k := textproto.CanonicalMIMEHeaderKey(name)
	if c.canon == nil {
		c.canon = make(map[string]string)
	}
	if len(c.canon) < h2NameCacheMax {
		c.canon[name] = k
	}
	return k
}

// lowerName returns the HTTP/2 (lower-case) form of a response field
// name. Called with mu held.
func (c *h2conn) lowerName(k string) string {
	if l, ok := commonLower[k]; ok {
		return l
	}
	if l, ok := c.lower[k]; ok {
		return l
	}
	l := strings.ToLower(k)
	if c.lower == nil {
		c.lower = make(map[string]string)
	}
	if len(c.lower) < h2NameCacheMax {
		c.lower[k] = l
	}
	return l
}

// h2srvStream is one stream of an HTTP/2 connection and the request it
// carries through the pipeline.
type h2srvStream struct {
	c  *h2conn
	id uint32
	hs h2stream // the pipeline's view

	// The request, decoded into pooled storage.
	req  http.Request
	u    url.URL
	hdr  http.Header
	vals []string
	// declared is the content-length (-1: none); tooLarge: the header
	// list was over the limit (431); expect: the client waits for 100
	// Continue before it sends the body.
	declared int64
	tooLarge bool
	expect   bool

	// Guarded by c.mu.
	remoteDone  bool // END_STREAM received
	localDone   bool // END_STREAM or RST_STREAM sent
	reset       bool // the stream was reset (either side) or the connection died
	sendWindow  int64
	recvWindow  int64
	recvUnacked int64
	body        []byte // received, unread request body
	bodyOff     int
	bodyN       int64
	bodyClosed  bool // the pipeline stopped reading the body
	watched     *upConn
	touched     bool // the reset closed watched
	cancel      context.CancelFunc

	gone    atomic.Bool
	bodyCh  chan struct{} // data, end or reset arrived
	bodyTmr *time.Timer
	// bodyDeadline bounds the whole request (Options.ReadTimeout; zero:
	// none).
	bodyDeadline time.Time

	// The response, written by the stream's goroutine.
	resp        http.Header
	status      int
	headersSent bool
	trailerKeys []string
	pend        []byte
	aborted     bool
}

var srvStreams = sync.Pool{New: func() any {
	return &h2srvStream{hdr: make(http.Header, 16), resp: make(http.Header, 8), bodyCh: make(chan struct{}, 1)}
}}

func newSrvStream(c *h2conn, sid uint32) *h2srvStream {
	st := srvStreams.Get().(*h2srvStream)
	st.c, st.id = c, sid
	st.declared = -1
	st.recvWindow = h2StreamWindow
	return st
}

// free returns a stream to the pool once nothing refers to it any more.
func (st *h2srvStream) free() {
	clear(st.hdr)
	clear(st.resp)
	clear(st.vals)
	hdr, resp, vals, ch, tmr, body := st.hdr, st.resp, st.vals[:0], st.bodyCh, st.bodyTmr, st.body[:0]
	select {
	case <-ch:
	default:
	}
	*st = h2srvStream{hdr: hdr, resp: resp, vals: vals, bodyCh: ch, bodyTmr: tmr, body: body}
	srvStreams.Put(st)
}

// addField adds a request field; value slices come from one backing
// array per stream.
func (st *h2srvStream) addField(k, v string) {
	if old, ok := st.hdr[k]; ok {
		if k == "Cookie" {
			// Split cookies are one field towards HTTP/1.1 (§8.2.3).
			old[0] = old[0] + "; " + v
			return
		}
		st.hdr[k] = append(old[:len(old):len(old)], v)
		return
	}
	st.vals = append(st.vals, v)
	n := len(st.vals)
	st.hdr[k] = st.vals[n-1 : n : n]
}

// setRequest fills the stream's request from its header block; it
// returns why the request is malformed, if it is.
func (st *h2srvStream) setRequest(b *headerBlock) string {
	if !b.sawMethod {
		return "no :method"
	}
	if b.method == http.MethodConnect {
		// No tunnels: the pipeline answers 405 to CONNECT.
		if b.sawScheme || b.sawPath || !b.sawAuthority {
			return "malformed CONNECT"
		}
	} else if !b.sawScheme || !b.sawPath || b.path == "" {
		return "missing :scheme or :path"
	}
	if !httpguts.ValidHostHeader(b.authority) {
		return "invalid :authority"
	}
	host := b.authority
	if !b.sawAuthority {
		if h := st.hdr["Host"]; len(h) > 0 {
			host = h[0]
		}
	}
	delete(st.hdr, "Host")
	r := &st.req
	*r = http.Request{
		Method: b.method, Proto: "HTTP/2.0", ProtoMajor: 2, Header: st.hdr, Host: host,
		RequestURI: b.path, RemoteAddr: st.c.ci.peerStr, ContentLength: -1,
	}
	st.u = url.URL{}
	p := b.path
	if b.method == http.MethodConnect {
		p = "/"
	}
	if i := strings.IndexByte(p, '?'); i >= 0 {
		st.u.RawQuery = p[i+1:]
		p = p[:i]
	}
	switch {
	case p == "*" && b.method == http.MethodOptions:
		st.u.Path = "*"
	case p == "" || p[0] != '/':
		return "invalid :path"
	case strings.IndexByte(p, '%') >= 0:
		dec, ok := decodePath(nil, []byte(p))
		if !ok {
			return "invalid :path"
		}
		st.u.Path, st.u.RawPath = string(dec), p
	default:
		st.u.Path = p
	}
	r.URL = &st.u
	switch {
	case b.endStream:
		r.ContentLength = 0
		if st.declared > 0 {
			return "content-length without a body"
		}
	case st.declared >= 0:
		r.ContentLength = st.declared
	}
	if r.ContentLength != 0 {
		if t := st.c.p.opts.ReadTimeout; t > 0 {
			st.bodyDeadline = time.Now().Add(t)
		}
		r.Body = (*srvBody)(st)
	} else {
		r.Body = http.NoBody
	}
	return ""
}

// queue stores received request body bytes. Called with mu held.
func (st *h2srvStream) queue(data []byte) {
	if len(data) == 0 {
		return
	}
	if st.bodyOff > 0 && st.bodyOff == len(st.body) {
		st.body, st.bodyOff = st.body[:0], 0
	}
	if st.bodyClosed {
		st.recvUnacked += int64(len(data))
		st.c.giveBack(int64(len(data)))
		return
	}
	st.body = append(st.body, data...)
	st.wake()
}

// remoteEnd records the end of the request. Called with mu held.
func (st *h2srvStream) remoteEnd() {
	st.remoteDone = true
	st.wake()
	if st.localDone {
		st.c.remove(st, false)
	}
}

func (st *h2srvStream) wake() {
	select {
	case st.bodyCh <- struct{}{}:
	default:
	}
}

// clientReset records that the stream is over for the client: its
// pipeline sees the client gone. Called with mu held.
func (st *h2srvStream) clientReset() {
	if st.reset {
		return
	}
	st.reset = true
	st.gone.Store(true)
	if uc := st.watched; uc != nil {
		// Closed rather than given a past deadline, which the pipeline
		// could move meanwhile; a touched connection is never reused.
		uc.close()
		st.touched = true
	}
	if st.cancel != nil {
		st.cancel()
	}
	st.wake()
	st.c.cond.Broadcast()
}

// context is the stream's context for an http.Transport: done when the
// client resets the stream or goes away.
func (st *h2srvStream) context() context.Context {
	c := st.c
	ctx, cancel := context.WithCancel(context.Background())
	c.mu.Lock()
	if st.reset {
		cancel()
	}
	st.cancel = cancel
	c.mu.Unlock()
	return ctx
}

// watch makes a client reset interrupt whatever waits on uc, until
// unwatch; it reports false if uc was touched.
func (st *h2srvStream) watch(uc *upConn) {
	c := st.c
	c.mu.Lock()
	st.watched = uc
	if st.reset {
		uc.close()
		st.touched = true
	}
	c.mu.Unlock()
}

func (st *h2srvStream) unwatch() bool {
	c := st.c
	c.mu.Lock()
	st.watched = nil
	t := st.touched
	c.mu.Unlock()
	return !t
}

// srvBody is a stream's request body as the pipeline reads it.
type srvBody h2srvStream

var errBodyClosed = errors.New("request body closed")

func (b *srvBody) Read(p []byte) (int, error) {
	st := (*h2srvStream)(b)
	c := st.c
	c.mu.Lock()
	for {
		if n := len(st.body) - st.bodyOff; n > 0 {
			k := copy(p, st.body[st.bodyOff:])
			st.bodyOff += k
			if st.bodyOff == len(st.body) {
				st.body, st.bodyOff = st.body[:0], 0
			}
			st.consumed(int64(k))
			c.mu.Unlock()
			return k, nil
		}
		switch {
		case st.bodyClosed:
			c.mu.Unlock()
			return 0, errBodyClosed
		case st.remoteDone:
			c.mu.Unlock()
			return 0, io.EOF
		case st.reset:
			c.mu.Unlock()
			return 0, errClientReset
		}
		if st.expect {
			// The request was accepted: the client may send its body.
			st.expect = false
			if !st.headersSent && st.bodyN == 0 && !c.dead {
				c.hbuf.b = c.hbuf.b[:0]
				_ = c.henc.WriteField(hpack.HeaderField{Name: ":status", Value: "100"})
				c.writeBlock(st.id, false)
			}
		}
		c.mu.Unlock()
		if err := st.waitBody(); err != nil {
			return 0, err
		}
		c.mu.Lock()
	}
}

// consumed gives read body bytes back to the client's windows, in
// batches. Called with mu held.
func (st *h2srvStream) consumed(n int64) {
	c := st.c
	st.recvUnacked += n
	if !st.remoteDone && !st.reset && st.recvUnacked >= h2StreamWindow/4 {
		c.writeWindowUpdate(st.id, uint32(st.recvUnacked))
		st.recvWindow += st.recvUnacked
		st.recvUnacked = 0
		c.kick()
	}
	c.giveBack(n)
}

var errClientReset = errors.New("client reset the stream")

// waitBody waits for more of the body, at most Options.BodyTimeout: a body
// that stops coming gets 400, as on HTTP/1.x.
func (st *h2srvStream) waitBody() error {
	d := st.c.p.opts.BodyTimeout
	if !st.bodyDeadline.IsZero() {
		left := time.Until(st.bodyDeadline)
		if left <= 0 {
			return badRequest("request body timeout")
		}
		d = min(d, left)
	}
	if st.bodyTmr == nil {
		st.bodyTmr = time.NewTimer(d)
	} else {
		st.bodyTmr.Reset(d)
	}
	select {
	case <-st.bodyCh:
		st.bodyTmr.Stop()
		return nil
	case <-st.bodyTmr.C:
		return badRequest("request body timeout")
	}
}

// Close stops reading: a read waiting for the client returns, and what
// still arrives is discarded.
func (b *srvBody) Close() error {
	st := (*h2srvStream)(b)
	c := st.c
	c.mu.Lock()
	if !st.bodyClosed {
		st.bodyClosed = true
		if n := int64(len(st.body) - st.bodyOff); n > 0 {
			st.body, st.bodyOff = st.body[:0], 0
			c.giveBack(n)
		}
		st.wake()
	}
	c.mu.Unlock()
	return nil
}

// run serves the stream's request through the pipeline, then ends the
// stream.
func (st *h2srvStream) run() {
	c := st.c
	defer c.handlers.Done()
	st.hs.serve(st)
	st.end()
	c.mu.Lock()
	c.active--
	// Only a stream whose request was received whole is reused: with
	// the request unfinished, the reader may still be decoding its
	// trailer section into it.
	recycle := st.remoteDone && c.streams[st.id] != st
	c.setIdleDeadline()
	if c.goingAway && c.active == 0 && len(c.streams) == 0 {
		// Wake the reader so the connection closes.
		_ = c.conn.SetReadDeadline(aLongTimeAgo)
	}
	c.mu.Unlock()
	if recycle && st.hs.reusable() {
		st.free()
	}
}

// Response writing.

// writeHeader records the status; the HEADERS frame goes out with the
// first body bytes, a flush, or the end of the stream.
func (st *h2srvStream) writeHeader(code int) {
	if st.status != 0 {
		return
	}
	st.status = code
	for _, v := range st.resp["Trailer"] {
		for _, k := range strings.Split(v, ",") {
			if k = textproto.TrimString(k); k != "" {
				st.trailerKeys = append(st.trailerKeys, http.CanonicalHeaderKey(k))
			}
		}
	}
	delete(st.resp, "Trailer")
}

func (st *h2srvStream) write(b []byte) (int, error) {
	if st.status == 0 {
		st.writeHeader(http.StatusOK)
	}
	if len(st.pend)+len(b) <= h2MaxFrameSize {
		if st.pend == nil {
			st.pend = pendBufs.Get().(*[h2MaxFrameSize]byte)[:0]
		}
		st.pend = append(st.pend, b...)
		return len(b), nil
	}
	if err := st.send(false); err != nil {
		return 0, err
	}
	if err := st.sendData(b, false); err != nil {
		return 0, err
	}
	return len(b), nil
}

var pendBufs = sync.Pool{New: func() any { return new([h2MaxFrameSize]byte) }}

// flush sends the headers and the pending body bytes.
func (st *h2srvStream) flush() error {
	if st.status == 0 {
		st.writeHeader(http.StatusOK)
	}
	return st.send(false)
}

// send writes the HEADERS frame if not yet sent and the pending bytes;
// end ends the stream with them.
func (st *h2srvStream) send(end bool) error {
	c := st.c
	c.mu.Lock()
	if st.reset || c.dead {
		c.mu.Unlock()
		return errClientReset
	}
	if st.localDone {
		c.mu.Unlock()
		return nil
	}
	if !st.headersSent {
		st.headersSent = true
		cl := -1
		if end {
			cl = len(st.pend) // the whole body is known
		}
		c.writeHeaders(st, end && len(st.pend) == 0, cl)
		if end && len(st.pend) == 0 {
			st.localDone = true
			c.mu.Unlock()
			return nil
		}
	}
	var err error
	if len(st.pend) > 0 || end {
		// Under the same lock as the head: a response that fits the
		// windows leaves in one piece.
		err = st.sendDataLocked(st.pend, end)
		st.pend = st.pend[:0]
	}
	c.mu.Unlock()
	return err
}

// sendData sends body bytes as DATA frames within the flow-control
// windows, waiting for the client to open them (at most
// Options.WriteTimeout).
func (st *h2srvStream) sendData(b []byte, end bool) error {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	return st.sendDataLocked(b, end)
}

// sendDataLocked is sendData with mu held.
func (st *h2srvStream) sendDataLocked(b []byte, end bool) error {
	c := st.c
	// waiting is when the current wait for window (or for room in the
	// write buffer) began; a wait longer than WriteTimeout is a stall.
	var waiting time.Time
	var wake *time.Timer
	defer func() {
		if wake != nil {
			wake.Stop()
		}
	}()
	for {
		if st.reset || c.dead {
			return errClientReset
		}
		if len(b) == 0 && !end {
			return nil
		}
		n := min(int64(len(b)), c.sendWindow, st.sendWindow, int64(c.peerMaxFrame))
		if len(b) == 0 || n > 0 && len(c.wbuf) < h2WriteSoftMax {
			last := end && n == int64(len(b))
			var flags byte
			if last {
				flags = flagEndStream
			}
			c.frameHeader(frameData, flags, st.id, int(n))
			c.wbuf = append(c.wbuf, b[:n]...)
			c.sendWindow -= n
			st.sendWindow -= n
			b = b[n:]
			waiting = time.Time{}
			c.kick()
			if last {
				st.localDone = true
				return nil
			}
			continue
		}
		timeout := c.p.opts.WriteTimeout
		now := time.Now()
		switch {
		case waiting.IsZero():
			waiting = now
		case now.Sub(waiting) >= timeout:
			c.resetLocked(st, codeFlowControl)
			return errWriteStalled
		}
		// The timer only wakes this wait; the check above decides.
		if wake == nil {
			wake = time.AfterFunc(timeout, func() {
				c.mu.Lock()
				c.cond.Broadcast()
				c.mu.Unlock()
			})
		} else {
			wake.Reset(waiting.Add(timeout).Sub(now))
		}
		c.cond.Wait()
	}
}

var errWriteStalled = errors.New("client did not open its flow-control window in time")

// writeHeaders encodes the response head into HEADERS (and CONTINUATION)
// frames; contentLength, when not negative, is the length of the whole
// body, announced unless the head has one. Called with mu held: the HPACK
// encoder's state follows the order of the frames.
func (c *h2conn) writeHeaders(st *h2srvStream, end bool, contentLength int) {
	c.hbuf.b = c.hbuf.b[:0]
	enc := c.henc
	_ = enc.WriteField(hpack.HeaderField{Name: ":status", Value: statusValue(st.status)})
	hasDate := false
	for k, vv := range st.resp {
		if k == "Connection" && hasToken(vv, "close") && !c.goingAway {
			// A local answer that gives up on the connection (400,
			// 413): as net/http's server did, the client is told to
			// go elsewhere once its streams are done.
			c.writeGoAway(codeNo)
		}
		if skipResponseField(k, st.trailerKeys) {
			continue
		}
		if k == "Date" {
			hasDate = true
		} else if k == "Content-Length" {
			contentLength = -1
		}
		name := c.lowerName(k)
		for _, v := range vv {
			if httpguts.ValidHeaderFieldValue(v) {
				_ = enc.WriteField(hpack.HeaderField{Name: name, Value: v})
			}
		}
	}
	if !hasDate {
		_ = enc.WriteField(hpack.HeaderField{Name: "date", Value: httpDateString(time.Now())})
	}
	if contentLength >= 0 && bodyAllowed(st.req.Method, st.status) {
		_ = enc.WriteField(hpack.HeaderField{Name: "content-length", Value: strconv.Itoa(contentLength)})
	}
	c.writeBlock(st.id, end)
}

// bodyAllowed reports whether a response to method with status has a
// body whose length can be announced.
func bodyAllowed(method string, status int) bool {
	return method != http.MethodHead && status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// sendHead sends an HTTP/1.1 upstream's response head as it was parsed;
// end: the response has no body.
func (st *h2srvStream) sendHead(resp *h1resp, end bool) error {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.reset || c.dead {
		return errClientReset
	}
	st.status, st.headersSent = resp.status, true
	c.hbuf.b = c.hbuf.b[:0]
	enc := c.henc
	_ = enc.WriteField(hpack.HeaderField{Name: ":status", Value: statusValue(resp.status)})
	for i := range resp.fields {
		f := &resp.fields[i]
		switch f.kind {
		case hkOther, hkDate, hkContentLength:
		default:
			continue // hop-by-hop, or framing HTTP/2 does itself
		}
		_ = enc.WriteField(hpack.HeaderField{Name: c.names.lower(f.name), Value: c.values.intern(f.value)})
	}
	if !resp.hasDate {
		_ = enc.WriteField(hpack.HeaderField{Name: "date", Value: httpDateString(time.Now())})
	}
	c.writeBlock(st.id, end)
	if end {
		st.localDone = true
	}
	return nil
}

// internTable gives byte strings a string that stays valid, so that
// HPACK's dynamic table can keep it, allocating once per distinct value
// of a connection rather than once per response.
type internTable struct {
	m   map[string]string
	buf [64]byte
}

const internMax = 256

// intern returns b as a string.
func (t *internTable) intern(b []byte) string {
	if s, ok := t.m[string(b)]; ok {
		return s
	}
	s := string(b)
	if t.m == nil || len(t.m) >= internMax {
		t.m = make(map[string]string)
	}
	t.m[s] = s
	return s
}

// lower returns a field name in lower case (HTTP/2's form).
func (t *internTable) lower(b []byte) string {
	if len(b) > len(t.buf) {
		return strings.ToLower(string(b))
	}
	l := t.buf[:len(b)]
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		l[i] = c
	}
	return t.intern(l)
}

// writeTrailers encodes the trailer section, which ends the stream.
func (c *h2conn) writeTrailers(st *h2srvStream, tr []hpack.HeaderField) {
	c.hbuf.b = c.hbuf.b[:0]
	for _, f := range tr {
		_ = c.henc.WriteField(f)
	}
	c.writeBlock(st.id, true)
}

// writeBlock frames the encoded block in hbuf.
func (c *h2conn) writeBlock(sid uint32, end bool) {
	blk := c.hbuf.b
	typ := byte(frameHeaders)
	var flags byte
	if end {
		flags = flagEndStream
	}
	for first := true; first || len(blk) > 0; first = false {
		n := min(len(blk), c.peerMaxFrame)
		f := flags
		if n == len(blk) {
			f |= flagEndHeaders
		}
		c.frameHeader(typ, f, sid, n)
		c.wbuf = append(c.wbuf, blk[:n]...)
		blk = blk[n:]
		typ, flags = frameContinuation, 0
	}
	c.kick()
}

// skipResponseField: fields HTTP/2 does not carry, and trailers.
func skipResponseField(k string, trailerKeys []string) bool {
	switch k {
	case "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade", "Te", "Trailer":
		return true
	}
	if strings.HasPrefix(k, http.TrailerPrefix) {
		return true
	}
	for _, t := range trailerKeys {
		if t == k {
			return true
		}
	}
	return false
}

var statusValues = func() (t [600]string) {
	for i := 100; i < 600; i++ {
		t[i] = strconv.Itoa(i)
	}
	return t
}()

func statusValue(code int) string {
	if code >= 100 && code < 600 {
		return statusValues[code]
	}
	return strconv.Itoa(code)
}

var dateStr atomic.Pointer[dateString]

type dateString struct {
	sec int64
	s   string
}

// httpDateString is httpDate as a string, made once a second.
func httpDateString(now time.Time) string {
	s := now.Unix()
	if d := dateStr.Load(); d != nil && d.sec == s {
		return d.s
	}
	d := &dateString{sec: s, s: string(httpDate(now))}
	dateStr.Store(d)
	return d.s
}

// end completes the response after the pipeline: pending bytes, the
// trailers, END_STREAM; or a reset if the response broke. A request body
// the client is still sending is stopped with RST_STREAM(NO_ERROR).
func (st *h2srvStream) end() {
	c := st.c
	if st.pend != nil {
		defer func() {
			pendBufs.Put((*[h2MaxFrameSize]byte)(st.pend[:h2MaxFrameSize]))
			st.pend = nil
		}()
	}
	if st.aborted {
		code := codeInternal
		if st.hs.deadlinePassed() {
			// The request's own deadline ended it: the stream is no
			// longer needed, which a gRPC client reads as its deadline.
			code = codeCancel
		}
		c.mu.Lock()
		if !st.localDone && !st.reset {
			c.resetLocked(st, code)
		}
		c.mu.Unlock()
		return
	}
	if st.status == 0 {
		st.writeHeader(http.StatusOK)
	}
	tr := st.trailers()
	if len(tr) == 0 {
		_ = st.send(true)
	} else if st.send(false) == nil {
		c.mu.Lock()
		if !st.reset && !c.dead {
			c.writeTrailers(st, tr)
			st.localDone = true
		}
		c.mu.Unlock()
	}
	c.mu.Lock()
	if c.streams[st.id] == st && st.localDone {
		if st.remoteDone {
			c.remove(st, false)
		} else {
			c.writeRST(st.id, codeNo)
			st.reset = true
			st.gone.Store(true)
			c.remove(st, true)
		}
	}
	c.mu.Unlock()
}

// trailers collects the response's trailer fields: those announced with
// Trailer, and those set with http.TrailerPrefix.
func (st *h2srvStream) trailers() []hpack.HeaderField {
	var tr []hpack.HeaderField
	add := func(k string, vv []string) {
		if isHopByHop(k) || k == "Content-Length" {
			return
		}
		name := strings.ToLower(k)
		for _, v := range vv {
			if validFieldName(name) && httpguts.ValidHeaderFieldValue(v) {
				tr = append(tr, hpack.HeaderField{Name: name, Value: v})
			}
		}
	}
	for _, k := range st.trailerKeys {
		add(k, st.resp[k])
	}
	for k, vv := range st.resp {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			add(http.CanonicalHeaderKey(k[len(http.TrailerPrefix):]), vv)
		}
	}
	return tr
}
