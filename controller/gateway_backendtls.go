package controller

import (
	"bytes"
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
// the older (then by namespace/name) wins and the other is Conflicted. A
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
		var targets []backendTLSTarget
		for _, ref := range p.Spec.TargetRefs {
			if ref.Group != "" || ref.Kind != kindService {
				continue
			}
			t := backendTLSTarget{namespace: p.Namespace, service: string(ref.Name), section: string(ptrValue(ref.SectionName))}
			if g.backendTLS[t] != nil {
				bt.conflicted = true
			}
			targets = append(targets, t)
		}
		if bt.conflicted {
			bt.verify = nil
			bt.accepted = condition(string(gwapi.PolicyConditionAccepted), false, string(gwapi.PolicyReasonConflicted),
				"an older policy targets the same Service (and section)", p.Generation)
		} else {
			for _, t := range targets {
				g.backendTLS[t] = bt
			}
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
