package controller

import (
	"cmp"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/nodegress/nodegress/l7proxy"
	"github.com/nodegress/nodegress/loader"
)

// Ingress class selection.
const (
	// DefaultControllerName is the spec.controller of the IngressClasses
	// nodegress serves.
	DefaultControllerName = "nodegress.io/ingress-controller"
	// LegacyIngressClass is the value of the deprecated
	// kubernetes.io/ingress.class annotation that selects nodegress without
	// an IngressClass object (the name of one of its IngressClasses works
	// too).
	LegacyIngressClass = "nodegress"

	legacyClassAnnotation  = "kubernetes.io/ingress.class"
	defaultClassAnnotation = networkingv1.AnnotationIsDefaultIngressClass
)

// Names of the L7 frontends handed to the datapath and of the proxy
// listeners they are steered to.
const (
	L7ServiceHTTP   = "l7/http"
	L7ServiceHTTPS  = "l7/https"
	ListenerHTTP    = "http"
	ListenerHTTPS   = "https"
	defaultHTTPPort = 80
	defaultTLSPort  = 443
)

// Proxy is what the controller drives for L7: l7proxy.Proxy in the agent, a
// fake in tests. Update applies a complete configuration and returns the
// parts of it that were skipped.
type Proxy interface {
	Update(cfg l7proxy.Config) []error
}

// L7Config turns on L7 ingress: the proxy's configuration from Ingresses
// and the L7 frontends in the datapath.
type L7Config struct {
	// HTTPPort and HTTPSPort are where the node's addresses (and the
	// published LoadBalancer IPs) serve HTTP and HTTPS. Zero means 80 and
	// 443.
	HTTPPort  uint16
	HTTPSPort uint16
	// ControllerName selects the IngressClasses served, by their
	// spec.controller. Empty means DefaultControllerName.
	ControllerName string
	// PublishService, "namespace/name" or empty, is the Service fronting
	// the ingress: its LoadBalancer IPs are L7 frontends too.
	PublishService string
	// DefaultBackendService, "namespace/name:port" (port number or name) or
	// empty, serves requests no Ingress rule or defaultBackend matches.
	DefaultBackendService string
	// Proxy receives the configuration. Required by New; TranslateIngress
	// ignores it.
	Proxy Proxy
}

func (c L7Config) withDefaults() L7Config {
	if c.HTTPPort == 0 {
		c.HTTPPort = defaultHTTPPort
	}
	if c.HTTPSPort == 0 {
		c.HTTPSPort = defaultTLSPort
	}
	if c.ControllerName == "" {
		c.ControllerName = DefaultControllerName
	}
	return c
}

func (c L7Config) validate() error {
	var errs []error
	if c.HTTPPort == c.HTTPSPort {
		errs = append(errs, fmt.Errorf("http and https ports are both %d", c.HTTPPort))
	}
	if c.PublishService != "" {
		if _, err := parseServiceRef(c.PublishService, false); err != nil {
			errs = append(errs, fmt.Errorf("publish service: %w", err))
		}
	}
	if c.DefaultBackendService != "" {
		if _, err := parseServiceRef(c.DefaultBackendService, true); err != nil {
			errs = append(errs, fmt.Errorf("default backend service: %w", err))
		}
	}
	return errors.Join(errs...)
}

// serviceRef is a parsed "namespace/name[:port]".
type serviceRef struct {
	Namespace, Name string
	Port            networkingv1.ServiceBackendPort
}

func (r serviceRef) key() string { return r.Namespace + "/" + r.Name }

func parseServiceRef(s string, withPort bool) (serviceRef, error) {
	var r serviceRef
	ref := s
	if withPort {
		var p string
		var ok bool
		ref, p, ok = strings.Cut(s, ":")
		if !ok || p == "" {
			return r, fmt.Errorf("%q: want namespace/name:port", s)
		}
		if n, err := strconv.Atoi(p); err == nil {
			if n < 1 || n > 65535 {
				return r, fmt.Errorf("%q: port %d is not in 1-65535", s, n)
			}
			r.Port.Number = int32(n)
		} else if errs := validation.IsValidPortName(p); len(errs) > 0 {
			return r, fmt.Errorf("%q: port %q: %s", s, p, strings.Join(errs, "; "))
		} else {
			r.Port.Name = p
		}
	}
	ns, name, ok := strings.Cut(ref, "/")
	if !ok || ns == "" || name == "" {
		if withPort {
			return r, fmt.Errorf("%q: want namespace/name:port", s)
		}
		return r, fmt.Errorf("%q: want namespace/name", s)
	}
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		return r, fmt.Errorf("%q: namespace %q: %s", s, ns, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1035Label(name); len(errs) > 0 {
		return r, fmt.Errorf("%q: service name %q: %s", s, name, strings.Join(errs, "; "))
	}
	r.Namespace, r.Name = ns, name
	return r, nil
}

// IngressInput is everything TranslateIngress reads.
type IngressInput struct {
	Ingresses      []*networkingv1.Ingress
	IngressClasses []*networkingv1.IngressClass
	Services       []*corev1.Service
	EndpointSlices []*discoveryv1.EndpointSlice
	// Secrets may include any type; only kubernetes.io/tls ones are used.
	Secrets []*corev1.Secret
	// NodeAddrs are the node's addresses (NodeInfo.Addrs): L7 frontends.
	NodeAddrs []netip.Addr
	Config    L7Config

	// certs, when set, remembers parsed certificates between calls, so a
	// sync does not parse every Secret again and unchanged certificates
	// are the same pointers (cheap to compare).
	certs *certCache
	// lookup, when set, replaces Services and EndpointSlices: the
	// controller answers from its informer caches, so a translation only
	// touches the Services the Ingresses name, not the whole cluster.
	lookup func(key string) (*corev1.Service, []*discoveryv1.EndpointSlice)
	// refs, when set, receives the keys of every Service looked up: a
	// change to any other Service cannot change the result.
	refs map[string]struct{}
}

// TranslateIngress computes the L7 proxy's configuration from the
// Ingresses of nodegress's class, and the L7 frontends the datapath steers
// to the proxy:
//
//   - Class: spec.ingressClassName naming an IngressClass whose
//     spec.controller is Config.ControllerName; without it the legacy
//     kubernetes.io/ingress.class annotation (LegacyIngressClass or the
//     name of one of those IngressClasses); without either, the Ingress is
//     taken when one of those IngressClasses is marked
//     ingressclass.kubernetes.io/is-default-class: "true". Other Ingresses
//     are ignored (reported as skipped).
//   - Every path of every rule becomes an l7proxy.Route (a rule without
//     host matches every host; ImplementationSpecific is Prefix). Its
//     upstream holds the endpoints of the Service port in the whole
//     cluster, whatever their node: the ready ones take new requests, or,
//     when none is ready, the serving terminating ones; the other serving
//     ones are marked Terminating. A missing Service or port still gets
//     its route, to an upstream without endpoints: the proxy answers 503,
//     which tells the client more than a 404 from another rule would.
//   - Annotations are read under nodegress.io/ and ingress-nginx's
//     nginx.ingress.kubernetes.io/ (annotations.go). An Ingress with an
//     invalid or refused one (an nginx snippet) is not served at all.
//     The routing ones (annotations_routing.go) give its routes rules
//     (ingress_rules.go): regex paths and rewrites, redirects, CORS, and
//     a canary Ingress's share of another Ingress's path; ssl-passthrough
//     hosts become TLS passthrough listeners on the HTTPS frontends.
//   - The oldest Ingress's defaultBackend is Config.DefaultUpstream; without
//     one, Config.DefaultBackendService.
//   - spec.tls certificates come from kubernetes.io/tls Secrets in the
//     Ingress's own namespace only. A missing or invalid Secret is reported
//     and the Ingress is still served: its hosts get the proxy's default
//     certificate.
//
// Precedence: Ingresses are listed by creationTimestamp, then
// namespace/name, and the proxy keeps the first route (and certificate)
// listed for the same host and path, so the oldest Ingress wins a conflict
// and a new Ingress can never take over what another one already serves.
//
// The frontends are "l7/http" and "l7/https": every node address, plus the
// LoadBalancer IPs of Config.PublishService, on the HTTP and HTTPS ports.
// They exist whenever L7 is on, even without Ingresses, like any ingress
// controller's listeners.
//
// The result is deterministic for the same input. Problems are returned as
// *ObjectError (Skipped for those worth only a debug line) and never stop
// the translation of other objects.
func TranslateIngress(in IngressInput) (l7proxy.Config, []loader.Service, []error) {
	cfg, fes, _, errs := TranslateL7(in, nil)
	return cfg, fes, errs
}

// TranslateL7 is TranslateIngress with the Gateway API's objects as well
// (gateway.go; nil: none). Ingresses and Gateways share upstreams: a
// Service port both use is one connection pool.
func TranslateL7(in IngressInput, gw *GatewayInput) (l7proxy.Config, []loader.Service, GatewayStatuses, []error) {
	t := newIngressTranslator(in)
	t.translate()
	fes := t.frontends()
	var st GatewayStatuses
	if gw != nil {
		var gfes []loader.Service
		gfes, st = t.translateGateways(*gw)
		fes = append(fes, gfes...)
		t.out.Upstreams = t.out.Upstreams[:0]
		for _, k := range sortedKeys(t.upstreams) {
			t.out.Upstreams = append(t.out.Upstreams, *t.upstreams[k])
		}
	}
	t.out.Listeners = append(t.out.Listeners, t.passthroughListeners(fes)...)
	if in.certs != nil {
		in.certs.sweep()
	}
	return t.out, fes, st, uniqueErrors(t.errs)
}

// uniqueErrors drops repeated messages (several paths of an Ingress using
// the same missing Service), keeping the first of each.
func uniqueErrors(errs []error) []error {
	seen := make(map[string]bool, len(errs))
	out := errs[:0]
	for _, err := range errs {
		if msg := err.Error(); !seen[msg] {
			seen[msg] = true
			out = append(out, err)
		}
	}
	return out
}

type ingressTranslator struct {
	in       IngressInput
	cfg      L7Config
	services map[string]*corev1.Service
	slices   map[string][]*discoveryv1.EndpointSlice
	secrets  map[string]*corev1.Secret
	classes  ingressClassSelector
	// authSecrets are the other Secrets, for auth-secret; built on
	// first use.
	authSecrets map[string]*corev1.Secret

	upstreams map[string]*l7proxy.Upstream
	out       l7proxy.Config
	errs      []error
	// passthrough are the hosts of ssl-passthrough Ingresses, in
	// precedence order.
	passthrough []passthroughHost
}

func newIngressTranslator(in IngressInput) *ingressTranslator {
	t := &ingressTranslator{
		in:        in,
		cfg:       in.Config.withDefaults(),
		services:  make(map[string]*corev1.Service, len(in.Services)),
		slices:    make(map[string][]*discoveryv1.EndpointSlice),
		secrets:   make(map[string]*corev1.Secret),
		upstreams: make(map[string]*l7proxy.Upstream),
	}
	t.classes = newIngressClassSelector(in.IngressClasses, t.cfg.ControllerName)
	if in.lookup == nil {
		for _, s := range in.Services {
			t.services[s.Namespace+"/"+s.Name] = s
		}
		for _, s := range in.EndpointSlices {
			name := s.Labels[discoveryv1.LabelServiceName]
			if s.AddressType != discoveryv1.AddressTypeIPv4 || name == "" {
				continue
			}
			k := s.Namespace + "/" + name
			t.slices[k] = append(t.slices[k], s)
		}
	}
	for _, s := range in.Secrets {
		if s.Type == corev1.SecretTypeTLS {
			t.secrets[s.Namespace+"/"+s.Name] = s
		}
	}
	return t
}

// service returns the Service key and its IPv4 EndpointSlices.
func (t *ingressTranslator) service(key string) (*corev1.Service, []*discoveryv1.EndpointSlice) {
	if t.in.refs != nil {
		t.in.refs[key] = struct{}{}
	}
	if t.in.lookup != nil {
		return t.in.lookup(key)
	}
	return t.services[key], t.slices[key]
}

func (t *ingressTranslator) report(kind, object string, skipped bool, err error) {
	t.errs = append(t.errs, &ObjectError{Kind: kind, Object: object, Err: err, Skipped: skipped})
}

func (t *ingressTranslator) translate() {
	var ours []*networkingv1.Ingress
	for _, ing := range t.in.Ingresses {
		if why := t.classes.notOurs(ing); why != "" {
			t.report("Ingress", ing.Namespace+"/"+ing.Name, true, errors.New(why))
			continue
		}
		ours = append(ours, ing)
	}
	// Oldest first: see TranslateIngress on precedence.
	slices.SortFunc(ours, func(a, b *networkingv1.Ingress) int {
		if c := a.CreationTimestamp.Time.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})

	parsed := make([]parsedIngress, 0, len(ours))
	for _, ing := range ours {
		key := ing.Namespace + "/" + ing.Name
		ann, unknown, err := parseAnnotations(ing.Annotations)
		for _, name := range unknown {
			what := "unknown annotation %s ignored"
			if strings.HasPrefix(name, NginxAnnotationPrefix) {
				what = "ingress-nginx annotation %s is not supported, ignored"
			}
			t.report("Ingress", key, false, withReason(ReasonUnknownAnnotation, fmt.Errorf(what, name)))
		}
		if err == nil {
			ann.TLS, err = t.proxySSL(ing.Namespace, &ann)
			if ann.TLS != nil {
				// Its own pool: another Ingress's backends to the same
				// Service port may be verified differently.
				ann.TLSPolicy = "ingress " + key
			}
		}
		if err != nil {
			t.report("Ingress", key, false, fmt.Errorf("%w; ingress not served", err))
			continue
		}
		parsed = append(parsed, parsedIngress{ing: ing, key: key, ann: ann})
	}
	canaries := t.canaries(parsed)
	mains := map[canaryKey]string{} // the first Ingress serving each host and path, for reportUnusedCanaries

	defaultFrom := ""
	for _, pi := range parsed {
		ing, key, ann := pi.ing, pi.key, pi.ann
		if ann.Routing.Canary.Enabled {
			// Served through the main Ingresses' routes (canaries).
			t.certificates(ing, key)
			continue
		}
		routing := &ann.Routing
		opts := l7proxy.RouteOptions{SSLRedirect: ann.SSLRedirect || routing.ForceSSLRedirect, MaxBodyBytes: ann.MaxBodyBytes}
		var err error
		if opts.Access, err = t.access(ing, key, ann.Access); err != nil {
			t.report("Ingress", key, false, fmt.Errorf("%w; ingress not served", err))
			continue
		}
		if routing.SSLPassthrough {
			t.passthroughHosts(ing, key, ann)
		}
		if routing.AppRoot != "" {
			t.appRootRoutes(ing, key, opts, routing.AppRoot)
		}

		for ri, rule := range ing.Spec.Rules {
			if rule.HTTP == nil {
				continue
			}
			for pi, p := range rule.HTTP.Paths {
				pathErr := func(err error) {
					t.report("Ingress", key, false, fmt.Errorf("spec.rules[%d].http.paths[%d]: %w; path not served", ri, pi, err))
				}
				pt, path, err := routePathOf(p)
				if err != nil {
					pathErr(err)
					continue
				}
				if routing.regexPaths() && pt != l7proxy.PathExact {
					pt, path = l7proxy.PathRegex, cmp.Or(p.Path, "/")
				}
				if pt == l7proxy.PathRegex || routing.RewriteTarget != "" {
					if _, err := regexp.Compile("(?i)^" + path); err != nil {
						pathErr(fmt.Errorf("path is not an RE2 regular expression (use-regex or rewrite-target): %w", err))
						continue
					}
				}
				if routing.AppRoot != "" && pt == l7proxy.PathExact && path == "/" {
					t.report("Ingress", key, true, fmt.Errorf("spec.rules[%d].http.paths[%d]: Exact / not served: app-root redirects it", ri, pi))
					continue
				}
				up, err := t.upstream(ing.Namespace, key, p.Backend, ann)
				if err != nil {
					pathErr(err)
					continue
				}
				canary := canaries[canaryKey{namespace: ing.Namespace, host: rule.Host, path: p.Path}]
				if canary != nil {
					canary.used = true
				}
				if k := (canaryKey{host: rule.Host, path: p.Path}); mains[k] == "" {
					mains[k] = key
				}
				t.out.Routes = append(t.out.Routes, l7proxy.Route{
					Host:     rule.Host,
					Path:     path,
					PathType: pt,
					Upstream: up,
					Ingress:  key,
					Options:  opts,
					Rules:    routeRules(routing, path, up, canary),
				})
			}
		}

		if db := ing.Spec.DefaultBackend; db != nil {
			if defaultFrom != "" {
				t.report("Ingress", key, true, fmt.Errorf("spec.defaultBackend not used: the older ingress %s's is", defaultFrom))
			} else if up, err := t.upstream(ing.Namespace, key, *db, ann); err != nil {
				t.report("Ingress", key, false, fmt.Errorf("spec.defaultBackend: %w; not used", err))
			} else {
				t.out.DefaultUpstream, t.out.DefaultOptions, defaultFrom = up, opts, key
			}
		}

		t.certificates(ing, key)
	}
	t.reportUnusedCanaries(canaries, mains)

	if t.out.DefaultUpstream == "" && t.cfg.DefaultBackendService != "" {
		ref, err := parseServiceRef(t.cfg.DefaultBackendService, true)
		if err != nil {
			t.errs = append(t.errs, fmt.Errorf("default backend service: %w", err))
		} else {
			name, problem := t.serviceUpstream(ref, ingressAnnotations{})
			if problem != nil {
				t.report("Service", ref.key(), false, fmt.Errorf("default backend service: %w; unmatched requests get 503", problem))
			}
			t.out.DefaultUpstream = name
		}
	}

	for _, name := range sortedKeys(t.upstreams) {
		t.out.Upstreams = append(t.out.Upstreams, *t.upstreams[name])
	}
}

// parsedIngress is an Ingress of ours with valid annotations.
type parsedIngress struct {
	ing *networkingv1.Ingress
	key string
	ann ingressAnnotations
}

// appRootRoutes add, for every host of the Ingress, an Exact "/" route
// redirecting to the app root.
func (t *ingressTranslator) appRootRoutes(ing *networkingv1.Ingress, key string, opts l7proxy.RouteOptions, appRoot string) {
	seen := map[string]bool{}
	for _, rule := range ing.Spec.Rules {
		if rule.HTTP == nil || seen[rule.Host] {
			continue
		}
		seen[rule.Host] = true
		t.out.Routes = append(t.out.Routes, l7proxy.Route{Host: rule.Host, Path: "/", PathType: l7proxy.PathExact,
			Ingress: key, Options: opts, Rules: appRootRules(appRoot)})
	}
}

// ingressClassSelector decides which Ingresses are nodegress's. It is the
// one rule both translation and the status write-back follow, so the agent
// never writes the status of an Ingress it does not serve.
type ingressClassSelector struct {
	all  []*networkingv1.IngressClass
	ours map[string]*networkingv1.IngressClass // by name
}

func newIngressClassSelector(classes []*networkingv1.IngressClass, controllerName string) ingressClassSelector {
	if controllerName == "" {
		controllerName = DefaultControllerName
	}
	s := ingressClassSelector{all: classes, ours: make(map[string]*networkingv1.IngressClass)}
	for _, c := range classes {
		if c.Spec.Controller == controllerName {
			s.ours[c.Name] = c
		}
	}
	return s
}

// notOurs says why an Ingress is not of nodegress's class, "" when it is.
func (s ingressClassSelector) notOurs(ing *networkingv1.Ingress) string {
	if name := ing.Spec.IngressClassName; name != nil {
		if _, ok := s.ours[*name]; ok {
			return ""
		}
		for _, c := range s.all {
			if c.Name == *name {
				return fmt.Sprintf("ingress class %s belongs to controller %s, ignored", *name, c.Spec.Controller)
			}
		}
		return fmt.Sprintf("ingress class %s does not exist, ignored", *name)
	}
	if v, ok := ing.Annotations[legacyClassAnnotation]; ok {
		if _, ours := s.ours[v]; ours || v == LegacyIngressClass {
			return ""
		}
		return fmt.Sprintf("annotation %s %q is not nodegress's class, ignored", legacyClassAnnotation, v)
	}
	for _, c := range s.ours {
		if c.Annotations[defaultClassAnnotation] == "true" {
			return ""
		}
	}
	return "no ingress class and none of nodegress's classes is the default, ignored"
}

// isOurs reports whether nodegress serves ing.
func (s ingressClassSelector) isOurs(ing *networkingv1.Ingress) bool {
	return s.notOurs(ing) == ""
}

func routePathOf(p networkingv1.HTTPIngressPath) (l7proxy.PathType, string, error) {
	pt := networkingv1.PathTypeImplementationSpecific
	if p.PathType != nil {
		pt = *p.PathType
	}
	switch pt {
	case networkingv1.PathTypeExact:
		return l7proxy.PathExact, p.Path, nil
	case networkingv1.PathTypePrefix:
		return l7proxy.PathPrefix, p.Path, nil
	case networkingv1.PathTypeImplementationSpecific:
		// Documented as Prefix. The API allows an empty path here only,
		// meaning everything.
		return l7proxy.PathPrefix, cmp.Or(p.Path, "/"), nil
	}
	return 0, "", fmt.Errorf("unknown pathType %q", pt)
}

// upstream resolves an Ingress backend to the name of an upstream, creating
// the upstream on first use. An error means the backend cannot be served at
// all; a Service that does not exist (yet) is only reported.
func (t *ingressTranslator) upstream(ns, ingKey string, b networkingv1.IngressBackend, ann ingressAnnotations) (string, error) {
	if b.Resource != nil {
		return "", fmt.Errorf("resource backend (%s %s) is not supported", b.Resource.Kind, b.Resource.Name)
	}
	s := b.Service
	if s == nil || s.Name == "" {
		return "", errors.New("backend without a service name")
	}
	if (s.Port.Name == "") == (s.Port.Number == 0) {
		return "", fmt.Errorf("service %s: exactly one of port.name and port.number is required", s.Name)
	}
	if s.Port.Number < 0 || s.Port.Number > 65535 {
		return "", fmt.Errorf("service %s: port %d is not in 1-65535", s.Name, s.Port.Number)
	}
	name, problem := t.serviceUpstream(serviceRef{Namespace: ns, Name: s.Name, Port: s.Port}, ann)
	if problem != nil {
		// Not tied to the path: every path of the Ingress using the
		// Service has the same problem, reported once.
		t.report("Ingress", ingKey, false, fmt.Errorf("%w; requests get 503", problem))
	}
	return name, nil
}

// serviceUpstream returns the name of the upstream for a service port with
// the given settings, creating it on first use. The name is
// "namespace/service:port", the port being the Service port's name when it
// has one (so a backend by number and one by name share a pool), followed
// by every setting that differs from the defaults: upstreams with
// different protocols, balancing or timeouts are different pools. problem
// says why the upstream has no endpoints when the Service or its port is
// missing or unusable; the upstream exists anyway.
func (t *ingressTranslator) serviceUpstream(ref serviceRef, ann ingressAnnotations) (name string, problem error) {
	svcKey := ref.key()
	portID := cmp.Or(ref.Port.Name, strconv.Itoa(int(ref.Port.Number)))
	var sp *corev1.ServicePort
	svc, svcSlices := t.service(svcKey)
	switch {
	case svc == nil:
		problem = withReason(ReasonBackendNotFound, fmt.Errorf("service %s not found", svcKey))
	case svc.Spec.Type == corev1.ServiceTypeExternalName:
		problem = withReason(ReasonUnsupportedBackend, fmt.Errorf("service %s is of type ExternalName, which is not supported", svcKey))
	default:
		for i := range svc.Spec.Ports {
			p := &svc.Spec.Ports[i]
			if (ref.Port.Name != "" && p.Name == ref.Port.Name) || (ref.Port.Name == "" && p.Port == ref.Port.Number) {
				sp = p
				break
			}
		}
		if sp == nil {
			problem = withReason(ReasonBackendNotFound, fmt.Errorf("service %s has no port %s", svcKey, portID))
		} else if proto := cmp.Or(sp.Protocol, corev1.ProtocolTCP); proto != corev1.ProtocolTCP {
			problem = withReason(ReasonUnsupportedBackend, fmt.Errorf("service %s port %s is %s, not TCP", svcKey, portID, proto))
			sp = nil
		} else {
			portID = cmp.Or(sp.Name, strconv.Itoa(int(sp.Port)))
		}
	}

	name = upstreamName(svcKey+":"+portID, ann)
	if _, ok := t.upstreams[name]; ok {
		return name, problem
	}
	up := &l7proxy.Upstream{
		Name:           name,
		Namespace:      ref.Namespace,
		Service:        ref.Name,
		Port:           portID,
		Protocol:       ann.Protocol,
		Balance:        ann.Balance,
		ConnectTimeout: ann.ConnectTimeout,
		ReadTimeout:    ann.ReadTimeout,
		IdleTimeout:    ann.IdleTimeout,
		SendTimeout:    ann.SendTimeout,
		TLS:            ann.TLS,
		ProxyProtocol:  ann.ProxyProtocol,
	}
	if sp != nil {
		// Endpoints anywhere in the cluster, chosen as for cluster-wide
		// traffic: the proxy reaches pods on other nodes directly, so
		// the node does not matter here.
		eps, errs := selectEndpoints(*sp, svcSlices, endpointSelection{})
		t.errs = append(t.errs, errs...)
		for _, e := range eps {
			up.Endpoints = append(up.Endpoints, l7proxy.Endpoint{Addr: e.addr, Terminating: !e.active, Pod: e.pod, Node: e.node})
		}
		slices.SortFunc(up.Endpoints, func(a, b l7proxy.Endpoint) int { return a.Addr.Compare(b.Addr) })
	}
	t.upstreams[name] = up
	return name, problem
}

func upstreamName(base string, ann ingressAnnotations) string {
	parts := []string{base}
	switch ann.Protocol {
	case l7proxy.ProtocolH2C:
		parts = append(parts, "h2c")
	case l7proxy.ProtocolHTTPS:
		parts = append(parts, "https")
	}
	if ann.TLSPolicy != "" {
		parts = append(parts, "verify="+ann.TLSPolicy)
	}
	if ann.ProxyProtocol != 0 {
		parts = append(parts, fmt.Sprintf("proxy-protocol=v%d", ann.ProxyProtocol))
	}
	if ann.Balance == l7proxy.LeastRequest {
		parts = append(parts, "least_request")
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{{"connect", ann.ConnectTimeout}, {"read", ann.ReadTimeout}, {"send", ann.SendTimeout}, {"idle", ann.IdleTimeout}} {
		if d.d > 0 {
			parts = append(parts, d.name+"="+d.d.String())
		}
	}
	return strings.Join(parts, "/")
}

// certificates adds the certificates of an Ingress's spec.tls. Secrets
// are looked up in the Ingress's namespace only: an Ingress must not be
// able to serve another namespace's certificate (and key).
func (t *ingressTranslator) certificates(ing *networkingv1.Ingress, key string) {
	for i, tl := range ing.Spec.TLS {
		if tl.SecretName == "" {
			// Allowed by the API: TLS for these hosts with the default
			// certificate.
			continue
		}
		secKey := ing.Namespace + "/" + tl.SecretName
		fail := func(err error) {
			t.report("Ingress", key, false, fmt.Errorf("spec.tls[%d]: secret %s: %w; its hosts get the default certificate", i, secKey, err))
		}
		sec := t.secrets[secKey]
		if sec == nil {
			fail(withReason(ReasonMissingSecret, errors.New("no kubernetes.io/tls secret of that name in the ingress's namespace")))
			continue
		}
		cert, err := t.in.certs.parse(sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey])
		if err != nil {
			fail(withReason(ReasonInvalidCertificate, err))
			continue
		}
		t.out.Certificates = append(t.out.Certificates, l7proxy.Certificate{
			Hosts:  slices.Clone(tl.Hosts),
			Cert:   cert,
			Source: secKey,
		})
	}
}

// frontends builds the L7 services for the datapath.
func (t *ingressTranslator) frontends() []loader.Service {
	addrs := make([]netip.Addr, 0, len(t.in.NodeAddrs))
	for _, a := range t.in.NodeAddrs {
		if a = a.Unmap(); a.Is4() {
			addrs = append(addrs, a)
		}
	}
	if t.cfg.PublishService != "" {
		addrs = append(addrs, t.publishedAddrs()...)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	addrs = slices.Compact(addrs)
	if len(addrs) == 0 {
		return nil
	}
	var out []loader.Service
	for _, l := range []struct {
		name, listener string
		port           uint16
	}{
		{L7ServiceHTTP, ListenerHTTP, t.cfg.HTTPPort},
		{L7ServiceHTTPS, ListenerHTTPS, t.cfg.HTTPSPort},
	} {
		s := loader.Service{Name: l.name, Proto: loader.TCP, L7: true, ProxyListener: l.listener}
		for _, a := range addrs {
			s.Frontends = append(s.Frontends, loader.Frontend{Addr: a, Port: l.port})
		}
		out = append(out, s)
	}
	return out
}

func (t *ingressTranslator) publishedAddrs() []netip.Addr {
	ref, err := parseServiceRef(t.cfg.PublishService, false)
	if err != nil {
		t.errs = append(t.errs, fmt.Errorf("publish service: %w", err))
		return nil
	}
	svc, _ := t.service(ref.key())
	if svc == nil {
		t.report("Service", ref.key(), false, errors.New("publish service not found; serving the node's addresses only"))
		return nil
	}
	var out []netip.Addr
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		// As in Translate: with ipMode Proxy the load balancer connects to
		// the node's own addresses, never to this IP.
		if ing.IP == "" || (ing.IPMode != nil && *ing.IPMode == corev1.LoadBalancerIPModeProxy) {
			continue
		}
		a, err := parseIPv4(ing.IP)
		if err != nil {
			t.report("Service", ref.key(), errors.Is(err, errNotIPv4), fmt.Errorf("publish service load balancer IP %q: %w", ing.IP, err))
			continue
		}
		out = append(out, a)
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// certCache keeps parsed certificates between translations, keyed by the
// Secret's content, so a sync costs no parsing (and no key validation) for
// unchanged Secrets. Entries not used by a translation are dropped at its
// end. A nil cache parses every time. Not safe for concurrent use: only the
// sync runner uses it.
type certCache struct {
	entries map[[sha256.Size]byte]*certEntry
}

type certEntry struct {
	cert *tls.Certificate
	err  error
	used bool
}

func newCertCache() *certCache {
	return &certCache{entries: make(map[[sha256.Size]byte]*certEntry)}
}

func (c *certCache) parse(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	if c == nil {
		return l7proxy.ParseCertificate(certPEM, keyPEM)
	}
	h := sha256.New()
	// Length-prefixed, so no two (cert, key) pairs share a key.
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(certPEM)))
	h.Write(n[:])
	h.Write(certPEM)
	h.Write(keyPEM)
	var k [sha256.Size]byte
	h.Sum(k[:0])
	e := c.entries[k]
	if e == nil {
		e = &certEntry{}
		e.cert, e.err = l7proxy.ParseCertificate(certPEM, keyPEM)
		c.entries[k] = e
	}
	e.used = true
	return e.cert, e.err
}

func (c *certCache) sweep() {
	for k, e := range c.entries {
		if !e.used {
			delete(c.entries, k)
		}
		e.used = false
	}
}
