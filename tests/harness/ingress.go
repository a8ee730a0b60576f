package harness

import (
	"encoding/base64"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// IngressControllerName is the spec.controller of nodegress's
// IngressClasses (the agent's default --ingress-controller-name).
const IngressControllerName = "nodegress.io/ingress-controller"

// IngressClassName is the class IngressClassYAML creates by default and
// Ingresses use unless they name another.
const IngressClassName = "nodegress"

// IngressClassYAML is an IngressClass called name for controller.
func IngressClassYAML(name, controller string, isDefault bool) string {
	var ann string
	if isDefault {
		ann = "  annotations:\n    ingressclass.kubernetes.io/is-default-class: \"true\"\n"
	}
	return fmt.Sprintf(`apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: %s
%sspec:
  controller: %s
`, name, ann, controller)
}

// TLSSecretYAML is a kubernetes.io/tls Secret holding a certificate chain
// and its key, both PEM.
func TLSSecretYAML(namespace, name string, certPEM, keyPEM []byte) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata:
  name: %s
  namespace: %s
type: kubernetes.io/tls
data:
  tls.crt: %s
  tls.key: %s
`, name, namespace, base64.StdEncoding.EncodeToString(certPEM), base64.StdEncoding.EncodeToString(keyPEM))
}

// IngressBackend is a Service port, by number or, when PortName is set, by
// name.
type IngressBackend struct {
	Service  string
	Port     uint16
	PortName string
}

// IngressPath is one path of a rule. PathType is Exact, Prefix (default)
// or ImplementationSpecific.
type IngressPath struct {
	Path     string
	PathType string
	Backend  IngressBackend
}

// IngressRule is a host ("" for every host, "*.example.com" for one label
// of it) and its paths.
type IngressRule struct {
	Host  string
	Paths []IngressPath
}

// IngressTLS is one spec.tls entry.
type IngressTLS struct {
	Hosts      []string
	SecretName string
}

// Ingress describes an Ingress object.
type Ingress struct {
	Name string
	// Namespace defaults to "default".
	Namespace string
	// Class is spec.ingressClassName; empty means IngressClassName, "-"
	// means none.
	Class string
	// CreatedAt, when set, is metadata.creationTimestamp (RFC 3339): the
	// oldest Ingress wins conflicts.
	CreatedAt      string
	Annotations    map[string]string
	DefaultBackend *IngressBackend
	TLS            []IngressTLS
	Rules          []IngressRule
}

func (ing Ingress) namespace() string {
	if ing.Namespace == "" {
		return "default"
	}
	return ing.Namespace
}

// YAML returns the Ingress as one YAML document.
func (ing Ingress) YAML() string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: %s\n  namespace: %s\n", ing.Name, ing.namespace())
	if ing.CreatedAt != "" {
		fmt.Fprintf(&b, "  creationTimestamp: %q\n", ing.CreatedAt)
	}
	if len(ing.Annotations) > 0 {
		b.WriteString("  annotations:\n")
		keys := make([]string, 0, len(ing.Annotations))
		for k := range ing.Annotations {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			// Quoted: annotation values are strings, even "true" or "10".
			fmt.Fprintf(&b, "    %s: %s\n", k, strconv.Quote(ing.Annotations[k]))
		}
	}
	b.WriteString("spec:\n")
	switch ing.Class {
	case "":
		fmt.Fprintf(&b, "  ingressClassName: %s\n", IngressClassName)
	case "-":
	default:
		fmt.Fprintf(&b, "  ingressClassName: %s\n", ing.Class)
	}
	if ing.DefaultBackend != nil {
		b.WriteString("  defaultBackend:\n")
		writeBackend(&b, "    ", *ing.DefaultBackend)
	}
	if len(ing.TLS) > 0 {
		b.WriteString("  tls:\n")
		for _, t := range ing.TLS {
			b.WriteString("  - hosts:\n")
			for _, h := range t.Hosts {
				fmt.Fprintf(&b, "    - %q\n", h)
			}
			if t.SecretName != "" {
				fmt.Fprintf(&b, "    secretName: %s\n", t.SecretName)
			}
		}
	}
	if len(ing.Rules) > 0 {
		b.WriteString("  rules:\n")
		for _, r := range ing.Rules {
			if r.Host != "" {
				fmt.Fprintf(&b, "  - host: %q\n    http:\n", r.Host)
			} else {
				b.WriteString("  - http:\n")
			}
			b.WriteString("      paths:\n")
			for _, p := range r.Paths {
				pt := p.PathType
				if pt == "" {
					pt = "Prefix"
				}
				fmt.Fprintf(&b, "      - path: %q\n        pathType: %s\n        backend:\n", p.Path, pt)
				writeBackend(&b, "          ", p.Backend)
			}
		}
	}
	return b.String()
}

func writeBackend(b *strings.Builder, indent string, be IngressBackend) {
	fmt.Fprintf(b, "%sservice:\n%s  name: %s\n%s  port:\n", indent, indent, be.Service, indent)
	if be.PortName != "" {
		fmt.Fprintf(b, "%s    name: %s\n", indent, be.PortName)
	} else {
		fmt.Fprintf(b, "%s    number: %d\n", indent, be.Port)
	}
}
