package l7proxy

import (
	"net/netip"
	"sync"
	"sync/atomic"
)

// UpstreamWatch is told of every live upstream connection of the proxy
// while it is set, as local -> remote: of those open when it begins at
// once, and of those dialled after before their first packet leaves, so
// that the kernel drops of their packets can be traced, even those of a
// connect that fails. It returns the function that ends the watch of that
// connection; the proxy calls it once, when the connection is closed
// (shortly after, for a connect that failed) or when the watch stops or
// is replaced, whichever comes first. It is called with the proxy's
// registry of upstream connections locked: it must not block, nor call
// WatchUpstreams or the function that stops it.
type UpstreamWatch func(local, remote netip.AddrPort) (unwatch func())

// upstreamWatcher is the registry of the proxy's live upstream
// connections (those of its HTTP/1.1 pools, of its http.Transports for
// h2c and HTTPS upstreams and of its TLS and TCP streams) and the watch
// they are told to. A connection is added when it is dialled and removed
// when it is closed: one lock each, nothing per request.
type upstreamWatcher struct {
	// fn is the watch, nil while there is none; read without mu on
	// every dial, written with mu held.
	fn atomic.Pointer[UpstreamWatch]

	mu   sync.Mutex
	live map[*liveUpstream]struct{}
}

// liveUpstream is one upstream connection in the registry.
type liveUpstream struct {
	w *upstreamWatcher
	// local and remote are the connection's addresses (IPv4-mapped ones
	// unmapped); zero until known.
	local, remote netip.AddrPort
	// attempts orders a dial's IPv4 attempts, which may run on the
	// dialer's goroutines, with the dial's return (dialled).
	attempts sync.Mutex
	dialled  bool
	// registered is set once the connection is in w.live (while it is
	// dialled, under attempts, before any other goroutine sees u).
	registered bool
	// unwatch ends the connection's watch; nil while not watched.
	// Guarded by w.mu.
	unwatch func()
}

// WatchUpstreams has w told of every upstream connection the proxy has
// open now (HTTP/1.1, h2c and HTTPS upstreams, TLS passthrough and TCP
// streams), before it returns, and of every one it dials from now on,
// until stop is called; then the watches of the connections still open
// end. There is one watch at a time: a later call replaces an earlier
// one, ending the earlier one's watches, and the earlier one's stop then
// does nothing. Only IPv4 connections are told.
func (p *Proxy) WatchUpstreams(w UpstreamWatch) (stop func()) {
	return p.upstreamWatch.start(w)
}

func (w *upstreamWatcher) start(fn UpstreamWatch) (stop func()) {
	f := &fn
	w.mu.Lock()
	defer w.mu.Unlock()
	w.fn.Store(f)
	for u := range w.live {
		u.endWatch()
		u.watch(fn)
	}
	return func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.fn.Load() != f {
			return
		}
		w.fn.Store(nil)
		for u := range w.live {
			u.endWatch()
		}
	}
}

// add registers u with the addresses it has, and has the watch, if any,
// told of it.
func (w *upstreamWatcher) add(u *liveUpstream) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.live == nil {
		w.live = make(map[*liveUpstream]struct{})
	}
	w.live[u] = struct{}{}
	u.registered = true
	if fn := w.fn.Load(); fn != nil {
		u.watch(*fn)
	}
}

// remove unregisters u and returns the function that ends its watch (nil
// when it is not watched), for the caller to run.
func (w *upstreamWatcher) remove(u *liveUpstream) (unwatch func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.live, u)
	unwatch, u.unwatch = u.unwatch, nil
	return unwatch
}

// watch tells fn of u, an IPv4 connection; w.mu is held.
func (u *liveUpstream) watch(fn UpstreamWatch) {
	if u.local.Addr().Is4() && u.remote.Addr().Is4() && u.local.Port() != 0 {
		u.unwatch = fn(u.local, u.remote)
	}
}

// endWatch ends u's watch, if any; w.mu is held.
func (u *liveUpstream) endWatch() {
	if u.unwatch != nil {
		u.unwatch()
		u.unwatch = nil
	}
}

// closed unregisters the connection, which was closed, ending its watch.
// It may be called more than once; u may be nil (no registry).
func (u *liveUpstream) closed() {
	if u == nil {
		return
	}
	w := u.w
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.live, u)
	u.endWatch()
}
