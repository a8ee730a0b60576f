package controller

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"
	gwapi "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
)

// gatewayStatusWriter writes the Gateway API statuses the translation
// decided. It writes only while this agent is the elected status writer
// (the Ingress status election, status_writer.go), and only objects whose
// status differs from the decision: the conditions keep their transition
// times when their status did not change, and an HTTPRoute's parents of
// other controllers are left alone.
type gatewayStatusWriter struct {
	client gwclient.Interface
	ctrl   string
	log    *slog.Logger
	c      *Controller

	mu      sync.Mutex
	decided GatewayStatuses
	// ours are the status keys of the routes that had parents of ours in
	// a decision since this agent started: a route that loses them must
	// have them removed.
	ours map[string]bool
	// written is the resourceVersion of this writer's last write of each
	// object: an informer copy at another version may predate that write
	// and cannot tell that nothing needs writing.
	written map[string]string
	// externalIPsRefused are the Gateway Services (namespace/name) the API
	// server took only without their externalIPs, reported once each.
	externalIPsRefused map[string]bool
	queue              workqueue.TypedRateLimitingInterface[string] // nil while not leading
}

func newGatewayStatusWriter(c *Controller, client gwclient.Interface) *gatewayStatusWriter {
	return &gatewayStatusWriter{client: client, c: c, log: c.log.With("status", "gateway"),
		ctrl: cmp.Or(c.cfg.Gateway.ControllerName, DefaultGatewayControllerName), ours: map[string]bool{}, written: map[string]string{},
		externalIPsRefused: map[string]bool{}}
}

// Status keys name the object whose status is written.
func classStatusKey(name string) string     { return "GatewayClass/" + name }
func gatewayStatusKey(nsName string) string { return "Gateway/" + nsName }

// optionalGatewayConditions are the Gateway conditions the translation
// decides only in some cases (the spec says they are removed otherwise).
var optionalGatewayConditions = []string{string(gwapi.GatewayConditionInsecureFrontendValidationMode)}

// maxAncestors is the API's bound on a policy's ancestors, all
// controllers' together.
const maxAncestors = 16

// updateOpts mark the writer's status updates.
var updateOpts = metav1.UpdateOptions{FieldManager: statusFieldManager}

// routeStatusKey names a route of kind (HTTPRoute, GRPCRoute, TLSRoute).
func routeStatusKey(kind, nsName string) string { return kind + "/" + nsName }

// want records a new decision and queues the objects it changes.
func (w *gatewayStatusWriter) want(st GatewayStatuses) {
	w.mu.Lock()
	defer w.mu.Unlock()
	prev := w.decided
	w.decided = st
	var changed []string
	for k, v := range st.Classes {
		if !reflect.DeepEqual(prev.Classes[k], v) {
			changed = append(changed, classStatusKey(k))
		}
	}
	for k, v := range st.Gateways {
		if pv, ok := prev.Gateways[k]; !ok || !reflect.DeepEqual(pv, v) {
			changed = append(changed, gatewayStatusKey(k))
		}
	}
	for k, v := range st.ListenerSets {
		if pv, ok := prev.ListenerSets[k]; !ok || !reflect.DeepEqual(pv, v) {
			changed = append(changed, routeStatusKey(kindListenerSet, k))
		}
	}
	for kind, routes := range st.Routes {
		for k, v := range routes {
			key := routeStatusKey(kind, k)
			w.ours[key] = true
			if !reflect.DeepEqual(prev.Routes[kind][k], v) {
				changed = append(changed, key)
			}
		}
	}
	for k, v := range st.BackendTLSPolicies {
		key := routeStatusKey(kindBackendTLSPolicy, k)
		w.ours[key] = true
		if !reflect.DeepEqual(prev.BackendTLSPolicies[k], v) {
			changed = append(changed, key)
		}
	}
	for k, v := range st.Services {
		if !reflect.DeepEqual(prev.Services[k], v) {
			changed = append(changed, serviceStatusKey(k))
		}
	}
	for k := range prev.Services {
		if _, ok := st.Services[k]; !ok {
			changed = append(changed, serviceStatusKey(k))
		}
	}
	if prev.Services == nil {
		// The first decision: the Services of Gateways gone while no
		// agent was writing.
		changed = append(changed, w.cachedGatewayServices()...)
	}
	for key := range w.ours {
		kind, k, _ := strings.Cut(key, "/")
		ok := false
		if kind == kindBackendTLSPolicy {
			_, ok = st.BackendTLSPolicies[k]
		} else {
			_, ok = st.Routes[kind][k]
		}
		if !ok {
			changed = append(changed, key)
		}
	}
	if w.queue != nil {
		for _, k := range changed {
			w.queue.Add(k)
		}
	}
}

// created queues a new object's status for a check. The decisions are
// compared by namespace/name: an object deleted and created again
// between two syncs gets the same decision as the one before, so no
// change would queue it, and it would keep an empty status.
func (w *gatewayStatusWriter) created(obj any) {
	var key string
	switch o := obj.(type) {
	case *gwapi.GatewayClass:
		key = classStatusKey(o.Name)
	case *gwapi.Gateway:
		key = gatewayStatusKey(o.Namespace + "/" + o.Name)
	case *gwapi.HTTPRoute:
		key = routeStatusKey(kindHTTPRoute, o.Namespace+"/"+o.Name)
	case *gwapi.GRPCRoute:
		key = routeStatusKey(kindGRPCRoute, o.Namespace+"/"+o.Name)
	case *gwapi.TLSRoute:
		key = routeStatusKey(kindTLSRoute, o.Namespace+"/"+o.Name)
	case *gwapi.BackendTLSPolicy:
		key = routeStatusKey(kindBackendTLSPolicy, o.Namespace+"/"+o.Name)
	case *gwapi.ListenerSet:
		key = routeStatusKey(kindListenerSet, o.Namespace+"/"+o.Name)
	default:
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.queue != nil {
		w.queue.Add(key)
	}
}

// lead writes statuses until ctx ends (the term as status writer).
func (w *gatewayStatusWriter) lead(ctx context.Context) {
	q := workqueue.NewTypedRateLimitingQueue(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](500*time.Millisecond, time.Minute))
	w.mu.Lock()
	w.queue = q
	// A new writer checks everything once.
	for k := range w.decided.Classes {
		q.Add(classStatusKey(k))
	}
	for k := range w.decided.Gateways {
		q.Add(gatewayStatusKey(k))
	}
	for k := range w.decided.ListenerSets {
		q.Add(routeStatusKey(kindListenerSet, k))
	}
	for key := range w.ours {
		q.Add(key)
	}
	for k := range w.decided.Services {
		q.Add(serviceStatusKey(k))
	}
	for _, k := range w.cachedGatewayServices() {
		q.Add(k)
	}
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.queue = nil
		w.mu.Unlock()
		q.ShutDown()
	}()
	var wg sync.WaitGroup
	for range statusWorkers {
		wg.Go(func() {
			for {
				key, quit := q.Get()
				if quit {
					return
				}
				if err := w.write(ctx, key); err != nil {
					w.log.Warn("write gateway api status", "object", key, "err", err)
					q.AddRateLimited(key)
				} else {
					q.Forget(key)
				}
				q.Done(key)
			}
		})
	}
	<-ctx.Done()
	q.ShutDown()
	wg.Wait()
}

// write brings one object's status to the decision. It starts from the
// informer's copy; when that is stale (a conflict: typically the writer's
// own previous write not seen yet) it reads the object again and retries
// at once, rather than backing off, so statuses follow quick changes.
func (w *gatewayStatusWriter) write(ctx context.Context, key string) error {
	kind, nsName, _ := strings.Cut(key, "/")
	ns, name, _ := strings.Cut(nsName, "/")
	w.mu.Lock()
	st := w.decided
	w.mu.Unlock()
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	v1 := w.client.GatewayV1()
	fresh := false
	// stale reports whether the informer's copy may predate this writer's
	// last write of the object.
	stale := func(rv string) bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		last, ok := w.written[key]
		return ok && last != rv
	}
	wrote := func(rv string) error {
		w.mu.Lock()
		w.written[key] = rv
		w.mu.Unlock()
		return nil
	}
	return ignoreNotFound(retry.RetryOnConflict(retry.DefaultRetry, func() error {
		defer func() { fresh = true }()
		switch kind {
		case kindService:
			return w.writeService(ctx, ns, name)
		case "GatewayClass":
			want, ok := st.Classes[nsName]
			if !ok {
				return nil
			}
			cur, err := w.c.gw.classes.Get(nsName)
			if fresh || err == nil && stale(cur.ResourceVersion) {
				cur, err = v1.GatewayClasses().Get(ctx, nsName, metav1.GetOptions{})
			}
			if err != nil {
				return err
			}
			next := cur.DeepCopy()
			next.Status.Conditions = setConditions(cur.Status.Conditions, want, now)
			if reflect.DeepEqual(cur.Status, next.Status) {
				return nil
			}
			updated, err := v1.GatewayClasses().UpdateStatus(ctx, next, updateOpts)
			if err != nil {
				return err
			}
			return wrote(updated.ResourceVersion)
		case "Gateway":
			want, ok := st.Gateways[nsName]
			if !ok {
				return nil
			}
			cur, err := w.c.gw.gateways.Gateways(ns).Get(name)
			if fresh || err == nil && stale(cur.ResourceVersion) {
				cur, err = v1.Gateways(ns).Get(ctx, name, metav1.GetOptions{})
			}
			if err != nil {
				return err
			}
			next := cur.DeepCopy()
			next.Status.Addresses = want.Addresses
			next.Status.AttachedListenerSets = want.AttachedListenerSets
			next.Status.Conditions = setConditions(cur.Status.Conditions, want.Conditions, now)
			// A condition only some decisions have goes when one lacks it.
			for _, typ := range optionalGatewayConditions {
				if meta.FindStatusCondition(want.Conditions, typ) == nil {
					meta.RemoveStatusCondition(&next.Status.Conditions, typ)
				}
			}
			next.Status.Listeners = mergeListeners(cur.Status.Listeners, want.Listeners, now,
				func(l *gwapi.ListenerStatus) (gwapi.SectionName, *[]metav1.Condition) { return l.Name, &l.Conditions })
			if reflect.DeepEqual(cur.Status, next.Status) {
				return nil
			}
			updated, err := v1.Gateways(ns).UpdateStatus(ctx, next, updateOpts)
			if err != nil {
				return err
			}
			return wrote(updated.ResourceVersion)
		case kindHTTPRoute:
			return writeRouteStatus(ctx, w, routeStatusIO[*gwapi.HTTPRoute]{
				cached: func() (*gwapi.HTTPRoute, error) { return w.c.gw.httpRoutes.HTTPRoutes(ns).Get(name) },
				get:    func() (*gwapi.HTTPRoute, error) { return v1.HTTPRoutes(ns).Get(ctx, name, metav1.GetOptions{}) },
				update: func(r *gwapi.HTTPRoute) (*gwapi.HTTPRoute, error) {
					return v1.HTTPRoutes(ns).UpdateStatus(ctx, r, updateOpts)
				},
				parents: func(r *gwapi.HTTPRoute) *[]gwapi.RouteParentStatus { return &r.Status.Parents },
			}, fresh, stale, wrote, st.Routes[kind][nsName], now)
		case kindGRPCRoute:
			return writeRouteStatus(ctx, w, routeStatusIO[*gwapi.GRPCRoute]{
				cached: func() (*gwapi.GRPCRoute, error) { return w.c.gw.grpcRoutes.GRPCRoutes(ns).Get(name) },
				get:    func() (*gwapi.GRPCRoute, error) { return v1.GRPCRoutes(ns).Get(ctx, name, metav1.GetOptions{}) },
				update: func(r *gwapi.GRPCRoute) (*gwapi.GRPCRoute, error) {
					return v1.GRPCRoutes(ns).UpdateStatus(ctx, r, updateOpts)
				},
				parents: func(r *gwapi.GRPCRoute) *[]gwapi.RouteParentStatus { return &r.Status.Parents },
			}, fresh, stale, wrote, st.Routes[kind][nsName], now)
		case kindListenerSet:
			want, ok := st.ListenerSets[nsName]
			if !ok || w.c.gw.listenerSets == nil {
				return nil
			}
			cur, err := w.c.gw.listenerSets.ListenerSets(ns).Get(name)
			if fresh || err == nil && stale(cur.ResourceVersion) {
				cur, err = v1.ListenerSets(ns).Get(ctx, name, metav1.GetOptions{})
			}
			if err != nil {
				return err
			}
			next := cur.DeepCopy()
			next.Status.Conditions = setConditions(cur.Status.Conditions, want.Conditions, now)
			next.Status.Listeners = mergeListeners(cur.Status.Listeners, want.Listeners, now,
				func(l *gwapi.ListenerEntryStatus) (gwapi.SectionName, *[]metav1.Condition) {
					return l.Name, &l.Conditions
				})
			if reflect.DeepEqual(cur.Status, next.Status) {
				return nil
			}
			updated, err := v1.ListenerSets(ns).UpdateStatus(ctx, next, updateOpts)
			if err != nil {
				return err
			}
			return wrote(updated.ResourceVersion)
		case kindBackendTLSPolicy:
			if w.c.gw.tlsPolicies == nil {
				return nil
			}
			cur, err := w.c.gw.tlsPolicies.BackendTLSPolicies(ns).Get(name)
			if fresh || err == nil && stale(cur.ResourceVersion) {
				cur, err = v1.BackendTLSPolicies(ns).Get(ctx, name, metav1.GetOptions{})
			}
			if err != nil {
				return err
			}
			ancestors, changed := w.policyAncestors(cur.Status.Ancestors, st.BackendTLSPolicies[nsName], now)
			if !changed {
				return nil
			}
			next := cur.DeepCopy()
			next.Status.Ancestors = ancestors
			updated, err := v1.BackendTLSPolicies(ns).UpdateStatus(ctx, next, updateOpts)
			if err != nil {
				return err
			}
			return wrote(updated.ResourceVersion)
		case kindTLSRoute:
			if w.c.gw.tlsRoutes == nil {
				return nil
			}
			return writeRouteStatus(ctx, w, routeStatusIO[*gwapi.TLSRoute]{
				cached: func() (*gwapi.TLSRoute, error) { return w.c.gw.tlsRoutes.TLSRoutes(ns).Get(name) },
				get:    func() (*gwapi.TLSRoute, error) { return v1.TLSRoutes(ns).Get(ctx, name, metav1.GetOptions{}) },
				update: func(r *gwapi.TLSRoute) (*gwapi.TLSRoute, error) {
					return v1.TLSRoutes(ns).UpdateStatus(ctx, r, updateOpts)
				},
				parents: func(r *gwapi.TLSRoute) *[]gwapi.RouteParentStatus { return &r.Status.Parents },
			}, fresh, stale, wrote, st.Routes[kind][nsName], now)
		}
		return fmt.Errorf("unknown status key %q", key)
	}))
}

// routeStatusIO reads and writes one route kind's status.
type routeStatusIO[R interface {
	metav1.Object
	DeepCopyObject() runtime.Object
}] struct {
	cached, get func() (R, error)
	update      func(R) (R, error)
	parents     func(R) *[]gwapi.RouteParentStatus
}

// writeRouteStatus brings a route's parents of ours to want, reading the
// route from the informer unless that copy may be stale.
func writeRouteStatus[R interface {
	metav1.Object
	DeepCopyObject() runtime.Object
}](ctx context.Context, w *gatewayStatusWriter, io routeStatusIO[R], fresh bool, stale func(string) bool,
	wrote func(string) error, want []gwapi.RouteParentStatus, now metav1.Time) error {
	cur, err := io.cached()
	if fresh || err == nil && stale(cur.GetResourceVersion()) {
		cur, err = io.get()
	}
	if err != nil {
		return err
	}
	parents, changed := w.routeParents(*io.parents(cur), want, now)
	if !changed {
		return nil
	}
	next := cur.DeepCopyObject().(R)
	*io.parents(next) = parents
	updated, err := io.update(next)
	if err != nil {
		return err
	}
	return wrote(updated.GetResourceVersion())
}

// routeParents merges the decided parents of ours into a route's current
// ones (other controllers' untouched) and reports whether they changed.
func (w *gatewayStatusWriter) routeParents(cur, want []gwapi.RouteParentStatus, now metav1.Time) ([]gwapi.RouteParentStatus, bool) {
	return mergeOurs(w.ctrl, cur, want, now, func(p *gwapi.RouteParentStatus) (gwapi.GatewayController, any, *[]metav1.Condition) {
		return p.ControllerName, p.ParentRef, &p.Conditions
	})
}

// policyAncestors merges the decided ancestors of ours into a policy's
// current ones (other controllers' untouched) and reports whether they
// changed.
func (w *gatewayStatusWriter) policyAncestors(cur, want []gwapi.PolicyAncestorStatus, now metav1.Time) ([]gwapi.PolicyAncestorStatus, bool) {
	// The API refuses more than maxAncestors: the first ones (by
	// Gateway) are reported, the rest cannot be.
	others := 0
	for _, a := range cur {
		if string(a.ControllerName) != w.ctrl {
			others++
		}
	}
	if room := max(maxAncestors-others, 0); len(want) > room {
		w.log.Warn("policy has more ancestors than its status can hold; the others are not reported",
			"ancestors", len(want), "reported", room)
		want = want[:room]
	}
	return mergeOurs(w.ctrl, cur, want, now, func(a *gwapi.PolicyAncestorStatus) (gwapi.GatewayController, any, *[]metav1.Condition) {
		return a.ControllerName, a.AncestorRef, &a.Conditions
	})
}

// mergeListeners is the decided listener statuses (of a Gateway or a
// ListenerSet) with the transition times of the current ones whose
// conditions did not change; part gives a status's name and conditions.
func mergeListeners[T any](cur, want []T, now metav1.Time, part func(*T) (gwapi.SectionName, *[]metav1.Condition)) []T {
	out := make([]T, 0, len(want))
	for _, l := range want {
		name, conds := part(&l)
		var prev []metav1.Condition
		if i := slices.IndexFunc(cur, func(c T) bool { n, _ := part(&c); return n == name }); i >= 0 {
			_, pc := part(&cur[i])
			prev = *pc
		}
		*conds = setConditions(prev, *conds, now)
		out = append(out, l)
	}
	return out
}

// mergeOurs replaces the entries of controller ctrl in cur (a route's
// parents, a policy's ancestors) by want, keeping the transition times
// of conditions whose status did not change; part gives an entry's
// controller, reference and conditions.
func mergeOurs[T any](ctrl string, cur, want []T, now metav1.Time,
	part func(*T) (gwapi.GatewayController, any, *[]metav1.Condition)) ([]T, bool) {
	out := slices.DeleteFunc(slices.Clone(cur), func(e T) bool {
		c, _, _ := part(&e)
		return string(c) == ctrl
	})
	for _, e := range want {
		_, ref, conds := part(&e)
		var prev []metav1.Condition
		if i := slices.IndexFunc(cur, func(c T) bool {
			cc, cref, _ := part(&c)
			return string(cc) == ctrl && reflect.DeepEqual(cref, ref)
		}); i >= 0 {
			_, _, pc := part(&cur[i])
			prev = *pc
		}
		*conds = setConditions(prev, *conds, now)
		out = append(out, e)
	}
	if len(out) == 0 {
		out = []T{}
	}
	return out, !reflect.DeepEqual(cur, out) && (len(cur) > 0 || len(out) > 0)
}

func ignoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
