package controller

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	gwapi "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/nodegress/nodegress/l7proxy"
)

func prefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

func TestParseAccessAnnotations(t *testing.T) {
	a := func(name string) string { return AnnotationPrefix + name }
	tests := []struct {
		name        string
		annotations map[string]string
		want        accessAnnotations
		// bad is the annotation the error names; "" when valid.
		bad string
	}{
		{name: "ranges with spaces and bare addresses", annotations: map[string]string{a("whitelist-source-range"): "10.0.0.0/24, 172.10.0.1,2001:db8::/32"},
			want: accessAnnotations{AllowRanges: prefixes("10.0.0.0/24", "172.10.0.1/32", "2001:db8::/32")}},
		{name: "allowlist name", annotations: map[string]string{a("allowlist-source-range"): "10.0.0.0/8"},
			want: accessAnnotations{AllowRangesAlt: prefixes("10.0.0.0/8")}},
		{name: "denylist", annotations: map[string]string{a("denylist-source-range"): "192.0.2.7"},
			want: accessAnnotations{DenyRanges: prefixes("192.0.2.7/32")}},
		{name: "mapped v4 range unmapped", annotations: map[string]string{a("denylist-source-range"): "::ffff:10.0.0.0/104"},
			want: accessAnnotations{DenyRanges: prefixes("10.0.0.0/8")}},
		{name: "range with host bits", annotations: map[string]string{a("whitelist-source-range"): "10.0.0.1/8"}, bad: a("whitelist-source-range")},
		{name: "range garbage", annotations: map[string]string{a("whitelist-source-range"): "10.0.0.0/8,nope"}, bad: a("whitelist-source-range")},
		{name: "range empty", annotations: map[string]string{a("denylist-source-range"): " , "}, bad: a("denylist-source-range")},
		{name: "range with zone", annotations: map[string]string{a("denylist-source-range"): "fe80::1%eth0"}, bad: a("denylist-source-range")},
		{name: "limits", annotations: map[string]string{a("limit-rps"): "10", a("limit-rpm"): "300", a("limit-connections"): "4",
			a("limit-burst-multiplier"): "2", a("limit-whitelist"): "10.0.0.0/8"},
			want: accessAnnotations{LimitRPS: 10, LimitRPM: 300, LimitConnections: 4, LimitBurstMultiplier: 2, LimitExempt: prefixes("10.0.0.0/8")}},
		{name: "limit zero", annotations: map[string]string{a("limit-rps"): "0"}, bad: a("limit-rps")},
		{name: "limit negative", annotations: map[string]string{a("limit-rpm"): "-5"}, bad: a("limit-rpm")},
		{name: "limit fraction", annotations: map[string]string{a("limit-connections"): "1.5"}, bad: a("limit-connections")},
		{name: "limit huge", annotations: map[string]string{a("limit-rps"): "99999999999999999999"}, bad: a("limit-rps")},
		{name: "affinity cookie", annotations: map[string]string{a("affinity"): "cookie", a("affinity-mode"): "persistent",
			a("session-cookie-name"): "route", a("session-cookie-path"): "/app", a("session-cookie-max-age"): "172800",
			a("session-cookie-expires"): "3600", a("session-cookie-samesite"): "strict", a("session-cookie-secure"): "true",
			a("session-cookie-change-on-failure"): "true"},
			want: accessAnnotations{Affinity: "cookie", AffinityMode: "persistent", CookieName: "route", CookiePath: "/app",
				CookieMaxAge: 172800, CookieExpires: 3600, CookieSameSite: "Strict", CookieSecure: true, CookieChangeOnFailure: true}},
		{name: "affinity ip", annotations: map[string]string{a("affinity"): "ip"}, bad: a("affinity")},
		{name: "affinity mode", annotations: map[string]string{a("affinity-mode"): "sticky"}, bad: a("affinity-mode")},
		{name: "cookie name with separator", annotations: map[string]string{a("session-cookie-name"): "a;b"}, bad: a("session-cookie-name")},
		{name: "cookie path injection", annotations: map[string]string{a("session-cookie-path"): "/; Domain=evil"}, bad: a("session-cookie-path")},
		{name: "cookie samesite", annotations: map[string]string{a("session-cookie-samesite"): "sometimes"}, bad: a("session-cookie-samesite")},
		{name: "basic auth", annotations: map[string]string{a("auth-type"): "basic", a("auth-secret"): "ns1/users", a("auth-secret-type"): "auth-map", a("auth-realm"): "Staff only"},
			want: accessAnnotations{AuthType: "basic", AuthSecret: "ns1/users", AuthSecretType: "auth-map", AuthRealm: "Staff only"}},
		{name: "digest auth", annotations: map[string]string{a("auth-type"): "digest", a("auth-secret"): "users"}, bad: a("auth-type")},
		{name: "auth secret bad name", annotations: map[string]string{a("auth-type"): "basic", a("auth-secret"): "Users!"}, bad: a("auth-secret")},
		{name: "auth secret type", annotations: map[string]string{a("auth-secret-type"): "ldap"}, bad: a("auth-secret-type")},
		{name: "realm with newline", annotations: map[string]string{a("auth-realm"): "a\r\nSet-Cookie: x"}, bad: a("auth-realm")},
		{name: "external auth", annotations: map[string]string{a("auth-url"): "https://$host/oauth2/auth", a("auth-signin"): "https://$host/oauth2/start?rd=$escaped_request_uri",
			a("auth-method"): "POST", a("auth-response-headers"): "X-Auth-Request-User, X-Auth-Request-Email", a("auth-request-redirect"): "/done",
			a("auth-signin-redirect-param"): "next"},
			want: accessAnnotations{AuthURL: "https://$host/oauth2/auth", AuthSignin: "https://$host/oauth2/start?rd=$escaped_request_uri",
				AuthMethod: "POST", AuthResponseHeaders: []string{"X-Auth-Request-User", "X-Auth-Request-Email"}, AuthRequestRedirect: "/done",
				AuthSigninParam: "next"}},
		{name: "auth url relative", annotations: map[string]string{a("auth-url"): "/auth"}, bad: a("auth-url")},
		{name: "auth url unknown variable", annotations: map[string]string{a("auth-url"): "http://x/$cookie_session"}, bad: a("auth-url")},
		{name: "auth method with space", annotations: map[string]string{a("auth-method"): "GET /x"}, bad: a("auth-method")},
		{name: "auth response header invalid", annotations: map[string]string{a("auth-response-headers"): "X-Ok, Bad Header"}, bad: a("auth-response-headers")},
		{name: "auth response header content-length", annotations: map[string]string{a("auth-response-headers"): "X-Ok, Content-Length"}, bad: a("auth-response-headers")},
		{name: "auth response header transfer-encoding", annotations: map[string]string{a("auth-response-headers"): "X-Ok, transfer-encoding"}, bad: a("auth-response-headers")},
		{name: "auth response header connection", annotations: map[string]string{a("auth-response-headers"): "X-Ok, Connection"}, bad: a("auth-response-headers")},
		{name: "auth response header keep-alive", annotations: map[string]string{a("auth-response-headers"): "X-Ok, Keep-Alive"}, bad: a("auth-response-headers")},
		{name: "auth response header proxy-connection", annotations: map[string]string{a("auth-response-headers"): "X-Ok, Proxy-Connection"}, bad: a("auth-response-headers")},
		{name: "auth response header te", annotations: map[string]string{a("auth-response-headers"): "X-Ok, TE"}, bad: a("auth-response-headers")},
		{name: "auth response header trailer", annotations: map[string]string{a("auth-response-headers"): "X-Ok, Trailer"}, bad: a("auth-response-headers")},
		{name: "auth response header upgrade", annotations: map[string]string{a("auth-response-headers"): "X-Ok, Upgrade"}, bad: a("auth-response-headers")},
		{name: "auth response header host", annotations: map[string]string{a("auth-response-headers"): "X-Ok, Host"}, bad: a("auth-response-headers")},
		{name: "auth cache", annotations: map[string]string{a("auth-url"): "http://auth/", a("auth-cache-key"): "$remote_user$http_authorization",
			a("auth-cache-duration"): "200 202 10m, 401 1h30m, 30"},
			want: accessAnnotations{AuthURL: "http://auth/", AuthCacheKey: "$remote_user$http_authorization", AuthCacheRules: []l7proxy.AuthCacheRule{
				{Codes: []int{200, 202}, TTL: 10 * time.Minute}, {Codes: []int{401}, TTL: 90 * time.Minute}, {Codes: []int{200, 301, 302}, TTL: 30 * time.Second}}}},
		{name: "auth cache any", annotations: map[string]string{a("auth-url"): "http://auth/", a("auth-cache-key"): "$remote_addr", a("auth-cache-duration"): "any 1d"},
			want: accessAnnotations{AuthURL: "http://auth/", AuthCacheKey: "$remote_addr", AuthCacheRules: []l7proxy.AuthCacheRule{{TTL: 24 * time.Hour}}}},
		{name: "auth cache key unknown variable", annotations: map[string]string{a("auth-cache-key"): "$upstream_addr"}, bad: a("auth-cache-key")},
		{name: "auth cache duration unit", annotations: map[string]string{a("auth-cache-duration"): "200 5w"}, bad: a("auth-cache-duration")},
		{name: "auth cache duration code", annotations: map[string]string{a("auth-cache-duration"): "2000 5m"}, bad: a("auth-cache-duration")},
		{name: "auth cache duration too long", annotations: map[string]string{a("auth-cache-duration"): "200 400d"}, bad: a("auth-cache-duration")},
		{name: "auth cache duration zero", annotations: map[string]string{a("auth-cache-duration"): "200 0m"}, bad: a("auth-cache-duration")},
		{name: "error pages", annotations: map[string]string{a("custom-http-errors"): "404, 503,404", a("default-backend"): "errors"},
			want: accessAnnotations{CustomHTTPErrors: []int{404, 503}, DefaultBackend: "errors"}},
		{name: "error code 200", annotations: map[string]string{a("custom-http-errors"): "200"}, bad: a("custom-http-errors")},
		{name: "error code words", annotations: map[string]string{a("custom-http-errors"): "404,oops"}, bad: a("custom-http-errors")},
		{name: "error code signed", annotations: map[string]string{a("custom-http-errors"): "+404"}, bad: a("custom-http-errors")},
		{name: "default backend in another namespace", annotations: map[string]string{a("default-backend"): "other/errors"}, bad: a("default-backend")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := parseAnnotations(tt.annotations)
			if tt.bad != "" {
				var ae *AnnotationError
				if !errors.As(err, &ae) || ae.Annotation != tt.bad {
					t.Fatalf("err = %v, want an AnnotationError for %s", err, tt.bad)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.Access, tt.want) {
				t.Errorf("got %+v\nwant %+v", got.Access, tt.want)
			}
		})
	}
}

// TestAccessParsersNeedOnlyAPrefix: every access parser is registered
// under the nodegress prefix, and nothing else is.
func TestAccessParsersNeedOnlyAPrefix(t *testing.T) {
	for name := range accessAnnotationParsers {
		if strings.Contains(name, "/") {
			t.Errorf("parser %q carries a prefix", name)
		}
		if annotationParsers[name] == nil {
			t.Errorf("%s not registered", AnnotationPrefix+name)
		}
	}
}

func FuzzParseCIDRList(f *testing.F) {
	for _, s := range []string{"10.0.0.0/24, 172.10.0.1", "2001:db8::/32", "::ffff:10.0.0.0/104", "1.2.3.4/33", ",,", "fe80::1%eth0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ps, err := parseCIDRList(s)
		if err != nil {
			return
		}
		if len(ps) == 0 {
			t.Fatal("no prefix and no error")
		}
		for _, p := range ps {
			if !p.IsValid() || p.Masked() != p || p.Addr().Is4In6() {
				t.Fatalf("%q gave %v", s, p)
			}
		}
	})
}

func FuzzParseStatusCodes(f *testing.F) {
	for _, s := range []string{"404,503", " 500 , 502,", "200", "4o4", "-1", "99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		codes, err := parseStatusCodes(s)
		if err != nil {
			return
		}
		if len(codes) == 0 {
			t.Fatal("no code and no error")
		}
		for _, c := range codes {
			if c < 300 || c > 599 {
				t.Fatalf("%q gave %d", s, c)
			}
		}
	})
}

func FuzzParseAuthCacheDuration(f *testing.F) {
	for _, s := range []string{"200 202 10m, 401 5m", "any 1h30m", "30", "200 5w", ",,", "999999999999d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rules, err := parseAuthCacheDuration(s)
		if err != nil {
			return
		}
		for _, r := range rules {
			if r.TTL <= 0 || r.TTL > 365*24*time.Hour {
				t.Fatalf("%q gave TTL %v", s, r.TTL)
			}
		}
	})
}

// authSecret is an Opaque Secret with the given data.
func authSecret(ns, name string, data map[string]string) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Type: corev1.SecretTypeOpaque, Data: map[string][]byte{}}
	for k, v := range data {
		s.Data[k] = []byte(v)
	}
	return s
}

func TestTranslateIngressAccess(t *testing.T) {
	const sha = "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=" // "secret"
	a := func(name string) string { return AnnotationPrefix + name }
	webRule := rule("web.example.com", path("/", networkingv1.PathTypePrefix, "web:http"))
	tests := []struct {
		name   string
		ing    *networkingv1.Ingress
		config L7Config
		// check inspects the route's Access; nil: the Ingress is not
		// served.
		check func(t *testing.T, acc *l7proxy.Access)
		warn  []string
	}{
		{
			name: "no access annotation: no Access",
			ing:  ingress("web", className("nodegress"), webRule),
			check: func(t *testing.T, acc *l7proxy.Access) {
				if acc != nil {
					t.Errorf("Access %+v", acc)
				}
			},
		},
		{
			name: "basic auth from an htpasswd file",
			ing:  ingress("web", className("nodegress"), annotated(a("auth-type"), "basic", a("auth-secret"), "users", a("auth-realm"), "Staff"), webRule),
			check: func(t *testing.T, acc *l7proxy.Access) {
				if acc.Denied != "" || acc.BasicAuth == nil || acc.BasicAuth.Users["alice"] != sha || acc.BasicAuth.Realm != "Staff" {
					t.Errorf("Access %+v BasicAuth %+v", acc, acc.BasicAuth)
				}
			},
		},
		{
			name: "basic auth from a map, namespace/name form",
			ing:  ingress("web", className("nodegress"), annotated(a("auth-type"), "basic", a("auth-secret"), "default/user-map", a("auth-secret-type"), "auth-map"), webRule),
			check: func(t *testing.T, acc *l7proxy.Access) {
				if acc.BasicAuth == nil || len(acc.BasicAuth.Users) != 2 || acc.BasicAuth.Users["bob"] != sha {
					t.Errorf("BasicAuth %+v", acc.BasicAuth)
				}
			},
		},
		{
			name: "missing secret: served, failing closed",
			ing:  ingress("web", className("nodegress"), annotated(a("auth-type"), "basic", a("auth-secret"), "nope"), webRule),
			check: func(t *testing.T, acc *l7proxy.Access) {
				if acc.Denied == "" || acc.BasicAuth != nil {
					t.Errorf("Access %+v", acc)
				}
			},
			warn: []string{"Ingress default/web: auth-secret default/nope not found; requests get 503"},
		},
		{
			name: "invalid htpasswd: served, failing closed",
			ing:  ingress("web", className("nodegress"), annotated(a("auth-type"), "basic", a("auth-secret"), "plain-users"), webRule),
			check: func(t *testing.T, acc *l7proxy.Access) {
				if acc.Denied == "" {
					t.Errorf("Access %+v", acc)
				}
			},
			warn: []string{"Ingress default/web: auth-secret default/plain-users: line 1 (user \"carol\"): unsupported password hash"},
		},
		{
			name: "secret without the auth key",
			ing:  ingress("web", className("nodegress"), annotated(a("auth-type"), "basic", a("auth-secret"), "user-map"), webRule),
			check: func(t *testing.T, acc *l7proxy.Access) {
				if acc.Denied == "" {
					t.Errorf("Access %+v", acc)
				}
			},
			warn: []string{`Ingress default/web: auth-secret default/user-map has no "auth" key (auth-file); requests get 503`},
		},
		{
			name: "TLS secret is not an auth secret",
			ing:  ingress("web", className("nodegress"), annotated(a("auth-type"), "basic", a("auth-secret"), "web-tls"), webRule),
			check: func(t *testing.T, acc *l7proxy.Access) {
				if acc.Denied == "" {
					t.Errorf("Access %+v", acc)
				}
			},
			warn: []string{"Ingress default/web: auth-secret default/web-tls not found"},
		},
		{
			name: "secret of another namespace: not served",
			ing:  ingress("web", className("nodegress"), annotated(a("auth-type"), "basic", a("auth-secret"), "other/users"), webRule),
			warn: []string{"Ingress default/web: annotation nodegress.io/auth-secret: invalid value \"other/users\": secrets of other namespaces are not read; ingress not served"},
		},
		{
			name: "auth-type without secret: not served",
			ing:  ingress("web", className("nodegress"), annotated(a("auth-type"), "basic"), webRule),
			warn: []string{"annotation nodegress.io/auth-type: invalid value \"basic\": needs auth-secret; ingress not served"},
		},
		{
			name: "auth-cache-duration without a key: not served",
			ing:  ingress("web", className("nodegress"), annotated(a("auth-url"), "http://auth/", a("auth-cache-duration"), "200 1m"), webRule),
			warn: []string{"nodegress.io/auth-cache-duration", "needs auth-cache-key; ingress not served"},
		},
		{
			name: "both allow list names differing: not served",
			ing:  ingress("web", className("nodegress"), annotated(a("whitelist-source-range"), "10.0.0.0/8", a("allowlist-source-range"), "10.0.0.0/16"), webRule),
			warn: []string{"allowlist-source-range"},
		},
		{
			name: "ranges, limits, affinity, external auth",
			ing: ingress("web", className("nodegress"), annotated(
				a("allowlist-source-range"), "10.0.0.0/8", a("denylist-source-range"), "10.1.0.0/16",
				a("limit-rps"), "5", a("limit-whitelist"), "10.2.0.0/16",
				a("affinity"), "cookie", a("session-cookie-secure"), "true",
				a("auth-url"), "http://auth.default.svc/check", a("auth-response-headers"), "X-User"), webRule),
			check: func(t *testing.T, acc *l7proxy.Access) {
				if fmt.Sprint(acc.Allow, acc.Deny) != "[10.0.0.0/8] [10.1.0.0/16]" {
					t.Errorf("ranges %v %v", acc.Allow, acc.Deny)
				}
				if rl := acc.RateLimit; rl == nil || rl.RPS != 5 || fmt.Sprint(rl.Exempt) != "[10.2.0.0/16]" {
					t.Errorf("RateLimit %+v", rl)
				}
				if af := acc.Affinity; af == nil || af.Name != DefaultSessionCookieName || !af.Secure || len(af.Key) == 0 {
					t.Errorf("Affinity %+v", af)
				}
				if e := acc.ExternalAuth; e == nil || e.URL != "http://auth.default.svc/check" || fmt.Sprint(e.ResponseHeaders) != "[X-User]" {
					t.Errorf("ExternalAuth %+v", e)
				}
			},
		},
		{
			name: "auth-url with $host on exact hosts: served",
			ing:  ingress("web", className("nodegress"), annotated(a("auth-url"), "https://$host/oauth2/auth?rd=$escaped_request_uri"), webRule),
			check: func(t *testing.T, acc *l7proxy.Access) {
				if e := acc.ExternalAuth; e == nil || e.URL != "https://$host/oauth2/auth?rd=$escaped_request_uri" {
					t.Errorf("ExternalAuth %+v", e)
				}
			},
		},
		{
			name: "auth-url with client variables outside the server part on a rule without host: served",
			ing: ingress("web", className("nodegress"), annotated(a("auth-url"), "http://auth.default.svc/$host?u=$escaped_request_uri&h=$http_host"),
				rule("", path("/", networkingv1.PathTypePrefix, "web:http"))),
			check: func(t *testing.T, acc *l7proxy.Access) {
				if acc.ExternalAuth == nil {
					t.Errorf("Access %+v", acc)
				}
			},
		},
		{
			name: "auth-url with $host on a rule without host: not served",
			ing:  ingress("web", className("nodegress"), annotated(a("auth-url"), "http://$host/auth"), rule("", path("/", networkingv1.PathTypePrefix, "web:http"))),
			warn: []string{"annotation nodegress.io/auth-url: invalid value \"http://$host/auth\": $host in the server part", "ingress not served"},
		},
		{
			name: "auth-url with $host on a wildcard host: not served",
			ing:  ingress("web", className("nodegress"), annotated(a("auth-url"), "https://$host:8443/auth"), webRule, rule("*.example.com", path("/", networkingv1.PathTypePrefix, "web:http"))),
			warn: []string{"$host in the server part", "ingress not served"},
		},
		{
			name: "auth-url with $host and a defaultBackend: not served",
			ing:  ingress("web", className("nodegress"), annotated(a("auth-url"), "http://auth.$host/"), webRule, defaultBackend("web:http")),
			warn: []string{"$host in the server part", "ingress not served"},
		},
		{
			name: "auth-url with $http_host on exact hosts: not served",
			ing:  ingress("web", className("nodegress"), annotated(a("auth-url"), "http://$http_host/auth"), webRule),
			warn: []string{"$http_host in the server part", "ingress not served"},
		},
		{
			name: "auth-url with $best_http_host: not served",
			ing:  ingress("web", className("nodegress"), annotated(a("auth-url"), "http://$best_http_host/auth"), webRule),
			warn: []string{"$best_http_host in the server part", "ingress not served"},
		},
		{
			name: "auth-url with the request URI in the server part: not served",
			ing:  ingress("web", className("nodegress"), annotated(a("auth-url"), "http://auth$request_uri"), webRule),
			warn: []string{"$request_uri in the server part", "ingress not served"},
		},
		{
			name: "error pages from the default-backend service's first port",
			ing:  ingress("web", className("nodegress"), annotated(a("custom-http-errors"), "404,503", a("default-backend"), "api"), webRule),
			check: func(t *testing.T, acc *l7proxy.Access) {
				if acc.DefaultUpstream != "default/api:8080" || fmt.Sprint(acc.ErrorCodes) != "[404 503]" {
					t.Errorf("Access %+v", acc)
				}
			},
		},
		{
			name:   "error pages from the agent's default backend",
			ing:    ingress("web", className("nodegress"), annotated(a("custom-http-errors"), "404"), webRule),
			config: L7Config{DefaultBackendService: "default/api:8080"},
			check: func(t *testing.T, acc *l7proxy.Access) {
				if acc.DefaultUpstream != "default/api:8080" || fmt.Sprint(acc.ErrorCodes) != "[404]" {
					t.Errorf("Access %+v", acc)
				}
			},
		},
		{
			name: "error pages without any default backend: ignored, reported",
			ing:  ingress("web", className("nodegress"), annotated(a("custom-http-errors"), "404"), webRule),
			check: func(t *testing.T, acc *l7proxy.Access) {
				if acc.ErrorCodes != nil {
					t.Errorf("Access %+v", acc)
				}
			},
			warn: []string{"custom-http-errors needs default-backend"},
		},
		{
			name: "missing default-backend service: reported, upstream without endpoints",
			ing:  ingress("web", className("nodegress"), annotated(a("default-backend"), "gone"), webRule),
			check: func(t *testing.T, acc *l7proxy.Access) {
				if acc.DefaultUpstream != "default/gone:80" {
					t.Errorf("Access %+v", acc)
				}
			},
			warn: []string{"default-backend: service default/gone not found"},
		},
	}
	fixture := ingressFixture(t)
	fixture.Secrets = append(fixture.Secrets,
		authSecret("default", "users", map[string]string{"auth": "# staff\nalice:" + sha + "\n"}),
		authSecret("default", "user-map", map[string]string{"alice": sha, "bob": sha + "\n"}),
		authSecret("default", "plain-users", map[string]string{"auth": "carol:secret\n"}),
		authSecret("other", "users", map[string]string{"auth": "eve:" + sha}),
	)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := fixture
			in.Ingresses = []*networkingv1.Ingress{tt.ing}
			in.Config = tt.config
			cfg, _, errs := TranslateIngress(in)
			var msgs []string
			for _, err := range errs {
				msgs = append(msgs, err.Error())
			}
			all := strings.Join(msgs, "\n")
			for _, w := range tt.warn {
				if !strings.Contains(all, w) {
					t.Errorf("issues %q lack %q", all, w)
				}
			}
			if tt.warn == nil && len(errs) > 0 {
				t.Errorf("unexpected issues: %s", all)
			}
			if tt.check == nil {
				if len(cfg.Routes) != 0 {
					t.Fatalf("ingress served: %v", routeLines(cfg))
				}
				return
			}
			if len(cfg.Routes) != 1 {
				t.Fatalf("routes %v", routeLines(cfg))
			}
			tt.check(t, cfg.Routes[0].Options.Access)
		})
	}
}

// TestAffinityKeyPerIngress: cookies of one Ingress mean nothing to
// another, and the key does not depend on the node.
func TestAffinityKeyPerIngress(t *testing.T) {
	a := ingress("a")
	a.UID = "uid-1"
	b := ingress("a")
	b.UID = "uid-2"
	if reflect.DeepEqual(affinityKey(a), affinityKey(b)) {
		t.Error("two Ingresses share a key")
	}
	if !reflect.DeepEqual(affinityKey(a), affinityKey(a.DeepCopy())) {
		t.Error("key not stable")
	}
}

func TestSessionAffinity(t *testing.T) {
	typ := func(s gwapi.SessionPersistenceType) *gwapi.SessionPersistenceType { return &s }
	life := func(s gwapi.CookieLifetimeType) *gwapi.CookieConfig { return &gwapi.CookieConfig{LifetimeType: &s} }
	dur := func(s string) *gwapi.Duration { d := gwapi.Duration(s); return &d }
	name := func(s string) *string { return &s }
	tests := []struct {
		name       string
		sp         gwapi.SessionPersistence
		wantName   string
		wantMaxAge int
		wantErr    bool
	}{
		{name: "defaults", sp: gwapi.SessionPersistence{}, wantName: defaultGatewaySessionName},
		{name: "named session cookie", sp: gwapi.SessionPersistence{SessionName: name("s"), Type: typ(gwapi.CookieBasedSessionPersistence),
			AbsoluteTimeout: dur("1h"), CookieConfig: life(gwapi.SessionCookieLifetimeType)}, wantName: "s"},
		{name: "permanent", sp: gwapi.SessionPersistence{AbsoluteTimeout: dur("1h"), CookieConfig: life(gwapi.PermanentCookieLifetimeType)},
			wantName: defaultGatewaySessionName, wantMaxAge: 3600},
		{name: "permanent without timeout", sp: gwapi.SessionPersistence{CookieConfig: life(gwapi.PermanentCookieLifetimeType)}, wantErr: true},
		{name: "header type", sp: gwapi.SessionPersistence{Type: typ(gwapi.HeaderBasedSessionPersistence)}, wantErr: true},
		{name: "bad cookie name", sp: gwapi.SessionPersistence{SessionName: name("a b")}, wantErr: true},
	}
	r := &gwapi.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "r", UID: "u"}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := sessionAffinity(&tt.sp, r)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("no error, got %+v", a)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if a.Name != tt.wantName || a.MaxAge != tt.wantMaxAge || len(a.Key) == 0 {
				t.Errorf("got %+v", a)
			}
		})
	}
}
