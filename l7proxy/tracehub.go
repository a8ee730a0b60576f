package l7proxy

import (
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

// RequestRecord is what the proxy reports of one finished request to the
// request tracers (`nodegress trace --requests`). It is built only while
// a tracer is registered.
type RequestRecord struct {
	// ID is the request ID sent upstream as X-Request-ID.
	ID    string
	Start time.Time
	// Duration is from the request head to the end of the response;
	// Upstream from the last attempt's send to the same end (0: no
	// upstream was tried).
	Duration, Upstream time.Duration
	// Client and Frontend are the client connection's ends: with
	// sk_lookup steering, Frontend is the address the client dialled.
	Client, Frontend netip.AddrPort
	// TLS tells the client connection is TLS; SNI and ALPN are what the
	// handshake carried and negotiated.
	TLS       bool
	SNI, ALPN string
	Proto     string // "HTTP/1.1", "HTTP/2.0"
	Method    string
	Host      string
	Path      string
	Status    int
	// Bytes is the response body bytes sent to the client.
	Bytes int64
	// Route is the rule that matched; empty Kind: none did.
	Route RequestRoute
	// Service is the upstream's name ("namespace/service:port").
	Service string
	// UpstreamLocal and UpstreamRemote are the ends of the upstream
	// connection (of the last attempt).
	UpstreamLocal, UpstreamRemote netip.AddrPort
	// Pod ("namespace/name") and Node name the endpoint's pod.
	Pod, Node string
	// Retried tells the request went to more than one attempt.
	Retried bool
	// Error is why forwarding failed; empty when it did not.
	Error string
}

// Route kinds of a RequestRoute.
const (
	RouteIngress   = "ingress"
	RouteHTTPRoute = "httproute"
)

// RequestRoute is the rule a request matched.
type RequestRoute struct {
	// Kind is RouteIngress or RouteHTTPRoute.
	Kind string
	// Name is the Ingress's or HTTPRoute's "namespace/name".
	Name string
	// Host and Path are an Ingress rule's host and path ("" host: any).
	Host, Path string
	// Rule is the index of the matched rule in the HTTPRoute's rules, or
	// in the Ingress route's annotation rules; -1 when there is none.
	Rule int
}

// requestTracers are the registered tracers; the pointer is nil while
// there is none, which is the one check a request pays for tracing.
type requestTracers struct {
	mu  sync.Mutex
	fns []*func(*RequestRecord)
}

// TraceRequests registers fn to receive a record of every request that
// finishes from now on, until stop is called. fn is called on the
// request's goroutine after the response went out: it must not block,
// and must not keep the record past the call.
func (p *Proxy) TraceRequests(fn func(*RequestRecord)) (stop func()) {
	t := &p.tracers
	t.mu.Lock()
	defer t.mu.Unlock()
	f := &fn
	t.fns = append(slices.Clip(t.fns), f)
	fns := t.fns
	p.requestTracing.Store(&fns)
	var once sync.Once
	return func() {
		once.Do(func() {
			t.mu.Lock()
			defer t.mu.Unlock()
			t.fns = slices.DeleteFunc(slices.Clone(t.fns), func(o *func(*RequestRecord)) bool { return o == f })
			if len(t.fns) == 0 {
				p.requestTracing.Store(nil)
				return
			}
			fns := t.fns
			p.requestTracing.Store(&fns)
		})
	}
}

// tracingRequests reports whether a request tracer is registered.
func (p *Proxy) tracingRequests() bool { return p.requestTracing.Load() != nil }

// traceRequest builds the record of a finished request and hands it to
// every tracer.
func (p *Proxy) traceRequest(tx *txn, now time.Time, rl *requestLine) {
	fns := p.requestTracing.Load()
	if fns == nil {
		return
	}
	r := RequestRecord{
		ID:            tx.id.String(),
		Start:         tx.start,
		Duration:      now.Sub(tx.start),
		Proto:         rl.proto,
		Method:        strings.Clone(rl.method),
		Host:          strings.Clone(rl.host),
		Path:          strings.Clone(rl.path),
		Status:        tx.status,
		Bytes:         tx.bytes,
		Route:         tx.requestRoute(),
		Retried:       tx.retried,
		UpstreamLocal: tx.upLocal,
	}
	if !tx.upstreamStart.IsZero() {
		r.Upstream = now.Sub(tx.upstreamStart)
	}
	if ci := rl.ci; ci != nil {
		r.Client, r.Frontend = ci.remote, ci.local
		r.TLS, r.SNI, r.ALPN = ci.tls, ci.sni, ci.alpn
	}
	if tx.up != nil {
		r.Service = tx.up.Name
	}
	if ep := tx.ep; ep != nil {
		r.UpstreamRemote = ep.addr
		if ref := ep.pod.Load(); ref != nil {
			r.Pod, r.Node = ref.pod, ref.node
		}
	}
	if tx.err != nil {
		r.Error = tx.err.Error()
	}
	for _, fn := range *fns {
		(*fn)(&r)
	}
}

// traceConn has the transport report the upstream connection it uses,
// for the record: pooled HTTP/1.1 connections know their local address
// (upstream_h1.go), the transport's are only seen through this hook.
func (tx *txn) traceConn(req *http.Request) *http.Request {
	return req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) {
			tx.upLocal = localAddrPort(i.Conn)
		},
	}))
}

// requestRoute names the route and rule that matched.
func (tx *txn) requestRoute() RequestRoute {
	rr := RequestRoute{Rule: -1}
	if rt := tx.route; rt != nil {
		rr.Kind, rr.Name, rr.Host, rr.Path = RouteIngress, rt.Ingress, rt.Host, rt.Path
	}
	if e := tx.rule; e != nil {
		if rr.Kind == "" {
			rr.Kind, rr.Name = RouteHTTPRoute, e.route.Source
		}
		for i := range e.route.Rules {
			if &e.route.Rules[i] == e.rule {
				rr.Rule = i
				break
			}
		}
	}
	return rr
}
