package controller

import (
	"cmp"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapi "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/nodegress/nodegress/l7proxy"
)

// Client certificate validation of a Gateway's TLS listeners
// (spec.tls.frontend): the default, or the configuration of the
// listener's port. Its CA certificates are in ConfigMaps (key ca.crt),
// across namespaces with a ReferenceGrant.

// frontendValidations are every validation a Gateway configures.
func frontendValidations(gw *gwapi.Gateway) []*gwapi.FrontendTLSValidation {
	if gw.Spec.TLS == nil || gw.Spec.TLS.Frontend == nil {
		return nil
	}
	f := gw.Spec.TLS.Frontend
	var out []*gwapi.FrontendTLSValidation
	if f.Default.Validation != nil {
		out = append(out, f.Default.Validation)
	}
	for i := range f.PerPort {
		if v := f.PerPort[i].TLS.Validation; v != nil {
			out = append(out, v)
		}
	}
	return out
}

// frontendValidation is the validation of a Gateway's port: its own
// configuration, else the default.
func frontendValidation(gw *gwapi.Gateway, port gwapi.PortNumber) *gwapi.FrontendTLSValidation {
	if gw.Spec.TLS == nil || gw.Spec.TLS.Frontend == nil {
		return nil
	}
	f := gw.Spec.TLS.Frontend
	for i := range f.PerPort {
		if f.PerPort[i].Port == port {
			return f.PerPort[i].TLS.Validation
		}
	}
	return f.Default.Validation
}

// insecureFrontend reports whether a validation of the Gateway accepts
// clients without a valid certificate.
func insecureFrontend(gw *gwapi.Gateway) bool {
	for _, v := range frontendValidations(gw) {
		if v.Mode == gwapi.AllowInsecureFallback {
			return true
		}
	}
	return false
}

// clientValidation resolves a listener's validation. On a problem it
// returns the listener's ResolvedRefs and Accepted conditions: a listener
// whose CA certificates do not resolve is not served (never served
// without the validation it asks for).
func (g *gatewayTranslator) clientValidation(gw *gwapi.Gateway, v *gwapi.FrontendTLSValidation) (*l7proxy.ClientValidation, []metav1.Condition) {
	gen := gw.Generation
	cv := &l7proxy.ClientValidation{AllowInsecureFallback: v.Mode == gwapi.AllowInsecureFallback}
	var reason gwapi.ListenerConditionReason
	var msg string
	fail := func(r gwapi.ListenerConditionReason, m string) {
		if reason == "" {
			reason, msg = r, m
		}
	}
	for _, ref := range v.CACertificateRefs {
		ns := cmp.Or(string(ptrValue(ref.Namespace)), gw.Namespace)
		switch {
		case ref.Group != "" || ref.Kind != kindConfigMap:
			fail(gwapi.ListenerReasonInvalidCACertificateKind, fmt.Sprintf("caCertificateRef %s %s is not a ConfigMap", ref.Kind, ref.Name))
			continue
		case ns != gw.Namespace && !g.granted(gw.Namespace, gwapi.GroupName, kindGateway, ns, "", kindConfigMap, string(ref.Name)):
			fail(gwapi.ListenerReasonRefNotPermitted, fmt.Sprintf("no ReferenceGrant in %s allows configmap %s", ns, ref.Name))
			continue
		}
		cm := g.configMap(ns, string(ref.Name))
		if cm == nil {
			fail(gwapi.ListenerReasonInvalidCACertificateRef, fmt.Sprintf("configmap %s/%s not found", ns, ref.Name))
			continue
		}
		ca := []byte(cm.Data[caCertKey])
		if err := validCAPEM(ca); err != nil {
			fail(gwapi.ListenerReasonInvalidCACertificateRef, fmt.Sprintf("configmap %s/%s key %s: %v", ns, ref.Name, caCertKey, err))
			continue
		}
		cv.CAPEM = append(append(cv.CAPEM, ca...), '\n')
	}
	if reason == "" && len(cv.CAPEM) == 0 {
		fail(gwapi.ListenerReasonInvalidCACertificateRef, "no caCertificateRefs")
	}
	if reason == "" {
		return cv, nil
	}
	// ResolvedRefs says any reference that does not resolve; Accepted
	// only when none does. Either way the listener is not served.
	accepted := condition(string(gwapi.ListenerConditionAccepted), true, string(gwapi.ListenerReasonAccepted), "", gen)
	if len(cv.CAPEM) == 0 {
		accepted = condition(string(gwapi.ListenerConditionAccepted), false, string(gwapi.ListenerReasonNoValidCACertificate), msg, gen)
	}
	return nil, []metav1.Condition{
		condition(string(gwapi.ListenerConditionResolvedRefs), false, string(reason), msg, gen),
		accepted,
	}
}

// configMap returns a ConfigMap of the input, if there.
func (g *gatewayTranslator) configMap(ns, name string) *corev1.ConfigMap {
	for _, cm := range g.gin.ConfigMaps {
		if cm.Namespace == ns && cm.Name == name {
			return cm
		}
	}
	return nil
}
