package harness

import (
	"crypto/tls"
	"crypto/x509"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"

	"github.com/nodegress/nodegress/tests/harness/testcert"
)

// TestIngressYAML decodes the generated Ingress, IngressClass and Secret
// documents strictly into the Kubernetes types, as TestServiceYAML does for
// Services.
func TestIngressYAML(t *testing.T) {
	ing := Ingress{
		Name:           "web",
		Namespace:      "apps",
		CreatedAt:      "2024-01-02T03:04:05Z",
		Annotations:    map[string]string{"nodegress.io/ssl-redirect": "true", "nodegress.io/proxy-body-size": "8m"},
		DefaultBackend: &IngressBackend{Service: "fallback", PortName: "http"},
		TLS:            []IngressTLS{{Hosts: []string{"a.test", "*.b.test"}, SecretName: "cert"}},
		Rules: []IngressRule{
			{Host: "*.b.test", Paths: []IngressPath{{Path: "/api", PathType: "Exact", Backend: IngressBackend{Service: "api", Port: 80}}}},
			{Paths: []IngressPath{{Path: "/", Backend: IngressBackend{Service: "web", PortName: "http"}}}},
		},
	}
	var got networkingv1.Ingress
	if err := yaml.UnmarshalStrict([]byte(ing.YAML()), &got); err != nil {
		t.Fatalf("%v\n%s", err, ing.YAML())
	}
	if got.Kind != "Ingress" || got.Namespace != "apps" || got.CreationTimestamp.Year() != 2024 {
		t.Errorf("metadata: %+v", got.ObjectMeta)
	}
	if got.Annotations["nodegress.io/ssl-redirect"] != "true" || got.Annotations["nodegress.io/proxy-body-size"] != "8m" {
		t.Errorf("annotations: %v", got.Annotations)
	}
	if got.Spec.IngressClassName == nil || *got.Spec.IngressClassName != IngressClassName {
		t.Errorf("ingressClassName: %v", got.Spec.IngressClassName)
	}
	if db := got.Spec.DefaultBackend; db == nil || db.Service.Name != "fallback" || db.Service.Port.Name != "http" {
		t.Errorf("defaultBackend: %+v", db)
	}
	if tl := got.Spec.TLS; len(tl) != 1 || tl[0].SecretName != "cert" || len(tl[0].Hosts) != 2 || tl[0].Hosts[1] != "*.b.test" {
		t.Errorf("tls: %+v", tl)
	}
	r := got.Spec.Rules
	if len(r) != 2 || r[0].Host != "*.b.test" || r[1].Host != "" {
		t.Fatalf("rules: %+v", r)
	}
	p := r[0].HTTP.Paths[0]
	if p.Path != "/api" || *p.PathType != networkingv1.PathTypeExact || p.Backend.Service.Name != "api" || p.Backend.Service.Port.Number != 80 {
		t.Errorf("path: %+v", p)
	}
	if p := r[1].HTTP.Paths[0]; *p.PathType != networkingv1.PathTypePrefix || p.Backend.Service.Port.Name != "http" {
		t.Errorf("default path type or port name: %+v", p)
	}

	noClass := Ingress{Name: "legacy", Class: "-", Annotations: map[string]string{"kubernetes.io/ingress.class": "nodegress"}}
	var legacy networkingv1.Ingress
	if err := yaml.UnmarshalStrict([]byte(noClass.YAML()), &legacy); err != nil {
		t.Fatalf("%v\n%s", err, noClass.YAML())
	}
	if legacy.Spec.IngressClassName != nil || legacy.Namespace != "default" {
		t.Errorf("class-less ingress: %+v", legacy)
	}

	var class networkingv1.IngressClass
	if err := yaml.UnmarshalStrict([]byte(IngressClassYAML("ng", IngressControllerName, true)), &class); err != nil {
		t.Fatal(err)
	}
	if class.Spec.Controller != IngressControllerName || class.Annotations[networkingv1.AnnotationIsDefaultIngressClass] != "true" {
		t.Errorf("ingress class: %+v", class)
	}

	ca, err := testcert.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue("a.test", "b.test")
	if err != nil {
		t.Fatal(err)
	}
	var sec corev1.Secret
	if err := yaml.UnmarshalStrict([]byte(TLSSecretYAML("apps", "cert", leaf.CertPEM, leaf.KeyPEM)), &sec); err != nil {
		t.Fatal(err)
	}
	if sec.Type != corev1.SecretTypeTLS || sec.Namespace != "apps" {
		t.Errorf("secret: %+v", sec.ObjectMeta)
	}
	pair, err := tls.X509KeyPair(sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		t.Fatalf("secret's key pair: %v", err)
	}
	if pair.Leaf == nil {
		t.Fatal("no leaf parsed")
	}
	if err := pair.Leaf.VerifyHostname("b.test"); err != nil {
		t.Error(err)
	}
	if _, err := leaf.Cert.Verify(x509VerifyOptions(ca, "a.test")); err != nil {
		t.Errorf("leaf does not verify against its CA: %v", err)
	}
}

func TestParseMetrics(t *testing.T) {
	text := `# HELP nodegress_http_requests_total HTTP requests.
# TYPE nodegress_http_requests_total counter
nodegress_http_requests_total{code="200",ingress="web",namespace="default",service="web"} 12
nodegress_http_requests_total{code="404",ingress="",namespace="",service=""} 1
odd{a="x\"y\\z",b="line\nbreak"} 1.5e+06
up 1
`
	ms, err := ParseMetrics([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 4 {
		t.Fatalf("got %d samples, want 4: %+v", len(ms), ms)
	}
	if m := ms[0]; m.Name != "nodegress_http_requests_total" || m.Labels["ingress"] != "web" || m.Labels["code"] != "200" || m.Value != 12 {
		t.Errorf("sample 0: %+v", m)
	}
	if m := ms[1]; m.Labels["ingress"] != "" || len(m.Labels) != 4 {
		t.Errorf("sample 1: %+v", m)
	}
	if m := ms[2]; m.Labels["a"] != `x"y\z` || m.Labels["b"] != "line\nbreak" || m.Value != 1.5e6 {
		t.Errorf("sample 2: %+v", m)
	}
	if m := ms[3]; m.Name != "up" || len(m.Labels) != 0 || m.Value != 1 {
		t.Errorf("sample 3: %+v", m)
	}
	if _, err := ParseMetrics([]byte(`x{a="1} 2`)); err == nil {
		t.Error("unterminated label value accepted")
	}
}

func x509VerifyOptions(ca *testcert.CA, host string) x509.VerifyOptions {
	return x509.VerifyOptions{Roots: ca.Pool(), DNSName: host}
}
