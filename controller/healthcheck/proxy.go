// Package healthcheck answers the health probes cloud load balancers send
// to kube-proxy, so that they keep working on nodes where nodegress
// replaces it: the healthCheckNodePort of every LoadBalancer Service with
// externalTrafficPolicy Local (ServiceServer), and the node's own /healthz
// and /livez (Proxy, kube-proxy's --healthz-bind-address, port 10256).
//
// Status codes, headers and bodies are kube-proxy's (v1.37,
// pkg/proxy/healthcheck): load balancers and the tools around them parse
// these bodies, and a node must not change its answer because the proxy
// behind it did. The package holds only the servers and their state; the
// controller, which watches the objects, feeds it.
package healthcheck

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
)

const (
	// ToBeDeletedTaint is the taint the cluster autoscaler puts on a node
	// it is about to remove. Such a node answers /healthz with 503 so load
	// balancers drain it first.
	ToBeDeletedTaint = "ToBeDeletedByClusterAutoscaler"
	// DefaultTimeout is how long a queued update may wait for its sync
	// before the proxy counts as unhealthy: kube-proxy's default, twice its
	// 30 s sync period.
	DefaultTimeout = 60 * time.Second
	// DefaultPort is the port of kube-proxy's node health server, which
	// load balancers probe when a Service has no healthCheckNodePort.
	DefaultPort = 10256
)

// readHeaderTimeout bounds how long a probe may take to send its request
// headers, so that idle connections cannot pile up on a node's port.
const readHeaderTimeout = 10 * time.Second

// FamilyHealth is the health of the proxy for one IP family.
type FamilyHealth struct {
	LastUpdated time.Time `json:"lastUpdated"`
	Healthy     bool      `json:"healthy"`
}

// Health is the body of /healthz and /livez. Field order and names are
// kube-proxy's, so the JSON is byte for byte the same.
type Health struct {
	// LastUpdated is the latest successful sync of any family; while
	// healthy, the handlers report the current time instead (what
	// kube-proxy's clients have always seen).
	LastUpdated time.Time `json:"lastUpdated"`
	CurrentTime time.Time `json:"currentTime"`
	// NodeEligible is set in /healthz answers only.
	NodeEligible *bool                            `json:"nodeEligible,omitempty"`
	Healthy      bool                             `json:"healthy"`
	Status       map[corev1.IPFamily]FamilyHealth `json:"status,omitempty"`
}

// Proxy is the health of the agent's sync loop, as kube-proxy's health
// server tracks its proxiers: QueuedUpdate when a change arrives, Updated
// when a sync succeeded. A family whose oldest queued update has waited
// Timeout or longer is unhealthy, so an agent that is stuck (or keeps
// failing to program the datapath) turns /healthz and /livez to 503 and
// every healthCheckNodePort to 503, while an idle one stays healthy.
//
// It also keeps this node's Node object: /healthz (not /livez) answers 503
// while the node is unknown, being deleted, or tainted by the cluster
// autoscaler for removal.
type Proxy struct {
	timeout time.Duration
	now     func() time.Time

	mu sync.RWMutex
	// lastUpdated holds the families that synced at least once; only
	// those can be unhealthy, so an agent that is still starting up is
	// healthy.
	lastUpdated   map[corev1.IPFamily]time.Time
	oldestPending map[corev1.IPFamily]time.Time
	node          *corev1.Node
}

// NewProxy returns the health state of a proxy whose queued updates must
// be synced within timeout (zero means DefaultTimeout).
func NewProxy(timeout time.Duration) *Proxy {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return &Proxy{
		timeout:       timeout,
		now:           time.Now,
		lastUpdated:   make(map[corev1.IPFamily]time.Time),
		oldestPending: make(map[corev1.IPFamily]time.Time),
	}
}

// QueuedUpdate records that a change for family arrived and waits for a
// sync. Only the oldest unsynced change counts: a steady stream of
// changes does not keep postponing the deadline.
func (p *Proxy) QueuedUpdate(family corev1.IPFamily) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.oldestPending[family]; !ok {
		p.oldestPending[family] = p.now()
	}
}

// Updated records a successful sync of family: everything queued before it
// is applied.
func (p *Proxy) Updated(family corev1.IPFamily) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.oldestPending, family)
	p.lastUpdated[family] = p.now()
}

// SyncNode records this node's Node object; nil means it does not exist
// (not listed yet, or deleted).
func (p *Proxy) SyncNode(node *corev1.Node) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.node = node
}

// NodeEligible tells whether load balancers may send traffic to this
// node: its Node exists, is not being deleted and is not about to be
// removed by the cluster autoscaler.
func (p *Proxy) NodeEligible() bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	n := p.node
	if n == nil || !n.DeletionTimestamp.IsZero() {
		return false
	}
	for _, t := range n.Spec.Taints {
		if t.Key == ToBeDeletedTaint {
			return false
		}
	}
	return true
}

// Health returns the proxy's health, without the node's eligibility.
func (p *Proxy) Health() Health {
	p.mu.RLock()
	defer p.mu.RUnlock()
	now := p.now()
	h := Health{
		CurrentTime: now,
		Healthy:     true,
		Status:      make(map[corev1.IPFamily]FamilyHealth, len(p.lastUpdated)),
	}
	for family, last := range p.lastUpdated {
		if last.After(h.LastUpdated) {
			h.LastUpdated = last
		}
		fh := FamilyHealth{LastUpdated: last, Healthy: true}
		if queued, ok := p.oldestPending[family]; ok && now.Sub(queued) >= p.timeout {
			fh.Healthy = false
			h.Healthy = false
		}
		h.Status[family] = fh
	}
	return h
}

// Healthy is Health().Healthy: what a healthCheckNodePort reports as
// serviceProxyHealthy.
func (p *Proxy) Healthy() bool { return p.Health().Healthy }

// Handler serves /healthz and /livez. Every other path is 404.
func (p *Proxy) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", p.serveHealthz)
	mux.HandleFunc("/livez", p.serveLivez)
	return mux
}

// serveHealthz answers whether load balancers should send traffic here:
// the proxy is healthy and the node eligible.
func (p *Proxy) serveHealthz(w http.ResponseWriter, _ *http.Request) {
	h := p.Health()
	eligible := p.NodeEligible()
	h.NodeEligible = &eligible
	p.writeHealth(w, h, h.Healthy && eligible)
}

// serveLivez answers whether the proxy works, whatever the node's state:
// a node being drained must not get its agent restarted.
func (p *Proxy) serveLivez(w http.ResponseWriter, _ *http.Request) {
	h := p.Health()
	p.writeHealth(w, h, h.Healthy)
}

func (p *Proxy) writeHealth(w http.ResponseWriter, h Health, ok bool) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if ok {
		w.WriteHeader(http.StatusOK)
		// Older kube-proxies reported the time of the last sync loop
		// run, which was recent whenever they were healthy; clients may
		// still compare it with the current time.
		h.LastUpdated = p.now()
	} else {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	body, err := json.Marshal(h)
	if err != nil {
		// Times and booleans always marshal; nothing useful to send.
		return
	}
	_, _ = w.Write(body)
}

// ListenAndServe serves Handler on addr until ctx is done, then returns
// nil. A failure to listen is returned at once, for the caller to retry.
func (p *Proxy) ListenAndServe(ctx context.Context, addr string) error {
	return ListenAndServe(ctx, addr, p.Handler())
}

// StatusHandler is kube-proxy's status server (its metrics address,
// 127.0.0.1:10249 by default): /healthz and /livez as Handler,
// /proxyMode naming the proxy (mode), and /metrics when given.
func (p *Proxy) StatusHandler(mode string, metrics http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/healthz", p.Handler())
	mux.Handle("/livez", p.Handler())
	mux.HandleFunc("/proxyMode", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		_, _ = fmt.Fprint(w, mode)
	})
	if metrics != nil {
		mux.Handle("/metrics", metrics)
	}
	return mux
}

// ListenAndServe serves h on addr until ctx is done, then returns nil. A
// failure to listen is returned at once, for the caller to retry.
func ListenAndServe(ctx context.Context, addr string, h http.Handler) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	return serve(ctx, ln, h)
}

// serve runs an HTTP server on ln until ctx is done.
func serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: readHeaderTimeout}
	stop := context.AfterFunc(ctx, func() { _ = srv.Close() })
	defer stop()
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) && ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("serve on %s: %w", ln.Addr(), err)
}
