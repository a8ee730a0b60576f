package controller

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
)

// TestEventReasons checks the reason each translation problem's Event
// gets, from real translation output.
func TestEventReasons(t *testing.T) {
	in := ingressFixture(t)
	in.Ingresses = []*networkingv1.Ingress{
		ingress("missing-svc", className("nodegress"), rule("a.example.com", path("/", networkingv1.PathTypePrefix, "nope:80"))),
		ingress("missing-port", className("nodegress"), rule("b.example.com", path("/", networkingv1.PathTypePrefix, "web:9999"))),
		ingress("udp", className("nodegress"), rule("c.example.com", path("/", networkingv1.PathTypePrefix, "dns:dns"))),
		ingress("bad-annotation", className("nodegress"), annotated(AnnotationProxyBodySize, "8x"), rule("d.example.com", path("/", networkingv1.PathTypePrefix, "web:http"))),
		ingress("typo", className("nodegress"), annotated(AnnotationPrefix+"ssl-redirekt", "true"), rule("e.example.com", path("/", networkingv1.PathTypePrefix, "web:http"))),
		ingress("no-secret", className("nodegress"), withTLS("gone", "f.example.com"), rule("f.example.com", path("/", networkingv1.PathTypePrefix, "web:http"))),
		ingress("bad-secret", className("nodegress"), withTLS("bad-tls", "g.example.com"), rule("g.example.com", path("/", networkingv1.PathTypePrefix, "web:http"))),
		ingress("resource", className("nodegress"), rule("h.example.com", path("/", networkingv1.PathTypePrefix, "resource"))),
		ingress("theirs", className("nginx"), rule("i.example.com", path("/", networkingv1.PathTypePrefix, "nope:80"))),
		ingress("snippet", className("nodegress"), annotated(NginxAnnotationPrefix+"server-snippet", "x"), rule("j.example.com", path("/", networkingv1.PathTypePrefix, "web:http"))),
		ingress("unsupported", className("nodegress"), annotated(NginxAnnotationPrefix+"proxy-buffering", "on"), rule("k.example.com", path("/", networkingv1.PathTypePrefix, "web:http"))),
	}
	_, _, issues := TranslateIngress(in)
	got := map[string][]string{} // ingress -> reasons of its Events
	for _, err := range issues {
		var oe *ObjectError
		if !errors.As(err, &oe) || oe.Skipped {
			continue
		}
		got[oe.Object] = append(got[oe.Object], eventReason(oe))
	}
	want := map[string][]string{
		"default/missing-svc":    {ReasonBackendNotFound},
		"default/missing-port":   {ReasonBackendNotFound},
		"default/udp":            {ReasonUnsupportedBackend},
		"default/bad-annotation": {ReasonInvalidAnnotation},
		"default/typo":           {ReasonUnknownAnnotation},
		"default/no-secret":      {ReasonMissingSecret},
		"default/bad-secret":     {ReasonInvalidCertificate},
		"default/resource":       {ReasonInvalidIngress},
		"default/snippet":        {ReasonRefusedAnnotation},
		"default/unsupported":    {ReasonUnknownAnnotation},
		// default/theirs: another controller's, only skipped.
	}
	for k, w := range want {
		if !slices.Equal(got[k], w) {
			t.Errorf("%s: reasons %q, want %q", k, got[k], w)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected event reasons for %s: %q", k, got[k])
		}
	}

	// L4: a frontend two Services claim.
	node := NodeInfo{Name: "node-a", Addrs: []netip.Addr{addr("192.0.2.10")}}
	old := service("default", "old", corev1.ServiceTypeNodePort, port("", corev1.ProtocolTCP, 80, 30080, intstr.FromInt32(80)), created(t0))
	young := service("default", "young", corev1.ServiceTypeNodePort, port("", corev1.ProtocolTCP, 80, 30080, intstr.FromInt32(80)), created(t0.Add(time.Hour)))
	_, errs := Translate(node, []*corev1.Service{young, old}, nil)
	var oe *ObjectError
	if len(errs) != 1 || !errors.As(errs[0], &oe) || oe.Object != "default/young" || eventReason(oe) != ReasonFrontendConflict {
		t.Errorf("frontend conflict issues %v", errs)
	}
}

func TestEventMessage(t *testing.T) {
	oe := &ObjectError{Kind: "Service", Object: "default/web", Port: "http", Err: errors.New("invalid nodePort 70000")}
	if got := eventMessage(oe); got != "port http: invalid nodePort 70000" {
		t.Errorf("message %q", got)
	}
	long := &ObjectError{Kind: "Ingress", Object: "default/web", Err: errors.New(strings.Repeat("é", 1000))}
	if got := eventMessage(long); len(got) > maxEventMessage || !strings.HasSuffix(got, "...") || !strings.HasPrefix(got, "éé") {
		t.Errorf("long message: %d bytes, suffix %q", len(got), got[len(got)-5:])
	}
}

// listerController is a Controller with listers over fixed objects and a
// fake recorder, enough for reportIssues.
func listerController(t *testing.T, objs ...any) (*Controller, *record.FakeRecorder) {
	t.Helper()
	svcs := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	slicesIdx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	ings := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for _, o := range objs {
		var err error
		switch o.(type) {
		case *corev1.Service:
			err = svcs.Add(o)
		case *networkingv1.Ingress:
			err = ings.Add(o)
		default:
			err = slicesIdx.Add(o)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	log, _ := testLogger(t)
	rec := record.NewFakeRecorder(100)
	rec.IncludeObject = true
	return &Controller{
		log:        log,
		lastIssues: map[string]bool{},
		events:     rec,
		services:   corelisters.NewServiceLister(svcs),
		slices:     discoverylisters.NewEndpointSliceLister(slicesIdx),
		ingresses:  networkinglisters.NewIngressLister(ings),
	}, rec
}

func drain(rec *record.FakeRecorder) []string {
	var out []string
	for {
		select {
		case e := <-rec.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func TestReportIssuesRecordsEventsOnce(t *testing.T) {
	web := ingress("web", className("nodegress"))
	web.UID = types.UID("uid-web")
	svc := service("default", "api", corev1.ServiceTypeNodePort)
	svc.UID = types.UID("uid-api")
	c, rec := listerController(t, web, svc)

	missing := &ObjectError{Kind: "Ingress", Object: "default/web", Err: withReason(ReasonBackendNotFound, errors.New("service default/nope not found; requests get 503"))}
	conflict := &ObjectError{Kind: "Service", Object: "default/api", Port: "http", Err: withReason(ReasonFrontendConflict, errors.New("frontend 192.0.2.10:30080/TCP already used by default/old, skipped"))}
	skipped := &ObjectError{Kind: "Ingress", Object: "default/web", Skipped: true, Err: errors.New("ingress class nginx belongs to controller k8s.io/ingress-nginx, ignored")}
	gone := &ObjectError{Kind: "Service", Object: "nodegress/ingress", Err: errors.New("publish service not found; serving the node's addresses only")}
	proxy := &proxyIssue{errors.New("route conflict")}

	c.reportIssues([]error{missing, skipped, gone, proxy})
	got := drain(rec)
	want := []string{"Warning BackendNotFound service default/nope not found; requests get 503 involvedObject{kind=Ingress,apiVersion=networking.k8s.io/v1}"}
	if !slices.Equal(got, want) {
		t.Fatalf("events\n got %q\nwant %q", got, want)
	}
	// The same problems at the next syncs: nothing new.
	c.reportIssues([]error{missing, skipped, gone, proxy})
	c.reportIssues([]error{missing, skipped, gone, proxy, conflict})
	got = drain(rec)
	want = []string{"Warning FrontendConflict port http: frontend 192.0.2.10:30080/TCP already used by default/old, skipped involvedObject{kind=Service,apiVersion=v1}"}
	if !slices.Equal(got, want) {
		t.Fatalf("events\n got %q\nwant %q", got, want)
	}
	// Gone and back: a new Event.
	c.reportIssues(nil)
	c.reportIssues([]error{missing})
	if got := drain(rec); len(got) != 1 || !strings.HasPrefix(got[0], "Warning BackendNotFound") {
		t.Errorf("events after the problem came back: %q", got)
	}

	ref := c.objectRef("Ingress", "default/web")
	if ref == nil || ref.UID != "uid-web" || ref.Namespace != "default" || ref.Name != "web" {
		t.Errorf("reference %+v", ref)
	}
}

func TestAPIModeRecordsEvents(t *testing.T) {
	bad := ingress("web", className("nodegress"), rule("web.example.com", path("/", networkingv1.PathTypePrefix, "nope:80")))
	bad.UID = "uid-web"
	client := fake.NewClientset(ingressClass("nodegress", DefaultControllerName, false), bad)
	log, _ := testLogger(t)
	dp := &fakeDatapath{}
	c, err := New(Config{
		NodeName: "node-a",
		NodeIPs:  []netip.Addr{addr("192.0.2.10")},
		Client:   client,
		Logger:   log,
		L7:       &L7Config{Proxy: &fakeProxy{}},
	}, dp)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(waitLimit):
			t.Error("Run did not return")
		}
	}()
	events := func() []corev1.Event {
		l, err := client.CoreV1().Events("default").List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return l.Items
	}
	waitFor(t, "event recorded", waitLimit, func() bool { return len(events()) > 0 })
	// More syncs with the problem still there.
	for i := range 3 {
		svc := service("default", "other"+string(rune('a'+i)), corev1.ServiceTypeNodePort,
			port("", corev1.ProtocolTCP, 80, int32(30080+i), intstr.FromInt32(80)))
		if _, err := client.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "sync", waitLimit, func() bool {
			_, ok := findService(dp.last(), svc.Namespace+"/"+svc.Name+":80/TCP")
			return ok
		})
	}
	time.Sleep(300 * time.Millisecond)
	ev := events()
	if len(ev) != 1 {
		t.Fatalf("%d events, want 1: %+v", len(ev), ev)
	}
	e := ev[0]
	io := e.InvolvedObject
	if e.Type != corev1.EventTypeWarning || e.Reason != ReasonBackendNotFound || e.Count > 1 ||
		io.Kind != "Ingress" || io.Name != "web" || io.UID != "uid-web" || io.APIVersion != "networking.k8s.io/v1" ||
		e.Source.Component != EventComponent || e.Source.Host != "node-a" ||
		!strings.Contains(e.Message, "service default/nope not found") {
		t.Errorf("event %+v", e)
	}
}

func TestStandaloneRecordsNoEvents(t *testing.T) {
	log, _ := testLogger(t)
	c, _ := startController(t, t.TempDir(), log)
	select {
	case <-c.Synced():
	case <-time.After(waitLimit):
		t.Fatal("no initial sync")
	}
	if c.events != nil || c.status != nil {
		t.Error("standalone mode has an event recorder or status write-back")
	}
}
