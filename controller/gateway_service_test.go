package controller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/kubernetes/fake"
	corelisters "k8s.io/client-go/listers/core/v1"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	gwapi "sigs.k8s.io/gateway-api/apis/v1"
	gwfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"

	"github.com/nodegress/nodegress/loader"
)

// serviceGateway is Gateway app/gw without spec.addresses, with
// infrastructure metadata and two listeners on one port.
const serviceGateway = `---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: app, uid: gw-uid, generation: 2, creationTimestamp: "2021-01-01T00:00:00Z"}
spec:
  gatewayClassName: nodegress
  infrastructure:
    labels: {team: web}
    annotations: {lb.example.com/pool: public}
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: other, port: 80, protocol: HTTP, hostname: other.example.com}
  - {name: alt, port: 8080, protocol: HTTP}
`

// gatewayLBService is the Service of serviceGateway as the API server
// holds it after the writer applied it, with the given load balancer
// ingress: IPs, and hostnames for what is not an IP.
func gatewayLBService(ingress ...string) *corev1.Service {
	return gatewayLBServiceFor("gw", "gw-uid", ingress...)
}

// gatewayLBServiceFor is gatewayLBService for Gateway app/name.
func gatewayLBServiceFor(name string, uid types.UID, ingress ...string) *corev1.Service {
	gw := &gwapi.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: name, UID: uid},
		Spec: gwapi.GatewaySpec{Listeners: []gwapi.Listener{{Name: "http", Port: 80, Protocol: gwapi.HTTPProtocolType}}}}
	svc := desiredGatewayService(gw, DefaultGatewayControllerName, nil, serviceWant{loadBalancer: true})
	svc.Spec.ClusterIP = "10.96.0.50"
	for _, v := range ingress {
		in := corev1.LoadBalancerIngress{IP: v}
		if _, err := netip.ParseAddr(v); err != nil {
			in = corev1.LoadBalancerIngress{Hostname: v}
		}
		svc.Status.LoadBalancer.Ingress = append(svc.Status.LoadBalancer.Ingress, in)
	}
	return svc
}

// lbHostnames are n hostnames as a load balancer gives them.
func lbHostnames(n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("lb-%d.elb.example.com", i))
	}
	return out
}

// testNetIPs are the first n addresses of 192.0.2.0/24.
func testNetIPs(n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("192.0.2.%d", i+1))
	}
	return out
}

// staticGateway is Gateway app/name with the given spec.addresses.
func staticGateway(name, addresses string) string {
	return fmt.Sprintf(`---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: %s, namespace: app}
spec:
  gatewayClassName: nodegress
  addresses: %s
  listeners: [{name: http, port: 80, protocol: HTTP}]
`, name, addresses)
}

func TestGatewayServiceAddresses(t *testing.T) {
	tests := []struct {
		name    string
		extra   string // more Gateways
		svcs    []*corev1.Service
		gw      string // the Gateway checked
		wantSvc bool   // a Service is wanted for it
		// Gateway conditions (and a part of Programmed's message) and
		// addresses (a hostname as Hostname:value).
		accepted, programmed, programmedMsg string
		addrs                               []string
		// The wanted Service's externalIPs, and whether it is of type
		// ClusterIP (the Gateway asks no load balancer for an address).
		externalIPs []string
		clusterIP   bool
		// frontend served, and one that must not be.
		serves, notServes string
	}{
		{
			name: "no service yet: asked for, no address", gw: "app/gw", wantSvc: true,
			accepted: "True/Accepted", programmed: "False/AddressNotAssigned",
		},
		{
			name: "service without a load balancer IP: no address", gw: "app/gw", wantSvc: true,
			svcs:     []*corev1.Service{gatewayLBService()},
			accepted: "True/Accepted", programmed: "False/AddressNotAssigned",
		},
		{
			name: "load balancer IP: the gateway's address, served", gw: "app/gw", wantSvc: true,
			svcs:     []*corev1.Service{gatewayLBService("198.51.100.7", "2001:db8::7")},
			accepted: "True/Accepted", programmed: "True/Programmed", addrs: []string{"198.51.100.7"},
			serves: "198.51.100.7:80", notServes: "10.96.0.50:80",
		},
		{
			name: "service of an earlier gateway of the same name: no address", gw: "app/gw", wantSvc: true,
			svcs: []*corev1.Service{func() *corev1.Service {
				s := gatewayLBService("198.51.100.7")
				s.OwnerReferences[0].UID = "old-uid"
				return s
			}()},
			accepted: "True/Accepted", programmed: "False/AddressNotAssigned", notServes: "198.51.100.7:80",
		},
		{
			name: "a service of that name that is not nodegress's is left alone", gw: "app/gw",
			svcs: []*corev1.Service{func() *corev1.Service {
				s := gatewayLBService("198.51.100.7")
				s.Labels, s.OwnerReferences = nil, nil
				return s
			}()},
			accepted: "True/Accepted", programmed: "False/AddressNotAssigned", notServes: "198.51.100.7:80",
		},
		{
			name: "another install's service of that name is left alone", gw: "app/gw",
			svcs: []*corev1.Service{func() *corev1.Service {
				s := gatewayLBService("198.51.100.7")
				s.Annotations[annotationGatewayController] = "example.com/other-nodegress"
				return s
			}()},
			accepted: "True/Accepted", programmed: "False/AddressNotAssigned", notServes: "198.51.100.7:80",
		},
		{
			name: "spec.addresses: served, and written on the service as externalIPs", gw: "app/static", wantSvc: true,
			extra: staticGateway("static", "[{value: 192.0.2.1}]"),
			// The load balancer's IP of a Gateway that names its
			// addresses is not the Gateway's.
			svcs:     []*corev1.Service{gatewayLBServiceFor("static", "", "198.51.100.9")},
			accepted: "True/Accepted", programmed: "True/Programmed", addrs: []string{"192.0.2.1"},
			externalIPs: []string{"192.0.2.1"}, clusterIP: true, serves: "192.0.2.1:80", notServes: "198.51.100.9:80",
		},
		{
			name: "spec.addresses with an IPv6 one: not usable, none written", gw: "app/static", wantSvc: true,
			extra:    staticGateway("static", `[{value: 192.0.2.1}, {value: "2001:db8::1"}]`),
			accepted: "True/Accepted", programmed: "False/AddressNotUsable", programmedMsg: `"2001:db8::1" is not a usable IPv4`,
			clusterIP: true, notServes: "192.0.2.1:80",
		},
		{
			name: "spec.addresses with one that is not an IP: not usable, none written", gw: "app/static", wantSvc: true,
			extra:    staticGateway("static", `[{value: 192.0.2.1}, {value: "192.0.2.300"}]`),
			accepted: "True/Accepted", programmed: "False/AddressNotUsable", programmedMsg: `"192.0.2.300" is not a usable IPv4`,
			clusterIP: true, notServes: "192.0.2.1:80",
		},
		{
			name: "spec.addresses of another type: not accepted, no service", gw: "app/static",
			extra:    staticGateway("static", "[{type: Hostname, value: gw.example.com}]"),
			accepted: "False/UnsupportedAddress", programmed: "False/Invalid",
		},
		{
			name: "named and assigned: the named one written, both served", gw: "app/mixed", wantSvc: true,
			extra:    staticGateway("mixed", `[{value: 192.0.2.1}, {type: IPAddress, value: ""}]`),
			svcs:     []*corev1.Service{gatewayLBServiceFor("mixed", "", "198.51.100.7")},
			accepted: "True/Accepted", programmed: "True/Programmed", addrs: []string{"192.0.2.1", "198.51.100.7"},
			externalIPs: []string{"192.0.2.1"}, serves: "198.51.100.7:80",
		},
		{
			name: "refused address beside an entry asking the load balancer: the service stays a LoadBalancer", gw: "app/mixed",
			wantSvc:  true,
			extra:    staticGateway("mixed", `[{value: "192.0.2.300"}, {type: IPAddress, value: ""}]`),
			accepted: "True/Accepted", programmed: "False/AddressNotUsable",
		},
		{
			// The API server refuses a status with more; every IP is
			// served all the same.
			name: "more named and load balancer IPs than a status holds: the first 16", gw: "app/many", wantSvc: true,
			extra: staticGateway("many", func() string {
				var entries []string
				for _, ip := range testNetIPs(15) {
					entries = append(entries, "{value: "+ip+"}")
				}
				return "[" + strings.Join(append(entries, "{type: IPAddress}"), ", ") + "]"
			}()),
			svcs:     []*corev1.Service{gatewayLBServiceFor("many", "", "198.51.100.1", "198.51.100.2", "198.51.100.3")},
			accepted: "True/Accepted", programmed: "True/Programmed", programmedMsg: "2 addresses left out of status.addresses",
			addrs:       append(testNetIPs(15), "198.51.100.1"),
			externalIPs: testNetIPs(15),
			serves:      "198.51.100.3:80",
		},
		{
			name: "load balancer hostname beside an IP: both reported, the IP served", gw: "app/gw", wantSvc: true,
			svcs:     []*corev1.Service{gatewayLBService("lb-1.elb.example.com", "198.51.100.7")},
			accepted: "True/Accepted", programmed: "True/Programmed",
			addrs: []string{"198.51.100.7", "Hostname:lb-1.elb.example.com"}, serves: "198.51.100.7:80",
		},
		{
			name: "load balancer hostname alone: reported, not programmed", gw: "app/gw", wantSvc: true,
			svcs:     []*corev1.Service{gatewayLBService("lb-1.elb.example.com")},
			accepted: "True/Accepted", programmed: "False/AddressNotAssigned", programmedMsg: "only hostnames (lb-1.elb.example.com)",
			addrs: []string{"Hostname:lb-1.elb.example.com"},
		},
		{
			// The API server refuses a status with more.
			name: "more load balancer hostnames than a status holds: the first 15 beside the IP", gw: "app/gw", wantSvc: true,
			svcs:     []*corev1.Service{gatewayLBService(append([]string{"198.51.100.7"}, lbHostnames(20)...)...)},
			accepted: "True/Accepted", programmed: "True/Programmed", programmedMsg: "5 addresses left out of status.addresses",
			addrs: append([]string{"198.51.100.7"}, func() []string {
				var out []string
				for _, h := range lbHostnames(15) {
					out = append(out, "Hostname:"+h)
				}
				return out
			}()...),
		},
		{
			name: "load balancer hostname that is no DNS name: not reported", gw: "app/gw", wantSvc: true,
			svcs:     []*corev1.Service{gatewayLBService("lb_1.example.com")},
			accepted: "True/Accepted", programmed: "False/AddressNotAssigned", programmedMsg: `not DNS names: "lb_1.example.com"`,
		},
		{
			name: "load balancer IP another gateway names: not usable", gw: "app/gw", wantSvc: true,
			extra: `---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: first, namespace: app, creationTimestamp: "2020-01-01T00:00:00Z"}
spec:
  gatewayClassName: nodegress
  addresses: [{value: 198.51.100.7}]
  listeners: [{name: http, port: 80, protocol: HTTP}]
`,
			svcs:     []*corev1.Service{gatewayLBService("198.51.100.7")},
			accepted: "True/Accepted", programmed: "False/AddressNotUsable",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := decodeGatewayObjects(t, gatewayBase+serviceGateway+tt.extra)
			o.in.AddressSource = GatewayAddressService
			o.services = append(o.services, tt.svcs...)
			_, fes, st, _ := o.translate()
			gst := st.Gateways[tt.gw]
			if got := condOf(gst.Conditions, "Accepted"); got != tt.accepted {
				t.Errorf("Accepted %s, want %s", got, tt.accepted)
			}
			if got := condOf(gst.Conditions, "Programmed"); got != tt.programmed {
				t.Errorf("Programmed %s, want %s", got, tt.programmed)
			}
			if !strings.Contains(condMsg(gst.Conditions, "Programmed"), tt.programmedMsg) {
				t.Errorf("Programmed message %q, want it to say %q", condMsg(gst.Conditions, "Programmed"), tt.programmedMsg)
			}
			if msg := condMsg(gst.Conditions, "Programmed"); tt.programmedMsg == "" && strings.Contains(msg, "left out") {
				t.Errorf("Programmed message %q: addresses left out of a status that holds them all", msg)
			}
			var addrs []string
			for _, a := range gst.Addresses {
				switch *a.Type {
				case gwapi.IPAddressType:
					addrs = append(addrs, a.Value)
				default:
					addrs = append(addrs, string(*a.Type)+":"+a.Value)
				}
			}
			if !slices.Equal(addrs, tt.addrs) {
				t.Errorf("addresses %v, want %v", addrs, tt.addrs)
			}
			served := servedFrontends(fes)
			if tt.serves != "" && !served[tt.serves] {
				t.Errorf("%s not served; served: %v", tt.serves, served)
			}
			if tt.notServes != "" && served[tt.notServes] {
				t.Errorf("%s served", tt.notServes)
			}
			ns, name, _ := strings.Cut(tt.gw, "/")
			svc, wanted := st.Services[ns+"/"+gatewayServiceName(name)]
			if wanted != tt.wantSvc {
				t.Errorf("service wanted: %v, want %v (services %v)", wanted, tt.wantSvc, st.Services)
			}
			if wanted && !slices.Equal(svc.Spec.ExternalIPs, tt.externalIPs) {
				t.Errorf("externalIPs %v, want %v", svc.Spec.ExternalIPs, tt.externalIPs)
			}
			wantType := corev1.ServiceTypeLoadBalancer
			if tt.clusterIP {
				wantType = corev1.ServiceTypeClusterIP
			}
			if wanted && svc.Spec.Type != wantType {
				t.Errorf("service type %s, want %s", svc.Spec.Type, wantType)
			}
		})
	}
}

func servedFrontends(fes []loader.Service) map[string]bool {
	out := map[string]bool{}
	for _, s := range fes {
		for _, f := range s.Frontends {
			out[netip.AddrPortFrom(f.Addr, f.Port).String()] = true
		}
	}
	return out
}

// TestDesiredGatewayService checks the Service asked for: owner, labels
// and annotations from spec.infrastructure, one port per listener port,
// and a hash that follows the spec.
func TestDesiredGatewayService(t *testing.T) {
	o := decodeGatewayObjects(t, gatewayBase+serviceGateway)
	gw := o.in.Gateways[0]
	svc := desiredGatewayService(gw, DefaultGatewayControllerName, nil, serviceWant{loadBalancer: true})
	if svc.Namespace != "app" || svc.Name != "nodegress-gateway-gw" {
		t.Errorf("service %s/%s", svc.Namespace, svc.Name)
	}
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || svc.Spec.Selector != nil {
		t.Errorf("type %s, selector %v", svc.Spec.Type, svc.Spec.Selector)
	}
	var ports []int32
	for _, p := range svc.Spec.Ports {
		ports = append(ports, p.Port)
	}
	if !slices.Equal(ports, []int32{80, 8080}) {
		t.Errorf("ports %v, want [80 8080]", ports)
	}
	if svc.Labels["team"] != "web" || svc.Labels[gwapi.GatewayNameLabelKey] != "gw" || svc.Annotations["lb.example.com/pool"] != "public" {
		t.Errorf("labels %v, annotations %v", svc.Labels, svc.Annotations)
	}
	if len(svc.OwnerReferences) != 1 || svc.OwnerReferences[0].UID != "gw-uid" || svc.OwnerReferences[0].Kind != "Gateway" ||
		svc.OwnerReferences[0].APIVersion != "gateway.networking.k8s.io/v1" {
		t.Errorf("owner references %+v", svc.OwnerReferences)
	}
	if !isGatewayService(svc) {
		t.Error("not recognised as a gateway service")
	}
	h := svc.Annotations[annotationGatewayServiceHash]
	gw.Spec.Infrastructure.Labels = nil
	if h2 := desiredGatewayService(gw, DefaultGatewayControllerName, nil, serviceWant{loadBalancer: true}).Annotations[annotationGatewayServiceHash]; h2 == h || h == "" {
		t.Errorf("hash %q unchanged (%q) after the labels changed", h, h2)
	}
	long := strings.Repeat("a.b", 40)
	if n := gatewayServiceName(long); len(n) > 63 || strings.Contains(n, ".") || n == gatewayServiceName(long+"c") {
		t.Errorf("long name %q", n)
	}
	if svc.Labels[labelServiceProxyName] != managedByNodegress {
		t.Errorf("labels %v: kube-proxy would program the Service", svc.Labels)
	}
}

// TestGatewayServiceName checks that Service names are valid DNS labels
// and that Gateways whose names differ only by dots and dashes get
// different Services.
func TestGatewayServiceName(t *testing.T) {
	for _, tt := range []struct{ a, b string }{
		{"a.b", "a-b"},
		{"web.example.com", "web-example-com"},
		{strings.Repeat("x", 50) + ".y", strings.Repeat("x", 50) + "-y"},
	} {
		na, nb := gatewayServiceName(tt.a), gatewayServiceName(tt.b)
		if na == nb {
			t.Errorf("%q and %q share the Service %q", tt.a, tt.b, na)
		}
		for _, n := range []string{na, nb} {
			if len(n) > 63 || strings.Contains(n, ".") || !strings.HasPrefix(n, gatewayServicePrefix) {
				t.Errorf("Service name %q is not a DNS label of ours", n)
			}
		}
	}
	if n := gatewayServiceName("web"); n != gatewayServicePrefix+"web" {
		t.Errorf("plain name gave %q", n)
	}
}

// serviceWriterEnv is a Gateway status writer against a fake API
// server, with a Service cache that follows the API server as the
// informer would.
type serviceWriterEnv struct {
	t      *testing.T
	client *fake.Clientset
	idx    cache.Indexer
	w      *gatewayStatusWriter
}

func newServiceWriterEnv(t *testing.T, log *slog.Logger) *serviceWriterEnv {
	client := fake.NewClientset()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	c := &Controller{log: log, cfg: Config{Gateway: &GatewayConfig{}}, client: client, services: corelisters.NewServiceLister(idx)}
	return &serviceWriterEnv{t: t, client: client, idx: idx, w: newGatewayStatusWriter(c, gwfake.NewSimpleClientset())}
}

// refresh brings the cache to the API server's Services.
func (e *serviceWriterEnv) refresh() {
	e.t.Helper()
	list, err := e.client.CoreV1().Services("").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	objs := make([]any, 0, len(list.Items))
	for i := range list.Items {
		objs = append(objs, &list.Items[i])
	}
	if err := e.idx.Replace(objs, ""); err != nil {
		e.t.Fatal(err)
	}
}

// get is Service app/name as the API server holds it, or nil.
func (e *serviceWriterEnv) get(name string) *corev1.Service {
	e.t.Helper()
	s, err := e.client.CoreV1().Services("app").Get(context.Background(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// write has the writer bring Service app/name to the decision.
func (e *serviceWriterEnv) write(name string) {
	e.t.Helper()
	if err := e.w.write(context.Background(), serviceStatusKey("app/"+name)); err != nil {
		e.t.Fatal(err)
	}
	e.refresh()
}

// TestGatewayServiceWriter drives the writer against a fake API server:
// the Service is created, updated when the Gateway's infrastructure
// changes (a label it dropped goes, a load balancer controller's
// annotation stays) and deleted when no Gateway wants it; a Service
// nodegress did not make is never touched.
func TestGatewayServiceWriter(t *testing.T) {
	ctx := context.Background()
	e := newServiceWriterEnv(t, slog.New(slog.NewTextHandler(io.Discard, nil)))
	client, w, refresh, get, write := e.client, e.w, e.refresh, e.get, e.write
	o := decodeGatewayObjects(t, gatewayBase+serviceGateway)
	gw := o.in.Gateways[0]
	want := desiredGatewayService(gw, DefaultGatewayControllerName, nil, serviceWant{loadBalancer: true})
	name := want.Name

	// Before any decision nothing is deleted.
	write(name)
	w.want(GatewayStatuses{Services: map[string]*corev1.Service{"app/" + name: want}})
	write(name)
	svc := get(name)
	if svc == nil {
		t.Fatal("service not created")
	}
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || len(svc.Spec.Ports) != 2 || svc.Labels["team"] != "web" ||
		len(svc.OwnerReferences) != 1 || svc.OwnerReferences[0].UID != "gw-uid" {
		t.Fatalf("created service: %+v", svc)
	}

	// A load balancer controller's annotation and status.
	svc.Annotations["lb.example.com/allocated"] = "yes"
	if _, err := client.CoreV1().Services("app").Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	refresh()
	gw.Spec.Infrastructure.Labels = map[gwapi.LabelKey]gwapi.LabelValue{"tier": "edge"}
	want = desiredGatewayService(gw, DefaultGatewayControllerName, nil, serviceWant{loadBalancer: true})
	w.want(GatewayStatuses{Services: map[string]*corev1.Service{"app/" + name: want}})
	write(name)
	svc = get(name)
	if svc.Labels["tier"] != "edge" {
		t.Errorf("label not added: %v", svc.Labels)
	}
	if _, ok := svc.Labels["team"]; ok {
		t.Errorf("dropped label kept: %v", svc.Labels)
	}
	if svc.Annotations["lb.example.com/allocated"] != "yes" {
		t.Errorf("the load balancer controller's annotation went: %v", svc.Annotations)
	}

	// A ListenerSet's port and spec.addresses are applied, and go when
	// no longer asked for; a Gateway that names all its addresses asks
	// no load balancer for one (ClusterIP, without the LoadBalancer
	// field the API refuses there), and one that asks again gets it.
	ls := &gwapi.ListenerSet{Spec: gwapi.ListenerSetSpec{Listeners: []gwapi.ListenerEntry{{Name: "extra", Port: 9090}}}}
	named := []netip.Addr{addr("192.0.2.1")}
	for _, step := range []struct {
		sets  []*gwapi.ListenerSet
		want  serviceWant
		ports int
	}{
		{[]*gwapi.ListenerSet{ls}, serviceWant{externalIPs: named, loadBalancer: true}, 3},
		{nil, serviceWant{externalIPs: named}, 2},
		{nil, serviceWant{loadBalancer: true}, 2},
	} {
		want = desiredGatewayService(gw, DefaultGatewayControllerName, step.sets, step.want)
		w.want(GatewayStatuses{Services: map[string]*corev1.Service{"app/" + name: want}})
		write(name)
		svc = get(name)
		var ips []string
		for _, ip := range step.want.externalIPs {
			ips = append(ips, ip.String())
		}
		if len(svc.Spec.Ports) != step.ports || !slices.Equal(svc.Spec.ExternalIPs, ips) {
			t.Errorf("applied ports %v and externalIPs %v, want %d ports and %v", svc.Spec.Ports, svc.Spec.ExternalIPs, step.ports, ips)
		}
		wantType, wantAllocate := corev1.ServiceTypeClusterIP, (*bool)(nil)
		if step.want.loadBalancer {
			wantType, wantAllocate = corev1.ServiceTypeLoadBalancer, ptr(false)
		}
		if svc.Spec.Type != wantType || ptrString(svc.Spec.AllocateLoadBalancerNodePorts) != ptrString(wantAllocate) {
			t.Errorf("applied type %s, allocateLoadBalancerNodePorts %v; want %s, %v", svc.Spec.Type,
				ptrString(svc.Spec.AllocateLoadBalancerNodePorts), wantType, ptrString(wantAllocate))
		}
		if svc.Labels["tier"] != "edge" || len(svc.OwnerReferences) != 1 || svc.OwnerReferences[0].UID != "gw-uid" {
			t.Errorf("applied labels %v, owners %+v", svc.Labels, svc.OwnerReferences)
		}
	}

	// Someone else's Service of another name is never deleted.
	foreign := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "nodegress-gateway-x"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Port: 80}}}}
	if _, err := client.CoreV1().Services("app").Create(ctx, foreign, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Another install's (another Gateway controller name) is left alone
	// too, though it carries every mark of a Gateway Service.
	other := desiredGatewayService(&gwapi.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "theirs", UID: "their-uid"}},
		"example.com/other-nodegress", nil, serviceWant{loadBalancer: true})
	if _, err := client.CoreV1().Services("app").Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	refresh()
	w.want(GatewayStatuses{Services: map[string]*corev1.Service{}})
	write(name)
	write(foreign.Name)
	write(other.Name)
	if get(name) != nil {
		t.Error("unwanted gateway service not deleted")
	}
	if get(foreign.Name) == nil {
		t.Error("a service nodegress did not make was deleted")
	}
	if get(other.Name) == nil {
		t.Error("another install's gateway service was deleted")
	}
}

// TestTranslateSkipsGatewayServices: the L4 datapath leaves a Gateway's
// Service alone (its load balancer IP is the Gateway's, served by the L7
// proxy); the same Service not made by nodegress is an L4 Service.
func TestTranslateSkipsGatewayServices(t *testing.T) {
	node := NodeInfo{Name: "node-a", Addrs: []netip.Addr{addr("192.0.2.10")}}
	ours := gatewayLBService("198.51.100.7")
	ours.Spec.Ports[0].TargetPort = intstr.FromInt32(80)
	plain := ours.DeepCopy()
	plain.Name, plain.Labels, plain.OwnerReferences = "plain", nil, nil
	for _, tt := range []struct {
		name string
		svc  *corev1.Service
		want bool
	}{
		{"gateway service", ours, false},
		{"the same without nodegress's marks", plain, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, errs := Translate(node, []*corev1.Service{tt.svc}, nil)
			if len(errs) > 0 {
				t.Fatalf("problems: %v", errs)
			}
			if got := servedFrontends(out)["198.51.100.7:80"]; got != tt.want {
				t.Errorf("load balancer IP served by L4: %v, want %v (%v)", got, tt.want, out)
			}
		})
	}
}

func condMsg(conds []metav1.Condition, typ string) string {
	if c := meta.FindStatusCondition(conds, typ); c != nil {
		return c.Message
	}
	return ""
}

// TestGatewayServiceListenerSetPorts checks that the ports of the
// ListenerSets attached to a Gateway are its Service's too, each port once
// whoever declares it, with names that do not move, and that a set whose
// ports come or go changes the hash the writer re-applies on.
func TestGatewayServiceListenerSetPorts(t *testing.T) {
	gateway := `---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: app, uid: gw-uid}
spec:
  gatewayClassName: nodegress
  allowedListeners: {namespaces: {from: Same}}
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: alt, port: 8080, protocol: HTTP}
` + staticGateway("another", "[{value: 192.0.2.5}]")
	set := func(ns, name, parent, listeners string) string {
		return listenerSetYAML(name, ns, parent, "2026-01-01T00:00:00Z", listeners)
	}
	basePorts := []string{"tcp-80/80", "tcp-8080/8080"}
	tests := []struct {
		name  string
		sets  string
		ports []string // name/port, all TCP
	}{
		{name: "no set: the gateway's listeners", ports: basePorts},
		{
			name:  "an attached set adds its ports, the one it shares with the gateway once",
			sets:  set("app", "a", "gw", "[{name: a, port: 80, protocol: HTTP, hostname: a.example.com}, {name: b, port: 9090, protocol: HTTP}]"),
			ports: []string{"tcp-80/80", "tcp-8080/8080", "tcp-9090/9090"},
		},
		{
			name: "two sets with one port: once",
			sets: set("app", "a", "gw", "[{name: a, port: 9090, protocol: HTTP}]") +
				set("app", "b", "gw", "[{name: b, port: 9090, protocol: HTTP, hostname: b.example.com}, {name: c, port: 9443, protocol: TLS, tls: {mode: Passthrough}}]"),
			ports: []string{"tcp-80/80", "tcp-8080/8080", "tcp-9090/9090", "tcp-9443/9443"},
		},
		{
			name:  "a set the gateway's allowedListeners refuses adds none",
			sets:  set("other", "a", "gw", "[{name: a, port: 7070, protocol: HTTP}]"),
			ports: basePorts,
		},
		{
			name:  "a set of another gateway adds none",
			sets:  set("app", "a", "another", "[{name: a, port: 7070, protocol: HTTP}]"),
			ports: basePorts,
		},
	}
	hashOf := func(t *testing.T, docs string) (string, []string) {
		t.Helper()
		o := decodeGatewayObjects(t, gatewayBase+gateway+docs)
		o.in.AddressSource = GatewayAddressService
		_, _, st, _ := o.translate()
		svc := st.Services["app/"+gatewayServiceName("gw")]
		if svc == nil {
			t.Fatalf("no service wanted: %v", st.Services)
		}
		var ports []string
		for _, p := range svc.Spec.Ports {
			if p.Protocol != corev1.ProtocolTCP {
				t.Errorf("port %+v is not TCP", p)
			}
			ports = append(ports, fmt.Sprintf("%s/%d", p.Name, p.Port))
		}
		return svc.Annotations[annotationGatewayServiceHash], ports
	}
	baseHash, _ := hashOf(t, "")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, ports := hashOf(t, tt.sets)
			if !slices.Equal(ports, tt.ports) {
				t.Errorf("ports %v, want %v", ports, tt.ports)
			}
			// The set removed is the base again: the hash must tell them
			// apart exactly when the ports differ.
			if changed := h != baseHash; changed != !slices.Equal(ports, basePorts) {
				t.Errorf("hash changed: %v, ports %v against %v", changed, ports, basePorts)
			}
		})
	}
}

// ptrString shows a pointer's value, or nil.
func ptrString[T any](p *T) string {
	if p == nil {
		return "nil"
	}
	return fmt.Sprint(*p)
}

// TestGatewayServiceExternalIPsRefused: an API server that refuses
// Services with externalIPs (the DenyServiceExternalIPs admission plugin)
// gets a Gateway's Service without them, once, and reported once; the
// Gateway keeps its named address and gets its load balancer's. Without
// the refusal the externalIPs are written.
func TestGatewayServiceExternalIPsRefused(t *testing.T) {
	for _, refuse := range []bool{true, false} {
		t.Run(fmt.Sprintf("refused=%v", refuse), func(t *testing.T) {
			ctx := context.Background()
			var logs strings.Builder
			e := newServiceWriterEnv(t, slog.New(slog.NewTextHandler(&logs, nil)))
			applies := 0
			e.client.PrependReactor("patch", "services", func(a k8stesting.Action) (bool, runtime.Object, error) {
				applies++
				if pa := a.(k8stesting.PatchAction); refuse && strings.Contains(string(pa.GetPatch()), `"externalIPs"`) {
					return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "services"}, pa.GetName(),
						errors.New("use of external IPs is denied by admission control"))
				}
				return false, nil, nil
			})
			o := decodeGatewayObjects(t, gatewayBase+staticGateway("mixed", `[{value: 192.0.2.1}, {type: IPAddress, value: ""}]`))
			o.in.AddressSource = GatewayAddressService
			name := gatewayServiceName("mixed")
			sync := func() GatewayStatuses {
				t.Helper()
				_, _, st, _ := o.translate()
				e.w.want(GatewayStatuses{Services: st.Services})
				e.write(name)
				return st
			}
			sync()
			svc := e.get(name)
			if svc == nil {
				t.Fatal("service not created")
			}
			wantIPs := []string{"192.0.2.1"}
			if refuse {
				wantIPs = nil
			}
			if !slices.Equal(svc.Spec.ExternalIPs, wantIPs) || svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
				t.Errorf("service externalIPs %v, type %s; want %v, LoadBalancer", svc.Spec.ExternalIPs, svc.Spec.Type, wantIPs)
			}

			// A load balancer controller assigns an IP: the Gateway has
			// both addresses, and the Service is not applied again.
			svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "198.51.100.7"}}
			if _, err := e.client.CoreV1().Services("app").UpdateStatus(ctx, svc, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			e.refresh()
			o.services = append(o.services, e.get(name))
			applied := applies
			st := sync()
			_, fes, _, _ := o.translate()
			gst := st.Gateways["app/mixed"]
			var addrs []string
			for _, a := range gst.Addresses {
				addrs = append(addrs, a.Value)
			}
			if !slices.Equal(addrs, []string{"192.0.2.1", "198.51.100.7"}) || condOf(gst.Conditions, "Programmed") != "True/Programmed" {
				t.Errorf("addresses %v, Programmed %s", addrs, condOf(gst.Conditions, "Programmed"))
			}
			served := servedFrontends(fes)
			if !served["192.0.2.1:80"] || !served["198.51.100.7:80"] {
				t.Errorf("served %v, want both addresses", served)
			}
			if applies != applied {
				t.Errorf("%d applies on a sync with nothing changed", applies-applied)
			}

			// The Gateway changes: applied again, not reported again.
			o.in.Gateways[0].Spec.Listeners = append(o.in.Gateways[0].Spec.Listeners,
				gwapi.Listener{Name: "alt", Port: 8080, Protocol: gwapi.HTTPProtocolType})
			sync()
			if svc := e.get(name); len(svc.Spec.Ports) != 2 || !slices.Equal(svc.Spec.ExternalIPs, wantIPs) {
				t.Errorf("after a change: ports %v, externalIPs %v", svc.Spec.Ports, svc.Spec.ExternalIPs)
			}
			wantReports := 0
			if refuse {
				wantReports = 1
			}
			if n := strings.Count(logs.String(), "refuses the gateway service's externalIPs"); n != wantReports {
				t.Errorf("refusal reported %d times, want %d:\n%s", n, wantReports, logs.String())
			}
		})
	}
}

// TestExternalIPsRefused tells the API server's refusals of externalIPs
// from its other errors.
func TestExternalIPsRefused(t *testing.T) {
	gr := schema.GroupResource{Resource: "services"}
	gk := schema.GroupKind{Kind: "Service"}
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{"admission forbids", apierrors.NewForbidden(gr, "s", errors.New("use of external IPs is denied by admission control")), true},
		{"externalIPs invalid", apierrors.NewInvalid(gk, "s", field.ErrorList{
			field.Invalid(field.NewPath("spec", "externalIPs").Index(0), "0.0.0.0", "may not be unspecified")}), true},
		{"ports invalid", apierrors.NewInvalid(gk, "s", field.ErrorList{
			field.Invalid(field.NewPath("spec", "ports").Index(0), 0, "must be between 1 and 65535")}), false},
		{"conflict", apierrors.NewConflict(gr, "s", errors.New("changed")), false},
		{"wrapped forbidden", fmt.Errorf("apply: %w", apierrors.NewForbidden(gr, "s", errors.New("denied"))), true},
	} {
		if got := externalIPsRefused(tt.err); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}
