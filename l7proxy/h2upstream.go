package l7proxy

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/textproto"
	"strconv"
	"sync"
	"time"
	"unsafe"
)

// HTTP/2 requests (served by net/http) to plain-HTTP upstreams are
// forwarded by forwardH1 over the fast engine's pooled HTTP/1.1 upstream
// connections rather than through an http.Transport: the request head is
// written straight from the http.Request, the response head is parsed by
// the engine's parser and copied once into the HTTP/2 response's header
// map, and bodies stream between the stream and the connection's
// buffers. No goroutine is started for a request without a large body,
// and the per-request scratch state is pooled.

// h2fwd is the scratch state of one forwarded HTTP/2 request.
type h2fwd struct {
	resp h1resp
	body bodySrc
	num  [24]byte
	strs []string
	// stop disarms the client-cancellation watch (context.AfterFunc);
	// nil while none is armed.
	stop func() bool
}

var h2fwds = sync.Pool{New: func() any { return new(h2fwd) }}

// forwardH1 forwards an HTTP/2 request to st.ep, an endpoint of a
// plain-HTTP upstream, over a pooled HTTP/1.1 connection. It has the
// fast engine's retry rules: a failed connect ejects the endpoint and an
// idempotent request is sent to another one; a keep-alive connection the
// endpoint closed while idle is replaced by a fresh one when nothing of
// the request can have been consumed.
func (p *Proxy) forwardH1(st *reqState, r *http.Request) {
	if !validRequestURI(r.Host) && r.Host != "" {
		writeError(st, r, http.StatusBadRequest)
		return
	}
	f := h2fwds.Get().(*h2fwd)
	abort := p.forwardH1With(st, r, f)
	f.strs = f.strs[:0]
	f.stop = nil
	h2fwds.Put(f)
	if abort {
		// As the Transport path does: reset the stream.
		panic(http.ErrAbortHandler)
	}
}

func (p *Proxy) forwardH1With(st *reqState, r *http.Request, f *h2fwd) (abort bool) {
	s := &st.pool.settings
	hasBody := r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody
	stale := 0
	var uc *upConn
	for attempt := 0; ; {
		ep := st.ep
		now := time.Now()
		if stale == 0 {
			uc = ep.getConn(now.UnixNano(), s.idleTimeout)
		}
		if uc == nil {
			var err error
			if uc, err = ep.dialUpstream(s.connectTimeout); err != nil {
				b := ep.eject()
				p.log.Warn("endpoint ejected after failed connect", "upstream", st.pool.name,
					"backend", ep.hostport, "backoff", b, "err", err)
				// Nothing of the request was read yet: an idempotent one
				// may go to another endpoint, body included.
				if attempt == 0 && idempotentMethod(r.Method) {
					if next := st.pool.pick(ep); next != nil {
						next.acquire()
						ep.release()
						st.ep = next
						st.retried = true
						attempt++
						continue
					}
				}
				p.errorHandler(st, r, err)
				return false
			}
		}
		st.upstreamStart = now
		retry, abort, err := p.exchangeH1(st, r, f, uc, hasBody)
		if !retry {
			if err == nil {
				ep.succeeded()
			}
			return abort
		}
		if stale < 2 {
			stale++
			uc = nil
			continue
		}
		p.errorHandler(st, r, err)
		return false
	}
}

func idempotentMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete, http.MethodTrace:
		return true
	}
	return false
}

// armCancel makes the client going away (the stream's context done)
// interrupt whatever waits on uc. It is armed only before a wait that may
// block, so a response that is already there costs nothing.
func (f *h2fwd) armCancel(ctx context.Context, uc *upConn) {
	if f.stop != nil {
		return
	}
	f.stop = context.AfterFunc(ctx, func() {
		_ = uc.conn.SetDeadline(aLongTimeAgo)
	})
}

// disarm reports whether uc is untouched by the cancellation watch.
func (f *h2fwd) disarm() bool {
	if f.stop == nil {
		return true
	}
	ok := f.stop()
	f.stop = nil
	return ok
}

// exchangeH1 runs one request/response on uc; see h1conn.exchange. Errors
// have been answered (or the stream marked for abort) unless retry is set,
// in which case uc turned out stale and is closed.
func (p *Proxy) exchangeH1(st *reqState, r *http.Request, f *h2fwd, uc *upConn, hasBody bool) (retry, abort bool, err error) {
	s := &st.pool.settings
	ctx := r.Context()
	p.writeRequestHeadH1(uc.w, r, st, f, hasBody)

	var bodyc chan bodyResult
	switch {
	case !hasBody:
		err = uc.w.Flush()
	case r.ContentLength > 0 && r.ContentLength <= seqBodyMax:
		var berr error
		if err, berr = copyBodyH1(uc.w, r, false, &f.num, false); err == nil && berr == nil {
			err = uc.w.Flush()
		}
		if berr != nil {
			uc.close()
			p.errorHandler(st, r, berr)
			return false, false, berr
		}
	default:
		if err = uc.w.Flush(); err == nil {
			// The body streams while the response is read: the upstream
			// may answer (or stream back) before the body ends.
			bodyc = make(chan bodyResult, 1)
			go func(num *[24]byte) {
				werr, berr := copyBodyH1(uc.w, r, r.ContentLength < 0, num, true)
				if berr != nil {
					uc.close() // unblock the response read: the request is broken
				}
				bodyc <- bodyResult{werr, berr}
			}(new([24]byte))
		}
	}
	if err != nil {
		uc.close()
		if uc.reused && !hasBody {
			return true, false, err
		}
		p.errorHandler(st, r, err)
		return false, false, err
	}

	// stopBody ends a body copy still running (it is then aborted) and
	// returns the client's body failure, if that is what ended it.
	stopBody := func(wait bool) (berr error, ok bool) {
		if bodyc == nil {
			return nil, true
		}
		var res bodyResult
		if wait {
			res = <-bodyc
		} else {
			select {
			case res = <-bodyc:
			default:
				uc.close()
				if rc := st.body.rc; rc != nil {
					_ = rc.Close() // interrupts a read waiting for the client
				}
				res = <-bodyc
				bodyc = nil
				return res.berr, false
			}
		}
		bodyc = nil
		return res.berr, res.werr == nil && res.berr == nil
	}

	resp := &f.resp
	var respHead []byte
	deadline := st.upstreamStart.Add(s.readTimeout)
	for interim := 0; ; interim++ {
		first := deadline
		if f.stop == nil && s.readTimeout > watchAfter {
			first = st.upstreamStart.Add(watchAfter)
		}
		uc.rb.timeout = 0
		_ = uc.conn.SetReadDeadline(first)
		head, herr := uc.rb.readHead(maxResponseHead, false)
		if herr != nil && first != deadline && isTimeout(herr) {
			_ = uc.conn.SetReadDeadline(deadline)
			f.armCancel(ctx, uc)
			head, herr = uc.rb.readHead(maxResponseHead, false)
		}
		if herr == nil {
			herr = parseResponse(head, resp)
		}
		if herr != nil {
			got := uc.rb.buffered() > 0
			berr, _ := stopBody(false)
			f.disarm()
			uc.close()
			if !got && uc.reused && !hasBody && ctx.Err() == nil && !isTimeout(herr) {
				return true, false, herr
			}
			if berr != nil {
				herr = berr
			}
			p.errorHandler(st, r, herr)
			return false, false, herr
		}
		if resp.status >= 200 || resp.status == http.StatusSwitchingProtocols {
			respHead = head
			break
		}
		// Interim responses are not forwarded, as on the Transport path.
		if interim >= maxInterim {
			stopBody(false)
			f.disarm()
			uc.close()
			p.errorHandler(st, r, errTooManyInterim)
			return false, false, errTooManyInterim
		}
	}
	if resp.status == http.StatusSwitchingProtocols {
		stopBody(false)
		f.disarm()
		uc.close()
		p.errorHandler(st, r, errUnexpectedUpgrade)
		return false, false, errUnexpectedUpgrade
	}

	kind := responseBodyKind(r.Method, resp)
	upKeep := resp.keepAlive() && kind != bodyUntilClose
	announced := copyResponseHeader(st.Header(), respHead, resp, kind == bodyChunked)
	st.WriteHeader(resp.status)

	f.body.reset(&uc.rb, kind, resp.contentLength, false, maxResponseHead)
	uc.rb.timeout = s.readTimeout
	uerr, cerr := p.copyResponseBodyH1(st, f, uc, ctx)
	if uerr == nil && cerr == nil && kind == bodyChunked && len(f.body.trailer) > 0 {
		setTrailers(st.Header(), f.body.trailer, announced)
	}
	berr, bodyOK := stopBody(uerr == nil && cerr == nil && !hasBodyPending(bodyc))
	if !bodyOK {
		upKeep = false
	}
	untouched := f.disarm()
	switch {
	case cerr != nil || uerr != nil:
		uc.close()
		if cerr != nil {
			st.err = cerr
		} else {
			st.err = uerr
			if berr != nil {
				st.err = berr
			}
			p.log.Debug("upstream error", "upstream", st.pool.name, "backend", st.ep.hostport, "err", uerr)
		}
		return false, true, nil
	}
	if upKeep && untouched {
		uc.reused = true
		st.ep.putConn(uc, time.Now().UnixNano(), s.idleTimeout)
	} else {
		uc.close()
	}
	return false, false, nil
}

// hasBodyPending reports whether a body copy is still running.
func hasBodyPending(c chan bodyResult) bool { return c != nil && len(c) == 0 }

type bodyResult struct{ werr, berr error }

// copyBodyH1 streams the request body to the upstream; werr is a write
// failure towards the upstream, berr a failure of the client's body.
// With flush every piece is sent at once (streams such as gRPC).
func copyBodyH1(w *bufio.Writer, r *http.Request, chunked bool, num *[24]byte, flush bool) (werr, berr error) {
	bp := copyBufs.Get().(*[copyBufSize]byte)
	defer copyBufs.Put(bp)
	for {
		n, err := r.Body.Read(bp[:])
		if n > 0 {
			if chunked {
				werr = writeChunk(w, bp[:n], num)
			} else {
				_, werr = w.Write(bp[:n])
			}
			if werr == nil && flush {
				werr = w.Flush()
			}
			if werr != nil {
				return werr, nil
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if chunked {
		_, _ = w.WriteString("0\r\n")
		for k, vv := range r.Trailer {
			if isHopByHop(k) {
				continue
			}
			for _, v := range vv {
				_, _ = w.WriteString(k)
				_, _ = w.WriteString(": ")
				_, _ = w.WriteString(v)
				_, _ = w.WriteString("\r\n")
			}
		}
		_, _ = w.WriteString("\r\n")
	}
	return w.Flush(), nil
}

// copyResponseBodyH1 streams the upstream's body into the HTTP/2
// response, flushing whenever it has to wait for the upstream so streams
// are not held back. uerr is an upstream failure, cerr a client one.
func (p *Proxy) copyResponseBodyH1(st *reqState, f *h2fwd, uc *upConn, ctx context.Context) (uerr, cerr error) {
	src := &f.body
	// The head is still in the response's buffer: before waiting for the
	// upstream, it goes out (a full-duplex stream answers only after the
	// client sent more).
	pending := true
	for {
		b, err := src.next()
		if len(b) > 0 {
			if _, werr := st.Write(b); werr != nil {
				return nil, werr
			}
			pending = true
			continue
		}
		if err == io.EOF {
			return nil, nil
		}
		if err != nil {
			return err, nil
		}
		if pending {
			if err := st.FlushError(); err != nil {
				return nil, err
			}
			pending = false
		}
		f.armCancel(ctx, uc)
		if err := uc.rb.fill(); err != nil {
			if err == io.EOF && src.kind == bodyUntilClose {
				return nil, nil
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err, nil
		}
	}
}

// copyResponseHeader copies the end-to-end fields of an upstream's
// response head into dst. The field strings are views of one copy of the
// head, so the whole header costs a handful of allocations. It returns
// the upstream's Trailer announcement (kept only for a chunked body,
// whose trailer can follow).
func copyResponseHeader(dst http.Header, head []byte, resp *h1resp, chunked bool) (announced []string) {
	if len(head) == 0 {
		return nil
	}
	arena := string(head)
	base := uintptr(unsafe.Pointer(unsafe.SliceData(head)))
	view := func(b []byte) string {
		if len(b) == 0 {
			return ""
		}
		off := int(uintptr(unsafe.Pointer(unsafe.SliceData(b))) - base)
		return arena[off : off+len(b)]
	}
	vals := make([]string, len(resp.fields))
	for i := range resp.fields {
		fl := &resp.fields[i]
		switch fl.kind {
		case hkOther, hkDate:
		case hkContentLength:
			if chunked {
				continue
			}
		case hkTrailer:
			if !chunked {
				continue
			}
		default:
			continue
		}
		k := view(fl.name)
		if !isCanonicalKey(fl.name) {
			k = textproto.CanonicalMIMEHeaderKey(k)
		}
		if fl.kind == hkOther && isHopByHop(k) {
			continue
		}
		vals[i] = view(fl.value)
		if old, ok := dst[k]; ok {
			dst[k] = append(old, vals[i])
		} else {
			dst[k] = vals[i : i+1 : i+1]
		}
	}
	return dst["Trailer"]
}

// setTrailers records a chunked body's trailer fields as the HTTP/2
// response's trailers.
func setTrailers(dst http.Header, raw []byte, announced []string) {
	for len(raw) > 0 {
		var line []byte
		line, raw = nextLine(raw)
		name, value, err := parseField(line)
		if err != nil || classify(name) != hkOther {
			continue
		}
		k := textproto.CanonicalMIMEHeaderKey(string(name))
		if isHopByHop(k) {
			continue
		}
		if len(announced) == 0 || !hasToken(announced, k) {
			k = http.TrailerPrefix + k
		}
		dst[k] = append(dst[k], string(value))
	}
}

// isCanonicalKey reports whether a field name already has the canonical
// form ("Content-Type"), which most servers send.
func isCanonicalKey(b []byte) bool {
	upper := true
	for _, c := range b {
		switch {
		case upper && 'a' <= c && c <= 'z':
			return false
		case !upper && 'A' <= c && c <= 'Z':
			return false
		}
		upper = c == '-'
	}
	return true
}

// writeRequestHeadH1 writes the HTTP/1.1 request head for an HTTP/2
// request: end-to-end fields, the X-Forwarded-* set (as setForwarded
// decides them) and the framing of the body.
func (p *Proxy) writeRequestHeadH1(w *bufio.Writer, r *http.Request, st *reqState, f *h2fwd, hasBody bool) {
	ci := st.ci
	_, _ = w.WriteString(r.Method)
	_ = w.WriteByte(' ')
	uri := r.RequestURI
	if !validRequestURI(uri) {
		uri = r.URL.RequestURI()
	}
	_, _ = w.WriteString(uri)
	_, _ = w.WriteString(" HTTP/1.1\r\nHost: ")
	if r.Host != "" {
		_, _ = w.WriteString(r.Host)
	} else {
		_, _ = w.WriteString(st.ep.hostport)
	}
	_, _ = w.WriteString("\r\n")
	h := r.Header
	for k, vv := range h {
		switch k {
		case "Host", "Content-Length", "Expect", hdrXFF, hdrXFProto, hdrXFHost, hdrXFPort, hdrXRealIP, hdrForwarded:
			continue
		}
		if isHopByHop(k) {
			continue
		}
		writeFieldLines(w, k, vv)
	}
	f.strs = f.strs[:0]
	if ci.trusted {
		f.strs = append(f.strs, h[hdrXFF]...)
	}
	_, _ = w.WriteString("X-Forwarded-For: ")
	for _, v := range f.strs {
		_, _ = w.WriteString(v)
		_, _ = w.WriteString(", ")
	}
	_, _ = w.WriteString(ci.peerStr)
	_, _ = w.WriteString("\r\nX-Real-Ip: ")
	if len(f.strs) > 0 {
		_, _ = w.WriteString(realClient(f.strs, ci.peerStr, p.opts.TrustedProxies))
	} else {
		_, _ = w.WriteString(ci.peerStr)
	}
	_, _ = w.WriteString("\r\nX-Forwarded-Proto: ")
	if v := h[hdrXFProto]; ci.trusted && len(v) > 0 {
		_, _ = w.WriteString(v[0])
	} else {
		_, _ = w.WriteString(ci.protoVal[0])
	}
	_, _ = w.WriteString("\r\nX-Forwarded-Host: ")
	if v := h[hdrXFHost]; ci.trusted && len(v) > 0 {
		_, _ = w.WriteString(v[0])
	} else {
		_, _ = w.WriteString(r.Host)
	}
	_, _ = w.WriteString("\r\n")
	if v := h[hdrXFPort]; ci.trusted && len(v) > 0 {
		writeFieldLines(w, hdrXFPort, v)
	} else {
		_, _ = w.WriteString("X-Forwarded-Port: ")
		_, _ = w.WriteString(ci.portVal[0])
		_, _ = w.WriteString("\r\n")
	}
	if v := h[hdrForwarded]; ci.trusted && len(v) > 0 {
		writeFieldLines(w, hdrForwarded, v)
	}
	if hasToken(h["Te"], "trailers") {
		// gRPC needs it end to end; it is hop-by-hop otherwise.
		_, _ = w.WriteString("Te: trailers\r\n")
	}
	switch {
	case !hasBody:
		if r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch {
			_, _ = w.WriteString("Content-Length: 0\r\n")
		}
	case r.ContentLength > 0:
		_, _ = w.WriteString("Content-Length: ")
		_, _ = w.Write(strconv.AppendInt(f.num[:0], r.ContentLength, 10))
		_, _ = w.WriteString("\r\n")
	default:
		_, _ = w.WriteString("Transfer-Encoding: chunked\r\n")
	}
	_, _ = w.WriteString("\r\n")
}

func writeFieldLines(w *bufio.Writer, k string, vv []string) {
	for _, v := range vv {
		_, _ = w.WriteString(k)
		_, _ = w.WriteString(": ")
		_, _ = w.WriteString(v)
		_, _ = w.WriteString("\r\n")
	}
}

// validRequestURI reports whether an HTTP/2 :path can go into a request
// line as it is: no whitespace or control bytes.
func validRequestURI(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}
