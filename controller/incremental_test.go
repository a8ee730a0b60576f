package controller

import (
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"

	"golang.org/x/sys/unix"

	"github.com/nodegress/nodegress/loader"
	"github.com/nodegress/nodegress/tests/netns"
)

// scaleCluster builds nSvc Services, each with one ExternalIP frontend and
// one EndpointSlice of epPerSvc ready endpoints.
func scaleCluster(nSvc, epPerSvc int) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
	svcs := make([]*corev1.Service, 0, nSvc)
	eps := make([]*discoveryv1.EndpointSlice, 0, nSvc)
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range nSvc {
		name := fmt.Sprintf("svc-%05d", i)
		svcs = append(svcs, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "scale", Name: name, CreationTimestamp: metav1.NewTime(created.Add(time.Duration(i) * time.Second))},
			Spec: corev1.ServiceSpec{
				Type:        corev1.ServiceTypeClusterIP,
				ClusterIP:   "10.96.0.1",
				ExternalIPs: []string{fmt.Sprintf("198.18.%d.%d", i/250, i%250+1)},
				Ports:       []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(8080)}},
			},
		})
		eps = append(eps, scaleSlice(i, epPerSvc, 0))
	}
	return svcs, eps
}

// scaleSlice is service i's slice; gen shifts the endpoint addresses, so
// different gens give different backends.
func scaleSlice(i, epPerSvc, gen int) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "scale", Name: fmt.Sprintf("svc-%05d-abc", i),
			Labels: map[string]string{discoveryv1.LabelServiceName: fmt.Sprintf("svc-%05d", i)},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr[int32](8080), Protocol: ptr(corev1.ProtocolTCP)}},
	}
	for j := range epPerSvc {
		n := i*epPerSvc + j + gen
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{fmt.Sprintf("10.%d.%d.%d", 64+n/65536, (n/256)%256, n%256)},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)},
			NodeName:   ptr("node-" + strconv.Itoa(n%50)),
		})
	}
	return s
}

// recordingDatapath keeps the state Apply and Update give it, and what each
// call was.
type recordingDatapath struct {
	state map[string]loader.Service
	calls []dpCall
}

type dpCall struct {
	full             bool
	changed, removed []string
}

func newRecordingDatapath() *recordingDatapath {
	return &recordingDatapath{state: map[string]loader.Service{}}
}

func (r *recordingDatapath) Apply(services []loader.Service) error {
	r.state = make(map[string]loader.Service, len(services))
	names := make([]string, 0, len(services))
	for _, s := range services {
		r.state[s.Name] = s
		names = append(names, s.Name)
	}
	r.calls = append(r.calls, dpCall{full: true, changed: names})
	return nil
}

func (r *recordingDatapath) Update(changed []loader.Service, removed []string) error {
	call := dpCall{removed: slices.Sorted(slices.Values(removed))}
	for _, name := range removed {
		delete(r.state, name)
	}
	for _, s := range changed {
		r.state[s.Name] = s
		call.changed = append(call.changed, s.Name)
	}
	slices.Sort(call.changed)
	r.calls = append(r.calls, call)
	return nil
}

func (r *recordingDatapath) sorted() []loader.Service {
	out := slices.Collect(maps.Values(r.state))
	slices.SortFunc(out, func(a, b loader.Service) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// testCluster is a Controller whose informer caches the test fills by
// hand, calling the handlers the informers would call, and syncs
// explicitly.
type testCluster struct {
	t                   testing.TB
	c                   *Controller
	dp                  *recordingDatapath
	svcs, eps, nodeObjs cache.Indexer
}

func newTestCluster(t testing.TB, nodeIPs ...netip.Addr) *testCluster {
	t.Helper()
	tc := &testCluster{
		t:        t,
		dp:       newRecordingDatapath(),
		svcs:     cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}),
		eps:      cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc, sliceServiceIndex: sliceServiceIndexFunc}),
		nodeObjs: cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{}),
	}
	c, err := New(Config{NodeName: "node-1", NodeIPs: nodeIPs, Client: fake.NewSimpleClientset(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, tc.dp)
	if err != nil {
		t.Fatal(err)
	}
	c.services = corelisters.NewServiceLister(tc.svcs)
	c.slices = discoverylisters.NewEndpointSliceLister(tc.eps)
	c.sliceIndexer = tc.eps
	c.nodes = corelisters.NewNodeLister(tc.nodeObjs)
	tc.c = c
	return tc
}

func (tc *testCluster) must(err error) {
	tc.t.Helper()
	if err != nil {
		tc.t.Fatal(err)
	}
}

func (tc *testCluster) apply(obj any) {
	tc.t.Helper()
	var store cache.Indexer
	var h cache.ResourceEventHandler
	switch obj.(type) {
	case *corev1.Service:
		store, h = tc.svcs, tc.c.serviceHandler()
	case *discoveryv1.EndpointSlice:
		store, h = tc.eps, tc.c.sliceHandler()
	case *corev1.Node:
		old, ok, _ := tc.nodeObjs.Get(obj)
		tc.must(tc.nodeObjs.Update(obj))
		if ok {
			tc.c.nodeChanged(old, obj)
		} else {
			tc.c.nodeChanged(nil, obj)
		}
		return
	default:
		tc.t.Fatalf("unexpected %T", obj)
	}
	old, ok, err := store.Get(obj)
	tc.must(err)
	tc.must(store.Update(obj))
	if ok {
		h.OnUpdate(old, obj)
	} else {
		h.OnAdd(obj, false)
	}
}

func (tc *testCluster) remove(obj any) {
	tc.t.Helper()
	store, h := tc.svcs, tc.c.serviceHandler()
	if _, ok := obj.(*discoveryv1.EndpointSlice); ok {
		store, h = tc.eps, tc.c.sliceHandler()
	}
	cur, ok, err := store.Get(obj)
	tc.must(err)
	if !ok {
		tc.t.Fatalf("remove: %v not stored", obj)
	}
	tc.must(store.Delete(cur))
	h.OnDelete(cur)
}

func (tc *testCluster) sync() {
	tc.t.Helper()
	tc.must(tc.c.sync())
}

// everything returns every stored Service and EndpointSlice.
func (tc *testCluster) everything() ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
	var svcs []*corev1.Service
	for _, o := range tc.svcs.List() {
		svcs = append(svcs, o.(*corev1.Service))
	}
	var eps []*discoveryv1.EndpointSlice
	for _, o := range tc.eps.List() {
		eps = append(eps, o.(*discoveryv1.EndpointSlice))
	}
	return svcs, eps
}

// smallSvc is a ClusterIP Service with one external IP, created at
// minute age, and smallSlice its slice.
func smallSvc(name, extIP string, age int) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name,
			CreationTimestamp: metav1.NewTime(time.Date(2026, 1, 1, 0, age, 0, 0, time.UTC))},
		Spec: corev1.ServiceSpec{
			ClusterIP:   "10.96.0.10",
			ExternalIPs: []string{extIP},
			Ports:       []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}},
		},
	}
}

func smallSlice(name, svc string, addrs ...string) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr[int32](8080), Protocol: ptr(corev1.ProtocolTCP)}},
	}
	for _, a := range addrs {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}})
	}
	return s
}

// zonedSlice is smallSlice with each endpoint hinted for the zone given.
func zonedSlice(name, svc string, zones map[string]string) *discoveryv1.EndpointSlice {
	s := smallSlice(name, svc, slices.Sorted(maps.Keys(zones))...)
	for i := range s.Endpoints {
		s.Endpoints[i].Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: zones[s.Endpoints[i].Addresses[0]]}}}
	}
	return s
}

func nodePortSvc(name string, nodePort int32) *corev1.Service {
	s := smallSvc(name, "198.51.100.99", 0)
	s.Spec.ExternalIPs = nil
	s.Spec.Type = corev1.ServiceTypeNodePort
	s.Spec.Ports[0].NodePort = nodePort
	return s
}

func nodeWith(addrs ...string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}}
	for _, a := range addrs {
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a})
	}
	return n
}

// TestIncrementalSync checks which Services a sync translates again and
// what it hands the datapath, for each kind of change.
func TestIncrementalSync(t *testing.T) {
	initial := []any{
		smallSvc("a", "198.51.100.1", 1), smallSlice("a-1", "a", "10.0.0.1"),
		smallSvc("b", "198.51.100.2", 2), smallSlice("b-1", "b", "10.0.0.2"),
		smallSvc("c", "198.51.100.3", 3), smallSlice("c-1", "c", "10.0.0.3"),
		// d is younger than a and wants a's frontend: refused while a
		// has it.
		smallSvc("d", "198.51.100.1", 4), smallSlice("d-1", "d", "10.0.0.4"),
		nodePortSvc("np", 30080),
		// z's endpoints are hinted for two zones.
		smallSvc("z", "198.51.100.26", 5), zonedSlice("z-1", "z", map[string]string{"10.0.0.26": "zone-a", "10.0.0.27": "zone-b"}),
		nodeWith("192.0.2.1"),
	}
	tests := []struct {
		name        string
		change      func(tc *testCluster)
		full        bool
		translated  int
		changed     []string
		removed     []string
		noDatapath  bool
		wantIssueOf string // a Service key that must (still) have a problem
		noIssueOf   string
	}{
		{
			name:        "service change translates that service only",
			change:      func(tc *testCluster) { tc.apply(smallSvc("b", "198.51.100.20", 2)) },
			translated:  1,
			changed:     []string{"default/b:http/TCP"},
			wantIssueOf: "default/d",
		},
		{
			name:       "slice change",
			change:     func(tc *testCluster) { tc.apply(smallSlice("c-1", "c", "10.0.0.3", "10.0.0.33")) },
			translated: 1,
			changed:    []string{"default/c:http/TCP"},
		},
		{
			name:       "slice label moves between services",
			change:     func(tc *testCluster) { tc.apply(smallSlice("b-1", "c", "10.0.0.2")) },
			translated: 2,
			changed:    []string{"default/b:http/TCP", "default/c:http/TCP"},
		},
		{
			name:       "service deleted",
			change:     func(tc *testCluster) { tc.remove(smallSvc("c", "", 0)) },
			translated: 1,
			removed:    []string{"default/c:http/TCP"},
		},
		{
			name: "service handed to another proxy",
			change: func(tc *testCluster) {
				s := smallSvc("c", "198.51.100.3", 3)
				s.Labels = map[string]string{labelServiceProxyName: "other"}
				tc.apply(s)
			},
			translated: 1,
			removed:    []string{"default/c:http/TCP"},
		},
		{
			name:       "slice deleted",
			change:     func(tc *testCluster) { tc.remove(smallSlice("b-1", "b")) },
			translated: 1,
			changed:    []string{"default/b:http/TCP"},
		},
		{
			name: "added and deleted in one window",
			change: func(tc *testCluster) {
				tc.apply(smallSvc("e", "198.51.100.5", 5))
				tc.remove(smallSvc("e", "", 0))
			},
			translated: 1,
			noDatapath: true,
		},
		{
			name: "no-op update",
			change: func(tc *testCluster) {
				s := smallSvc("a", "198.51.100.1", 1)
				s.Annotations = map[string]string{"team": "web"}
				tc.apply(s)
			},
			translated:  2, // a, and d claiming a's frontend
			noDatapath:  true,
			wantIssueOf: "default/d",
		},
		{
			name:       "node address change translates everything",
			change:     func(tc *testCluster) { tc.apply(nodeWith("192.0.2.1", "192.0.2.2")) },
			full:       true,
			translated: 5,
		},
		{
			name: "node zone change translates everything",
			change: func(tc *testCluster) {
				n := nodeWith("192.0.2.1")
				n.Labels = map[string]string{corev1.LabelTopologyZone: "zone-a"}
				tc.apply(n)
			},
			full: true,
		},
		{
			name:       "node change without address change is ignored",
			change:     func(tc *testCluster) { n := nodeWith("192.0.2.1"); n.Labels = map[string]string{"x": "y"}; tc.apply(n) },
			noDatapath: true,
		},
		{
			name:       "older owner deleted: the next claimant takes the frontend",
			change:     func(tc *testCluster) { tc.remove(smallSvc("a", "", 0)) },
			translated: 2,
			changed:    []string{"default/d:http/TCP"},
			removed:    []string{"default/a:http/TCP"},
			noIssueOf:  "default/d",
		},
		{
			name: "older service takes a frontend back",
			change: func(tc *testCluster) {
				tc.apply(smallSvc("b", "198.51.100.1", 2))
				tc.remove(smallSvc("a", "", 0))
			},
			// a goes; b (older than d) now wins 198.51.100.1 and d
			// stays refused.
			translated:  3,
			changed:     []string{"default/b:http/TCP"},
			removed:     []string{"default/a:http/TCP"},
			wantIssueOf: "default/d",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tc := newTestCluster(t, netip.MustParseAddr("192.0.2.1"))
			for _, o := range initial {
				tc.apply(o)
			}
			tc.sync()
			if n := len(tc.dp.calls); n != 1 || !tc.dp.calls[0].full {
				t.Fatalf("initial sync: calls %+v, want one full apply", tc.dp.calls)
			}
			tt.change(tc)
			tc.sync()
			if got := tc.c.lastSync; got.full != tt.full || (!tt.full && got.translated != tt.translated) {
				t.Errorf("sync: full %v, translated %d; want full %v, translated %d", got.full, got.translated, tt.full, tt.translated)
			}
			calls := tc.dp.calls[1:]
			switch {
			case tt.noDatapath:
				if len(calls) != 0 {
					t.Errorf("datapath calls %+v, want none", calls)
				}
			case tt.full:
				if len(calls) != 1 || !calls[0].full {
					t.Errorf("datapath calls %+v, want one full apply", calls)
				}
			default:
				if len(calls) != 1 || calls[0].full || !slices.Equal(calls[0].changed, tt.changed) || !slices.Equal(calls[0].removed, tt.removed) {
					t.Errorf("datapath calls %+v, want one update changing %q, removing %q", calls, tt.changed, tt.removed)
				}
			}
			// Whatever the path, the result is what a translation from
			// scratch gives.
			svcs, eps := tc.everything()
			want, wantErrs := Translate(NodeInfoFrom("node-1", []netip.Addr{netip.MustParseAddr("192.0.2.1")}, tc.nodeObjsNode()), svcs, eps)
			if got := tc.dp.sorted(); !servicesEqual(got, want) {
				t.Errorf("datapath state\n%+v\nwant\n%+v", got, want)
			}
			if got := tc.c.l4.issuesInOrder(); len(got) != len(wantErrs) {
				t.Errorf("issues %v, want %v", got, wantErrs)
			}
			if tt.wantIssueOf != "" && len(tc.c.l4.issues[tt.wantIssueOf]) == 0 {
				t.Errorf("no issue of %s", tt.wantIssueOf)
			}
			if tt.noIssueOf != "" && len(tc.c.l4.issues[tt.noIssueOf]) != 0 {
				t.Errorf("issues of %s: %v", tt.noIssueOf, tc.c.l4.issues[tt.noIssueOf])
			}
		})
	}
}

func (tc *testCluster) nodeObjsNode() *corev1.Node {
	o, ok, _ := tc.nodeObjs.GetByKey("node-1")
	if !ok {
		return nil
	}
	return o.(*corev1.Node)
}

// TestIncrementalMatchesTranslate applies random changes to Services that
// fight over a few frontends and checks after every sync that the
// datapath holds exactly what translating everything from scratch gives.
func TestIncrementalMatchesTranslate(t *testing.T) {
	tc := newTestCluster(t, netip.MustParseAddr("192.0.2.1"))
	rng := rand.New(rand.NewPCG(1, 2))
	names := []string{"s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7"}
	ips := []string{"198.51.100.1", "198.51.100.2", "198.51.100.3"}
	live := map[string]bool{}
	tc.sync()
	for step := range 400 {
		for range 1 + rng.IntN(3) {
			n := names[rng.IntN(len(names))]
			switch op := rng.IntN(6); {
			case op <= 2:
				s := smallSvc(n, ips[rng.IntN(len(ips))], rng.IntN(5))
				if rng.IntN(4) == 0 {
					s.Spec.Type = corev1.ServiceTypeNodePort
					s.Spec.Ports[0].NodePort = 30000 + int32(rng.IntN(2))
				}
				tc.apply(s)
				live[n] = true
			case op == 3 && live[n]:
				tc.remove(smallSvc(n, "", 0))
				delete(live, n)
			case op == 4:
				tc.apply(smallSlice(n+"-1", names[rng.IntN(len(names))], fmt.Sprintf("10.0.0.%d", rng.IntN(4)+1)))
			case op == 5:
				tc.apply(nodeWith(fmt.Sprintf("192.0.2.%d", 1+rng.IntN(2))))
			}
		}
		tc.sync()
		svcs, eps := tc.everything()
		want, _ := Translate(NodeInfoFrom("node-1", []netip.Addr{netip.MustParseAddr("192.0.2.1")}, tc.nodeObjsNode()), svcs, eps)
		if got := tc.dp.sorted(); !servicesEqual(got, want) {
			t.Fatalf("step %d: datapath state\n%+v\nwant\n%+v", step, got, want)
		}
	}
}

// BenchmarkSyncOneSliceChange measures a sync after one EndpointSlice
// changed, with 10,000 Services and 100,000 endpoints, and the heap the
// controller then holds (informer caches included).
func BenchmarkSyncOneSliceChange(b *testing.B) {
	tc := newTestCluster(b, netip.MustParseAddr("192.0.2.1"))
	svcs, eps := scaleCluster(10000, 10)
	for _, s := range svcs {
		tc.apply(s)
	}
	for _, s := range eps {
		tc.apply(s)
	}
	tc.sync()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		tc.apply(scaleSlice(i%10000, 10, 1+i))
		tc.sync()
	}
	b.StopTimer()
	if tc.c.lastSync.full || tc.c.lastSync.translated != 1 {
		b.Fatalf("last sync %+v, want one service translated", tc.c.lastSync)
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "heapMiB")
	runtime.KeepAlive(tc)
}

// BenchmarkSyncOneSliceChangeLoader is BenchmarkSyncOneSliceChange with
// the real datapath (root only): translation plus map writes.
func BenchmarkSyncOneSliceChangeLoader(b *testing.B) {
	netns.RequirePrivileged(b)
	ns := netns.New(b, "ngctlbench-"+netns.RandomSuffix(5))
	ns.MustIP("link", "add", "ext0", "type", "veth", "peer", "name", "ext1")
	ns.MustIP("addr", "add", "192.0.2.1/24", "dev", "ext0")
	ns.MustIP("link", "set", "ext0", "up")
	ns.MustIP("link", "set", "ext1", "up")
	bpffs := filepath.Join(b.TempDir(), "bpffs")
	var dp *loader.Datapath
	if err := ns.Do(func() error {
		var err error
		dp, err = loader.Open(loader.Config{BPFFS: bpffs, Devices: []string{"ext0"}, XDPMode: loader.XDPGeneric,
			SNATPortMin: 61000, SNATPortMax: 65535, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		dp.Close()
		_ = ns.Do(func() error { return loader.Cleanup(bpffs) })
		_ = unix.Unmount(bpffs, unix.MNT_DETACH)
	})
	tc := newTestCluster(b, netip.MustParseAddr("192.0.2.1"))
	tc.c.dp = dp
	svcs, eps := scaleCluster(10000, 10)
	for _, s := range svcs {
		tc.apply(s)
	}
	for _, s := range eps {
		tc.apply(s)
	}
	start := time.Now()
	tc.sync()
	first := time.Since(start)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		tc.apply(scaleSlice(i%10000, 10, 1+i))
		tc.sync()
	}
	b.StopTimer()
	b.ReportMetric(float64(first.Milliseconds()), "first-sync-ms")
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "heapMiB")
	runtime.KeepAlive(tc)
	runtime.KeepAlive(dp)
}

// TestChangeTrackerIngressRefs checks when a Service change makes the
// Ingress side translate again: only for the Services the last Ingress
// translation looked up, including one that changed while it ran.
func TestChangeTrackerIngressRefs(t *testing.T) {
	refs := map[string]struct{}{"default/web": {}}
	tests := []struct {
		name   string
		record func(tr *changeTracker)
		wantL7 bool
		want   []string
	}{
		{"referenced service", func(tr *changeTracker) { tr.setL7Refs(refs); tr.take(); tr.service("default/web") }, true, []string{"default/web"}},
		{"other service", func(tr *changeTracker) { tr.setL7Refs(refs); tr.take(); tr.service("default/api") }, false, []string{"default/api"}},
		{"changed while translating", func(tr *changeTracker) { tr.take(); tr.service("default/web"); tr.setL7Refs(refs) }, true, []string{"default/web"}},
		{"ingress object", func(tr *changeTracker) { tr.take(); tr.ingress() }, true, nil},
		{"node", func(tr *changeTracker) { tr.take(); tr.everything() }, true, nil},
		{"empty key ignored", func(tr *changeTracker) { tr.take(); tr.service("") }, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newChangeTracker()
			tt.record(tr)
			p := tr.take()
			if p.l7 != tt.wantL7 {
				t.Errorf("l7 %v, want %v", p.l7, tt.wantL7)
			}
			if got := slices.Sorted(maps.Keys(p.svcs)); !slices.Equal(got, tt.want) {
				t.Errorf("services %q, want %q", got, tt.want)
			}
			if again := tr.take(); again.l7 || again.all || len(again.svcs) > 0 {
				t.Errorf("second take not empty: %+v", again)
			}
		})
	}
}

// TestNodeChangedTriggers checks which changes of the Node object ask for
// a full translation: those of its addresses and of its zone.
func TestNodeChangedTriggers(t *testing.T) {
	zoned := func(zone string, addrs ...string) *corev1.Node {
		n := nodeWith(addrs...)
		n.Labels = map[string]string{corev1.LabelTopologyZone: zone, "team": "net"}
		return n
	}
	other := nodeWith("192.0.2.9")
	other.Name = "node-2"
	tests := []struct {
		name     string
		old, new any
		want     bool
	}{
		{"added", nil, nodeWith("192.0.2.1"), true},
		{"deleted", nodeWith("192.0.2.1"), nil, true},
		{"address changed", nodeWith("192.0.2.1"), nodeWith("192.0.2.2"), true},
		{"zone set", nodeWith("192.0.2.1"), zoned("zone-a", "192.0.2.1"), true},
		{"zone changed", zoned("zone-a", "192.0.2.1"), zoned("zone-b", "192.0.2.1"), true},
		{"other label changed", zoned("zone-a", "192.0.2.1"), func() *corev1.Node { n := zoned("zone-a", "192.0.2.1"); n.Labels["team"] = "web"; return n }(), false},
		{"another node", other, other.DeepCopy(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tc := newTestCluster(t)
			tc.c.nodeChanged(tt.old, tt.new)
			if got := tc.c.tracker.take().all; got != tt.want {
				t.Errorf("full translation asked: %v, want %v", got, tt.want)
			}
		})
	}
}

// TestNetworkProgrammingLatency checks that a sync observes, once per
// change, the time since the EndpointSlice controller triggered it, and
// that a failed sync keeps the times for the next one.
func TestNetworkProgrammingLatency(t *testing.T) {
	tc := newTestCluster(t)
	tc.c.tracker.started = time.Now().Add(-time.Minute) // the agent's start
	tc.apply(smallSvc("web", "198.51.100.1", 0))
	tc.sync()
	count := func() (uint64, float64) {
		var m dto.Metric
		tc.must(tc.c.metrics.programming.Write(&m))
		return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
	}
	stamped := func(name string, at time.Time, addrs ...string) *discoveryv1.EndpointSlice {
		s := smallSlice(name, "web", addrs...)
		s.Annotations = map[string]string{corev1.EndpointsLastChangeTriggerTime: at.Format(time.RFC3339Nano)}
		return s
	}
	at := time.Now().Add(-2 * time.Second)
	// One change written into two slices: one trigger time.
	tc.apply(stamped("web-a", at, "10.0.0.1"))
	tc.apply(stamped("web-b", at, "10.0.0.2"))
	// Hand-made slices and changes from before the agent started are
	// not timed.
	tc.apply(smallSlice("web-c", "web", "10.0.0.3"))
	tc.apply(stamped("web-d", tc.c.tracker.started.Add(-time.Hour), "10.0.0.4"))
	tc.sync()
	n, sum := count()
	if n != 1 || sum < 2 || sum > 60 {
		t.Fatalf("after one change: %d observations summing %.3fs, want 1 of about 2s", n, sum)
	}
	tc.sync()
	if n, _ := count(); n != 1 {
		t.Errorf("a sync without changes observed again: %d", n)
	}

	// A failed sync gives its trigger times back.
	tc.apply(stamped("web-a", at.Add(time.Second), "10.0.0.5"))
	p := tc.c.tracker.take()
	tc.c.tracker.putBack(p)
	tc.sync()
	if n, _ := count(); n != 2 {
		t.Errorf("after a change given back: %d observations, want 2", n)
	}
}
