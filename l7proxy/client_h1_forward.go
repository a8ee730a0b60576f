package l7proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The HTTP/1.x client side's part of the pipeline (the client interface):
// writing the request towards an upstream, streaming its body, and
// writing the upstream's response back on the client connection.

// headerValue returns the first value of a request field (the name is
// compared case-insensitively).
func (hc *h1conn) headerValue(name string) (string, bool) {
	for i := range hc.req.fields {
		f := &hc.req.fields[i]
		if len(f.name) == len(name) && strings.EqualFold(bstr(f.name), name) {
			return bstr(f.value), true
		}
	}
	return "", false
}

func (hc *h1conn) rawQuery() string {
	if i := bytes.IndexByte(hc.req.uri, '?'); i >= 0 {
		return bstr(hc.req.uri[i+1:])
	}
	return ""
}

func (hc *h1conn) requestURI() string {
	if hc.req.slash {
		return "/" + string(hc.req.uri)
	}
	return string(hc.req.uri)
}

func (hc *h1conn) idempotent() bool { return idempotentMethod(bstr(hc.req.method)) }
func (hc *h1conn) gone() bool       { return hc.hungUp.Load() }

// clientLeft is gone for a request still being decided, when no watch
// runs (access.go): the connection is probed.
func (hc *h1conn) clientLeft() bool    { return hc.hungUp.Load() || peerClosed(hc.conn) }
func (hc *h1conn) method() string      { return bstr(hc.req.method) }
func (hc *h1conn) scratch() *h1scratch { return &hc.x }
func (hc *h1conn) bodyDone() bool      { return hc.st.bodyDone }

func (hc *h1conn) replayable() bool {
	return hc.req.upgrade == nil && (!hc.req.hasBody() || hc.tx.replay.isWhole())
}

func (hc *h1conn) requestBody() (bool, int64) {
	if hc.req.chunked {
		return true, -1
	}
	return hc.req.hasBody(), hc.req.contentLength
}

// A complete response waits for the request body to end: the rest of it
// is on the connection before the next request.
func (hc *h1conn) waitsForBody() bool { return true }

// abort ends a request whose response broke under way.
func (hc *h1conn) abort(uerr, cerr, _ error) {
	if cerr != nil {
		hc.tx.err = cerr
		hc.tx.status = StatusClientClosed
		hc.clientGone(cerr)
		return
	}
	hc.fail(uerr, nil)
}

// beginBody answers "Expect: 100-continue" (the request was accepted:
// routed, within limits) and chooses how the body is sent: small bodies
// whole before the response is read; longer and chunked ones by a second
// goroutine meanwhile, so an upstream answering early or streaming its
// answer cannot deadlock against the proxy.
func (hc *h1conn) beginBody() bodyPlan {
	q := &hc.req
	if !q.hasBody() {
		return planNone
	}
	hc.sendContinue()
	if !q.chunked && q.contentLength <= seqBodyMax {
		return planSequential
	}
	return planStreamed
}

// interruptBody makes a body copy waiting for the client give up. The
// flag comes first: a copy that sets its next read's deadline after it
// sees the flag; one that set it before gets this earlier one.
func (hc *h1conn) interruptBody() {
	hc.bodyInterrupted.Store(true)
	_ = hc.conn.SetReadDeadline(aLongTimeAgo)
}

// bodyReadDeadline sets the deadline of the next read of the request
// body: Options.BodyTimeout from now (the body must make progress), not
// past the whole body's deadline, or at once when interrupted.
func (hc *h1conn) bodyReadDeadline() {
	d := time.Now().Add(hc.p.opts.BodyTimeout)
	if !hc.bodyDeadline.IsZero() && hc.bodyDeadline.Before(d) {
		d = hc.bodyDeadline
	}
	_ = hc.conn.SetReadDeadline(d)
	if hc.bodyInterrupted.Load() {
		_ = hc.conn.SetReadDeadline(aLongTimeAgo)
	}
}

// The client connection is watched only while no body copy reads it.
func (hc *h1conn) canWatch(streamed bool) bool { return !streamed }
func (hc *h1conn) watch(uc *upConn)            { hc.watching = hc.startWatch(uc) }
func (hc *h1conn) unwatch() {
	hc.stopWatch(hc.watching)
	hc.watching = nil
}
func (hc *h1conn) release(*upConn) bool { return true }

// writeRequestHead writes the request line and header fields for the
// upstream: end-to-end fields as received, the forwarded set, and the
// framing the proxy chose.
func (hc *h1conn) writeRequestHead(w *bufio.Writer, ep *endpoint) {
	q := &hc.req
	tx := &hc.tx
	edit, rw := tx.requestEdits()
	_, _ = w.Write(q.method)
	_ = w.WriteByte(' ')
	if rw != nil && rw.Path != nil {
		_, _ = w.WriteString(tx.rewrittenTarget(hc.rawQuery()))
	} else {
		if q.slash {
			_ = w.WriteByte('/')
		}
		_, _ = w.Write(q.uri)
	}
	_, _ = w.WriteString(" HTTP/1.1\r\nHost: ")
	switch {
	case rw != nil && rw.Hostname != "":
		_, _ = w.WriteString(rw.Hostname)
	case len(q.host) > 0:
		_, _ = w.Write(q.host)
	default:
		_, _ = w.WriteString(ep.hostport)
	}
	_, _ = w.WriteString("\r\n")
	for i := range q.fields {
		f := &q.fields[i]
		// Host (written above), framing, hop-by-hop and Connection-listed
		// fields, Expect (answered here) and the forwarded set are not
		// copied.
		if f.kind != hkOther && f.kind != hkDate || edit != nil && edit.drops(bstr(f.name)) || isRequestIDField(f.name) {
			continue
		}
		_, _ = w.Write(f.name)
		_, _ = w.WriteString(": ")
		_, _ = w.Write(f.value)
		_, _ = w.WriteString("\r\n")
	}
	edit.write(w)
	hc.fwd.write(w)
	if !edit.drops(hdrRequestID) {
		// A route filter that sets or removes the ID wins, as on the
		// other upstream kinds.
		tx.id.writeField(w)
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

func (hc *h1conn) interim(resp *h1resp) { hc.writeInterim(resp) }

// respondH1 writes an HTTP/1.1 upstream's response to the client. A body
// of unknown length goes out chunked to HTTP/1.1 clients and delimited by
// closing the connection to HTTP/1.0 ones.
func (hc *h1conn) respondH1(uc *upConn, resp *h1resp, _ []byte, kind bodyKind, body *bodySrc) (uerr, cerr error) {
	chunkedOut := false
	if kind == bodyChunked || kind == bodyUntilClose {
		if hc.req.minor >= 1 && kind == bodyChunked {
			chunkedOut = true
		} else {
			hc.st.keep = false
		}
	}
	hc.writeResponseHead(resp, kind == bodyNone, kind, chunkedOut)
	return hc.copyResponseBody(uc, body, chunkedOut)
}

// transportRequest builds the request towards a Transport upstream (h2c,
// TLS) once. These upstreams are rare (gRPC, HTTPS pods), so this path
// favours reuse over allocations.
func (hc *h1conn) transportRequest() (*http.Request, error) {
	if hc.tReq != nil {
		return hc.tReq, nil
	}
	q := &hc.req
	uri := string(q.uri)
	if q.slash {
		uri = "/" + uri
	}
	u, err := url.ParseRequestURI(uri)
	if err != nil {
		return nil, badRequest("request target")
	}
	h := make(http.Header, len(q.fields)+6)
	for i := range q.fields {
		f := &q.fields[i]
		if f.kind == hkOther || f.kind == hkDate {
			k := textproto.CanonicalMIMEHeaderKey(string(f.name))
			h[k] = append(h[k], string(f.value))
		}
	}
	if q.teTrailers {
		h["Te"] = teTrailers
	}
	if _, ok := h["User-Agent"]; !ok {
		// Keep the transport from adding its own.
		h["User-Agent"] = emptyValue
	}
	hc.fwd.setHeader(h)
	hc.tx.id.setHeader(h)
	edit, rw := hc.tx.requestEdits()
	edit.apply(h)
	host := string(q.host)
	if rw != nil && rw.Path != nil {
		if u, err = url.ParseRequestURI(hc.tx.rewrittenTarget(u.RawQuery)); err != nil {
			return nil, badRequest("request target")
		}
	}
	if rw != nil && rw.Hostname != "" {
		host = rw.Hostname
	}
	req := &http.Request{
		Method:     methodString(q.method),
		URL:        u,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     h,
		Host:       host,
	}
	if q.hasBody() {
		hc.sendContinue()
		hc.tBody = &h1BodyReader{hc: hc, limit: hc.tx.limit}
		req.Body = hc.tBody
		req.ContentLength = q.contentLength
		if q.chunked {
			req.ContentLength = -1
		}
	}
	hc.tReq = req
	return req, nil
}

func (hc *h1conn) bodyError() error { return hc.tBody.failure() }

// prepareMirror gives a mirror the request's end-to-end fields and the
// forwarded set, copied out of the connection's buffers.
func (hc *h1conn) prepareMirror(m *mirrorReq) {
	q := &hc.req
	h := make(http.Header, len(q.fields)+6)
	for i := range q.fields {
		f := &q.fields[i]
		if f.kind == hkOther || f.kind == hkDate {
			k := textproto.CanonicalMIMEHeaderKey(string(f.name))
			h[k] = append(h[k], string(f.value))
		}
	}
	hc.fwd.setHeader(h)
	hc.tx.id.setHeader(h)
	var n int64
	if q.hasBody() {
		n = q.contentLength
		if q.chunked {
			n = -1
		}
	}
	m.prepare(&hc.tx, methodString(q.method), string(q.host), hc.requestURI(), hc.rawQuery(), h, n)
}

// respondTransport writes a Transport's response to the client.
func (hc *h1conn) respondTransport(res *http.Response) {
	defer res.Body.Close()
	q := &hc.req
	st := &hc.st
	tx := &hc.tx
	if res.StatusCode == http.StatusSwitchingProtocols {
		rwc, ok := res.Body.(io.ReadWriteCloser)
		if q.upgrade == nil || !ok {
			hc.fail(errUnexpectedUpgrade, nil)
			return
		}
		hc.upgradeTransport(res, rwc)
		return
	}
	noBody := q.method[0] == 'H' && string(q.method) == http.MethodHead || res.StatusCode == http.StatusNoContent ||
		res.StatusCode == http.StatusNotModified
	chunkedOut := false
	w := hc.w
	tx.status, st.wroteHead = res.StatusCode, true
	hc.writeStatusLine(res.StatusCode)
	tx.responseEdit().apply(res.Header)
	hc.writeHeader(res.Header)
	if _, ok := res.Header["Date"]; !ok {
		hc.writeDate()
	}
	switch {
	case noBody:
		if res.ContentLength > 0 && res.StatusCode != http.StatusNoContent {
			hc.writeContentLength(res.ContentLength)
		}
	case res.ContentLength >= 0:
		hc.writeContentLength(res.ContentLength)
	case q.minor >= 1:
		chunkedOut = true
		_, _ = w.WriteString("Transfer-Encoding: chunked\r\n")
		if len(res.Trailer) > 0 {
			_, _ = w.WriteString("Trailer: ")
			_, _ = w.WriteString(joinKeys(res.Trailer))
			_, _ = w.WriteString("\r\n")
		}
	default:
		st.keep = false
	}
	hc.writeConnection()
	_, _ = w.WriteString("\r\n")
	if noBody {
		return
	}
	bp := copyBufs.Get().(*[copyBufSize]byte)
	defer copyBufs.Put(bp)
	for {
		n, rerr := res.Body.Read(bp[:])
		if n > 0 {
			tx.bytes += int64(n)
			var werr error
			if chunkedOut {
				werr = writeChunk(w, bp[:n], &hc.num)
			} else {
				_, werr = w.Write(bp[:n])
			}
			if werr == nil {
				// Streams (gRPC, server-sent events) must not wait in
				// the buffer.
				werr = w.Flush()
			}
			if werr != nil {
				hc.abort(nil, werr, nil)
				return
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			hc.fail(rerr, hc.tBody.failure())
			return
		}
	}
	if chunkedOut {
		_, _ = w.WriteString("0\r\n")
		_ = res.Body.Close() // populates res.Trailer
		for k, vv := range res.Trailer {
			if isHopByHop(k) {
				continue
			}
			for _, v := range vv {
				if validValue([]byte(v)) {
					_, _ = w.WriteString(k)
					_, _ = w.WriteString(": ")
					_, _ = w.WriteString(v)
					_, _ = w.WriteString("\r\n")
				}
			}
		}
		_, _ = w.WriteString("\r\n")
	}
}

// sendContinue answers "Expect: 100-continue" right before the body is
// read: the request was accepted (routed, within limits), so the client
// may send it. The Expect field itself is not forwarded. A retry sends
// the body it kept and asks the client for nothing.
func (hc *h1conn) sendContinue() {
	if hc.req.expect100 && hc.req.minor >= 1 {
		hc.req.expect100 = false
		_, _ = hc.w.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		_ = hc.w.Flush()
	}
}

// copyRequestBody streams the client's body to the upstream, re-encoding
// chunked framing, or sends the copy a retry kept. werr is a write error
// towards the upstream; berr a failure of the client's body (malformed,
// too large, client gone).
func (hc *h1conn) copyRequestBody(w *bufio.Writer, streamed bool) (werr, berr error) {
	chunked := hc.req.chunked
	num := &hc.num
	if streamed {
		num = new([24]byte) // the response is written meanwhile
	}
	if r := hc.tx.replay; r.isWhole() {
		if err := r.send(w, chunked, num); err != nil {
			return err, nil
		}
	} else if werr, berr = hc.streamRequestBody(w, chunked, num); werr != nil || berr != nil {
		return werr, berr
	}
	if chunked {
		_, _ = w.WriteString("0\r\n\r\n")
	}
	hc.st.bodyDone = true
	return w.Flush(), nil
}

// streamRequestBody copies the client's body into w as it arrives,
// keeping the copies a mirror and a retry want.
func (hc *h1conn) streamRequestBody(w *bufio.Writer, chunked bool, num *[24]byte) (werr, berr error) {
	src := &hc.body
	limit := hc.tx.limit
	var n int64
	for {
		p, err := src.next()
		if len(p) > 0 {
			n += int64(len(p))
			if limit > 0 && n > limit {
				return nil, &http.MaxBytesError{Limit: limit}
			}
			if hc.tx.mirror != nil {
				hc.tx.mirror.capture(p)
			}
			hc.tx.replay.capture(p)
			if chunked {
				_ = writeChunk(w, p, num)
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
		hc.bodyReadDeadline()
		if err := hc.rb.fill(); err != nil {
			return nil, hc.bodyReadError(err)
		}
	}
	hc.tx.mirror.complete()
	hc.tx.replay.complete()
	return nil, nil
}

// bodyReadError classifies a failed read of the client's body: a
// timeout (Options.BodyTimeout, ReadTimeout) is the client's fault (400),
// anything else means it went away (499).
func (hc *h1conn) bodyReadError(err error) error {
	if isTimeout(err) && !hc.hungUp.Load() {
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
			hc.hungUp.Store(true)
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
	hc.writeFields(resp.fields, false, false, nil)
	_, _ = hc.w.WriteString("\r\n")
	_ = hc.w.Flush()
}

// writeFields writes a response's end-to-end fields. With trailer, an
// announced Trailer field is kept (the body goes out chunked); with
// upgrade, the Upgrade field is kept (101).
func (hc *h1conn) writeFields(fields []hfield, trailer, upgrade bool, edit *HeaderEdit) {
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
		if edit != nil && edit.drops(bstr(f.name)) {
			continue
		}
		_, _ = w.Write(f.name)
		_, _ = w.WriteString(": ")
		_, _ = w.Write(f.value)
		_, _ = w.WriteString("\r\n")
	}
	edit.write(w)
}

func (hc *h1conn) writeResponseHead(resp *h1resp, noBody bool, kind bodyKind, chunkedOut bool) {
	hc.tx.status, hc.st.wroteHead = resp.status, true
	hc.writeStatusLine(resp.status)
	hc.writeFields(resp.fields, chunkedOut, false, hc.tx.responseEdit())
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
func (hc *h1conn) copyResponseBody(uc *upConn, src *bodySrc, chunkedOut bool) (uerr, cerr error) {
	w := hc.w
	tx := &hc.tx
	for {
		p, err := src.next()
		if len(p) > 0 {
			tx.bytes += int64(len(p))
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
func (hc *h1conn) upgrade(uc *upConn, resp *h1resp) bool {
	if hc.req.upgrade == nil {
		return false
	}
	st := &hc.st
	hc.tx.status, st.wroteHead = http.StatusSwitchingProtocols, true
	hc.writeStatusLine(http.StatusSwitchingProtocols)
	hc.writeFields(resp.fields, false, true, nil)
	_, _ = hc.w.WriteString("Connection: Upgrade\r\n\r\n")
	// Bytes the upstream sent right after its 101.
	if uc.rb.buffered() > 0 {
		_, _ = hc.w.Write(uc.rb.bytes())
		uc.rb.r = uc.rb.w
	}
	if err := hc.w.Flush(); err != nil {
		uc.close()
		st.keep = false
		return true
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
	uc.live.closed()
	return true
}

// splice copies between a client and an upstream connection in both
// directions, half-closing each side as its peer finishes, and closes
// both at the end. pending are client bytes already read. It returns the
// bytes sent to the client.
func splice(client net.Conn, pending []byte, upstream io.ReadWriteCloser) int64 {
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
	n, err := io.Copy(client, upstream)
	if cw, ok := client.(interface{ CloseWrite() error }); ok && err == nil {
		_ = cw.CloseWrite()
	} else {
		_ = client.Close()
	}
	<-done
	_ = client.Close()
	_ = upstream.Close()
	return n
}

// writeHeader writes a response header map's end-to-end fields, without
// framing (written by the caller).
func (hc *h1conn) writeHeader(h http.Header) {
	w := hc.w
	conn := h["Connection"]
	for k, vv := range h {
		if isHopByHop(k) || k == "Content-Length" || len(conn) > 0 && hasToken(conn, k) {
			continue
		}
		for _, v := range vv {
			if strings.ContainsAny(v, "\r\n\x00") {
				continue
			}
			_, _ = w.WriteString(k)
			_, _ = w.WriteString(": ")
			_, _ = w.WriteString(v)
			_, _ = w.WriteString("\r\n")
		}
	}
}

// upgradeTransport completes a protocol switch through the Transport.
func (hc *h1conn) upgradeTransport(res *http.Response, rwc io.ReadWriteCloser) {
	st := &hc.st
	hc.tx.status, st.wroteHead = http.StatusSwitchingProtocols, true
	hc.writeStatusLine(http.StatusSwitchingProtocols)
	hc.writeHeader(res.Header)
	if v := res.Header.Get("Upgrade"); v != "" && !strings.ContainsAny(v, "\r\n\x00") {
		_, _ = hc.w.WriteString("Upgrade: ")
		_, _ = hc.w.WriteString(v)
		_, _ = hc.w.WriteString("\r\n")
	}
	_, _ = hc.w.WriteString("Connection: Upgrade\r\n\r\n")
	st.keep = false
	if err := hc.w.Flush(); err != nil {
		_ = rwc.Close()
		return
	}
	hc.state.Store(connHijacked)
	var pending []byte
	if hc.rb.buffered() > 0 {
		pending = hc.rb.bytes()
	}
	_ = hc.conn.SetDeadline(time.Time{})
	splice(hc.conn, pending, rwc)
}

// h1BodyReader is the client's request body as an io.ReadCloser for the
// Transport, which may read it from its own goroutine, even after
// RoundTrip returned. stop ends that before the connection moves on.
type h1BodyReader struct {
	hc    *h1conn
	limit int64
	mu    sync.Mutex
	n     int64
	err   error
	done  bool
}

func (b *h1BodyReader) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return 0, io.ErrClosedPipe
	}
	if b.err != nil {
		return 0, b.err
	}
	hc := b.hc
	for {
		d, err := hc.body.nextMax(len(p))
		if len(d) > 0 {
			b.n += int64(len(d))
			if b.limit > 0 && b.n > b.limit {
				b.err = &http.MaxBytesError{Limit: b.limit}
				return 0, b.err
			}
			hc.tx.mirror.capture(d)
			hc.tx.replay.capture(d)
			return copy(p, d), nil
		}
		if err == io.EOF {
			hc.tx.mirror.complete()
			hc.tx.replay.complete()
			hc.st.bodyDone = true
			return 0, io.EOF
		}
		if err != nil {
			b.err = err
			return 0, err
		}
		if err := hc.rb.fill(); err != nil {
			b.err = hc.bodyReadError(err)
			return 0, b.err
		}
	}
}

func (b *h1BodyReader) Close() error { return nil }

// failure returns the client-side body error, if any.
func (b *h1BodyReader) failure() error {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// stop makes later reads fail without touching the connection, after
// interrupting one that waits for the client.
func (b *h1BodyReader) stop() {
	if b == nil {
		return
	}
	if !b.mu.TryLock() {
		// A read waits for the client: interrupt it.
		_ = b.hc.conn.SetReadDeadline(aLongTimeAgo)
		b.mu.Lock()
	}
	if b.done {
		b.mu.Unlock()
		return
	}
	b.done = true
	if !b.hc.st.bodyDone {
		b.hc.st.keep = false
	}
	b.mu.Unlock()
}
