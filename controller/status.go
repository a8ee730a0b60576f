package controller

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
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
	"k8s.io/apimachinery/pkg/types"
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

// StatusInput is everything DesiredIngressStatus reads.
type StatusInput struct {
	Ingresses      []*networkingv1.Ingress
	IngressClasses []*networkingv1.IngressClass
	// ControllerName selects nodegress's IngressClasses, as
	// L7Config.ControllerName. Empty means DefaultControllerName.
	ControllerName string
	// PublishService is "namespace/name" or empty, as
	// L7Config.PublishService; Services are looked up in for it.
	PublishService string
	Services       []*corev1.Service
	// NodeLeases are the Leases of the election namespace (others are
	// ignored) and Nodes the cluster's Node objects.
	NodeLeases []*coordinationv1.Lease
	Nodes      []*corev1.Node
	Now        time.Time
	// Settling is a leader's first moments (see statusTiming.settle): an
	// address of a node whose Lease is held but expired stays where a
	// status shows it, and is not added elsewhere.
	Settling bool
}

// IngressStatusChange is an Ingress whose status.loadBalancer.ingress must
// become Want.
type IngressStatusChange struct {
	Ingress *networkingv1.Ingress
	Want    []networkingv1.IngressLoadBalancerIngress
}

// errPublishServiceMissing stops status writes: without the Service there
// is no telling where the Ingresses are served, and what they show may
// still be right.
var errPublishServiceMissing = errors.New("publish service not found; ingress status left as it is")

// DesiredIngressStatus returns the Ingresses of nodegress's class whose
// status differs (in any order) from the addresses they should show, in
// namespace/name order; the same addresses for all of them. It returns an
// error, and no changes, when the publish Service does not exist.
func DesiredIngressStatus(in StatusInput) ([]IngressStatusChange, error) {
	var publish *corev1.Service
	if in.PublishService != "" {
		ref, err := parseServiceRef(in.PublishService, false)
		if err != nil {
			return nil, fmt.Errorf("publish service: %w", err)
		}
		for _, s := range in.Services {
			if s.Namespace == ref.Namespace && s.Name == ref.Name {
				publish = s
			}
		}
	}
	addrs, err := statusAddresses(in.PublishService != "", publish, in.NodeLeases, in.Nodes, in.Now)
	if err != nil {
		return nil, err
	}
	sel := newIngressClassSelector(in.IngressClasses, in.ControllerName)
	ings := slices.Clone(in.Ingresses)
	slices.SortFunc(ings, func(a, b *networkingv1.Ingress) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	var out []IngressStatusChange
	for _, ing := range ings {
		if !sel.isOurs(ing) {
			continue
		}
		cur := ing.Status.LoadBalancer.Ingress
		if want := addrs.want(cur, in.Settling); !lbIngressEqual(cur, want) {
			out = append(out, IngressStatusChange{Ingress: ing, Want: want})
		}
	}
	return out, nil
}

// statusAddrs is what the Ingresses of ours should show.
type statusAddrs struct {
	// live are the addresses to show, sorted.
	live []networkingv1.IngressLoadBalancerIngress
	// stale are the addresses of nodes whose Lease is held but expired:
	// their agent stopped renewing without releasing it (it crashed, or it
	// is cut off from the API server, or the API server was away).
	stale []networkingv1.IngressLoadBalancerIngress
	// nextExpiry is when the first counted Lease expires (zero if none):
	// the moment the answer changes without any event.
	nextExpiry time.Time
}

func (a statusAddrs) equal(b statusAddrs) bool {
	return lbIngressEqual(a.live, b.live) && lbIngressEqual(a.stale, b.stale)
}

// want is the status an Ingress showing cur should get. While settling,
// stale addresses it shows are kept.
func (a statusAddrs) want(cur []networkingv1.IngressLoadBalancerIngress, settling bool) []networkingv1.IngressLoadBalancerIngress {
	out := slices.Clone(a.live)
	if !settling || len(a.stale) == 0 {
		return out
	}
	for _, c := range cur {
		if slices.ContainsFunc(a.stale, func(s networkingv1.IngressLoadBalancerIngress) bool { return reflect.DeepEqual(s, c) }) {
			out = append(out, c)
		}
	}
	return normalizeLBIngress(out)
}

// statusAddresses computes what every Ingress of ours shows: the publish
// Service's load balancer addresses when usePublish, else the InternalIPs
// of the nodes with a running node Lease.
func statusAddresses(usePublish bool, publish *corev1.Service, leases []*coordinationv1.Lease, nodes []*corev1.Node, now time.Time) (statusAddrs, error) {
	var out statusAddrs
	if usePublish {
		if publish == nil {
			return out, errPublishServiceMissing
		}
		for _, lb := range publish.Status.LoadBalancer.Ingress {
			if lb.IP == "" && lb.Hostname == "" {
				continue
			}
			out.live = append(out.live, networkingv1.IngressLoadBalancerIngress{IP: lb.IP, Hostname: lb.Hostname})
		}
		out.live = normalizeLBIngress(out.live)
		return out, nil
	}
	byName := make(map[string]*corev1.Node, len(nodes))
	for _, n := range nodes {
		byName[n.Name] = n
	}
	for _, l := range leases {
		node, expires, ok := nodeLeaseHolder(l)
		if !ok {
			continue
		}
		n := byName[node]
		if n == nil {
			continue
		}
		live := expires.After(now)
		counted := false
		for _, na := range n.Status.Addresses {
			if na.Type != corev1.NodeInternalIP {
				continue
			}
			a, err := netip.ParseAddr(na.Address)
			if err != nil || !a.Unmap().Is4() {
				continue
			}
			lb := networkingv1.IngressLoadBalancerIngress{IP: a.Unmap().String()}
			if live {
				out.live = append(out.live, lb)
			} else {
				out.stale = append(out.stale, lb)
			}
			counted = true
		}
		if live && counted && (out.nextExpiry.IsZero() || expires.Before(out.nextExpiry)) {
			out.nextExpiry = expires
		}
	}
	out.live = normalizeLBIngress(out.live)
	// A node counted live through one Lease is not stale through another.
	out.stale = slices.DeleteFunc(normalizeLBIngress(out.stale), func(s networkingv1.IngressLoadBalancerIngress) bool {
		return slices.ContainsFunc(out.live, func(l networkingv1.IngressLoadBalancerIngress) bool { return reflect.DeepEqual(l, s) })
	})
	if len(out.stale) == 0 {
		out.stale = nil
	}
	return out, nil
}

// nodeLeaseHolder returns the node a node Lease is held by and when it
// expires, if it is a node Lease and held; a released Lease has no holder.
func nodeLeaseHolder(l *coordinationv1.Lease) (string, time.Time, bool) {
	if !strings.HasPrefix(l.Name, NodeLeasePrefix) {
		return "", time.Time{}, false
	}
	s := l.Spec
	if s.HolderIdentity == nil || *s.HolderIdentity == "" || s.RenewTime == nil ||
		s.LeaseDurationSeconds == nil || *s.LeaseDurationSeconds <= 0 {
		return "", time.Time{}, false
	}
	return *s.HolderIdentity, s.RenewTime.Add(time.Duration(*s.LeaseDurationSeconds) * time.Second), true
}

// nodeLeaseName is the name of a node's Lease. Node names may be as long as
// a Lease name may be, so long ones are shortened with a hash; the holder
// identity, not the name, says which node a Lease is for.
func nodeLeaseName(node string) string {
	const maxName = 253
	name := NodeLeasePrefix + node
	if len(name) <= maxName {
		return name
	}
	sum := sha256.Sum256([]byte(node))
	suffix := "-" + hex.EncodeToString(sum[:8])
	return strings.TrimRight(name[:maxName-len(suffix)], ".-") + suffix
}

// lbIngressCompare orders addresses: IPs first, numerically, then
// hostnames.
func lbIngressCompare(a, b networkingv1.IngressLoadBalancerIngress) int {
	ai, aerr := netip.ParseAddr(a.IP)
	bi, berr := netip.ParseAddr(b.IP)
	switch {
	case aerr == nil && berr == nil:
		if c := ai.Compare(bi); c != 0 {
			return c
		}
	case aerr == nil:
		return -1
	case berr == nil:
		return 1
	default:
		if c := cmp.Compare(a.IP, b.IP); c != 0 {
			return c
		}
	}
	return cmp.Compare(a.Hostname, b.Hostname)
}

// normalizeLBIngress sorts addresses and drops duplicates; nil for none.
func normalizeLBIngress(addrs []networkingv1.IngressLoadBalancerIngress) []networkingv1.IngressLoadBalancerIngress {
	if len(addrs) == 0 {
		return nil
	}
	slices.SortStableFunc(addrs, lbIngressCompare)
	return slices.CompactFunc(addrs, func(a, b networkingv1.IngressLoadBalancerIngress) bool {
		return reflect.DeepEqual(a, b)
	})
}

// lbIngressEqual compares two status lists in any order.
func lbIngressEqual(a, b []networkingv1.IngressLoadBalancerIngress) bool {
	if len(a) != len(b) {
		return false
	}
	a = slices.SortedStableFunc(slices.Values(a), lbIngressCompare)
	b = slices.SortedStableFunc(slices.Values(b), lbIngressCompare)
	return reflect.DeepEqual(a, b)
}

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

	// The controller's listers, set before its informers start.
	ingresses networkinglisters.IngressLister
	classes   networkinglisters.IngressClassLister
	services  corelisters.ServiceLister

	term atomic.Pointer[statusTerm] // nil while not leading
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
	t.runner = newSyncRunner(s.timing.recompute, 30*time.Second, t.recompute, func(err error, retryIn time.Duration) {
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

func lbIngressString(addrs []networkingv1.IngressLoadBalancerIngress) string {
	parts := make([]string, 0, len(addrs))
	for _, a := range addrs {
		parts = append(parts, cmp.Or(a.IP, a.Hostname))
	}
	return strings.Join(parts, ",")
}

// nodeLease keeps this node's Lease renewed while the agent serves
// Ingresses, and clears its holder when the agent stops, so the status
// leader drops the node at once instead of after the Lease expires.
// It needs get, create and update on leases; never delete: the Lease is
// owned by the Node object, so the garbage collector removes it with the
// Node.
type nodeLease struct {
	client    kubernetes.Interface
	namespace string
	node      string
	name      string
	nodeUID   func() types.UID // "" while the Node is unknown
	timing    statusTiming
	log       *slog.Logger

	lease   *coordinationv1.Lease // last written, saves a get per renewal
	lastErr string
}

func newNodeLease(c *Controller, namespace string) *nodeLease {
	return &nodeLease{
		client:    c.client,
		namespace: namespace,
		node:      c.cfg.NodeName,
		name:      nodeLeaseName(c.cfg.NodeName),
		nodeUID: func() types.UID {
			if n, err := c.nodes.Get(c.cfg.NodeName); err == nil {
				return n.UID
			}
			return ""
		},
		timing: defaultStatusTiming,
		log:    c.log.With("component", "node-lease"),
	}
}

// run renews the Lease until ctx is done, retrying failures with backoff
// (up to the renewal interval), then releases it.
func (h *nodeLease) run(ctx context.Context) {
	var backoff time.Duration
	for {
		wait := h.timing.nodeLeaseRenew
		if err := h.renew(ctx); err != nil {
			if ctx.Err() != nil {
				break
			}
			backoff = min(max(2*backoff, time.Second), h.timing.nodeLeaseRenew)
			wait = backoff
			if msg := err.Error(); msg != h.lastErr {
				h.lastErr = msg
				h.log.Warn("renew node lease; retrying", "lease", h.namespace+"/"+h.name, "err", err, "retry_in", wait)
			}
		} else {
			backoff = 0
			if h.lastErr != "" {
				h.lastErr = ""
				h.log.Info("node lease renewed", "lease", h.namespace+"/"+h.name)
			}
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
		case <-timer.C:
			continue
		}
		break
	}
	h.release()
}

func (h *nodeLease) renew(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, h.timing.apiTimeout)
	defer cancel()
	api := h.client.CoordinationV1().Leases(h.namespace)
	now := metav1.NewMicroTime(time.Now())
	dur := int32(h.timing.nodeLeaseDuration / time.Second)
	if h.lease == nil {
		l, err := api.Get(ctx, h.name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			l = &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: h.name, Namespace: h.namespace, OwnerReferences: h.owner()},
				Spec: coordinationv1.LeaseSpec{
					HolderIdentity:       &h.node,
					LeaseDurationSeconds: &dur,
					AcquireTime:          &now,
					RenewTime:            &now,
				},
			}
			created, err := api.Create(ctx, l, metav1.CreateOptions{FieldManager: statusFieldManager})
			if err != nil {
				return fmt.Errorf("create lease: %w", err)
			}
			h.lease = created
			return nil
		}
		if err != nil {
			return fmt.Errorf("get lease: %w", err)
		}
		h.lease = l
	}
	l := h.lease.DeepCopy()
	if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != h.node {
		l.Spec.AcquireTime = &now
	}
	l.Spec.HolderIdentity = &h.node
	l.Spec.LeaseDurationSeconds = &dur
	l.Spec.RenewTime = &now
	if len(l.OwnerReferences) == 0 {
		l.OwnerReferences = h.owner()
	}
	updated, err := api.Update(ctx, l, metav1.UpdateOptions{FieldManager: statusFieldManager})
	if err != nil {
		// Start from a fresh copy next time (conflict, deleted Lease).
		h.lease = nil
		return fmt.Errorf("update lease: %w", err)
	}
	h.lease = updated
	return nil
}

// owner makes the Node own its Lease. blockOwnerDeletion stays unset: it
// would need delete permission on nodes.
func (h *nodeLease) owner() []metav1.OwnerReference {
	uid := h.nodeUID()
	if uid == "" {
		return nil
	}
	return []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: h.node, UID: uid}}
}

// release clears the holder, within a short timeout: the agent is
// stopping and the Lease expires anyway.
func (h *nodeLease) release() {
	ctx, cancel := context.WithTimeout(context.Background(), h.timing.apiTimeout)
	defer cancel()
	api := h.client.CoordinationV1().Leases(h.namespace)
	key := h.namespace + "/" + h.name
	for attempt := 0; attempt < 2; attempt++ {
		l := h.lease
		h.lease = nil
		if l == nil {
			var err error
			if l, err = api.Get(ctx, h.name, metav1.GetOptions{}); err != nil {
				if !apierrors.IsNotFound(err) {
					h.log.Warn("release node lease", "lease", key, "err", err)
				}
				return
			}
		}
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != h.node {
			return
		}
		l = l.DeepCopy()
		l.Spec.HolderIdentity = nil
		_, err := api.Update(ctx, l, metav1.UpdateOptions{FieldManager: statusFieldManager})
		if err == nil {
			h.log.Debug("node lease released", "lease", key)
			return
		}
		if !apierrors.IsConflict(err) {
			h.log.Warn("release node lease", "lease", key, "err", err)
			return
		}
	}
}
