package trace

import (
	"container/list"
	"net/netip"
	"sync"
	"time"

	"github.com/nodegress/nodegress/loader"
)

// Bounds of the connection cache request records are joined with.
const (
	// defaultConnCacheSize bounds the connections remembered: with at
	// most maxSteering+maxDrops records of about 250 bytes each, 16 MiB
	// at the very most, 8 MiB for connections that saw no drop.
	defaultConnCacheSize = 8192
	// defaultConnCacheTTL forgets a connection that saw no packet for
	// that long: its steering happened before its requests, but a
	// keep-alive connection's packets keep it fresh.
	defaultConnCacheTTL = 2 * time.Minute
	// maxSteering and maxDrops bound the events kept per connection:
	// the first decisions (the handshake's) and the first drops.
	maxSteering = 4
	maxDrops    = 4
)

// connKey is a connection's tuple with its two ends in a fixed order, so
// both directions of a connection share one entry.
type connKey struct {
	a, b  netip.AddrPort
	proto loader.Proto
}

func keyOf(proto loader.Proto, src, dst netip.AddrPort) connKey {
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if src.Compare(dst) > 0 {
		src, dst = dst, src
	}
	return connKey{a: src, b: dst, proto: proto}
}

// connEvents are the events kept of one connection.
type connEvents struct {
	key      connKey
	seen     time.Time
	steering []Record
	drops    []Record
}

// connCache remembers the first datapath decisions and the drops of
// recent connections, least recently seen first out. It is bounded in
// connections and events per connection, and forgets connections idle
// for longer than ttl; what it evicts or drops is counted.
type connCache struct {
	mu      sync.Mutex
	size    int
	ttl     time.Duration
	now     func() time.Time
	entries map[connKey]*list.Element // of *connEvents
	lru     list.List                 // front: most recently seen
	st      cacheStats
}

// cacheStats counts what the bounds cost.
type cacheStats struct {
	// evicted counts connections pushed out by newer ones before their
	// time was up.
	evicted uint64
	// eventsDropped counts events not kept because their connection
	// already had as many as it may keep.
	eventsDropped uint64
}

func newConnCache(size int, ttl time.Duration, now func() time.Time) *connCache {
	return &connCache{size: size, ttl: ttl, now: now, entries: make(map[connKey]*list.Element)}
}

// isDrop tells events that go to a connection's drops.
func isDrop(ev *loader.Event) bool {
	return ev.KernelDrop != nil || ev.Verdict == loader.VerdictDrop
}

// add keeps ev under its connection (and under its translated tuple's
// when the datapath rewrote it); rec builds its wire form, only when it
// is kept.
func (c *connCache) add(ev *loader.Event, rec func() Record) {
	keys := [2]connKey{keyOf(ev.Orig.Proto, ev.Orig.Src, ev.Orig.Dst)}
	n := 1
	if x := ev.Xlated; x != (loader.Tuple{}) {
		if k := keyOf(x.Proto, x.Src, x.Dst); k != keys[0] {
			keys[1], n = k, 2
		}
	}
	drop := isDrop(ev)
	var r *Record
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	c.expire(now)
	for _, k := range keys[:n] {
		e := c.entry(k, now)
		list := &e.steering
		limit := maxSteering
		if drop {
			list, limit = &e.drops, maxDrops
		}
		if len(*list) >= limit {
			c.st.eventsDropped++
			continue
		}
		if r == nil {
			v := rec()
			r = &v
		}
		*list = append(*list, *r)
	}
}

// entry returns k's entry, seen now, creating it (and evicting the least
// recently seen when full).
func (c *connCache) entry(k connKey, now time.Time) *connEvents {
	if el, ok := c.entries[k]; ok {
		e := el.Value.(*connEvents)
		e.seen = now
		c.lru.MoveToFront(el)
		return e
	}
	if c.lru.Len() >= c.size {
		old := c.lru.Back()
		delete(c.entries, old.Value.(*connEvents).key)
		c.lru.Remove(old)
		c.st.evicted++
	}
	e := &connEvents{key: k, seen: now}
	c.entries[k] = c.lru.PushFront(e)
	return e
}

// expire forgets the connections idle for longer than ttl.
func (c *connCache) expire(now time.Time) {
	for el := c.lru.Back(); el != nil; el = c.lru.Back() {
		e := el.Value.(*connEvents)
		if now.Sub(e.seen) <= c.ttl {
			return
		}
		delete(c.entries, e.key)
		c.lru.Remove(el)
	}
}

// lookup returns copies of a connection's events.
func (c *connCache) lookup(k connKey) (steering, drops []Record) {
	steering, drops = []Record{}, []Record{}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expire(c.now())
	if el, ok := c.entries[k]; ok {
		e := el.Value.(*connEvents)
		steering = append(steering, e.steering...)
		drops = append(drops, e.drops...)
	}
	return steering, drops
}

// join fills in the events of a request's two connections.
func (c *connCache) join(r *Request) {
	ct := r.Client.Tuple
	r.Client.Steering, r.Client.Drops = c.lookup(keyOf(loader.TCP, ct.Src, ct.Dst))
	r.Upstream.Drops = []Record{}
	if ut := r.Upstream.Tuple; ut.Src.IsValid() && ut.Dst.IsValid() {
		_, r.Upstream.Drops = c.lookup(keyOf(loader.TCP, ut.Src, ut.Dst))
	}
}

func (c *connCache) stats() cacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st
}

// len is the number of connections remembered.
func (c *connCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}
