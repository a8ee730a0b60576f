package controller

import (
	"cmp"
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	gwapi "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	gwinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"
	gwlisters "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1"
)

// GatewayConfig turns on the Gateway API, beside the Ingresses (it needs
// L7: the routes are served by the same proxy).
type GatewayConfig struct {
	// Client reaches the Gateway API's resources; standalone, the files
	// are the source and Client is ignored.
	Client gwclient.Interface
	// ControllerName selects the GatewayClasses served (empty:
	// DefaultGatewayControllerName).
	ControllerName string
	// AddressPool gives addresses to Gateways without spec.addresses;
	// AddressRanges bound spec.addresses (empty: any address).
	AddressPool   []netip.Prefix
	AddressRanges []netip.Prefix
	// AddressSource is where Gateways without spec.addresses get their
	// addresses: the pool (default) or a LoadBalancer Service each
	// (gateway_service.go).
	AddressSource GatewayAddressSource
	// SkipTLSRoutes leaves TLSRoutes alone, for API servers whose
	// Gateway API CRDs predate them (v1 since Gateway API v1.5);
	// SkipBackendTLSPolicies likewise BackendTLSPolicies (v1 since
	// v1.4).
	SkipTLSRoutes          bool
	SkipBackendTLSPolicies bool
	// SkipListenerSets leaves ListenerSets alone (v1 since v1.5).
	SkipListenerSets bool
}

// gatewayListers are the Gateway subsystem's caches.
type gatewayListers struct {
	classes    gwlisters.GatewayClassLister
	gateways   gwlisters.GatewayLister
	httpRoutes gwlisters.HTTPRouteLister
	grpcRoutes gwlisters.GRPCRouteLister
	tlsRoutes  gwlisters.TLSRouteLister // nil: not followed
	// listenerSets: nil when not followed.
	listenerSets gwlisters.ListenerSetLister
	// tlsPolicies (nil: not followed), and the ConfigMaps holding CA
	// certificates (of policies and of Gateways' client validation).
	tlsPolicies gwlisters.BackendTLSPolicyLister
	configMaps  corelisters.ConfigMapLister
	grants      gwlisters.ReferenceGrantLister
	namespaces  corelisters.NamespaceLister
}

// registerGateway follows the Gateway API's objects, and Namespaces for
// allowedRoutes selectors. Any change means translating the L7 side again.
func (c *Controller) registerGateway(src *sources) error {
	if c.cfg.Gateway == nil || c.cfg.L7 == nil {
		return nil
	}
	client := c.cfg.Gateway.Client
	if c.source != nil {
		client = c.source.gwClient
		c.source.gatewayOn.Store(true)
	}
	if client == nil {
		return fmt.Errorf("gateway api: no client")
	}
	f := gwinformers.NewSharedInformerFactory(client, 0)
	src.gateway = f
	v1 := f.Gateway().V1()
	ns := src.factory.Core().V1().Namespaces()
	c.gw = &gatewayListers{
		classes:    v1.GatewayClasses().Lister(),
		gateways:   v1.Gateways().Lister(),
		httpRoutes: v1.HTTPRoutes().Lister(),
		grpcRoutes: v1.GRPCRoutes().Lister(),
		grants:     v1.ReferenceGrants().Lister(),
		namespaces: ns.Lister(),
	}
	informers := []cache.SharedIndexInformer{v1.GatewayClasses().Informer(), v1.Gateways().Informer(),
		v1.HTTPRoutes().Informer(), v1.GRPCRoutes().Informer(), v1.ReferenceGrants().Informer(), ns.Informer()}
	if !c.cfg.Gateway.SkipTLSRoutes {
		c.gw.tlsRoutes = v1.TLSRoutes().Lister()
		informers = append(informers, v1.TLSRoutes().Informer())
	}
	if !c.cfg.Gateway.SkipListenerSets {
		c.gw.listenerSets = v1.ListenerSets().Lister()
		informers = append(informers, v1.ListenerSets().Informer())
	}
	if !c.cfg.Gateway.SkipBackendTLSPolicies {
		c.gw.tlsPolicies = v1.BackendTLSPolicies().Lister()
		informers = append(informers, v1.BackendTLSPolicies().Informer())
	}
	c.gw.configMaps = src.factory.Core().V1().ConfigMaps().Lister()
	request := func() { c.tracker.ingress(); c.runner.Request() }
	h := cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if c.gwStatus != nil {
				c.gwStatus.created(obj)
			}
			request()
		},
		UpdateFunc: func(old, cur any) {
			// Standalone files carry whatever generation they say.
			if c.source != nil || specChanged(old, cur) {
				request()
			}
		},
		DeleteFunc: func(any) { request() },
	}
	for _, inf := range informers {
		if err := src.follow(inf, h); err != nil {
			return err
		}
	}
	if c.gw.configMaps != nil {
		// ConfigMaps change all the time (leader election, the
		// configuration of other software); only those holding a
		// policy's CA certificates matter.
		used := func(obj any) {
			if cm, ok := obj.(*corev1.ConfigMap); ok && c.caConfigMapUsed(cm.Namespace, cm.Name) {
				request()
			}
		}
		cmh := cache.ResourceEventHandlerFuncs{
			AddFunc:    used,
			UpdateFunc: func(_, cur any) { used(cur) },
			DeleteFunc: func(obj any) {
				if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
					obj = d.Obj
				}
				used(obj)
			},
		}
		if err := src.follow(src.factory.Core().V1().ConfigMaps().Informer(), cmh); err != nil {
			return err
		}
	}
	return nil
}

// gatewayInput lists the Gateway API's objects for a translation; nil
// when the Gateway API is off.
func (c *Controller) gatewayInput() (*GatewayInput, error) {
	if c.gw == nil {
		return nil, nil
	}
	in := &GatewayInput{ControllerName: c.cfg.Gateway.ControllerName, AddressPool: c.cfg.Gateway.AddressPool,
		AddressRanges: c.cfg.Gateway.AddressRanges, AddressSource: c.cfg.Gateway.AddressSource}
	var err error
	if in.Classes, err = c.gw.classes.List(labels.Everything()); err != nil {
		return nil, fmt.Errorf("list gatewayclasses: %w", err)
	}
	if in.Gateways, err = c.gw.gateways.List(labels.Everything()); err != nil {
		return nil, fmt.Errorf("list gateways: %w", err)
	}
	if in.HTTPRoutes, err = c.gw.httpRoutes.List(labels.Everything()); err != nil {
		return nil, fmt.Errorf("list httproutes: %w", err)
	}
	if in.GRPCRoutes, err = c.gw.grpcRoutes.List(labels.Everything()); err != nil {
		return nil, fmt.Errorf("list grpcroutes: %w", err)
	}
	if c.gw.tlsRoutes != nil {
		if in.TLSRoutes, err = c.gw.tlsRoutes.List(labels.Everything()); err != nil {
			return nil, fmt.Errorf("list tlsroutes: %w", err)
		}
	}
	if c.gw.listenerSets != nil {
		if in.ListenerSets, err = c.gw.listenerSets.List(labels.Everything()); err != nil {
			return nil, fmt.Errorf("list listenersets: %w", err)
		}
	}
	if c.gw.tlsPolicies != nil {
		if in.BackendTLSPolicies, err = c.gw.tlsPolicies.List(labels.Everything()); err != nil {
			return nil, fmt.Errorf("list backendtlspolicies: %w", err)
		}
	}
	in.ConfigMaps = c.caConfigMaps(caConfigMapKeys(in.BackendTLSPolicies, in.Gateways))
	if in.Grants, err = c.gw.grants.List(labels.Everything()); err != nil {
		return nil, fmt.Errorf("list referencegrants: %w", err)
	}
	if in.Namespaces, err = c.gw.namespaces.List(labels.Everything()); err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	c.metrics.setObjects("GatewayClass", len(in.Classes))
	c.metrics.setObjects("Gateway", len(in.Gateways))
	c.metrics.setObjects("HTTPRoute", len(in.HTTPRoutes))
	c.metrics.setObjects("GRPCRoute", len(in.GRPCRoutes))
	c.metrics.setObjects("TLSRoute", len(in.TLSRoutes))
	c.metrics.setObjects("ListenerSet", len(in.ListenerSets))
	c.metrics.setObjects("BackendTLSPolicy", len(in.BackendTLSPolicies))
	return in, nil
}

// caConfigMapKeys are the ConfigMaps (namespace/name) holding CA
// certificates: of BackendTLSPolicies, and of Gateways' client
// certificate validation.
func caConfigMapKeys(policies []*gwapi.BackendTLSPolicy, gateways []*gwapi.Gateway) map[string]bool {
	keys := map[string]bool{}
	for _, p := range policies {
		for _, ref := range p.Spec.Validation.CACertificateRefs {
			if ref.Group == "" && ref.Kind == kindConfigMap {
				keys[p.Namespace+"/"+string(ref.Name)] = true
			}
		}
	}
	for _, gw := range gateways {
		for _, v := range frontendValidations(gw) {
			for _, ref := range v.CACertificateRefs {
				if ref.Group == "" && ref.Kind == kindConfigMap {
					keys[cmp.Or(string(ptrValue(ref.Namespace)), gw.Namespace)+"/"+string(ref.Name)] = true
				}
			}
		}
	}
	return keys
}

// caConfigMaps returns the CA ConfigMaps that exist.
func (c *Controller) caConfigMaps(keys map[string]bool) []*corev1.ConfigMap {
	var out []*corev1.ConfigMap
	for key := range keys {
		ns, name, _ := strings.Cut(key, "/")
		if cm, err := c.gw.configMaps.ConfigMaps(ns).Get(name); err == nil {
			out = append(out, cm)
		}
	}
	return out
}

// caConfigMapUsed reports whether a policy or a Gateway names the
// ConfigMap for CA certificates.
func (c *Controller) caConfigMapUsed(ns, name string) bool {
	var policies []*gwapi.BackendTLSPolicy
	var err error
	if c.gw.tlsPolicies != nil {
		if policies, err = c.gw.tlsPolicies.List(labels.Everything()); err != nil {
			return true
		}
	}
	gateways, err := c.gw.gateways.List(labels.Everything())
	if err != nil {
		return true
	}
	return caConfigMapKeys(policies, gateways)[ns+"/"+name]
}

// specChanged reports whether an update may change the translation. The
// Gateway API's objects bump metadata.generation on every spec change;
// an update that leaves it (a status write, this agent's own mostly)
// changes nothing the translation reads. Objects without a generation
// (Namespaces: their labels) always count.
func specChanged(old, cur any) bool {
	o, ok1 := old.(metav1.Object)
	n, ok2 := cur.(metav1.Object)
	if !ok1 || !ok2 || n.GetGeneration() == 0 {
		return true
	}
	return o.GetGeneration() != n.GetGeneration() || n.GetDeletionTimestamp() != nil
}
