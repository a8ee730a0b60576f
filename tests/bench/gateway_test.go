//go:build bench

package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	gwapi "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/nodegress/nodegress/tests/bench/benchkit"
	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/kube"
	"github.com/nodegress/nodegress/tests/netns"
)

const (
	// gwNamespace holds the benchmark's Services, Gateway and routes.
	gwNamespace = "bench"
	// gwSamples is how many changes of each kind are timed per scale.
	gwSamples = 50
	// gwMetricsAddr is the agent's --metrics-addr, on node1's loopback.
	gwMetricsAddr = "127.0.0.1:9254"
	// gwChangeTimeout bounds one change's wait for traffic.
	gwChangeTimeout = 30 * time.Second
	// gwServeTimeout bounds the wait for routes created in bulk.
	gwServeTimeout = 5 * time.Minute
	// gwParallel bounds the API writes in flight when creating in bulk.
	gwParallel = 32
)

// gwPool is the agent's --gateway-address-pool: one address, routed by
// the client via node1.
var gwPool = netip.MustParsePrefix("10.96.60.9/32")

// gwScales are the HTTPRoute counts the change rows run at.
var gwScales = []struct {
	key string
	n   int
}{{"1", 1}, {"1k", 1000}, {"5k", 5000}}

// gwChange is one timed kind of change.
type gwChange struct{ key, title string }

var gwChanges = []gwChange{
	{"create", "HTTPRoute created → first 200 on its host"},
	{"update", "HTTPRoute path changed → first 200 on the new path"},
	{"delete", "HTTPRoute deleted → first 404 on its host"},
}

// gwScaleResult is what one scale measured.
type gwScaleResult struct {
	key    string
	routes int
	// took is the time from the first bulk create to the sampled routes
	// answering; 0 when nothing was created in bulk.
	took    time.Duration
	samples map[string][]time.Duration
	failed  map[string]int
	// syncs and syncSeconds: the agent's own
	// nodegress_sync_duration_seconds over the samples; cpu its CPU
	// seconds meanwhile.
	syncs, syncSeconds, cpu float64
	changes                 int
}

// gwResources is the agent at the largest scale.
type gwResources struct {
	routes                      int
	rss                         int64
	heapInuse, heapAlloc, goSys float64
	idleCPU                     float64 // share of one core
	bulkCPU                     float64 // CPU seconds taking in the last bulk
	routesJSON                  int64
	withStatus                  int
	// statusAfter is the time from the last bulk creation's start to
	// the count of routes with status; settleAfter from the start of the
	// idle wait to the idle window found.
	statusAfter, settleAfter                   time.Duration
	settled                                    bool
	programmingCount, programmingSum, syncMean float64
}

type gwEnv struct {
	t    *testing.T
	s    settings
	reg  *benchkit.Registry
	dir  string
	work string

	tp    *netns.Topology
	cp    *kube.ControlPlane
	core  kubernetes.Interface
	gw    gwclient.Interface
	agent *benchkit.Proc
	bin   string
	// poll asks the Gateway's address from the client, kept alive.
	poll *harness.L7Client
	addr netip.AddrPort

	web, web2 harness.Service
	bulk      []*gwapi.HTTPRoute
	began     time.Time
	// bulkStart is when the current scale's bulk creation began.
	bulkStart time.Time

	scales    []gwScaleResult
	churn     []harness.ChurnPhase
	churnErr  error
	churnAt   int
	res       *gwResources
	notes     []string
	loadStart string
}

// TestGateway measures nodegress's Gateway API handling where the
// conformance suite does not look: the time from an HTTPRoute write to
// traffic at 1, 1,000 and 5,000 HTTPRoutes, HTTPRoutes and endpoints
// changed under load without a failed request, and the agent's memory and
// CPU at 5,000 HTTPRoutes. One agent, a real API server, the client's
// requests through the Gateway's address; it writes a Markdown report
// under results/.
func TestGateway(t *testing.T) {
	s := loadSettings(t)
	if !gwSelected(s) {
		t.Skipf("BENCH_FILTER %q selects no gateway row (rows: %s; peer: nodegress)", s.filter, strings.Join(gwRows(), ", "))
	}
	netns.RequirePrivileged(t)
	_ = os.WriteFile("/proc/self/autogroup", []byte(strconv.Itoa(benchkit.Priority)), 0)
	e := &gwEnv{t: t, s: s, reg: s.registry(), dir: filepath.Join(s.rundir, "gateway"), began: time.Now(), loadStart: loadAvg()}
	if err := os.MkdirAll(e.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var err error
	if e.work, err = os.MkdirTemp("", "nggw-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(e.work) })
	e.bin = harness.Nodegress(t)
	ctx := t.Context()
	e.setup(ctx)

	last := gwScales[len(gwScales)-1]
	for _, sc := range gwScales {
		change := s.match("change" + sc.key + "/nodegress")
		churn := sc.key == "1k" && s.match("churn1k/nodegress")
		resources := sc.n == last.n && s.match("resources"+sc.key+"/nodegress")
		if !change && !churn && !resources && !gwLaterSelected(s, sc.n) {
			continue
		}
		fmt.Printf("\n== %d HTTPRoutes\n", sc.n)
		took, bulkCPU := e.grow(ctx, sc.n)
		if resources {
			e.resources(ctx, sc.n, bulkCPU)
		}
		if change {
			e.changes(ctx, sc.key, sc.n, took)
		}
		if churn {
			e.runChurn(ctx)
		}
	}

	report := e.report(time.Since(e.began))
	path := filepath.Join(s.results, "gateway-"+stamp()+".md")
	if err := os.WriteFile(path, []byte(report), 0o644); err != nil {
		t.Fatal(err)
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	fmt.Printf("\nreport written to %s\n", path)
}

func gwRows() []string {
	var rows []string
	for _, sc := range gwScales {
		rows = append(rows, "change"+sc.key)
	}
	return append(rows, "churn1k", "resources"+gwScales[len(gwScales)-1].key)
}

func gwSelected(s settings) bool {
	for _, r := range gwRows() {
		if s.match(r + "/nodegress") {
			return true
		}
	}
	return false
}

// gwLaterSelected tells whether a row at more routes than n is selected,
// which needs the routes of n created first.
func gwLaterSelected(s settings, n int) bool {
	for _, sc := range gwScales {
		if sc.n > n && (s.match("change"+sc.key+"/nodegress") || s.match("resources"+sc.key+"/nodegress")) {
			return true
		}
	}
	return false
}

// setup builds client, node1 (three pods) and node2 (one pod), the API
// server on the wire, the Gateway API's CRDs and class, the Services, the
// Gateway with its probe route, and starts the agent on node1.
func (e *gwEnv) setup(ctx context.Context) {
	t := e.t
	tp := netns.Nodes(t, 3, 1)
	e.tp = tp
	all := []*netns.NS{tp.Switch, tp.Client.NS}
	for _, n := range tp.Nodes {
		all = append(all, n.NS)
	}
	for _, p := range tp.Pods() {
		all = append(all, p.NS)
	}
	for _, ns := range all {
		remember(t, e.s, "netns", ns.Name)
	}
	tp.Switch.MustIP("addr", "add", netip.PrefixFrom(apiAddr, netns.WireNet.Bits()).String(), "dev", "br0")
	start := time.Now()
	e.cp = kube.Start(t, kube.InNetns(tp.Switch), kube.ListenOn(apiAddr))
	cfg := rest.CopyConfig(e.cp.Config)
	// Thousands of routes are created in bursts.
	cfg.QPS, cfg.Burst = 5000, 5000
	var err error
	if e.core, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if e.gw, err = gwclient.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if err := harness.InstallGatewayAPI(e.cp.Kubectl); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{gwNamespace, "nodegress"} {
		if err := harness.Apply(ctx, e.core, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range tp.Nodes {
		obj, err := harness.NodeObject(n)
		if err != nil {
			t.Fatal(err)
		}
		if err := harness.Apply(ctx, e.core, obj); err != nil {
			t.Fatal(err)
		}
	}
	harness.StartPodServers(t, tp.Pods()...)
	port := []harness.Port{{Name: "http", Port: 80, TargetPort: harness.PodHTTPPort}}
	e.web = harness.Service{Name: "web", Namespace: gwNamespace, Type: "ClusterIP", Ports: port,
		Endpoints: harness.Endpoints(tp.Pod("pod1a"), tp.Pod("pod1b"))}
	e.web2 = harness.Service{Name: "web2", Namespace: gwNamespace, Type: "ClusterIP", Ports: port,
		Endpoints: harness.Endpoints(tp.Pod("pod1c"))}
	for _, s := range []harness.Service{e.web, e.web2} {
		svc, es, err := s.Objects()
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range []any{svc, es} {
			if err := harness.Apply(ctx, e.core, o); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := e.gw.GatewayV1().Gateways(gwNamespace).Create(ctx, harness.HTTPGatewayObject(gwNamespace, "gw"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	probe := harness.HTTPRouteObject(gwNamespace, "probe", "gw", "probe.bench.test", e.web.Name, 80)
	probe.Spec.Rules[0].Matches = []gwapi.HTTPRouteMatch{harness.PathPrefixMatch("/u0")}
	if _, err := e.gw.GatewayV1().HTTPRoutes(gwNamespace).Create(ctx, probe, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.startAgent()
	e.addr = netip.AddrPortFrom(gwPool.Addr(), 80)
	e.poll = harness.NewL7Client(tp.Client.NS, gwPool.Addr(), harness.L7Options{})
	t.Cleanup(e.poll.CloseIdle)
	if _, err := e.await(ctx, "http://probe.bench.test/u0", 200, time.Minute); err != nil {
		t.Fatalf("the probe route: %v\n%s", err, e.agent.Tail(30))
	}
	fmt.Printf("cluster ready in %s: API server at %s, Gateway address %s\n", time.Since(start).Round(time.Millisecond), e.cp.URL, gwPool.Addr())
}

// startAgent runs the agent on node1 as the DaemonSet would (Ingress and
// Gateway API on, status written, access log off), alone on
// benchkit.SUTCPU; it is stopped and its datapath removed at the end.
func (e *gwEnv) startAgent() {
	t := e.t
	n := e.tp.Nodes[0]
	bpffs, sock := filepath.Join(e.work, "bpffs"), filepath.Join(e.work, "trace.sock")
	if err := os.MkdirAll(bpffs, 0o700); err != nil {
		t.Fatal(err)
	}
	remember(t, e.s, "mounts", bpffs)
	if err := unix.Mount("bpf", bpffs, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount bpffs at %s: %v", bpffs, err)
	}
	p, err := benchkit.Start(e.reg, "nodegress-node1", benchkit.SUTCPU, nil, filepath.Join(e.dir, "nodegress-node1.log"),
		benchkit.InNetns(n.NS.Name, e.bin, "agent",
			"--kubeconfig", e.cp.Kubeconfig,
			"--devices", n.Dev,
			"--node-name", n.Name,
			"--bpffs", bpffs,
			"--trace-socket", sock,
			"--gateway-address-pool", gwPool.String(),
			"--metrics-addr", gwMetricsAddr,
			"--access-log", "off",
		)...)
	if err != nil {
		_ = unix.Unmount(bpffs, unix.MNT_DETACH)
		t.Fatal(err)
	}
	e.agent = p
	t.Cleanup(func() {
		p.Stop()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if out, err := n.Command(ctx, e.bin, "cleanup", "--bpffs", bpffs).CombinedOutput(); err != nil {
			t.Errorf("nodegress cleanup: %v\n%s", err, out)
		}
		_ = unix.Unmount(bpffs, unix.MNT_DETACH)
	})
}

// remember appends line to a file of the run directory that
// scripts/bench.sh reads to clean up after a harness that died.
func remember(t *testing.T, s settings, file, line string) {
	f, err := os.OpenFile(filepath.Join(s.rundir, file), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := fmt.Fprintln(f, line); err != nil {
		t.Fatal(err)
	}
}

// await polls url through the Gateway, every 2 ms, until it answers code,
// and returns how long that took.
func (e *gwEnv) await(ctx context.Context, url string, code int, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last string
	for {
		r, err := e.poll.Get(ctx, url)
		switch {
		case err == nil && r.StatusCode == code:
			return time.Since(start), nil
		case err != nil:
			last = err.Error()
		default:
			last = r.String()
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("%s did not answer %d within %s (last: %s)", url, code, timeout, last)
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// grow creates HTTPRoutes in bulk until the Gateway has n (the probe
// route counts), waits until a sample of them and the newest answer, and
// returns how long that took and the agent's CPU seconds meanwhile.
func (e *gwEnv) grow(ctx context.Context, n int) (time.Duration, float64) {
	t := e.t
	have := len(e.bulk) + 1
	if n <= have {
		return 0, 0
	}
	var batch []*gwapi.HTTPRoute
	for i := have - 1; i < n-1; i++ {
		name := fmt.Sprintf("b-%d", i)
		batch = append(batch, harness.HTTPRouteObject(gwNamespace, name, "gw", name+".bench.test", e.web.Name, 80))
	}
	ticks0, _ := e.agent.CPUTicks()
	start := time.Now()
	e.bulkStart = start
	if err := harness.CreateHTTPRoutes(ctx, e.gw, batch, gwParallel); err != nil {
		t.Fatal(err)
	}
	created := time.Since(start)
	e.bulk = append(e.bulk, batch...)
	sample := []*gwapi.HTTPRoute{batch[len(batch)-1]}
	for range min(50, len(batch)) {
		sample = append(sample, batch[rand.IntN(len(batch))])
	}
	wctx, cancel := context.WithTimeout(ctx, gwServeTimeout)
	err := harness.RouteAnswers(wctx, e.poll, sample, 200)
	cancel()
	if err != nil {
		t.Fatalf("%d routes created in %s, not all served: %v\n%s", len(batch), created.Round(time.Millisecond), err, e.agent.Tail(30))
	}
	took := time.Since(start)
	ticks1, _ := e.agent.CPUTicks()
	cpu := float64(ticks1-ticks0) / ticksPerSecond
	fmt.Printf("%d HTTPRoutes created in %s (%d at a time), served (newest and %d sampled) after %s; agent CPU %.1f s\n",
		len(batch), created.Round(time.Millisecond), gwParallel, len(sample)-1, took.Round(time.Millisecond), cpu)
	return took, cpu
}

// ticksPerSecond is the kernel's USER_HZ, the unit of /proc CPU times.
const ticksPerSecond = 100

// changes times gwSamples changes of each kind at n routes, each from the
// API call until the client sees its effect through the Gateway, with a
// random pause of up to 300 ms before each so that writes land anywhere
// in the agent's sync interval.
func (e *gwEnv) changes(ctx context.Context, key string, n int, took time.Duration) {
	t := e.t
	res := gwScaleResult{key: key, routes: n, took: took, samples: map[string][]time.Duration{}, failed: map[string]int{}}
	m0 := e.metrics()
	ticks0, _ := e.agent.CPUTicks()
	routes := e.gw.GatewayV1().HTTPRoutes(gwNamespace)
	record := func(kind string, d time.Duration, err error) {
		res.changes++
		if err != nil {
			res.failed[kind]++
			e.notes = append(e.notes, fmt.Sprintf("%d routes, %s: %v", n, kind, err))
			return
		}
		res.samples[kind] = append(res.samples[kind], d)
	}
	pause := func() { time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond) }
	for i := 1; i <= gwSamples; i++ {
		if ctx.Err() != nil {
			t.Fatal(ctx.Err())
		}
		// update: the probe route's only path moves to /u<i>.
		pause()
		path := fmt.Sprintf("/u%d-%s", i, key)
		patch := fmt.Sprintf(`{"spec":{"rules":[{"matches":[{"path":{"type":"PathPrefix","value":%q}}],"backendRefs":[{"name":%q,"port":80}]}]}}`, path, e.web.Name)
		start := time.Now()
		_, err := routes.Patch(ctx, "probe", types.MergePatchType, []byte(patch), metav1.PatchOptions{})
		if err == nil {
			_, err = e.await(ctx, "http://probe.bench.test"+path, 200, gwChangeTimeout)
		}
		record("update", time.Since(start), err)

		// create, then delete, a route of its own host.
		pause()
		name := fmt.Sprintf("new-%s-%d", key, i)
		host := "http://" + name + ".bench.test/"
		start = time.Now()
		_, err = routes.Create(ctx, harness.HTTPRouteObject(gwNamespace, name, "gw", name+".bench.test", e.web.Name, 80), metav1.CreateOptions{})
		if err == nil {
			_, err = e.await(ctx, host, 200, gwChangeTimeout)
		}
		record("create", time.Since(start), err)
		pause()
		start = time.Now()
		err = routes.Delete(ctx, name, metav1.DeleteOptions{})
		if err == nil {
			_, err = e.await(ctx, host, 404, gwChangeTimeout)
		}
		record("delete", time.Since(start), err)
	}
	ticks1, _ := e.agent.CPUTicks()
	m1 := e.metrics()
	res.cpu = float64(ticks1-ticks0) / ticksPerSecond
	res.syncs = m1["nodegress_sync_duration_seconds_count"] - m0["nodegress_sync_duration_seconds_count"]
	res.syncSeconds = m1["nodegress_sync_duration_seconds_sum"] - m0["nodegress_sync_duration_seconds_sum"]
	e.scales = append(e.scales, res)
	for _, c := range gwChanges {
		ds := res.samples[c.key]
		fmt.Printf("change%-3s %5d routes, %s: p50 %s p99 %s (%d samples, %d failed)\n", key, n, c.key,
			benchkit.Latency(percentile(ds, 0.50)), benchkit.Latency(percentile(ds, 0.99)), len(ds), res.failed[c.key])
	}
}

// runChurn runs harness.RouteChurn over every route created in bulk so far
// (all moved from web to web2), 100 routes added and removed.
func (e *gwEnv) runChurn(ctx context.Context) {
	e.churnAt = len(e.bulk) + 1
	fmt.Printf("churn under load over %d routes\n", len(e.bulk))
	e.churn, e.churnErr = harness.RouteChurn{
		GW: e.gw, Core: e.core, Namespace: gwNamespace, Gateway: "gw",
		Routes: e.bulk, From: e.web, To: e.web2, Spare: []*netns.Pod{e.tp.Pod("pod2a")}, Added: 100,
		Client: e.tp.Client.NS, Addr: e.addr, KeepAlive: 4, NewConn: 2,
		MinOK: 5000, PhaseTimeout: 2 * time.Minute, Parallel: gwParallel,
		Logf: func(format string, args ...any) { fmt.Printf(format+"\n", args...) },
	}.Run(ctx)
	if e.churnErr != nil {
		e.notes = append(e.notes, fmt.Sprintf("churn: %v", e.churnErr))
	}
	// The later rows create routes on web; web2 keeps pod2a only.
	e.web2.Endpoints = harness.Endpoints(e.tp.Pod("pod2a"))
}

// resources reads the agent's memory and CPU at n routes once it is idle
// (bounded), and how far the status of the routes has been written.
func (e *gwEnv) resources(ctx context.Context, n int, bulkCPU float64) {
	r := &gwResources{routes: n, bulkCPU: bulkCPU}
	e.res = r
	// Idle: less than 5% of a core over a 5 s window, within 2 minutes.
	const window = 5 * time.Second
	began := time.Now()
	deadline := began.Add(2 * time.Minute)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		t0, _ := e.agent.CPUTicks()
		time.Sleep(window)
		t1, _ := e.agent.CPUTicks()
		r.idleCPU = float64(t1-t0) / ticksPerSecond / window.Seconds()
		r.settleAfter = time.Since(began)
		if r.idleCPU < 0.05 {
			r.settled = true
			break
		}
	}
	rss, err := benchkit.RSS(e.agent.Pid())
	if err != nil {
		e.t.Errorf("rss of the agent: %v", err)
	}
	r.rss = rss
	m := e.metrics()
	r.heapInuse, r.heapAlloc, r.goSys = m["go_memstats_heap_inuse_bytes"], m["go_memstats_heap_alloc_bytes"], m["go_memstats_sys_bytes"]
	r.syncMean = m["nodegress_sync_duration_seconds_sum"] / max(1, m["nodegress_sync_duration_seconds_count"])
	r.programmingCount, r.programmingSum = m["nodegress_network_programming_duration_seconds_count"], m["nodegress_network_programming_duration_seconds_sum"]
	list, err := e.gw.GatewayV1().HTTPRoutes(gwNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		e.t.Errorf("list routes: %v", err)
		return
	}
	for _, rt := range list.Items {
		if len(rt.Status.Parents) > 0 {
			r.withStatus++
		}
		rt.ManagedFields, rt.Status = nil, gwapi.HTTPRouteStatus{}
		b, _ := json.Marshal(rt)
		r.routesJSON += int64(len(b))
	}
	r.statusAfter = time.Since(e.bulkStart)
	fmt.Printf("agent at %d HTTPRoutes: RSS %s, heap in use %s, idle CPU %s (settled %v), %d of %d routes with status\n",
		n, mib(float64(r.rss)), mib(r.heapInuse), benchkit.Percent(r.idleCPU), r.settled, r.withStatus, len(list.Items))
}

// metrics scrapes the agent's /metrics inside node1 and returns the
// samples without labels by name.
func (e *gwEnv) metrics() map[string]float64 {
	n := e.tp.Nodes[0]
	cl := &http.Client{Transport: &http.Transport{DialContext: n.DialContext, DisableKeepAlives: true}, Timeout: 5 * time.Second}
	out := map[string]float64{}
	resp, err := cl.Get("http://" + gwMetricsAddr + "/metrics")
	if err != nil {
		e.t.Errorf("agent metrics: %v", err)
		return out
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Errorf("agent metrics: %v", err)
		return out
	}
	ms, err := harness.ParseMetrics(b)
	if err != nil {
		e.t.Errorf("agent metrics: %v", err)
		return out
	}
	for _, m := range ms {
		if len(m.Labels) == 0 {
			out[m.Name] = m.Value
		}
	}
	return out
}
