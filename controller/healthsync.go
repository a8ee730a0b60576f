package controller

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/nodegress/nodegress/controller/healthcheck"
)

// ProxyHealthTracker follows the sync loop the way kube-proxy's health
// server follows its proxier (healthcheck.Proxy is one): QueuedUpdate
// when a sync is requested, Updated when one succeeded, and SyncNode with
// this node's Node object (nil while it does not exist).
type ProxyHealthTracker interface {
	QueuedUpdate(family corev1.IPFamily)
	Updated(family corev1.IPFamily)
	SyncNode(node *corev1.Node)
}

// ServiceHealthServer serves the healthCheckNodePorts
// (healthcheck.ServiceServer is one). After every successful sync it gets
// every port to serve and the number of local ready endpoints behind it.
type ServiceHealthServer interface {
	SyncServices(ports map[types.NamespacedName]uint16) error
	SyncEndpoints(localEndpoints map[types.NamespacedName]int) error
}

// ReasonFailedHealthCheckPort is the reason of the Warning Event on a
// Service whose healthCheckNodePort could not be opened; kube-proxy's,
// which alerts may already match.
const ReasonFailedHealthCheckPort = "FailedToStartServiceHealthcheck"

// healthRetryIn is how soon a health check port that could not be opened
// is tried again when no change triggers a sync before: kube-proxy tries
// at every sync, which it runs at least every 30 s.
const healthRetryIn = 30 * time.Second

// healthState is what the controller last handed the service health
// server, kept so a sync recomputes only the Services that changed. Only
// the runner's goroutine touches it.
type healthState struct {
	ports  map[types.NamespacedName]uint16
	counts map[types.NamespacedName]int
	primed bool // a full pass has run
	// failing has the ports that could not be opened and got an Event,
	// so a port that stays taken gets one Event, not one per sync.
	failing map[types.NamespacedName]uint16
	retry   *time.Timer
}

func newHealthState() *healthState {
	return &healthState{
		ports:   map[types.NamespacedName]uint16{},
		counts:  map[types.NamespacedName]int{},
		failing: map[types.NamespacedName]uint16{},
	}
}

// healthQueued tells the proxy health that a sync is pending; the runner
// calls it at every request.
func (c *Controller) healthQueued() {
	if c.cfg.ProxyHealth != nil {
		c.cfg.ProxyHealth.QueuedUpdate(corev1.IPv4Protocol)
	}
}

// healthStarted marks the start of the sync loop as a sync, as kube-proxy
// does when its proxier starts: changes seen while the informers listed
// are covered by the first sync, which is requested right after and must
// succeed within the timeout.
func (c *Controller) healthStarted() {
	if c.cfg.ProxyHealth != nil {
		c.cfg.ProxyHealth.Updated(corev1.IPv4Protocol)
	}
}

// healthNode passes this node's Node to the proxy health on every
// informer event, whatever changed: a deletion timestamp or the cluster
// autoscaler's taint does not change what the datapath serves, so it
// triggers no sync.
func (c *Controller) healthNode(oldObj, newObj any) {
	if c.cfg.ProxyHealth == nil {
		return
	}
	if n, ok := objectOf(newObj).(*corev1.Node); ok {
		if n.Name == c.cfg.NodeName {
			c.cfg.ProxyHealth.SyncNode(n)
		}
		return
	}
	// Deleted. The last state of the object may carry no deletion
	// timestamp (a Node usually has no finalizer): a node that is gone is
	// not eligible whatever it said.
	if n, ok := objectOf(oldObj).(*corev1.Node); ok && n.Name == c.cfg.NodeName {
		c.cfg.ProxyHealth.SyncNode(nil)
	}
}

// syncHealth runs after every successful sync: it hands the service
// health server the healthCheckNodePorts and local endpoint counts, then
// tells the proxy health the sync succeeded. Services are looked at again
// only when they (or their slices) changed, or in a full pass: at the
// first sync and at the periodic full resync.
func (c *Controller) syncHealth(p pendingChanges) {
	if c.cfg.ServiceHealth != nil {
		h := c.health
		if !h.primed || p.all || p.resync {
			c.recomputeAllHealth()
			h.primed = true
		} else {
			for key := range p.svcs {
				c.recomputeHealthOf(key)
			}
		}
		err := c.cfg.ServiceHealth.SyncServices(h.ports)
		c.reportHealthPorts(err)
		if err := c.cfg.ServiceHealth.SyncEndpoints(h.counts); err != nil {
			c.log.Error("service health endpoints", "err", err)
		}
	}
	if c.cfg.ProxyHealth != nil {
		c.cfg.ProxyHealth.Updated(corev1.IPv4Protocol)
		// A request made while this sync ran may not be covered by it
		// (the runner took the pending ones before starting it): its
		// sync is still due, and must not fail unnoticed.
		if len(c.runner.pending) > 0 {
			c.cfg.ProxyHealth.QueuedUpdate(corev1.IPv4Protocol)
		}
	}
}

func (c *Controller) recomputeAllHealth() {
	h := c.health
	clear(h.ports)
	clear(h.counts)
	svcs, err := c.services.List(labels.Everything())
	if err != nil {
		// The informer cache lists without failing; keep going with none.
		c.log.Error("list services for health checks", "err", err)
		return
	}
	for _, svc := range svcs {
		c.recomputeHealth(types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}, svc)
	}
}

// recomputeHealthOf updates the health check port and count of the
// Service key, which may be gone.
func (c *Controller) recomputeHealthOf(key string) {
	ns, name, _ := strings.Cut(key, "/")
	svc, err := c.services.Services(ns).Get(name)
	if err != nil {
		svc = nil
	}
	c.recomputeHealth(types.NamespacedName{Namespace: ns, Name: name}, svc)
}

// recomputeHealth updates the health check port and count of svc (nil
// when it does not exist), removing them when it has none. Slices are
// only read for the few Services with a port.
func (c *Controller) recomputeHealth(nn types.NamespacedName, svc *corev1.Service) {
	h := c.health
	port, ok := healthCheckNodePort(svc)
	if !ok {
		delete(h.ports, nn)
		delete(h.counts, nn)
		return
	}
	_, svcSlices := c.lookup(nn.Namespace + "/" + nn.Name)
	h.ports[nn] = port
	h.counts[nn] = localReadyEndpoints(c.cfg.NodeName, svcSlices)
}

// reportHealthPorts records an Event on each Service whose port could not
// be opened (once per port) and schedules a retry: the server tries again
// at every sync, and a quiet cluster may not sync for minutes.
func (c *Controller) reportHealthPorts(err error) {
	h := c.health
	now := map[types.NamespacedName]uint16{}
	for _, e := range flattenErrors(err) {
		var le *healthcheck.ListenError
		if !errors.As(e, &le) {
			c.log.Error("service health ports", "err", e)
			continue
		}
		now[le.Service] = le.Port
		if h.failing[le.Service] == le.Port {
			continue
		}
		if c.events != nil {
			if ref := c.objectRef("Service", le.Service.String()); ref != nil {
				c.events.Event(ref, corev1.EventTypeWarning, ReasonFailedHealthCheckPort,
					fmt.Sprintf("node %s cannot open health check port %d: %v", c.cfg.NodeName, le.Port, le.Err))
			}
		}
	}
	h.failing = now
	if len(now) == 0 {
		if h.retry != nil {
			h.retry.Stop()
		}
		return
	}
	if h.retry == nil {
		h.retry = time.AfterFunc(healthRetryIn, c.runner.Request)
	} else {
		h.retry.Reset(healthRetryIn)
	}
}

// flattenErrors undoes errors.Join.
func flattenErrors(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// healthCheckNodePort returns the port on which load balancers ask this
// node whether it has local endpoints of svc, when it has one: kube-proxy
// serves it for LoadBalancer Services with externalTrafficPolicy Local
// and a healthCheckNodePort, among the Services it proxies for IPv4 (not
// those skipService leaves alone, such as another proxy's, nor IPv6-only
// ones).
func healthCheckNodePort(svc *corev1.Service) (uint16, bool) {
	if svc == nil || skipService(svc) {
		return 0, false
	}
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer ||
		svc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
		return 0, false
	}
	if !servesIPv4(svc) || len(svc.Spec.Ports) == 0 {
		return 0, false
	}
	p := svc.Spec.HealthCheckNodePort
	if p < 1 || p > 65535 {
		return 0, false
	}
	return uint16(p), true
}

// localReadyEndpoints counts the endpoints of a Service's IPv4
// EndpointSlices that are on node and ready, as kube-proxy counts them for
// the health check: ready only (an endpoint that is terminating, even
// while serving, does not count, so load balancers drain a node whose
// pods are all going away), and distinct by IP across the Service's
// ports (10.0.0.1:80 and 10.0.0.1:443 are one endpoint).
//
// Within one port, an endpoint listed twice (a pod moving between slices,
// or a new pod reusing a terminating pod's IP) counts as its
// non-terminating copy. Slice ports without a name or a port number are
// skipped, and an endpoint's first address is its IP.
func localReadyEndpoints(node string, svcSlices []*discoveryv1.EndpointSlice) int {
	type portKey struct {
		name  string
		proto corev1.Protocol
	}
	type endpoint struct {
		ip                      string
		local, ready, terminate bool
	}
	byPort := map[portKey]map[string]endpoint{}
	for _, s := range svcSlices {
		if s.AddressType != discoveryv1.AddressTypeIPv4 {
			continue
		}
		for _, sp := range s.Ports {
			if sp.Name == nil || sp.Port == nil || *sp.Port == 0 {
				continue
			}
			pk := portKey{*sp.Name, corev1.ProtocolTCP}
			if sp.Protocol != nil {
				pk.proto = *sp.Protocol
			}
			eps := byPort[pk]
			if eps == nil {
				eps = map[string]endpoint{}
				byPort[pk] = eps
			}
			for _, ep := range s.Endpoints {
				if len(ep.Addresses) == 0 {
					continue
				}
				ip := ep.Addresses[0]
				if a, err := netip.ParseAddr(ip); err == nil {
					ip = a.Unmap().String()
				}
				e := endpoint{
					ip:        ip,
					local:     node != "" && ep.NodeName != nil && *ep.NodeName == node,
					ready:     ep.Conditions.Ready == nil || *ep.Conditions.Ready,
					terminate: ep.Conditions.Terminating != nil && *ep.Conditions.Terminating,
				}
				id := net.JoinHostPort(ip, strconv.Itoa(int(*sp.Port)))
				if _, seen := eps[id]; !seen || !e.terminate {
					eps[id] = e
				}
			}
		}
	}
	ips := map[string]struct{}{}
	for _, eps := range byPort {
		for _, e := range eps {
			if e.local && e.ready {
				ips[e.ip] = struct{}{}
			}
		}
	}
	return len(ips)
}
