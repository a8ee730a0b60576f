package main

import (
	"log/slog"
	"net/netip"

	"github.com/nodegress/nodegress/l7proxy"
	"github.com/nodegress/nodegress/loader"
	"github.com/nodegress/nodegress/loader/trace"
)

// proxyRequests gives the trace server the proxy's request records, as
// the wire's request records of this node, and has the proxy's upstream
// connections watched for kernel drops.
type proxyRequests struct {
	proxy *l7proxy.Proxy
	node  string
	// flows watches connections for kernel drops (the datapath).
	flows flowWatcher
	log   *slog.Logger
}

var _ trace.UpstreamWatcher = proxyRequests{}

// flowWatcher is the datapath's watch of flows no map knows.
type flowWatcher interface {
	WatchFlow(loader.Tuple) error
	UnwatchFlow(loader.Tuple) error
}

// TraceRequests implements trace.RequestSource.
func (p proxyRequests) TraceRequests(fn func(*trace.Request)) (stop func()) {
	return p.proxy.TraceRequests(func(r *l7proxy.RequestRecord) {
		w := requestOnWire(r, p.node)
		fn(&w)
	})
}

// WatchUpstreams implements trace.UpstreamWatcher: every upstream
// connection the proxy has open or dials is watched until it closes or
// the watch stops. A watch that
// fails (the kernel drop program is not loaded) costs that connection its
// drops, nothing else.
func (p proxyRequests) WatchUpstreams() (stop func()) {
	return p.proxy.WatchUpstreams(func(local, remote netip.AddrPort) func() {
		t := loader.Tuple{Src: local, Dst: remote, Proto: loader.TCP}
		if err := p.flows.WatchFlow(t); err != nil {
			p.log.Debug("watch upstream connection", "err", err)
			return func() {}
		}
		return func() {
			if err := p.flows.UnwatchFlow(t); err != nil {
				p.log.Debug("unwatch upstream connection", "err", err)
			}
		}
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
