package controller

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/nodegress/nodegress/l7proxy"
	"github.com/nodegress/nodegress/loader"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

type ingOpt func(*networkingv1.Ingress)

func ingress(name string, opts ...ingOpt) *networkingv1.Ingress {
	ns := "default"
	if n, rest, ok := strings.Cut(name, "/"); ok {
		ns, name = n, rest
	}
	ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: metav1.NewTime(t0)}}
	for _, o := range opts {
		o(ing)
	}
	return ing
}

func className(c string) ingOpt {
	return func(i *networkingv1.Ingress) { i.Spec.IngressClassName = ptr(c) }
}

func annotated(kv ...string) ingOpt {
	return func(i *networkingv1.Ingress) {
		if i.Annotations == nil {
			i.Annotations = map[string]string{}
		}
		for j := 0; j+1 < len(kv); j += 2 {
			i.Annotations[kv[j]] = kv[j+1]
		}
	}
}

func age(d time.Duration) ingOpt {
	return func(i *networkingv1.Ingress) { i.CreationTimestamp = metav1.NewTime(t0.Add(-d)) }
}

// backend is "svc:port", the port a number or a name; "resource" makes a
// resource backend.
func backend(s string) networkingv1.IngressBackend {
	if s == "resource" {
		return networkingv1.IngressBackend{Resource: &corev1.TypedLocalObjectReference{Kind: "Bucket", Name: "static"}}
	}
	name, p, _ := strings.Cut(s, ":")
	b := &networkingv1.IngressServiceBackend{Name: name}
	if n, err := fmt.Sscanf(p, "%d", &b.Port.Number); n != 1 || err != nil {
		b.Port.Name = p
	}
	return networkingv1.IngressBackend{Service: b}
}

func path(p string, pt networkingv1.PathType, to string) networkingv1.HTTPIngressPath {
	hp := networkingv1.HTTPIngressPath{Path: p, Backend: backend(to)}
	if pt != "" {
		hp.PathType = ptr(pt)
	}
	return hp
}

func rule(host string, paths ...networkingv1.HTTPIngressPath) ingOpt {
	return func(i *networkingv1.Ingress) {
		r := networkingv1.IngressRule{Host: host}
		if paths != nil {
			r.HTTP = &networkingv1.HTTPIngressRuleValue{Paths: paths}
		}
		i.Spec.Rules = append(i.Spec.Rules, r)
	}
}

func defaultBackend(to string) ingOpt {
	return func(i *networkingv1.Ingress) { b := backend(to); i.Spec.DefaultBackend = &b }
}

func withTLS(secret string, hosts ...string) ingOpt {
	return func(i *networkingv1.Ingress) {
		i.Spec.TLS = append(i.Spec.TLS, networkingv1.IngressTLS{Hosts: hosts, SecretName: secret})
	}
}

func ingressClass(name, controller string, isDefault bool) *networkingv1.IngressClass {
	c := &networkingv1.IngressClass{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       networkingv1.IngressClassSpec{Controller: controller},
	}
	if isDefault {
		c.Annotations = map[string]string{networkingv1.AnnotationIsDefaultIngressClass: "true"}
	}
	return c
}

// testCert returns a self-signed certificate and key in PEM for hosts.
func testCert(t testing.TB, hosts ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: hosts[0]},
		DNSNames:     hosts,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

func secret(ns, name string, typ corev1.SecretType, crt, key []byte) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Type:       typ,
		Data:       map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key},
	}
}

// ingressFixture is a small cluster: web (two named ports, endpoints on
// three nodes in two slices), api (one unnamed port), dns (UDP only), and
// TLS Secrets in two namespaces.
func ingressFixture(t testing.TB) IngressInput {
	crt, key := testCert(t, "web.example.com")
	otherCrt, otherKey := testCert(t, "other.example.com")
	ipv6Slice := epSlice("default", "web-v6", "web", addressType(discoveryv1.AddressTypeIPv6), slicePort("http", "", 8080), endpoint("fd00::1", "node-a", "", "", ""))
	return IngressInput{
		IngressClasses: []*networkingv1.IngressClass{
			ingressClass("nodegress", DefaultControllerName, false),
			ingressClass("nodegress-internal", DefaultControllerName, false),
			ingressClass("nginx", "k8s.io/ingress-nginx", false),
		},
		Services: []*corev1.Service{
			service("default", "web", corev1.ServiceTypeClusterIP,
				port("http", corev1.ProtocolTCP, 80, 0, intstr.FromString("http")),
				port("admin", corev1.ProtocolTCP, 81, 0, intstr.FromInt32(9090))),
			service("default", "api", corev1.ServiceTypeClusterIP, port("", corev1.ProtocolTCP, 8080, 0, intstr.FromInt32(8080))),
			service("default", "dns", corev1.ServiceTypeClusterIP, port("dns", corev1.ProtocolUDP, 53, 0, intstr.FromInt32(53))),
		},
		EndpointSlices: []*discoveryv1.EndpointSlice{
			epSlice("default", "web-1", "web", slicePort("http", "", 8080), slicePort("admin", "", 9090),
				endpoint("10.0.0.1", "node-a", "true", "true", "false"), targetPod("web-5d8f"),
				endpoint("10.0.1.1", "node-b", "", "", ""),
				endpoint("10.0.1.2", "node-b", "false", "true", "true"),   // terminating, still serving
				endpoint("10.0.1.3", "node-b", "false", "false", "false"), // not ready
			),
			epSlice("default", "web-2", "web", slicePort("http", "", 8080), endpoint("10.0.2.1", "node-c", "true", "", "")),
			ipv6Slice,
			// Same service name, other namespace: not web's.
			epSlice("other", "web-1", "web", slicePort("http", "", 8080), endpoint("10.9.9.9", "node-a", "", "", "")),
			epSlice("default", "api-1", "api", slicePort("", "", 8080), endpoint("10.0.3.1", "node-b", "", "", "")),
		},
		Secrets: []*corev1.Secret{
			secret("default", "web-tls", corev1.SecretTypeTLS, crt, key),
			secret("other", "other-tls", corev1.SecretTypeTLS, otherCrt, otherKey),
			secret("default", "bad-tls", corev1.SecretTypeTLS, []byte("not a certificate"), key),
			secret("default", "opaque", corev1.SecretTypeOpaque, crt, key),
		},
		NodeAddrs: []netip.Addr{addr("192.0.2.10")},
	}
}

// routeLines renders routes as "ingress host+path type -> upstream
// [options]" in Config order.
func routeLines(cfg l7proxy.Config) []string {
	var out []string
	for _, r := range cfg.Routes {
		pt := "Prefix"
		if r.PathType == l7proxy.PathExact {
			pt = "Exact"
		}
		s := fmt.Sprintf("%s %s%s %s -> %s", r.Ingress, r.Host, r.Path, pt, r.Upstream)
		if r.Options != (l7proxy.RouteOptions{}) {
			// Access control is checked in annotations_access_test.go.
			s += strings.Replace(fmt.Sprintf(" %+v", r.Options), " Access:<nil>", "", 1)
		}
		out = append(out, s)
	}
	return out
}

// upstreamLines renders upstreams as "name: endpoints" ("~" marks
// terminating endpoints).
func upstreamLines(cfg l7proxy.Config) []string {
	var out []string
	for _, u := range cfg.Upstreams {
		s := u.Name + ":"
		for _, e := range u.Endpoints {
			s += " " + e.Addr.String()
			if e.Terminating {
				s += "~"
			}
		}
		out = append(out, s)
	}
	return out
}

func certLines(cfg l7proxy.Config) []string {
	var out []string
	for _, c := range cfg.Certificates {
		out = append(out, c.Source+" "+strings.Join(c.Hosts, ",")+" "+c.Cert.Leaf.Subject.CommonName)
	}
	return out
}

// checkIssues matches warnings and skipped-notes against substrings: each
// want matches an issue and each issue matches a want.
func checkIssues(t *testing.T, errs []error, wantWarn, wantSkipped []string) {
	t.Helper()
	var warn, skipped []string
	for _, err := range errs {
		var oe *ObjectError
		if errors.As(err, &oe) && oe.Skipped {
			skipped = append(skipped, err.Error())
		} else {
			warn = append(warn, err.Error())
		}
	}
	match := func(kind string, got, want []string) {
		for _, w := range want {
			if !slices.ContainsFunc(got, func(g string) bool { return strings.Contains(g, w) }) {
				t.Errorf("no %s issue containing %q in %q", kind, w, got)
			}
		}
		for _, g := range got {
			if !slices.ContainsFunc(want, func(w string) bool { return strings.Contains(g, w) }) {
				t.Errorf("unexpected %s issue %q", kind, g)
			}
		}
	}
	match("warning", warn, wantWarn)
	if wantSkipped != nil {
		match("skipped", skipped, wantSkipped)
	}
}

func TestTranslateIngress(t *testing.T) {
	type want struct {
		routes    []string
		upstreams []string
		def       string
		certs     []string
		warn      []string
		skipped   []string // nil: not checked
	}
	webAll := "default/web:http: 10.0.0.1:8080 10.0.1.1:8080 10.0.1.2:8080~ 10.0.2.1:8080"
	tests := []struct {
		name      string
		ingresses []*networkingv1.Ingress
		classes   []*networkingv1.IngressClass // replaces the fixture's when set
		config    L7Config
		want      want
	}{
		{
			name:      "class by ingressClassName",
			ingresses: []*networkingv1.Ingress{ingress("web", className("nodegress"), rule("web.example.com", path("/", networkingv1.PathTypePrefix, "web:http")))},
			want: want{
				routes:    []string{"default/web web.example.com/ Prefix -> default/web:http"},
				upstreams: []string{webAll},
				skipped:   []string{},
			},
		},
		{
			name: "second class of ours, other classes and unknown classes ignored",
			ingresses: []*networkingv1.Ingress{
				ingress("internal", className("nodegress-internal"), rule("", path("/i", networkingv1.PathTypePrefix, "api:8080"))),
				ingress("nginx", className("nginx"), rule("", path("/n", networkingv1.PathTypePrefix, "web:http"))),
				ingress("gone", className("missing"), rule("", path("/g", networkingv1.PathTypePrefix, "web:http"))),
			},
			want: want{
				routes:    []string{"default/internal /i Prefix -> default/api:8080"},
				upstreams: []string{"default/api:8080: 10.0.3.1:8080"},
				skipped: []string{
					"Ingress default/nginx: ingress class nginx belongs to controller k8s.io/ingress-nginx, ignored",
					"Ingress default/gone: ingress class missing does not exist, ignored",
				},
			},
		},
		{
			name:      "no class and no default class: ignored",
			ingresses: []*networkingv1.Ingress{ingress("web", rule("", path("/", networkingv1.PathTypePrefix, "web:http")))},
			want:      want{skipped: []string{"Ingress default/web: no ingress class and none of nodegress's classes is the default"}},
		},
		{
			name: "no class, our class is the default: taken",
			classes: []*networkingv1.IngressClass{
				ingressClass("nodegress", DefaultControllerName, true),
				ingressClass("nginx", "k8s.io/ingress-nginx", false),
			},
			ingresses: []*networkingv1.Ingress{
				ingress("web", rule("", path("/", networkingv1.PathTypePrefix, "web:http"))),
				ingress("nginx", className("nginx"), rule("", path("/n", networkingv1.PathTypePrefix, "web:http"))),
			},
			want: want{
				routes:    []string{"default/web / Prefix -> default/web:http"},
				upstreams: []string{webAll},
				skipped:   []string{"default/nginx: ingress class nginx belongs to controller k8s.io/ingress-nginx"},
			},
		},
		{
			name: "no class, another controller's class is the default: ignored",
			classes: []*networkingv1.IngressClass{
				ingressClass("nodegress", DefaultControllerName, false),
				ingressClass("nginx", "k8s.io/ingress-nginx", true),
			},
			ingresses: []*networkingv1.Ingress{ingress("web", rule("", path("/", networkingv1.PathTypePrefix, "web:http")))},
			want:      want{skipped: []string{"Ingress default/web: no ingress class"}},
		},
		{
			name: "legacy annotation: nodegress or the name of our class; another value loses even to our default class",
			classes: []*networkingv1.IngressClass{
				ingressClass("nodegress-internal", DefaultControllerName, true),
				ingressClass("nginx", "k8s.io/ingress-nginx", false),
			},
			ingresses: []*networkingv1.Ingress{
				ingress("legacy", annotated(legacyClassAnnotation, "nodegress"), rule("", path("/l", networkingv1.PathTypePrefix, "api:8080"))),
				ingress("legacy-class", annotated(legacyClassAnnotation, "nodegress-internal"), rule("", path("/c", networkingv1.PathTypePrefix, "api:8080"))),
				ingress("legacy-nginx", annotated(legacyClassAnnotation, "nginx"), rule("", path("/n", networkingv1.PathTypePrefix, "api:8080"))),
			},
			want: want{
				routes: []string{
					"default/legacy /l Prefix -> default/api:8080",
					"default/legacy-class /c Prefix -> default/api:8080",
				},
				upstreams: []string{"default/api:8080: 10.0.3.1:8080"},
				skipped:   []string{`Ingress default/legacy-nginx: annotation kubernetes.io/ingress.class "nginx" is not nodegress's class`},
			},
		},
		{
			name: "ports by number and by name share the named port's upstream; unnamed port by number",
			ingresses: []*networkingv1.Ingress{ingress("web", className("nodegress"), rule("web.example.com",
				path("/by-name", networkingv1.PathTypePrefix, "web:http"),
				path("/by-number", networkingv1.PathTypePrefix, "web:80"),
				path("/admin", networkingv1.PathTypeExact, "web:81"),
				path("/api", networkingv1.PathTypePrefix, "api:8080"),
			))},
			want: want{
				routes: []string{
					"default/web web.example.com/by-name Prefix -> default/web:http",
					"default/web web.example.com/by-number Prefix -> default/web:http",
					"default/web web.example.com/admin Exact -> default/web:admin",
					"default/web web.example.com/api Prefix -> default/api:8080",
				},
				upstreams: []string{
					"default/api:8080: 10.0.3.1:8080",
					"default/web:admin: 10.0.0.1:9090 10.0.1.1:9090 10.0.1.2:9090~",
					webAll,
				},
			},
		},
		{
			name: "path types, rules without http or host, several hosts",
			ingresses: []*networkingv1.Ingress{ingress("web", className("nodegress"),
				rule("a.example.com", path("/x", networkingv1.PathTypeImplementationSpecific, "web:http"), path("", networkingv1.PathTypeImplementationSpecific, "web:http")),
				rule("no-http.example.com"),
				rule("*.example.com", path("/w", networkingv1.PathTypeExact, "web:http")),
				rule("", path("/any", "", "web:http")),
			)},
			want: want{
				routes: []string{
					"default/web a.example.com/x Prefix -> default/web:http",
					"default/web a.example.com/ Prefix -> default/web:http",
					"default/web *.example.com/w Exact -> default/web:http",
					"default/web /any Prefix -> default/web:http",
				},
				upstreams: []string{webAll},
			},
		},
		{
			name: "missing service or port: route to an upstream without endpoints; resource backend and UDP port",
			ingresses: []*networkingv1.Ingress{ingress("web", className("nodegress"), rule("",
				path("/gone", networkingv1.PathTypePrefix, "gone:80"),
				path("/gone2", networkingv1.PathTypePrefix, "gone:80"),
				path("/noport", networkingv1.PathTypePrefix, "web:8443"),
				path("/named", networkingv1.PathTypePrefix, "web:grpc"),
				path("/udp", networkingv1.PathTypePrefix, "dns:dns"),
				path("/bucket", networkingv1.PathTypePrefix, "resource"),
				path("/weird", "Regex", "web:http"),
			))},
			want: want{
				routes: []string{
					"default/web /gone Prefix -> default/gone:80",
					"default/web /gone2 Prefix -> default/gone:80",
					"default/web /noport Prefix -> default/web:8443",
					"default/web /named Prefix -> default/web:grpc",
					"default/web /udp Prefix -> default/dns:dns",
				},
				upstreams: []string{"default/dns:dns:", "default/gone:80:", "default/web:8443:", "default/web:grpc:"},
				warn: []string{
					"Ingress default/web: service default/gone not found; requests get 503",
					"Ingress default/web: service default/web has no port 8443; requests get 503",
					"Ingress default/web: service default/web has no port grpc; requests get 503",
					"Ingress default/web: service default/dns port dns is UDP, not TCP; requests get 503",
					"spec.rules[0].http.paths[5]: resource backend (Bucket static) is not supported; path not served",
					`spec.rules[0].http.paths[6]: unknown pathType "Regex"; path not served`,
				},
			},
		},
		{
			name: "defaultBackend of the oldest ingress",
			ingresses: []*networkingv1.Ingress{
				ingress("young", className("nodegress"), defaultBackend("web:http")),
				ingress("old", className("nodegress"), age(time.Hour), defaultBackend("api:8080")),
			},
			config: L7Config{DefaultBackendService: "default/web:admin"},
			want: want{
				def:       "default/api:8080",
				upstreams: []string{"default/api:8080: 10.0.3.1:8080"},
				skipped:   []string{"Ingress default/young: spec.defaultBackend not used: the older ingress default/old's is"},
			},
		},
		{
			name: "unusable defaultBackend: the next one",
			ingresses: []*networkingv1.Ingress{
				ingress("young", className("nodegress"), defaultBackend("web:http")),
				ingress("old", className("nodegress"), age(time.Hour), defaultBackend("resource")),
			},
			want: want{
				def:       "default/web:http",
				upstreams: []string{webAll},
				warn:      []string{"Ingress default/old: spec.defaultBackend: resource backend (Bucket static) is not supported; not used"},
			},
		},
		{
			name:      "cluster-wide default backend without an ingress's",
			ingresses: []*networkingv1.Ingress{ingress("web", className("nodegress"), rule("", path("/", networkingv1.PathTypePrefix, "api:8080")))},
			config:    L7Config{DefaultBackendService: "default/web:80"},
			want: want{
				routes:    []string{"default/web / Prefix -> default/api:8080"},
				def:       "default/web:http",
				upstreams: []string{"default/api:8080: 10.0.3.1:8080", webAll},
			},
		},
		{
			name:   "cluster-wide default backend missing",
			config: L7Config{DefaultBackendService: "default/nope:http"},
			want: want{
				def:       "default/nope:http",
				upstreams: []string{"default/nope:http:"},
				warn:      []string{"Service default/nope: default backend service: service default/nope not found; unmatched requests get 503"},
			},
		},
		{
			name: "TLS: secret of the ingress's namespace only; invalid or missing keeps the ingress served",
			ingresses: []*networkingv1.Ingress{
				ingress("web", className("nodegress"),
					withTLS("web-tls", "web.example.com"),
					withTLS("other-tls", "other.example.com"), // exists in namespace other only
					withTLS("bad-tls", "bad.example.com"),
					withTLS("opaque", "opaque.example.com"),
					withTLS("", "default-cert.example.com"),
					rule("web.example.com", path("/", networkingv1.PathTypePrefix, "web:http"))),
				ingress("other/app", className("nodegress"), withTLS("other-tls"),
					rule("other.example.com", path("/", networkingv1.PathTypePrefix, "web:http"))),
			},
			want: want{
				routes: []string{
					"default/web web.example.com/ Prefix -> default/web:http",
					"other/app other.example.com/ Prefix -> other/web:http",
				},
				upstreams: []string{webAll, "other/web:http:"},
				certs:     []string{"default/web-tls web.example.com web.example.com", "other/other-tls  other.example.com"},
				warn: []string{
					"Ingress default/web: spec.tls[1]: secret default/other-tls: no kubernetes.io/tls secret of that name in the ingress's namespace; its hosts get the default certificate",
					"Ingress default/web: spec.tls[2]: secret default/bad-tls: tls.crt: no PEM data found",
					"Ingress default/web: spec.tls[3]: secret default/opaque: no kubernetes.io/tls secret",
					"Ingress other/app: service other/web not found",
				},
			},
		},
		{
			name: "valid annotations: route options and upstream settings",
			ingresses: []*networkingv1.Ingress{
				ingress("grpc", className("nodegress"), annotated(
					AnnotationBackendProtocol, "GRPC",
					AnnotationLoadBalance, "least_request",
					AnnotationSSLRedirect, "true",
					AnnotationProxyBodySize, "0",
					AnnotationProxyConnectTimeout, "2s",
					AnnotationProxyReadTimeout, "300",
					AnnotationProxyIdleTimeout, "90s",
				), rule("grpc.example.com", path("/", networkingv1.PathTypePrefix, "web:http"))),
				ingress("tls", className("nodegress"), annotated(AnnotationBackendProtocol, "https", AnnotationProxyBodySize, "8m"),
					rule("tls.example.com", path("/", networkingv1.PathTypePrefix, "web:http"))),
				ingress("plain", className("nodegress"), rule("plain.example.com", path("/", networkingv1.PathTypePrefix, "web:http"))),
				ingress("pp", className("nodegress"), annotated(AnnotationProxyProtocol, "v2"),
					rule("pp.example.com", path("/", networkingv1.PathTypePrefix, "web:http"))),
			},
			want: want{
				routes: []string{
					"default/grpc grpc.example.com/ Prefix -> default/web:http/h2c/least_request/connect=2s/read=5m0s/idle=1m30s {SSLRedirect:true MaxBodyBytes:-1}",
					"default/plain plain.example.com/ Prefix -> default/web:http",
					"default/pp pp.example.com/ Prefix -> default/web:http/proxy-protocol=v2",
					"default/tls tls.example.com/ Prefix -> default/web:http/https {SSLRedirect:false MaxBodyBytes:8388608}",
				},
				upstreams: []string{
					webAll,
					"default/web:http/h2c/least_request/connect=2s/read=5m0s/idle=1m30s: 10.0.0.1:8080 10.0.1.1:8080 10.0.1.2:8080~ 10.0.2.1:8080",
					"default/web:http/https: 10.0.0.1:8080 10.0.1.1:8080 10.0.1.2:8080~ 10.0.2.1:8080",
					"default/web:http/proxy-protocol=v2: 10.0.0.1:8080 10.0.1.1:8080 10.0.1.2:8080~ 10.0.2.1:8080",
				},
			},
		},
		{
			name: "invalid annotation disables the ingress, defaultBackend and TLS included; unknown ones warn",
			ingresses: []*networkingv1.Ingress{
				ingress("bad", className("nodegress"), age(time.Hour), annotated(AnnotationProxyBodySize, "8x"),
					defaultBackend("web:http"), withTLS("web-tls", "web.example.com"),
					rule("web.example.com", path("/", networkingv1.PathTypePrefix, "web:http"))),
				ingress("typo", className("nodegress"), annotated(AnnotationPrefix+"ssl-redirct", "true"),
					rule("typo.example.com", path("/", networkingv1.PathTypePrefix, "api:8080"))),
			},
			want: want{
				routes:    []string{"default/typo typo.example.com/ Prefix -> default/api:8080"},
				upstreams: []string{"default/api:8080: 10.0.3.1:8080"},
				warn: []string{
					`Ingress default/bad: annotation nodegress.io/proxy-body-size: invalid value "8x": want bytes or a number with a k, m or g suffix; ingress not served`,
					"Ingress default/typo: unknown annotation nodegress.io/ssl-redirct ignored",
				},
			},
		},
	}
	for _, ann := range []string{AnnotationSSLRedirect, AnnotationBackendProtocol, AnnotationLoadBalance, AnnotationProxyBodySize,
		AnnotationProxyConnectTimeout, AnnotationProxyReadTimeout, AnnotationProxyIdleTimeout, AnnotationProxyProtocol} {
		tests = append(tests, struct {
			name      string
			ingresses []*networkingv1.Ingress
			classes   []*networkingv1.IngressClass
			config    L7Config
			want      want
		}{
			name:      "invalid " + ann,
			ingresses: []*networkingv1.Ingress{ingress("web", className("nodegress"), annotated(ann, "bogus"), rule("", path("/", networkingv1.PathTypePrefix, "web:http")))},
			want:      want{warn: []string{"Ingress default/web: annotation " + ann + `: invalid value "bogus"`}},
		})
	}

	fixture := ingressFixture(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := fixture
			in.Ingresses = tt.ingresses
			if tt.classes != nil {
				in.IngressClasses = tt.classes
			}
			in.Config = tt.config
			cfg, _, errs := TranslateIngress(in)
			if got := routeLines(cfg); !slices.Equal(got, tt.want.routes) {
				t.Errorf("routes:\n got %q\nwant %q", got, tt.want.routes)
			}
			if got := upstreamLines(cfg); !slices.Equal(got, tt.want.upstreams) {
				t.Errorf("upstreams:\n got %q\nwant %q", got, tt.want.upstreams)
			}
			if cfg.DefaultUpstream != tt.want.def {
				t.Errorf("default upstream %q, want %q", cfg.DefaultUpstream, tt.want.def)
			}
			if got := certLines(cfg); !slices.Equal(got, tt.want.certs) {
				t.Errorf("certificates:\n got %q\nwant %q", got, tt.want.certs)
			}
			checkIssues(t, errs, tt.want.warn, tt.want.skipped)
			// Whatever the controller produces, the proxy must accept.
			if _, cerrs := l7proxy.Compile(cfg); len(cerrs) > 0 {
				t.Errorf("proxy rejects the configuration: %v", cerrs)
			}
		})
	}
}

func TestTranslateIngressUpstreamFields(t *testing.T) {
	in := ingressFixture(t)
	in.Ingresses = []*networkingv1.Ingress{ingress("grpc", className("nodegress"), annotated(
		AnnotationBackendProtocol, "h2c", AnnotationLoadBalance, "least_request",
		AnnotationProxyConnectTimeout, "2s", AnnotationProxyReadTimeout, "300", AnnotationProxyIdleTimeout, "90s",
	), defaultBackend("web:http"))}
	cfg, _, errs := TranslateIngress(in)
	if len(errs) > 0 {
		t.Fatalf("unexpected issues: %v", errs)
	}
	want := l7proxy.Upstream{
		Name:      "default/web:http/h2c/least_request/connect=2s/read=5m0s/idle=1m30s",
		Namespace: "default", Service: "web", Port: "http",
		Protocol: l7proxy.ProtocolH2C, Balance: l7proxy.LeastRequest,
		Endpoints: []l7proxy.Endpoint{
			// The pod from the endpoint's targetRef, the node from its
			// nodeName, for request traces.
			{Addr: netip.MustParseAddrPort("10.0.0.1:8080"), Pod: "default/web-5d8f", Node: "node-a"},
			{Addr: netip.MustParseAddrPort("10.0.1.1:8080"), Node: "node-b"},
			{Addr: netip.MustParseAddrPort("10.0.1.2:8080"), Terminating: true, Node: "node-b"},
			{Addr: netip.MustParseAddrPort("10.0.2.1:8080"), Node: "node-c"},
		},
		ConnectTimeout: 2 * time.Second, ReadTimeout: 300 * time.Second, IdleTimeout: 90 * time.Second,
	}
	if len(cfg.Upstreams) != 1 || !reflect.DeepEqual(cfg.Upstreams[0], want) {
		t.Errorf("upstreams %+v\nwant [%+v]", cfg.Upstreams, want)
	}
	if cfg.DefaultUpstream != want.Name {
		t.Errorf("default upstream %q, want %q", cfg.DefaultUpstream, want.Name)
	}
}

// TestTranslateIngressConflicts checks, through the real router, that the
// oldest Ingress keeps a contested host and path, with names breaking ties.
func TestTranslateIngressConflicts(t *testing.T) {
	in := ingressFixture(t)
	crtA, keyA := testCert(t, "shop.example.com")
	crtB, keyB := testCert(t, "shop.example.com")
	in.Secrets = append(in.Secrets,
		secret("default", "a-tls", corev1.SecretTypeTLS, crtA, keyA),
		secret("default", "b-tls", corev1.SecretTypeTLS, crtB, keyB))
	in.Ingresses = []*networkingv1.Ingress{
		// Newest, and first by name: must not take anything over.
		ingress("a-new", className("nodegress"), withTLS("a-tls", "shop.example.com"),
			rule("shop.example.com", path("/", networkingv1.PathTypePrefix, "api:8080"), path("/new", networkingv1.PathTypePrefix, "api:8080"))),
		ingress("z-old", className("nodegress"), age(time.Hour), withTLS("b-tls", "shop.example.com"),
			rule("shop.example.com", path("/", networkingv1.PathTypePrefix, "web:http"))),
		// Same age as b-same: the name decides.
		ingress("c-same", className("nodegress"), age(time.Minute), rule("shop.example.com", path("/same", networkingv1.PathTypeExact, "web:admin"))),
		ingress("b-same", className("nodegress"), age(time.Minute), rule("shop.example.com", path("/same", networkingv1.PathTypeExact, "web:http"))),
	}
	cfg, _, errs := TranslateIngress(in)
	checkIssues(t, errs, nil, nil)
	wantOrder := []string{"default/z-old", "default/b-same", "default/c-same", "default/a-new", "default/a-new"}
	var order []string
	for _, r := range cfg.Routes {
		order = append(order, r.Ingress)
	}
	if !slices.Equal(order, wantOrder) {
		t.Errorf("route order %q, want %q", order, wantOrder)
	}
	if len(cfg.Certificates) != 2 || cfg.Certificates[0].Source != "default/b-tls" {
		t.Errorf("certificates not oldest first: %q", certLines(cfg))
	}

	table, cerrs := l7proxy.Compile(cfg)
	if len(cerrs) != 2 {
		t.Errorf("want 2 conflicts reported by the router, got %v", cerrs)
	}
	for _, tc := range []struct{ path, ingress, upstream string }{
		{"/", "default/z-old", "default/web:http"},
		{"/x", "default/z-old", "default/web:http"},
		{"/new/1", "default/a-new", "default/api:8080"},
		{"/same", "default/b-same", "default/web:http"},
	} {
		m, ok := table.Match("shop.example.com", tc.path)
		if !ok || m.Ingress != tc.ingress || m.Upstream == nil || m.Upstream.Name != tc.upstream {
			t.Errorf("%s: matched %v %s %v, want %s -> %s", tc.path, ok, m.Ingress, m.Upstream, tc.ingress, tc.upstream)
		}
	}
}

func TestTranslateIngressFrontends(t *testing.T) {
	lb := func(ns, name string, ips ...string) *corev1.Service {
		s := service(ns, name, corev1.ServiceTypeLoadBalancer, port("http", corev1.ProtocolTCP, 80, 30080, intstr.FromInt32(80)), lbIPs(ips...))
		s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress,
			corev1.LoadBalancerIngress{IP: "203.0.113.99", IPMode: ptr(corev1.LoadBalancerIPModeProxy)},
			corev1.LoadBalancerIngress{Hostname: "lb.example.net"})
		return s
	}
	l7 := func(name, listener string, port uint16, addrs ...string) loader.Service {
		s := loader.Service{Name: name, Proto: loader.TCP, L7: true, ProxyListener: listener}
		for _, a := range addrs {
			s.Frontends = append(s.Frontends, fe(a, port))
		}
		return s
	}
	tests := []struct {
		name     string
		nodeAddr []string
		services []*corev1.Service
		config   L7Config
		want     []loader.Service
		warn     []string
	}{
		{
			name:     "node addresses on the default ports, even without ingresses",
			nodeAddr: []string{"192.0.2.11", "192.0.2.10", "2001:db8::1"},
			want: []loader.Service{
				l7(L7ServiceHTTP, ListenerHTTP, 80, "192.0.2.10", "192.0.2.11"),
				l7(L7ServiceHTTPS, ListenerHTTPS, 443, "192.0.2.10", "192.0.2.11"),
			},
		},
		{
			name:     "publish service load balancer IPs, other ports",
			nodeAddr: []string{"192.0.2.10"},
			services: []*corev1.Service{lb("ingress", "nodegress", "198.51.100.7", "192.0.2.10"), lb("default", "other", "198.51.100.8")},
			config:   L7Config{HTTPPort: 8080, HTTPSPort: 8443, PublishService: "ingress/nodegress"},
			want: []loader.Service{
				l7(L7ServiceHTTP, ListenerHTTP, 8080, "192.0.2.10", "198.51.100.7"),
				l7(L7ServiceHTTPS, ListenerHTTPS, 8443, "192.0.2.10", "198.51.100.7"),
			},
		},
		{
			name:     "publish service missing: node addresses only",
			nodeAddr: []string{"192.0.2.10"},
			config:   L7Config{PublishService: "ingress/nodegress"},
			want: []loader.Service{
				l7(L7ServiceHTTP, ListenerHTTP, 80, "192.0.2.10"),
				l7(L7ServiceHTTPS, ListenerHTTPS, 443, "192.0.2.10"),
			},
			warn: []string{"Service ingress/nodegress: publish service not found"},
		},
		{
			name: "no address at all: nothing",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := IngressInput{Services: tt.services, Config: tt.config}
			for _, a := range tt.nodeAddr {
				in.NodeAddrs = append(in.NodeAddrs, addr(a))
			}
			_, got, errs := TranslateIngress(in)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
			checkIssues(t, errs, tt.warn, nil)
		})
	}
}

// TestL7FrontendsWinOverServices checks the merge the controller does: L4
// frontends on an L7 frontend are dropped, quietly for the published
// Service itself.
func TestL7FrontendsWinOverServices(t *testing.T) {
	node := NodeInfo{Name: "node-a", Addrs: []netip.Addr{addr("192.0.2.10")}}
	publish := service("ingress", "nodegress", corev1.ServiceTypeLoadBalancer,
		port("http", corev1.ProtocolTCP, 80, 30080, intstr.FromInt32(80)),
		port("https", corev1.ProtocolTCP, 443, 30443, intstr.FromInt32(443)),
		lbIPs("198.51.100.7"))
	squatter := service("default", "squatter", corev1.ServiceTypeClusterIP,
		port("web", corev1.ProtocolTCP, 80, 0, intstr.FromInt32(8080)),
		port("dns", corev1.ProtocolUDP, 80, 0, intstr.FromInt32(8080)), // UDP/80 is free
		externalIPs("192.0.2.10"))
	squatter.CreationTimestamp = metav1.NewTime(t0.Add(-time.Hour)) // older than everything: still loses
	svcs := []*corev1.Service{publish, squatter}
	_, l7, _ := TranslateIngress(IngressInput{Services: svcs, NodeAddrs: node.Addrs, Config: L7Config{PublishService: "ingress/nodegress"}})
	got, errs := translate(node, svcs, nil, l7, "ingress/nodegress")

	var names []string
	for _, s := range got {
		var fes []string
		for _, f := range s.Frontends {
			fes = append(fes, f.String())
		}
		names = append(names, s.Name+" "+strings.Join(fes, ","))
	}
	want := []string{
		"default/squatter:dns/UDP 192.0.2.10:80",
		"ingress/nodegress:http/TCP 192.0.2.10:30080",
		"ingress/nodegress:https/TCP 192.0.2.10:30443",
	}
	if !slices.Equal(names, want) {
		t.Errorf("services\n got %q\nwant %q", names, want)
	}
	checkIssues(t, errs,
		[]string{"Service default/squatter port web: frontend 192.0.2.10:80/TCP already used by l7/http, skipped"},
		[]string{
			"Service ingress/nodegress port http: frontend 198.51.100.7:80/TCP already used by l7/http",
			"Service ingress/nodegress port https: frontend 198.51.100.7:443/TCP already used by l7/https",
		})
}

func TestCertCache(t *testing.T) {
	crt, key := testCert(t, "a.example.com")
	c := newCertCache()
	first, err := c.parse(crt, key)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := c.parse(crt, key); again != first {
		t.Error("same content parsed twice")
	}
	if _, err := c.parse([]byte("junk"), key); err == nil {
		t.Error("invalid certificate accepted")
	}
	if len(c.entries) != 2 {
		t.Errorf("%d entries, want 2", len(c.entries))
	}
	c.sweep()         // both were used
	c.parse(crt, key) // only this one is used in the next round
	c.sweep()
	if len(c.entries) != 1 {
		t.Errorf("%d entries after sweep, want 1", len(c.entries))
	}
	if again, _ := c.parse(crt, key); again != first {
		t.Error("used entry dropped by sweep")
	}
}

func TestL7ConfigValidate(t *testing.T) {
	tests := []struct {
		cfg     L7Config
		wantErr string
	}{
		{L7Config{}, ""},
		{L7Config{PublishService: "ingress/nodegress", DefaultBackendService: "default/fallback:http"}, ""},
		{L7Config{DefaultBackendService: "default/fallback:8080"}, ""},
		{L7Config{HTTPPort: 8080, HTTPSPort: 8080}, "http and https ports are both 8080"},
		{L7Config{PublishService: "nodegress"}, "want namespace/name"},
		{L7Config{PublishService: "ingress/Node_gress"}, "service name"},
		{L7Config{DefaultBackendService: "default/fallback"}, "want namespace/name:port"},
		{L7Config{DefaultBackendService: "default/fallback:0"}, "not in 1-65535"},
		{L7Config{DefaultBackendService: "default/fallback:-http"}, "port"},
	}
	for _, tt := range tests {
		err := tt.cfg.withDefaults().validate()
		if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("%+v: err %v, want %q", tt.cfg, err, tt.wantErr)
		}
	}
}

// fakeProxy records the configurations the controller hands the proxy.
type fakeProxy struct {
	mu    sync.Mutex
	calls []l7proxy.Config
	errs  []error // returned by every Update
}

func (p *fakeProxy) Update(cfg l7proxy.Config) []error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, cfg)
	return p.errs
}

func (p *fakeProxy) updates() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.calls)
}

func (p *fakeProxy) last() l7proxy.Config {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.calls) == 0 {
		return l7proxy.Config{}
	}
	return p.calls[len(p.calls)-1]
}

const ingressClassYAML = `apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: nodegress
spec:
  controller: nodegress.io/ingress-controller
`

func webIngressYAML(annotations string, paths ...string) string {
	s := `apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  annotations: {` + annotations + `}
spec:
  ingressClassName: nodegress
  tls:
  - hosts: [web.example.com]
    secretName: web-tls
  rules:
  - host: web.example.com
    http:
      paths:
`
	for _, p := range paths {
		s += "      - path: " + p + "\n        pathType: Prefix\n        backend:\n          service:\n            name: web\n            port:\n              name: http\n"
	}
	return s
}

func tlsSecretYAML(t *testing.T) string {
	crt, key := testCert(t, "web.example.com")
	indent := func(b []byte) string {
		return "    " + strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", "\n    ")
	}
	return "apiVersion: v1\nkind: Secret\nmetadata:\n  name: web-tls\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n" +
		indent(crt) + "\n  tls.key: |\n" + indent(key) + "\n"
}

func TestStandaloneIngress(t *testing.T) {
	dir := t.TempDir()
	ingFile := filepath.Join(dir, "ingress.yaml")
	writeFile(t, filepath.Join(dir, "web.yaml"), webService+"---\n"+webSlice)
	writeFile(t, filepath.Join(dir, "tls.yaml"), tlsSecretYAML(t)+"---\n"+ingressClassYAML)
	writeFile(t, ingFile, webIngressYAML("", "/"))

	log, logs := testLogger(t)
	proxy := &fakeProxy{errs: []error{errors.New("route conflict of the day")}}
	dp := &fakeDatapath{}
	c, err := New(Config{
		NodeName:      "node-a",
		NodeIPs:       []netip.Addr{netip.MustParseAddr("192.0.2.10")},
		StandaloneDir: dir,
		Logger:        log,
		L7:            &L7Config{Proxy: proxy},
	}, dp)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(waitLimit):
			t.Errorf("Run did not return within %v of cancel", waitLimit)
		}
	}()
	select {
	case <-c.Synced():
	case <-time.After(waitLimit):
		t.Fatal("no initial sync")
	}

	// The proxy is configured before the datapath steers to it: by the
	// time Synced is closed, both have the complete initial state.
	if n := proxy.updates(); n != 1 {
		t.Fatalf("%d proxy updates at initial sync, want 1", n)
	}
	cfg := proxy.last()
	wantRoutes := []string{"default/web web.example.com/ Prefix -> default/web:http"}
	if got := routeLines(cfg); !slices.Equal(got, wantRoutes) {
		t.Errorf("routes %q, want %q", got, wantRoutes)
	}
	if got, want := upstreamLines(cfg), []string{"default/web:http: 10.0.0.1:8080"}; !slices.Equal(got, want) {
		t.Errorf("upstreams %q, want %q", got, want)
	}
	if got, want := certLines(cfg), []string{"default/web-tls web.example.com web.example.com"}; !slices.Equal(got, want) {
		t.Errorf("certificates %q, want %q", got, want)
	}
	for _, name := range []string{L7ServiceHTTP, L7ServiceHTTPS} {
		s, ok := findService(dp.last(), name)
		if !ok || !s.L7 || len(s.Frontends) != 1 || s.Frontends[0].Addr != addr("192.0.2.10") {
			t.Errorf("datapath %s: %+v", name, s)
		}
	}
	if _, ok := findService(dp.last(), "default/web:http/TCP"); !ok {
		t.Errorf("L4 service missing next to the L7 ones: %+v", dp.last())
	}

	hasPaths := func(paths ...string) func() bool {
		return func() bool {
			var got []string
			for _, r := range proxy.last().Routes {
				got = append(got, r.Path)
			}
			return slices.Equal(got, paths)
		}
	}
	writeAtomic(t, ingFile, webIngressYAML("", "/", "/api"))
	if took := waitFor(t, "new path at the proxy", waitLimit, hasPaths("/", "/api")); took > time.Second {
		t.Errorf("ingress change reached the proxy after %v, want < 1s", took)
	}

	// A change that does not concern the proxy leaves it alone.
	updates := proxy.updates()
	applies := len(dp.snapshot())
	writeFile(t, filepath.Join(dir, "other.yaml"), otherService)
	waitFor(t, "unrelated service applied", waitLimit, func() bool { return len(dp.snapshot()) > applies })
	time.Sleep(200 * time.Millisecond)
	if n := proxy.updates(); n != updates {
		t.Errorf("unrelated change made %d proxy updates", n-updates)
	}

	// An invalid annotation takes the Ingress out, with a log line naming
	// it, the annotation and the value; fixing it brings it back.
	writeAtomic(t, ingFile, webIngressYAML(AnnotationProxyBodySize+": 8x", "/", "/api"))
	if took := waitFor(t, "ingress disabled", waitLimit, hasPaths()); took > time.Second {
		t.Errorf("invalid ingress removed after %v, want < 1s", took)
	}
	if len(logs.lines("level=WARN", "invalid object", "object=default/web", "annotation="+AnnotationProxyBodySize, "value=8x", "ingress not served")) != 1 {
		t.Errorf("invalid annotation not logged exactly once")
	}
	writeAtomic(t, ingFile, webIngressYAML(AnnotationProxyBodySize+": 8m", "/"))
	waitFor(t, "ingress back", waitLimit, hasPaths("/"))
	if got := proxy.last().Routes[0].Options.MaxBodyBytes; got != 8<<20 {
		t.Errorf("MaxBodyBytes %d, want %d", got, 8<<20)
	}

	// What the proxy reports is logged once, not at every sync.
	if n := len(logs.lines("proxy configuration", "route conflict of the day")); n != 1 {
		t.Errorf("proxy error logged %d times, want 1", n)
	}

	if err := os.Remove(ingFile); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "routes of a removed ingress gone", waitLimit, hasPaths())
	if _, ok := findService(dp.last(), L7ServiceHTTP); !ok {
		t.Error("L7 frontends must stay without ingresses")
	}
}
