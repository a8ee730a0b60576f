package l7proxy

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// TLS stream listeners (Gateway API TLSRoute). A TLS listener forwards
// whole connections, chosen by the client's SNI, instead of serving HTTP:
// in passthrough mode the client's TLS goes to the backend untouched (the
// proxy reads only the ClientHello); in terminate mode the proxy
// completes the handshake with the listener's certificate and forwards
// the decrypted byte stream. Both arrive on the proxy's HTTPS listener,
// where the frontend (the connection's local address) tells them apart
// from the Ingress and HTTPS listeners.

// ListenerKind is what a Gateway listener does with its connections.
type ListenerKind uint8

const (
	// ListenerHTTPRoutes serves HTTP (or HTTPS) by the attached HTTPRoutes.
	ListenerHTTPRoutes ListenerKind = iota
	// ListenerTLSPassthrough forwards TLS connections by SNI, undecrypted.
	ListenerTLSPassthrough
	// ListenerTLSTerminate terminates TLS and forwards the decrypted
	// stream by SNI.
	ListenerTLSTerminate
)

// TLSRoute is one TLSRoute as attached to a TLS listener.
type TLSRoute struct {
	// Source is "namespace/name", for logs and metrics.
	Source string
	// Hostnames are the route's effective SNI names on this listener
	// (exact or "*.suffix"); empty means every name the listener serves.
	Hostnames []string
	// Backends get the route's connections by weight; an empty Upstream
	// is a reference that did not resolve (its share is refused).
	Backends []WeightedBackend
}

// streamTables are the compiled TLS stream listeners, by frontend.
type streamTables map[netip.AddrPort]*streamFrontend

// streamFrontend holds the TLS listeners of one frontend, most specific
// hostname first. Passthrough and terminating listeners may share it:
// the ClientHello's server name chooses.
type streamFrontend struct {
	passthrough bool // some listener passes TLS through
	// fallback: a server name no listener serves goes to the Ingress
	// routes (Listener.IngressFallback).
	fallback  bool
	listeners []*streamListener
}

type streamListener struct {
	kind     ListenerKind
	name     string
	host     string
	wildcard bool
	routes   hostRules[*streamRoute]
}

type streamRoute struct {
	route *TLSRoute
	total int64
}

// compileStreams builds the TLS stream listeners' tables.
func compileStreams(ls []Listener) (streamTables, []error) {
	var errs []error
	t := streamTables{}
	for i := range ls {
		l := &ls[i]
		if l.Kind == ListenerHTTPRoutes {
			continue
		}
		if len(l.Frontends) == 0 {
			errs = append(errs, fmt.Errorf("listener %s: %w", l.Name, errListenerNoFrontend))
			continue
		}
		sl := &streamListener{kind: l.Kind, name: l.Name, host: strings.ToLower(strings.TrimSuffix(l.Hostname, "."))}
		sl.wildcard = strings.HasPrefix(sl.host, "*.")
		for ri := range l.TLSRoutes {
			r := &l.TLSRoutes[ri]
			sr := &streamRoute{route: r}
			for _, b := range r.Backends {
				sr.total += int64(max(b.Weight, 0))
			}
			hosts := r.Hostnames
			if len(hosts) == 0 {
				hosts = []string{""}
			}
			for _, h := range hosts {
				sl.routes.add(strings.ToLower(h), sr)
			}
		}
		slices.SortStableFunc(sl.routes.suffixes, func(a, b string) int { return len(b) - len(a) })
		for _, fe := range l.Frontends {
			f := t[fe]
			if f == nil {
				f = &streamFrontend{}
				t[fe] = f
			}
			f.passthrough = f.passthrough || l.Kind == ListenerTLSPassthrough
			f.fallback = f.fallback || l.IngressFallback
			f.listeners = append(f.listeners, sl)
		}
	}
	for _, f := range t {
		slices.SortStableFunc(f.listeners, func(a, b *streamListener) int {
			return hostSpecificity(b.host, b.wildcard) - hostSpecificity(a.host, a.wildcard)
		})
	}
	return t, errs
}

// hostSpecificity orders listener hostnames: precise names, then
// wildcards by length, then none.
func hostSpecificity(host string, wildcard bool) int {
	switch {
	case host == "":
		return 0
	case wildcard:
		return 1 + len(host)
	}
	return 1 << 20
}

// listenerFor returns the most specific listener serving a server name.
func (f *streamFrontend) listenerFor(sni string) *streamListener {
	for _, l := range f.listeners {
		if hostServes(l.host, l.wildcard, sni) {
			return l
		}
	}
	return nil
}

// match finds the route for a server name: the most specific listener
// serving it decides.
func (f *streamFrontend) match(sni string) *streamRoute {
	l := f.listenerFor(sni)
	if l == nil {
		return nil
	}
	var found *streamRoute
	l.routes.each(sni, func(rs []*streamRoute) bool {
		found = rs[0]
		return true
	})
	return found
}

func hostServes(pattern string, wildcard bool, host string) bool {
	switch {
	case pattern == "":
		return true
	case wildcard:
		s := pattern[1:]
		return len(host) > len(s) && strings.HasSuffix(host, s)
	}
	return host == pattern
}

// pick chooses a backend by weight; nil when every weight is 0.
func (r *streamRoute) pick(n uint64) *WeightedBackend {
	if r.total <= 0 {
		return nil
	}
	x := int64(n % uint64(r.total))
	for i := range r.route.Backends {
		b := &r.route.Backends[i]
		if x -= int64(max(b.Weight, 0)); x < 0 {
			return b
		}
	}
	return nil
}

// frontend returns the TLS stream listeners of a local address, if any.
func (t streamTables) frontend(local netip.AddrPort) *streamFrontend {
	if len(t) == 0 {
		return nil
	}
	return t[local]
}

// localAddrPort is the address a client connected to.
func localAddrPort(c net.Conn) netip.AddrPort {
	ap, err := netip.ParseAddrPort(c.LocalAddr().String())
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// Stream results, the values of the connections metric's result label.
const (
	streamForwarded     = "forwarded"
	streamNoRoute       = "no_route"
	streamNoEndpoint    = "no_endpoint"
	streamConnectFailed = "connect_failed"
	streamBadHello      = "bad_client_hello"
	streamIdle          = "idle_timeout" // forwarded, then closed idle
)

// watchIdle closes a stream's two connections once nothing moved either
// way for Options.StreamIdleTimeout, as seen on the upstream connection.
// stop ends the watch and reports whether it closed them.
func (p *Proxy) watchIdle(client, upstream net.Conn) (stop func() bool) {
	idle := p.opts.StreamIdleTimeout
	last, ok := streamProgress(upstream)
	if !ok {
		return func() bool { return false }
	}
	done := make(chan struct{})
	closed := make(chan bool, 1)
	go func() {
		t := time.NewTicker(max(idle/4, time.Millisecond))
		defer t.Stop()
		since := time.Now()
		for {
			select {
			case <-done:
				closed <- false
				return
			case now := <-t.C:
				n, ok := streamProgress(upstream)
				switch {
				case !ok:
					closed <- false
					return
				case n != last:
					last, since = n, now
				case now.Sub(since) >= idle:
					_ = client.Close()
					_ = upstream.Close()
					closed <- true
					return
				}
			}
		}
	}()
	return func() bool {
		close(done)
		return <-closed
	}
}

// serveStream forwards a client connection by the route its server name
// selects. hello holds the bytes already read from c (the ClientHello, in
// passthrough mode), sent first. It returns when both directions end.
func (p *Proxy) serveStream(c net.Conn, hello []byte, f *streamFrontend, cur *state, sni string, start time.Time) {
	defer c.Close()
	r := f.match(sni)
	if r == nil {
		p.streamDone(c, sni, "", nil, streamNoRoute, 0, start, nil)
		return
	}
	var up *Upstream
	if b := r.pick(rand.Uint64()); b != nil && b.Upstream != "" {
		up = cur.table.upstreams[b.Upstream]
	}
	var pl *pool
	if up != nil {
		pl = cur.pools[up.Name]
	}
	var ep *endpoint
	if pl != nil {
		ep = pl.pick(nil)
	}
	if ep == nil {
		p.streamDone(c, sni, r.route.Source, up, streamNoEndpoint, 0, start, nil)
		return
	}
	var uc net.Conn
	var live *liveUpstream
	var err error
	// A failed connect ejects the endpoint and tries one other: nothing
	// was sent yet.
	for attempt := 0; ; attempt++ {
		ep.acquire()
		uc, live, err = pl.settings.watch.dial(context.Background(), pl.settings.connectTimeout, ep.hostport)
		if err == nil {
			break
		}
		ep.release()
		b := ep.eject()
		p.log.Warn("endpoint ejected after failed connect", "upstream", pl.name, "backend", ep.hostport, "backoff", b, "err", err)
		next := pl.pick(ep)
		if attempt > 0 || next == nil {
			p.streamDone(c, sni, r.route.Source, up, streamConnectFailed, 0, start, err)
			return
		}
		ep = next
	}
	ep.succeeded()
	stop := p.watchIdle(c, uc)
	n := splice(c, hello, uc)
	live.closed()
	result := streamForwarded
	if stop() {
		result = streamIdle
	}
	ep.release()
	p.streamDone(c, sni, r.route.Source, up, result, n, start, nil)
}

// streamDone records one stream connection's outcome.
func (p *Proxy) streamDone(c net.Conn, sni, route string, up *Upstream, result string, bytes int64, start time.Time, err error) {
	p.metrics.streams.WithLabelValues(route, result).Inc()
	if result != streamForwarded && result != streamIdle {
		p.log.Debug("tls stream refused", "peer", c.RemoteAddr().String(), "sni", sni, "route", route, "result", result, "err", err)
	}
	if p.access == nil {
		return
	}
	e := logEntry{time: start, client: c.RemoteAddr().String(), host: sni, proto: "tls-stream",
		bytes: bytes, duration: time.Since(start), ingress: route, err: err}
	if result != streamForwarded {
		e.err = errors.Join(errors.New(result), err)
	}
	if up != nil {
		e.service = up.Name
	}
	p.writeAccess(&e)
}
