package controller

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	coordinationlisters "k8s.io/client-go/listers/coordination/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"
)

// Ingress status write-back.
//
// One agent, elected through the Lease StatusLeaseName in the election
// namespace, writes status.loadBalancer.ingress of the Ingresses of
// nodegress's class (the same selection as TranslateIngress):
//
//   - with a publish Service, that Service's status.loadBalancer.ingress
//     (IPs and hostnames);
//   - otherwise the IPv4 InternalIPs of the nodes running an agent that
//     serves Ingresses (the datapath steers IPv4 only).
//
// Which nodes run an agent is told by per-node Leases: every agent keeps
// NodeLeasePrefix+<node> in the election namespace renewed, with its node
// name as holder, and clears the holder when it stops. The leader lists
// these Leases (and, only while it leads, all Node objects) instead of
// needing to read Pods. A node Lease is owned by its Node object, so the
// garbage collector deletes it with the Node and agents never need to
// delete Leases.
//
// Ingresses of other classes are never written. An Ingress that stops
// being ours keeps the status it has: another controller owns it now and
// will write its own (ingress-nginx does the same; it clears status only
// on shutdown, behind a flag).
const (
	// StatusLeaseName is the Lease of the status leader election.
	StatusLeaseName = "nodegress-status"
	// NodeLeasePrefix starts the name of every agent's node Lease.
	NodeLeasePrefix = "nodegress-node-"
	// DefaultElectionNamespace holds the Leases when none is configured.
	DefaultElectionNamespace = "nodegress"
	// statusFieldManager names nodegress's writes in managedFields.
	statusFieldManager = "nodegress"
	statusWorkers      = 2
)

// statusTiming are the durations of the status write-back; tests shorten
// them.
type statusTiming struct {
	// Leader election: a leader that cannot renew within renewDeadline
	// stops writing; others take over leaseDuration after its last renewal.
	leaseDuration, renewDeadline, retryPeriod time.Duration
	// A node Lease is renewed every nodeLeaseRenew and counts as running
	// for nodeLeaseDuration after its last renewal.
	nodeLeaseDuration, nodeLeaseRenew time.Duration
	// settle is how long a new leader keeps the addresses of nodes whose
	// Lease is held but expired, where a status already shows them: after
	// an API server outage every Lease looks expired until its agent
	// renews, within one nodeLeaseRenew, and dropping them meanwhile would
	// make the status flap. Released Leases (agents that stopped) and new
	// nodes are written at once.
	settle time.Duration
	// resync re-checks every Ingress, a safety net for missed events.
	resync time.Duration
	// recompute bounds how often the addresses are recomputed (every node
	// Lease renewal asks for it).
	recompute time.Duration
	// Failed writes are retried per Ingress with exponential backoff.
	writeBackoff, maxWriteBackoff time.Duration
	// apiTimeout bounds one API call of the node Lease.
	apiTimeout time.Duration
}

var defaultStatusTiming = statusTiming{
	leaseDuration:     15 * time.Second,
	renewDeadline:     10 * time.Second,
	retryPeriod:       2 * time.Second,
	nodeLeaseDuration: 40 * time.Second,
	nodeLeaseRenew:    10 * time.Second,
	settle:            12 * time.Second,
	resync:            30 * time.Second,
	recompute:         500 * time.Millisecond,
	writeBackoff:      500 * time.Millisecond,
	maxWriteBackoff:   time.Minute,
	apiTimeout:        5 * time.Second,
}

// errPublishServiceMissing stops status writes: without the Service there
// is no telling where the Ingresses are served, and what they show may
// still be right.
var errPublishServiceMissing = errors.New("publish service not found; ingress status left as it is")

// ingressStatusWriter writes status.loadBalancer.ingress of one Ingress.
// ing is the informer's copy; ours re-checks the class of a fresher copy,
// so an Ingress that changed class meanwhile is left alone.
type ingressStatusWriter interface {
	writeStatus(ctx context.Context, ing *networkingv1.Ingress, want []networkingv1.IngressLoadBalancerIngress, ours func(*networkingv1.Ingress) bool) (written bool, err error)
}

// clientStatusWriter writes through the API server: update on the
// ingresses/status subresource, and get on ingresses after a conflict.
type clientStatusWriter struct {
	client kubernetes.Interface
}

func (w clientStatusWriter) writeStatus(ctx context.Context, ing *networkingv1.Ingress, want []networkingv1.IngressLoadBalancerIngress, ours func(*networkingv1.Ingress) bool) (bool, error) {
	api := w.client.NetworkingV1().Ingresses(ing.Namespace)
	cur := ing
	written := false
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if cur == nil {
			// The cached copy was stale: start from the API server's.
			fresh, err := api.Get(ctx, ing.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if !ours(fresh) || lbIngressEqual(fresh.Status.LoadBalancer.Ingress, want) {
				return nil
			}
			cur = fresh
		}
		upd := cur.DeepCopy()
		upd.Status.LoadBalancer.Ingress = slices.Clone(want)
		cur = nil
		if _, err := api.UpdateStatus(ctx, upd, metav1.UpdateOptions{FieldManager: statusFieldManager}); err != nil {
			return err
		}
		written = true
		return nil
	})
	if apierrors.IsNotFound(err) {
		return false, nil // deleted meanwhile
	}
	return written, err
}

// statusMetrics of the status write-back.
type statusMetrics struct {
	leader prometheus.Gauge
	writes *prometheus.CounterVec
}

func newStatusMetrics(reg prometheus.Registerer) *statusMetrics {
	m := &statusMetrics{
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nodegress_status_leader",
			Help: "1 while this agent is the one writing Ingress status.",
		}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodegress_ingress_status_writes_total",
			Help: "Ingress status updates by result (success or error).",
		}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(m.leader, m.writes)
	}
	return m
}

// statusManager runs the leader election and, while it leads, keeps the
// status of our Ingresses right. Its informer handlers only queue work and
// never block: they run on the controller's informers, which also feed the
// datapath sync.
type statusManager struct {
	log            *slog.Logger
	client         kubernetes.Interface
	namespace      string
	identity       string
	controllerName string
	publish        string // namespace/name, or empty
	publishRef     serviceRef
	timing         statusTiming
	writer         ingressStatusWriter
	metrics        *statusMetrics

	// The controller's listers, set by register.
	ingresses networkinglisters.IngressLister
	classes   networkinglisters.IngressClassLister
	services  corelisters.ServiceLister

	term atomic.Pointer[statusTerm] // nil while not leading
	// alsoLead run for as long as each term lasts: the other status
	// writers (the Gateway API's), set before run.
	alsoLead []func(ctx context.Context)
}

func newStatusManager(c *Controller, reg prometheus.Registerer) *statusManager {
	l7 := c.cfg.L7
	ns := c.cfg.ElectionNamespace
	if ns == "" {
		ns = DefaultElectionNamespace
	}
	s := &statusManager{
		log:            c.log.With("component", "status"),
		client:         c.client,
		namespace:      ns,
		identity:       c.cfg.NodeName + "_" + randomSuffix(),
		controllerName: l7.ControllerName,
		publish:        l7.PublishService,
		timing:         defaultStatusTiming,
		writer:         clientStatusWriter{client: c.client},
		metrics:        newStatusMetrics(reg),
	}
	if s.publish != "" {
		// Checked by New already.
		s.publishRef, _ = parseServiceRef(s.publish, false)
	}
	return s
}

// randomSuffix tells apart agents of the same node (during a rolling
// update both may run): two candidates with one identity would both
// believe they lead.
func randomSuffix() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// handlers returns the informer handlers for the controller's Ingress,
// IngressClass and Service informers.
// register adds the status write-back's handlers to the controller's
// informers, after registerServices and registerIngress.
func (s *statusManager) register(src *sources) error {
	s.ingresses = src.factory.Networking().V1().Ingresses().Lister()
	s.classes = src.factory.Networking().V1().IngressClasses().Lister()
	s.services = src.factory.Core().V1().Services().Lister()
	ingress, class, service := s.handlers()
	for _, h := range []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}{
		{src.factory.Networking().V1().Ingresses().Informer(), ingress},
		{src.factory.Networking().V1().IngressClasses().Informer(), class},
		{src.factory.Core().V1().Services().Informer(), service},
	} {
		if _, err := h.inf.AddEventHandler(h.h); err != nil {
			return fmt.Errorf("add status event handler: %w", err)
		}
	}
	return nil
}

func (s *statusManager) handlers() (ingress, class, service cache.ResourceEventHandler) {
	ingress = cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { s.enqueue(obj) },
		UpdateFunc: func(_, obj any) { s.enqueue(obj) },
	}
	class = cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.enqueueAll() },
		UpdateFunc: func(any, any) { s.enqueueAll() },
		DeleteFunc: func(any) { s.enqueueAll() },
	}
	isPublish := func(obj any) bool {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		svc, ok := obj.(*corev1.Service)
		return ok && s.publish != "" && svc.Namespace == s.publishRef.Namespace && svc.Name == s.publishRef.Name
	}
	recompute := func(obj any) {
		if isPublish(obj) {
			s.recompute()
		}
	}
	service = cache.ResourceEventHandlerFuncs{
		AddFunc:    recompute,
		UpdateFunc: func(_, obj any) { recompute(obj) },
		DeleteFunc: recompute,
	}
	return ingress, class, service
}

func (s *statusManager) enqueue(obj any) {
	if t := s.term.Load(); t != nil {
		if ing, ok := obj.(*networkingv1.Ingress); ok {
			t.queue.Add(ing.Namespace + "/" + ing.Name)
		}
	}
}

func (s *statusManager) enqueueAll() {
	if t := s.term.Load(); t != nil {
		t.enqueueAll()
	}
}

func (s *statusManager) recompute() {
	if t := s.term.Load(); t != nil {
		t.runner.Request()
	}
}

func (s *statusManager) selector() ingressClassSelector {
	classes, _ := s.classes.List(labels.Everything())
	return newIngressClassSelector(classes, s.controllerName)
}

// run takes part in the election until ctx is done; it never gives up on
// API errors (the election retries every retryPeriod).
func (s *statusManager) run(ctx context.Context) {
	ctx = logr.NewContextWithSlogLogger(ctx, s.log)
	for ctx.Err() == nil {
		// The elector starts OnStartedLeading in a goroutine of its own;
		// handing the term's context over lets this goroutine run the term,
		// so it is over before the next campaign (and before run returns).
		leading := make(chan context.Context, 1)
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock: &resourcelock.LeaseLock{
				LeaseMeta:  metav1.ObjectMeta{Namespace: s.namespace, Name: StatusLeaseName},
				Client:     s.client.CoordinationV1(),
				LockConfig: resourcelock.ResourceLockConfig{Identity: s.identity},
			},
			LeaseDuration:   s.timing.leaseDuration,
			RenewDeadline:   s.timing.renewDeadline,
			RetryPeriod:     s.timing.retryPeriod,
			ReleaseOnCancel: true,
			Name:            StatusLeaseName,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(ctx context.Context) { leading <- ctx },
				OnStoppedLeading: func() {},
			},
		})
		if err != nil {
			// Only a bad timing configuration gets here.
			s.log.Error("status leader election", "err", err)
			return
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			le.Run(ctx)
		}()
		select {
		case termCtx := <-leading:
			s.lead(termCtx)
			<-done
		case <-done:
		}
		select {
		case <-ctx.Done():
		case <-time.After(s.timing.retryPeriod):
		}
	}
}

// statusTerm is the state of one period of leadership.
type statusTerm struct {
	s      *statusManager
	queue  workqueue.TypedRateLimitingInterface[string]
	runner *syncRunner
	leases coordinationlisters.LeaseLister
	nodes  corelisters.NodeLister
	force  atomic.Bool // next recomputation queues every Ingress

	// settleUntil ends the settling of a new leader; see statusTiming.
	settleUntil time.Time
	settleEnd   *time.Timer

	mu       sync.Mutex
	addrs    statusAddrs
	known    bool
	lastErr  string
	expiry   *time.Timer
	expiryAt time.Time
}

// lead keeps the status right until ctx is done (leadership lost or the
// agent stopping).
func (s *statusManager) lead(ctx context.Context) {
	s.log.Info("elected to write ingress status", "identity", s.identity)
	s.metrics.leader.Set(1)
	defer s.metrics.leader.Set(0)

	t := &statusTerm{
		s: s,
		queue: workqueue.NewTypedRateLimitingQueue(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](s.timing.writeBackoff, s.timing.maxWriteBackoff)),
	}
	t.runner = newSyncRunner(s.timing.recompute, 0, 30*time.Second, t.recompute, func(err error, retryIn time.Duration) {
		s.log.Warn("ingress status addresses", "err", err, "retry_in", retryIn)
	})
	var wg sync.WaitGroup
	var factories []informers.SharedInformerFactory
	defer func() {
		s.term.CompareAndSwap(t, nil)
		t.queue.ShutDown()
		for _, f := range factories {
			f.Shutdown()
		}
		wg.Wait()
		t.stopExpiry()
		s.log.Info("stopped writing ingress status", "identity", s.identity)
	}()
	if !s.publishMode() && !t.watchNodes(ctx, &factories) {
		return
	}
	if !s.publishMode() {
		// See statusTiming.settle; once over, every Ingress is checked
		// again without the stale addresses.
		t.settleUntil = time.Now().Add(s.timing.settle)
		t.settleEnd = time.AfterFunc(s.timing.settle, func() {
			t.force.Store(true)
			t.runner.Request()
		})
		defer t.settleEnd.Stop()
	}
	s.term.Store(t)
	for _, f := range s.alsoLead {
		wg.Go(func() { f(ctx) })
	}
	for range statusWorkers {
		wg.Go(func() {
			for t.processNext(ctx) {
			}
		})
	}
	wg.Go(func() { t.runner.Loop(ctx) })
	t.force.Store(true)
	t.runner.Request()

	resync := time.NewTicker(s.timing.resync)
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-resync.C:
			t.force.Store(true)
			t.runner.Request()
		}
	}
}

// watchNodes starts the informers of the node Leases and of all Nodes and
// waits for them; false when ctx ended first. All Nodes are watched only
// while leading and without a publish Service: the other agents need
// their own Node only, and every Node watch costs the API server.
func (t *statusTerm) watchNodes(ctx context.Context, factories *[]informers.SharedInformerFactory) bool {
	s := t.s
	nodeFactory := informers.NewSharedInformerFactory(s.client, 0)
	leaseFactory := informers.NewSharedInformerFactoryWithOptions(s.client, 0, informers.WithNamespace(s.namespace))
	nodeInf := nodeFactory.Core().V1().Nodes()
	leaseInf := leaseFactory.Coordination().V1().Leases()
	t.nodes, t.leases = nodeInf.Lister(), leaseInf.Lister()
	nodeAddrsChanged := func(oldObj, newObj any) {
		o, ok1 := oldObj.(*corev1.Node)
		n, ok2 := newObj.(*corev1.Node)
		if !ok1 || !ok2 || !slices.Equal(o.Status.Addresses, n.Status.Addresses) {
			t.runner.Request()
		}
	}
	isNodeLease := func(obj any) bool {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		l, ok := obj.(*coordinationv1.Lease)
		return ok && strings.HasPrefix(l.Name, NodeLeasePrefix)
	}
	onLease := func(obj any) {
		if isNodeLease(obj) {
			t.runner.Request()
		}
	}
	var hasSynced []cache.InformerSynced
	for _, h := range []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}{
		{nodeInf.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { t.runner.Request() },
			UpdateFunc: nodeAddrsChanged,
			DeleteFunc: func(any) { t.runner.Request() },
		}},
		{leaseInf.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    onLease,
			UpdateFunc: func(_, obj any) { onLease(obj) },
			DeleteFunc: onLease,
		}},
	} {
		if _, err := h.inf.AddEventHandler(h.h); err != nil {
			s.log.Error("status informer handler", "err", err)
			return false
		}
		hasSynced = append(hasSynced, h.inf.HasSynced)
	}
	for _, f := range []informers.SharedInformerFactory{nodeFactory, leaseFactory} {
		f.Start(ctx.Done())
		*factories = append(*factories, f)
	}
	return cache.WaitForCacheSync(ctx.Done(), hasSynced...)
}

func (s *statusManager) publishMode() bool { return s.publish != "" }

// recompute works out the addresses and queues the Ingresses when they
// changed (or on a forced pass). It runs on the term's runner only.
func (t *statusTerm) recompute() error {
	s := t.s
	var publish *corev1.Service
	if s.publishMode() {
		svc, err := s.services.Services(s.publishRef.Namespace).Get(s.publishRef.Name)
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("get publish service: %w", err)
		}
		publish = svc
	}
	var leases []*coordinationv1.Lease
	var nodes []*corev1.Node
	if !s.publishMode() {
		var err error
		if leases, err = t.leases.List(labels.Everything()); err != nil {
			return fmt.Errorf("list leases: %w", err)
		}
		if nodes, err = t.nodes.List(labels.Everything()); err != nil {
			return fmt.Errorf("list nodes: %w", err)
		}
	}
	now := time.Now()
	addrs, err := statusAddresses(s.publishMode(), publish, leases, nodes, now)

	t.mu.Lock()
	if err != nil {
		if msg := err.Error(); msg != t.lastErr {
			t.lastErr = msg
			s.log.Warn("ingress status", "publish_service", s.publish, "err", err)
		}
		t.known = false
		t.mu.Unlock()
		return nil
	}
	t.lastErr = ""
	changed := !t.known || !addrs.equal(t.addrs)
	t.addrs, t.known = addrs, true
	t.setExpiry(addrs.nextExpiry, now)
	t.mu.Unlock()

	if changed {
		s.log.Info("ingress status addresses", "addresses", lbIngressString(addrs.live), "unrenewed", lbIngressString(addrs.stale))
	}
	if t.force.Swap(false) || changed {
		t.enqueueAll()
	}
	return nil
}

// setExpiry asks for a recomputation when the first counted node Lease
// expires: a node whose agent died sends no event. Called with mu held.
func (t *statusTerm) setExpiry(at, now time.Time) {
	if at.Equal(t.expiryAt) {
		return
	}
	if t.expiry != nil {
		t.expiry.Stop()
		t.expiry = nil
	}
	t.expiryAt = at
	if at.IsZero() {
		return
	}
	// A little after the expiry, so the Lease is expired when checked.
	t.expiry = time.AfterFunc(at.Sub(now)+10*time.Millisecond, t.runner.Request)
}

func (t *statusTerm) stopExpiry() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.expiry != nil {
		t.expiry.Stop()
	}
}

func (t *statusTerm) addresses() (statusAddrs, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.addrs, t.known
}

func (t *statusTerm) enqueueAll() {
	ings, err := t.s.ingresses.List(labels.Everything())
	if err != nil {
		return
	}
	sel := t.s.selector()
	for _, ing := range ings {
		if sel.isOurs(ing) {
			t.queue.Add(ing.Namespace + "/" + ing.Name)
		}
	}
}

// processNext handles one queued Ingress; false when the queue is shut
// down.
func (t *statusTerm) processNext(ctx context.Context) bool {
	key, shutdown := t.queue.Get()
	if shutdown {
		return false
	}
	defer t.queue.Done(key)
	s := t.s
	if err := t.sync(ctx, key); err != nil {
		if ctx.Err() != nil {
			return true
		}
		s.metrics.writes.WithLabelValues("error").Inc()
		// Warn on the first failure of an Ingress; while the API server
		// is away, the retries would flood the log.
		level := slog.LevelDebug
		if t.queue.NumRequeues(key) == 0 {
			level = slog.LevelWarn
		}
		s.log.Log(ctx, level, "write ingress status; will retry", "ingress", key, "err", err)
		t.queue.AddRateLimited(key)
		return true
	}
	t.queue.Forget(key)
	return true
}

func (t *statusTerm) sync(ctx context.Context, key string) error {
	s := t.s
	ns, name, _ := strings.Cut(key, "/")
	ing, err := s.ingresses.Ingresses(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	sel := s.selector()
	if !sel.isOurs(ing) {
		return nil // never touched, see the package's status notes
	}
	addrs, known := t.addresses()
	if !known {
		return nil
	}
	cur := ing.Status.LoadBalancer.Ingress
	want := addrs.want(cur, time.Now().Before(t.settleUntil))
	if lbIngressEqual(cur, want) {
		return nil
	}
	written, err := s.writer.writeStatus(ctx, ing, want, sel.isOurs)
	if err != nil {
		return err
	}
	if written {
		s.metrics.writes.WithLabelValues("success").Inc()
		s.log.Debug("ingress status written", "ingress", key, "addresses", lbIngressString(want))
	}
	return nil
}
