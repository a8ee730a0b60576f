package l7proxy

import (
	"fmt"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// RateLimit limits each client address's requests to one route's Ingress
// on this node, as ingress-nginx's limit-* annotations do per controller
// pod: the limits are not shared between nodes.
type RateLimit struct {
	// RPS and RPM are the sustained requests per second and per minute
	// (0: no such limit); a client may exceed them by BurstMultiplier
	// times the rate at once (nginx's limit_req burst, nodelay).
	RPS, RPM        int
	BurstMultiplier int // 0: 5, as ingress-nginx
	// Connections caps the client's requests under way at once (0: no
	// cap).
	Connections int
	// Exempt addresses are not limited.
	Exempt []netip.Prefix
	// Status answers a limited request (0: 503, ingress-nginx's default
	// limit-req-status-code).
	Status int
}

// key identifies the limits: a limiter's counters survive a configuration
// update only when the limits are the same (the exempt addresses are read
// from the current RateLimit).
func (r *RateLimit) key() string {
	return fmt.Sprintf("rps=%d rpm=%d burst=%d conn=%d status=%d", r.RPS, r.RPM, r.burst(), r.Connections, r.Status)
}

func (r *RateLimit) burst() int {
	if r.BurstMultiplier <= 0 {
		return 5
	}
	return r.BurstMultiplier
}

// limiterShards spreads the clients over locks; a power of two.
const limiterShards = 16

// rateLimiter holds the per-client state of one RateLimit. Each rate is a
// GCRA: one "theoretical arrival time" per client and rate, so an entry is
// a few words. Memory is bounded: each shard tracks at most max/shards
// clients; a new client in a full shard evicts another one, preferably
// one back to its full allowance (which loses nothing). Under a flood of
// distinct addresses an evicted client may thus get a fresh burst: the
// price of a bounded table, the same trade nginx's limit_req zone makes
// when it is full.
type rateLimiter struct {
	cfg *RateLimit
	// interval and tolerance per rate, in nanoseconds (0: rate off).
	perSec, perMin       int64
	perSecTol, perMinTol int64
	status               int
	maxPerShard          int
	shards               [limiterShards]limiterShard
}

type limiterShard struct {
	mu sync.Mutex
	// tat are the clients' theoretical arrival times (UnixNano) for the
	// per-second and per-minute rates.
	tat map[netip.Addr]gcraState
	// conns counts requests under way per client; entries exist only
	// while a request is, so the map is bounded by the requests in flight.
	conns map[netip.Addr]int32
}

type gcraState struct{ sec, min int64 }

// evictScan is how many entries an insertion into a full shard looks at
// for one to evict; map iteration starts at a random place, so this is a
// random sample.
const evictScan = 8

func newRateLimiter(cfg *RateLimit, maxClients int) *rateLimiter {
	l := &rateLimiter{cfg: cfg, status: cfg.Status, maxPerShard: max(maxClients/limiterShards, 1)}
	if l.status == 0 {
		l.status = http.StatusServiceUnavailable
	}
	b := int64(cfg.burst())
	if cfg.RPS > 0 {
		l.perSec = int64(time.Second) / int64(cfg.RPS)
		l.perSecTol = l.perSec * b * int64(cfg.RPS)
	}
	if cfg.RPM > 0 {
		l.perMin = int64(time.Minute) / int64(cfg.RPM)
		l.perMinTol = l.perMin * b * int64(cfg.RPM)
	}
	for i := range l.shards {
		l.shards[i].tat = map[netip.Addr]gcraState{}
		l.shards[i].conns = map[netip.Addr]int32{}
	}
	return l
}

func (l *rateLimiter) shard(a netip.Addr) *limiterShard {
	b := a.As16()
	h := uint32(2166136261)
	for _, c := range b {
		h = (h ^ uint32(c)) * 16777619
	}
	return &l.shards[h&(limiterShards-1)]
}

// admit counts a request of client: 0 when it may go on, else the status
// and the denial reason. A request let through with a connection cap holds
// a slot until releaseAccess.
func (l *rateLimiter) admit(tx *txn, client netip.Addr) (int, string) {
	return l.admitAt(tx, client, time.Now().UnixNano())
}

func (l *rateLimiter) admitAt(tx *txn, client netip.Addr, now int64) (int, string) {
	s := l.shard(client)
	s.mu.Lock()
	defer s.mu.Unlock()
	// As ingress-nginx orders them: connections, then per minute, then
	// per second.
	if c := l.cfg.Connections; c > 0 && s.conns[client] >= int32(c) {
		return l.status, denyConnLimit
	}
	if l.perSec != 0 || l.perMin != 0 {
		st, ok := s.tat[client]
		if !ok && len(s.tat) >= l.maxPerShard {
			s.evict(now)
		}
		next := st
		if !gcra(&next.min, now, l.perMin, l.perMinTol) || !gcra(&next.sec, now, l.perSec, l.perSecTol) {
			return l.status, denyRateLimit
		}
		s.tat[client] = next
	}
	if l.cfg.Connections > 0 {
		s.conns[client]++
		tx.access.conn = true
	}
	return 0, ""
}

// gcra advances one rate's theoretical arrival time; false: over the
// limit (tat is left as it was). A client at rest may send the burst and
// one more at once, as nginx's limit_req with nodelay.
func gcra(tat *int64, now, interval, tolerance int64) bool {
	if interval == 0 {
		return true
	}
	t := max(*tat, now)
	if t-now > tolerance {
		return false
	}
	*tat = t + interval
	return true
}

// evict makes room in a full shard: an entry back to its full allowance
// if the sample has one, else the first of the sample.
func (s *limiterShard) evict(now int64) {
	var victim netip.Addr
	n := 0
	for a, st := range s.tat {
		if !victim.IsValid() {
			victim = a
		}
		if st.sec <= now && st.min <= now {
			victim = a
			break
		}
		if n++; n >= evictScan {
			break
		}
	}
	delete(s.tat, victim)
}

// release ends a request holding a connection slot.
func (l *rateLimiter) release(client netip.Addr) {
	s := l.shard(client)
	s.mu.Lock()
	if n := s.conns[client] - 1; n > 0 {
		s.conns[client] = n
	} else {
		delete(s.conns, client)
	}
	s.mu.Unlock()
}

// sweep forgets the clients back to their full allowance.
func (l *rateLimiter) sweep(now int64) {
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		for a, st := range s.tat {
			if st.sec <= now && st.min <= now {
				delete(s.tat, a)
			}
		}
		s.mu.Unlock()
	}
}

// clients is how many client addresses the limiter tracks.
func (l *rateLimiter) clients() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.tat) + len(s.conns)
		s.mu.Unlock()
	}
	return n
}
