package controller

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
)

// validateObject checks what the API server would have refused and what
// translation relies on. Standalone files reach the informers without an
// API server in between, so the checks that matter to the datapath happen
// here: an invalid object is rejected as a whole, and the previous version
// of it is kept, as after a refused update.
func validateObject(obj runtime.Object) error {
	switch o := obj.(type) {
	case *corev1.Service:
		return validateService(o)
	case *discoveryv1.EndpointSlice:
		return validateEndpointSlice(o)
	}
	return nil
}

func validateService(svc *corev1.Service) error {
	var errs []error
	switch svc.Spec.Type {
	case "", corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer, corev1.ServiceTypeExternalName:
	default:
		errs = append(errs, fmt.Errorf("spec.type %q is not one of ClusterIP, NodePort, LoadBalancer, ExternalName", svc.Spec.Type))
	}
	names := make(map[string]bool)
	type portProto struct {
		port  int32
		proto corev1.Protocol
	}
	seen := make(map[portProto]bool)
	for i, p := range svc.Spec.Ports {
		field := fmt.Sprintf("spec.ports[%d]", i)
		if p.Name == "" && len(svc.Spec.Ports) > 1 {
			errs = append(errs, fmt.Errorf("%s.name is required when a service has several ports", field))
		}
		if p.Name != "" {
			if names[p.Name] {
				errs = append(errs, fmt.Errorf("%s.name %q is used twice", field, p.Name))
			}
			names[p.Name] = true
		}
		if p.Port < 1 || p.Port > 65535 {
			errs = append(errs, fmt.Errorf("%s.port %d is not in 1-65535", field, p.Port))
		}
		if p.NodePort < 0 || p.NodePort > 65535 {
			errs = append(errs, fmt.Errorf("%s.nodePort %d is not in 0-65535", field, p.NodePort))
		}
		proto := p.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		switch proto {
		case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
		default:
			errs = append(errs, fmt.Errorf("%s.protocol %q is not one of TCP, UDP, SCTP", field, p.Protocol))
		}
		if seen[portProto{p.Port, proto}] {
			errs = append(errs, fmt.Errorf("%s: port %d/%s is used twice", field, p.Port, proto))
		}
		seen[portProto{p.Port, proto}] = true
		if p.TargetPort.StrVal == "" && (p.TargetPort.IntVal < 0 || p.TargetPort.IntVal > 65535) {
			errs = append(errs, fmt.Errorf("%s.targetPort %d is not in 1-65535", field, p.TargetPort.IntVal))
		}
	}
	for i, ip := range svc.Spec.ExternalIPs {
		if _, err := netip.ParseAddr(ip); err != nil {
			errs = append(errs, fmt.Errorf("spec.externalIPs[%d]: %w", i, err))
		}
	}
	for i, ing := range svc.Status.LoadBalancer.Ingress {
		if ing.IP == "" {
			continue
		}
		if _, err := netip.ParseAddr(ing.IP); err != nil {
			errs = append(errs, fmt.Errorf("status.loadBalancer.ingress[%d].ip: %w", i, err))
		}
	}
	return joinErrors(errs)
}

func validateEndpointSlice(s *discoveryv1.EndpointSlice) error {
	var errs []error
	switch s.AddressType {
	case discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6, discoveryv1.AddressTypeFQDN:
	default:
		errs = append(errs, fmt.Errorf("addressType %q is not one of IPv4, IPv6, FQDN", s.AddressType))
	}
	for i, p := range s.Ports {
		if p.Port != nil && (*p.Port < 1 || *p.Port > 65535) {
			errs = append(errs, fmt.Errorf("ports[%d].port %d is not in 1-65535", i, *p.Port))
		}
		if p.Protocol != nil {
			switch *p.Protocol {
			case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
			default:
				errs = append(errs, fmt.Errorf("ports[%d].protocol %q is not one of TCP, UDP, SCTP", i, *p.Protocol))
			}
		}
	}
	for i, ep := range s.Endpoints {
		if len(ep.Addresses) == 0 {
			errs = append(errs, fmt.Errorf("endpoints[%d].addresses is empty", i))
		}
		if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		for j, a := range ep.Addresses {
			ip, err := netip.ParseAddr(a)
			switch {
			case err != nil:
				errs = append(errs, fmt.Errorf("endpoints[%d].addresses[%d]: %w", i, j, err))
			case ip.Is4() != (s.AddressType == discoveryv1.AddressTypeIPv4):
				errs = append(errs, fmt.Errorf("endpoints[%d].addresses[%d] %s does not match addressType %s", i, j, a, s.AddressType))
			}
		}
	}
	return joinErrors(errs)
}

// joinErrors keeps all problems of one object on one line, so each stays a
// single log record.
func joinErrors(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return errors.New(strings.Join(msgs, "; "))
}

// normalize gives a decoded object the identity the API server would
// (default namespace, none for cluster-scoped kinds) and drops fields copied
// from a cluster dump that would confuse the informers' bookkeeping.
func normalize(obj runtime.Object, key objectKey) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return
	}
	m.SetNamespace(key.Namespace)
	// The object tracker versions objects itself; a resourceVersion from a
	// dump would be taken by the reflector as its own.
	m.SetResourceVersion("")
	m.SetManagedFields(nil)
	if s, ok := obj.(*corev1.Secret); ok {
		// The API server merges the write-only stringData into data
		// (stringData winning) and defaults the type; hand-written TLS
		// Secrets often use stringData for the PEM text.
		for k, v := range s.StringData {
			if s.Data == nil {
				s.Data = make(map[string][]byte, len(s.StringData))
			}
			s.Data[k] = []byte(v)
		}
		s.StringData = nil
		if s.Type == "" {
			s.Type = corev1.SecretTypeOpaque
		}
	}
}
