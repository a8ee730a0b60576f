package l7proxy

import (
	"bufio"
	"cmp"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"
)

// The request pipeline. Every request goes through the same three steps,
// whatever its client side (an HTTP/1.x connection, client_h1.go, or an
// HTTP/2 stream, client_h2.go) and whatever its upstream kind (pooled
// HTTP/1.1 connections, upstream_h1.go, or an http.Transport for h2c and
// TLS upstreams, upstream_transport.go):
//
//  1. decide: the route decision, computed once: a status to answer
//     locally, or a match with its pool, an endpoint and the limits;
//  2. forward: one attempt loop around one exchange per upstream kind (a
//     failed connect ejects the endpoint and sends an idempotent request
//     once to another one; a keep-alive connection found stale is
//     replaced by a fresh one);
//  3. finish: metrics and the access log line.
//
// The client sides differ only in how they read a request and write a
// response; the client interface is that difference.

// txn is the state of one request through the pipeline.
type txn struct {
	// client and dest are the client connection's addresses, for an
	// upstream that is sent a PROXY header.
	client, dest  netip.AddrPort
	start         time.Time
	upstreamStart time.Time
	series        *series
	up            *Upstream
	ingress       string
	pool          *pool
	ep            *endpoint // acquired; released by finish
	// limit is the request body limit in bytes; 0 or less: none.
	limit int64
	// location is the Location of a redirect decide answered with;
	// local, when not nil, the fields of another local answer without a
	// body (a CORS preflight).
	location string
	local    []Field
	// reqEdit, respEdit and rewrite are a Gateway route's request and
	// response changes (nil: none); prefix is the PathPrefix its match
	// matched and path the request path, for a path rewrite.
	reqEdit, respEdit *HeaderEdit
	rewrite           *Rewrite
	rewriteRe         *regexp.Regexp // a ReplaceRegexMatch rewrite's pattern
	prefix, path      string
	// deadline ends the wait for the response (a Gateway rule's request
	// timeout; zero: none); backendTimeout bounds each attempt's wait.
	deadline       time.Time
	backendTimeout time.Duration
	// merged: the request path had consecutive slashes, merged in path;
	// the merged path is what goes upstream (see mergeSlashes).
	merged bool
	// mirror is the copy of the request its rule's mirrors get, if any.
	mirror *mirrorReq
	// retry is the rule's retry policy (nil: none); retries counts the
	// retries made.
	retry   *Retry
	retries int
	// replay is the copy of the request body a retry sends again (nil:
	// no body, or none kept; replay.go).
	replay *replayBody
	// access is what a route's access control keeps of the request
	// (access.go; zero without one).
	access accessTxn

	// id is the request ID (requestid.go); route and rule the Ingress
	// route and the Ingress or Gateway rule that matched (nil: none),
	// and upLocal the local address of the last HTTP/1.1 upstream
	// connection used, for request traces (tracehub.go).
	id      requestID
	route   *Route
	rule    *gwEntry
	upLocal netip.AddrPort

	status  int
	bytes   int64
	err     error
	retried bool
}

// routedRequest is what decide reads of a request besides its host and
// path.
type routedRequest interface {
	gwRequest
	// requestURI is the request target as sent (path and query).
	requestURI() string
}

// decide routes a request: it returns the status to answer locally, or 0
// when the request goes to tx.ep (then acquired). A redirect status comes
// with tx.location. host is the Host header value, path the decoded path.
//
// Consecutive slashes in path are merged before anything looks at it, as
// nginx's merge_slashes does before location matching: otherwise
// "//admin/x" would miss a route for "/admin" (and its access control),
// fall through to a route for "/", and reach a backend that merges the
// slashes itself (Tomcat, Apache, Werkzeug do) and serves "/admin/x". The
// merged path is the one forwarded, so the backend sees the path the
// route decision saw. Every client side calls decide, so this is the one
// place it happens.
func (p *Proxy) decide(tx *txn, cur *state, ci *connInfo, req routedRequest, host, path string, contentLength int64) int {
	if req.method() == http.MethodConnect {
		return http.StatusMethodNotAllowed
	}
	if strings.Contains(path, "//") {
		path, tx.merged = mergeSlashes(path), true
		tx.path = path
	}
	if hasDotSegment(path) {
		return http.StatusBadRequest
	}
	var up *Upstream
	var opts RouteOptions
	if f := cur.gateways.frontend(ci.local); f != nil {
		code := p.decideGateway(tx, cur, f, ci, req, host, path)
		if code != 0 {
			return code
		}
		up = tx.up
	} else {
		m, ok := cur.table.Match(host, path)
		if !ok {
			return http.StatusNotFound
		}
		tx.up, tx.ingress, tx.route = m.Upstream, m.Ingress, m.Route
		if m.Options.Access != nil && m.Route != nil {
			tx.access.path = m.Route.Path // the session cookie's default path
		}
		tx.series = p.series.get(m.Ingress, m.Upstream)
		if !ci.tls && m.Options.SSLRedirect {
			tx.location = "https://" + stripPort(host) + p.redirectPort + req.requestURI()
			return http.StatusPermanentRedirect
		}
		up, opts = m.Upstream, m.Options
		if m.rules != nil {
			if code := p.decideRouteRules(tx, cur, m.rules, ci, req, host, path); code != 0 {
				return code
			}
			up = tx.up
		}
	}
	var pl *pool
	if up != nil {
		pl = cur.pools[up.Name]
	}
	acc := opts.Access
	if acc != nil {
		if code := p.admit(tx, acc, ci, req, host); code != 0 {
			return code
		}
		pl = accessPool(tx, cur, acc, pl, req)
	}
	var ep *endpoint
	switch {
	case pl == nil:
	case tx.access.stickyFor != nil:
		ep = tx.access.stickyFor.pick(tx, pl, req)
	default:
		ep = pl.pick(nil)
	}
	if ep == nil {
		return http.StatusServiceUnavailable
	}
	limit := opts.MaxBodyBytes
	if limit == 0 {
		limit = p.opts.DefaultMaxBodyBytes
	}
	if limit > 0 && contentLength > limit {
		return http.StatusRequestEntityTooLarge
	}
	tx.limit = limit
	tx.client, tx.dest = ci.remote, ci.local
	if tx.merged {
		tx.forwardMerged(path)
	}
	ep.acquire()
	tx.pool, tx.ep = pl, ep
	return 0
}

// decideGateway routes a request on a Gateway listener's frontend: it
// sets the route, filters and upstream in tx, or returns a local answer
// (404 no route, a redirect, a CORS preflight's, 500 for a backend
// reference that does not resolve).
func (p *Proxy) decideGateway(tx *txn, cur *state, f *gwFrontend, ci *connInfo, req routedRequest, host, path string) int {
	name := NormalizeHost(host)
	if ci.tls && f.misdirected(ci.sni, name) {
		return http.StatusMisdirectedRequest
	}
	_, e := f.match(name, path, req)
	if e == nil {
		return http.StatusNotFound
	}
	return p.applyRule(tx, cur, e, ci, req, host, path)
}

// decideRouteRules serves an Ingress route that has rules: the first
// rule whose matches hold, as a Gateway rule.
func (p *Proxy) decideRouteRules(tx *txn, cur *state, rules []*gwEntry, ci *connInfo, req routedRequest, host, path string) int {
	for _, e := range rules {
		if e.matches(path, req) {
			return p.applyRule(tx, cur, e, ci, req, host, path)
		}
	}
	return http.StatusNotFound
}

// applyRule sets a matched rule's filters and upstream in tx, or returns
// a local answer (a redirect, a CORS preflight's, 500 for a backend
// reference that does not resolve).
func (p *Proxy) applyRule(tx *txn, cur *state, e *gwEntry, ci *connInfo, req routedRequest, host, path string) int {
	tx.ingress, tx.rule = e.route.Source, e
	if e.rule.Timeout > 0 {
		tx.deadline = tx.start.Add(e.rule.Timeout)
	}
	tx.backendTimeout = e.rule.BackendTimeout
	tx.retry = e.rule.Retry
	if a := e.rule.Affinity; a != nil {
		tx.access.stickyFor, tx.access.path = a, "/"
		if e.match.PathType != PathRegex && e.match.Path != "" {
			tx.access.path = e.match.Path // a regular expression is no cookie path
		}
	}
	fl := &e.rule.Filters
	if e.match.PathType == PathPrefix {
		tx.prefix = e.path
	}
	if e.cors != nil {
		if origin, ok := isPreflight(req); ok {
			// Answered here, whatever the rule does with other requests.
			tx.series = p.series.get(e.route.Source, nil)
			if tx.local = e.cors.preflight(req, origin); tx.local == nil {
				tx.local = noFields // no CORS field: the origin is refused
			}
			return http.StatusNoContent
		}
	}
	if r := fl.Redirect; r != nil {
		tx.series = p.series.get(e.route.Source, nil)
		if r.Location != "" {
			tx.location = r.Location
			return cmp.Or(r.StatusCode, http.StatusFound)
		}
		scheme := "http"
		if ci.tls {
			scheme = "https"
		}
		q := req.requestURI()
		if i := strings.IndexByte(q, '?'); i >= 0 {
			q = q[i+1:]
		} else {
			q = ""
		}
		tx.location = redirectLocation(r, scheme, host, ci.local.Port(), tx.prefix, path, q)
		if r.StatusCode != 0 {
			return r.StatusCode
		}
		return http.StatusFound
	}
	bi := e.pick(rand.Uint64())
	if bi >= 0 {
		gf := &e.filters[bi]
		tx.reqEdit, tx.respEdit, tx.rewrite, tx.rewriteRe = gf.reqEdit, gf.respEdit, gf.rewrite, gf.rewriteRe
		tx.path = path
		if b := &e.rule.Backends[bi]; b.Upstream != "" {
			tx.up = cur.table.upstreams[b.Upstream]
		}
	}
	if e.cors != nil {
		if origin, ok := req.headerValue("Origin"); ok {
			tx.respEdit = e.cors.responseEdit(origin, tx.respEdit)
		}
	}
	tx.series = p.series.get(e.route.Source, tx.up)
	if len(fl.Mirrors) > 0 && tx.up != nil {
		tx.mirror = sampleMirrors(cur, fl)
	}
	if tx.up == nil {
		// The API's answer for a backend that does not resolve.
		return http.StatusInternalServerError
	}
	return 0
}

// noFields is a local answer without fields.
var noFields = []Field{}

// frontend returns the Gateway listeners of a local address, if any.
func (t gwTables) frontend(local netip.AddrPort) *gwFrontend {
	if len(t) == 0 {
		return nil
	}
	return t[local]
}

// client is what the pipeline needs from a client side.
type client interface {
	// idempotent reports whether the request's method may be sent again
	// after a failed connect (RFC 9110 §9.2.2).
	idempotent() bool
	// gone reports whether the client is known to have gone away.
	gone() bool
	// replayable reports whether the request can be sent again after an
	// attempt failed under way: it has no body or its body is whole in
	// tx.replay (and it does not ask to upgrade).
	replayable() bool
	// requestBody reports whether the request has a body, and its
	// declared length (-1: unknown).
	requestBody() (has bool, length int64)
	// fail answers a request whose forwarding failed (through
	// failStatus); bodyErr is the client's body failure, if any.
	fail(err, bodyErr error)
	// abort ends a request whose response is under way: uerr is an
	// upstream failure, cerr a failure to write to the client, bodyErr
	// the client's body failure.
	abort(uerr, cerr, bodyErr error)

	// prepareMirror gives a mirror the request head; the body is
	// captured as it is read.
	prepareMirror(m *mirrorReq)

	// Towards an HTTP/1.1 upstream (upstream_h1.go).
	scratch() *h1scratch
	writeRequestHead(w *bufio.Writer, ep *endpoint)
	// beginBody says how the request body is sent; an HTTP/1.1 client
	// that expects 100-continue is told to send it.
	beginBody() bodyPlan
	// copyRequestBody sends the body into w. streamed: it runs in its own
	// goroutine while the response is read, and sends as it receives.
	copyRequestBody(w *bufio.Writer, streamed bool) (werr, bodyErr error)
	// interruptBody interrupts a streamed body copy waiting for the
	// client.
	interruptBody()
	// waitsForBody: a complete response waits for a streamed body to end
	// (else the copy is interrupted).
	waitsForBody() bool
	// bodyDone reports whether the request body was read completely.
	bodyDone() bool
	// watch watches the client while the response is awaited, closing
	// uc if it goes away; unwatch stops a watch that needs stopping.
	// canWatch: whether a watch may start now.
	canWatch(streamedBody bool) bool
	watch(uc *upConn)
	unwatch()
	// release ends every watch of uc and reports whether none touched it.
	release(uc *upConn) (untouched bool)
	method() string
	interim(resp *h1resp)
	// upgrade completes a protocol switch the client asked for; false:
	// it did not ask.
	upgrade(uc *upConn, resp *h1resp) bool
	respondH1(uc *upConn, resp *h1resp, head []byte, kind bodyKind, body *bodySrc) (uerr, cerr error)

	// Towards an http.Transport (upstream_transport.go).
	transportRequest() (*http.Request, error)
	bodyError() error
	respondTransport(res *http.Response)
}

// bodyPlan is how a request body goes upstream.
type bodyPlan uint8

const (
	planNone       bodyPlan = iota
	planSequential          // sent whole before the response is read
	planStreamed            // sent by a second goroutine while the response is read
)

// outcome is how an exchange ended, for the attempt loop.
type outcome uint8

const (
	outcomeDone    outcome = iota // answered (or failed and answered)
	outcomeRefused                // the endpoint could not be connected to
	outcomeStale                  // a reused connection was closed by the endpoint
	outcomeRetry                  // failed, not answered: the rule's retry policy sends it again
)

// forward sends the request to tx.ep, and to another endpoint when the
// attempt loop's rules allow.
func (p *Proxy) forward(c client, tx *txn) {
	if tx.mirror != nil {
		c.prepareMirror(tx.mirror)
	}
	if tx.retry != nil && tx.retry.Attempts > 0 {
		tx.replay = p.newReplayBody(c.requestBody())
	}
	fresh := 0
	for attempt := 0; ; {
		ep := tx.ep
		// An attempt that fails before it has a connection must not
		// pass an earlier attempt's for its own.
		tx.upLocal = netip.AddrPort{}
		var out outcome
		var err error
		if tx.pool.settings.protocol == ProtocolHTTP {
			out, err = p.exchangeH1(c, tx, ep, fresh > 0)
		} else {
			out, err = p.exchangeTransport(c, tx, ep)
		}
		switch out {
		case outcomeDone:
			if err == nil {
				ep.succeeded()
			}
			return
		case outcomeRefused:
			b := ep.eject()
			p.log.Warn("endpoint ejected after failed connect", "upstream", tx.pool.name,
				"backend", ep.hostport, "backoff", b, "err", err)
			// Nothing of the body was read: it goes to the next
			// attempt from the client.
			if tx.canRetryIf(c, c.replayable() || tx.replay.unread()) {
				p.retryAt(tx, ep, err)
				fresh = 0
				continue
			}
			// Nothing of the request was sent or read: an idempotent one
			// may go to another endpoint, body included.
			if attempt == 0 && c.idempotent() {
				if next := tx.pool.pick(ep); next != nil {
					next.acquire()
					ep.release()
					tx.ep, tx.retried = next, true
					tx.moved()
					attempt++
					fresh = 0
					continue
				}
			}
			c.fail(err, nil)
			return
		case outcomeStale:
			if fresh < 2 {
				fresh++
				continue
			}
			c.fail(err, nil)
			return
		case outcomeRetry:
			p.retryAt(tx, ep, err)
			fresh = 0
		}
	}
}

// canRetry reports whether the rule's retry policy sends the request
// again: retries are left, the request can be replayed, the client is
// there, and the wait ends before the rule's request timeout.
func (tx *txn) canRetry(c client) bool { return tx.canRetryIf(c, c.replayable()) }

// canRetryIf is canRetry with whether the request can be sent again
// known otherwise.
func (tx *txn) canRetryIf(c client, replayable bool) bool {
	r := tx.retry
	if r == nil || tx.retries >= r.Attempts || !replayable || c.gone() {
		return false
	}
	return tx.deadline.IsZero() || time.Now().Add(tx.retryBackoff()).Before(tx.deadline)
}

// retryStatus reports whether a response status is retried.
func (tx *txn) retryStatus(c client, code int) bool {
	return tx.retry != nil && slices.Contains(tx.retry.Codes, code) && tx.canRetry(c)
}

// maxRetryBackoff caps the doubling of a retry policy's backoff.
const maxRetryBackoff = time.Second

// retryBackoff is the wait before the next retry.
func (tx *txn) retryBackoff() time.Duration {
	b := tx.retry.Backoff
	if b <= 0 {
		return 0
	}
	limit := max(b, maxRetryBackoff)
	for range tx.retries {
		if b *= 2; b >= limit {
			return limit
		}
	}
	return b
}

// retryAt waits the retry policy's backoff and moves the request to the
// next attempt: another endpoint when there is one.
func (p *Proxy) retryAt(tx *txn, ep *endpoint, err error) {
	wait := tx.retryBackoff()
	tx.retries++
	p.log.Debug("retrying request", "upstream", tx.pool.name, "backend", ep.hostport, "retry", tx.retries,
		"backoff", wait, "err", err)
	if wait > 0 {
		time.Sleep(wait)
	}
	if next := tx.pool.pick(ep); next != nil {
		next.acquire()
		ep.release()
		tx.ep = next
		tx.moved()
	}
	tx.retried = true
}

// responseDeadline is when an attempt stops waiting for the response
// head: the upstream's read timeout, shortened by a Gateway rule's
// backend and request timeouts.
func (tx *txn) responseDeadline(readTimeout time.Duration) time.Time {
	d := tx.upstreamStart.Add(readTimeout)
	if tx.backendTimeout > 0 && tx.backendTimeout < readTimeout {
		d = tx.upstreamStart.Add(tx.backendTimeout)
	}
	if !tx.deadline.IsZero() && tx.deadline.Before(d) {
		d = tx.deadline
	}
	return d
}

// forwardMerged makes the merged path the one forwarded. The client sides
// already send a rewritten path when tx.rewrite has one, so the merged
// path takes that way: a rule's own path rewrite started from the merged
// path and is kept; otherwise the whole path is replaced. Only requests
// with consecutive slashes get here, so the allocations cost nothing to
// the others.
func (tx *txn) forwardMerged(path string) {
	tx.path = path
	if tx.rewrite != nil && tx.rewrite.Path != nil {
		return
	}
	rw := &Rewrite{Path: &PathModifier{ReplaceFullPath: true, Value: path}}
	if tx.rewrite != nil {
		rw.Hostname = tx.rewrite.Hostname
	}
	tx.rewrite, tx.rewriteRe = rw, nil
}

// requestURI is the request target as forwarded, for the requests the
// proxy makes about it (the auth service's X-Original-URI, an error
// page's): the client's, or with the path's slashes merged (decide), so
// that they see the path the backend sees.
func (tx *txn) requestURI(req routedRequest) string {
	uri := req.requestURI()
	if !tx.merged {
		return uri
	}
	out := escapePath(tx.path)
	if i := strings.IndexByte(uri, '?'); i >= 0 {
		out += uri[i:]
	}
	return out
}

// requestEdits returns the Gateway filters that change the request.
func (tx *txn) requestEdits() (*HeaderEdit, *Rewrite) {
	return tx.reqEdit, tx.rewrite
}

// responseEdit returns the Gateway filter that changes the response.
func (tx *txn) responseEdit() *HeaderEdit {
	return tx.respEdit
}

// rewrittenTarget is the request target after a URLRewrite of the path.
func (tx *txn) rewrittenTarget(rawQuery string) string {
	var p string
	if tx.rewriteRe != nil {
		p = escapePath(rewriteRegex(tx.rewriteRe, tx.rewrite.Path.Value, tx.path))
	} else {
		p = escapePath(modifyPath(tx.rewrite.Path, tx.prefix, tx.path))
	}
	if rawQuery != "" {
		p += "?" + rawQuery
	}
	return p
}

// idempotentMethod reports the methods that may be sent again after a
// failed connect (RFC 9110 §9.2.2).
func idempotentMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete, http.MethodTrace:
		return true
	}
	return false
}

// requestLine is what the access log says about a request.
type requestLine struct {
	client, method, host, path, proto string
	// ci is the client connection, for request traces.
	ci *connInfo
}

// finish records metrics and the access log line of a finished request;
// tx.status is final.
func (p *Proxy) finish(tx *txn, now time.Time, rl *requestLine) {
	if tx.ep != nil {
		tx.ep.release()
	}
	if tx.access.acc != nil {
		p.releaseAccess(tx)
	}
	if tx.mirror != nil {
		p.sendMirrors(tx.mirror)
	}
	if tx.replay != nil {
		tx.replay.release()
	}
	d := now.Sub(tx.start)
	tx.series.inc(tx.status)
	tx.series.duration.Observe(d.Seconds())
	if !tx.upstreamStart.IsZero() {
		tx.series.upstream.Observe(now.Sub(tx.upstreamStart).Seconds())
	}
	if p.tracingRequests() {
		p.traceRequest(tx, now, rl)
	}
	if p.access == nil {
		return
	}
	e := logEntry{
		time: tx.start, client: rl.client, method: rl.method, host: rl.host, path: rl.path,
		proto: rl.proto, status: tx.status, bytes: tx.bytes, duration: d, ingress: tx.ingress, err: tx.err,
		requestID: tx.id.view(),
	}
	if tx.ep != nil {
		e.upstream = tx.ep.hostport
	}
	if tx.up != nil {
		e.service = tx.up.Name
	}
	p.writeAccess(&e)
}

// writeAccess renders and writes one access log line.
func (p *Proxy) writeAccess(e *logEntry) {
	bp := logBufPool.Get().(*[]byte)
	b := e.appendJSON((*bp)[:0])
	p.access.write(b)
	*bp = b
	logBufPool.Put(bp)
}
