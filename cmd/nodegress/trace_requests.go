package main

import (
	"github.com/nodegress/nodegress/l7proxy"
	"github.com/nodegress/nodegress/loader/trace"
)

// proxyRequests gives the trace server the proxy's request records, as
// the wire's request records of this node.
type proxyRequests struct {
	proxy *l7proxy.Proxy
	node  string
}

// TraceRequests implements trace.RequestSource.
func (p proxyRequests) TraceRequests(fn func(*trace.Request)) (stop func()) {
	return p.proxy.TraceRequests(func(r *l7proxy.RequestRecord) {
		w := requestOnWire(r, p.node)
		fn(&w)
	})
}

// requestOnWire is a proxy's request record in the trace protocol's
// form, the datapath's events not joined yet.
func requestOnWire(r *l7proxy.RequestRecord, node string) trace.Request {
	w := trace.Request{
		ID: r.ID, Time: r.Start, Node: node,
		Method: r.Method, Host: r.Host, Path: r.Path, Proto: r.Proto, Status: r.Status, Bytes: r.Bytes,
		Client: trace.RequestClient{Tuple: trace.RequestTuple(r.Client, r.Frontend), TLS: r.TLS, SNI: r.SNI, ALPN: r.ALPN},
		Route: trace.RequestRoute{Kind: r.Route.Kind, Name: r.Route.Name, Host: r.Route.Host, Path: r.Route.Path,
			Rule: r.Route.Rule},
		DurationMS: milliseconds(r.Duration.Microseconds()),
		UpstreamMS: milliseconds(r.Upstream.Microseconds()),
		Retried:    r.Retried,
		Error:      r.Error,
	}
	if r.UpstreamRemote.IsValid() {
		w.Upstream = trace.RequestUpstream{Service: r.Service, Tuple: trace.RequestTuple(r.UpstreamLocal, r.UpstreamRemote),
			Pod: r.Pod, Node: r.Node}
	} else {
		w.Upstream.Service = r.Service
	}
	return w
}

func milliseconds(us int64) float64 { return float64(us) / 1000 }
