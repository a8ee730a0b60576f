package l7proxy

import (
	"errors"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2/hpack"
)

// Responses of the HTTP/2 server: the head HPACK-encoded into HEADERS
// frames (from a header map, or straight from a parsed HTTP/1.1 upstream
// head), the body as DATA frames within the client's flow-control
// windows, the trailers, and the end of the stream.

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

// grpcDeadlineTrailers end a gRPC stream whose deadline passed.
var grpcDeadlineTrailers = []hpack.HeaderField{{Name: "grpc-status", Value: "4"}, {Name: "grpc-message", Value: "deadline exceeded"}}

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
	var tr []hpack.HeaderField
	switch {
	case st.aborted && st.hs.deadlinePassed() && st.hs.isGRPC():
		// The request's own deadline ended it: say so in gRPC's terms.
		// A reset would do for a client whose own timer fired first,
		// but one that arrives before it reads as CANCELLED.
		if st.status == 0 {
			st.resp.Set("Content-Type", "application/grpc")
			st.writeHeader(http.StatusOK)
		}
		tr = grpcDeadlineTrailers
	case st.aborted:
		code := codeInternal
		if st.hs.deadlinePassed() {
			// The stream is no longer needed: a client past its
			// deadline reads this as its deadline.
			code = codeCancel
		}
		c.mu.Lock()
		if !st.localDone && !st.reset {
			c.resetLocked(st, code)
		}
		c.mu.Unlock()
		return
	default:
		if st.status == 0 {
			st.writeHeader(http.StatusOK)
		}
		tr = st.trailers()
	}
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
