package l7proxy

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// The Gateway API's RequestMirror filter: a share of a rule's requests is
// also sent to another backend, fire and forget. A mirror never delays or
// fails the request itself: it is sent from its own goroutine once the
// request is finished, its answer is read up to a bound and dropped, and
// at most Options.MaxMirrorRequests mirror requests are under way (more
// are dropped, counted in nodegress_http_mirror_requests_total).
//
// Bodies: the request body is copied while it streams to the backend,
// into a buffer of at most mirrorBodyMax bytes. A mirror of a request
// whose body is longer (declared or as it turns out), or whose body was
// not read to its end, is dropped and counted ("body"): the mirror gets
// either the whole body or nothing.

// Mirror is a RequestMirror filter: Numerator/Denominator of the rule's
// requests are also sent to Upstream (a zero Denominator: every one).
type Mirror struct {
	Upstream               string
	Numerator, Denominator int32
}

// mirrorBodyMax bounds the request body a mirror carries.
const mirrorBodyMax = 64 << 10

// mirrorResponseMax bounds what is read of a mirror's response before the
// connection is closed rather than reused.
const mirrorResponseMax = 64 << 10

// Mirror request results, the result label of the metric.
const (
	mirrorSent       = "sent"        // answered (any status)
	mirrorFailed     = "failed"      // no answer: connect, timeout, reset
	mirrorOverloaded = "overloaded"  // dropped: too many under way
	mirrorNoEndpoint = "no_endpoint" // dropped: the upstream has no endpoint
	mirrorBody       = "body"        // dropped: body too long or incomplete
)

// mirrorReq is the copy of one request for its mirrors.
type mirrorReq struct {
	pools []*pool
	// edit and rewrite are the rule's request changes, which the mirror
	// gets too (a backendRef's own filters are not the mirror's).
	edit    *HeaderEdit
	rewrite *Rewrite

	// Filled by the client side when the request is forwarded.
	prepared     bool
	method, host string
	target       string
	header       http.Header
	bodyLen      int64 // -1: unknown

	mu   sync.Mutex
	body []byte
	st   mirrorBodyState
}

type mirrorBodyState uint8

const (
	bodyCapturing mirrorBodyState = iota
	bodyComplete
	bodyOverflow
	bodyClosed // the mirrors left: later reads are not captured
)

// sample picks the mirrors of a rule that get this request; nil when
// none does.
func sampleMirrors(cur *state, fl *Filters) *mirrorReq {
	var m *mirrorReq
	for i := range fl.Mirrors {
		mr := &fl.Mirrors[i]
		if mr.Denominator > 0 && rand.Int32N(mr.Denominator) >= mr.Numerator {
			continue
		}
		pl := cur.pools[mr.Upstream]
		if pl == nil {
			continue
		}
		if m == nil {
			m = &mirrorReq{edit: fl.RequestHeaders, rewrite: fl.Rewrite}
		}
		m.pools = append(m.pools, pl)
	}
	return m
}

// prepare records the request head for the mirrors, as the client side
// gave it (end-to-end fields and the forwarded set), with the rule's
// changes.
func (m *mirrorReq) prepare(tx *txn, method, host, target, rawQuery string, h http.Header, bodyLen int64) {
	m.prepared = true
	m.method, m.host, m.target, m.header, m.bodyLen = method, host, target, h, bodyLen
	m.edit.apply(h)
	if tx.merged && (m.rewrite == nil || m.rewrite.Path == nil) {
		// Mirrors get the merged path, as the upstream does (decide).
		m.target = escapePath(tx.path)
		if rawQuery != "" {
			m.target += "?" + rawQuery
		}
	}
	if rw := m.rewrite; rw != nil {
		if rw.Path != nil {
			m.target = escapePath(modifyPath(rw.Path, tx.prefix, tx.path))
			if rawQuery != "" {
				m.target += "?" + rawQuery
			}
		}
		if rw.Hostname != "" {
			m.host = rw.Hostname
		}
	}
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = emptyValue // keep the transport from adding its own
	}
	switch {
	case bodyLen == 0:
		m.st = bodyComplete
	case bodyLen > mirrorBodyMax:
		m.st = bodyOverflow
	case bodyLen > 0:
		m.body = make([]byte, 0, bodyLen)
	}
}

// capture copies a piece of the request body as it goes upstream.
func (m *mirrorReq) capture(p []byte) {
	if m == nil {
		return
	}
	m.mu.Lock()
	if m.st == bodyCapturing {
		if len(m.body)+len(p) > mirrorBodyMax {
			m.st, m.body = bodyOverflow, nil
		} else {
			m.body = append(m.body, p...)
		}
	}
	m.mu.Unlock()
}

// complete records that the request body was read to its end.
func (m *mirrorReq) complete() {
	if m == nil {
		return
	}
	m.mu.Lock()
	if m.st == bodyCapturing {
		m.st = bodyComplete
	}
	m.mu.Unlock()
}

// sendMirrors starts the mirrors of a finished request.
func (p *Proxy) sendMirrors(m *mirrorReq) {
	if !m.prepared {
		return // answered locally: nothing went upstream
	}
	m.mu.Lock()
	st := m.st
	m.st = bodyClosed
	body := m.body
	m.mu.Unlock()
	for _, pl := range m.pools {
		switch {
		case st != bodyComplete:
			p.metrics.mirrored(pl.name, mirrorBody)
		case p.mirrorSlots.Add(1) > int64(p.opts.MaxMirrorRequests):
			p.mirrorSlots.Add(-1)
			p.metrics.mirrored(pl.name, mirrorOverloaded)
		default:
			go func() {
				defer p.mirrorSlots.Add(-1)
				p.metrics.mirrored(pl.name, p.mirror(pl, m, body))
			}()
		}
	}
}

// mirror sends one mirror request and discards its answer.
func (p *Proxy) mirror(pl *pool, m *mirrorReq, body []byte) string {
	ep := pl.pick(nil)
	if ep == nil {
		return mirrorNoEndpoint
	}
	ep.acquire()
	defer ep.release()
	u, err := url.ParseRequestURI(m.target)
	if err != nil {
		return mirrorFailed
	}
	u.Scheme, u.Host = pl.scheme, ep.hostport
	ctx, cancel := context.WithTimeout(context.Background(), pl.settings.connectTimeout+pl.settings.readTimeout)
	defer cancel()
	req := (&http.Request{Method: m.method, URL: u, Host: m.host, Header: m.header,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}).WithContext(ctx)
	if len(body) > 0 {
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.ContentLength = int64(len(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	start := time.Now()
	res, err := ep.rt.RoundTrip(req)
	if err != nil {
		p.log.Debug("mirror request failed", "upstream", pl.name, "backend", ep.hostport, "err", err)
		return mirrorFailed
	}
	_, _ = io.CopyN(io.Discard, res.Body, mirrorResponseMax)
	_ = res.Body.Close()
	p.log.Debug("mirror request", "upstream", pl.name, "backend", ep.hostport, "status", res.StatusCode,
		"duration", time.Since(start))
	return mirrorSent
}
