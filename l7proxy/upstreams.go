package l7proxy

import (
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Ejection backoff after a failed connect: the first failure keeps an
// endpoint out of rotation for ejectMin, each further consecutive failure
// doubles that up to ejectMax. A successful round trip resets it.
const (
	ejectMin = time.Second
	ejectMax = 30 * time.Second
)

// maxIdlePerEndpoint bounds the keep-alive connections kept per endpoint.
// It is sized for a busy single proxy core talking to few endpoints: each
// request in flight holds one HTTP/1.1 connection, and HTTP/2 clients
// multiplex (64 connections × 10 streams need 640), so a smaller bound
// would close and redial connections under steady load. Idle connections
// beyond it are closed.
const maxIdlePerEndpoint = 1024

// poolSettings are the parts of an Upstream that its endpoints' transports
// are built from. When they change the pool is replaced; otherwise it is
// updated in place so keep-alive connections survive.
type poolSettings struct {
	protocol       UpstreamProtocol
	connectTimeout time.Duration
	readTimeout    time.Duration
	idleTimeout    time.Duration
	sendTimeout    time.Duration // 0: none
	// verify, when set, is how an HTTPS upstream's certificate is
	// checked; tlsConf is built from it (nil: encrypted, not verified).
	verify  *UpstreamTLS
	tlsConf *tls.Config
	// proxyProtocol: see Upstream.ProxyProtocol.
	proxyProtocol uint8
	// watch is the proxy's upstream watch (upstream_watch.go); nil in
	// pools made without a proxy.
	watch *upstreamWatcher
}

// equal reports whether a pool made with o would work as one made with
// s, so the pool (and its connections) can stay.
func (s poolSettings) equal(o poolSettings) bool {
	return s.protocol == o.protocol && s.connectTimeout == o.connectTimeout && s.readTimeout == o.readTimeout &&
		s.idleTimeout == o.idleTimeout && s.sendTimeout == o.sendTimeout && s.verify.equal(o.verify) && s.proxyProtocol == o.proxyProtocol
}

// pool holds the endpoints of one upstream and balances requests over them.
type pool struct {
	name     string
	settings poolSettings
	balance  atomic.Uint32 // Balance
	scheme   string

	rr atomic.Uint64 // round-robin cursor

	// ready is the immutable list of endpoints that take new requests
	// (not terminating); replaced on every update.
	ready atomic.Pointer[[]*endpoint]

	mu  sync.Mutex                   // serializes updates
	all map[netip.AddrPort]*endpoint // ready and terminating endpoints
}

// endpoint is one pod address with its own keep-alive connection pool.
type endpoint struct {
	addr     netip.AddrPort
	hostport string // addr formatted once, for the request URL and logs
	rt       *http.Transport
	// h1 holds the keep-alive HTTP/1.1 connections of a plain-HTTP
	// upstream; rt serves h2c and HTTPS upstreams.
	h1 h1idle

	inflight atomic.Int64
	// ejectedUntil is a UnixNano deadline; 0 when not ejected, so the hot
	// path needs no clock read for healthy endpoints.
	ejectedUntil atomic.Int64
	backoff      atomic.Int64 // current ejection length, 0 after success
	retired      atomic.Bool
	// pod names the endpoint's pod and node (nil: unknown); the same
	// address may belong to another pod after an update.
	pod atomic.Pointer[podRef]
}

// podRef is the pod behind an endpoint address.
type podRef struct{ pod, node string }

// settingsFor returns an upstream's pool settings; an error says its TLS
// verification cannot be set up (its connections are then refused).
func settingsFor(up *Upstream, o *Options) (poolSettings, error) {
	s := poolSettings{
		protocol:       up.Protocol,
		connectTimeout: up.ConnectTimeout,
		readTimeout:    up.ReadTimeout,
		idleTimeout:    up.IdleTimeout,
		sendTimeout:    up.SendTimeout,
		proxyProtocol:  up.ProxyProtocol,
	}
	var err error
	if up.TLS != nil && up.Protocol == ProtocolHTTPS {
		s.verify = up.TLS
		if s.tlsConf, err = up.TLS.clientConfig(); err != nil {
			err = fmt.Errorf("upstream %s: %w", up.Name, err)
			s.tlsConf = refusingConfig(err)
		}
	}
	if s.connectTimeout <= 0 {
		s.connectTimeout = o.DefaultConnectTimeout
	}
	if s.readTimeout <= 0 {
		s.readTimeout = o.DefaultReadTimeout
	}
	if s.idleTimeout <= 0 {
		s.idleTimeout = o.DefaultIdleTimeout
	}
	return s, err
}

func newPool(name string, s poolSettings) *pool {
	p := &pool{
		name:     name,
		settings: s,
		scheme:   "http",
		all:      make(map[netip.AddrPort]*endpoint),
	}
	if s.protocol == ProtocolHTTPS {
		p.scheme = "https"
	}
	empty := []*endpoint{}
	p.ready.Store(&empty)
	return p
}

// update replaces the pool's endpoints. Endpoints that stay keep their
// connections and ejection state; removed ones are retired once their
// in-flight requests finish.
func (p *pool) update(up *Upstream, maxHeaderBytes int) {
	p.balance.Store(uint32(up.Balance))
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := make(map[netip.AddrPort]bool, len(up.Endpoints))
	ready := make([]*endpoint, 0, len(up.Endpoints))
	for _, e := range up.Endpoints {
		if !e.Addr.IsValid() || seen[e.Addr] {
			continue
		}
		seen[e.Addr] = true
		ep := p.all[e.Addr]
		if ep == nil {
			ep = newEndpoint(e.Addr, p.settings, maxHeaderBytes)
			p.all[e.Addr] = ep
		}
		ep.setPod(e.Pod, e.Node)
		if !e.Terminating {
			ready = append(ready, ep)
		}
	}
	p.ready.Store(&ready)
	for addr, ep := range p.all {
		if !seen[addr] {
			delete(p.all, addr)
			ep.retire()
		}
	}
}

// retire closes every endpoint's idle connections once it is unused.
func (p *pool) retire() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for addr, ep := range p.all {
		delete(p.all, addr)
		ep.retire()
	}
	empty := []*endpoint{}
	p.ready.Store(&empty)
}

// pick chooses an endpoint for a new request, skipping exclude (an
// endpoint that already failed this request) and ejected endpoints. When
// every candidate is ejected it still returns one: trying a possibly dead
// endpoint beats a certain 503. It returns nil only when there is no
// ready endpoint other than exclude.
func (p *pool) pick(exclude *endpoint) *endpoint {
	eps := *p.ready.Load()
	n := len(eps)
	switch {
	case n == 0:
		return nil
	case n == 1:
		if eps[0] == exclude {
			return nil
		}
		return eps[0]
	}
	var now int64
	if Balance(p.balance.Load()) == LeastRequest {
		i := rand.IntN(n)
		j := rand.IntN(n - 1)
		if j >= i {
			j++
		}
		a, b := eps[i], eps[j]
		aok := a != exclude && !a.ejected(&now)
		bok := b != exclude && !b.ejected(&now)
		switch {
		case aok && bok:
			if b.inflight.Load() < a.inflight.Load() {
				return b
			}
			return a
		case aok:
			return a
		case bok:
			return b
		}
		// Both unusable: fall through to a scan from a random start.
	}
	start := int(p.rr.Add(1) % uint64(n))
	for i := range n {
		e := eps[(start+i)%n]
		if e != exclude && !e.ejected(&now) {
			return e
		}
	}
	for i := range n {
		if e := eps[(start+i)%n]; e != exclude {
			return e
		}
	}
	return nil
}

func newEndpoint(addr netip.AddrPort, s poolSettings, maxHeaderBytes int) *endpoint {
	return &endpoint{
		addr:     addr,
		hostport: addr.String(),
		rt:       newTransport(s, maxHeaderBytes),
	}
}

// ejected reports whether the endpoint is in its ejection backoff. now is
// read lazily and shared across calls of one pick.
func (e *endpoint) ejected(now *int64) bool {
	until := e.ejectedUntil.Load()
	if until == 0 {
		return false
	}
	if *now == 0 {
		*now = time.Now().UnixNano()
	}
	return *now < until
}

// eject takes the endpoint out of rotation after a failed connect and
// returns for how long.
func (e *endpoint) eject() time.Duration {
	b := time.Duration(e.backoff.Load())
	switch {
	case b == 0:
		b = ejectMin
	case b < ejectMax:
		b = min(2*b, ejectMax)
	}
	e.backoff.Store(int64(b))
	e.ejectedUntil.Store(time.Now().Add(b).UnixNano())
	return b
}

// succeeded clears the ejection state; the loads keep the common case
// free of writes to shared cache lines.
func (e *endpoint) succeeded() {
	if e.backoff.Load() != 0 {
		e.backoff.Store(0)
	}
	if e.ejectedUntil.Load() != 0 {
		e.ejectedUntil.Store(0)
	}
}

func (e *endpoint) acquire() { e.inflight.Add(1) }

func (e *endpoint) release() {
	if e.inflight.Add(-1) == 0 && e.retired.Load() {
		e.closeIdle()
	}
}

func (e *endpoint) closeIdle() {
	e.rt.CloseIdleConnections()
	e.closeIdleH1()
}

// retire marks the endpoint gone; its idle connections close now or when
// its last in-flight request ends. Upgraded connections (WebSocket) are
// not owned by the transport and stay open.
func (e *endpoint) retire() {
	e.retired.Store(true)
	if e.inflight.Load() == 0 {
		e.closeIdle()
	}
}

// setPod records the pod behind the endpoint, replacing the record only
// when it changed.
func (e *endpoint) setPod(pod, node string) {
	old := e.pod.Load()
	switch {
	case pod == "" && node == "":
		if old != nil {
			e.pod.Store(nil)
		}
	case old == nil || old.pod != pod || old.node != node:
		e.pod.Store(&podRef{pod: pod, node: node})
	}
}
