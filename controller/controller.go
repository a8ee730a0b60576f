package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gwinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/nodegress/nodegress/l7proxy"
	"github.com/nodegress/nodegress/loader"
)

// Datapath is what the controller drives: loader.Datapath in the agent, a
// fake in tests.
type Datapath interface {
	// Apply makes the datapath serve exactly services, the full desired
	// state; the implementation diffs against what it has.
	Apply(services []loader.Service) error
}

// IncrementalDatapath is a Datapath that also takes changes: the services
// added or replaced and the names of those removed (loader.Datapath.Update).
// With it a sync costs what changed; a Datapath without it gets the full
// state at every change.
type IncrementalDatapath interface {
	Datapath
	Update(changed []loader.Service, removed []string) error
}

// fullResyncEvery is the period of the full sync that backs the
// incremental ones up: everything is translated again and applied whole.
const fullResyncEvery = 5 * time.Minute

// Config configures a Controller.
type Config struct {
	// NodeName is this node's name: it selects the Node object and marks
	// endpoints on this node Local. Empty means the host name.
	NodeName string
	// NodeIPs are the addresses of the agent's devices; together with the
	// Node object's InternalIP/ExternalIP addresses they are the NodePort
	// frontends. IPv6 addresses are ignored.
	NodeIPs []netip.Addr
	// StandaloneDir, when set, is a directory of Kubernetes YAML files used
	// instead of an API server.
	StandaloneDir string
	// Client is the API server client. Exactly one of Client and
	// StandaloneDir must be set.
	Client kubernetes.Interface
	// MinSyncInterval bounds how often the datapath is synced; changes in
	// between are merged. Zero means 100ms.
	MinSyncInterval time.Duration
	// Logger receives the controller's logs. Nil means slog.Default().
	Logger *slog.Logger
	// Registry receives the controller's metrics; nil means none.
	Registry prometheus.Registerer
	// SocketLB makes every Service port also an Internal datapath service
	// (ClusterIPs and the node's frontends for in-cluster clients): the
	// datapath replaces kube-proxy. Off, ClusterIP traffic is left to
	// kube-proxy.
	SocketLB bool
	// Maglev makes Maglev the backend selection of Services without a
	// nodegress.io/lb-algorithm annotation.
	Maglev bool
	// DSR makes direct server return the forwarding to remote backends of
	// Services without a nodegress.io/forwarding-mode annotation.
	DSR bool
	// L7, when set, turns on L7 ingress: Ingresses of nodegress's class
	// configure L7.Proxy, and the L7 frontends are steered to it. Nil
	// leaves Ingresses alone.
	L7 *L7Config
	// Gateway, with L7, turns on the Gateway API (gateway.go).
	Gateway *GatewayConfig
	// UpdateStatus turns on the Ingress status write-back, with an API
	// server and L7 only: the agent takes part in the election of the one
	// agent writing status and, without a publish Service, keeps its node
	// Lease renewed so the leader knows its node serves (see status.go).
	UpdateStatus bool
	// ElectionNamespace holds the status election Lease and the node
	// Leases. Empty means DefaultElectionNamespace.
	ElectionNamespace string
	// EventRecorder receives the Events about invalid objects. Nil means
	// the API server's Events with a Client, and none standalone (there is
	// nowhere to record them; the problems are logged either way).
	EventRecorder record.EventRecorder
	// ProxyHealth, when set, is told of every requested and every
	// successful sync and of this node's Node: the state behind
	// kube-proxy's /healthz (see healthsync.go).
	ProxyHealth ProxyHealthTracker
	// ServiceHealth, when set, serves the healthCheckNodePorts of
	// LoadBalancer Services with externalTrafficPolicy Local, with the
	// local endpoint counts of the last successful sync.
	ServiceHealth ServiceHealthServer
}

// Controller keeps the datapath equal to the Services and EndpointSlices of
// the cluster (or of the standalone directory).
//
// Both sources feed the same shared informers: in standalone mode the files
// are loaded into an in-memory clientset, so everything downstream of the
// informers is the code that runs against a real API server. Informer
// handlers only request a sync; one runner recomputes the desired state from
// the listers, at most every MinSyncInterval, and hands it to the datapath
// only when it changed.
type Controller struct {
	cfg    Config
	log    *slog.Logger
	dp     Datapath
	client kubernetes.Interface
	source *standaloneSource // nil with an API server

	running atomic.Bool
	synced  chan struct{}
	runner  *syncRunner

	services     corelisters.ServiceLister
	slices       discoverylisters.EndpointSliceLister
	sliceIndexer cache.Indexer // by sliceServiceIndex
	nodes        corelisters.NodeLister
	ingresses    networkinglisters.IngressLister
	classes      networkinglisters.IngressClassLister
	secrets      corelisters.SecretLister
	authSecrets  corelisters.SecretLister

	gw        *gatewayListers      // nil: Gateway API off
	gwStatus  *gatewayStatusWriter // nil: no Gateway API status write-back
	events    record.EventRecorder // nil: problems are only logged
	status    *statusManager       // nil: no status write-back
	nodeLease *nodeLease           // with status showing node addresses

	tracker              *changeTracker
	svcCount, sliceCount atomic.Int64
	health               *healthState

	// Only the runner's goroutine touches these.
	applied    bool
	needFull   bool // the last sync failed: the next one is full
	node       NodeInfo
	l4         *serviceState
	l7Out      []loader.Service // L7 frontends of the last Ingress translation
	l7Issues   []error
	lastIssues map[string]bool
	lastSync   syncStats
	metrics    *metrics
	// L7 state: the configuration the proxy last got and what it reported
	// about it, repeated into every sync's issues so they are logged once.
	certs        *certCache
	proxyApplied bool
	lastProxy    l7proxy.Config
	proxyIssues  []error
}

// New checks cfg and prepares a Controller; Run starts it.
func New(cfg Config, dp Datapath) (*Controller, error) {
	if dp == nil {
		return nil, errors.New("datapath is required")
	}
	if (cfg.StandaloneDir == "") == (cfg.Client == nil) {
		return nil, errors.New("exactly one of a standalone directory and an API client is required")
	}
	if cfg.NodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("node name from host name: %w", err)
		}
		cfg.NodeName = strings.ToLower(h)
	}
	if cfg.MinSyncInterval <= 0 {
		cfg.MinSyncInterval = 100 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.L7 != nil {
		l7 := cfg.L7.withDefaults()
		if l7.Proxy == nil {
			return nil, errors.New("l7: a proxy is required")
		}
		if err := l7.validate(); err != nil {
			return nil, fmt.Errorf("l7: %w", err)
		}
		cfg.L7 = &l7
	}
	quietFor := ""
	if cfg.L7 != nil {
		quietFor = cfg.L7.PublishService
	}
	c := &Controller{
		l4:         newServiceState(quietFor),
		cfg:        cfg,
		log:        cfg.Logger,
		dp:         dp,
		client:     cfg.Client,
		synced:     make(chan struct{}),
		lastIssues: make(map[string]bool),
		tracker:    newChangeTracker(),
		certs:      newCertCache(),
		metrics:    newMetrics(cfg.Registry),
		events:     cfg.EventRecorder,
		health:     newHealthState(),
	}
	if cfg.StandaloneDir != "" {
		c.source = newStandaloneSource(cfg.StandaloneDir, cfg.Logger)
		c.client = c.source.client
	} else if cfg.L7 != nil && cfg.UpdateStatus {
		c.status = newStatusManager(c, cfg.Registry)
		if cfg.L7.PublishService == "" {
			// Node Leases tell the leader which nodes serve; with a
			// publish Service the status does not name nodes.
			c.nodeLease = newNodeLease(c, c.status.namespace)
		}
		if cfg.Gateway != nil && cfg.Gateway.Client != nil {
			c.gwStatus = newGatewayStatusWriter(c, cfg.Gateway.Client)
			c.status.alsoLead = append(c.status.alsoLead, c.gwStatus.lead)
		}
	}
	c.runner = newSyncRunner(cfg.MinSyncInterval, fullResyncEvery, 30*time.Second, c.metrics.observe(c.sync), func(err error, retryIn time.Duration) {
		c.log.Error("datapath sync", "err", err, "retry_in", retryIn)
	})
	c.runner.onRequest = c.healthQueued
	c.runner.onPeriodic = c.tracker.resyncAll
	return c, nil
}

// Synced is closed once the datapath has been given the complete initial
// state (all informers listed, standalone files loaded). Readiness hangs on
// it.
func (c *Controller) Synced() <-chan struct{} { return c.synced }

// NodeName is the name of the node the controller serves (its Config's,
// or the host name).
func (c *Controller) NodeName() string { return c.cfg.NodeName }

// SyncStallLimit is how long a sync may run, or a requested one wait to
// start, before Health reports the sync loop wedged. A full sync of
// thousands of objects takes well under a second.
const SyncStallLimit = 2 * time.Minute

// Health reports a sync loop that stopped making progress (a sync stuck,
// or requests no longer served), for the agent's /healthz.
func (c *Controller) Health() error {
	if err := c.runner.stalled(SyncStallLimit); err != nil {
		return fmt.Errorf("sync loop: %w", err)
	}
	return nil
}

// Run watches the sources and syncs the datapath until ctx is done. It
// returns nil then; bad input is logged, never returned.
func (c *Controller) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("controller is already running")
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var started []interface{ Shutdown() }
	defer func() {
		cancel()
		for _, f := range started {
			f.Shutdown()
		}
		wg.Wait()
	}()

	if c.source != nil {
		// Load the files before the informers list, so the first sync is
		// the complete state of the directory.
		c.source.Rescan()
	}

	src := newSources(c.client, c.cfg.NodeName)
	for _, register := range []func(*sources) error{c.registerServices, c.registerIngress, c.registerGateway} {
		if err := register(src); err != nil {
			return err
		}
	}
	if c.status != nil {
		if err := c.status.register(src); err != nil {
			return err
		}
	}
	if c.events == nil && c.source == nil {
		c.events = newEventRecorder(ctx, c.client, c.cfg.NodeName, c.log)
	}

	started = src.start(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), src.hasSynced...) {
		return nil // ctx is done
	}
	c.log.Debug("informers synced")

	if c.source != nil {
		wg.Go(func() { c.source.Run(ctx) })
	}
	// The status write-back and the node Lease talk to the API server
	// from goroutines of their own and retry forever: the sync runner
	// never waits for them, so while the API server is away the datapath
	// keeps its last good state and follows the informers when it is back.
	if c.status != nil {
		wg.Go(func() { c.status.run(ctx) })
	}
	if c.nodeLease != nil {
		wg.Go(func() {
			// A node is advertised once it serves the complete state.
			select {
			case <-c.synced:
			case <-ctx.Done():
				return
			}
			c.nodeLease.run(ctx)
		})
	}
	c.healthStarted()
	c.runner.Request()
	c.runner.Loop(ctx)
	return nil
}

// sources are the informers Run starts: each subsystem registers the ones
// it reads and its event handlers, and every registered informer must
// have listed before the first sync.
type sources struct {
	factory informers.SharedInformerFactory
	// nodes lists only this node's Node object: the others change all
	// the time in a cluster and do not matter.
	nodes informers.SharedInformerFactory
	// secrets lists only TLS Secrets, the proxy's certificates;
	// authSecrets only Opaque ones, the htpasswd data of basic auth.
	secrets, authSecrets informers.SharedInformerFactory
	// gateway is the Gateway API's factory; nil while it is off.
	gateway   gwinformers.SharedInformerFactory
	hasSynced []cache.InformerSynced
}

func newSources(client kubernetes.Interface, nodeName string) *sources {
	return &sources{
		factory: informers.NewSharedInformerFactory(client, 0),
		nodes: informers.NewSharedInformerFactoryWithOptions(client, 0,
			informers.WithTweakListOptions(func(o *metav1.ListOptions) {
				o.FieldSelector = fields.OneTermEqualSelector("metadata.name", nodeName).String()
			})),
		secrets: informers.NewSharedInformerFactoryWithOptions(client, 0,
			informers.WithTweakListOptions(func(o *metav1.ListOptions) {
				o.FieldSelector = fields.OneTermEqualSelector("type", string(corev1.SecretTypeTLS)).String()
			})),
		authSecrets: informers.NewSharedInformerFactoryWithOptions(client, 0,
			informers.WithTweakListOptions(func(o *metav1.ListOptions) {
				o.FieldSelector = fields.OneTermEqualSelector("type", string(corev1.SecretTypeOpaque)).String()
			})),
	}
}

// follow makes inf list before the first sync and adds the handlers.
func (s *sources) follow(inf cache.SharedIndexInformer, handlers ...cache.ResourceEventHandler) error {
	for _, h := range handlers {
		if _, err := inf.AddEventHandler(h); err != nil {
			return fmt.Errorf("add event handler: %w", err)
		}
	}
	s.hasSynced = append(s.hasSynced, inf.HasSynced)
	return nil
}

// start starts every factory; the caller shuts them down.
func (s *sources) start(ctx context.Context) []interface{ Shutdown() } {
	all := []interface{ Shutdown() }{s.factory, s.nodes, s.secrets, s.authSecrets}
	for _, f := range []informers.SharedInformerFactory{s.factory, s.nodes, s.secrets, s.authSecrets} {
		f.Start(ctx.Done())
	}
	if s.gateway != nil {
		s.gateway.Start(ctx.Done())
		all = append(all, s.gateway)
	}
	return all
}

// registerServices follows what the L4 datapath is made of: Services,
// their EndpointSlices, and this node.
func (c *Controller) registerServices(src *sources) error {
	svcInformer := src.factory.Core().V1().Services()
	sliceInformer := src.factory.Discovery().V1().EndpointSlices()
	nodeInformer := src.nodes.Core().V1().Nodes()
	c.services = svcInformer.Lister()
	c.slices = sliceInformer.Lister()
	c.nodes = nodeInformer.Lister()
	if err := sliceInformer.Informer().AddIndexers(cache.Indexers{sliceServiceIndex: sliceServiceIndexFunc}); err != nil {
		return fmt.Errorf("add endpointslice index: %w", err)
	}
	c.sliceIndexer = sliceInformer.Informer().GetIndexer()
	if err := src.follow(svcInformer.Informer(), c.serviceHandler()); err != nil {
		return err
	}
	if err := src.follow(sliceInformer.Informer(), c.sliceHandler()); err != nil {
		return err
	}
	return src.follow(nodeInformer.Informer(), cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { c.nodeChanged(nil, obj) },
		// Node status is rewritten all the time (conditions, heartbeats);
		// only its addresses and its zone matter here.
		UpdateFunc: c.nodeChanged,
		DeleteFunc: func(obj any) { c.nodeChanged(obj, nil) },
	})
}

// registerIngress follows what the proxy's Ingress routes are made of.
// The informers list even without L7, which keeps both modes' startup
// alike; they only trigger syncs when they matter.
func (c *Controller) registerIngress(src *sources) error {
	ingInformer := src.factory.Networking().V1().Ingresses()
	classInformer := src.factory.Networking().V1().IngressClasses()
	secretInformer := src.secrets.Core().V1().Secrets()
	authSecretInformer := src.authSecrets.Core().V1().Secrets()
	c.ingresses = ingInformer.Lister()
	c.classes = classInformer.Lister()
	c.secrets = secretInformer.Lister()
	c.authSecrets = authSecretInformer.Lister()
	var handlers []cache.ResourceEventHandler
	if c.cfg.L7 != nil {
		request := func() { c.tracker.ingress(); c.runner.Request() }
		handlers = append(handlers, cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { request() },
			UpdateFunc: func(any, any) { request() },
			DeleteFunc: func(any) { request() },
		})
	}
	for _, inf := range []cache.SharedIndexInformer{ingInformer.Informer(), classInformer.Informer(), secretInformer.Informer(),
		authSecretInformer.Informer()} {
		if err := src.follow(inf, handlers...); err != nil {
			return err
		}
	}
	return nil
}

func (c *Controller) nodeChanged(oldObj, newObj any) {
	c.healthNode(oldObj, newObj)
	node := func(obj any) *corev1.Node {
		if n, ok := obj.(*corev1.Node); ok && n.Name == c.cfg.NodeName {
			return n
		}
		return nil
	}
	same := func(a, b *corev1.Node) bool {
		if a == nil || b == nil {
			return a == b
		}
		return slices.Equal(a.Status.Addresses, b.Status.Addresses) &&
			a.Labels[corev1.LabelTopologyZone] == b.Labels[corev1.LabelTopologyZone]
	}
	if oldObj != nil && newObj != nil && same(node(oldObj), node(newObj)) {
		return
	}
	// Every NodePort frontend is a node address, and the zone picks the
	// endpoints of every Service with zone hints: rare, and worth a full
	// translation.
	c.tracker.everything()
	c.runner.Request()
}

// lookup returns a Service from the informer cache (nil when unknown) and
// its IPv4 EndpointSlices, sorted by name so translation sees them in a
// stable order.
func (c *Controller) lookup(key string) (*corev1.Service, []*discoveryv1.EndpointSlice) {
	ns, name, _ := strings.Cut(key, "/")
	svc, err := c.services.Services(ns).Get(name)
	if err != nil {
		svc = nil
	}
	objs, err := c.sliceIndexer.ByIndex(sliceServiceIndex, key)
	if err != nil {
		return svc, nil
	}
	out := make([]*discoveryv1.EndpointSlice, 0, len(objs))
	for _, o := range objs {
		if s, ok := o.(*discoveryv1.EndpointSlice); ok && s.AddressType == discoveryv1.AddressTypeIPv4 {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b *discoveryv1.EndpointSlice) int { return strings.Compare(a.Name, b.Name) })
	return svc, out
}

// sync applies the changes recorded since the last sync. A failed sync
// gives its changes back and makes the next one full, which re-applies the
// whole state whatever the failure left half done.
func (c *Controller) sync() error {
	p := c.tracker.take()
	if err := c.syncChanges(p); err != nil {
		c.tracker.putBack(p)
		c.needFull = true
		return err
	}
	c.needFull = false
	c.metrics.programmed(p.triggers, time.Now())
	c.syncHealth(p)
	return nil
}

func (c *Controller) syncChanges(p pendingChanges) error {
	start := time.Now()
	var nodeObj *corev1.Node
	if n, err := c.nodes.Get(c.cfg.NodeName); err == nil {
		nodeObj = n
	}
	node := NodeInfoFrom(c.cfg.NodeName, c.cfg.NodeIPs, nodeObj)
	node.SocketLB = c.cfg.SocketLB
	node.Maglev = c.cfg.Maglev
	node.DSR = c.cfg.DSR
	full := p.all || !c.applied || c.needFull || !slices.Equal(node.Addrs, c.node.Addrs) || node.Zone != c.node.Zone
	c.metrics.setObjects("Service", int(c.svcCount.Load()))
	c.metrics.setObjects("EndpointSlice", int(c.sliceCount.Load()))

	var keys []string
	if full {
		svcs, err := c.services.List(labels.Everything())
		if err != nil {
			return fmt.Errorf("list services: %w", err)
		}
		seen := make(map[string]bool, len(svcs))
		for _, s := range svcs {
			k := s.Namespace + "/" + s.Name
			seen[k] = true
			keys = append(keys, k)
		}
		for k := range c.l4.trans {
			if !seen[k] {
				keys = append(keys, k)
			}
		}
	} else {
		keys = make([]string, 0, len(p.svcs))
		for k := range p.svcs {
			keys = append(keys, k)
		}
	}

	var changed []loader.Service
	var removed []string
	if c.cfg.L7 != nil && (full || p.l7) {
		var err error
		if changed, removed, err = c.syncL7(node); err != nil {
			return err
		}
	}
	// The L7 frontends are the agent's own listeners: they win over any
	// Service asking for the same address and port.
	ch := c.l4.update(node, keys, c.lookup, reservedFrontends(c.l7Out))
	c.node = node
	c.lastSync = syncStats{full: full, translated: ch.services}
	changed = append(changed, ch.changed...)
	removed = append(removed, ch.removed...)
	c.reportIssues(append(slices.Clip(c.l7Issues), c.l4.issuesInOrder()...))

	first := !c.applied
	switch {
	case full && (first || c.needFull || p.resync || len(changed)+len(removed) > 0):
		services := c.fullState()
		if err := c.dp.Apply(services); err != nil {
			return fmt.Errorf("apply %d services: %w", len(services), err)
		}
	case len(changed)+len(removed) == 0:
		return nil
	default:
		if inc, ok := c.dp.(IncrementalDatapath); ok {
			if err := inc.Update(changed, removed); err != nil {
				return fmt.Errorf("update %d services, remove %d: %w", len(changed), len(removed), err)
			}
		} else if err := c.dp.Apply(c.fullState()); err != nil {
			return fmt.Errorf("apply services: %w", err)
		}
	}
	c.applied = true
	level := slog.LevelDebug
	if first {
		level = slog.LevelInfo
	}
	c.log.Log(context.Background(), level, "datapath synced", "full", full,
		"changed", len(changed), "removed", len(removed), "translated", ch.services,
		"node_addrs", len(node.Addrs), "duration", time.Since(start))
	if first {
		close(c.synced)
	}
	return nil
}

// syncL7 gives the proxy its routes and returns how the L7 frontends (the
// proxy's own listeners, steered by the datapath) changed.
func (c *Controller) syncL7(node NodeInfo) (changed []loader.Service, removed []string, err error) {
	l7Services, l7Issues, err := c.syncProxy(node)
	if err != nil {
		return nil, nil, err
	}
	c.l7Issues = l7Issues
	for _, s := range l7Services {
		if i := slices.IndexFunc(c.l7Out, func(o loader.Service) bool { return o.Name == s.Name }); i < 0 || !servicesEqual(c.l7Out[i:i+1], []loader.Service{s}) {
			changed = append(changed, s)
		}
	}
	for _, o := range c.l7Out {
		if !slices.ContainsFunc(l7Services, func(s loader.Service) bool { return s.Name == o.Name }) {
			removed = append(removed, o.Name)
		}
	}
	c.l7Out = l7Services
	return changed, removed, nil
}

// syncStats describes the last sync, for tests.
type syncStats struct {
	full bool
	// translated counts the Services translated or resolved again.
	translated int
}

// fullState is every datapath service, sorted by name.
func (c *Controller) fullState() []loader.Service {
	services := c.l4.all()
	if len(c.l7Out) > 0 {
		services = append(services, c.l7Out...)
		slices.SortFunc(services, func(a, b loader.Service) int { return strings.Compare(a.Name, b.Name) })
	}
	return services
}

// syncProxy translates the Ingresses and hands the proxy its configuration
// when it changed. It runs before the datapath is applied, so a frontend
// steered to the proxy for the first time finds its routes there. It
// returns the L7 frontends and the problems found, including those the
// proxy reported about its current configuration.
//
// The Ingress side is translated whole (Ingresses are few and the proxy
// compiles an immutable table anyway), but only when an Ingress,
// IngressClass or TLS Secret changed, or one of the Services the last
// translation looked up (c.tracker.l7Refs): Services are read through
// lookup, so the cost does not grow with the cluster's Services.
func (c *Controller) syncProxy(node NodeInfo) ([]loader.Service, []error, error) {
	ings, err := c.ingresses.List(labels.Everything())
	if err != nil {
		return nil, nil, fmt.Errorf("list ingresses: %w", err)
	}
	classes, err := c.classes.List(labels.Everything())
	if err != nil {
		return nil, nil, fmt.Errorf("list ingressclasses: %w", err)
	}
	secrets, err := c.secrets.List(labels.Everything())
	if err != nil {
		return nil, nil, fmt.Errorf("list secrets: %w", err)
	}
	authSecrets, err := c.authSecrets.List(labels.Everything())
	if err != nil {
		return nil, nil, fmt.Errorf("list auth secrets: %w", err)
	}
	secrets = append(secrets, authSecrets...)
	c.metrics.setObjects("Ingress", len(ings))
	c.metrics.setObjects("IngressClass", len(classes))
	c.metrics.setObjects("Secret", len(secrets))
	gwIn, err := c.gatewayInput()
	if err != nil {
		return nil, nil, err
	}
	refs := make(map[string]struct{})
	cfg, l7Services, gwStatus, issues := TranslateL7(IngressInput{
		Ingresses:      ings,
		IngressClasses: classes,
		Secrets:        secrets,
		NodeAddrs:      node.Addrs,
		Config:         *c.cfg.L7,
		certs:          c.certs,
		lookup:         c.lookup,
		refs:           refs,
	}, gwIn)
	c.tracker.setL7Refs(refs)
	if c.gwStatus != nil {
		c.gwStatus.want(gwStatus)
	}
	// Unchanged certificates come from c.certs as the same pointers, so
	// this comparison stays cheap.
	if !c.proxyApplied || !reflect.DeepEqual(cfg, c.lastProxy) {
		start := time.Now()
		perrs := c.cfg.L7.Proxy.Update(cfg)
		c.proxyIssues = c.proxyIssues[:0]
		for _, e := range perrs {
			c.proxyIssues = append(c.proxyIssues, &proxyIssue{e})
		}
		level := slog.LevelDebug
		if !c.proxyApplied {
			level = slog.LevelInfo
		}
		c.log.Log(context.Background(), level, "proxy configured", "routes", len(cfg.Routes),
			"upstreams", len(cfg.Upstreams), "certificates", len(cfg.Certificates), "duration", time.Since(start))
		c.proxyApplied, c.lastProxy = true, cfg
	}
	return l7Services, append(issues, c.proxyIssues...), nil
}

// proxyIssue is a part of the configuration the proxy skipped.
type proxyIssue struct{ err error }

func (p *proxyIssue) Error() string { return "proxy: " + p.err.Error() }
func (p *proxyIssue) Unwrap() error { return p.err }

// reportIssues logs translation problems once, when they appear, instead of
// at every sync, and records an Event on the object of each (API mode).
// A problem that goes away and comes back is reported again.
func (c *Controller) reportIssues(issues []error) {
	now := make(map[string]bool, len(issues))
	for _, err := range issues {
		msg := err.Error()
		now[msg] = true
		if c.lastIssues[msg] {
			continue
		}
		var pi *proxyIssue
		if errors.As(err, &pi) {
			c.log.Warn("proxy configuration", "err", pi.err)
			continue
		}
		var oe *ObjectError
		if errors.As(err, &oe) {
			attrs := []any{"kind", oe.Kind, "object", oe.Object}
			if oe.Port != "" {
				attrs = append(attrs, "port", oe.Port)
			}
			var ae *AnnotationError
			if errors.As(oe.Err, &ae) {
				attrs = append(attrs, "annotation", ae.Annotation, "value", ae.Value)
			}
			var ue *unsupportedFieldError
			switch {
			case oe.Skipped:
				c.log.Debug("skipped part of object", append(attrs, "err", oe.Err)...)
			case errors.As(oe.Err, &ue):
				c.log.Warn("unsupported service field", append(attrs, "field", ue.Field, "err", oe.Err)...)
			default:
				c.log.Warn("invalid object", append(attrs, "err", oe.Err)...)
			}
			c.recordEvent(oe)
			continue
		}
		c.log.Warn("translate", "err", err)
	}
	c.lastIssues = now
}

// servicesEqual compares whole values, so a field added to loader.Service
// later is part of the comparison without touching this.
func servicesEqual(a, b []loader.Service) bool {
	return reflect.DeepEqual(a, b)
}
