package trace

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/nodegress/nodegress/loader"
)

// TypeRequest is the "type" of a request record line.
const TypeRequest = "request"

// Request is one HTTP request through the agent's L7 proxy, joined with
// the datapath's and the kernel's events of its two connections: one
// self-contained line, so records from several agents can be merged.
// Every field is always present; lists are empty rather than null.
type Request struct {
	Type string `json:"type"`
	// ID is the request ID the proxy sent upstream as X-Request-ID and
	// wrote to its access log.
	ID   string    `json:"id"`
	Time time.Time `json:"time"`
	// Node is the agent's node: where the request entered the cluster.
	Node   string        `json:"node"`
	Method string        `json:"method"`
	Host   string        `json:"host"`
	Path   string        `json:"path"`
	Proto  string        `json:"proto"`
	Status int           `json:"status"`
	Bytes  int64         `json:"bytes"`
	Client RequestClient `json:"client"`
	Route  RequestRoute  `json:"route"`
	// Upstream is the upstream connection; its fields are empty when the
	// proxy answered by itself.
	Upstream RequestUpstream `json:"upstream"`
	// DurationMS is from the request head to the end of the response,
	// UpstreamMS from the last attempt's send to the same end.
	DurationMS float64 `json:"duration_ms"`
	UpstreamMS float64 `json:"upstream_ms"`
	Retried    bool    `json:"retried"`
	Error      string  `json:"error"`
}

// RequestClient is the client's connection to the proxy.
type RequestClient struct {
	// Tuple is client -> the address it connected to (the frontend).
	Tuple Tuple  `json:"tuple"`
	TLS   bool   `json:"tls"`
	SNI   string `json:"sni"`
	ALPN  string `json:"alpn"`
	// Steering are the datapath's first decisions on the connection's
	// packets (the XDP or tc verdict that passed it to the proxy).
	Steering []Record `json:"steering"`
	// Drops are the datapath's and the kernel's drops of its packets.
	Drops []Record `json:"drops"`
}

// RequestRoute is the route and rule that matched; Kind is "ingress" or
// "httproute", empty when none did.
type RequestRoute struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
	Host string `json:"host"`
	Path string `json:"path"`
	// Rule is the index of the HTTPRoute rule (or of the Ingress rule's
	// annotation rule) that matched; -1 when there is none.
	Rule int `json:"rule"`
}

// RequestUpstream is the proxy's connection to the backend pod.
type RequestUpstream struct {
	// Service is the upstream's name ("namespace/service:port").
	Service string `json:"service"`
	// Tuple is proxy -> pod, of the last attempt.
	Tuple Tuple `json:"tuple"`
	// Pod is "namespace/name"; Node where the pod runs.
	Pod  string `json:"pod"`
	Node string `json:"node"`
	// Drops are the datapath's and the kernel's drops of its packets.
	Drops []Record `json:"drops"`
}

// RequestSource is the L7 proxy side of request tracing; the agent
// adapts its proxy to it.
type RequestSource interface {
	// TraceRequests calls fn with every request that finishes until stop
	// is called. fn must not keep r; it may be called concurrently.
	TraceRequests(fn func(r *Request)) (stop func())
}

// UpstreamWatcher is a RequestSource that can have the kernel's drops on
// the proxy's upstream connections reported: while it watches, the proxy
// registers every upstream connection it has open or dials (those of TLS
// passthrough and TCP streams too) with the datapath's kernel drop tracing
// (loader.Datapath.WatchFlow), so that they join the records' upstream
// drops and reach kernel drop clients. The agent's adapter implements it.
type UpstreamWatcher interface {
	// WatchUpstreams starts watching the connections open now and those
	// dialled from now on, until stop is called.
	WatchUpstreams() (stop func())
}

// EventSyncer is a Source that can tell when every event written before
// a moment was read: a request's record is joined after that, so that the
// steering of its connection is in it however far the event reader lags.
// The loader's Datapath implements it.
type EventSyncer interface {
	SyncEvents(ctx context.Context) error
}

// upstreamKnown reports whether the request went to a backend.
func (r *Request) upstreamKnown() bool { return r.Upstream.Tuple.Dst.IsValid() }

// errNoRequests refuses a requests client of an agent without a proxy.
var errNoRequests = errors.New("requests: this agent runs no L7 proxy")

// requestState is the server's request tracing: the source, the clients
// that asked for requests and the cache of connection events the records
// are joined with. Its fields are guarded by the Server's mu, the cache
// by its own lock.
type requestState struct {
	src     RequestSource
	clients int
	stop    func()
	cache   *connCache
	// join is the joiner of the current subscription (nil when none).
	join *joiner
	// kernelDropClients counts the requests clients that asked for
	// kernel drops; stopWatch ends the proxy's upstream watch they
	// started.
	kernelDropClients int
	stopWatch         func()
	// cacheSize and cacheTTL bound the cache; fields so that tests can
	// shrink them.
	cacheSize int
	cacheTTL  time.Duration
}

// SetRequestSource gives the server the proxy's requests; without one,
// requests clients are refused. Call it before Serve.
func (s *Server) SetRequestSource(src RequestSource) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.req.src = src
}

// checkRequests refuses a requests client the server cannot serve; mu is
// held.
func (s *Server) checkRequests(m *matcher) error {
	if m.req != nil && s.req.src == nil {
		return errNoRequests
	}
	return nil
}

// startRequests counts a requests client, subscribing to the proxy and
// filling the connection cache from the first one on; mu is held.
func (s *Server) startRequests(m *matcher) {
	if m.req == nil {
		return
	}
	s.startUpstreamWatch(m)
	s.req.clients++
	if s.req.clients > 1 {
		return
	}
	size, ttl := s.req.cacheSize, s.req.cacheTTL
	if size == 0 {
		size = defaultConnCacheSize
	}
	if ttl == 0 {
		ttl = defaultConnCacheTTL
	}
	s.req.cache = newConnCache(size, ttl, time.Now)
	s.reqCache.Store(s.req.cache)
	syncer, _ := s.src.(EventSyncer)
	j := newJoiner(syncer, s.sendRequest)
	s.req.join = j
	s.req.stop = s.req.src.TraceRequests(j.publish)
	s.log.Info("request tracing on")
}

// stopRequests uncounts a requests client, unsubscribing after the last;
// mu is held.
func (s *Server) stopRequests(m *matcher) {
	if m.req == nil || s.req.clients == 0 {
		return
	}
	s.stopUpstreamWatch(m)
	s.req.clients--
	if s.req.clients > 0 {
		return
	}
	s.req.stop()
	js := s.req.join.close()
	s.reqCache.Store(nil)
	st := s.req.cache.stats()
	s.log.Info("request tracing off", "connections_evicted", st.evicted, "events_dropped", st.eventsDropped,
		"records_dropped", js.dropped, "joins_unsynced", js.unsynced)
	s.req.stop, s.req.cache, s.req.join = nil, nil, nil
}

// startUpstreamWatch has the proxy's upstream connections watched for
// kernel drops from the first requests client with kernel drops on (the
// kernel drop program is attached by then); mu is held.
func (s *Server) startUpstreamWatch(m *matcher) {
	if !m.kernelDrops {
		return
	}
	s.req.kernelDropClients++
	if w, ok := s.req.src.(UpstreamWatcher); ok && s.req.kernelDropClients == 1 {
		s.req.stopWatch = w.WatchUpstreams()
	}
}

// stopUpstreamWatch ends the watch after the last requests client with
// kernel drops; mu is held.
func (s *Server) stopUpstreamWatch(m *matcher) {
	if !m.kernelDrops || s.req.kernelDropClients == 0 {
		return
	}
	s.req.kernelDropClients--
	if s.req.kernelDropClients == 0 && s.req.stopWatch != nil {
		s.req.stopWatch()
		s.req.stopWatch = nil
	}
}

// cacheEvent keeps a datapath or kernel event for the requests of its
// connection; a no-op unless a requests client listens.
func (s *Server) cacheEvent(ev *loader.Event, dev, svc string) {
	if c := s.reqCache.Load(); c != nil {
		c.add(ev, func() Record { return s.record(ev, dev, svc) })
	}
}

// failedJoinDelay is how long the record of a request that failed waits
// before it is joined: the kernel drops that failed it (a pod's kernel
// dropping the proxy's SYN and answering with a reset) may happen after
// the proxy answered.
const failedJoinDelay = 50 * time.Millisecond

// Bounds of the joiner.
const (
	// joinQueue is how many finished requests may wait to be joined;
	// more are dropped (and counted) rather than slow the proxy down.
	joinQueue = 1024
	// maxSyncWait bounds how long records wait for the event reader: a
	// reader that far behind makes them go out with what it has read.
	maxSyncWait = 250 * time.Millisecond
)

// joiner joins finished requests with their connections' events on its
// own goroutine: each batch after the event reader has read every event
// written before the batch's requests were queued (EventSyncer), so that
// a connection's steering, written before the proxy accepted it, is in
// its records. Records of failed requests are queued failedJoinDelay
// late. The proxy never waits: a full queue drops the record.
type joiner struct {
	syncer EventSyncer
	send   func(*Request)
	queue  chan *Request
	quit   chan struct{}
	done   chan struct{}
	// dropped counts records the full queue refused; unsynced the
	// batches sent without the reader having caught up.
	dropped, unsynced atomic.Uint64
}

// joinStats is what the joiner's bounds cost.
type joinStats struct{ dropped, unsynced uint64 }

func newJoiner(syncer EventSyncer, send func(*Request)) *joiner {
	j := &joiner{syncer: syncer, send: send, queue: make(chan *Request, joinQueue),
		quit: make(chan struct{}), done: make(chan struct{})}
	go j.run()
	return j
}

// publish is the proxy's report of a finished request (it keeps a copy:
// the proxy reuses r).
func (j *joiner) publish(r *Request) {
	c := *r
	if c.Error != "" {
		time.AfterFunc(failedJoinDelay, func() { j.enqueue(&c) })
		return
	}
	j.enqueue(&c)
}

func (j *joiner) enqueue(r *Request) {
	select {
	case <-j.quit:
	case j.queue <- r:
	default:
		j.dropped.Add(1)
	}
}

func (j *joiner) run() {
	defer close(j.done)
	// Each batch is every request queued when it starts: one sync
	// covers them all, so that a reader that only catches up now and
	// then does not slow the joins down to one batch per sync.
	batch := make([]*Request, 0, joinQueue)
	for {
		select {
		case <-j.quit:
			return
		case r := <-j.queue:
			batch = append(batch[:0], r)
		}
	fill:
		for len(batch) < cap(batch) {
			select {
			case r := <-j.queue:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		if j.syncer != nil {
			ctx, cancel := context.WithTimeout(context.Background(), maxSyncWait)
			if j.syncer.SyncEvents(ctx) != nil {
				j.unsynced.Add(1)
			}
			cancel()
		}
		for _, r := range batch {
			j.send(r)
		}
		clear(batch)
	}
}

// close stops the joiner; requests still queued are not sent (their
// clients are gone).
func (j *joiner) close() joinStats {
	close(j.quit)
	<-j.done
	return joinStats{dropped: j.dropped.Load(), unsynced: j.unsynced.Load()}
}

// sendRequest joins r with its connections' events and sends it.
func (s *Server) sendRequest(r *Request) {
	p := s.clients.Load()
	cache := s.reqCache.Load()
	if p == nil || cache == nil {
		return
	}
	r.Type = TypeRequest
	cache.join(r)
	var line []byte
	for _, c := range *p {
		if c.m.req == nil || !c.m.matchRequest(r) {
			continue
		}
		if line == nil {
			b, err := json.Marshal(r)
			if err != nil {
				s.log.Warn("encode trace request", "err", err)
				return
			}
			line = append(b, '\n')
		}
		c.offer(line)
	}
}

// RequestTuple is the TCP tuple src -> dst on the wire, named as events
// name theirs.
func RequestTuple(src, dst netip.AddrPort) Tuple {
	return Tuple{Proto: loader.TCP.String(), Src: src, Dst: dst}
}
