package l7proxy

import (
	"context"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"time"
)

// forwardTransport serves a fast-engine request whose upstream speaks h2c
// or TLS: the request goes through the endpoint's http.Transport (with
// the same retry and ejection as the stdlib engine) and the response is
// written back in HTTP/1.1 by the engine. These upstreams are rare
// (gRPC, HTTPS pods), so this path favours reuse over allocations.
func (hc *h1conn) forwardTransport(limit int64) {
	st := &hc.st
	q := &hc.req
	uri := string(q.uri)
	if q.slash {
		uri = "/" + uri
	}
	u, err := url.ParseRequestURI(uri)
	if err != nil {
		hc.writeError(http.StatusBadRequest)
		return
	}
	h := make(http.Header, len(q.fields)+6)
	for i := range q.fields {
		f := &q.fields[i]
		switch f.kind {
		case hkOther, hkDate, hkXFF, hkXFProto, hkXFHost, hkXFPort, hkXRealIP, hkForwarded:
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
	req := &http.Request{
		Method:     methodString(q.method),
		URL:        u,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     h,
		Host:       string(q.host),
	}
	// setForwarded reads the client's values from in and writes ours into
	// out; both may share the map, it reads each value before replacing it.
	setForwarded(req, req, hc.ci, hc.p.opts.TrustedProxies)
	var body *h1BodyReader
	if q.hasBody() {
		hc.sendContinue()
		body = &h1BodyReader{hc: hc, limit: limit}
		req.Body = body
		req.ContentLength = q.contentLength
		if q.chunked {
			req.ContentLength = -1
		}
	}
	defer body.stop()
	rs := &reqState{Context: context.Background(), pool: st.pool, ep: st.ep, log: hc.p.log}
	res, err := rs.roundTrip(req)
	st.ep, st.upstreamStart = rs.ep, rs.upstreamStart
	if err != nil {
		hc.fail(err, body.failure())
		return
	}
	defer res.Body.Close()
	if res.StatusCode == http.StatusSwitchingProtocols {
		rwc, ok := res.Body.(io.ReadWriteCloser)
		if q.upgrade == nil || !ok {
			hc.fail(errUnexpectedUpgrade, nil)
			return
		}
		hc.upgradeTransport(res, rwc)
		return
	}
	noBody := req.Method == http.MethodHead || res.StatusCode == http.StatusNoContent ||
		res.StatusCode == http.StatusNotModified
	chunkedOut := false
	w := hc.w
	st.status, st.wroteHead = res.StatusCode, true
	hc.writeStatusLine(res.StatusCode)
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
		body.stop()
		return
	}
	bp := copyBufs.Get().(*[copyBufSize]byte)
	defer copyBufs.Put(bp)
	for {
		n, rerr := res.Body.Read(bp[:])
		if n > 0 {
			st.bytes += int64(n)
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
				st.err = werr
				st.status = StatusClientClosed
				hc.clientGone(werr)
				return
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			hc.fail(rerr, body.failure())
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
				if !validValue([]byte(v)) {
					continue
				}
				_, _ = w.WriteString(k)
				_, _ = w.WriteString(": ")
				_, _ = w.WriteString(v)
				_, _ = w.WriteString("\r\n")
			}
		}
		_, _ = w.WriteString("\r\n")
	}
	body.stop()
}

// writeHeader writes a response header map's end-to-end fields, without
// framing (the engine writes its own).
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
	st.status, st.wroteHead = http.StatusSwitchingProtocols, true
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
			return copy(p, d), nil
		}
		if err == io.EOF {
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
