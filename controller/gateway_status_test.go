package controller

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	gwapi "sigs.k8s.io/gateway-api/apis/v1"
	gwfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"
	gwlisters "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1"
)

// TestGatewayStatusWriterStaleCache checks that an informer copy older
// than the writer's own last write does not make it skip a write: a route
// attached and detached in quick succession must end with 0 attached
// routes in the API, though the cache still shows the 0 from before the
// attachment.
func TestGatewayStatusWriterStaleCache(t *testing.T) {
	gw := &gwapi.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "gw", Generation: 1}}
	gw.Status.Listeners = []gwapi.ListenerStatus{{Name: "http", AttachedRoutes: 0, SupportedKinds: []gwapi.RouteGroupKind{}}}
	// Created through the typed client: the fake's own object loading
	// guesses the resource "gatewaies".
	client := gwfake.NewSimpleClientset()
	ctx := context.Background()
	stored, err := client.GatewayV1().Gateways("app").Create(ctx, gw, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The API server gives every write a new resourceVersion (the fake's
	// tracker does not).
	rv := 1
	client.PrependReactor("update", "gateways", func(action k8stesting.Action) (bool, runtime.Object, error) {
		obj := action.(k8stesting.UpdateAction).GetObject().(*gwapi.Gateway).DeepCopy()
		rv++
		obj.ResourceVersion = strconv.Itoa(rv)
		return true, obj, client.Tracker().Update(action.GetResource(), obj, obj.Namespace)
	})
	stored.ResourceVersion = "1"
	// The cache holds the object as first seen, and never catches up.
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	if err := idx.Add(stored.DeepCopy()); err != nil {
		t.Fatal(err)
	}
	c := &Controller{log: slog.New(slog.NewTextHandler(io.Discard, nil)), cfg: Config{Gateway: &GatewayConfig{}},
		gw: &gatewayListers{gateways: gwlisters.NewGatewayLister(idx)}}
	w := newGatewayStatusWriter(c, client)
	decide := func(attached int32) {
		w.want(GatewayStatuses{Gateways: map[string]gwapi.GatewayStatus{"app/gw": {
			Listeners: []gwapi.ListenerStatus{{Name: "http", AttachedRoutes: attached, SupportedKinds: []gwapi.RouteGroupKind{}}},
		}}})
	}
	attached := func() int32 {
		g, err := client.GatewayV1().Gateways("app").Get(ctx, "gw", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return g.Status.Listeners[0].AttachedRoutes
	}
	decide(1)
	if err := w.write(ctx, gatewayStatusKey("app/gw")); err != nil {
		t.Fatal(err)
	}
	if got := attached(); got != 1 {
		t.Fatalf("after attaching: %d attached routes, want 1", got)
	}
	decide(0)
	if err := w.write(ctx, gatewayStatusKey("app/gw")); err != nil {
		t.Fatal(err)
	}
	if got := attached(); got != 0 {
		t.Errorf("after detaching, with the cache still at the first version: %d attached routes, want 0", got)
	}
}

// TestGatewayStatusWriterRecreatedRoute: a route deleted and created
// again under the same name between two syncs gets the same decision as
// before, which queues nothing; its creation must get it written.
func TestGatewayStatusWriterRecreatedRoute(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := gwfake.NewSimpleClientset()
	route := &gwapi.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "web", Generation: 1}}
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	create := func() *gwapi.HTTPRoute {
		t.Helper()
		r, err := client.GatewayV1().HTTPRoutes("app").Create(ctx, route.DeepCopy(), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := idx.Add(r.DeepCopy()); err != nil {
			t.Fatal(err)
		}
		return r
	}
	parents := func() int {
		r, err := client.GatewayV1().HTTPRoutes("app").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return -1
		}
		return len(r.Status.Parents)
	}
	first := create()
	c := &Controller{log: slog.New(slog.NewTextHandler(io.Discard, nil)), cfg: Config{Gateway: &GatewayConfig{}},
		gw: &gatewayListers{httpRoutes: gwlisters.NewHTTPRouteLister(idx)}}
	w := newGatewayStatusWriter(c, client)
	done := make(chan struct{})
	go func() { w.lead(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	decision := GatewayStatuses{Routes: map[string]map[string][]gwapi.RouteParentStatus{kindHTTPRoute: {"app/web": {{
		ParentRef:      gwapi.ParentReference{Name: "gw"},
		ControllerName: DefaultGatewayControllerName,
		Conditions:     []metav1.Condition{condition("Accepted", true, "Accepted", "", 1)},
	}}}}}
	w.want(decision)
	waitFor(t, "the first route's status", waitLimit, func() bool { return parents() == 1 })

	if err := client.GatewayV1().HTTPRoutes("app").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := idx.Delete(first); err != nil {
		t.Fatal(err)
	}
	second := create()
	if parents() != 0 {
		t.Fatal("the recreated route has a status already")
	}
	w.want(decision) // the next sync decides the same
	w.created(second)
	waitFor(t, "the recreated route's status", waitLimit, func() bool { return parents() == 1 })
}

// TestGatewayStatusWriterRemovesOptionalConditions: a condition the
// translation decides only in some cases (InsecureFrontendValidationMode)
// is removed when the decision no longer has it; the others stay.
func TestGatewayStatusWriterRemovesOptionalConditions(t *testing.T) {
	ctx := context.Background()
	gw := &gwapi.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "gw", Generation: 1}}
	gw.Status.Conditions = []metav1.Condition{
		condition("Accepted", true, "Accepted", "", 1),
		condition(string(gwapi.GatewayConditionInsecureFrontendValidationMode), true, string(gwapi.GatewayReasonConfigurationChanged), "", 1),
	}
	client := gwfake.NewSimpleClientset()
	stored, err := client.GatewayV1().Gateways("app").Create(ctx, gw, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	if err := idx.Add(stored.DeepCopy()); err != nil {
		t.Fatal(err)
	}
	c := &Controller{log: slog.New(slog.NewTextHandler(io.Discard, nil)), cfg: Config{Gateway: &GatewayConfig{}},
		gw: &gatewayListers{gateways: gwlisters.NewGatewayLister(idx)}}
	w := newGatewayStatusWriter(c, client)
	w.want(GatewayStatuses{Gateways: map[string]gwapi.GatewayStatus{"app/gw": {
		Conditions: []metav1.Condition{condition("Accepted", true, "Accepted", "", 1)},
		Listeners:  []gwapi.ListenerStatus{},
	}}})
	if err := w.write(ctx, gatewayStatusKey("app/gw")); err != nil {
		t.Fatal(err)
	}
	got, err := client.GatewayV1().Gateways("app").Get(ctx, "gw", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, c := range got.Status.Conditions {
		types = append(types, c.Type)
	}
	if len(types) != 1 || types[0] != "Accepted" {
		t.Errorf("conditions %v, want Accepted only", types)
	}
}
