package l7proxy

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestExplainRoute(t *testing.T) {
	p, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	ep := func(s string, terminating bool) Endpoint {
		return Endpoint{Addr: netip.MustParseAddrPort(s), Terminating: terminating}
	}
	gw := netip.MustParseAddrPort("192.0.2.50:80")
	tlsFront := netip.MustParseAddrPort("192.0.2.50:443")
	cfg := Config{
		Upstreams: []Upstream{
			{Name: "shop", Endpoints: []Endpoint{ep("10.0.1.5:8080", false)}},
			{Name: "gone", Endpoints: []Endpoint{ep("10.0.1.6:8080", true)}},
			{Name: "fallback", Endpoints: []Endpoint{ep("10.0.1.9:8080", false)}},
			{Name: "canary", Endpoints: []Endpoint{ep("10.0.1.7:8080", false)}},
		},
		Routes: []Route{
			{Host: "shop.example", Path: "/cart", Upstream: "shop", Ingress: "ns/shop"},
			{Host: "shop.example", Path: "/secure", Upstream: "shop", Ingress: "ns/secure", Options: RouteOptions{SSLRedirect: true}},
			{Host: "shop.example", Path: "/admin", Upstream: "shop", Ingress: "ns/admin",
				Options: RouteOptions{Access: &Access{Allow: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}}},
			{Host: "shop.example", Path: "/old", Upstream: "gone", Ingress: "ns/old"},
			{Host: "shop.example", Path: "/rescued", Upstream: "gone", Ingress: "ns/rescued",
				Options: RouteOptions{Access: &Access{DefaultUpstream: "fallback"}}},
			{Host: "shop.example", Path: "/missing", Upstream: "nope", Ingress: "ns/missing"},
			{Host: "shop.example", Path: "/moved", Ingress: "ns/moved", Rules: []HTTPRouteRule{
				{Filters: Filters{Redirect: &Redirect{Location: "https://new.example/", StatusCode: 301}}},
			}},
			{Host: "shop.example", Path: "/beta", Upstream: "shop", Ingress: "ns/beta", Rules: []HTTPRouteRule{
				{Matches: []HTTPMatch{{Headers: []ValueMatch{{Name: "X-Canary", Value: "on"}}}}, Backends: []WeightedBackend{{Upstream: "canary", Weight: 1}}},
				{Backends: []WeightedBackend{{Upstream: "shop", Weight: 1}}},
			}},
		},
		Listeners: []Listener{
			{Name: "ns/gw/http", Frontends: []netip.AddrPort{gw}, Hostname: "api.example", Routes: []HTTPRoute{
				{Source: "ns/api", Rules: []HTTPRouteRule{{
					Matches:  []HTTPMatch{{PathType: PathPrefix, Path: "/v1"}},
					Backends: []WeightedBackend{{Upstream: "shop", Weight: 3}, {Upstream: "canary", Weight: 1}},
					Filters:  Filters{Rewrite: &Rewrite{Path: &PathModifier{ReplacePrefixMatch: true, Value: "/"}}},
				}}},
			}},
			{Name: "ns/gw/tls", Kind: ListenerTLSPassthrough, Frontends: []netip.AddrPort{tlsFront}, TLSRoutes: []TLSRoute{
				{Source: "ns/pass", Hostnames: []string{"pass.example"}, Backends: []WeightedBackend{{Upstream: "shop", Weight: 1}}},
			}},
		},
	}
	if errs := p.Update(cfg); len(errs) > 0 {
		t.Fatal(errs)
	}
	outside := netip.MustParseAddr("203.0.113.7")
	tests := []struct {
		name       string
		q          RouteQuery
		wantStatus int
		wantReason string
		wantSource string
		// wantEndpoints are the first backend's; wantText is in the
		// location, match or a note.
		wantEndpoints []string
		wantText      string
	}{
		{"Ingress prefix", RouteQuery{Host: "shop.example", Path: "/cart/items"}, 0, RouteForward, "ns/shop", []string{"10.0.1.5:8080"}, "shop.example/cart (Prefix)"},
		{"host with port and capitals", RouteQuery{Host: "Shop.Example:80", Path: "/cart"}, 0, RouteForward, "ns/shop", []string{"10.0.1.5:8080"}, ""},
		{"no route", RouteQuery{Host: "shop.example", Path: "/checkout"}, 404, RouteNoRoute, "", nil, "no Ingress rule"},
		{"other host", RouteQuery{Host: "other.example", Path: "/cart"}, 404, RouteNoRoute, "", nil, ""},
		{"dot segment", RouteQuery{Host: "shop.example", Path: "/x/../cart"}, 400, RouteBadPath, "", nil, "dot segments"},
		{"merged slashes", RouteQuery{Host: "shop.example", Path: "//cart"}, 0, RouteForward, "ns/shop", []string{"10.0.1.5:8080"}, "merged"},
		{"SSL redirect over HTTP", RouteQuery{Host: "shop.example", Path: "/secure"}, 308, RouteSSLRedirect, "ns/secure", nil, "https://shop.example/secure"},
		{"no SSL redirect over HTTPS", RouteQuery{Host: "shop.example", Path: "/secure", TLS: true}, 0, RouteForward, "ns/secure", []string{"10.0.1.5:8080"}, ""},
		{"client outside the allowed ranges", RouteQuery{Host: "shop.example", Path: "/admin", Client: outside}, 403, RouteSourceRange, "ns/admin", nil, "203.0.113.7 is not in"},
		{"client inside the allowed ranges", RouteQuery{Host: "shop.example", Path: "/admin", Client: netip.MustParseAddr("10.1.2.3")}, 0, RouteForward, "ns/admin", []string{"10.0.1.5:8080"}, "passes the route's source ranges"},
		{"terminating endpoints only", RouteQuery{Host: "shop.example", Path: "/old"}, 503, RouteNoEndpoints, "ns/old", []string{"10.0.1.6:8080 (terminating)"}, "no endpoint takes new requests"},
		{"default backend of the access control", RouteQuery{Host: "shop.example", Path: "/rescued"}, 0, RouteForward, "ns/rescued", nil, "served by the default backend fallback"},
		{"Service unknown to the proxy", RouteQuery{Host: "shop.example", Path: "/missing"}, 503, RouteUnknownServiceName, "ns/missing", nil, "not known"},
		{"redirect rule", RouteQuery{Host: "shop.example", Path: "/moved"}, 301, RouteRedirect, "ns/moved", nil, "https://new.example/"},
		{"header rule skipped", RouteQuery{Host: "shop.example", Path: "/beta"}, 0, RouteForward, "ns/beta", []string{"10.0.1.5:8080"}, "header X-Canary"},
		{"Gateway rule", RouteQuery{Frontend: gw, Host: "api.example", Path: "/v1/users"}, 0, RouteForward, "ns/api", []string{"10.0.1.5:8080"}, "path rewritten"},
		{"Gateway frontend without a matching rule", RouteQuery{Frontend: gw, Host: "api.example", Path: "/v2"}, 404, RouteNoRoute, "", nil, "no HTTPRoute rule"},
		{"Gateway frontend does not serve Ingress hosts", RouteQuery{Frontend: gw, Host: "shop.example", Path: "/cart"}, 404, RouteNoRoute, "", nil, ""},
		{"TLS passthrough", RouteQuery{Frontend: tlsFront, Host: "pass.example", TLS: true}, 0, RoutePassthrough, "ns/pass", []string{"10.0.1.5:8080"}, "passed through"},
		{"TLS passthrough without a route", RouteQuery{Frontend: tlsFront, Host: "unknown.example", TLS: true}, 0, RouteNoRoute, "", nil, "connection is closed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := p.ExplainRoute(tc.q)
			if a.Status != tc.wantStatus || a.Reason != tc.wantReason || a.Source != tc.wantSource {
				t.Fatalf("got %d %s from %q, want %d %s from %q: %+v", a.Status, a.Reason, a.Source, tc.wantStatus, tc.wantReason, tc.wantSource, a)
			}
			if tc.wantEndpoints != nil && (len(a.Backends) == 0 || !slices.Equal(a.Backends[0].Endpoints, tc.wantEndpoints)) {
				t.Errorf("backends %+v, want endpoints %v first", a.Backends, tc.wantEndpoints)
			}
			text := a.Location + "|" + a.Match + "|" + strings.Join(a.Notes, "|")
			if !strings.Contains(text, tc.wantText) {
				t.Errorf("answer %q lacks %q", text, tc.wantText)
			}
		})
	}
	// The Gateway rule's weighted backends, both listed.
	a := p.ExplainRoute(RouteQuery{Frontend: gw, Host: "api.example", Path: "/v1"})
	if len(a.Backends) != 2 || a.Backends[0].Weight != 3 || a.Backends[1].Upstream != "canary" || a.Listener != "ns/gw/http" {
		t.Errorf("Gateway answer %+v", a)
	}
}
