package l7proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"
)

// handler serves the requests of one listener kind (plain or TLS).
type handler struct {
	p   *Proxy
	tls bool
}

type stateKey struct{}

// reqState is everything the proxy tracks about one request. It doubles as
// the http.ResponseWriter given to the ReverseProxy (to record status and
// bytes) and as the outbound request's context (so the transport finds the
// chosen endpoint), which saves allocations on the hot path.
type reqState struct {
	context.Context
	w   http.ResponseWriter
	in  *http.Request
	ci  *connInfo
	log *slog.Logger

	series  *series
	up      *Upstream
	ingress string
	pool    *pool
	ep      *endpoint // acquired; released when the request ends
	retried bool

	status        int
	wroteHeader   bool
	bytes         int64
	upstreamStart time.Time
	err           error
	body          bodyReader

	// out and outURL are the outbound request of the forwarding path,
	// embedded to save two allocations per request.
	out    http.Request
	outURL url.URL
}

// bodyReader wraps the inbound body to tell a broken client body (bad
// chunking, oversized) apart from an upstream failure. It lives inside
// reqState, so wrapping costs no allocation.
type bodyReader struct {
	rc  io.ReadCloser
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	return n, err
}

// Close does not close the inbound body: the transport closes request
// bodies on errors, possibly after RoundTrip returned, while the server
// still owns the body (as httputil.ReverseProxy also guards against).
func (b *bodyReader) Close() error { return nil }

// Value makes the state reachable from the outbound request's context.
func (s *reqState) Value(key any) any {
	if key == (stateKey{}) {
		return s
	}
	return s.Context.Value(key)
}

func stateFrom(ctx context.Context) *reqState {
	if s, ok := ctx.(*reqState); ok {
		return s
	}
	s, _ := ctx.Value(stateKey{}).(*reqState)
	return s
}

// Header, WriteHeader and Write implement http.ResponseWriter.
func (s *reqState) Header() http.Header { return s.w.Header() }

func (s *reqState) WriteHeader(code int) {
	if !s.wroteHeader && (code < 100 || code > 199 || code == http.StatusSwitchingProtocols) {
		s.status = code
		s.wroteHeader = true
	}
	s.w.WriteHeader(code)
}

func (s *reqState) Write(b []byte) (int, error) {
	if !s.wroteHeader {
		s.status, s.wroteHeader = http.StatusOK, true
	}
	n, err := s.w.Write(b)
	s.bytes += int64(n)
	return n, err
}

// FlushError lets streamed responses (gRPC, server-sent events) through
// without buffering.
func (s *reqState) FlushError() error {
	switch f := s.w.(type) {
	case interface{ FlushError() error }:
		return f.FlushError()
	case http.Flusher:
		f.Flush()
		return nil
	}
	return http.ErrNotSupported
}

// Unwrap gives http.ResponseController (used by ReverseProxy for
// upgrades) the server's writer, which can be hijacked.
func (s *reqState) Unwrap() http.ResponseWriter { return s.w }

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := h.p
	start := time.Now()
	ctx := r.Context()
	st := &reqState{Context: ctx, w: w, in: r, series: p.notFound, log: p.log}
	st.ci = connInfoFrom(ctx, r, p.opts.TrustedProxies)
	defer p.finish(st, start)

	if r.Method == http.MethodConnect {
		writeError(st, r, http.StatusMethodNotAllowed)
		return
	}
	if hasDotSegment(r.URL.Path) {
		writeError(st, r, http.StatusBadRequest)
		return
	}
	cur := p.state.Load()
	m, ok := cur.table.Match(r.Host, r.URL.Path)
	if !ok {
		writeError(st, r, http.StatusNotFound)
		return
	}
	st.up, st.ingress = m.Upstream, m.Ingress
	st.series = p.series.get(m.Ingress, m.Upstream)
	if !h.tls && m.Options.SSLRedirect {
		p.redirect(st, r)
		return
	}
	if m.Upstream == nil {
		writeError(st, r, http.StatusServiceUnavailable)
		return
	}
	pl := cur.pools[m.Upstream.Name]
	if pl == nil {
		writeError(st, r, http.StatusServiceUnavailable)
		return
	}
	ep := pl.pick(nil)
	if ep == nil {
		writeError(st, r, http.StatusServiceUnavailable)
		return
	}
	limit := m.Options.MaxBodyBytes
	if limit == 0 {
		limit = p.opts.DefaultMaxBodyBytes
	}
	if limit > 0 {
		if r.ContentLength > limit {
			writeError(st, r, http.StatusRequestEntityTooLarge)
			return
		}
		// A declared length is enforced by the server's body reader;
		// only bodies of unknown length need counting.
		if r.ContentLength < 0 && r.Body != nil && r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(w, r.Body, limit)
		}
	}
	if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
		st.body.rc = r.Body
		r.Body = &st.body
	}
	if r.ProtoMajor == 1 && len(r.TransferEncoding) > 0 {
		// net/http lets Transfer-Encoding override a Content-Length
		// sent with it (RFC 9112 §6.3). An intermediary in front of us
		// may have framed the message by Content-Length instead, so the
		// connection is not trusted for a next request.
		st.Header()["Connection"] = connClose
	}
	ep.acquire()
	st.pool, st.ep = pl, ep
	if len(r.Header["Upgrade"]) > 0 && r.ProtoMajor == 1 {
		// Protocol switches (WebSocket) need the hijacking dance that
		// ReverseProxy implements; they are rare, so its allocations
		// do not matter.
		p.rp.ServeHTTP(st, r.WithContext(st))
		return
	}
	if p.fast != nil && r.ProtoMajor == 2 && pl.settings.protocol == ProtocolHTTP {
		p.forwardH1(st, r)
		return
	}
	p.forward(st, r)
}

// forward is the common path: one request, one response, over the
// endpoint's pooled connections. It does what httputil.ReverseProxy does
// for such requests (hop-by-hop headers, trailers, streaming flushes,
// aborting a response whose upstream broke) with far fewer allocations:
// the outbound request lives in reqState and header values are shared
// rather than cloned, as nothing modifies them in place.
func (p *Proxy) forward(st *reqState, r *http.Request) {
	out := &st.out
	*out = *r // also carries r's context: the client going away cancels
	st.outURL = *r.URL
	out.URL = &st.outURL
	out.RequestURI = ""
	out.Close = false
	out.Header = make(http.Header, len(r.Header)+5)
	copyEndToEnd(out.Header, r.Header)
	if hasToken(r.Header["Te"], "trailers") {
		// gRPC needs it end to end; it is hop-by-hop otherwise.
		out.Header["Te"] = teTrailers
	}
	if _, ok := out.Header["User-Agent"]; !ok {
		// Keep the transport from adding its own.
		out.Header["User-Agent"] = emptyValue
	}
	if r.ContentLength == 0 {
		out.Body = nil // lets the transport retry on a stale keep-alive connection
	}
	setForwarded(out, r, st.ci, p.opts.TrustedProxies)

	res, err := st.roundTrip(out)
	if err != nil {
		p.errorHandler(st, out, err)
		return
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		// Not asked for: this path never forwards Upgrade.
		res.Body.Close()
		p.errorHandler(st, out, errUnexpectedUpgrade)
		return
	}
	dst := st.Header()
	copyEndToEnd(dst, res.Header)
	if n := len(res.Trailer); n > 0 {
		dst["Trailer"] = []string{joinKeys(res.Trailer)}
	}
	st.WriteHeader(res.StatusCode)

	if err := p.copyBody(st, res); err != nil {
		res.Body.Close()
		st.err = err
		// A half-sent response must not look complete to the client:
		// abort the connection (or stream) as ReverseProxy does.
		panic(http.ErrAbortHandler)
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

var (
	teTrailers           = []string{"trailers"}
	emptyValue           = []string{""}
	errUnexpectedUpgrade = errors.New("upstream switched protocols without being asked")
)

// copyBody streams the response body to the client. Bodies of unknown
// length (chunked, HTTP/2 streams such as gRPC) and event streams are
// flushed after every read so streaming works through the proxy.
func (p *Proxy) copyBody(st *reqState, res *http.Response) error {
	flush := res.ContentLength == -1 || isEventStream(res.Header["Content-Type"])
	bp := copyBufs.Get().(*[copyBufSize]byte)
	defer copyBufs.Put(bp)
	buf := bp[:]
	for {
		n, rerr := res.Body.Read(buf)
		if n > 0 {
			if _, werr := st.Write(buf[:n]); werr != nil {
				return werr
			}
			if flush {
				if err := st.FlushError(); err != nil {
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

func isEventStream(ct []string) bool {
	if len(ct) == 0 {
		return false
	}
	v, _, _ := strings.Cut(ct[0], ";")
	return strings.EqualFold(strings.TrimSpace(v), "text/event-stream")
}

// isHopByHop reports the headers that describe one connection rather
// than the message (RFC 9110 §7.6.1), by canonical key.
func isHopByHop(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// copyEndToEnd copies the end-to-end headers of src into dst, skipping
// hop-by-hop headers and those the Connection header names. Value slices
// are shared, not copied.
func copyEndToEnd(dst, src http.Header) {
	conn := src["Connection"]
	for k, vv := range src {
		if isHopByHop(k) || len(conn) > 0 && hasToken(conn, k) {
			continue
		}
		dst[k] = vv
	}
}

// hasToken reports whether a comma-separated header value list contains
// token, case-insensitively.
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for v != "" {
			var t string
			t, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

func joinKeys(h http.Header) string {
	var b strings.Builder
	for k := range h {
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		b.WriteString(k)
	}
	return b.String()
}

// redirect answers plain HTTP with a permanent redirect to HTTPS that
// keeps the method and body (308).
func (p *Proxy) redirect(st *reqState, r *http.Request) {
	host := stripPort(r.Host)
	loc := "https://" + host + p.redirectPort + r.URL.RequestURI()
	st.Header()["Location"] = []string{loc}
	st.WriteHeader(http.StatusPermanentRedirect)
}

// stripPort removes a ":port" suffix from a Host header value, keeping
// IPv6 literals bracketed.
func stripPort(host string) string {
	i := strings.LastIndexByte(host, ':')
	if i < 0 || strings.LastIndexByte(host, ']') > i {
		return host
	}
	return host[:i]
}

// rewrite shapes the outbound request. The target URL is set per attempt
// by roundTrip, since a retry changes the endpoint.
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	st := stateFrom(pr.In.Context())
	setForwarded(pr.Out, pr.In, st.ci, p.opts.TrustedProxies)
}

func (p *Proxy) roundTrip(req *http.Request) (*http.Response, error) {
	st := stateFrom(req.Context())
	resp, err := st.roundTrip(req)
	if err == nil && resp.StatusCode == http.StatusSwitchingProtocols {
		// The upgraded response is written on the hijacked connection,
		// bypassing reqState.WriteHeader.
		st.status, st.wroteHeader = http.StatusSwitchingProtocols, true
	}
	return resp, err
}

func (p *Proxy) errorHandler(w http.ResponseWriter, _ *http.Request, err error) {
	st := w.(*reqState)
	st.err = err
	code := errorStatus(st.in.Context(), err)
	if st.body.err != nil && code != StatusClientClosed {
		// The client's body failed, not the upstream.
		code = errorStatus(st.in.Context(), st.body.err)
		if code != http.StatusRequestEntityTooLarge {
			code = http.StatusBadRequest
		}
	}
	if code == StatusClientClosed {
		st.status, st.wroteHeader = code, true
		return
	}
	p.log.Debug("upstream error", "upstream", st.pool.name, "backend", st.ep.hostport, "status", code, "err", err)
	if !st.wroteHeader {
		writeError(st, st.in, code)
	}
}

// finish records metrics and the access log line. It runs deferred, also
// when ReverseProxy aborts a response with a panic (client gone while the
// body was streaming), which it lets continue to the server.
func (p *Proxy) finish(st *reqState, start time.Time) {
	rec := recover()
	if st.ep != nil {
		st.ep.release()
	}
	status := st.status
	if rec != nil || status == 0 {
		if st.in.Context().Err() != nil {
			status = StatusClientClosed
		} else if status == 0 {
			status = http.StatusOK
		}
	}
	now := time.Now()
	d := now.Sub(start)
	st.series.inc(status)
	st.series.duration.Observe(d.Seconds())
	if !st.upstreamStart.IsZero() {
		st.series.upstream.Observe(now.Sub(st.upstreamStart).Seconds())
	}
	if p.access != nil {
		p.logAccess(st, status, start, d)
	}
	if rec != nil {
		panic(rec)
	}
}

// writeAccess renders and writes one access log line.
func (p *Proxy) writeAccess(e *logEntry) {
	bp := logBufPool.Get().(*[]byte)
	b := e.appendJSON((*bp)[:0])
	p.access.write(b)
	*bp = b
	logBufPool.Put(bp)
}

func (p *Proxy) logAccess(st *reqState, status int, start time.Time, d time.Duration) {
	r := st.in
	e := logEntry{
		time:     start,
		client:   st.ci.peerStr,
		method:   r.Method,
		host:     r.Host,
		path:     r.URL.Path,
		proto:    r.Proto,
		status:   status,
		bytes:    st.bytes,
		duration: d,
		ingress:  st.ingress,
		err:      st.err,
	}
	if st.ep != nil {
		e.upstream = st.ep.hostport
	}
	if st.up != nil {
		e.service = st.up.Name
	}
	p.writeAccess(&e)
}
