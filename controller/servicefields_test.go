package controller

import (
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/nodegress/nodegress/loader"
)

// TestServiceFieldsListEveryField fails when k8s.io/api gains a Service
// field serviceFields does not list: decide how the datapath treats it
// and add its row.
func TestServiceFieldsListEveryField(t *testing.T) {
	var want []string
	jsonFields := func(prefix string, typ reflect.Type) {
		for f := range typ.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" {
				t.Fatalf("%s.%s has no JSON name", typ, f.Name)
			}
			want = append(want, prefix+name)
		}
	}
	jsonFields("spec.", reflect.TypeFor[corev1.ServiceSpec]())
	jsonFields("spec.ports[].", reflect.TypeFor[corev1.ServicePort]())

	var got []string
	for _, f := range serviceFields {
		if slices.Contains(got, f.path) {
			t.Errorf("%s listed twice", f.path)
		}
		got = append(got, f.path)
		if f.handling == fieldComing && f.unsupported != nil {
			t.Errorf("%s is coming and reported at once", f.path)
		}
	}
	for _, p := range want {
		if !slices.Contains(got, p) {
			t.Errorf("%s is not in serviceFields", p)
		}
	}
	for _, p := range got {
		if !slices.Contains(want, p) {
			t.Errorf("serviceFields lists %s, which corev1.ServiceSpec does not have", p)
		}
	}
}

// TestUnsupportedServiceFields checks which uses of Service fields are
// reported as unsupported (a Warning with reason UnsupportedServiceField)
// and what is served meanwhile.
func TestUnsupportedServiceFields(t *testing.T) {
	node := NodeInfo{Name: "node-a", Addrs: []netip.Addr{addr("192.0.2.10")}}
	slice := epSlice("default", "web-1", "web", slicePort("http", "", 8080), endpoint("10.0.0.1", "node-a", "", "", ""))
	served := []loader.Service{{
		Name: "default/web:http/TCP", Proto: loader.TCP,
		Frontends: []loader.Frontend{fe("192.0.2.10", 30080)},
		Backends:  []loader.Backend{be("10.0.0.1", 8080, true, false)},
	}}
	nodePort := func(opts ...svcOpt) *corev1.Service {
		return service("default", "web", corev1.ServiceTypeNodePort, append([]svcOpt{port("http", "", 80, 30080, intstr.FromString("http"))}, opts...)...)
	}
	families := func(f ...corev1.IPFamily) svcOpt {
		return func(s *corev1.Service) { s.Spec.IPFamilies = f }
	}
	tests := []struct {
		name string
		svc  *corev1.Service
		want []loader.Service
		// wantWarn are the messages of the UnsupportedServiceField
		// problems, in order; no other problem may be reported.
		wantWarn []string
	}{
		{
			name:     "IPv6-only: not served at all, NodePort included",
			svc:      nodePort(families(corev1.IPv6Protocol), func(s *corev1.Service) { s.Spec.ClusterIP = "fd00::10" }),
			wantWarn: []string{"spec.ipFamilies [IPv6] is not supported by the datapath: it is IPv4-only; the Service is not served"},
		},
		{
			name:     "IPv6 clusterIP without ipFamilies (standalone): IPv6-only",
			svc:      nodePort(func(s *corev1.Service) { s.Spec.ClusterIP = "fd00::10" }),
			wantWarn: []string{"spec.ipFamilies [IPv6] is not supported by the datapath: it is IPv4-only; the Service is not served"},
		},
		{
			name:     "dual-stack: the IPv4 side is served",
			svc:      nodePort(families(corev1.IPv6Protocol, corev1.IPv4Protocol)),
			want:     served,
			wantWarn: []string{"spec.ipFamilies [IPv6 IPv4] is not supported by the datapath: it is IPv4-only; only the IPv4 frontends and endpoints are served"},
		},
		{
			name:     "SCTP port: the other ports are served",
			svc:      nodePort(port("sig", corev1.ProtocolSCTP, 99, 30099, intstr.FromInt32(99))),
			want:     served,
			wantWarn: []string{"port sig: spec.ports[].protocol SCTP is not supported by the datapath: it forwards TCP and UDP only; this port is not served"},
		},
		{
			name: "ClusterIP only: nothing served, nothing reported",
			svc: service("default", "web", corev1.ServiceTypeClusterIP, port("sig", corev1.ProtocolSCTP, 99, 0, intstr.FromInt32(99)),
				families(corev1.IPv6Protocol)),
		},
		{
			name: "fields other components act on: not reported",
			svc: nodePort(
				families(corev1.IPv4Protocol),
				func(s *corev1.Service) {
					s.Spec.IPFamilyPolicy = ptr(corev1.IPFamilyPolicySingleStack)
					s.Spec.PublishNotReadyAddresses = true
					s.Spec.TrafficDistribution = ptr(corev1.ServiceTrafficDistributionPreferSameNode)
					s.Spec.LoadBalancerClass = ptr("example.com/lb")
					s.Spec.LoadBalancerIP = "203.0.113.1"
					s.Spec.AllocateLoadBalancerNodePorts = ptr(false)
					s.Spec.Selector = map[string]string{"app": "web"}
					s.Spec.Ports[0].AppProtocol = ptr("kubernetes.io/h2c")
				}),
			want: served,
		},
		{
			name: "fields the datapath implements: not reported",
			svc: nodePort(func(s *corev1.Service) {
				s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
				s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr[int32](60)}}
				s.Spec.LoadBalancerSourceRanges = []string{"198.51.100.0/24"}
				s.Spec.HealthCheckNodePort = 31000
				s.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyLocal)
				s.Spec.ClusterIPs = []string{"10.96.0.10"}
			}),
			want: withAffinity(served, time.Minute),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, errs := Translate(node, []*corev1.Service{tt.svc}, []*discoveryv1.EndpointSlice{slice})
			for i := range got {
				if len(got[i].SourceRanges) == 0 {
					got[i].SourceRanges = nil
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("services\n got %+v\nwant %+v", got, tt.want)
			}
			var warn []string
			for _, err := range errs {
				var oe *ObjectError
				if !errors.As(err, &oe) || oe.Skipped || eventReason(oe) != ReasonUnsupportedServiceField {
					t.Errorf("unexpected problem %v", err)
					continue
				}
				warn = append(warn, eventMessage(oe))
			}
			if !slices.Equal(warn, tt.wantWarn) {
				t.Errorf("warnings\n got %q\nwant %q", warn, tt.wantWarn)
			}
		})
	}
}

// TestReportUnsupportedServiceField checks the Event and the log line of
// an unsupported field.
func TestReportUnsupportedServiceField(t *testing.T) {
	svc := service("default", "web", corev1.ServiceTypeNodePort, port("sig", corev1.ProtocolSCTP, 99, 30099, intstr.FromInt32(99)))
	svc.UID = types.UID("uid-web")
	c, rec := listerController(t, svc)
	log, buf := testLogger(t)
	c.log = log
	_, errs := Translate(NodeInfo{Name: "node-a", Addrs: []netip.Addr{addr("192.0.2.10")}}, []*corev1.Service{svc}, nil)
	c.reportIssues(errs)
	want := []string{"Warning UnsupportedServiceField port sig: spec.ports[].protocol SCTP is not supported by the datapath: " +
		"it forwards TCP and UDP only; this port is not served involvedObject{kind=Service,apiVersion=v1}"}
	if got := drain(rec); !slices.Equal(got, want) {
		t.Errorf("events\n got %q\nwant %q", got, want)
	}
	if l := buf.String(); !strings.Contains(l, `level=WARN msg="unsupported service field"`) || !strings.Contains(l, "field=spec.ports[].protocol") {
		t.Errorf("log:\n%s", l)
	}
}

func withAffinity(svcs []loader.Service, timeout time.Duration) []loader.Service {
	out := slices.Clone(svcs)
	for i := range out {
		out[i].AffinityTimeout = timeout
	}
	return out
}
