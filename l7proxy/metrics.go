package l7proxy

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// latencyBuckets reach below the default buckets' 5ms floor: a proxy hop
// to a pod is typically sub-millisecond.
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	upstream *prometheus.HistogramVec
	streams  *prometheus.CounterVec
	mirrors  *prometheus.CounterVec
	// proxied counts connections by PROXY protocol header result.
	proxied *prometheus.CounterVec
	// capped counts client connections closed by a cap, by phase.
	capped *prometheus.CounterVec
	// denied counts requests refused by access control, by route and
	// reason.
	denied *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	labels := []string{"namespace", "ingress", "service"}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodegress_http_requests_total",
			Help: "HTTP requests served by the proxy, by Ingress, Service and status code (499: client closed the connection).",
		}, append(labels, "code")),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nodegress_http_request_duration_seconds",
			Help:    "Time from reading the request headers to the end of the response.",
			Buckets: latencyBuckets,
		}, labels),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nodegress_http_upstream_duration_seconds",
			Help:    "Time from sending the request to an endpoint to the end of its response.",
			Buckets: latencyBuckets,
		}, labels),
		streams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodegress_tls_stream_connections_total",
			Help: "Connections to TLS listeners forwarded by TLSRoute (result forwarded, or idle_timeout when closed idle) or refused (no_route, no_endpoint, connect_failed, bad_client_hello), by route.",
		}, []string{"route", "result"}),
		capped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodegress_client_connections_capped_total",
			Help: "Client connections closed because their client, or all clients, had too many half-open (no complete first request yet) or idle keep-alive connections, by phase.",
		}, []string{"phase"}),
		proxied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodegress_proxy_protocol_connections_total",
			Help: "Connections from --proxy-protocol-from peers, by result: accepted, or refused (no valid PROXY header).",
		}, []string{"result"}),
		mirrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodegress_http_mirror_requests_total",
			Help: "RequestMirror copies of requests, by upstream and result: sent, failed (no answer), or dropped: overloaded (too many under way), no_endpoint, body (too long or incomplete).",
		}, []string{"upstream", "result"}),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodegress_http_denied_requests_total",
			Help: "Requests refused by an Ingress's access control, by route (namespace/name) and reason: source_range, rate_limit, connection_limit, basic_auth, basic_auth_busy (no bcrypt slot in time: 503, or the client left), external_auth (the auth service said no), external_auth_error (it failed: 500), misconfigured (an auth Secret is missing or invalid: 503).",
		}, []string{"route", "reason"}),
	}
	var err error
	if m.denied, err = register(reg, m.denied); err != nil {
		return nil, err
	}
	if m.requests, err = register(reg, m.requests); err != nil {
		return nil, err
	}
	if m.duration, err = register(reg, m.duration); err != nil {
		return nil, err
	}
	if m.upstream, err = register(reg, m.upstream); err != nil {
		return nil, err
	}
	if m.streams, err = register(reg, m.streams); err != nil {
		return nil, err
	}
	if m.mirrors, err = register(reg, m.mirrors); err != nil {
		return nil, err
	}
	if m.proxied, err = register(reg, m.proxied); err != nil {
		return nil, err
	}
	if m.capped, err = register(reg, m.capped); err != nil {
		return nil, err
	}
	return m, nil
}

// proxyProtocol counts a PROXY header read.
func (m *metrics) proxyProtocol(err error) {
	result := "accepted"
	if err != nil {
		result = "refused"
	}
	m.proxied.WithLabelValues(result).Inc()
}

// mirrored counts a mirror request by its result.
func (m *metrics) mirrored(upstream, result string) {
	m.mirrors.WithLabelValues(upstream, result).Inc()
}

// register adopts an identical collector that is already registered, so
// several proxies (tests, restarts in-process) can share a registry.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("register metrics: %w", err)
	}
	return c, nil
}

// commonCodes get a cached counter per series; other codes take the
// slower labelled lookup.
var commonCodes = [...]int{200, 201, 202, 204, 206, 301, 302, 304, 307, 308,
	400, 401, 403, 404, 405, 408, 413, 429, 499, 500, 502, 503, 504}

func commonCodeIndex(code int) int {
	for i, c := range commonCodes {
		if c == code {
			return i
		}
	}
	return -1
}

// series caches the metric children of one (namespace, ingress, service)
// so a request costs no label hashing.
type series struct {
	m        *metrics
	labels   [3]string
	duration prometheus.Observer
	upstream prometheus.Observer
	codes    [len(commonCodes)]atomic.Pointer[counterRef]
}

type counterRef struct{ c prometheus.Counter }

func (m *metrics) newSeries(namespace, ingress, service string) *series {
	s := &series{m: m, labels: [3]string{namespace, ingress, service}}
	s.duration = m.duration.WithLabelValues(s.labels[:]...)
	s.upstream = m.upstream.WithLabelValues(s.labels[:]...)
	return s
}

func (s *series) inc(code int) {
	i := commonCodeIndex(code)
	if i < 0 {
		s.m.requests.WithLabelValues(s.labels[0], s.labels[1], s.labels[2], strconv.Itoa(code)).Inc()
		return
	}
	ref := s.codes[i].Load()
	if ref == nil {
		ref = &counterRef{c: s.m.requests.WithLabelValues(s.labels[0], s.labels[1], s.labels[2], strconv.Itoa(code))}
		s.codes[i].Store(ref)
	}
	ref.c.Inc()
}

// delete removes the series' children when its route is gone, so removed
// Ingresses do not linger in the exposition forever.
func (s *series) delete() {
	l := prometheus.Labels{"namespace": s.labels[0], "ingress": s.labels[1], "service": s.labels[2]}
	s.m.requests.DeletePartialMatch(l)
	s.m.duration.Delete(l)
	s.m.upstream.Delete(l)
}

type seriesKey struct{ ingress, upstream string }

// seriesSet holds the series of the current configuration. It lives
// across updates so counters keep their cached children.
type seriesSet struct {
	m   *metrics
	mu  sync.Mutex
	cur atomic.Pointer[map[seriesKey]*series]
}

func newSeriesSet(m *metrics) *seriesSet {
	s := &seriesSet{m: m}
	empty := map[seriesKey]*series{}
	s.cur.Store(&empty)
	return s
}

func splitIngress(ing string) (namespace, name string) {
	if ns, n, ok := strings.Cut(ing, "/"); ok {
		return ns, n
	}
	return "", ing
}

// get returns the series for an Ingress and upstream; it is lock-free for
// every pair the current configuration knows.
func (s *seriesSet) get(ingress string, up *Upstream) *series {
	k := seriesKey{ingress: ingress}
	if up != nil {
		k.upstream = up.Name
	}
	if se := (*s.cur.Load())[k]; se != nil {
		return se
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := *s.cur.Load()
	if se := cur[k]; se != nil {
		return se
	}
	se := s.build(k, up)
	next := make(map[seriesKey]*series, len(cur)+1)
	for kk, v := range cur {
		next[kk] = v
	}
	next[k] = se
	s.cur.Store(&next)
	return se
}

func (s *seriesSet) build(k seriesKey, up *Upstream) *series {
	ns, name := splitIngress(k.ingress)
	svc := ""
	if up != nil {
		svc = up.Service
		if ns == "" {
			ns = up.Namespace
		}
	}
	return s.m.newSeries(ns, name, svc)
}

// reset keeps the series for the given keys and deletes the others.
func (s *seriesSet) reset(keep map[seriesKey]*Upstream) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := *s.cur.Load()
	next := make(map[seriesKey]*series, len(keep))
	for k, up := range keep {
		if se := cur[k]; se != nil {
			next[k] = se
		} else {
			next[k] = s.build(k, up)
		}
	}
	// Two keys can map to the same labels; children still used by a kept
	// series must survive.
	kept := make(map[[3]string]bool, len(next))
	for _, se := range next {
		kept[se.labels] = true
	}
	for k, se := range cur {
		if _, ok := next[k]; !ok && !kept[se.labels] {
			se.delete()
		}
	}
	s.cur.Store(&next)
}
