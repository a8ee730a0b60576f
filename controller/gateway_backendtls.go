package controller

import (
	"bytes"
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapi "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/nodegress/nodegress/l7proxy"
)

// BackendTLSPolicy: how the proxy verifies the TLS of the Services a
// policy targets. A policy applies to the named port of a Service
// (sectionName) or to all its ports; of two policies for the same target,
// the older (then by namespace/name) wins it and the other is Conflicted
// (it still applies to the targets it alone has). A
// valid policy turns the upstream into HTTPS verified by the policy's CAs
// and hostname (or subject alternative names); an invalid one makes
// requests to that backend fail rather than go unverified.

const (
	kindBackendTLSPolicy = "BackendTLSPolicy"
	kindConfigMap        = "ConfigMap"
	// caCertKey is the ConfigMap key holding the CA certificates.
	caCertKey = "ca.crt"
)

// backendTLSTarget is a Service port a policy applies to; an empty
// section is every port.
type backendTLSTarget struct{ namespace, service, section string }

// backendTLSPolicy is a translated BackendTLSPolicy.
type backendTLSPolicy struct {
	policy *gwapi.BackendTLSPolicy
	key    string // namespace/name
	// verify is the proxy's verification; nil when the policy is not
	// valid.
	verify     *l7proxy.UpstreamTLS
	accepted   metav1.Condition
	resolved   metav1.Condition
	conflicted bool
}

// resolveBackendTLS translates the policies and chooses, for every
// target, the one that applies.
func (g *gatewayTranslator) resolveBackendTLS() {
	policies := slices.Clone(g.gin.BackendTLSPolicies)
	slices.SortFunc(policies, func(a, b *gwapi.BackendTLSPolicy) int { return compareObjects(&a.ObjectMeta, &b.ObjectMeta) })
	cms := make(map[string]*corev1.ConfigMap, len(g.gin.ConfigMaps))
	for _, cm := range g.gin.ConfigMaps {
		cms[cm.Namespace+"/"+cm.Name] = cm
	}
	for _, p := range policies {
		bt := &backendTLSPolicy{policy: p, key: p.Namespace + "/" + p.Name}
		bt.verify, bt.accepted, bt.resolved = backendTLSVerification(p, cms)
		// Precedence is per target: the policy applies to the targets no
		// older policy has, and says Conflicted for the others.
		for _, ref := range p.Spec.TargetRefs {
			if ref.Group != "" || ref.Kind != kindService {
				continue
			}
			t := backendTLSTarget{namespace: p.Namespace, service: string(ref.Name), section: string(ptrValue(ref.SectionName))}
			if g.backendTLS[t] != nil {
				bt.conflicted = true
				continue
			}
			g.backendTLS[t] = bt
		}
		if bt.conflicted {
			bt.accepted = condition(string(gwapi.PolicyConditionAccepted), false, string(gwapi.PolicyReasonConflicted),
				"an older policy targets the same Service (and section)", p.Generation)
		}
		g.tlsPolicies = append(g.tlsPolicies, bt)
	}
}

// backendTLSVerification validates a policy: the proxy's verification
// (nil when the policy cannot be applied), and its Accepted and
// ResolvedRefs conditions.
func backendTLSVerification(p *gwapi.BackendTLSPolicy, cms map[string]*corev1.ConfigMap) (*l7proxy.UpstreamTLS, metav1.Condition, metav1.Condition) {
	gen := p.Generation
	v := &p.Spec.Validation
	accepted := condition(string(gwapi.PolicyConditionAccepted), true, string(gwapi.PolicyReasonAccepted), "", gen)
	resolved := condition(string(gwapi.BackendTLSPolicyConditionResolvedRefs), true, string(gwapi.BackendTLSPolicyReasonResolvedRefs), "", gen)
	u := &l7proxy.UpstreamTLS{ServerName: string(v.Hostname)}
	if wk := v.WellKnownCACertificates; wk != nil {
		if *wk != gwapi.WellKnownCACertificatesSystem {
			accepted = condition(string(gwapi.PolicyConditionAccepted), false, string(gwapi.PolicyReasonInvalid),
				fmt.Sprintf("wellKnownCACertificates %q is not supported", *wk), gen)
			return nil, accepted, resolved
		}
		u.SystemRoots = true
	}
	var bad []string
	badReason := gwapi.BackendTLSPolicyReasonInvalidCACertificateRef
	for _, ref := range v.CACertificateRefs {
		if ref.Group != "" || ref.Kind != kindConfigMap {
			bad = append(bad, fmt.Sprintf("%s %s/%s is not a ConfigMap", ref.Kind, ref.Group, ref.Name))
			badReason = gwapi.BackendTLSPolicyReasonInvalidKind
			continue
		}
		cm := cms[p.Namespace+"/"+string(ref.Name)]
		if cm == nil {
			bad = append(bad, fmt.Sprintf("configmap %s not found", ref.Name))
			continue
		}
		ca := []byte(cm.Data[caCertKey])
		if err := validCAPEM(ca); err != nil {
			bad = append(bad, fmt.Sprintf("configmap %s key %s: %v", ref.Name, caCertKey, err))
			continue
		}
		u.CAPEM = append(append(u.CAPEM, ca...), '\n')
	}
	if len(bad) > 0 {
		msg := fmt.Sprint(bad)
		resolved = condition(string(gwapi.BackendTLSPolicyConditionResolvedRefs), false, string(badReason), msg, gen)
		if len(u.CAPEM) == 0 && !u.SystemRoots {
			accepted = condition(string(gwapi.PolicyConditionAccepted), false, string(gwapi.BackendTLSPolicyReasonNoValidCACertificate), msg, gen)
			return nil, accepted, resolved
		}
	}
	if len(u.CAPEM) == 0 && !u.SystemRoots {
		accepted = condition(string(gwapi.PolicyConditionAccepted), false, string(gwapi.BackendTLSPolicyReasonNoValidCACertificate),
			"no caCertificateRefs and no wellKnownCACertificates", gen)
		return nil, accepted, resolved
	}
	for _, san := range v.SubjectAltNames {
		switch san.Type {
		case gwapi.HostnameSubjectAltNameType:
			u.DNSNames = append(u.DNSNames, string(san.Hostname))
		case gwapi.URISubjectAltNameType:
			u.URIs = append(u.URIs, string(san.URI))
		}
	}
	return u, accepted, resolved
}

// validCAPEM checks that b holds at least one certificate and nothing
// else that fails to parse.
func validCAPEM(b []byte) error {
	n := 0
	for rest := bytes.TrimSpace(b); len(rest) > 0; rest = bytes.TrimSpace(rest) {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			return fmt.Errorf("not PEM")
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
			return fmt.Errorf("certificate %d: %w", n+1, err)
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("no certificate")
	}
	return nil
}

// backendTLSFor returns the policy applying to a Service port: the one
// for the port's name, else the one for the whole Service.
func (g *gatewayTranslator) backendTLSFor(ns, svc, portName string) *backendTLSPolicy {
	if portName != "" {
		if bt := g.backendTLS[backendTLSTarget{ns, svc, portName}]; bt != nil {
			return bt
		}
	}
	return g.backendTLS[backendTLSTarget{ns, svc, ""}]
}

// backendTLSStatuses writes each policy's status for the Gateways of
// ours whose routes use a Service it targets.
func (g *gatewayTranslator) backendTLSStatuses() {
	for _, bt := range g.tlsPolicies {
		var gws []string
		for _, ref := range bt.policy.Spec.TargetRefs {
			if ref.Group == "" && ref.Kind == kindService {
				gws = append(gws, g.serviceGateways[bt.policy.Namespace+"/"+string(ref.Name)]...)
			}
		}
		slices.Sort(gws)
		gws = slices.Compact(gws)
		if len(gws) == 0 {
			continue
		}
		ancestors := make([]gwapi.PolicyAncestorStatus, 0, len(gws))
		for _, key := range gws {
			gw := g.gateways[key]
			ancestors = append(ancestors, gwapi.PolicyAncestorStatus{
				AncestorRef: gwapi.ParentReference{Group: ptr(gwapi.Group(gwapi.GroupName)), Kind: ptr(gwapi.Kind(kindGateway)),
					Namespace: ptr(gwapi.Namespace(gw.Namespace)), Name: gwapi.ObjectName(gw.Name)},
				ControllerName: gwapi.GatewayController(g.ctrl),
				Conditions:     []metav1.Condition{bt.accepted, bt.resolved},
			})
		}
		g.status.BackendTLSPolicies[bt.key] = ancestors
	}
}

// backendClientCert resolves a Gateway's spec.tls.backend: the client
// certificate its routes' verified HTTPS backends get, and the Gateway's
// ResolvedRefs condition.
func (g *gatewayTranslator) backendClientCert(gw *gwapi.Gateway) (*tls.Certificate, metav1.Condition) {
	gen := gw.Generation
	ok := condition(string(gwapi.GatewayConditionResolvedRefs), true, string(gwapi.GatewayReasonResolvedRefs), "", gen)
	if gw.Spec.TLS == nil || gw.Spec.TLS.Backend == nil || gw.Spec.TLS.Backend.ClientCertificateRef == nil {
		return nil, ok
	}
	ref := gw.Spec.TLS.Backend.ClientCertificateRef
	bad := func(reason gwapi.GatewayConditionReason, msg string) (*tls.Certificate, metav1.Condition) {
		return nil, condition(string(gwapi.GatewayConditionResolvedRefs), false, string(reason), msg, gen)
	}
	if ptrValue(ref.Group) != "" || cmp.Or(ptrValue(ref.Kind), kindSecret) != kindSecret {
		return bad(gwapi.GatewayReasonInvalidClientCertificateRef, fmt.Sprintf("clientCertificateRef %s is not a core Secret", ref.Name))
	}
	ns := cmp.Or(string(ptrValue(ref.Namespace)), gw.Namespace)
	if ns != gw.Namespace && !g.granted(gw.Namespace, gwapi.GroupName, kindGateway, ns, "", kindSecret, string(ref.Name)) {
		return bad(gwapi.GatewayReasonRefNotPermitted, fmt.Sprintf("no ReferenceGrant in %s allows secret %s", ns, ref.Name))
	}
	sec := g.secrets[ns+"/"+string(ref.Name)]
	if sec == nil {
		return bad(gwapi.GatewayReasonInvalidClientCertificateRef, fmt.Sprintf("secret %s/%s not found (or not kubernetes.io/tls)", ns, ref.Name))
	}
	cert, err := g.in.certs.parse(sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		return bad(gwapi.GatewayReasonInvalidClientCertificateRef, fmt.Sprintf("secret %s/%s: %v", ns, ref.Name, err))
	}
	return cert, ok
}

// withClientCert returns rules whose verified HTTPS backends present a
// Gateway's client certificate: the rules are shared by every Gateway a
// route attaches to, so each Gateway with a certificate gets copies
// naming upstreams of its own.
func (g *gatewayTranslator) withClientCert(rules []l7proxy.HTTPRouteRule, gwKey string, cert *tls.Certificate) []l7proxy.HTTPRouteRule {
	if cert == nil {
		return rules
	}
	out := slices.Clone(rules)
	for i := range out {
		out[i].Backends = slices.Clone(out[i].Backends)
		for j := range out[i].Backends {
			b := &out[i].Backends[j]
			b.Upstream = g.clientCertUpstream(b.Upstream, gwKey, cert)
		}
		// Mirrors present it too.
		out[i].Filters.Mirrors = slices.Clone(out[i].Filters.Mirrors)
		for j := range out[i].Filters.Mirrors {
			m := &out[i].Filters.Mirrors[j]
			m.Upstream = g.clientCertUpstream(m.Upstream, gwKey, cert)
		}
	}
	return out
}

// clientCertUpstream returns the Gateway's own copy of a verified HTTPS
// upstream, presenting its client certificate; other upstreams as they
// are.
func (g *gatewayTranslator) clientCertUpstream(name, gwKey string, cert *tls.Certificate) string {
	up := g.upstreams[name]
	if up == nil || up.TLS == nil {
		return name
	}
	own := name + "/client-of=" + gwKey
	if _, ok := g.upstreams[own]; !ok {
		v, verify := *up, *up.TLS
		verify.ClientCert = cert
		v.Name, v.TLS = own, &verify
		g.upstreams[own] = &v
	}
	return own
}
