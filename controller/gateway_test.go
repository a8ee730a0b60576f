package controller

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapi "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	"github.com/nodegress/nodegress/l7proxy"
	"github.com/nodegress/nodegress/loader"
)

// gatewayObjects decodes YAML documents of Gateway API kinds, Services,
// EndpointSlices, Secrets and Namespaces.
type gatewayObjects struct {
	in       GatewayInput
	services []*corev1.Service
	slices   []*discoveryv1.EndpointSlice
	secrets  []*corev1.Secret
}

// decodeInto decodes document i strictly and appends it to list.
func decodeInto[T any](t *testing.T, i int, doc string, list *[]*T) {
	t.Helper()
	v := new(T)
	if err := yaml.UnmarshalStrict([]byte(doc), v); err != nil {
		t.Fatalf("document %d (%T): %v", i, v, err)
	}
	*list = append(*list, v)
}

func decodeGatewayObjects(t *testing.T, docs string) *gatewayObjects {
	t.Helper()
	o := &gatewayObjects{}
	for i, doc := range strings.Split(docs, "\n---\n") {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		switch tm.Kind {
		case "GatewayClass":
			decodeInto(t, i, doc, &o.in.Classes)
		case "Gateway":
			decodeInto(t, i, doc, &o.in.Gateways)
		case "HTTPRoute":
			decodeInto(t, i, doc, &o.in.HTTPRoutes)
		case "GRPCRoute":
			decodeInto(t, i, doc, &o.in.GRPCRoutes)
		case "TLSRoute":
			decodeInto(t, i, doc, &o.in.TLSRoutes)
		case "BackendTLSPolicy":
			decodeInto(t, i, doc, &o.in.BackendTLSPolicies)
		case "ListenerSet":
			decodeInto(t, i, doc, &o.in.ListenerSets)
		case "ConfigMap":
			decodeInto(t, i, doc, &o.in.ConfigMaps)
		case "ReferenceGrant":
			decodeInto(t, i, doc, &o.in.Grants)
		case "Service":
			decodeInto(t, i, doc, &o.services)
		case "EndpointSlice":
			decodeInto(t, i, doc, &o.slices)
		case "Secret":
			decodeInto(t, i, doc, &o.secrets)
		case "Namespace":
			decodeInto(t, i, doc, &o.in.Namespaces)
		default:
			t.Fatalf("document %d: kind %q", i, tm.Kind)
		}
	}
	return o
}

// addTLSSecret adds a kubernetes.io/tls Secret with a certificate for
// host.
func (o *gatewayObjects) addTLSSecret(t *testing.T, ns, name, host string) {
	t.Helper()
	certPEM, keyPEM := testCert(t, host)
	o.secrets = append(o.secrets, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Type: corev1.SecretTypeTLS, Data: map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM}})
}

func (o *gatewayObjects) translate() (l7proxy.Config, []loader.Service, GatewayStatuses, []error) {
	return TranslateL7(IngressInput{Services: o.services, EndpointSlices: o.slices, Secrets: o.secrets,
		Config: L7Config{HTTPPort: 80, HTTPSPort: 443}}, &o.in)
}

// httpGateway is Gateway app/gw at 192.0.2.1 with one HTTP listener on
// port 80.
const httpGateway = `---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: app}
spec:
  gatewayClassName: nodegress
  addresses: [{value: 192.0.2.1}]
  listeners: [{name: http, port: 80, protocol: HTTP}]
`

const gatewayBase = `apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: nodegress, generation: 1}
spec: {controllerName: nodegress.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: other}
spec: {controllerName: example.com/other}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: app}
spec:
  ports: [{name: http, port: 8080, targetPort: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: app, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 80}]
endpoints: [{addresses: [10.0.0.5], conditions: {ready: true}}]
---
apiVersion: v1
kind: Service
metadata: {name: grpc, namespace: other}
spec:
  ports: [{name: grpc, port: 9000, appProtocol: kubernetes.io/h2c}]
---
apiVersion: v1
kind: Namespace
metadata: {name: app, labels: {team: a}}
---
apiVersion: v1
kind: Namespace
metadata: {name: other, labels: {team: b}}
`

func condOf(conds []metav1.Condition, typ string) string {
	for _, c := range conds {
		if c.Type == typ {
			return fmt.Sprintf("%s/%s", c.Status, c.Reason)
		}
	}
	return "missing"
}

func TestTranslateGateways(t *testing.T) {
	o := decodeGatewayObjects(t, gatewayBase+`---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: app, generation: 3, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  gatewayClassName: nodegress
  listeners:
  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
  - {name: site, port: 8080, protocol: HTTP, hostname: "*.example.com"}
  - {name: dup-a, port: 8081, protocol: HTTP, hostname: a.example.com}
  - {name: dup-b, port: 8081, protocol: HTTP, hostname: a.example.com}
  - {name: tcp, port: 9000, protocol: TCP}
  - {name: team-b, port: 8082, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {team: b}}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: fixed, namespace: app, creationTimestamp: "2026-01-02T00:00:00Z"}
spec:
  gatewayClassName: nodegress
  addresses: [{type: IPAddress, value: 198.51.100.7}]
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: foreign, namespace: app}
spec:
  gatewayClassName: other
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: app, generation: 2, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  parentRefs: [{name: gw, sectionName: http}, {name: gw, sectionName: site}, {name: foreign}]
  hostnames: [www.example.com, other.org]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: x-env, value: prod}], method: GET}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-set, value: v}], remove: [x-drop]}
    backendRefs: [{name: web, port: 8080, weight: 3}, {name: missing, port: 80}]
  - matches: [{path: {type: Exact, value: /old}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 301}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cross, namespace: other, creationTimestamp: "2026-01-03T00:00:00Z"}
spec:
  parentRefs: [{name: gw, namespace: app, sectionName: http}, {name: gw, namespace: app, sectionName: site},
               {name: gw, namespace: app, sectionName: team-b}, {name: gw, namespace: app, sectionName: nope}]
  rules:
  - backendRefs: [{name: web, namespace: app, port: 8080}, {name: grpc, port: 9000}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: nohost, namespace: app, creationTimestamp: "2026-01-04T00:00:00Z"}
spec:
  parentRefs: [{name: gw, sectionName: site}]
  hostnames: [elsewhere.net]
  rules: [{backendRefs: [{name: web, port: 8080}]}]
`)
	o.in.AddressPool = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/30")}
	cfg, fes, st, _ := o.translate()

	// Classes: ours accepted, the other untouched.
	if got := condOf(st.Classes["nodegress"], "Accepted"); got != "True/Accepted" {
		t.Errorf("class Accepted %s", got)
	}
	if _, ok := st.Classes["other"]; ok {
		t.Error("status decided for another controller's class")
	}
	if _, ok := st.Gateways["app/foreign"]; ok {
		t.Error("status decided for another class's gateway")
	}

	// Addresses: the pool's two hosts; the fixed one as asked.
	gw := st.Gateways["app/gw"]
	if len(gw.Addresses) != 1 || !netip.MustParsePrefix("192.0.2.0/30").Contains(netip.MustParseAddr(gw.Addresses[0].Value)) ||
		gw.Addresses[0].Value == "192.0.2.0" || gw.Addresses[0].Value == "192.0.2.3" {
		t.Fatalf("gateway addresses %v", gw.Addresses)
	}
	gwAddr := netip.MustParseAddr(gw.Addresses[0].Value)
	if a := st.Gateways["app/fixed"].Addresses; len(a) != 1 || a[0].Value != "198.51.100.7" {
		t.Errorf("fixed gateway addresses %v", a)
	}
	// Some listeners are invalid: accepted, saying so; the others serve.
	if got := condOf(gw.Conditions, "Accepted") + " " + condOf(gw.Conditions, "Programmed"); got != "True/ListenersNotValid True/Programmed" {
		t.Errorf("gateway conditions %s", got)
	}
	if gw.Conditions[0].ObservedGeneration != 3 {
		t.Errorf("observedGeneration %d", gw.Conditions[0].ObservedGeneration)
	}

	// Listeners.
	wantListeners := map[string]struct {
		conds    string
		attached int32
	}{
		"http":   {"True/Accepted True/ResolvedRefs False/NoConflicts True/Programmed", 2},
		"site":   {"True/Accepted True/ResolvedRefs False/NoConflicts True/Programmed", 1},
		"dup-a":  {"True/Accepted True/ResolvedRefs True/HostnameConflict False/Invalid", 0},
		"dup-b":  {"True/Accepted True/ResolvedRefs True/HostnameConflict False/Invalid", 0},
		"tcp":    {"False/UnsupportedProtocol True/ResolvedRefs False/NoConflicts False/Invalid", 0},
		"team-b": {"True/Accepted True/ResolvedRefs False/NoConflicts True/Programmed", 1},
	}
	for _, ls := range gw.Listeners {
		w := wantListeners[string(ls.Name)]
		got := strings.Join([]string{condOf(ls.Conditions, "Accepted"), condOf(ls.Conditions, "ResolvedRefs"),
			condOf(ls.Conditions, "Conflicted"), condOf(ls.Conditions, "Programmed")}, " ")
		if got != w.conds || ls.AttachedRoutes != w.attached {
			t.Errorf("listener %s: %s attached %d, want %s attached %d", ls.Name, got, ls.AttachedRoutes, w.conds, w.attached)
		}
	}

	// Routes.
	web := st.Routes[kindHTTPRoute]["app/web"]
	if len(web) != 2 {
		t.Fatalf("web route parents %+v", web)
	}
	if got := condOf(web[0].Conditions, "Accepted") + " " + condOf(web[0].Conditions, "ResolvedRefs"); got != "True/Accepted False/BackendNotFound" {
		t.Errorf("web on http: %s", got)
	}
	if got := condOf(web[1].Conditions, "Accepted"); got != "True/Accepted" {
		t.Errorf("web on site: %s", got)
	}
	cross := st.Routes[kindHTTPRoute]["other/cross"]
	var crossConds []string
	for _, p := range cross {
		crossConds = append(crossConds, string(ptrValue(p.ParentRef.SectionName))+"="+condOf(p.Conditions, "Accepted"))
	}
	if want := []string{"http=True/Accepted", "site=False/NotAllowedByListeners", "team-b=True/Accepted", "nope=False/NoMatchingParent"}; !slices.Equal(crossConds, want) {
		t.Errorf("cross parents %v, want %v", crossConds, want)
	}
	if got := condOf(cross[0].Conditions, "ResolvedRefs"); got != "False/RefNotPermitted" {
		t.Errorf("cross ResolvedRefs %s", got)
	}
	if got := condOf(st.Routes[kindHTTPRoute]["app/nohost"][0].Conditions, "Accepted"); got != "False/NoMatchingListenerHostname" {
		t.Errorf("nohost: %s", got)
	}

	// Proxy listeners: the web route on site keeps only its hostname the
	// listener covers.
	byName := map[string]l7proxy.Listener{}
	for _, l := range cfg.Listeners {
		byName[l.Name] = l
	}
	site := byName["app/gw/site"]
	if site.Hostname != "*.example.com" || len(site.Routes) != 1 || !slices.Equal(site.Routes[0].Hostnames, []string{"www.example.com"}) {
		t.Errorf("site listener %+v", site)
	}
	if !slices.Equal(site.Frontends, []netip.AddrPort{netip.AddrPortFrom(gwAddr, 8080)}) {
		t.Errorf("site frontends %v", site.Frontends)
	}
	http := byName["app/gw/http"]
	if len(http.Routes) != 2 || http.Routes[0].Source != "app/web" || http.Routes[1].Source != "other/cross" {
		t.Fatalf("http listener routes %+v", http.Routes)
	}
	r0 := http.Routes[0].Rules[0]
	if len(r0.Backends) != 2 || r0.Backends[0].Weight != 3 || r0.Backends[0].Upstream == "" || r0.Backends[1].Upstream != "" {
		t.Errorf("web rule backends %+v", r0.Backends)
	}
	m := r0.Matches[0]
	if m.PathType != l7proxy.PathPrefix || m.Path != "/api" || m.Method != "GET" || len(m.Headers) != 1 || m.Headers[0].Name != "X-Env" {
		t.Errorf("web match %+v", m)
	}
	if e := r0.Filters.RequestHeaders; e == nil || e.Set[0].Name != "X-Set" || e.Remove[0] != "X-Drop" {
		t.Errorf("header filter %+v", r0.Filters.RequestHeaders)
	}
	if rd := http.Routes[0].Rules[1].Filters.Redirect; rd == nil || rd.Scheme != "https" || rd.StatusCode != 301 {
		t.Errorf("redirect %+v", rd)
	}
	// The grpc backend in the route's own namespace resolves, as h2c.
	var grpc *l7proxy.Upstream
	for i := range cfg.Upstreams {
		if strings.HasPrefix(cfg.Upstreams[i].Name, "other/grpc:") {
			grpc = &cfg.Upstreams[i]
		}
	}
	if grpc == nil || grpc.Protocol != l7proxy.ProtocolH2C {
		t.Errorf("grpc upstream %+v", grpc)
	}
	if _, ok := byName["app/gw/dup-a"]; ok {
		t.Error("conflicted listener programmed")
	}

	// Datapath frontends: one service per gateway and listener kind.
	var names []string
	for _, fe := range fes {
		if strings.HasPrefix(fe.Name, "gw/") {
			names = append(names, fmt.Sprintf("%s %v", fe.Name, fe.Frontends))
		}
	}
	want := []string{fmt.Sprintf("gw/app/gw/http [%s:80 %s:8080 %s:8082]", gwAddr, gwAddr, gwAddr),
		"gw/app/fixed/http [198.51.100.7:80]"}
	slices.Sort(names)
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("frontends %v, want %v", names, want)
	}
}

// TestGatewayAddressAllocation checks that pool addresses are stable:
// kept from the status, never shared, and reported when the pool runs out.
func TestGatewayAddressAllocation(t *testing.T) {
	gws := ""
	for i := range 3 {
		gws += fmt.Sprintf(`---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw%d, namespace: app, creationTimestamp: "2026-01-0%dT00:00:00Z"}
spec:
  gatewayClassName: nodegress
  listeners: [{name: http, port: 80, protocol: HTTP}]
`, i, i+1)
	}
	o := decodeGatewayObjects(t, gatewayBase+gws)
	o.in.AddressPool = []netip.Prefix{netip.MustParsePrefix("192.0.2.8/31")}
	_, _, st, _ := o.translate()
	a0, a1 := st.Gateways["app/gw0"].Addresses, st.Gateways["app/gw1"].Addresses
	if len(a0) != 1 || len(a1) != 1 || a0[0].Value == a1[0].Value {
		t.Fatalf("addresses %v %v", a0, a1)
	}
	if got := condOf(st.Gateways["app/gw2"].Conditions, "Programmed"); got != "False/AddressNotAssigned" {
		t.Errorf("third gateway with the pool exhausted: %s", got)
	}
	// gw1 keeps its address even when gw0 would hash to it: the status
	// is honoured first, in age order.
	o.in.Gateways[0].Status.Addresses = []gwapi.GatewayStatusAddress{{Value: a1[0].Value}}
	o.in.Gateways[1].Status.Addresses = []gwapi.GatewayStatusAddress{{Value: a1[0].Value}}
	_, _, st, _ = o.translate()
	if got := st.Gateways["app/gw0"].Addresses[0].Value; got != a1[0].Value {
		t.Errorf("oldest gateway lost its status address: %s", got)
	}
	if got := st.Gateways["app/gw1"].Addresses[0].Value; got != a0[0].Value {
		t.Errorf("gw1 got %s, want the remaining %s", got, a0[0].Value)
	}
}

// TestGatewayStaticAddresses: with ranges configured, spec.addresses
// outside them and the pool are not usable (Accepted, not Programmed);
// an address type other than IPAddress is not accepted.
func TestGatewayStaticAddresses(t *testing.T) {
	gw := func(addrs string) string {
		return gatewayBase + `---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: app}
spec:
  gatewayClassName: nodegress
  addresses: ` + addrs + `
  listeners: [{name: http, port: 80, protocol: HTTP}]
`
	}
	for _, tc := range []struct {
		name, addrs, ranges, accepted, programmed, status string
	}{
		{"in a range", "[{value: 198.51.100.7}]", "198.51.100.0/24", "True/Accepted", "True/Programmed", "198.51.100.7"},
		{"in the pool", "[{value: 192.0.2.9}]", "198.51.100.0/24", "True/Accepted", "True/Programmed", "192.0.2.9"},
		{"outside", "[{value: 203.0.113.5}, {value: 198.51.100.7}]", "198.51.100.0/24", "True/Accepted", "False/AddressNotUsable", ""},
		{"no ranges: any", "[{value: 203.0.113.5}]", "", "True/Accepted", "True/Programmed", "203.0.113.5"},
		{"unsupported type", "[{type: test/fake, value: x}, {value: 198.51.100.7}]", "198.51.100.0/24", "False/UnsupportedAddress", "False/Invalid", ""},
		{"usable, then outside", "[{value: 198.51.100.7}, {value: 203.0.113.5}]", "198.51.100.0/24", "True/Accepted", "False/AddressNotUsable", ""},
		{"named twice", "[{value: 198.51.100.7}, {value: 198.51.100.7}]", "198.51.100.0/24", "True/Accepted", "True/Programmed", "198.51.100.7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := decodeGatewayObjects(t, gw(tc.addrs))
			o.in.AddressPool = []netip.Prefix{netip.MustParsePrefix("192.0.2.8/31")}
			if tc.ranges != "" {
				o.in.AddressRanges = []netip.Prefix{netip.MustParsePrefix(tc.ranges)}
			}
			_, fes, st, _ := o.translate()
			g := st.Gateways["app/gw"]
			if got := [2]string{condOf(g.Conditions, "Accepted"), condOf(g.Conditions, "Programmed")}; got != [2]string{tc.accepted, tc.programmed} {
				t.Errorf("conditions %v, want %s %s", got, tc.accepted, tc.programmed)
			}
			var status []string
			for _, a := range g.Addresses {
				status = append(status, a.Value)
			}
			if strings.Join(status, ",") != tc.status {
				t.Errorf("status addresses %v, want %q", status, tc.status)
			}
			if tc.status == "" && len(fes) != 0 {
				t.Errorf("frontends %v for a Gateway without a usable address", fes)
			}
			// A refused Gateway holds none of its addresses: a newer one
			// may have them.
			if tc.status == "" {
				o.in.Gateways = append(o.in.Gateways, &gwapi.Gateway{
					ObjectMeta: metav1.ObjectMeta{Name: "later", Namespace: "app", CreationTimestamp: metav1.Unix(1<<40, 0)},
					Spec: gwapi.GatewaySpec{GatewayClassName: "nodegress", Addresses: []gwapi.GatewaySpecAddress{{Value: "198.51.100.7"}},
						Listeners: []gwapi.Listener{{Name: "http", Port: 80, Protocol: gwapi.HTTPProtocolType}}},
				})
				_, _, st, _ := o.translate()
				if got := condOf(st.Gateways["app/later"].Conditions, "Programmed"); got != "True/Programmed" {
					t.Errorf("a newer Gateway asking for the refused one's address: Programmed %s", got)
				}
			}
		})
	}
}

func TestIntersectHostnames(t *testing.T) {
	for _, tt := range []struct {
		listener string
		route    []gwapi.Hostname
		want     []string
		ok       bool
	}{
		{"", nil, nil, true},
		{"a.example.com", nil, []string{"a.example.com"}, true},
		{"", []gwapi.Hostname{"B.example.com"}, []string{"b.example.com"}, true},
		{"*.example.com", []gwapi.Hostname{"a.example.com", "x.b.example.com", "example.com", "other.org"}, []string{"a.example.com", "x.b.example.com"}, true},
		{"a.example.com", []gwapi.Hostname{"*.example.com"}, []string{"a.example.com"}, true},
		{"*.example.com", []gwapi.Hostname{"*.example.com"}, []string{"*.example.com"}, true},
		{"*.a.example.com", []gwapi.Hostname{"*.example.com"}, []string{"*.a.example.com"}, true},
		{"a.example.com", []gwapi.Hostname{"b.example.com"}, nil, false},
	} {
		got, ok := intersectHostnames(tt.listener, tt.route)
		if ok != tt.ok || !slices.Equal(got, tt.want) {
			t.Errorf("%q ∩ %v = %v %v, want %v %v", tt.listener, tt.route, got, ok, tt.want, tt.ok)
		}
	}
}

// TestStandaloneGateway runs the controller on a directory holding Gateway
// API objects: the proxy gets the listener and its route, the datapath the
// Gateway's frontend; editing the route reaches the proxy, deleting the
// Gateway removes both; a Gateway API object that does not decode is
// refused while the rest is served.
// startStandaloneGateway runs a standalone controller with the Gateway
// API on, its files in the returned directory (gatewayBase written).
func startStandaloneGateway(t *testing.T) (string, *fakeDatapath, *fakeProxy) {
	t.Helper()
	dir := t.TempDir()
	dp, proxy := &fakeDatapath{}, &fakeProxy{}
	c, err := New(Config{
		NodeName: "node-a", NodeIPs: []netip.Addr{netip.MustParseAddr("192.0.2.10")}, StandaloneDir: dir,
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		L7:      &L7Config{Proxy: proxy},
		Gateway: &GatewayConfig{AddressPool: []netip.Prefix{netip.MustParsePrefix("198.51.100.64/32")}},
	}, dp)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "base.yaml"), gatewayBase)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return dir, dp, proxy
}

func TestStandaloneGateway(t *testing.T) {
	dir, dp, proxy := startStandaloneGateway(t)
	gw := `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: app}
spec:
  gatewayClassName: nodegress
  listeners: [{name: http, port: 80, protocol: HTTP}]
`
	route := func(prefix string) string {
		return fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: app}
spec:
  parentRefs: [{name: gw}]
  rules: [{matches: [{path: {type: PathPrefix, value: %s}}], backendRefs: [{name: web, port: 8080}]}]
`, prefix)
	}
	writeFile(t, filepath.Join(dir, "gw.yaml"), gw+"---\n"+route("/v1")+`---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broken, namespace: app}
spec:
  parentRefs: [{name: gw}]
  rules: [{matchez: []}]
`)

	listenerPath := func() string {
		cfg := proxy.last()
		if len(cfg.Listeners) != 1 || len(cfg.Listeners[0].Routes) != 1 {
			return ""
		}
		l := cfg.Listeners[0]
		return fmt.Sprintf("%s %v %s", l.Name, l.Frontends, l.Routes[0].Rules[0].Matches[0].Path)
	}
	frontend := func() string {
		for _, s := range dp.last() {
			if strings.HasPrefix(s.Name, "gw/") {
				return fmt.Sprintf("%s %v %s", s.Name, s.Frontends, s.ProxyListener)
			}
		}
		return ""
	}
	waitFor(t, "gateway listener in the proxy", waitLimit, func() bool {
		return listenerPath() == "app/gw/http [198.51.100.64:80] /v1"
	})
	waitFor(t, "gateway frontend in the datapath", waitLimit, func() bool {
		return frontend() == "gw/app/gw/http [198.51.100.64:80] http"
	})
	writeFile(t, filepath.Join(dir, "gw.yaml"), gw+"---\n"+route("/v2"))
	waitFor(t, "route edit in the proxy", waitLimit, func() bool {
		return listenerPath() == "app/gw/http [198.51.100.64:80] /v2"
	})
	if err := os.Remove(filepath.Join(dir, "gw.yaml")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "gateway gone from proxy and datapath", waitLimit, func() bool {
		return len(proxy.last().Listeners) == 0 && frontend() == ""
	})
}

// TestStandaloneTLSRoute: standalone files carry TLSRoutes too.
func TestStandaloneTLSRoute(t *testing.T) {
	dir, _, proxy := startStandaloneGateway(t)
	writeFile(t, filepath.Join(dir, "tls.yaml"), `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: app}
spec:
  gatewayClassName: nodegress
  listeners: [{name: tls, port: 443, protocol: TLS, tls: {mode: Passthrough}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: secure, namespace: app}
spec:
  parentRefs: [{name: gw}]
  hostnames: [secure.example]
  rules: [{backendRefs: [{name: web, port: 8080}]}]
`)
	waitFor(t, "TLS listener in the proxy", waitLimit, func() bool {
		cfg := proxy.last()
		if len(cfg.Listeners) != 1 || len(cfg.Listeners[0].TLSRoutes) != 1 {
			return false
		}
		l := cfg.Listeners[0]
		r := l.TLSRoutes[0]
		return l.Kind == l7proxy.ListenerTLSPassthrough && r.Source == "app/secure" &&
			slices.Equal(r.Hostnames, []string{"secure.example"}) && len(r.Backends) == 1 && r.Backends[0].Upstream != ""
	})
}

// TestGatewayListenerStates checks what the conformance suite holds the
// status to: a Gateway with some invalid listeners is accepted with
// reason ListenersNotValid; routes attach to (and count on) a listener
// whose certificate does not resolve, which does not serve; an IPAddress
// entry without a value gets a pool address.
func TestGatewayListenerStates(t *testing.T) {
	o := decodeGatewayObjects(t, gatewayBase+`---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: app}
spec:
  gatewayClassName: nodegress
  addresses: [{type: IPAddress}]
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: tls, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: does-not-exist}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: app}
spec:
  parentRefs: [{name: gw, sectionName: tls}]
  rules: [{backendRefs: [{name: web, port: 8080}]}]
`)
	o.in.AddressPool = []netip.Prefix{netip.MustParsePrefix("192.0.2.9/32")}
	cfg, _, st, _ := o.translate()
	gw := st.Gateways["app/gw"]
	if got := condOf(gw.Conditions, "Accepted") + " " + condOf(gw.Conditions, "Programmed"); got != "True/ListenersNotValid True/Programmed" {
		t.Errorf("gateway %s", got)
	}
	if len(gw.Addresses) != 1 || gw.Addresses[0].Value != "192.0.2.9" {
		t.Errorf("addresses %v, want the pool's", gw.Addresses)
	}
	tls := gw.Listeners[1]
	if got := condOf(tls.Conditions, "ResolvedRefs") + " " + condOf(tls.Conditions, "Programmed"); got != "False/InvalidCertificateRef False/Invalid" || tls.AttachedRoutes != 1 {
		t.Errorf("tls listener %s attached %d", got, tls.AttachedRoutes)
	}
	if got := condOf(st.Routes[kindHTTPRoute]["app/web"][0].Conditions, "Accepted"); got != "True/Accepted" {
		t.Errorf("route on the unresolved listener: %s", got)
	}
	for _, l := range cfg.Listeners {
		if l.Name == "app/gw/tls" {
			t.Error("listener with an unresolved certificate serves")
		}
	}
}

// TestTranslateGRPCRoute checks GRPCRoute method matches as path matches,
// header matches, h2c backends and status; a listener limited to
// HTTPRoutes does not take it.
func TestTranslateGRPCRoute(t *testing.T) {
	o := decodeGatewayObjects(t, gatewayBase+`---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: app}
spec:
  gatewayClassName: nodegress
  addresses: [{value: 192.0.2.1}]
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: only-http, port: 81, protocol: HTTP, allowedRoutes: {kinds: [{kind: HTTPRoute}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo, namespace: app}
spec:
  parentRefs: [{name: gw, sectionName: http}, {name: gw, sectionName: only-http}]
  rules:
  - matches:
    - method: {service: echo.Echo, method: Ping}
    - method: {service: echo.Echo}
    - method: {method: Stream}
    - method: {type: RegularExpression, service: "echo\\..*", method: "P.*"}
      headers: [{name: x-version, value: v2}]
    backendRefs: [{name: web, port: 8080}]
`)
	cfg, _, st, _ := o.translate()
	parents := st.Routes[kindGRPCRoute]["app/echo"]
	if len(parents) != 2 || condOf(parents[0].Conditions, "Accepted") != "True/Accepted" ||
		condOf(parents[1].Conditions, "Accepted") != "False/NotAllowedByListeners" {
		t.Fatalf("parents %+v", parents)
	}
	var rule l7proxy.HTTPRouteRule
	for _, l := range cfg.Listeners {
		if l.Name == "app/gw/http" && len(l.Routes) == 1 {
			rule = l.Routes[0].Rules[0]
		}
	}
	var got []string
	for _, m := range rule.Matches {
		got = append(got, fmt.Sprintf("%d:%s:%d", m.PathType, m.Path, len(m.Headers)))
	}
	want := []string{"1:/echo.Echo/Ping:0", "0:/echo.Echo:0", "2:/[^/]+/Stream:0", "2:/echo\\..*/P.*:1"}
	if !slices.Equal(got, want) {
		t.Errorf("matches %v, want %v", got, want)
	}
	if len(rule.Backends) != 1 || !strings.Contains(rule.Backends[0].Upstream, "/h2c") {
		t.Errorf("backends %+v, want an h2c upstream", rule.Backends)
	}
	for _, l := range st.Gateways["app/gw"].Listeners {
		if l.Name == "http" && (len(l.SupportedKinds) != 2 || l.AttachedRoutes != 1) {
			t.Errorf("http listener kinds %v attached %d", l.SupportedKinds, l.AttachedRoutes)
		}
	}
}

func TestTranslateRouteTimeouts(t *testing.T) {
	o := decodeGatewayObjects(t, gatewayBase+httpGateway+`---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: app}
spec:
  parentRefs: [{name: gw}]
  rules:
  - {timeouts: {request: 1500ms, backendRequest: 1s}, backendRefs: [{name: web, port: 8080}]}
  - {timeouts: {request: 0s}, backendRefs: [{name: web, port: 8080}]}
`)
	cfg, _, _, _ := o.translate()
	rules := cfg.Listeners[0].Routes[0].Rules
	if rules[0].Timeout != 1500*time.Millisecond || rules[0].BackendTimeout != time.Second || rules[1].Timeout != 0 {
		t.Errorf("timeouts %v/%v and %v", rules[0].Timeout, rules[0].BackendTimeout, rules[1].Timeout)
	}
}

// TestTranslateTLSRoute checks TLS listeners (passthrough and terminate),
// their route kinds, both modes on one port, and TLSRoute attachment,
// hostnames, backends and status.
func TestTranslateTLSRoute(t *testing.T) {
	o := decodeGatewayObjects(t, gatewayBase+`---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: app, generation: 2}
spec:
  gatewayClassName: nodegress
  addresses: [{value: 192.0.2.1}]
  listeners:
  - {name: pass, port: 443, protocol: TLS, hostname: "*.example.com", tls: {mode: Passthrough}}
  - {name: term, port: 8443, protocol: TLS, tls: {certificateRefs: [{name: cert}]}}
  - {name: kinds, port: 9443, protocol: TLS, tls: {mode: Passthrough}, allowedRoutes: {kinds: [{kind: TCPRoute}, {kind: TLSRoute}]}}
  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {kinds: [{kind: TLSRoute}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: mixed, namespace: app}
spec:
  gatewayClassName: nodegress
  addresses: [{value: 192.0.2.2}]
  listeners:
  - {name: term, port: 443, protocol: TLS, hostname: a.example.com, tls: {mode: Terminate, certificateRefs: [{name: cert}]}}
  - {name: pass, port: 443, protocol: TLS, hostname: b.example.com, tls: {mode: Passthrough}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: secure, namespace: app, generation: 3}
spec:
  parentRefs: [{name: gw, sectionName: pass}, {name: gw, sectionName: term}]
  hostnames: [a.example.com, other.org]
  rules: [{backendRefs: [{name: web, port: 8080, weight: 3}, {name: missing, port: 1}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: elsewhere, namespace: app}
spec:
  parentRefs: [{name: gw, sectionName: pass}]
  hostnames: [x.other.org]
  rules: [{backendRefs: [{name: web, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: app}
spec:
  parentRefs: [{name: gw, sectionName: pass}]
  rules: [{backendRefs: [{name: web, port: 8080}]}]
`)
	o.addTLSSecret(t, "app", "cert", "a.example.com")
	cfg, fes, st, _ := o.translate()

	listeners := map[string]gwapi.ListenerStatus{}
	for _, gw := range []string{"app/gw", "app/mixed"} {
		for _, l := range st.Gateways[gw].Listeners {
			listeners[gw+"/"+string(l.Name)] = l
		}
	}
	kinds := func(l gwapi.ListenerStatus) string {
		var ks []string
		for _, k := range l.SupportedKinds {
			ks = append(ks, string(k.Kind))
		}
		return strings.Join(ks, ",")
	}
	for _, tc := range []struct {
		listener, accepted, resolved, kinds string
		attached                            int32
	}{
		{"app/gw/pass", "True/Accepted", "True/ResolvedRefs", "TLSRoute", 1},
		{"app/gw/term", "True/Accepted", "True/ResolvedRefs", "TLSRoute", 1},
		{"app/gw/kinds", "True/Accepted", "False/InvalidRouteKinds", "TLSRoute", 0},
		{"app/gw/http", "True/Accepted", "False/InvalidRouteKinds", "", 0},
		{"app/mixed/term", "True/Accepted", "True/ResolvedRefs", "TLSRoute", 0},
		{"app/mixed/pass", "True/Accepted", "True/ResolvedRefs", "TLSRoute", 0},
	} {
		l := listeners[tc.listener]
		if got := [...]string{condOf(l.Conditions, "Accepted"), condOf(l.Conditions, "ResolvedRefs"), kinds(l)}; got !=
			[...]string{tc.accepted, tc.resolved, tc.kinds} || l.AttachedRoutes != tc.attached {
			t.Errorf("%s: accepted, resolved, kinds %v, attached %d; want %s %s %q %d", tc.listener, got, l.AttachedRoutes,
				tc.accepted, tc.resolved, tc.kinds, tc.attached)
		}
	}
	if got := condOf(st.Gateways["app/mixed"].Conditions, "Accepted"); got != "True/Accepted" {
		t.Errorf("gateway mixing TLS modes on a port: Accepted %s", got)
	}

	secure := st.Routes[kindTLSRoute]["app/secure"]
	if len(secure) != 2 || condOf(secure[0].Conditions, "Accepted") != "True/Accepted" ||
		condOf(secure[1].Conditions, "Accepted") != "True/Accepted" ||
		condOf(secure[0].Conditions, "ResolvedRefs") != "False/BackendNotFound" || secure[0].Conditions[0].ObservedGeneration != 3 {
		t.Errorf("secure parents %+v", secure)
	}
	if got := condOf(st.Routes[kindTLSRoute]["app/elsewhere"][0].Conditions, "Accepted"); got != "False/NoMatchingListenerHostname" {
		t.Errorf("elsewhere Accepted %s", got)
	}
	if got := condOf(st.Routes[kindHTTPRoute]["app/web"][0].Conditions, "Accepted"); got != "False/NotAllowedByListeners" {
		t.Errorf("HTTPRoute on a TLS listener: Accepted %s", got)
	}

	byName := map[string]l7proxy.Listener{}
	for _, l := range cfg.Listeners {
		byName[l.Name] = l
	}
	pass, term := byName["app/gw/pass"], byName["app/gw/term"]
	if pass.Kind != l7proxy.ListenerTLSPassthrough || len(pass.TLSRoutes) != 1 ||
		!slices.Equal(pass.TLSRoutes[0].Hostnames, []string{"a.example.com"}) || len(pass.Routes) != 0 {
		t.Errorf("pass listener %+v", pass)
	}
	if b := pass.TLSRoutes[0].Backends; len(b) != 2 || b[0].Upstream == "" || b[0].Weight != 3 || b[1].Upstream != "" {
		t.Errorf("pass backends %+v: want the service's upstream (weight 3) and an unresolved one", b)
	}
	if term.Kind != l7proxy.ListenerTLSTerminate || len(term.TLSRoutes) != 1 ||
		!slices.Equal(term.TLSRoutes[0].Hostnames, []string{"a.example.com", "other.org"}) {
		t.Errorf("term listener %+v", term)
	}
	if byName["app/mixed/term"].Kind != l7proxy.ListenerTLSTerminate || byName["app/mixed/pass"].Kind != l7proxy.ListenerTLSPassthrough {
		t.Error("listeners of both TLS modes on one port do not both serve")
	}
	// TLS listeners are steered to the proxy's HTTPS listener; the one
	// with an unsupported route kind does not serve (ResolvedRefs false).
	var https []string
	for _, fe := range fes {
		if fe.Name == "gw/app/gw/https" {
			for _, f := range fe.Frontends {
				https = append(https, fmt.Sprintf("%s:%d", f.Addr, f.Port))
			}
			if fe.ProxyListener != ListenerHTTPS {
				t.Errorf("frontend %s goes to proxy listener %q", fe.Name, fe.ProxyListener)
			}
		}
	}
	slices.Sort(https)
	if want := []string{"192.0.2.1:443", "192.0.2.1:8443"}; !slices.Equal(https, want) {
		t.Errorf("https frontends %v, want %v", https, want)
	}
}

// TestTranslateBackendTLSPolicy checks which policy applies to a Service
// port (by section, else the whole Service; the older of two for one
// target), the verification it gives the upstream, and the statuses:
// Conflicted, InvalidKind, InvalidCACertificateRef, with the Gateways
// whose routes use the Service as ancestors.
func TestTranslateBackendTLSPolicy(t *testing.T) {
	o := decodeGatewayObjects(t, gatewayBase+`---
apiVersion: v1
kind: Service
metadata: {name: secure, namespace: app}
spec:
  ports: [{name: https, port: 443}, {name: alt, port: 8443}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: secure-1, namespace: app, labels: {kubernetes.io/service-name: secure}}
addressType: IPv4
ports: [{name: https, port: 443}, {name: alt, port: 8443}]
endpoints: [{addresses: [10.0.0.7], conditions: {ready: true}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: bad, namespace: app}
data: {ca.crt: "not a certificate"}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: app}
spec:
  gatewayClassName: nodegress
  addresses: [{value: 192.0.2.1}]
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: app}
spec:
  parentRefs: [{name: gw}]
  rules:
  - {matches: [{path: {value: /section}}], backendRefs: [{name: secure, port: 443}]}
  - {matches: [{path: {value: /service}}], backendRefs: [{name: secure, port: 8443}]}
  - {matches: [{path: {value: /invalid}}], backendRefs: [{name: web, port: 8080}]}
  - {matches: [{path: {value: /lone}}], backendRefs: [{name: lone, port: 443}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: whole, namespace: app, generation: 2, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  targetRefs: [{group: "", kind: Service, name: secure}]
  validation: {hostname: secure.example.com, caCertificateRefs: [{group: "", kind: ConfigMap, name: ca}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: later, namespace: app, creationTimestamp: "2026-01-02T00:00:00Z"}
spec:
  targetRefs: [{group: "", kind: Service, name: secure}, {group: "", kind: Service, name: lone}]
  validation: {hostname: other.example.com, wellKnownCACertificates: System}
---
apiVersion: v1
kind: Service
metadata: {name: lone, namespace: app}
spec:
  ports: [{name: https, port: 443}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: section, namespace: app}
spec:
  targetRefs: [{group: "", kind: Service, name: secure, sectionName: https}]
  validation:
    hostname: secure.example.com
    caCertificateRefs: [{group: "", kind: ConfigMap, name: ca}]
    subjectAltNames: [{type: Hostname, hostname: san.example.com}, {type: URI, uri: "spiffe://cluster/web"}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: wrongkind, namespace: app}
spec:
  targetRefs: [{group: "", kind: Service, name: web}]
  validation: {hostname: web.example.com, caCertificateRefs: [{group: "", kind: Secret, name: ca}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: unused, namespace: app}
spec:
  targetRefs: [{group: "", kind: Service, name: nobody}]
  validation: {hostname: x.example.com, caCertificateRefs: [{group: "", kind: ConfigMap, name: bad}]}
`)
	caPEM, _ := testCert(t, "ca.example.com")
	o.in.ConfigMaps = append(o.in.ConfigMaps, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "ca", Namespace: "app"},
		Data: map[string]string{"ca.crt": string(caPEM)}})
	cfg, _, st, _ := o.translate()

	ups := map[string]l7proxy.Upstream{}
	for _, u := range cfg.Upstreams {
		ups[u.Name] = u
	}
	rules := cfg.Listeners[0].Routes[0].Rules
	upstream := func(path string) l7proxy.Upstream {
		for _, r := range rules {
			if r.Matches[0].Path == path {
				return ups[r.Backends[0].Upstream]
			}
		}
		t.Fatalf("no rule for %s", path)
		return l7proxy.Upstream{}
	}
	sec := upstream("/section")
	if sec.Protocol != l7proxy.ProtocolHTTPS || sec.TLS == nil || sec.TLS.ServerName != "secure.example.com" ||
		!slices.Equal(sec.TLS.DNSNames, []string{"san.example.com"}) || !slices.Equal(sec.TLS.URIs, []string{"spiffe://cluster/web"}) ||
		!strings.Contains(string(sec.TLS.CAPEM), string(caPEM)) {
		t.Errorf("port https upstream %+v: want the section policy's verification", sec)
	}
	whole := upstream("/service")
	if whole.Protocol != l7proxy.ProtocolHTTPS || whole.TLS == nil || len(whole.TLS.DNSNames) != 0 || whole.TLS.SystemRoots {
		t.Errorf("port alt upstream %+v: want the older whole-Service policy's verification", whole)
	}
	if name := rules[2].Backends[0].Upstream; name != "" {
		t.Errorf("a backend whose policy is invalid goes to %q, want no upstream (500)", name)
	}
	// A conflicted policy still verifies the target it alone has.
	if lone := upstream("/lone"); lone.TLS == nil || lone.TLS.ServerName != "other.example.com" || !lone.TLS.SystemRoots {
		t.Errorf("the conflicted policy's other target: %+v, want its verification", lone)
	}

	for _, tc := range []struct{ policy, accepted, resolved string }{
		{"app/whole", "True/Accepted", "True/ResolvedRefs"},
		{"app/later", "False/Conflicted", "True/ResolvedRefs"},
		{"app/section", "True/Accepted", "True/ResolvedRefs"},
		{"app/wrongkind", "False/NoValidCACertificate", "False/InvalidKind"},
	} {
		as := st.BackendTLSPolicies[tc.policy]
		if len(as) != 1 || as[0].AncestorRef.Name != "gw" || string(*as[0].AncestorRef.Namespace) != "app" {
			t.Errorf("%s ancestors %+v, want gateway app/gw", tc.policy, as)
			continue
		}
		if got := [2]string{condOf(as[0].Conditions, "Accepted"), condOf(as[0].Conditions, "ResolvedRefs")}; got != [2]string{tc.accepted, tc.resolved} {
			t.Errorf("%s conditions %v, want %s %s", tc.policy, got, tc.accepted, tc.resolved)
		}
	}
	if gen := st.BackendTLSPolicies["app/whole"][0].Conditions[0].ObservedGeneration; gen != 2 {
		t.Errorf("observedGeneration %d, want 2", gen)
	}
	if as, ok := st.BackendTLSPolicies["app/unused"]; ok {
		t.Errorf("a policy no route uses has ancestors %+v", as)
	}
}

func TestBackendTLSVerificationRefs(t *testing.T) {
	caPEM, _ := testCert(t, "ca.example.com")
	cms := map[string]*corev1.ConfigMap{
		"app/ca":    {Data: map[string]string{"ca.crt": string(caPEM)}},
		"app/bad":   {Data: map[string]string{"ca.crt": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}},
		"app/empty": {Data: map[string]string{}},
	}
	ref := func(kind, name string) gwapi.LocalObjectReference {
		return gwapi.LocalObjectReference{Kind: gwapi.Kind(kind), Name: gwapi.ObjectName(name)}
	}
	for _, tc := range []struct {
		name               string
		refs               []gwapi.LocalObjectReference
		system             bool
		accepted, resolved string
	}{
		{"valid", []gwapi.LocalObjectReference{ref("ConfigMap", "ca")}, false, "True/Accepted", "True/ResolvedRefs"},
		{"missing", []gwapi.LocalObjectReference{ref("ConfigMap", "gone")}, false, "False/NoValidCACertificate", "False/InvalidCACertificateRef"},
		{"unparsable", []gwapi.LocalObjectReference{ref("ConfigMap", "bad")}, false, "False/NoValidCACertificate", "False/InvalidCACertificateRef"},
		{"no key", []gwapi.LocalObjectReference{ref("ConfigMap", "empty")}, false, "False/NoValidCACertificate", "False/InvalidCACertificateRef"},
		{"one of two valid", []gwapi.LocalObjectReference{ref("ConfigMap", "ca"), ref("ConfigMap", "gone")}, false, "True/Accepted", "False/InvalidCACertificateRef"},
		{"system", nil, true, "True/Accepted", "True/ResolvedRefs"},
		{"none", nil, false, "False/NoValidCACertificate", "True/ResolvedRefs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &gwapi.BackendTLSPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "p"}}
			p.Spec.Validation = gwapi.BackendTLSPolicyValidation{Hostname: "a.example.com", CACertificateRefs: tc.refs}
			if tc.system {
				p.Spec.Validation.WellKnownCACertificates = ptr(gwapi.WellKnownCACertificatesSystem)
			}
			v, acc, res := backendTLSVerification(p, cms)
			if got := [2]string{condOf([]metav1.Condition{acc}, "Accepted"), condOf([]metav1.Condition{res}, "ResolvedRefs")}; got != [2]string{tc.accepted, tc.resolved} {
				t.Errorf("conditions %v, want %s %s", got, tc.accepted, tc.resolved)
			}
			if (v != nil) != (tc.accepted == "True/Accepted") {
				t.Errorf("verification %+v with Accepted %s", v, tc.accepted)
			}
		})
	}
}

// TestTranslateRouteFilters checks the CORS filter and backendRef header
// filters, and the answers to what cannot be applied: an origin the proxy
// cannot parse turns the rule into 500s, an unsupported backendRef filter
// its backend (ResolvedRefs False/UnsupportedValue).
func TestTranslateRouteFilters(t *testing.T) {
	o := decodeGatewayObjects(t, gatewayBase+httpGateway+`---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cors, namespace: app}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /ok}}]
    filters:
    - type: CORS
      cors:
        allowOrigins: ["https://www.foo.com", "https://*.bar.com"]
        allowMethods: [GET, OPTIONS]
        allowHeaders: [x-header-1]
        exposeHeaders: [x-header-3]
        allowCredentials: true
        maxAge: 3600
    backendRefs: [{name: web, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /bad}}]
    filters: [{type: CORS, cors: {allowOrigins: ["https://a.example:99999"]}}]
    backendRefs: [{name: web, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend-filters, namespace: app}
spec:
  parentRefs: [{name: gw}]
  rules:
  - backendRefs:
    - name: web
      port: 8080
      filters:
      - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: backend, value: web}]}}
      - {type: ResponseHeaderModifier, responseHeaderModifier: {remove: [x-internal]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend-unsupported, namespace: app}
spec:
  parentRefs: [{name: gw}]
  rules:
  - backendRefs:
    - name: web
      port: 8080
      weight: 2
      filters: [{type: URLRewrite, urlRewrite: {hostname: other.example}}]
    - {name: web, port: 8080}
`)
	cfg, _, st, errs := o.translate()
	routes := map[string][]l7proxy.HTTPRouteRule{}
	for _, r := range cfg.Listeners[0].Routes {
		routes[r.Source] = r.Rules
	}

	cors := routes["app/cors"]
	c := cors[0].Filters.CORS
	if c == nil || !slices.Equal(c.AllowOrigins, []string{"https://www.foo.com", "https://*.bar.com"}) ||
		!slices.Equal(c.AllowMethods, []string{"GET", "OPTIONS"}) || !slices.Equal(c.AllowHeaders, []string{"x-header-1"}) ||
		!slices.Equal(c.ExposeHeaders, []string{"x-header-3"}) || !c.AllowCredentials || c.MaxAge != 3600 {
		t.Errorf("CORS filter %+v", c)
	}
	if len(cors[0].Backends) != 1 || cors[0].Backends[0].Upstream == "" {
		t.Errorf("CORS rule backends %+v", cors[0].Backends)
	}
	// The filter cannot be applied, so it is not skipped: the rule
	// answers 500.
	if bad := cors[1]; bad.Filters.CORS != nil || len(bad.Backends) != 1 || bad.Backends[0].Upstream != "" {
		t.Errorf("invalid CORS rule %+v, want one unresolved backend", bad)
	}
	found := false
	for _, err := range errs {
		found = found || strings.Contains(err.Error(), "invalid CORS origin")
	}
	if !found {
		t.Errorf("no error reported for the invalid origin: %v", errs)
	}

	b := routes["app/backend-filters"][0].Backends
	if len(b) != 1 || b[0].Upstream == "" || b[0].RequestHeaders == nil || b[0].RequestHeaders.Set[0] != (l7proxy.Field{Name: "Backend", Value: "web"}) ||
		b[0].ResponseHeaders == nil || b[0].ResponseHeaders.Remove[0] != "X-Internal" {
		t.Errorf("backend filters %+v", b)
	}
	if got := condOf(st.Routes[kindHTTPRoute]["app/backend-filters"][0].Conditions, "ResolvedRefs"); got != "True/ResolvedRefs" {
		t.Errorf("backend-filters ResolvedRefs %s", got)
	}

	u := routes["app/backend-unsupported"][0].Backends
	if len(u) != 2 || u[0].Upstream != "" || u[0].Weight != 2 || u[1].Upstream == "" {
		t.Errorf("unsupported backend filter: backends %+v, want the first unresolved", u)
	}
	if got := condOf(st.Routes[kindHTTPRoute]["app/backend-unsupported"][0].Conditions, "ResolvedRefs"); got != "False/UnsupportedValue" {
		t.Errorf("backend-unsupported ResolvedRefs %s", got)
	}
}

// TestTranslateRequestMirror checks RequestMirror filters: the backend
// resolves like a backendRef, percent and fraction become a share, and a
// mirror that does not resolve is left out with ResolvedRefs False while
// the rule still serves.
func TestTranslateRequestMirror(t *testing.T) {
	o := decodeGatewayObjects(t, gatewayBase+httpGateway+`---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mirrors, namespace: app}
spec:
  parentRefs: [{name: gw}]
  rules:
  - filters:
    - {type: RequestMirror, requestMirror: {backendRef: {name: web, port: 8080}}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: web, namespace: app, port: 8080}, percent: 20}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: web, port: 8080}, fraction: {numerator: 25, denominator: 50}}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: web, port: 8080}, fraction: {numerator: 3}}}
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-set, value: v}]}
    backendRefs: [{name: web, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: missing, namespace: app}
spec:
  parentRefs: [{name: gw}]
  rules:
  - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: nowhere, port: 8080}}}]
    backendRefs: [{name: web, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: foreign, namespace: app}
spec:
  parentRefs: [{name: gw}]
  rules:
  - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: grpc, namespace: other, port: 9000}}}]
    backendRefs: [{name: web, port: 8080}]
`)
	cfg, _, st, _ := o.translate()
	routes := map[string][]l7proxy.HTTPRouteRule{}
	for _, r := range cfg.Listeners[0].Routes {
		routes[r.Source] = r.Rules
	}
	rule := routes["app/mirrors"][0]
	web := rule.Backends[0].Upstream
	if web == "" {
		t.Fatalf("backends %+v", rule.Backends)
	}
	want := []l7proxy.Mirror{{Upstream: web}, {Upstream: web, Numerator: 20, Denominator: 100},
		{Upstream: web, Numerator: 25, Denominator: 50}, {Upstream: web, Numerator: 3, Denominator: 100}}
	if !slices.Equal(rule.Filters.Mirrors, want) {
		t.Errorf("mirrors %+v, want %+v", rule.Filters.Mirrors, want)
	}
	if rule.Filters.RequestHeaders == nil {
		t.Error("header filter beside the mirrors lost")
	}
	if got := condOf(st.Routes[kindHTTPRoute]["app/mirrors"][0].Conditions, "ResolvedRefs"); got != "True/ResolvedRefs" {
		t.Errorf("mirrors ResolvedRefs %s", got)
	}
	for name, reason := range map[string]string{"missing": "False/BackendNotFound", "foreign": "False/RefNotPermitted"} {
		r := routes["app/"+name][0]
		if len(r.Filters.Mirrors) != 0 || len(r.Backends) != 1 || r.Backends[0].Upstream == "" {
			t.Errorf("%s: rule %+v, want no mirror and its backend", name, r)
		}
		if got := condOf(st.Routes[kindHTTPRoute]["app/"+name][0].Conditions, "ResolvedRefs"); got != reason {
			t.Errorf("%s ResolvedRefs %s, want %s", name, got, reason)
		}
	}
}

func TestTranslateRouteRetry(t *testing.T) {
	o := decodeGatewayObjects(t, gatewayBase+httpGateway+`---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: app}
spec:
  parentRefs: [{name: gw}]
  rules:
  - {retry: {codes: [500, 502], attempts: 3, backoff: 100ms}, backendRefs: [{name: web, port: 8080}]}
  - {retry: {}, backendRefs: [{name: web, port: 8080}]}
  - {backendRefs: [{name: web, port: 8080}]}
  - {retry: {backoff: soon}, backendRefs: [{name: web, port: 8080}]}
`)
	cfg, _, _, errs := o.translate()
	rules := cfg.Listeners[0].Routes[0].Rules
	if r := rules[0].Retry; r == nil || !slices.Equal(r.Codes, []int{500, 502}) || r.Attempts != 3 || r.Backoff != 100*time.Millisecond {
		t.Errorf("retry %+v", r)
	}
	if r := rules[1].Retry; r == nil || len(r.Codes) != 0 || r.Attempts != 1 || r.Backoff != defaultRetryBackoff {
		t.Errorf("default retry %+v", r)
	}
	if rules[2].Retry != nil {
		t.Errorf("retry without a policy: %+v", rules[2].Retry)
	}
	if b := rules[3].Backends; len(b) != 1 || b[0].Upstream != "" {
		t.Errorf("invalid backoff: backends %+v, want the rule answering 500", b)
	}
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), `retry backoff "soon"`) {
		t.Errorf("errors %v", errs)
	}
}

// TestTranslateFrontendValidation checks client certificate validation:
// the default and per-port configurations, the conditions of listeners
// whose CA certificates do not resolve (not served), HTTP listeners left
// alone, and the Gateway's InsecureFrontendValidationMode condition.
func TestTranslateFrontendValidation(t *testing.T) {
	o := decodeGatewayObjects(t, gatewayBase+`---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: app, generation: 4}
spec:
  gatewayClassName: nodegress
  addresses: [{value: 192.0.2.1}]
  tls:
    frontend:
      default: {validation: {caCertificateRefs: [{group: "", kind: ConfigMap, name: ca}]}}
      perPort:
      - {port: 8443, tls: {validation: {mode: AllowInsecureFallback, caCertificateRefs: [{group: "", kind: ConfigMap, name: ca}]}}}
      - {port: 7443, tls: {validation: {caCertificateRefs: [{group: "", kind: ConfigMap, name: missing}]}}}
      - {port: 6443, tls: {validation: {caCertificateRefs: [{group: "", kind: Service, name: web}]}}}
      - {port: 5443, tls: {validation: {caCertificateRefs: [{group: "", kind: ConfigMap, name: ca, namespace: other}]}}}
      - {port: 4443, tls: {validation: {caCertificateRefs: [{group: "", kind: ConfigMap, name: ca}, {group: "", kind: ConfigMap, name: missing}]}}}
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: strict, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: cert}]}}
  - {name: fallback, port: 8443, protocol: HTTPS, tls: {certificateRefs: [{name: cert}]}}
  - {name: missing, port: 7443, protocol: HTTPS, tls: {certificateRefs: [{name: cert}]}}
  - {name: kind, port: 6443, protocol: HTTPS, tls: {certificateRefs: [{name: cert}]}}
  - {name: grant, port: 5443, protocol: HTTPS, tls: {certificateRefs: [{name: cert}]}}
  - {name: partial, port: 4443, protocol: HTTPS, tls: {certificateRefs: [{name: cert}]}}
`)
	caPEM, _ := testCert(t, "ca.example.com")
	o.addTLSSecret(t, "app", "cert", "gw.example.com")
	for _, ns := range []string{"app", "other"} {
		o.in.ConfigMaps = append(o.in.ConfigMaps, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "ca", Namespace: ns},
			Data: map[string]string{"ca.crt": string(caPEM)}})
	}
	cfg, _, st, _ := o.translate()
	served := map[string]l7proxy.Listener{}
	for _, l := range cfg.Listeners {
		served[l.Name] = l
	}
	status := map[string]gwapi.ListenerStatus{}
	for _, l := range st.Gateways["app/gw"].Listeners {
		status[string(l.Name)] = l
	}
	for _, tc := range []struct {
		name, accepted, resolved string
		validation               string // "", "strict", "fallback"; "-" when not served
	}{
		{"http", "True/Accepted", "True/ResolvedRefs", ""},
		{"strict", "True/Accepted", "True/ResolvedRefs", "strict"},
		{"fallback", "True/Accepted", "True/ResolvedRefs", "fallback"},
		{"missing", "False/NoValidCACertificate", "False/InvalidCACertificateRef", "-"},
		{"kind", "False/NoValidCACertificate", "False/InvalidCACertificateKind", "-"},
		{"grant", "False/NoValidCACertificate", "False/RefNotPermitted", "-"},
		// One reference resolves: accepted, but not served without all
		// its CAs.
		{"partial", "True/Accepted", "False/InvalidCACertificateRef", "-"},
	} {
		l := status[tc.name]
		if got := [2]string{condOf(l.Conditions, "Accepted"), condOf(l.Conditions, "ResolvedRefs")}; got != [2]string{tc.accepted, tc.resolved} {
			t.Errorf("listener %s: %v, want %s %s", tc.name, got, tc.accepted, tc.resolved)
		}
		pl, ok := served["app/gw/"+tc.name]
		got := "-"
		switch {
		case !ok:
		case pl.ClientValidation == nil:
			got = ""
		case pl.ClientValidation.AllowInsecureFallback:
			got = "fallback"
		default:
			got = "strict"
		}
		if got != tc.validation {
			t.Errorf("listener %s: validation %q, want %q", tc.name, got, tc.validation)
		}
		if ok && pl.ClientValidation != nil && !strings.Contains(string(pl.ClientValidation.CAPEM), string(caPEM)) {
			t.Errorf("listener %s: CA certificates not passed on", tc.name)
		}
	}
	if got := condOf(st.Gateways["app/gw"].Conditions, "InsecureFrontendValidationMode"); got != "True/ConfigurationChanged" {
		t.Errorf("InsecureFrontendValidationMode %s", got)
	}
	// With a ReferenceGrant, the other namespace's ConfigMap serves.
	o.in.Grants = append(o.in.Grants, &gwapi.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Name: "g", Namespace: "other"},
		Spec: gwapi.ReferenceGrantSpec{
			From: []gwapi.ReferenceGrantFrom{{Group: gwapi.GroupName, Kind: "Gateway", Namespace: "app"}},
			To:   []gwapi.ReferenceGrantTo{{Group: "", Kind: "ConfigMap"}},
		}})
	cfg, _, _, _ = o.translate()
	if !slices.ContainsFunc(cfg.Listeners, func(l l7proxy.Listener) bool { return l.Name == "app/gw/grant" && l.ClientValidation != nil }) {
		t.Error("granted cross-namespace CA: listener not served with its validation")
	}
}

// TestTranslateBackendClientCertificate: a Gateway's backend client
// certificate goes to the verified HTTPS backends of the routes attached
// to it, not to another Gateway's use of the same route; references that
// do not resolve are the Gateway's ResolvedRefs condition.
func TestTranslateBackendClientCertificate(t *testing.T) {
	gateway := func(name, backend string) string {
		return fmt.Sprintf(`---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: %s, namespace: app}
spec:
  gatewayClassName: nodegress
  addresses: [{value: 192.0.2.%d}]
  tls: %s
  listeners: [{name: http, port: 80, protocol: HTTP}]
`, name, len(name), backend)
	}
	o := decodeGatewayObjects(t, gatewayBase+`---
apiVersion: v1
kind: Service
metadata: {name: secure, namespace: app}
spec:
  ports: [{name: https, port: 443}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: secure, namespace: app}
spec:
  targetRefs: [{group: "", kind: Service, name: secure}]
  validation: {hostname: secure.example.com, wellKnownCACertificates: System}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: app}
spec:
  parentRefs: [{name: with}, {name: without}]
  rules: [{backendRefs: [{name: secure, port: 443}]}]
`+gateway("with", "{backend: {clientCertificateRef: {name: client}}}")+
		gateway("without", "{}")+
		gateway("missing", "{backend: {clientCertificateRef: {name: nothing}}}")+
		gateway("kindcm", "{backend: {clientCertificateRef: {kind: ConfigMap, name: client}}}")+
		gateway("othern", "{backend: {clientCertificateRef: {namespace: other, name: client}}}"))
	certPEM, keyPEM := testCert(t, "gateway-client")
	for _, ns := range []string{"app", "other"} {
		o.secrets = append(o.secrets, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "client", Namespace: ns},
			Type: corev1.SecretTypeTLS, Data: map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM}})
	}
	cfg, _, st, _ := o.translate()
	ups := map[string]l7proxy.Upstream{}
	for _, u := range cfg.Upstreams {
		ups[u.Name] = u
	}
	for _, l := range cfg.Listeners {
		var want bool
		switch l.Name {
		case "app/with/http":
			want = true
		case "app/without/http":
		default:
			continue
		}
		up, ok := ups[l.Routes[0].Rules[0].Backends[0].Upstream]
		if !ok || up.TLS == nil || (up.TLS.ClientCert != nil) != want {
			t.Errorf("%s: upstream %+v, want TLS with client certificate %v", l.Name, up, want)
		}
	}
	for _, tc := range []struct{ gw, want string }{
		{"with", "True/ResolvedRefs"},
		{"without", "True/ResolvedRefs"},
		{"missing", "False/InvalidClientCertificateRef"},
		{"kindcm", "False/InvalidClientCertificateRef"},
		{"othern", "False/RefNotPermitted"},
	} {
		if got := condOf(st.Gateways["app/"+tc.gw].Conditions, "ResolvedRefs"); got != tc.want {
			t.Errorf("gateway %s ResolvedRefs %s, want %s", tc.gw, got, tc.want)
		}
	}
}

// listenerSetYAML is ListenerSet ns/name (generation 2, created at
// created) attached to Gateway app/parent, with the listeners given.
func listenerSetYAML(name, ns, parent, created, listeners string) string {
	return fmt.Sprintf(`---
apiVersion: gateway.networking.k8s.io/v1
kind: ListenerSet
metadata: {name: %s, namespace: %s, generation: 2, creationTimestamp: "%s"}
spec:
  parentRef: {name: %s, namespace: app}
  listeners: %s
`, name, ns, created, parent, listeners)
}

// TestTranslateListenerSets checks allowedListeners (Same; None by
// default), precedence (the Gateway's listeners, then older sets) with
// only the later listener of a conflict refused, the sets' statuses,
// attachment by a parentRef of kind ListenerSet (and not by the
// Gateway's), and the sets' listeners served on the Gateway's address.
func TestTranslateListenerSets(t *testing.T) {
	set := listenerSetYAML
	o := decodeGatewayObjects(t, gatewayBase+`---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: app}
spec:
  gatewayClassName: nodegress
  addresses: [{value: 192.0.2.1}]
  allowedListeners: {namespaces: {from: Same}}
  listeners: [{name: http, port: 80, protocol: HTTP, hostname: gw.example}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: closed, namespace: app}
spec:
  gatewayClassName: nodegress
  addresses: [{value: 192.0.2.2}]
  listeners: [{name: http, port: 80, protocol: HTTP}]
`+set("a", "app", "gw", "2026-01-01T00:00:00Z", `
  - {name: one, port: 80, protocol: HTTP, hostname: a.example}
  - {name: clash, port: 80, protocol: HTTP, hostname: gw.example}
  - {name: proto, port: 80, protocol: HTTPS, hostname: p.example, tls: {certificateRefs: [{name: none}]}}`)+
		set("b", "app", "gw", "2026-01-02T00:00:00Z", `[{name: dup, port: 80, protocol: HTTP, hostname: a.example}]`)+
		set("c", "other", "gw", "2026-01-01T00:00:00Z", `[{name: x, port: 80, protocol: HTTP, hostname: c.example}]`)+
		set("d", "app", "closed", "2026-01-01T00:00:00Z", `[{name: x, port: 80, protocol: HTTP, hostname: d.example}]`)+`---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: onset, namespace: app}
spec:
  parentRefs: [{kind: ListenerSet, name: a, sectionName: one}, {kind: ListenerSet, name: a, sectionName: nothing}]
  rules: [{backendRefs: [{name: web, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ongateway, namespace: app}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: web, port: 8080}]}]
`)
	cfg, _, st, _ := o.translate()
	setConds := func(key string) string {
		s := st.ListenerSets[key]
		return condOf(s.Conditions, "Accepted") + " " + condOf(s.Conditions, "Programmed")
	}
	for _, tc := range []struct{ set, want string }{
		{"app/a", "True/Accepted True/Programmed"},
		{"app/b", "False/ListenersNotValid False/ListenersNotValid"},
		{"other/c", "False/NotAllowed False/NotAllowed"},
		{"app/d", "False/NotAllowed False/NotAllowed"},
	} {
		if got := setConds(tc.set); got != tc.want {
			t.Errorf("listenerset %s: %s, want %s", tc.set, got, tc.want)
		}
	}
	entry := func(set, name string) gwapi.ListenerEntryStatus {
		for _, l := range st.ListenerSets[set].Listeners {
			if string(l.Name) == name {
				return l
			}
		}
		t.Fatalf("listenerset %s has no listener %s status", set, name)
		return gwapi.ListenerEntryStatus{}
	}
	for _, tc := range []struct {
		set, name, accepted, programmed, conflicted string
		attached                                    int32
	}{
		{"app/a", "one", "True/Accepted", "True/Programmed", "False/NoConflicts", 1},
		{"app/a", "clash", "False/HostnameConflict", "False/HostnameConflict", "True/HostnameConflict", 0},
		{"app/a", "proto", "False/ProtocolConflict", "False/ProtocolConflict", "True/ProtocolConflict", 0},
		{"app/b", "dup", "False/HostnameConflict", "False/HostnameConflict", "True/HostnameConflict", 0},
	} {
		l := entry(tc.set, tc.name)
		got := [3]string{condOf(l.Conditions, "Accepted"), condOf(l.Conditions, "Programmed"), condOf(l.Conditions, "Conflicted")}
		if got != [3]string{tc.accepted, tc.programmed, tc.conflicted} || l.AttachedRoutes != tc.attached {
			t.Errorf("%s/%s: %v attached %d, want %s %s %s attached %d", tc.set, tc.name, got, l.AttachedRoutes,
				tc.accepted, tc.programmed, tc.conflicted, tc.attached)
		}
	}
	gws := st.Gateways["app/gw"]
	if gws.AttachedListenerSets == nil || *gws.AttachedListenerSets != 1 {
		t.Errorf("gateway attachedListenerSets %v, want 1", gws.AttachedListenerSets)
	}
	if len(gws.Listeners) != 1 || gws.Listeners[0].AttachedRoutes != 1 || condOf(gws.Listeners[0].Conditions, "Accepted") != "True/Accepted" {
		t.Errorf("gateway listeners %+v: want its own listener only, with the route that names the gateway", gws.Listeners)
	}
	parents := st.Routes[kindHTTPRoute]["app/onset"]
	if len(parents) != 2 || condOf(parents[0].Conditions, "Accepted") != "True/Accepted" ||
		condOf(parents[1].Conditions, "Accepted") != "False/NoMatchingParent" {
		t.Errorf("route on the set: parents %+v", parents)
	}
	var served []string
	for _, l := range cfg.Listeners {
		served = append(served, fmt.Sprintf("%s %s %v %d", l.Name, l.Hostname, l.Frontends, len(l.Routes)))
	}
	slices.Sort(served)
	if want := []string{"app/a/one a.example [192.0.2.1:80] 1", "app/closed/http  [192.0.2.2:80] 0", "app/gw/http gw.example [192.0.2.1:80] 1"}; !slices.Equal(served, want) {
		t.Errorf("served listeners %q, want %q", served, want)
	}
}

// TestGatewayInfrastructureParametersRef: nodegress takes no
// infrastructure parameters, so a Gateway naming some is not accepted
// (InvalidParameters) and not served; the same Gateway without them is.
func TestGatewayInfrastructureParametersRef(t *testing.T) {
	for _, tt := range []struct {
		name, infra, accepted string
		served                bool
	}{
		{"parametersRef", "infrastructure: {parametersRef: {group: invalid.io, kind: InvalidParameters, name: invalid}}", "False/InvalidParameters", false},
		{"labels only", "infrastructure: {labels: {team: web}}", "True/Accepted", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := decodeGatewayObjects(t, gatewayBase+strings.Replace(httpGateway, "  gatewayClassName: nodegress\n",
				"  gatewayClassName: nodegress\n  "+tt.infra+"\n", 1))
			_, fes, st, _ := o.translate()
			if got := condOf(st.Gateways["app/gw"].Conditions, "Accepted"); got != tt.accepted {
				t.Errorf("Accepted %s, want %s", got, tt.accepted)
			}
			if served := len(fes) > 0; served != tt.served {
				t.Errorf("served %v, want %v (%v)", served, tt.served, fes)
			}
		})
	}
}

// TestTranslateGRPCRouteMirror: a GRPCRoute's RequestMirror is served
// like an HTTPRoute's, its Service spoken to over h2c as gRPC backends
// are; one that does not resolve is left out, with ResolvedRefs False,
// and the rule still serves.
func TestTranslateGRPCRouteMirror(t *testing.T) {
	o := decodeGatewayObjects(t, gatewayBase+httpGateway+`---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: mirrored, namespace: app}
spec:
  parentRefs: [{name: gw}]
  rules:
  - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: web, port: 8080}, percent: 50}}]
    backendRefs: [{name: web, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: missing, namespace: app}
spec:
  parentRefs: [{name: gw}]
  hostnames: [missing.test]
  rules:
  - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: nowhere, port: 8080}}}]
    backendRefs: [{name: web, port: 8080}]
`)
	cfg, _, st, _ := o.translate()
	rules := map[string]l7proxy.HTTPRouteRule{}
	for _, r := range cfg.Listeners[0].Routes {
		rules[r.Source] = r.Rules[0]
	}
	rule := rules["app/mirrored"]
	if len(rule.Backends) != 1 || !strings.Contains(rule.Backends[0].Upstream, "/h2c") {
		t.Fatalf("backends %+v", rule.Backends)
	}
	want := []l7proxy.Mirror{{Upstream: rule.Backends[0].Upstream, Numerator: 50, Denominator: 100}}
	if !slices.Equal(rule.Filters.Mirrors, want) {
		t.Errorf("mirrors %+v, want %+v (the h2c upstream)", rule.Filters.Mirrors, want)
	}
	if got := condOf(st.Routes[kindGRPCRoute]["app/mirrored"][0].Conditions, "ResolvedRefs"); got != "True/ResolvedRefs" {
		t.Errorf("mirrored ResolvedRefs %s", got)
	}
	missing := rules["app/missing"]
	if len(missing.Filters.Mirrors) != 0 || len(missing.Backends) != 1 || missing.Backends[0].Upstream == "" {
		t.Errorf("missing mirror: rule %+v, want no mirror and its backend", missing)
	}
	if got := condOf(st.Routes[kindGRPCRoute]["app/missing"][0].Conditions, "ResolvedRefs"); got != "False/BackendNotFound" {
		t.Errorf("missing ResolvedRefs %s", got)
	}
}

// TestRouteParentRefPort attaches a route by its parentRef's port: to the
// listeners on that port only, and to none (NoMatchingParent, its
// references still resolved) when no listener, or not the one its
// sectionName names, is on it.
func TestRouteParentRefPort(t *testing.T) {
	for _, tc := range []struct {
		name      string
		parentRef string
		accepted  string
		attached  map[string]int32 // by listener
	}{
		{name: "port of a listener", parentRef: "{name: gw, port: 8080}", accepted: "True/Accepted",
			attached: map[string]int32{"http": 0, "alt": 1}},
		{name: "port and sectionName of one listener", parentRef: "{name: gw, sectionName: http, port: 80}", accepted: "True/Accepted",
			attached: map[string]int32{"http": 1, "alt": 0}},
		{name: "no listener on the port", parentRef: "{name: gw, port: 81}", accepted: "False/NoMatchingParent",
			attached: map[string]int32{"http": 0, "alt": 0}},
		{name: "sectionName of a listener on another port", parentRef: "{name: gw, sectionName: http, port: 8080}", accepted: "False/NoMatchingParent",
			attached: map[string]int32{"http": 0, "alt": 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := decodeGatewayObjects(t, gatewayBase+`---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: app}
spec:
  gatewayClassName: nodegress
  addresses: [{value: 192.0.2.1}]
  listeners: [{name: http, port: 80, protocol: HTTP}, {name: alt, port: 8080, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: app, generation: 2}
spec:
  parentRefs: [`+tc.parentRef+`]
  rules: [{backendRefs: [{name: web, port: 8080}]}]
`)
			_, _, st, _ := o.translate()
			parents := st.Routes[kindHTTPRoute]["app/web"]
			if len(parents) != 1 {
				t.Fatalf("route parents %+v, want one", parents)
			}
			conds := parents[0].Conditions
			if got := condOf(conds, "Accepted") + " " + condOf(conds, "ResolvedRefs"); got != tc.accepted+" True/ResolvedRefs" {
				t.Errorf("route conditions %s, want %s True/ResolvedRefs", got, tc.accepted)
			}
			for _, c := range conds {
				if c.ObservedGeneration != 2 {
					t.Errorf("route condition %s observedGeneration %d, want 2", c.Type, c.ObservedGeneration)
				}
			}
			for _, l := range st.Gateways["app/gw"].Listeners {
				if want := tc.attached[string(l.Name)]; l.AttachedRoutes != want {
					t.Errorf("listener %s attachedRoutes %d, want %d", l.Name, l.AttachedRoutes, want)
				}
			}
		})
	}
}
