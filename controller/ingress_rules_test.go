package controller

import (
	"net/http"
	"net/netip"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/nodegress/nodegress/l7proxy"
)

// TestTranslateRoutingAnnotations: what the routing annotations make of
// an Ingress's routes (path types, rules), and what is reported.
func TestTranslateRoutingAnnotations(t *testing.T) {
	const web = "default/web:http"
	to := func(up string) []l7proxy.WeightedBackend { return []l7proxy.WeightedBackend{{Upstream: up, Weight: 1}} }
	impl := networkingv1.PathTypeImplementationSpecific
	prefix := networkingv1.PathTypePrefix
	exact := networkingv1.PathTypeExact
	canaryIng := func(name string, kv ...string) *networkingv1.Ingress {
		return ingress(name, className("nodegress"), annotated(append([]string{ngx + "canary", "true"}, kv...)...),
			rule("shop.example.com", path("/", prefix, "api:8080")))
	}
	mainIng := ingress("main", className("nodegress"), age(time.Hour), rule("shop.example.com", path("/", prefix, "web:http")))
	tests := []struct {
		name      string
		ingresses []*networkingv1.Ingress
		want      []l7proxy.Route
		warn      []string
		skipped   []string
	}{
		{
			name: "rewrite-target makes regex paths and rewrites by groups",
			ingresses: []*networkingv1.Ingress{ingress("rw", className("nodegress"), annotated(ngx+"rewrite-target", "/$2"),
				rule("rw.example.com", path("/something(/|$)(.*)", impl, "web:http"), path("/x", exact, "web:http")))},
			want: []l7proxy.Route{
				{Host: "rw.example.com", Path: "/something(/|$)(.*)", PathType: l7proxy.PathRegex, Upstream: web, Ingress: "default/rw",
					Rules: []l7proxy.HTTPRouteRule{{Backends: to(web), Filters: l7proxy.Filters{Rewrite: &l7proxy.Rewrite{
						Path: &l7proxy.PathModifier{ReplaceRegexMatch: true, Pattern: "/something(/|$)(.*)", Value: "/$2"}}}}}},
				{Host: "rw.example.com", Path: "/x", PathType: l7proxy.PathExact, Upstream: web, Ingress: "default/rw",
					Rules: []l7proxy.HTTPRouteRule{{Backends: to(web), Filters: l7proxy.Filters{Rewrite: &l7proxy.Rewrite{
						Path: &l7proxy.PathModifier{ReplaceRegexMatch: true, Pattern: "/x", Value: "/$2"}}}}}},
			},
		},
		{
			name: "use-regex alone: regex paths without rules",
			ingresses: []*networkingv1.Ingress{ingress("re", className("nodegress"), annotated(AnnotationPrefix+"use-regex", "true"),
				rule("", path("/api/v[0-9]+", prefix, "web:http")))},
			want: []l7proxy.Route{{Path: "/api/v[0-9]+", PathType: l7proxy.PathRegex, Upstream: web, Ingress: "default/re"}},
		},
		{
			name: "invalid regex path is not served",
			ingresses: []*networkingv1.Ingress{ingress("re", className("nodegress"), annotated(ngx+"use-regex", "true"),
				rule("", path("/a(", impl, "web:http"), path("/b", impl, "web:http")))},
			want: []l7proxy.Route{{Path: "/b", PathType: l7proxy.PathRegex, Upstream: web, Ingress: "default/re"}},
			warn: []string{"spec.rules[0].http.paths[0]: path is not an RE2 regular expression"},
		},
		{
			name: "temporal redirect wins over permanent; force-ssl-redirect",
			ingresses: []*networkingv1.Ingress{ingress("r", className("nodegress"), annotated(ngx+"permanent-redirect", "https://p.example",
				ngx+"temporal-redirect", "https://t.example/x", ngx+"temporal-redirect-code", "307", ngx+"force-ssl-redirect", "true"),
				rule("", path("/", prefix, "web:http")))},
			want: []l7proxy.Route{{Path: "/", Upstream: web, Ingress: "default/r", Options: l7proxy.RouteOptions{SSLRedirect: true},
				Rules: []l7proxy.HTTPRouteRule{{Filters: l7proxy.Filters{Redirect: &l7proxy.Redirect{Location: "https://t.example/x", StatusCode: 307}}}}}},
		},
		{
			name: "permanent redirect default code",
			ingresses: []*networkingv1.Ingress{ingress("r", className("nodegress"), annotated(ngx+"permanent-redirect", "https://p.example"),
				rule("", path("/", prefix, "web:http")))},
			want: []l7proxy.Route{{Path: "/", Upstream: web, Ingress: "default/r",
				Rules: []l7proxy.HTTPRouteRule{{Filters: l7proxy.Filters{Redirect: &l7proxy.Redirect{Location: "https://p.example", StatusCode: http.StatusMovedPermanently}}}}}},
		},
		{
			name: "app-root: an Exact / per host, the Ingress's own Exact / left out",
			ingresses: []*networkingv1.Ingress{ingress("app", className("nodegress"), annotated(ngx+"app-root", "/app1"),
				rule("a.example.com", path("/", exact, "web:http"), path("/app1", prefix, "web:http")), rule("b.example.com", path("/", prefix, "web:http")))},
			want: []l7proxy.Route{
				{Host: "a.example.com", Path: "/", PathType: l7proxy.PathExact, Ingress: "default/app", Rules: appRootRules("/app1")},
				{Host: "b.example.com", Path: "/", PathType: l7proxy.PathExact, Ingress: "default/app", Rules: appRootRules("/app1")},
				{Host: "a.example.com", Path: "/app1", Upstream: web, Ingress: "default/app"},
				{Host: "b.example.com", Path: "/", Upstream: web, Ingress: "default/app"},
			},
			skipped: []string{"Exact / not served: app-root redirects it"},
		},
		{
			name: "upstream-vhost, x-forwarded-prefix and CORS defaults",
			ingresses: []*networkingv1.Ingress{ingress("h", className("nodegress"), annotated(ngx+"upstream-vhost", "in.example",
				ngx+"x-forwarded-prefix", "/shop", ngx+"enable-cors", "true"), rule("", path("/", prefix, "web:http")))},
			want: []l7proxy.Route{{Path: "/", Upstream: web, Ingress: "default/h", Rules: []l7proxy.HTTPRouteRule{{Backends: to(web), Filters: l7proxy.Filters{
				Rewrite:        &l7proxy.Rewrite{Hostname: "in.example"},
				RequestHeaders: &l7proxy.HeaderEdit{Set: []l7proxy.Field{{Name: "X-Forwarded-Prefix", Value: "/shop"}}},
				CORS: &l7proxy.CORS{AllowOrigins: []string{"*"}, AllowMethods: defaultCORSMethods, AllowHeaders: defaultCORSHeaders,
					AllowCredentials: true, MaxAge: defaultCORSMaxAge},
			}}}}},
		},
		{
			name:      "canary by header, cookie and weight",
			ingresses: []*networkingv1.Ingress{mainIng, canaryIng("canary", ngx+"canary-by-header", "x-canary", ngx+"canary-by-cookie", "beta", ngx+"canary-weight", "30")},
			want: []l7proxy.Route{{Host: "shop.example.com", Path: "/", Upstream: web, Ingress: "default/main", Rules: []l7proxy.HTTPRouteRule{
				{Matches: []l7proxy.HTTPMatch{{Headers: []l7proxy.ValueMatch{{Name: "X-Canary", Value: "always"}}}}, Backends: to("default/api:8080")},
				{Matches: []l7proxy.HTTPMatch{{Headers: []l7proxy.ValueMatch{{Name: "X-Canary", Value: "never"}}}}, Backends: to(web)},
				{Matches: []l7proxy.HTTPMatch{{Cookies: []l7proxy.ValueMatch{{Name: "beta", Value: "always"}}}}, Backends: to("default/api:8080")},
				{Matches: []l7proxy.HTTPMatch{{Cookies: []l7proxy.ValueMatch{{Name: "beta", Value: "never"}}}}, Backends: to(web)},
				{Backends: []l7proxy.WeightedBackend{{Upstream: web, Weight: 70}, {Upstream: "default/api:8080", Weight: 30}}},
			}}},
		},
		{
			name: "canary by header value and weight total",
			ingresses: []*networkingv1.Ingress{mainIng, canaryIng("canary", ngx+"canary-by-header", "X-Canary", ngx+"canary-by-header-value", "on",
				ngx+"canary-by-header-pattern", "ignored", ngx+"canary-weight", "5", ngx+"canary-weight-total", "1000")},
			want: []l7proxy.Route{{Host: "shop.example.com", Path: "/", Upstream: web, Ingress: "default/main", Rules: []l7proxy.HTTPRouteRule{
				{Matches: []l7proxy.HTTPMatch{{Headers: []l7proxy.ValueMatch{{Name: "X-Canary", Value: "on"}}}}, Backends: to("default/api:8080")},
				{Backends: []l7proxy.WeightedBackend{{Upstream: web, Weight: 995}, {Upstream: "default/api:8080", Weight: 5}}},
			}}},
		},
		{
			name:      "canary by pattern; a weight over the total is the total",
			ingresses: []*networkingv1.Ingress{mainIng, canaryIng("canary", ngx+"canary-by-header", "X-Canary", ngx+"canary-by-header-pattern", "^(a|b)$", ngx+"canary-weight", "150")},
			want: []l7proxy.Route{{Host: "shop.example.com", Path: "/", Upstream: web, Ingress: "default/main", Rules: []l7proxy.HTTPRouteRule{
				{Matches: []l7proxy.HTTPMatch{{Headers: []l7proxy.ValueMatch{{Name: "X-Canary", Value: "^(a|b)$", Regex: true}}}}, Backends: to("default/api:8080")},
				{Backends: []l7proxy.WeightedBackend{{Upstream: web, Weight: 0}, {Upstream: "default/api:8080", Weight: 100}}},
			}}},
		},
		{
			name:      "canary of another namespace is not used",
			ingresses: []*networkingv1.Ingress{mainIng, canaryIng("other/canary", ngx+"canary-weight", "100")},
			want:      []l7proxy.Route{{Host: "shop.example.com", Path: "/", Upstream: web, Ingress: "default/main"}},
			warn: []string{"Ingress other/canary: service other/api not found",
				`Ingress other/canary: canary of host "shop.example.com" path "/" not used: ingress default/main serves that host and path from another namespace, and a canary must be in its main ingress's namespace`},
		},
		{
			name: "canaries of two namespaces: each only for its own",
			ingresses: []*networkingv1.Ingress{mainIng, canaryIng("other/canary", ngx+"canary-weight", "100"),
				canaryIng("canary", ngx+"canary-weight", "100")},
			want: []l7proxy.Route{{Host: "shop.example.com", Path: "/", Upstream: web, Ingress: "default/main", Rules: []l7proxy.HTTPRouteRule{
				{Backends: []l7proxy.WeightedBackend{{Upstream: web, Weight: 0}, {Upstream: "default/api:8080", Weight: 100}}},
			}}},
			warn: []string{"Ingress other/canary: service other/api not found",
				`Ingress other/canary: canary of host "shop.example.com" path "/" not used: ingress default/main serves that host and path from another namespace`},
		},
		{
			name:      "canary without a main ingress, and a second canary",
			ingresses: []*networkingv1.Ingress{canaryIng("c1"), canaryIng("c2")},
			warn: []string{`Ingress default/c1: canary of host "shop.example.com" path "/" not used: no other ingress serves that host and path`,
				"Ingress default/c2: spec.rules[0].http.paths[0]: canary not used: ingress default/c1 is the canary"},
		},
		{
			name: "snippets refuse the ingress",
			ingresses: []*networkingv1.Ingress{ingress("snip", className("nodegress"), annotated(ngx+"configuration-snippet", "more_set_headers x;"),
				rule("", path("/", prefix, "web:http")))},
			warn: []string{"Ingress default/snip: annotation nginx.ingress.kubernetes.io/configuration-snippet: refused: snippets are nginx configuration, which nodegress does not run; ingress not served"},
		},
		{
			name: "unsupported ingress-nginx annotations warn",
			ingresses: []*networkingv1.Ingress{ingress("u", className("nodegress"), annotated(ngx+"proxy-buffering", "on"),
				rule("", path("/", prefix, "web:http")))},
			want: []l7proxy.Route{{Path: "/", Upstream: web, Ingress: "default/u"}},
			warn: []string{"Ingress default/u: ingress-nginx annotation nginx.ingress.kubernetes.io/proxy-buffering is not supported, ignored"},
		},
		{
			name: "proxy-ssl secret of another namespace refuses the ingress",
			ingresses: []*networkingv1.Ingress{ingress("s", className("nodegress"), annotated(ngx+"backend-protocol", "HTTPS",
				ngx+"proxy-ssl-secret", "other/tls"), rule("", path("/", prefix, "web:http")))},
			warn: []string{"Ingress default/s: proxy-ssl-secret other/tls: the secret must be in the ingress's namespace; ingress not served"},
		},
		{
			name: "proxy-ssl secret missing",
			ingresses: []*networkingv1.Ingress{ingress("s", className("nodegress"), annotated(ngx+"backend-protocol", "HTTPS",
				ngx+"proxy-ssl-secret", "default/nope"), rule("", path("/", prefix, "web:http")))},
			warn: []string{"Ingress default/s: proxy-ssl-secret default/nope: no kubernetes.io/tls secret of that name; ingress not served"},
		},
	}
	fixture := ingressFixture(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := fixture
			in.Ingresses = tt.ingresses
			cfg, _, errs := TranslateIngress(in)
			if !reflect.DeepEqual(cfg.Routes, tt.want) {
				t.Errorf("routes:\n got %+v\nwant %+v", cfg.Routes, tt.want)
			}
			checkIssues(t, errs, tt.warn, tt.skipped)
			if _, cerrs := l7proxy.Compile(cfg); len(cerrs) > 0 {
				t.Errorf("proxy rejects the configuration: %v", cerrs)
			}
		})
	}
}

// TestTranslateProxySSL: the proxy-ssl-* annotations become the
// upstream's TLS, in a pool of the Ingress's own.
func TestTranslateProxySSL(t *testing.T) {
	crt, key := testCert(t, "backend.example")
	sec := secret("default", "backend-tls", corev1.SecretTypeTLS, crt, key)
	sec.Data["ca.crt"] = crt
	tests := []struct {
		name string
		ann  []string
		want *l7proxy.UpstreamTLS // ClientCert checked apart
	}{
		{name: "verify with SNI", ann: []string{ngx + "proxy-ssl-verify", "on", ngx + "proxy-ssl-name", "backend.example", ngx + "proxy-ssl-server-name", "on"},
			want: &l7proxy.UpstreamTLS{ServerName: "backend.example", CAPEM: crt, MaxDepth: 1}},
		{name: "verify without SNI, depth", ann: []string{ngx + "proxy-ssl-verify", "on", ngx + "proxy-ssl-name", "backend.example", ngx + "proxy-ssl-verify-depth", "3"},
			want: &l7proxy.UpstreamTLS{DNSNames: []string{"backend.example"}, CAPEM: crt, MaxDepth: 3}},
		{name: "client certificate only", ann: nil, want: &l7proxy.UpstreamTLS{SkipVerify: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := ingressFixture(t)
			in.Secrets = append(in.Secrets, sec)
			in.Ingresses = []*networkingv1.Ingress{ingress("s", className("nodegress"), annotated(append([]string{ngx + "backend-protocol", "GRPCS",
				ngx + "proxy-ssl-secret", "default/backend-tls"}, tt.ann...)...), rule("", path("/", networkingv1.PathTypePrefix, "web:http")))}
			cfg, _, errs := TranslateIngress(in)
			if len(errs) > 0 {
				t.Fatalf("issues: %v", errs)
			}
			if len(cfg.Upstreams) != 1 || cfg.Upstreams[0].Name != "default/web:http/https/verify=ingress default/s" {
				t.Fatalf("upstreams %+v", cfg.Upstreams)
			}
			got := *cfg.Upstreams[0].TLS
			if got.ClientCert == nil {
				t.Fatal("no client certificate")
			}
			got.ClientCert = nil
			if !reflect.DeepEqual(&got, tt.want) {
				t.Errorf("TLS %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestTranslateSSLPassthrough: the hosts of an ssl-passthrough Ingress
// become TLS passthrough listeners on the Ingress HTTPS frontends, with
// the Ingress routes as fallback; a host-less rule and a host another
// Ingress passes through already are reported.
func TestTranslateSSLPassthrough(t *testing.T) {
	in := ingressFixture(t)
	in.NodeAddrs = []netip.Addr{netip.MustParseAddr("192.0.2.10")}
	in.Ingresses = []*networkingv1.Ingress{
		ingress("pass", className("nodegress"), age(time.Hour), annotated(ngx+"ssl-passthrough", "true"),
			rule("pass.example.com", path("/", networkingv1.PathTypePrefix, "web:http"), path("/x", networkingv1.PathTypePrefix, "api:8080")),
			rule("", path("/", networkingv1.PathTypePrefix, "web:http"))),
		ingress("again", className("nodegress"), annotated(ngx+"ssl-passthrough", "true"),
			rule("pass.example.com", path("/again", networkingv1.PathTypePrefix, "api:8080"))),
	}
	cfg, _, errs := TranslateIngress(in)
	want := []l7proxy.Listener{{
		Name: "ingress default/pass pass.example.com", Kind: l7proxy.ListenerTLSPassthrough, Hostname: "pass.example.com",
		IngressFallback: true, Frontends: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.10:443")},
		TLSRoutes: []l7proxy.TLSRoute{{Source: "default/pass", Backends: []l7proxy.WeightedBackend{{Upstream: "default/web:http", Weight: 1}}}},
	}}
	if !reflect.DeepEqual(cfg.Listeners, want) {
		t.Errorf("listeners:\n got %+v\nwant %+v", cfg.Listeners, want)
	}
	checkIssues(t, errs, []string{
		"Ingress default/pass: spec.rules[1]: ssl-passthrough: a rule without host cannot be chosen by SNI; not passed through",
		"Ingress default/again: spec.rules[0]: ssl-passthrough: host pass.example.com is passed through by the older ingress default/pass; not passed through",
	}, nil)
	if _, cerrs := l7proxy.Compile(cfg); len(cerrs) > 0 {
		t.Errorf("proxy rejects the configuration: %v", cerrs)
	}
}
