package controller

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/nodegress/nodegress/l7proxy"
	"github.com/nodegress/nodegress/loader"
)

// Translation of the routing annotations (annotations_routing.go) into
// route rules: an annotated Ingress path becomes an l7proxy.Route whose
// Rules carry the Gateway filters (URL rewrite, redirect, header edit,
// CORS) and weighted backends, so the proxy serves Ingresses and
// HTTPRoutes with the same machinery. A path without such annotations
// gets no rules and costs the proxy nothing more.

// canaryKey identifies the main path a canary Ingress diverts traffic
// from: the host and the path as written, as ingress-nginx pairs them,
// within the canary's namespace. ingress-nginx pairs across namespaces,
// which lets anyone who may create an Ingress in one namespace take
// another namespace's traffic (with its cookies and Authorization
// fields); here a canary only diverts from an Ingress of its own
// namespace.
type canaryKey struct{ namespace, host, path string }

// canaryBackend is the backend of a canary Ingress's path.
type canaryBackend struct {
	ingress  string
	upstream string
	canary   canaryAnnotations
	used     bool
}

// canaries collects the paths of canary Ingresses (oldest first; a later
// canary for the same path is reported and left out: ingress-nginx too
// takes one per path).
func (t *ingressTranslator) canaries(ings []parsedIngress) map[canaryKey]*canaryBackend {
	out := map[canaryKey]*canaryBackend{}
	for _, pi := range ings {
		if !pi.ann.Routing.Canary.Enabled {
			continue
		}
		for ri, rule := range pi.ing.Spec.Rules {
			if rule.HTTP == nil {
				continue
			}
			for pj, p := range rule.HTTP.Paths {
				k := canaryKey{namespace: pi.ing.Namespace, host: rule.Host, path: p.Path}
				if prev := out[k]; prev != nil {
					t.report("Ingress", pi.key, false, fmt.Errorf("spec.rules[%d].http.paths[%d]: canary not used: ingress %s is the canary of host %q path %q already",
						ri, pj, prev.ingress, k.host, k.path))
					continue
				}
				up, err := t.upstream(pi.ing.Namespace, pi.key, p.Backend, pi.ann)
				if err != nil {
					t.report("Ingress", pi.key, false, fmt.Errorf("spec.rules[%d].http.paths[%d]: %w; canary not used", ri, pj, err))
					continue
				}
				out[k] = &canaryBackend{ingress: pi.key, upstream: up, canary: pi.ann.Routing.Canary}
			}
		}
	}
	return out
}

// reportUnusedCanaries reports canary paths no main Ingress of their
// namespace serves. mains holds, for each host and path (namespace
// empty), the first Ingress serving it.
func (t *ingressTranslator) reportUnusedCanaries(cs map[canaryKey]*canaryBackend, mains map[canaryKey]string) {
	for _, k := range sortedCanaryKeys(cs) {
		c := cs[k]
		switch main := mains[canaryKey{host: k.host, path: k.path}]; {
		case c.used:
		case main != "":
			t.report("Ingress", c.ingress, false, fmt.Errorf("canary of host %q path %q not used: ingress %s serves that host and path from another namespace, and a canary must be in its main ingress's namespace",
				k.host, k.path, main))
		default:
			t.report("Ingress", c.ingress, false, fmt.Errorf("canary of host %q path %q not used: no other ingress serves that host and path", k.host, k.path))
		}
	}
}

func sortedCanaryKeys(cs map[canaryKey]*canaryBackend) []canaryKey {
	keys := make([]canaryKey, 0, len(cs))
	for k := range cs {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b canaryKey) int {
		return cmp.Or(cmp.Compare(a.host, b.host), cmp.Compare(a.path, b.path), cmp.Compare(a.namespace, b.namespace))
	})
	return keys
}

// routeRules returns the rules of one path of an Ingress with upstream
// main; nil when the path needs none. pattern is the route's regular
// expression (or path) a rewrite-target applies to.
func routeRules(r *routingAnnotations, pattern, main string, canary *canaryBackend) []l7proxy.HTTPRouteRule {
	fl := routeFilters(r, pattern)
	if fl.Redirect != nil {
		return []l7proxy.HTTPRouteRule{{Filters: fl}}
	}
	if canary == nil && fl.Rewrite == nil && fl.RequestHeaders == nil && fl.CORS == nil {
		return nil
	}
	to := func(up string) []l7proxy.WeightedBackend { return []l7proxy.WeightedBackend{{Upstream: up, Weight: 1}} }
	if canary == nil {
		return []l7proxy.HTTPRouteRule{{Backends: to(main), Filters: fl}}
	}
	// ingress-nginx's order: the header, then the cookie, then the
	// weight; "never" sends to the main backend without looking further.
	var rules []l7proxy.HTTPRouteRule
	add := func(m l7proxy.HTTPMatch, up string) {
		rules = append(rules, l7proxy.HTTPRouteRule{Matches: []l7proxy.HTTPMatch{m}, Backends: to(up), Filters: fl})
	}
	c := &canary.canary
	if c.Header != "" {
		h := canonicalHeader(c.Header)
		switch {
		case c.HeaderValue != "":
			add(l7proxy.HTTPMatch{Headers: []l7proxy.ValueMatch{{Name: h, Value: c.HeaderValue}}}, canary.upstream)
		case c.HeaderPattern != "":
			add(l7proxy.HTTPMatch{Headers: []l7proxy.ValueMatch{{Name: h, Value: c.HeaderPattern, Regex: true}}}, canary.upstream)
		default:
			add(l7proxy.HTTPMatch{Headers: []l7proxy.ValueMatch{{Name: h, Value: "always"}}}, canary.upstream)
			add(l7proxy.HTTPMatch{Headers: []l7proxy.ValueMatch{{Name: h, Value: "never"}}}, main)
		}
	}
	if c.Cookie != "" {
		add(l7proxy.HTTPMatch{Cookies: []l7proxy.ValueMatch{{Name: c.Cookie, Value: "always"}}}, canary.upstream)
		add(l7proxy.HTTPMatch{Cookies: []l7proxy.ValueMatch{{Name: c.Cookie, Value: "never"}}}, main)
	}
	// As ingress-nginx: a total under 100 counts as 100, a weight over
	// the total sends everything to the canary.
	total := max(c.WeightTotal, 100)
	w := min(c.Weight, total)
	return append(rules, l7proxy.HTTPRouteRule{Filters: fl, Backends: []l7proxy.WeightedBackend{
		{Upstream: main, Weight: total - w}, {Upstream: canary.upstream, Weight: w}}})
}

// routeFilters are the Gateway filters the annotations ask for.
func routeFilters(r *routingAnnotations, pattern string) l7proxy.Filters {
	var fl l7proxy.Filters
	switch {
	case r.TemporalRedirect != "":
		fl.Redirect = &l7proxy.Redirect{Location: r.TemporalRedirect, StatusCode: cmp.Or(r.TemporalRedirectCode, http.StatusFound)}
		return fl
	case r.PermanentRedirect != "":
		fl.Redirect = &l7proxy.Redirect{Location: r.PermanentRedirect, StatusCode: cmp.Or(r.PermanentRedirectCode, http.StatusMovedPermanently)}
		return fl
	}
	if r.RewriteTarget != "" || r.UpstreamVhost != "" {
		fl.Rewrite = &l7proxy.Rewrite{Hostname: r.UpstreamVhost}
		if r.RewriteTarget != "" {
			fl.Rewrite.Path = &l7proxy.PathModifier{ReplaceRegexMatch: true, Pattern: pattern, Value: r.RewriteTarget}
		}
	}
	if r.XForwardedPrefix != "" {
		fl.RequestHeaders = &l7proxy.HeaderEdit{Set: []l7proxy.Field{{Name: "X-Forwarded-Prefix", Value: r.XForwardedPrefix}}}
	}
	if r.EnableCORS {
		fl.CORS = r.cors()
	}
	return fl
}

// appRootRules redirect "/" to the app root, as ingress-nginx's
// `if ($uri = /) { return 302 ...; }` in the host's server block.
func appRootRules(appRoot string) []l7proxy.HTTPRouteRule {
	return []l7proxy.HTTPRouteRule{{Filters: l7proxy.Filters{Redirect: &l7proxy.Redirect{
		Path: &l7proxy.PathModifier{ReplaceFullPath: true, Value: appRoot}, StatusCode: http.StatusFound}}}}
}

var errProxySSLNamespace = errors.New("the secret must be in the ingress's namespace")

// proxySSL builds the upstream TLS of the proxy-ssl-* annotations of an
// Ingress in namespace ns. Like ingress-nginx they apply to HTTPS (and
// GRPCS) backends only; nil without proxy-ssl-secret.
func (t *ingressTranslator) proxySSL(ns string, ann *ingressAnnotations) (*l7proxy.UpstreamTLS, error) {
	ps := &ann.Routing.ProxySSL
	if ps.Secret == "" || ann.Protocol != l7proxy.ProtocolHTTPS {
		return nil, nil
	}
	secNS, _, _ := strings.Cut(ps.Secret, "/")
	if secNS != ns {
		// As for spec.tls: an Ingress must not use another namespace's
		// key.
		return nil, fmt.Errorf("proxy-ssl-secret %s: %w", ps.Secret, errProxySSLNamespace)
	}
	sec := t.secrets[ps.Secret]
	if sec == nil {
		return nil, withReason(ReasonMissingSecret, fmt.Errorf("proxy-ssl-secret %s: no kubernetes.io/tls secret of that name", ps.Secret))
	}
	cert, err := t.in.certs.parse(sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		return nil, withReason(ReasonInvalidCertificate, fmt.Errorf("proxy-ssl-secret %s: %w", ps.Secret, err))
	}
	u := &l7proxy.UpstreamTLS{ClientCert: cert}
	if ps.ServerName {
		u.ServerName = ps.Name
	}
	if !ps.Verify {
		u.SkipVerify = true
		return u, nil
	}
	u.CAPEM = sec.Data["ca.crt"]
	if len(u.CAPEM) == 0 {
		return nil, withReason(ReasonInvalidCertificate, fmt.Errorf("proxy-ssl-secret %s: no ca.crt to verify the backends with", ps.Secret))
	}
	if !ps.ServerName {
		// Checked without being sent as SNI.
		u.DNSNames = []string{ps.Name}
	}
	u.MaxDepth = cmp.Or(ps.VerifyDepth, 1)
	return u, nil
}

// passthroughHost is one host of an ssl-passthrough Ingress.
type passthroughHost struct {
	host, ingress, upstream string
}

// passthroughHosts records the hosts of an ssl-passthrough Ingress: each
// rule's host goes to the backend of its first path (ingress-nginx
// forwards the connection without looking at paths). A host an older
// Ingress passes through already is reported.
func (t *ingressTranslator) passthroughHosts(ing *networkingv1.Ingress, key string, ann ingressAnnotations) {
	for ri, rule := range ing.Spec.Rules {
		if rule.HTTP == nil || len(rule.HTTP.Paths) == 0 {
			continue
		}
		fail := func(err error) {
			t.report("Ingress", key, false, fmt.Errorf("spec.rules[%d]: ssl-passthrough: %w; not passed through", ri, err))
		}
		if rule.Host == "" {
			fail(errors.New("a rule without host cannot be chosen by SNI"))
			continue
		}
		if i := slices.IndexFunc(t.passthrough, func(p passthroughHost) bool { return p.host == rule.Host }); i >= 0 {
			fail(fmt.Errorf("host %s is passed through by the older ingress %s", rule.Host, t.passthrough[i].ingress))
			continue
		}
		up, err := t.upstream(ing.Namespace, key, rule.HTTP.Paths[0].Backend, ann)
		if err != nil {
			fail(err)
			continue
		}
		t.passthrough = append(t.passthrough, passthroughHost{host: rule.Host, ingress: key, upstream: up})
	}
}

// passthroughListeners are the TLS passthrough listeners of the
// ssl-passthrough hosts on the Ingress HTTPS frontends; every other
// server name on them stays the Ingress routes' (IngressFallback).
func (t *ingressTranslator) passthroughListeners(fes []loader.Service) []l7proxy.Listener {
	if len(t.passthrough) == 0 {
		return nil
	}
	var front []netip.AddrPort
	for _, s := range fes {
		if s.Name == L7ServiceHTTPS {
			for _, f := range s.Frontends {
				front = append(front, netip.AddrPortFrom(f.Addr, f.Port))
			}
		}
	}
	if len(front) == 0 {
		return nil
	}
	out := make([]l7proxy.Listener, 0, len(t.passthrough))
	for _, p := range t.passthrough {
		out = append(out, l7proxy.Listener{
			Name: "ingress " + p.ingress + " " + p.host, Kind: l7proxy.ListenerTLSPassthrough, Hostname: p.host,
			IngressFallback: true, Frontends: front,
			TLSRoutes: []l7proxy.TLSRoute{{Source: p.ingress, Backends: []l7proxy.WeightedBackend{{Upstream: p.upstream, Weight: 1}}}},
		})
	}
	return out
}
