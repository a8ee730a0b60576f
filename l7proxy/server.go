package l7proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Options configure a Proxy. Zero values mean the documented defaults.
type Options struct {
	// TrustedProxies are the peers whose X-Forwarded-* headers are kept
	// (and extended) rather than replaced.
	TrustedProxies []netip.Prefix
	// AccessLog receives one JSON line per request; nil turns it off.
	AccessLog io.Writer
	// Logger for proxy events; nil discards them.
	Logger *slog.Logger
	// Registry gets the proxy's metrics; nil uses a private registry.
	Registry prometheus.Registerer

	// Upstream defaults, overridable per Upstream. DefaultConnectTimeout
	// (5s) bounds a TCP connect to an endpoint, DefaultReadTimeout (60s)
	// the wait for response headers, DefaultIdleTimeout (90s) how long a
	// keep-alive connection to an endpoint may stay idle.
	DefaultConnectTimeout time.Duration
	DefaultReadTimeout    time.Duration
	DefaultIdleTimeout    time.Duration

	// MaxHeaderBytes limits the request line and headers (64 KiB).
	MaxHeaderBytes int
	// DefaultMaxBodyBytes limits request bodies when a route sets no
	// limit (1 MiB, ingress-nginx's default); negative means unlimited.
	DefaultMaxBodyBytes int64
	// ReadHeaderTimeout bounds reading a request's headers, against slow
	// clients (10s).
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request including its body; 0
	// (the default) leaves bodies unbounded in time, as uploads can be
	// long.
	ReadTimeout time.Duration
	// ClientIdleTimeout closes idle keep-alive client connections (75s,
	// nginx's keepalive_timeout).
	ClientIdleTimeout time.Duration
	// HTTPSPort is the public HTTPS port used in SSL redirects (443).
	HTTPSPort int
	// PasswordCheckWait bounds how long a basic auth request waits for
	// one of the bcrypt checks run at a time (2s); past it the request
	// gets 503, so a flood of wrong passwords, or one Ingress's costly
	// hashes, delays other Ingresses' logins by at most this much.
	PasswordCheckWait time.Duration
	// MaxMirrorRequests bounds the RequestMirror requests under way
	// (256); mirrors beyond it are dropped and counted.
	MaxMirrorRequests int
	// MaxHalfOpenPerClient and MaxHalfOpen cap the connections that have
	// not yet sent a complete first request head (TLS handshake
	// included), per client address (64) and in total (16384);
	// MaxIdlePerClient and MaxIdle the keep-alive connections waiting for
	// their next request (512, 65536). A connection over a cap is closed
	// at once and counted (client_limits.go).
	MaxHalfOpenPerClient, MaxHalfOpen int
	MaxIdlePerClient, MaxIdle         int
	// WriteTimeout bounds each write to a client (60s, nginx's
	// send_timeout): a client that stops reading is cut off.
	// BodyTimeout bounds each read of an HTTP/1.x request body (60s,
	// nginx's client_body_timeout): a body that stops coming gets 400.
	WriteTimeout, BodyTimeout time.Duration
	// StreamIdleTimeout closes a TLSRoute stream (passthrough or
	// terminate) in which nothing moved either way for that long (1h,
	// HAProxy's usual tunnel timeout).
	StreamIdleTimeout time.Duration
	// ProxyProtocolFrom are the peers (load balancers) whose connections
	// start with a PROXY protocol header, v1 or v2 (proxyproto.go);
	// connections from them without one are refused.
	ProxyProtocolFrom []netip.Prefix
	// MaxRateLimitClients caps the client addresses each rate-limited
	// Ingress tracks (16384); beyond it the least useful entries are
	// evicted (ratelimit.go).
	MaxRateLimitClients int
	// RetryBodyBytes bounds the request body kept for a rule's retry
	// policy to send again (64 KiB, pooled per request); a longer body
	// is not retried. Negative: bodies are never kept.
	RetryBodyBytes int
}

func (o *Options) setDefaults() {
	if o.DefaultConnectTimeout <= 0 {
		o.DefaultConnectTimeout = 5 * time.Second
	}
	if o.DefaultReadTimeout <= 0 {
		o.DefaultReadTimeout = 60 * time.Second
	}
	if o.DefaultIdleTimeout <= 0 {
		o.DefaultIdleTimeout = 90 * time.Second
	}
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = 64 << 10
	}
	if o.DefaultMaxBodyBytes == 0 {
		o.DefaultMaxBodyBytes = 1 << 20
	}
	if o.ReadHeaderTimeout <= 0 {
		o.ReadHeaderTimeout = 10 * time.Second
	}
	if o.ClientIdleTimeout <= 0 {
		o.ClientIdleTimeout = 75 * time.Second
	}
	if o.HTTPSPort <= 0 {
		o.HTTPSPort = 443
	}
	if o.PasswordCheckWait <= 0 {
		o.PasswordCheckWait = 2 * time.Second
	}
	for _, d := range []struct {
		v   *int
		def int
	}{{&o.MaxHalfOpenPerClient, 64}, {&o.MaxHalfOpen, 16384}, {&o.MaxIdlePerClient, 512}, {&o.MaxIdle, 65536}} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 60 * time.Second
	}
	if o.BodyTimeout <= 0 {
		o.BodyTimeout = 60 * time.Second
	}
	if o.MaxRateLimitClients <= 0 {
		o.MaxRateLimitClients = 16384
	}
	if o.StreamIdleTimeout <= 0 {
		o.StreamIdleTimeout = time.Hour
	}
	if o.MaxMirrorRequests <= 0 {
		o.MaxMirrorRequests = 256
	}
	if o.RetryBodyBytes == 0 {
		o.RetryBodyBytes = 64 << 10
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
}

// Proxy is the HTTP/HTTPS proxy. Create it with New, give it a Config with
// Update, and serve listeners with ServeHTTP and ServeHTTPS.
type Proxy struct {
	opts    Options
	log     *slog.Logger
	metrics *metrics
	series  *seriesSet
	access  *accessLog
	defCert *tls.Certificate
	// tlsConf is what every TLS handshake starts from; it is never
	// written once built.
	tlsConf *tls.Config

	state atomic.Pointer[state]
	mu    sync.Mutex // serializes Update

	// h1 serves HTTP/1.x (cleartext, and over TLS when ALPN picks
	// http/1.1); h2 serves the TLS connections that negotiate HTTP/2 and
	// the cleartext ones opening with HTTP/2's preface.
	h1 *h1server
	h2 *h2server
	// stopSweep ends the idle upstream connection sweeper.
	stopSweep chan struct{}

	redirectPort string // ":port" suffix for SSL redirects, "" for 443
	notFound     *series
	// mirrorSlots counts the mirror requests under way.
	mirrorSlots atomic.Int64
	// replayBufs are the buffers of request bodies kept for retries
	// (replay.go).
	replayBufs sync.Pool
	// accessRT is the access control state that outlives a
	// configuration (access.go).
	accessRT *accessRuntime
	// requestTracing is the registered request tracers' list, nil while
	// there is none (tracehub.go).
	requestTracing atomic.Pointer[[]*func(*RequestRecord)]
	tracers        requestTracers
	// upstreamWatch is the registry of live upstream connections and
	// the watch told of them (upstream_watch.go).
	upstreamWatch upstreamWatcher
}

// state is one compiled configuration, swapped atomically as a whole.
type state struct {
	table    *RouteTable
	gateways gwTables
	streams  streamTables
	// frontendTLS are the TLS configurations of frontends that need
	// their own.
	frontendTLS frontendTLSConfigs
	pools       map[string]*pool
	certs       *certStore
}

// New creates a proxy with an empty configuration (every request gets 404)
// and a freshly generated self-signed default certificate.
func New(opts Options) (*Proxy, error) {
	opts.setDefaults()
	p := &Proxy{opts: opts, log: opts.Logger, stopSweep: make(chan struct{})}
	p.h1 = newH1Server(p)
	p.h2 = newH2Server(p)
	p.replayBufs.New = newReplayBuf(max(opts.RetryBodyBytes, 0))
	m, err := newMetrics(opts.Registry)
	if err != nil {
		return nil, err
	}
	p.metrics = m
	p.series = newSeriesSet(m)
	p.notFound = m.newSeries("", "", "")
	p.accessRT = newAccessRuntime(&p.opts)
	if opts.HTTPSPort != 443 {
		p.redirectPort = fmt.Sprintf(":%d", opts.HTTPSPort)
	}
	if p.defCert, err = generateDefaultCert(time.Now()); err != nil {
		return nil, fmt.Errorf("default certificate: %w", err)
	}
	if opts.AccessLog != nil {
		p.access = newAccessLog(opts.AccessLog)
	}
	table, errs := Compile(Config{})
	if table == nil {
		return nil, fmt.Errorf("compile empty config: %w", errors.Join(errs...))
	}
	certs, _ := newCertStore(nil, p.defCert)
	p.state.Store(&state{table: table, pools: map[string]*pool{}, certs: certs})

	go p.sweeper(p.stopSweep)
	p.tlsConf = &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			return p.state.Load().certs.get(hello.ServerName), nil
		},
		// Some frontends have a configuration of their own (frontend_tls.go).
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			if fc := p.state.Load().frontendTLS; len(fc) > 0 {
				return fc[localAddrPort(hello.Conn)], nil
			}
			return nil, nil
		},
	}
	return p, nil
}

// Update compiles cfg and swaps it in atomically. Upstream pools are kept
// by Upstream.Name and updated in place, so keep-alive connections to
// endpoints that stay survive; pools and endpoints that disappear close
// their connections once their in-flight requests finish. Requests already
// routed finish on the configuration they started with.
//
// The returned errors describe the parts of cfg that were skipped (an
// invalid route, an unusable certificate); the rest is applied. If the
// configuration cannot be compiled at all, the previous one stays.
func (p *Proxy) Update(cfg Config) []error {
	p.mu.Lock()
	defer p.mu.Unlock()
	table, errs := Compile(cfg)
	if table == nil {
		return append(errs, errors.New("configuration not applied"))
	}
	p.accessRT.attach(&cfg)
	gateways, gerrs := compileGateways(cfg.Listeners)
	errs = append(errs, gerrs...)
	streams, serrs := compileStreams(cfg.Listeners)
	errs = append(errs, serrs...)
	frontendTLS, cerrs := compileFrontendTLS(cfg.Listeners, p.tlsConf)
	errs = append(errs, cerrs...)
	old := p.state.Load()
	ups := table.Upstreams()
	pools := make(map[string]*pool, len(ups))
	var replaced []*pool
	for name, up := range ups {
		s, err := settingsFor(up, &p.opts)
		if err != nil {
			errs = append(errs, err)
		}
		s.watch = &p.upstreamWatch
		pl := old.pools[name]
		if pl == nil || !pl.settings.equal(s) {
			if pl != nil {
				replaced = append(replaced, pl)
			}
			pl = newPool(name, s)
		}
		pl.update(up, p.opts.MaxHeaderBytes)
		pools[name] = pl
	}
	certs, cerrs := newCertStore(cfg.Certificates, p.defCert)
	errs = append(errs, cerrs...)

	keep := make(map[seriesKey]*Upstream)
	for i := range cfg.Routes {
		r := &cfg.Routes[i]
		if up := ups[r.Upstream]; up != nil {
			keep[seriesKey{ingress: r.Ingress, upstream: up.Name}] = up
		}
		// A route's rules may send to other upstreams (a canary) or
		// answer themselves (a redirect, counted without upstream).
		if len(r.Rules) > 0 {
			keep[seriesKey{ingress: r.Ingress}] = nil
		}
		for ki := range r.Rules {
			for _, b := range r.Rules[ki].Backends {
				if up := ups[b.Upstream]; up != nil {
					keep[seriesKey{ingress: r.Ingress, upstream: up.Name}] = up
				}
			}
		}
	}
	if up := ups[cfg.DefaultUpstream]; up != nil {
		keep[seriesKey{upstream: up.Name}] = up
	}
	// An HTTPRoute's requests are counted under its namespace/name.
	for i := range cfg.Listeners {
		for ri := range cfg.Listeners[i].Routes {
			r := &cfg.Listeners[i].Routes[ri]
			keep[seriesKey{ingress: r.Source}] = nil
			for ki := range r.Rules {
				for _, b := range r.Rules[ki].Backends {
					if up := ups[b.Upstream]; up != nil {
						keep[seriesKey{ingress: r.Source, upstream: up.Name}] = up
					}
				}
			}
		}
	}
	p.series.reset(keep)

	p.state.Store(&state{table: table, gateways: gateways, streams: streams, frontendTLS: frontendTLS, pools: pools, certs: certs})

	for _, pl := range replaced {
		pl.retire()
	}
	for name, pl := range old.pools {
		if pools[name] == nil {
			pl.retire()
		}
	}
	p.log.Debug("proxy configuration applied", "routes", len(cfg.Routes), "listeners", len(cfg.Listeners), "upstreams", len(ups),
		"certificates", len(cfg.Certificates), "errors", len(errs))
	return errs
}

// ServeHTTP serves plain HTTP on l until Shutdown. The accepted
// connections' local address is taken as the address the client
// connected to (X-Forwarded-Port). It returns nil after Shutdown.
func (p *Proxy) ServeHTTP(l net.Listener) error {
	if err := p.h1.serve(l, nil); err != nil {
		return fmt.Errorf("serve http on %s: %w", l.Addr(), err)
	}
	return nil
}

// ServeHTTPS serves HTTPS (HTTP/2 and HTTP/1.1 by ALPN) on l until
// Shutdown, choosing certificates by SNI from the current Config. TLS is
// terminated here; connections negotiating h2 go to the HTTP/2 server
// (h2server.go).
func (p *Proxy) ServeHTTPS(l net.Listener) error {
	if err := p.h1.serve(l, p.tlsConf); err != nil {
		return fmt.Errorf("serve https on %s: %w", l.Addr(), err)
	}
	return nil
}

// Shutdown stops accepting connections and waits, bounded by ctx, for
// active requests, HTTP/2 streams, upgraded connections (WebSocket) and TLS
// streams to finish; when ctx ends first, the rest is closed. The access
// log is flushed.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.h1.stopAccepting(ctx)
	var wg sync.WaitGroup
	var e1, e2 error
	wg.Go(func() { e1 = p.h2.shutdown(ctx) })
	wg.Go(func() { e2 = p.h1.shutdown(ctx) })
	wg.Wait()
	if ctx.Err() != nil {
		// Out of time: what is left is cut, as for HTTP/1.x.
		p.h2.closeAll()
	}
	p.mu.Lock()
	for _, pl := range p.state.Load().pools {
		pl.retire()
	}
	select {
	case <-p.stopSweep:
	default:
		close(p.stopSweep)
	}
	p.mu.Unlock()
	if p.access != nil {
		p.access.close()
	}
	return errors.Join(e1, e2)
}

// copyBufs recycles body copy buffers.
const copyBufSize = 32 << 10

var copyBufs = sync.Pool{New: func() any { return new([copyBufSize]byte) }}
