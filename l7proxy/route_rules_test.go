package l7proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestRouteRules runs Ingress routes that carry rules (what the
// controller makes of ingress-nginx annotations) through every client
// side and upstream kind: regular expression paths and their precedence,
// capture-group rewrites, canaries by header, cookie and weight, fixed
// redirects, the app root redirect, the upstream Host and added headers.
func TestRouteRules(t *testing.T) {
	for _, pc := range pipelineCases {
		t.Run(pc.name, func(t *testing.T) {
			a, b := startGatewayEcho(t, "a"), startGatewayEcho(t, "b")
			ups := []Upstream{{Name: "a", Protocol: pc.protocol, Endpoints: ep(a)}, {Name: "b", Protocol: pc.protocol, Endpoints: ep(b)}}
			toA := []WeightedBackend{{Upstream: "a", Weight: 1}}
			toB := []WeightedBackend{{Upstream: "b", Weight: 1}}
			const host = "gw.example"
			canary := []HTTPRouteRule{
				{Matches: []HTTPMatch{{Headers: []ValueMatch{{Name: "X-Canary", Value: "always"}}}}, Backends: toB},
				{Matches: []HTTPMatch{{Headers: []ValueMatch{{Name: "X-Canary", Value: "never"}}}}, Backends: toA},
				{Matches: []HTTPMatch{{Cookies: []ValueMatch{{Name: "canary", Value: "always"}}}}, Backends: toB},
				{Matches: []HTTPMatch{{Cookies: []ValueMatch{{Name: "canary", Value: "never"}}}}, Backends: toA},
				{Backends: []WeightedBackend{{Upstream: "a", Weight: 100}, {Upstream: "b", Weight: 0}}},
			}
			routes := []Route{
				{Host: host, Path: "/", Upstream: "b", Ingress: "ns/plain"},
				{Host: host, Path: "/api/v2/users/list", Upstream: "b", Ingress: "ns/plain"},
				{Host: host, Path: "/api/v2/exact", PathType: PathExact, Upstream: "b", Ingress: "ns/plain"},
				{Host: host, Path: "/api/v[0-9]+(/|$)(.*)", PathType: PathRegex, Upstream: "a", Ingress: "ns/regex",
					Rules: []HTTPRouteRule{{Backends: toA, Filters: Filters{
						Rewrite: &Rewrite{Hostname: "vhost.internal", Path: &PathModifier{ReplaceRegexMatch: true,
							Pattern: "/api/v[0-9]+(/|$)(.*)", Value: "/v/$2"}},
						RequestHeaders: &HeaderEdit{Set: []Field{{"X-Forwarded-Prefix", "/api"}}},
					}}}},
				// Shorter, listed later: the longer expression is tried first.
				{Host: host, Path: "/api", PathType: PathRegex, Upstream: "b", Ingress: "ns/regex2"},
				{Host: host, Path: "/canary", Upstream: "a", Ingress: "ns/canary", Rules: canary},
				{Host: host, Path: "/moved", Ingress: "ns/moved", Rules: []HTTPRouteRule{{Filters: Filters{
					Redirect: &Redirect{Location: "https://new.example/x", StatusCode: http.StatusPermanentRedirect}}}}},
				{Host: "root.example", Path: "/", Upstream: "a", Ingress: "ns/root", Rules: []HTTPRouteRule{
					{Matches: []HTTPMatch{{PathType: PathExact, Path: "/"}}, Filters: Filters{
						Redirect: &Redirect{Path: &PathModifier{ReplaceFullPath: true, Value: "/app"}, StatusCode: http.StatusFound}}},
					{Backends: toA},
				}},
			}
			p := startProxy(t, Options{}, Config{Upstreams: ups, Routes: routes,
				Certificates: []Certificate{{Cert: makeCert(t, "gw", host, "root.example")}}})
			tests := []struct {
				name, host, path string
				hdr              map[string]string
				code             int
				backend, uri     string
				location         string
				vhost            string
				prefixHeader     string
			}{
				{name: "regex path, case-insensitive, rewritten by groups", path: "/API/v2/users?x=1", code: 200, backend: "a",
					uri: "/v/users?x=1", vhost: "vhost.internal", prefixHeader: "/api"},
				{name: "regex not anchored at the end", path: "/api/v10", code: 200, backend: "a", uri: "/v/", prefixHeader: "/api"},
				{name: "regex beats a longer prefix", path: "/api/v2/users/list", code: 200, backend: "a", uri: "/v/users/list", prefixHeader: "/api"},
				{name: "exact beats regex", path: "/api/v2/exact", code: 200, backend: "b", uri: "/api/v2/exact"},
				{name: "shorter regex when the longer does not match", path: "/apix", code: 200, backend: "b", uri: "/apix"},
				{name: "regex anchored at the start", path: "/x/api/v2", code: 200, backend: "b", uri: "/x/api/v2"},
				{name: "canary weight 0", path: "/canary", code: 200, backend: "a"},
				{name: "canary header always", path: "/canary", hdr: map[string]string{"X-Canary": "always"}, code: 200, backend: "b"},
				{name: "canary header never beats cookie", path: "/canary",
					hdr: map[string]string{"X-Canary": "never", "Cookie": "canary=always"}, code: 200, backend: "a"},
				{name: "canary header other value falls to cookie", path: "/canary",
					hdr: map[string]string{"X-Canary": "maybe", "Cookie": "a=1; canary=always"}, code: 200, backend: "b"},
				{name: "canary cookie never", path: "/canary", hdr: map[string]string{"Cookie": "canary=never"}, code: 200, backend: "a"},
				{name: "fixed redirect", path: "/moved/y?q=1", code: http.StatusPermanentRedirect, location: "https://new.example/x"},
				{name: "app root", host: "root.example", path: "/?q=1", code: http.StatusFound, location: "/app?q=1"},
				{name: "app root only for /", host: "root.example", path: "/other", code: 200, backend: "a", uri: "/other"},
			}
			for _, tt := range tests {
				h := tt.host
				if h == "" {
					h = host
				}
				c, base := pc.client(p, h)
				c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
				req, _ := http.NewRequest(http.MethodGet, base+tt.path, nil)
				req.Host = h
				for k, v := range tt.hdr {
					req.Header.Set(k, v)
				}
				resp, err := c.Do(req)
				if err != nil {
					t.Fatalf("%s: %v", tt.name, err)
				}
				raw, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tt.code {
					t.Errorf("%s: status %d, want %d (%s)", tt.name, resp.StatusCode, tt.code, raw)
					continue
				}
				if tt.location != "" && !strings.HasSuffix(resp.Header.Get("Location"), tt.location) {
					t.Errorf("%s: Location %q, want ...%q", tt.name, resp.Header.Get("Location"), tt.location)
				}
				if tt.code != 200 {
					continue
				}
				var e echoed
				if err := json.Unmarshal(raw, &e); err != nil {
					t.Fatalf("%s: %q: %v", tt.name, raw, err)
				}
				if e.Backend != tt.backend {
					t.Errorf("%s: backend %q, want %q", tt.name, e.Backend, tt.backend)
				}
				if tt.uri != "" && e.URI != tt.uri {
					t.Errorf("%s: backend saw %q, want %q", tt.name, e.URI, tt.uri)
				}
				if tt.vhost != "" && e.Host != tt.vhost {
					t.Errorf("%s: backend Host %q, want %q", tt.name, e.Host, tt.vhost)
				}
				if got := e.Headers.Get("X-Forwarded-Prefix"); got != tt.prefixHeader {
					t.Errorf("%s: X-Forwarded-Prefix %q, want %q", tt.name, got, tt.prefixHeader)
				}
			}
		})
	}
}

// TestRouteRulesCompile: invalid regular expressions and rewrite
// templates are reported and their route skipped; the rest serves.
func TestRouteRulesCompile(t *testing.T) {
	rw := func(pattern, value string) []HTTPRouteRule {
		return []HTTPRouteRule{{Backends: []WeightedBackend{{Upstream: "a", Weight: 1}},
			Filters: Filters{Rewrite: &Rewrite{Path: &PathModifier{ReplaceRegexMatch: true, Pattern: pattern, Value: value}}}}}
	}
	tests := []struct {
		name  string
		route Route
		want  string // error substring, "" for none
	}{
		{name: "valid", route: Route{Path: "/a(.*)", PathType: PathRegex, Upstream: "a", Rules: rw("/a(.*)", "/$1")}},
		{name: "bad path regex", route: Route{Path: "/a(", PathType: PathRegex, Upstream: "a"}, want: "invalid regular expression"},
		{name: "lookahead is not RE2", route: Route{Path: "/(?!x)", PathType: PathRegex, Upstream: "a"}, want: "invalid regular expression"},
		{name: "relative regex", route: Route{Path: "a.*", PathType: PathRegex, Upstream: "a"}, want: "must start with '/'"},
		{name: "nginx variable in target", route: Route{Path: "/a", PathType: PathRegex, Upstream: "a", Rules: rw("/a", "/$host")}, want: "only $1 to $9"},
		{name: "dollar at the end", route: Route{Path: "/a", PathType: PathRegex, Upstream: "a", Rules: rw("/a", "/x$")}, want: "only $1 to $9"},
		{name: "relative target", route: Route{Path: "/a", PathType: PathRegex, Upstream: "a", Rules: rw("/a", "x")}, want: "must start with '/'"},
		{name: "rule with a path prefix", route: Route{Path: "/a", Upstream: "a", Rules: []HTTPRouteRule{{Matches: []HTTPMatch{{Path: "/b"}}}}},
			want: "may match an Exact path only"},
		{name: "no upstream, no rules", route: Route{Path: "/a"}, want: "names no upstream"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.route.Ingress = "ns/x"
			_, errs := Compile(Config{Routes: []Route{tt.route}, Upstreams: []Upstream{{Name: "a"}}})
			if tt.want == "" {
				if len(errs) != 0 {
					t.Fatalf("errors %v", errs)
				}
				return
			}
			if len(errs) != 1 || !strings.Contains(errs[0].Error(), tt.want) {
				t.Fatalf("errors %v, want one with %q", errs, tt.want)
			}
		})
	}
}

func TestRewriteRegex(t *testing.T) {
	tests := []struct{ pattern, tmpl, path, want string }{
		{"/something(/|$)(.*)", "/$2", "/something/new", "/new"},
		{"/something(/|$)(.*)", "/$2", "/something", "/"},
		{"/something(/|$)(.*)", "/$2", "/SOMETHING/x", "/x"},
		{"/a", "/", "/a/b/c", "/"},             // the whole path is replaced, as nginx does
		{"/a(x)?", "/b$1c", "/a", "/bc"},       // an unmatched group is empty
		{"/a", "/b$9", "/a", "/b"},             // a group that does not exist too
		{"/nomatch", "/x", "/other", "/other"}, // no match: unchanged
		{"/(.*)", "$1", "/foo", "/foo"},        // a leading '/' is kept
		{"/(v)(.*)", "/$2/$1$1", "/v12", "/12/vv"},
	}
	for _, tt := range tests {
		pm := &PathModifier{ReplaceRegexMatch: true, Pattern: tt.pattern, Value: tt.tmpl}
		re, err := compileRewrite(pm)
		if err != nil {
			t.Fatalf("%+v: %v", tt, err)
		}
		if got := rewriteRegex(re, tt.tmpl, tt.path); got != tt.want {
			t.Errorf("rewrite %q by %q → %q on %q = %q, want %q", tt.path, tt.pattern, tt.tmpl, tt.path, got, tt.want)
		}
	}
}

// TestRouteRulesCORSAndWeights: an Ingress route's CORS rule answers
// preflights itself and marks allowed origins' responses; a canary's
// weights spread requests over both backends.
func TestRouteRulesCORSAndWeights(t *testing.T) {
	for _, pc := range pipelineCases {
		t.Run(pc.name, func(t *testing.T) {
			a, b := startGatewayEcho(t, "a"), startGatewayEcho(t, "b")
			ups := []Upstream{{Name: "a", Protocol: pc.protocol, Endpoints: ep(a)}, {Name: "b", Protocol: pc.protocol, Endpoints: ep(b)}}
			const host = "gw.example"
			cors := &CORS{AllowOrigins: []string{"https://app.example"}, AllowMethods: []string{"GET", "PUT"},
				AllowHeaders: []string{"X-A"}, AllowCredentials: true, MaxAge: 1728000}
			routes := []Route{
				{Host: host, Path: "/cors", Upstream: "a", Ingress: "ns/cors", Rules: []HTTPRouteRule{
					{Backends: []WeightedBackend{{Upstream: "a", Weight: 1}}, Filters: Filters{CORS: cors}}}},
				{Host: host, Path: "/split", Upstream: "a", Ingress: "ns/split", Rules: []HTTPRouteRule{
					{Backends: []WeightedBackend{{Upstream: "a", Weight: 50}, {Upstream: "b", Weight: 50}}}}},
			}
			p := startProxy(t, Options{}, Config{Upstreams: ups, Routes: routes,
				Certificates: []Certificate{{Cert: makeCert(t, "gw", host)}}})

			resp, _ := gwDo(t, pc, p, http.MethodOptions, "/cors", map[string]string{
				"Origin": "https://app.example", "Access-Control-Request-Method": "PUT"})
			if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" ||
				resp.Header.Get("Access-Control-Max-Age") != "1728000" || resp.Header.Get("Access-Control-Allow-Credentials") != "true" {
				t.Errorf("preflight: %d %v", resp.StatusCode, resp.Header)
			}
			resp, e := gwDo(t, pc, p, http.MethodGet, "/cors", map[string]string{"Origin": "https://app.example"})
			if resp.StatusCode != 200 || e.Backend != "a" || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" {
				t.Errorf("allowed origin: %d from %q, %v", resp.StatusCode, e.Backend, resp.Header)
			}
			resp, _ = gwDo(t, pc, p, http.MethodGet, "/cors", map[string]string{"Origin": "https://evil.example"})
			if resp.Header.Get("Access-Control-Allow-Origin") != "" {
				t.Errorf("other origin got CORS fields: %v", resp.Header)
			}

			seen := map[string]int{}
			for range 40 {
				_, e := gwDo(t, pc, p, http.MethodGet, "/split", nil)
				seen[e.Backend]++
			}
			if seen["a"] == 0 || seen["b"] == 0 || seen["a"]+seen["b"] != 40 {
				t.Errorf("40 requests split %v, want both backends", seen)
			}
		})
	}
}
