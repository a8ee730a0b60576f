package l7proxy

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// The HTTP/2 client side: each stream of the HTTP/2 server (h2server.go)
// is one h2stream through the pipeline. The request is the stream's
// pooled http.Request; the response is written into the stream's frames
// (h2stream is the http.ResponseWriter the shared helpers write to).
// Towards plain-HTTP upstreams the request head is written straight from
// the request onto a pooled HTTP/1.1 connection and the response head is
// parsed once into the stream's header map; towards h2c and TLS
// upstreams the request goes through the endpoint's Transport.

// h2stream is one HTTP/2 request through the pipeline.
type h2stream struct {
	tx  txn
	p   *Proxy
	st  *h2srvStream
	r   *http.Request
	ci  *connInfo
	fwd forwarded

	wroteHeader bool
	body        bodyReader

	x *h2scratch // pooled; for HTTP/1.1 upstreams
	// transport: the request went to an http.Transport, which may still
	// hold it; mirrored: a mirror holds its fields. Either keeps the
	// stream's storage from being reused.
	transport, mirrored bool

	// out is the outbound request towards a Transport, built once.
	out    *http.Request
	outURL url.URL
}

// h2scratch is the pooled scratch state of a stream forwarded over an
// HTTP/1.1 upstream connection.
type h2scratch struct {
	h1scratch
}

var h2scratches = sync.Pool{New: func() any { return new(h2scratch) }}

// bodyReader wraps the inbound body to tell a broken client body (bad
// framing, oversized) apart from an upstream failure.
type bodyReader struct {
	rc  io.ReadCloser
	err error
	// mirror gets a copy of the body, if the request is mirrored; tx
	// is the stream's, whose replay keeps one for retries.
	mirror *mirrorReq
	tx     *txn
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil && err != io.EOF && b.err == nil && !b.tx.replay.isWhole() {
		// A body kept whole for retries is not broken by a read
		// interrupted after its end.
		b.err = err
	}
	if b.mirror != nil {
		b.mirror.capture(p[:n])
		if err == io.EOF {
			b.mirror.complete()
		}
	}
	if r := b.tx.replay; r != nil {
		r.capture(p[:n])
		switch {
		case err == io.EOF:
			r.complete()
		case err != nil:
			r.fail()
		}
	}
	return n, err
}

// Close does not close the inbound body: the transport closes request
// bodies on errors, possibly after RoundTrip returned, while the stream
// still owns the body.
func (b *bodyReader) Close() error { return nil }

// Header, WriteHeader and Write implement http.ResponseWriter.
func (s *h2stream) Header() http.Header { return s.st.resp }

func (s *h2stream) WriteHeader(code int) {
	if s.wroteHeader || code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		return // interim responses are not forwarded
	}
	s.tx.status = code
	s.wroteHeader = true
	s.st.writeHeader(code)
}

func (s *h2stream) Write(b []byte) (int, error) {
	if !s.wroteHeader {
		s.WriteHeader(http.StatusOK)
	}
	if s.r.Method == http.MethodHead {
		return len(b), nil
	}
	n, err := s.st.write(b)
	s.tx.bytes += int64(n)
	return n, err
}

// FlushError lets streamed responses (gRPC, server-sent events) through
// without buffering.
func (s *h2stream) FlushError() error {
	if !s.wroteHeader {
		s.WriteHeader(http.StatusOK)
	}
	return s.st.flush()
}

// serve runs the stream's request through the pipeline.
func (s *h2stream) serve(st *h2srvStream) {
	p := st.c.p
	r := &st.req
	*s = h2stream{p: p, st: st, r: r, ci: st.c.ci}
	s.tx = txn{start: time.Now(), series: p.notFound}
	defer s.finish()
	if st.tooLarge {
		writeError(s, r, http.StatusRequestHeaderFieldsTooLarge)
		return
	}

	if s.ci.trusted {
		s.tx.id.takeHeader(r.Header)
	}
	code := p.decide(&s.tx, p.state.Load(), s.ci, s, r.Host, r.URL.Path, r.ContentLength)
	if code == 0 && s.tx.pool.settings.protocol == ProtocolHTTP && r.Host != "" && !validRequestURI(r.Host) {
		code = http.StatusBadRequest
	}
	if code == 0 && r.URL.Path == "*" {
		code = http.StatusBadRequest
	}
	switch {
	case code == 0:
	case s.tx.location != "" || s.tx.local != nil:
		h := s.Header()
		if s.tx.location != "" {
			h["Location"] = []string{s.tx.location}
		}
		for _, f := range s.tx.local {
			h[f.Name] = append(h[f.Name], f.Value)
		}
		s.WriteHeader(code)
		return
	default:
		writeError(s, r, code)
		return
	}
	if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
		s.body.rc, s.body.tx = r.Body, &s.tx
		if s.tx.limit > 0 && r.ContentLength < 0 {
			// A declared length is checked against the DATA frames;
			// only bodies of unknown length need counting.
			s.body.rc = &limitedBody{rc: r.Body, limit: s.tx.limit}
		}
	}
	s.fwd.reset(s.ci)
	s.fwd.takeHeader(r.Header)
	s.fwd.complete(s.ci, r.Host, p.opts.TrustedProxies)
	p.forward(s, &s.tx)
	if s.x != nil {
		s.x.resp.fields = s.x.resp.fields[:0]
		h2scratches.Put(s.x)
		s.x = nil
	}
}

// limitedBody fails a body of unknown length once it passes the limit.
type limitedBody struct {
	rc       io.ReadCloser
	limit, n int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if b.n += int64(n); b.n > b.limit {
		_ = b.rc.Close()
		return 0, &http.MaxBytesError{Limit: b.limit}
	}
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }

// deadlinePassed reports whether the request carries a gRPC deadline
// (grpc-timeout) that has passed.
func (s *h2stream) deadlinePassed() bool {
	v, ok := s.headerValue("Grpc-Timeout")
	if !ok {
		return false
	}
	d, ok := grpcTimeout(v)
	return ok && time.Since(s.tx.start) >= d
}

// isGRPC reports a gRPC request (its content type).
func (s *h2stream) isGRPC() bool {
	v, _ := s.headerValue("Content-Type")
	return strings.HasPrefix(v, "application/grpc")
}

// grpcTimeout parses a grpc-timeout value: up to 8 digits and a unit.
func grpcTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	unit := map[byte]time.Duration{'H': time.Hour, 'M': time.Minute, 'S': time.Second,
		'm': time.Millisecond, 'u': time.Microsecond, 'n': time.Nanosecond}[v[len(v)-1]]
	if unit == 0 {
		return 0, false
	}
	return time.Duration(n) * unit, true
}

// reusable reports whether nothing but the stream refers to its request
// any more.
func (s *h2stream) reusable() bool { return !s.transport && !s.mirrored }

// ctx is the context failStatus consults: done once the client is gone.
func (s *h2stream) ctx() context.Context { return clientCtx{&s.st.gone} }

func (s *h2stream) headerValue(name string) (string, bool) {
	if v := s.r.Header[name]; len(v) > 0 {
		return v[0], true
	}
	return "", false
}

func (s *h2stream) rawQuery() string   { return s.r.URL.RawQuery }
func (s *h2stream) requestURI() string { return s.r.URL.RequestURI() }

// finish accounts for the stream.
func (s *h2stream) finish() {
	tx := &s.tx
	if tx.status == 0 || s.st.aborted {
		if s.gone() {
			tx.status = StatusClientClosed
		} else if tx.status == 0 {
			tx.status = http.StatusOK
		}
	}
	var rl requestLine
	if s.p.access != nil || s.p.tracingRequests() {
		r := s.r
		rl = requestLine{client: s.ci.peerStr, method: r.Method, host: r.Host, path: r.URL.Path, proto: r.Proto, ci: s.ci}
	}
	s.p.finish(tx, time.Now(), &rl)
}

func (s *h2stream) idempotent() bool { return idempotentMethod(s.r.Method) }
func (s *h2stream) gone() bool       { return s.st.gone.Load() }
func (s *h2stream) replayable() bool { return s.body.rc == nil || s.tx.replay.isWhole() }
func (s *h2stream) method() string   { return s.r.Method }

func (s *h2stream) requestBody() (bool, int64) { return s.body.rc != nil, s.r.ContentLength }

func (s *h2stream) fail(err, bodyErr error) {
	if bodyErr == nil {
		bodyErr = s.body.err
	}
	code, err := failStatus(s.ctx(), err, bodyErr)
	s.tx.err = err
	if code == StatusClientClosed {
		s.tx.status, s.wroteHeader = code, true
		return
	}
	s.p.log.Debug("upstream error", "upstream", s.tx.pool.name, "backend", s.tx.ep.hostport, "status", code, "err", err)
	if !s.wroteHeader {
		writeError(s, s.r, code)
	} else {
		s.st.aborted = true
	}
}

// abort ends a response that broke under way: the stream is reset, so
// the client does not take a half-sent response for complete.
func (s *h2stream) abort(uerr, cerr, bodyErr error) {
	s.st.aborted = true
	if cerr != nil {
		s.tx.err = cerr
		return
	}
	s.tx.err = uerr
	if bodyErr != nil {
		s.tx.err = bodyErr
	}
	s.p.log.Debug("upstream error", "upstream", s.tx.pool.name, "backend", s.tx.ep.hostport, "err", uerr)
}

func (s *h2stream) scratch() *h1scratch {
	if s.x == nil {
		s.x = h2scratches.Get().(*h2scratch)
	}
	return &s.x.h1scratch
}

// writeRequestHead writes the HTTP/1.1 request head for the stream:
// end-to-end fields, the forwarded set and the framing of the body.
func (s *h2stream) writeRequestHead(w *bufio.Writer, ep *endpoint) {
	r := s.r
	edit, rw := s.tx.requestEdits()
	_, _ = w.WriteString(r.Method)
	_ = w.WriteByte(' ')
	uri := r.RequestURI
	if rw != nil && rw.Path != nil {
		uri = s.tx.rewrittenTarget(r.URL.RawQuery)
	} else if !validRequestURI(uri) {
		uri = r.URL.RequestURI()
	}
	_, _ = w.WriteString(uri)
	_, _ = w.WriteString(" HTTP/1.1\r\nHost: ")
	switch {
	case rw != nil && rw.Hostname != "":
		_, _ = w.WriteString(rw.Hostname)
	case r.Host != "":
		_, _ = w.WriteString(r.Host)
	default:
		_, _ = w.WriteString(ep.hostport)
	}
	_, _ = w.WriteString("\r\n")
	h := r.Header
	for k, vv := range h {
		switch k {
		case "Host", "Content-Length", "Expect", hdrXFF, hdrXFProto, hdrXFHost, hdrXFPort, hdrXRealIP, hdrForwarded, hdrRequestID:
			continue
		}
		if isHopByHop(k) || edit != nil && edit.drops(k) {
			continue
		}
		writeFieldLines(w, k, vv)
	}
	edit.write(w)
	s.fwd.write(w)
	if !edit.drops(hdrRequestID) {
		// A route filter that sets or removes the ID wins, as on the
		// other upstream kinds.
		s.tx.id.writeField(w)
	}
	if hasToken(h["Te"], "trailers") {
		// gRPC needs it end to end; it is hop-by-hop otherwise.
		_, _ = w.WriteString("Te: trailers\r\n")
	}
	switch {
	case s.body.rc == nil:
		if r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch {
			_, _ = w.WriteString("Content-Length: 0\r\n")
		}
	case r.ContentLength > 0:
		_, _ = w.WriteString("Content-Length: ")
		_, _ = w.Write(strconv.AppendInt(s.x.num[:0], r.ContentLength, 10))
		_, _ = w.WriteString("\r\n")
	default:
		_, _ = w.WriteString("Transfer-Encoding: chunked\r\n")
	}
	_, _ = w.WriteString("\r\n")
}

func (s *h2stream) beginBody() bodyPlan {
	switch {
	case s.body.rc == nil:
		return planNone
	case s.r.ContentLength > 0 && s.r.ContentLength <= seqBodyMax:
		return planSequential
	}
	return planStreamed
}

// copyRequestBody streams the request body to the upstream, chunked when
// its length is unknown, or the copy a retry kept. Streamed, every piece
// is sent at once (gRPC).
func (s *h2stream) copyRequestBody(w *bufio.Writer, streamed bool) (werr, bodyErr error) {
	num := &s.x.num
	if streamed {
		num = new([24]byte) // the response is written meanwhile
	}
	chunked := s.r.ContentLength < 0
	var src io.Reader = &s.body
	if r := s.tx.replay; r.isWhole() {
		src = r.reader()
	}
	bp := copyBufs.Get().(*[copyBufSize]byte)
	defer copyBufs.Put(bp)
	for {
		n, err := src.Read(bp[:])
		if n > 0 {
			if chunked {
				werr = writeChunk(w, bp[:n], num)
			} else {
				_, werr = w.Write(bp[:n])
			}
			if werr == nil && streamed {
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
		for k, vv := range s.r.Trailer {
			if !isHopByHop(k) {
				writeFieldLines(w, k, vv)
			}
		}
		_, _ = w.WriteString("\r\n")
	}
	return w.Flush(), nil
}

func (s *h2stream) interruptBody() {
	if rc := s.body.rc; rc != nil {
		_ = rc.Close() // interrupts a read waiting for the client
	}
}

// A stream's response can end before its request body: the body copy is
// then cut rather than waited for.
func (s *h2stream) waitsForBody() bool          { return false }
func (s *h2stream) bodyDone() bool              { return true }
func (s *h2stream) canWatch(streamed bool) bool { return true }

// watch makes a client reset (or the connection's end) interrupt
// whatever waits on uc. It stays armed until release, so a response that
// is already there costs nothing.
func (s *h2stream) watch(uc *upConn) { s.st.watch(uc) }

func (s *h2stream) unwatch() {}

func (s *h2stream) release(*upConn) bool { return s.st.unwatch() }

// Interim responses are not forwarded to HTTP/2 clients, nor protocol
// switches (which HTTP/2 does not have).
func (s *h2stream) interim(*h1resp)               {}
func (s *h2stream) upgrade(*upConn, *h1resp) bool { return false }
func (s *h2stream) bodyError() error              { return s.body.err }

// prepareMirror gives a mirror the stream's end-to-end fields and the
// forwarded set; the body is captured as it is read.
func (s *h2stream) prepareMirror(m *mirrorReq) {
	s.mirrored = true
	r := s.r
	h := make(http.Header, len(r.Header)+5)
	copyEndToEnd(h, r.Header)
	s.fwd.setHeader(h)
	s.tx.id.setHeader(h)
	var n int64
	if s.body.rc != nil {
		n = r.ContentLength
		s.body.mirror = m
	}
	uri := r.RequestURI
	if !validRequestURI(uri) {
		uri = r.URL.RequestURI()
	}
	m.prepare(&s.tx, r.Method, r.Host, uri, r.URL.RawQuery, h, n)
}

// respondH1 copies an HTTP/1.1 upstream's response into the stream,
// flushing whenever it has to wait for the upstream so streams are not
// held back.
func (s *h2stream) respondH1(uc *upConn, resp *h1resp, head []byte, kind bodyKind, src *bodySrc) (uerr, cerr error) {
	var announced []string
	if s.tx.responseEdit() == nil && kind != bodyChunked {
		// Nothing to edit and no trailers: the head goes out as parsed,
		// without a header map. Its fields are views of the upstream
		// connection's buffer, so it is sent now.
		s.tx.status, s.wroteHeader = resp.status, true
		if err := s.st.sendHead(resp, kind == bodyNone); err != nil {
			return nil, err
		}
	} else {
		announced = copyResponseHeader(s.Header(), head, resp, kind == bodyChunked)
		s.tx.responseEdit().apply(s.Header())
		s.WriteHeader(resp.status)
	}
	// The head is still in the response's buffer: before waiting for the
	// upstream, it goes out (a full-duplex stream answers only after the
	// client sent more).
	pending := true
	for {
		b, err := src.next()
		if len(b) > 0 {
			if _, werr := s.Write(b); werr != nil {
				return nil, werr
			}
			pending = true
			continue
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err, nil
		}
		if pending {
			if err := s.FlushError(); err != nil {
				return nil, err
			}
			pending = false
		}
		s.watch(uc)
		if err := uc.rb.fill(); err != nil {
			if err == io.EOF && src.kind == bodyUntilClose {
				break
			}
			if s.gone() {
				return nil, errClientReset
			}
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err, nil
		}
	}
	if kind == bodyChunked && len(src.trailer) > 0 {
		setTrailers(s.Header(), src.trailer, announced)
	}
	return nil, nil
}

// transportRequest builds the outbound request once: the stream's
// end-to-end fields (values shared, not cloned: nothing modifies them in
// place) and the forwarded set.
func (s *h2stream) transportRequest() (*http.Request, error) {
	if s.out != nil {
		return s.out, nil
	}
	r := s.r
	s.transport = true
	out := new(http.Request)
	*out = *r
	// The client resetting the stream cancels the exchange.
	out = out.WithContext(s.st.context())
	s.outURL = *r.URL
	out.URL = &s.outURL
	out.RequestURI = ""
	out.Close = false
	out.Header = make(http.Header, len(r.Header)+5)
	copyEndToEnd(out.Header, r.Header)
	if hasToken(r.Header["Te"], "trailers") {
		out.Header["Te"] = teTrailers
	}
	if _, ok := out.Header["User-Agent"]; !ok {
		// Keep the transport from adding its own.
		out.Header["User-Agent"] = emptyValue
	}
	if s.body.rc == nil {
		out.Body = nil // lets the transport retry on a stale keep-alive connection
	} else {
		out.Body = &s.body
	}
	s.fwd.setHeader(out.Header)
	s.tx.id.setHeader(out.Header)
	edit, rw := s.tx.requestEdits()
	edit.apply(out.Header)
	if rw != nil && rw.Path != nil {
		target := s.tx.rewrittenTarget(r.URL.RawQuery)
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return nil, badRequest("request target")
		}
		s.outURL.Path, s.outURL.RawPath = u.Path, u.RawPath
	}
	if rw != nil && rw.Hostname != "" {
		out.Host = rw.Hostname
	}
	s.out = out
	return out, nil
}

// respondTransport copies a Transport's response into the stream.
func (s *h2stream) respondTransport(res *http.Response) {
	if res.StatusCode == http.StatusSwitchingProtocols {
		res.Body.Close()
		s.fail(errUnexpectedUpgrade, nil)
		return
	}
	dst := s.Header()
	copyEndToEnd(dst, res.Header)
	s.tx.responseEdit().apply(dst)
	if n := len(res.Trailer); n > 0 {
		dst["Trailer"] = []string{joinKeys(res.Trailer)}
	}
	s.WriteHeader(res.StatusCode)
	if err := s.copyBody(res); err != nil {
		res.Body.Close()
		s.tx.err = err
		s.st.aborted = true
		return
	}
	res.Body.Close() // populates res.Trailer
	if len(res.Trailer) > 0 {
		announced := dst["Trailer"]
		for k, vv := range res.Trailer {
			if len(announced) == 0 || !hasToken(announced, k) {
				k = http.TrailerPrefix + k
			}
			dst[k] = vv
		}
	}
}

// copyBody streams a Transport's response body to the client. Bodies of
// unknown length (chunked, HTTP/2 streams such as gRPC) and event streams
// are flushed after every read so streaming works through the proxy.
func (s *h2stream) copyBody(res *http.Response) error {
	flush := res.ContentLength == -1 || isEventStream(res.Header["Content-Type"])
	bp := copyBufs.Get().(*[copyBufSize]byte)
	defer copyBufs.Put(bp)
	buf := bp[:]
	for {
		n, rerr := res.Body.Read(buf)
		if n > 0 {
			if _, werr := s.Write(buf[:n]); werr != nil {
				return werr
			}
			if flush {
				if err := s.FlushError(); err != nil {
					return err
				}
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

var (
	teTrailers = []string{"trailers"}
	emptyValue = []string{""}
)

func isEventStream(ct []string) bool {
	if len(ct) == 0 {
		return false
	}
	v, _, _ := strings.Cut(ct[0], ";")
	return strings.EqualFold(strings.TrimSpace(v), "text/event-stream")
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
