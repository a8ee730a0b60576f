package controller

import (
	"errors"
	"reflect"
	"slices"
	"testing"
)

const ngx = NginxAnnotationPrefix

// TestParseRoutingAnnotations: every routing annotation, valid and
// invalid values, under both prefixes, and which prefix wins.
func TestParseRoutingAnnotations(t *testing.T) {
	tests := []struct {
		name        string
		annotations map[string]string
		want        routingAnnotations
		unknown     []string
		// bad is the annotation the error names ("" when valid);
		// refused says the error is a refusal.
		bad     string
		refused bool
	}{
		{name: "use-regex", annotations: map[string]string{ngx + "use-regex": "true"}, want: routingAnnotations{UseRegex: true}},
		{name: "ssl-passthrough", annotations: map[string]string{ngx + "ssl-passthrough": "true"}, want: routingAnnotations{SSLPassthrough: true}},
		{name: "ssl-passthrough bad", annotations: map[string]string{ngx + "ssl-passthrough": "enabled"}, bad: ngx + "ssl-passthrough"},
		{name: "use-regex nodegress", annotations: map[string]string{AnnotationPrefix + "use-regex": "True"}, want: routingAnnotations{UseRegex: true}},
		{name: "use-regex bad", annotations: map[string]string{ngx + "use-regex": "on"}, bad: ngx + "use-regex"},
		{name: "rewrite-target groups", annotations: map[string]string{ngx + "rewrite-target": "/$2"}, want: routingAnnotations{RewriteTarget: "/$2"}},
		{name: "rewrite-target group first", annotations: map[string]string{ngx + "rewrite-target": "$1"}, want: routingAnnotations{RewriteTarget: "$1"}},
		{name: "rewrite-target nginx variable", annotations: map[string]string{ngx + "rewrite-target": "/$host/$1"}, bad: ngx + "rewrite-target"},
		{name: "rewrite-target relative", annotations: map[string]string{ngx + "rewrite-target": "x/$1"}, bad: ngx + "rewrite-target"},
		{name: "rewrite-target newline", annotations: map[string]string{ngx + "rewrite-target": "/a\n"}, bad: ngx + "rewrite-target"},
		{name: "rewrite-target empty", annotations: map[string]string{ngx + "rewrite-target": ""}, bad: ngx + "rewrite-target"},
		{name: "force-ssl-redirect", annotations: map[string]string{ngx + "force-ssl-redirect": "true"}, want: routingAnnotations{ForceSSLRedirect: true}},
		{name: "force-ssl-redirect bad", annotations: map[string]string{ngx + "force-ssl-redirect": "1"}, bad: ngx + "force-ssl-redirect"},
		{name: "app-root", annotations: map[string]string{ngx + "app-root": "/app1"}, want: routingAnnotations{AppRoot: "/app1"}},
		{name: "app-root relative", annotations: map[string]string{ngx + "app-root": "app1"}, bad: ngx + "app-root"},
		{name: "app-root with query", annotations: map[string]string{ngx + "app-root": "/a?b"}, bad: ngx + "app-root"},
		{name: "permanent-redirect", annotations: map[string]string{ngx + "permanent-redirect": "https://www.example.com/x", ngx + "permanent-redirect-code": "308"},
			want: routingAnnotations{PermanentRedirect: "https://www.example.com/x", PermanentRedirectCode: 308}},
		{name: "permanent-redirect variable", annotations: map[string]string{ngx + "permanent-redirect": "https://x.example$request_uri"}, bad: ngx + "permanent-redirect"},
		{name: "permanent-redirect relative", annotations: map[string]string{ngx + "permanent-redirect": "/x"}, bad: ngx + "permanent-redirect"},
		{name: "permanent-redirect ftp", annotations: map[string]string{ngx + "permanent-redirect": "ftp://x.example/"}, bad: ngx + "permanent-redirect"},
		{name: "permanent-redirect-code 200", annotations: map[string]string{ngx + "permanent-redirect-code": "200"}, bad: ngx + "permanent-redirect-code"},
		{name: "permanent-redirect-code text", annotations: map[string]string{ngx + "permanent-redirect-code": "moved"}, bad: ngx + "permanent-redirect-code"},
		{name: "temporal-redirect", annotations: map[string]string{ngx + "temporal-redirect": "http://a.example", ngx + "temporal-redirect-code": "307"},
			want: routingAnnotations{TemporalRedirect: "http://a.example", TemporalRedirectCode: 307}},
		{name: "temporal-redirect-code 304", annotations: map[string]string{ngx + "temporal-redirect-code": "304"}, bad: ngx + "temporal-redirect-code"},
		{name: "upstream-vhost", annotations: map[string]string{ngx + "upstream-vhost": "internal.example:8080"}, want: routingAnnotations{UpstreamVhost: "internal.example:8080"}},
		{name: "upstream-vhost ip", annotations: map[string]string{ngx + "upstream-vhost": "10.0.0.1"}, want: routingAnnotations{UpstreamVhost: "10.0.0.1"}},
		{name: "upstream-vhost variable", annotations: map[string]string{ngx + "upstream-vhost": "$host"}, bad: ngx + "upstream-vhost"},
		{name: "upstream-vhost bad port", annotations: map[string]string{ngx + "upstream-vhost": "a.example:99999"}, bad: ngx + "upstream-vhost"},
		{name: "x-forwarded-prefix", annotations: map[string]string{ngx + "x-forwarded-prefix": "/api"}, want: routingAnnotations{XForwardedPrefix: "/api"}},
		{name: "x-forwarded-prefix CRLF", annotations: map[string]string{ngx + "x-forwarded-prefix": "/a\r\nX-Evil: 1"}, bad: ngx + "x-forwarded-prefix"},
		{name: "cors defaults", annotations: map[string]string{ngx + "enable-cors": "true"}, want: routingAnnotations{EnableCORS: true}},
		{
			name: "cors all",
			annotations: map[string]string{ngx + "enable-cors": "true", ngx + "cors-allow-origin": "https://a.example, https://*.b.example:8443",
				ngx + "cors-allow-methods": "GET, POST", ngx + "cors-allow-headers": "X-A,X-B", ngx + "cors-expose-headers": "*",
				ngx + "cors-allow-credentials": "false", ngx + "cors-max-age": "600"},
			want: routingAnnotations{EnableCORS: true, CORS: corsAnnotations{
				AllowOrigin: []string{"https://a.example", "https://*.b.example:8443"}, AllowMethods: []string{"GET", "POST"},
				AllowHeaders: []string{"X-A", "X-B"}, ExposeHeaders: []string{"*"}, AllowCredentials: ptr(false), MaxAge: ptr(int32(600))}},
		},
		{name: "cors origin without scheme", annotations: map[string]string{ngx + "cors-allow-origin": "a.example"}, bad: ngx + "cors-allow-origin"},
		{name: "cors origin empty", annotations: map[string]string{ngx + "cors-allow-origin": " , "}, bad: ngx + "cors-allow-origin"},
		{name: "cors methods bad", annotations: map[string]string{ngx + "cors-allow-methods": "GET; DROP"}, bad: ngx + "cors-allow-methods"},
		{name: "cors headers bad", annotations: map[string]string{ngx + "cors-allow-headers": "X A"}, bad: ngx + "cors-allow-headers"},
		{name: "cors credentials bad", annotations: map[string]string{ngx + "cors-allow-credentials": "yes"}, bad: ngx + "cors-allow-credentials"},
		{name: "cors max-age negative", annotations: map[string]string{ngx + "cors-max-age": "-1"}, bad: ngx + "cors-max-age"},
		{name: "cors max-age overflow", annotations: map[string]string{ngx + "cors-max-age": "9999999999"}, bad: ngx + "cors-max-age"},
		{
			name: "canary header and weight",
			annotations: map[string]string{ngx + "canary": "true", ngx + "canary-weight": "20", ngx + "canary-weight-total": "1000",
				ngx + "canary-by-header": "X-Canary", ngx + "canary-by-header-value": "yes", ngx + "canary-by-cookie": "beta"},
			want: routingAnnotations{Canary: canaryAnnotations{Enabled: true, Weight: 20, WeightTotal: 1000, Header: "X-Canary", HeaderValue: "yes", Cookie: "beta"}},
		},
		{name: "canary pattern", annotations: map[string]string{ngx + "canary": "true", ngx + "canary-by-header": "X-C", ngx + "canary-by-header-pattern": "^(a|b)$"},
			want: routingAnnotations{Canary: canaryAnnotations{Enabled: true, Header: "X-C", HeaderPattern: "^(a|b)$"}}},
		{name: "canary pattern not RE2", annotations: map[string]string{ngx + "canary-by-header-pattern": "(?<=a)b"}, bad: ngx + "canary-by-header-pattern"},
		{name: "canary value without header", annotations: map[string]string{ngx + "canary": "true", ngx + "canary-by-header-value": "x"}, bad: ngx + "canary-by-header-value"},
		{name: "canary weight negative", annotations: map[string]string{ngx + "canary-weight": "-5"}, bad: ngx + "canary-weight"},
		{name: "canary weight total zero", annotations: map[string]string{ngx + "canary-weight-total": "0"}, bad: ngx + "canary-weight-total"},
		{name: "canary header name bad", annotations: map[string]string{ngx + "canary-by-header": "X Canary"}, bad: ngx + "canary-by-header"},
		{name: "canary cookie name bad", annotations: map[string]string{ngx + "canary-by-cookie": "a=b"}, bad: ngx + "canary-by-cookie"},
		{name: "canary bad", annotations: map[string]string{ngx + "canary": "sometimes"}, bad: ngx + "canary"},
		{
			name: "proxy ssl",
			annotations: map[string]string{ngx + "proxy-ssl-secret": "ns/backend-tls", ngx + "proxy-ssl-verify": "on",
				ngx + "proxy-ssl-name": "Backend.example", ngx + "proxy-ssl-server-name": "on", ngx + "proxy-ssl-verify-depth": "2"},
			want: routingAnnotations{ProxySSL: proxySSLAnnotations{Secret: "ns/backend-tls", Verify: true, Name: "backend.example", ServerName: true, VerifyDepth: 2}},
		},
		{name: "proxy ssl secret without namespace", annotations: map[string]string{ngx + "proxy-ssl-secret": "backend-tls"}, bad: ngx + "proxy-ssl-secret"},
		{name: "proxy ssl verify maybe", annotations: map[string]string{ngx + "proxy-ssl-verify": "maybe"}, bad: ngx + "proxy-ssl-verify"},
		{name: "proxy ssl verify without secret", annotations: map[string]string{ngx + "proxy-ssl-verify": "on"}, bad: ngx + "proxy-ssl-verify"},
		{name: "proxy ssl verify without name", annotations: map[string]string{ngx + "proxy-ssl-verify": "on", ngx + "proxy-ssl-secret": "ns/s"}, bad: ngx + "proxy-ssl-verify"},
		{name: "proxy ssl name bad", annotations: map[string]string{ngx + "proxy-ssl-name": "a b"}, bad: ngx + "proxy-ssl-name"},
		{name: "proxy ssl depth zero", annotations: map[string]string{ngx + "proxy-ssl-verify-depth": "0"}, bad: ngx + "proxy-ssl-verify-depth"},
		// Prefixes.
		{name: "nodegress wins over nginx", annotations: map[string]string{ngx + "app-root": "/nginx", AnnotationPrefix + "app-root": "/ours"},
			want: routingAnnotations{AppRoot: "/ours"}},
		{name: "an invalid nginx value behind a nodegress one is not read", annotations: map[string]string{ngx + "use-regex": "bad", AnnotationPrefix + "use-regex": "true"},
			want: routingAnnotations{UseRegex: true}},
		{name: "nodegress-only names are unknown under nginx", annotations: map[string]string{ngx + "load-balance": "ewma", ngx + "proxy-protocol": "v1"},
			unknown: []string{ngx + "load-balance", ngx + "proxy-protocol"}},
		{name: "unsupported nginx annotations are returned", annotations: map[string]string{ngx + "proxy-buffering": "on", ngx + "use-regex": "true"},
			want: routingAnnotations{UseRegex: true}, unknown: []string{ngx + "proxy-buffering"}},
		// Refusals.
		{name: "configuration snippet", annotations: map[string]string{ngx + "configuration-snippet": "deny all;", ngx + "use-regex": "bad"},
			bad: ngx + "configuration-snippet", refused: true},
		{name: "server snippet under our prefix", annotations: map[string]string{AnnotationPrefix + "server-snippet": "x"}, bad: AnnotationPrefix + "server-snippet", refused: true},
		{name: "any snippet", annotations: map[string]string{ngx + "stream-snippet": "x", ngx + "auth-snippet": "y"}, bad: ngx + "auth-snippet", refused: true},
		{name: "modsecurity snippet", annotations: map[string]string{ngx + "modsecurity-snippet": "x"}, bad: ngx + "modsecurity-snippet", refused: true},
		{name: "client certificate auth", annotations: map[string]string{ngx + "auth-tls-verify-client": "on"}, bad: ngx + "auth-tls-verify-client", refused: true},
		{name: "modsecurity", annotations: map[string]string{ngx + "enable-modsecurity": "true"}, bad: ngx + "enable-modsecurity", refused: true},
		{name: "authentication setting not implemented", annotations: map[string]string{ngx + "auth-always-set-cookie": "true"}, bad: ngx + "auth-always-set-cookie", refused: true},
		{name: "client certificate authentication", annotations: map[string]string{AnnotationPrefix + "auth-tls-verify-client": "on"}, bad: AnnotationPrefix + "auth-tls-verify-client", refused: true},
		// Implemented access controls are read, not refused (their values:
		// TestParseAccessAnnotations).
		{name: "source ranges are read", annotations: map[string]string{ngx + "whitelist-source-range": "10.0.0.0/8", AnnotationPrefix + "denylist-source-range": "10.1.0.0/16"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, unknown, err := parseAnnotations(tt.annotations)
			if !slices.Equal(unknown, tt.unknown) {
				t.Errorf("unknown %q, want %q", unknown, tt.unknown)
			}
			if tt.bad != "" {
				var ae *AnnotationError
				if !errors.As(err, &ae) {
					t.Fatalf("err %v, want an *AnnotationError", err)
				}
				if ae.Annotation != tt.bad {
					t.Errorf("error names %s, want %s (%v)", ae.Annotation, tt.bad, err)
				}
				if errors.Is(err, errAnnotationRefused) != tt.refused {
					t.Errorf("refused: %v, want %v (%v)", errors.Is(err, errAnnotationRefused), tt.refused, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if !reflect.DeepEqual(got.Routing, tt.want) {
				t.Errorf("got %+v\nwant %+v", got.Routing, tt.want)
			}
		})
	}
}

// TestAnnotationRegistry: no name is registered twice (each file owning a
// group of annotations registers its own), and every nodegress-only name
// has a parser.
func TestAnnotationRegistry(t *testing.T) {
	if len(duplicateAnnotations) > 0 {
		t.Errorf("annotations registered twice: %v", duplicateAnnotations)
	}
	for name := range nodegressOnlyAnnotations {
		if annotationParsers[name] == nil {
			t.Errorf("nodegress-only annotation %s has no parser", name)
		}
	}
}

// TestParseAnnotationsBothPrefixes: every parser reads the same value
// the same way under both prefixes (the nodegress-only ones under
// nodegress.io/ only).
func TestParseAnnotationsBothPrefixes(t *testing.T) {
	samples := map[string]string{
		"ssl-redirect": "true", "backend-protocol": "GRPCS", "proxy-body-size": "8m", "proxy-connect-timeout": "7",
		"proxy-read-timeout": "1m", "proxy-send-timeout": "30", "use-regex": "true", "rewrite-target": "/$1", "force-ssl-redirect": "true",
		"app-root": "/app", "permanent-redirect": "https://a.example", "permanent-redirect-code": "308",
		"temporal-redirect": "https://b.example", "temporal-redirect-code": "303", "upstream-vhost": "v.example",
		"x-forwarded-prefix": "/p", "enable-cors": "true", "cors-allow-origin": "*", "cors-allow-methods": "GET",
		"cors-allow-headers": "X-A", "cors-expose-headers": "X-B", "cors-allow-credentials": "false", "cors-max-age": "5",
		"canary": "true", "canary-weight": "5", "canary-weight-total": "200", "canary-by-header": "X-C",
		"canary-by-header-value": "v", "canary-by-header-pattern": "v.*", "canary-by-cookie": "c",
		"proxy-ssl-secret": "ns/s", "proxy-ssl-verify": "on", "proxy-ssl-name": "n.example",
		"proxy-ssl-server-name": "on", "proxy-ssl-verify-depth": "3", "ssl-passthrough": "true",
		"whitelist-source-range": "10.0.0.0/8", "allowlist-source-range": "10.0.0.0/8", "denylist-source-range": "10.1.0.0/16",
		"limit-rps": "5", "limit-rpm": "300", "limit-connections": "10", "limit-burst-multiplier": "3", "limit-whitelist": "10.2.0.0/16",
		"affinity": "cookie", "affinity-mode": "persistent", "session-cookie-name": "S", "session-cookie-path": "/",
		"session-cookie-max-age": "60", "session-cookie-expires": "60", "session-cookie-samesite": "Lax", "session-cookie-secure": "true",
		"session-cookie-change-on-failure": "true",
		"auth-type":                        "basic", "auth-secret": "users", "auth-secret-type": "auth-file", "auth-realm": "r",
		"auth-url": "http://auth.example/check", "auth-method": "GET", "auth-signin": "https://login.example/", "auth-signin-redirect-param": "rd",
		"auth-response-headers": "X-User", "auth-request-redirect": "https://app.example/", "auth-cache-key": "$remote_user",
		"auth-cache-duration": "200 10m",
		"custom-http-errors":  "404,503", "default-backend": "errors",
	}
	for name := range annotationParsers {
		if _, ok := samples[name]; !ok && !nodegressOnlyAnnotations[name] {
			t.Errorf("no sample value for %s: add one", name)
		}
	}
	with := func(prefix, name, v string) map[string]string {
		m := map[string]string{prefix + name: v}
		if name == "proxy-ssl-verify" {
			// Needed by verify on.
			m[prefix+"proxy-ssl-secret"], m[prefix+"proxy-ssl-name"] = "ns/s", "n.example"
		}
		return m
	}
	for name, v := range samples {
		ours, _, err1 := parseAnnotations(with(AnnotationPrefix, name, v))
		theirs, _, err2 := parseAnnotations(with(NginxAnnotationPrefix, name, v))
		if err1 != nil || err2 != nil {
			t.Errorf("%s=%q: errors %v, %v", name, v, err1, err2)
			continue
		}
		if reflect.DeepEqual(ours, ingressAnnotations{}) {
			t.Errorf("%s=%q changed nothing", name, v)
		}
		if !reflect.DeepEqual(ours, theirs) {
			t.Errorf("%s=%q: nodegress.io/ %+v, nginx %+v", name, v, ours, theirs)
		}
	}
}
