package controller

import (
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/tools/cache"
)

// changeTracker collects, between syncs, what the informers reported:
// the keys (namespace/name) of the Services to translate again, whether
// everything must be (a node address change moves every NodePort
// frontend), and whether the Ingress side must be translated again.
//
// Like kube-proxy's ServiceChangeTracker, handlers only record and one
// runner syncs; unlike it, the tracker keeps keys rather than
// {previous, current} objects: the sync reads the current object from the
// informer cache and compares the translation with the one it keeps, so a
// Service added and deleted within one window, or changed back, costs one
// translation and no datapath write.
type changeTracker struct {
	mu   sync.Mutex
	svcs map[string]struct{}
	all  bool
	l7   bool
	// resync asks for the periodic full sync, which also re-applies the
	// complete state to the datapath.
	resync bool
	// l7Refs are the Services the last Ingress translation looked up; a
	// change to one of them (or to its slices) changes the proxy's
	// configuration.
	l7Refs map[string]struct{}
	// triggers are the times the changes since the last sync were
	// triggered (EndpointSlice annotation
	// endpoints.kubernetes.io/last-change-trigger-time), per Service, for
	// the network programming latency; those before started are ignored,
	// as kube-proxy does (they were programmed by an earlier process).
	triggers map[string][]time.Time
	started  time.Time
}

// pendingChanges is one sync's worth of changes.
type pendingChanges struct {
	svcs     map[string]struct{}
	all      bool
	l7       bool
	resync   bool
	triggers map[string][]time.Time
}

func newChangeTracker() *changeTracker {
	return &changeTracker{svcs: map[string]struct{}{}, triggers: map[string][]time.Time{}, started: time.Now()}
}

// triggered records when the change of an EndpointSlice was triggered,
// from its annotation; slices without it (hand-made ones) are not timed.
func (t *changeTracker) triggered(obj any) {
	s, ok := objectOf(obj).(*discoveryv1.EndpointSlice)
	if !ok {
		return
	}
	v, ok := s.Annotations[corev1.EndpointsLastChangeTriggerTime]
	if !ok {
		return
	}
	at, err := time.Parse(time.RFC3339Nano, v)
	if err != nil || at.Before(t.started) {
		return
	}
	key := sliceOwnerKey(s)
	if key == "" {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	// The EndpointSlice controller stamps every slice it writes for one
	// change with the same time.
	if !slices.Contains(t.triggers[key], at) {
		t.triggers[key] = append(t.triggers[key], at)
	}
}

// service records a change of the Services keys.
func (t *changeTracker) service(keys ...string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, k := range keys {
		if k == "" {
			continue
		}
		t.svcs[k] = struct{}{}
		if _, ok := t.l7Refs[k]; ok {
			t.l7 = true
		}
	}
}

// everything records a change that may affect every Service.
func (t *changeTracker) everything() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.all, t.l7 = true, true
}

// ingress records a change of an Ingress, IngressClass or Secret.
func (t *changeTracker) ingress() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.l7 = true
}

// resyncAll records that the periodic safety net is due: everything is
// translated again and the whole state re-applied, which corrects any
// drift between the informers' view, the translation and the datapath.
func (t *changeTracker) resyncAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.all, t.l7, t.resync = true, true, true
}

// setL7Refs replaces the Services the Ingress translation depends on. One
// of them that changed since the last take may have been read before the
// change, so the Ingress side is translated again at the next sync.
func (t *changeTracker) setL7Refs(refs map[string]struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.l7Refs = refs
	for k := range t.svcs {
		if _, ok := refs[k]; ok {
			t.l7 = true
			return
		}
	}
}

// take returns the changes recorded so far and starts a new window.
func (t *changeTracker) take() pendingChanges {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := pendingChanges{svcs: t.svcs, all: t.all, l7: t.l7, resync: t.resync, triggers: t.triggers}
	t.svcs, t.all, t.l7, t.resync = map[string]struct{}{}, false, false, false
	t.triggers = map[string][]time.Time{}
	return p
}

// putBack returns changes a failed sync did not apply.
func (t *changeTracker) putBack(p pendingChanges) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k := range p.svcs {
		t.svcs[k] = struct{}{}
	}
	t.all = t.all || p.all
	t.l7 = t.l7 || p.l7
	t.resync = t.resync || p.resync
	for k, ts := range p.triggers {
		for _, at := range ts {
			if !slices.Contains(t.triggers[k], at) {
				t.triggers[k] = append(t.triggers[k], at)
			}
		}
	}
}

// objectOf unwraps the tombstone an informer hands a delete handler when
// it missed the deletion.
func objectOf(obj any) any {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		return d.Obj
	}
	return obj
}

func serviceKeyOf(obj any) string {
	if s, ok := objectOf(obj).(*corev1.Service); ok {
		return s.Namespace + "/" + s.Name
	}
	return ""
}

// sliceOwnerKey is the key of the Service an EndpointSlice belongs to,
// whatever its address type (an IPv6 slice changing to IPv4 does not
// exist, but the cost of not caring is one translation).
func sliceOwnerKey(obj any) string {
	s, ok := objectOf(obj).(*discoveryv1.EndpointSlice)
	if !ok {
		return ""
	}
	name := s.Labels[discoveryv1.LabelServiceName]
	if name == "" {
		return ""
	}
	return s.Namespace + "/" + name
}

// sliceServiceIndex indexes EndpointSlices by the key of their Service,
// so translating one Service finds its slices without a scan.
const sliceServiceIndex = "service"

func sliceServiceIndexFunc(obj any) ([]string, error) {
	if k := sliceOwnerKey(obj); k != "" {
		return []string{k}, nil
	}
	return nil, nil
}

// trackerHandlers are the informer handlers recording Service and
// EndpointSlice changes; counts follow the number of objects of each kind.
func (c *Controller) serviceHandler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			c.svcCount.Add(1)
			c.tracker.service(serviceKeyOf(obj))
			c.runner.Request()
		},
		UpdateFunc: func(_, obj any) {
			c.tracker.service(serviceKeyOf(obj))
			c.runner.Request()
			if c.gwStatus != nil {
				c.gwStatus.serviceChanged(obj)
			}
		},
		DeleteFunc: func(obj any) {
			c.svcCount.Add(-1)
			c.tracker.service(serviceKeyOf(obj))
			c.runner.Request()
			if c.gwStatus != nil {
				c.gwStatus.serviceChanged(obj)
			}
		},
	}
}

func (c *Controller) sliceHandler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			c.sliceCount.Add(1)
			c.tracker.triggered(obj)
			c.tracker.service(sliceOwnerKey(obj))
			c.runner.Request()
		},
		UpdateFunc: func(oldObj, newObj any) {
			// A slice whose label moved belongs to two services.
			c.tracker.triggered(newObj)
			c.tracker.service(sliceOwnerKey(oldObj), sliceOwnerKey(newObj))
			c.runner.Request()
		},
		DeleteFunc: func(obj any) {
			c.sliceCount.Add(-1)
			c.tracker.service(sliceOwnerKey(obj))
			c.runner.Request()
		},
	}
}
