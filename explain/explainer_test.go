package explain

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/nodegress/nodegress/l7proxy"
	"github.com/nodegress/nodegress/loader"
)

type fakeDatapath struct {
	svcs []loader.ProgrammedService
	err  error
}

func (f fakeDatapath) Programmed() ([]loader.ProgrammedService, error) { return f.svcs, f.err }

type fakeRouter struct{ got *l7proxy.RouteQuery }

func (f fakeRouter) ExplainRoute(q l7proxy.RouteQuery) l7proxy.RouteAnswer {
	*f.got = q
	if q.Host == "shop.example" {
		return l7proxy.RouteAnswer{Reason: l7proxy.RouteForward, Source: "default/shop"}
	}
	return l7proxy.RouteAnswer{Status: 404, Reason: l7proxy.RouteNoRoute}
}

var (
	nodeIP = netip.MustParseAddr("192.0.2.10")
	lbIP   = netip.MustParseAddr("198.51.100.5")
)

func backend(id uint32, addr string, local bool) loader.BackendEntry {
	return loader.BackendEntry{ID: id, Backend: loader.Backend{Addr: netip.MustParseAddr(addr), Port: 8080, Local: local}}
}

func frontend(addr netip.Addr, port uint16, id uint32, n int, mod func(*loader.FrontendEntry)) loader.FrontendEntry {
	fe := loader.FrontendEntry{Frontend: loader.Frontend{Addr: addr, Port: port}, Proto: loader.TCP, ServiceID: id, BackendCount: n}
	if mod != nil {
		mod(&fe)
	}
	return fe
}

// programmed is one node's maps: a service of every kind the verdicts
// tell apart.
func programmed() []loader.ProgrammedService {
	return []loader.ProgrammedService{
		{ID: 1, Name: "default/web:http/TCP", Frontends: []loader.FrontendEntry{frontend(nodeIP, 30080, 1, 1, nil)},
			Active: []loader.BackendEntry{backend(10, "10.0.1.5", false)},
			Wanted: &loader.Service{Backends: []loader.Backend{{Addr: netip.MustParseAddr("10.0.1.6"), Port: 8080, Terminating: true}}}},
		{ID: 2, Name: "default/empty:80/TCP", Frontends: []loader.FrontendEntry{frontend(nodeIP, 30081, 2, 0, nil)}},
		{ID: 3, Name: "default/local:80/TCP", Frontends: []loader.FrontendEntry{frontend(nodeIP, 30082, 3, 0, func(f *loader.FrontendEntry) { f.NoBackendDrop = true })}},
		{ID: 4, Name: "default/lb:80/TCP", Frontends: []loader.FrontendEntry{
			frontend(lbIP, 80, 4, 2, func(f *loader.FrontendEntry) { f.Restricted, f.Maglev = true, true }),
			frontend(nodeIP, 30083, 4, 2, func(f *loader.FrontendEntry) { f.Maglev = true }),
		}, Active: []loader.BackendEntry{backend(11, "10.0.1.7", true), backend(12, "10.0.2.7", false)},
			SourceRanges: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}},
		{ID: 5, Name: "ingress/http:80/TCP", Frontends: []loader.FrontendEntry{frontend(nodeIP, 80, 5, 0, func(f *loader.FrontendEntry) { f.L7 = true })},
			ProxyListener: "http", ProxySocket: loader.SocketRegistered},
		{ID: 8, Name: "ingress/https:443/TCP", Frontends: []loader.FrontendEntry{frontend(nodeIP, 443, 8, 0, func(f *loader.FrontendEntry) { f.L7 = true })},
			ProxyListener: "https", ProxySocket: loader.SocketMissing},
		{ID: 6, Name: "default/dsr:80/TCP", Frontends: []loader.FrontendEntry{frontend(nodeIP, 30084, 6, 1, func(f *loader.FrontendEntry) {
			f.DSR, f.AffinityTimeout = true, 3*time.Hour
		})}, Active: []loader.BackendEntry{backend(13, "10.0.2.8", false)}, Drift: []string{"slot 1 holds backend 13; the agent wrote none"}},
		{ID: 7, Name: "default/web:http/TCP/internal", Frontends: []loader.FrontendEntry{frontend(netip.MustParseAddr("10.96.0.10"), 80, 7, 1, func(f *loader.FrontendEntry) { f.Internal = true })},
			Active: []loader.BackendEntry{backend(10, "10.0.1.5", false)}},
	}
}

func TestExplainFrontendVerdicts(t *testing.T) {
	counts := map[loader.Reason]loader.Counter{loader.ReasonDropNoBackend: {Packets: 3}}
	ex := &Explainer{Datapath: fakeDatapath{svcs: programmed()}, Stats: func() (map[loader.Reason]loader.Counter, error) { return counts, nil }}
	tests := []struct {
		name, target, from string
		wantAction         string
		wantReason         string
		wantText           string
		wantCount          int // frontends answered
	}{
		{"NodePort to a remote pod", "192.0.2.10:30080", "", "forward", "fwd_remote", "forwarded to 10.0.1.5:8080 (remote) via DNAT and SNAT", 1},
		{"no endpoints", "192.0.2.10:30081", "", "reject", "reject_no_backend", "no ready endpoint", 1},
		{"Local policy without a local endpoint", "192.0.2.10:30082", "", "drop", "drop_no_backend", "externalTrafficPolicy Local", 1},
		{"source outside the ranges", "198.51.100.5:80", "198.18.0.1", "drop", "drop_source_range", "source 198.18.0.1 is not in the service's loadBalancerSourceRanges", 1},
		{"source inside the ranges", "198.51.100.5:80", "203.0.113.9", "forward", "fwd_remote", "one of 2 backends by Maglev hash", 1},
		{"NodePort of a restricted service stays open", "192.0.2.10:30083", "198.18.0.1", "forward", "fwd_remote", "one of 2 backends by Maglev", 1},
		{"L7 frontend", "192.0.2.10:80", "", "steer", "pass_l7", "steered to the L7 proxy's listener http", 1},
		{"L7 frontend without a proxy socket", "192.0.2.10:443", "", "pass", "pass_l7", "no socket of its listener https is registered", 1},
		{"DSR with affinity", "192.0.2.10:30084", "", "forward", "fwd_dsr", "ClientIP affinity", 1},
		{"socket frontend", "10.96.0.10:80", "", "forward", "sock_fwd", "socket-level load balancer", 1},
		{"no frontend", "192.0.2.10:31999", "", "pass", "pass_no_frontend", "no frontend at this address", 1},
		{"service by name and port", "default/web:http", "", "forward", "fwd_remote", "10.0.1.5:8080", 2},
		{"service by name", "default/lb", "198.18.0.1", "drop", "drop_source_range", "not in the service's", 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := Query{Version: Version, Target: tc.target}
			if tc.from != "" {
				q.From = netip.MustParseAddr(tc.from)
			}
			a := ex.Explain(q)
			if a.Error != "" {
				t.Fatalf("error: %s", a.Error)
			}
			if len(a.Frontends) != tc.wantCount {
				t.Fatalf("got %d frontends, want %d: %+v", len(a.Frontends), tc.wantCount, a.Frontends)
			}
			v := a.Frontends[0].Verdict
			if v.Action != tc.wantAction || v.Reason != tc.wantReason || !strings.Contains(v.Text, tc.wantText) {
				t.Errorf("verdict %+v, want %s %s containing %q", v, tc.wantAction, tc.wantReason, tc.wantText)
			}
			if tc.wantReason == "drop_no_backend" && (v.Counted == nil || *v.Counted != 3) {
				t.Errorf("counted %v, want 3", v.Counted)
			}
			if tc.wantReason == "fwd_remote" && v.Counted != nil {
				t.Errorf("counted %d for a reason without a counter", *v.Counted)
			}
		})
	}
}

func TestExplainPodRedirect(t *testing.T) {
	for _, redirect := range []bool{false, true} {
		ex := &Explainer{Datapath: fakeDatapath{svcs: programmed()}, PodRedirect: redirect}
		want := "fwd_local"
		if redirect {
			want = "fwd_local_peer"
		}
		// Only local backends for the client in the ranges.
		svcs := programmed()
		svcs[3].Active = svcs[3].Active[:1]
		ex.Datapath = fakeDatapath{svcs: svcs}
		v := ex.Explain(Query{Version: Version, Target: "198.51.100.5:80", From: netip.MustParseAddr("203.0.113.1")}).Frontends[0].Verdict
		if v.Reason != want || !strings.Contains(v.Text, "10.0.1.7:8080 (pod on this node)") {
			t.Errorf("pod redirect %t: %+v, want %s", redirect, v, want)
		}
	}
}

func TestExplainFrontendSettings(t *testing.T) {
	ex := &Explainer{Datapath: fakeDatapath{svcs: programmed()}}
	a := ex.Explain(Query{Version: Version, Target: "192.0.2.10:30080"})
	f := a.Frontends[0]
	if a.From != DefaultClient {
		t.Errorf("client %s, want the default %s", a.From, DefaultClient)
	}
	want := []BackendAnswer{{ID: 10, Address: "10.0.1.5:8080", State: "active"}, {Address: "10.0.1.6:8080", State: "draining"}}
	if len(f.Backends) != 2 || f.Backends[0] != want[0] || f.Backends[1] != want[1] {
		t.Errorf("backends %+v, want %+v", f.Backends, want)
	}
	if f.Service != "default/web:http/TCP" || f.Forwarding != "SNAT" || f.Selection != "hash" || f.NoBackend != "reject" || f.Kind != "L4" {
		t.Errorf("settings %+v", f)
	}
	d := ex.Explain(Query{Version: Version, Target: "192.0.2.10:30084"}).Frontends[0]
	if d.Forwarding != "DSR" || d.Affinity != "ClientIP for 3h0m0s" || len(d.Drift) != 1 {
		t.Errorf("DSR frontend %+v", d)
	}
	lb := ex.Explain(Query{Version: Version, Target: "198.51.100.5:80"}).Frontends[0]
	if !lb.Restricted || lb.Selection != "Maglev" || len(lb.SourceRanges) != 1 || lb.SourceRanges[0] != "203.0.113.0/24" {
		t.Errorf("LB frontend %+v", lb)
	}
	l7 := ex.Explain(Query{Version: Version, Target: "192.0.2.10:80"}).Frontends[0]
	if l7.Kind != "L7" || l7.Forwarding != "" || l7.Selection != "" || l7.NoBackend != "" {
		t.Errorf("L7 frontend with the datapath's balancing settings: %+v", l7)
	}
	if u := ex.Explain(Query{Version: Version, Target: "192.0.2.10:30080", Proto: "udp"}); u.Frontends[0].Verdict.Reason != "pass_no_frontend" {
		t.Errorf("UDP to a TCP frontend: %+v", u.Frontends[0].Verdict)
	}
}

func TestExplainOwners(t *testing.T) {
	owners := func(svc string, addr netip.Addr) (string, string) {
		if svc == "default/web:http/TCP" && addr == netip.MustParseAddr("10.0.1.5") {
			return "default/web-7d4f", "node2"
		}
		return "", ""
	}
	ex := &Explainer{Datapath: fakeDatapath{svcs: programmed()}, Owners: owners}
	f := ex.Explain(Query{Version: Version, Target: "192.0.2.10:30080"}).Frontends[0]
	if !strings.Contains(f.Verdict.Text, "forwarded to 10.0.1.5:8080 (pod default/web-7d4f on node2, remote)") {
		t.Errorf("verdict %q, want the pod and its node named", f.Verdict.Text)
	}
	if b := f.Backends; b[0].Pod != "default/web-7d4f" || b[0].Node != "node2" || b[1].Pod != "" || b[1].Node != "" {
		t.Errorf("backends %+v", b)
	}
	var out strings.Builder
	if err := WriteText(&out, Answer{Target: "x", Frontends: []FrontendAnswer{f}}); err != nil || !strings.Contains(out.String(), "default/web-7d4f  node2") {
		t.Errorf("text %q, %v", out.String(), err)
	}
}

func TestExplainCountDrift(t *testing.T) {
	svcs := programmed()
	svcs[0].Frontends[0].BackendCount = 2 // one slot behind
	a := (&Explainer{Datapath: fakeDatapath{svcs: svcs}}).Explain(Query{Version: Version, Target: "192.0.2.10:30080"})
	if d := a.Frontends[0].Drift; len(d) != 1 || !strings.Contains(d[0], "counts 2 backends, the slots hold 1") {
		t.Errorf("drift %q", d)
	}
	a = (&Explainer{Datapath: fakeDatapath{svcs: programmed()}}).Explain(Query{Version: Version, Target: "192.0.2.10:30080"})
	if d := a.Frontends[0].Drift; len(d) != 0 {
		t.Errorf("drift %q on agreeing maps", d)
	}
}

func TestExplainRoutes(t *testing.T) {
	var got l7proxy.RouteQuery
	ex := &Explainer{Datapath: fakeDatapath{svcs: programmed()}, Routes: fakeRouter{&got}}
	a := ex.Explain(Query{Version: Version, Target: "shop.example/cart", From: netip.MustParseAddr("198.18.0.1")})
	if a.Error != "" || a.Route == nil || a.Route.Reason != l7proxy.RouteForward || len(a.Frontends) != 0 {
		t.Fatalf("answer %+v", a)
	}
	if got.Host != "shop.example" || got.Path != "/cart" || got.Client != netip.MustParseAddr("198.18.0.1") || got.TLS || got.Frontend.IsValid() {
		t.Errorf("query %+v", got)
	}
	a = ex.Explain(Query{Version: Version, Target: "https://other.example/", Via: netip.MustParseAddrPort("192.0.2.10:80")})
	if a.Route == nil || a.Route.Status != 404 || len(a.Frontends) != 1 || a.Frontends[0].Verdict.Reason != "pass_l7" {
		t.Fatalf("answer %+v", a)
	}
	if !got.TLS || got.Frontend != netip.MustParseAddrPort("192.0.2.10:80") {
		t.Errorf("query %+v", got)
	}
	noProxy := &Explainer{Datapath: fakeDatapath{svcs: programmed()}}
	if a := noProxy.Explain(Query{Version: Version, Target: "shop.example/"}); !strings.Contains(a.Error, "L7 proxy does not run") {
		t.Errorf("without a proxy: %+v", a)
	}
}

func TestExplainErrors(t *testing.T) {
	ex := &Explainer{Datapath: fakeDatapath{svcs: programmed()}}
	for _, tc := range []struct{ target, want string }{
		{"default/missing", "no service default/missing"},
		{"default/web:https", "no service default/web:https"},
		{"justaword", "want IP:PORT"},
		{"[::1]:80", "IPv4"},
	} {
		if a := ex.Explain(Query{Version: Version, Target: tc.target}); !strings.Contains(a.Error, tc.want) {
			t.Errorf("%s: error %q, want %q", tc.target, a.Error, tc.want)
		}
	}
	broken := &Explainer{Datapath: fakeDatapath{err: errors.New("map gone")}}
	if a := broken.Explain(Query{Version: Version, Target: "192.0.2.10:30080"}); !strings.Contains(a.Error, "map gone") {
		t.Errorf("unreadable maps: %+v", a)
	}
}

func TestParseTarget(t *testing.T) {
	tests := []struct {
		in   string
		want target
	}{
		{"192.0.2.1:80", target{kind: targetFrontend, frontend: netip.MustParseAddrPort("192.0.2.1:80")}},
		{"default/web", target{kind: targetService, service: "default/web"}},
		{"default/web:8080", target{kind: targetService, service: "default/web", port: "8080"}},
		{"foo.example/api/v1", target{kind: targetRoute, host: "foo.example", path: "/api/v1"}},
		{"foo.example/", target{kind: targetRoute, host: "foo.example", path: "/"}},
		{"192.0.2.1/x", target{kind: targetRoute, host: "192.0.2.1", path: "/x"}},
		{"http://intranet", target{kind: targetRoute, host: "intranet", path: "/"}},
		{"https://foo.example/a", target{kind: targetRoute, host: "foo.example", path: "/a", tls: true}},
	}
	for _, tc := range tests {
		got, err := parseTarget(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("parseTarget(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "web", "/web", "default/a/b", "192.0.2.1:0", "http://"} {
		if _, err := parseTarget(bad); err == nil {
			t.Errorf("parseTarget(%q) accepted", bad)
		}
	}
}
