package l7proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"sync/atomic"
	"testing"
)

func TestMergeSlashes(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/", "/"},
		{"//", "/"},
		{"//admin/x", "/admin/x"},
		{"/admin//x", "/admin/x"},
		{"///admin///x///", "/admin/x/"},
		{"/a/b", "/a/b"},
	}
	for _, tt := range tests {
		if got := mergeSlashes(tt.in); got != tt.want {
			t.Errorf("mergeSlashes(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestMergedSlashesRouting checks that consecutive slashes cannot move a
// request from a route with access control to another route of the same
// host, through every client side and upstream kind, for Ingress and
// Gateway routes: the path is routed and forwarded with its slashes
// merged, the query untouched.
func TestMergedSlashesRouting(t *testing.T) {
	type want struct {
		status  int
		backend string
		uri     string
	}
	tests := []struct {
		name    string
		gateway bool
		path    string
		want    want
	}{
		{name: "ingress protected path", path: "/admin/x", want: want{status: 403}},
		{name: "ingress leading double slash", path: "//admin/x", want: want{status: 403}},
		{name: "ingress many slashes", path: "///admin///x", want: want{status: 403}},
		{name: "ingress inner double slash", path: "/admin//x", want: want{status: 403}},
		{name: "ingress open path forwarded merged", path: "//open//y?q=a//b", want: want{200, "open", "/open/y?q=a//b"}},
		{name: "ingress plain path unchanged", path: "/open/y?q=1", want: want{200, "open", "/open/y?q=1"}},
		{name: "gateway leading double slash", gateway: true, path: "//admin/x", want: want{200, "admin", "/admin/x"}},
		{name: "gateway rewrite of merged path", gateway: true, path: "/api//v1/x?q=//", want: want{200, "admin", "/v2/v1/x?q=//"}},
		{name: "gateway open path forwarded merged", gateway: true, path: "/open//y", want: want{200, "open", "/open/y"}},
	}
	for _, pc := range pipelineCases {
		t.Run(pc.name, func(t *testing.T) {
			admin, open := startGatewayEcho(t, "admin"), startGatewayEcho(t, "open")
			ups := []Upstream{
				{Name: "admin", Protocol: pc.protocol, Endpoints: ep(admin)},
				{Name: "open", Protocol: pc.protocol, Endpoints: ep(open)},
			}
			cert := Certificate{Cert: makeCert(t, "slashes", "a.example", "gw.example")}
			deny := &Access{Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
			routes := []Route{
				{Host: "a.example", Path: "/admin", Upstream: "admin", Ingress: "ns/admin", Options: RouteOptions{Access: deny}},
				{Host: "a.example", Path: "/", Upstream: "open", Ingress: "ns/open"},
			}
			p := startProxy(t, Options{}, Config{Upstreams: ups, Certificates: []Certificate{cert}, Routes: routes})
			gp := startProxy(t, Options{}, Config{Upstreams: ups, Certificates: []Certificate{cert}})
			gfront := netip.MustParseAddrPort(gp.httpAddr)
			if pc.h2 {
				gfront = netip.MustParseAddrPort(gp.httpsAddr)
			}
			listener := Listener{Name: "ns/gw/http", Frontends: []netip.AddrPort{gfront}, Routes: []HTTPRoute{{
				Source: "ns/route", Hostnames: []string{"gw.example"},
				Rules: []HTTPRouteRule{
					{Backends: []WeightedBackend{{Upstream: "open", Weight: 1}}},
					{Matches: []HTTPMatch{{PathType: PathPrefix, Path: "/admin"}}, Backends: []WeightedBackend{{Upstream: "admin", Weight: 1}}},
					{Matches: []HTTPMatch{{PathType: PathPrefix, Path: "/api/v1"}}, Backends: []WeightedBackend{{Upstream: "admin", Weight: 1}},
						Filters: Filters{Rewrite: &Rewrite{Path: &PathModifier{ReplacePrefixMatch: true, Value: "/v2/v1"}}}},
				},
			}}}
			if errs := gp.Update(Config{Upstreams: ups, Certificates: []Certificate{cert}, Listeners: []Listener{listener}}); len(errs) > 0 {
				t.Fatal(errs)
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					host, px := "a.example", p
					if tt.gateway {
						host, px = "gw.example", gp
					}
					c, base := pc.client(px, host)
					req, err := http.NewRequest(http.MethodGet, base+tt.path, nil)
					if err != nil {
						t.Fatal(err)
					}
					req.Host = host
					resp, err := c.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					defer resp.Body.Close()
					raw, _ := io.ReadAll(resp.Body)
					got := want{status: resp.StatusCode}
					if resp.StatusCode == http.StatusOK {
						var e echoed
						if err := json.Unmarshal(raw, &e); err != nil {
							t.Fatalf("%q: %v", raw, err)
						}
						got.backend, got.uri = e.Backend, e.URI
					}
					if got != tt.want {
						t.Errorf("GET %s: got %+v, want %+v", tt.path, got, tt.want)
					}
				})
			}
		})
	}
}

// TestMergedSlashesAuthURI checks that the auth service is told the
// request URI the backend gets, slashes merged: an auth service deciding
// by path must not see "//admin" while the backend serves "/admin".
func TestMergedSlashesAuthURI(t *testing.T) {
	var seen atomic.Value
	auth := startBackend(t, "auth", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.Header.Get("X-Original-Uri"))
	}))
	app := startGatewayEcho(t, "app")
	p := startProxy(t, Options{}, Config{
		Routes: []Route{{Host: "a.example", Path: "/", Upstream: "app", Ingress: "ns/ing", Options: RouteOptions{Access: &Access{
			ExternalAuth: &ExternalAuth{URL: "http://" + auth.addr.String() + "/check"}}}}},
		Upstreams:    []Upstream{{Name: "app", Endpoints: ep(app)}},
		Certificates: []Certificate{{Cert: makeCert(t, "slashes", "a.example")}},
	})
	tests := []struct {
		name, path, want string
	}{
		{"merged", "//admin//x?q=a//b", "/admin/x?q=a//b"},
		{"unchanged", "/admin/x?q=a//b", "/admin/x?q=a//b"},
	}
	for _, pc := range []pipelineCase{pipelineCases[0], pipelineCases[2]} {
		for _, tt := range tests {
			t.Run(pc.name+"/"+tt.name, func(t *testing.T) {
				c, base := pc.client(p, "a.example")
				req, _ := http.NewRequest(http.MethodGet, base+tt.path, nil)
				req.Host = "a.example"
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("status %d", resp.StatusCode)
				}
				if got := seen.Load(); got != tt.want {
					t.Errorf("auth service saw X-Original-URI %q, want %q", got, tt.want)
				}
			})
		}
	}
}
