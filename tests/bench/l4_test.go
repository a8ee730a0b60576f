//go:build bench

package bench

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/nodegress/nodegress/controller"
	"github.com/nodegress/nodegress/tests/bench/benchkit"
	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/kube"
	"github.com/nodegress/nodegress/tests/netns"
)

// The L4 comparison: the NodePort hop served by kube-proxy (iptables and
// nftables modes, the real binary built from the same Kubernetes version
// as the API server) and by nodegress's datapath, on the same namespaces,
// the same API server and the same Services and EndpointSlices. Only one
// dataplane is ever active: each phase starts it on both nodes, measures,
// stops it and removes every trace (rules, programs, conntrack entries)
// before the next one starts.

// Addresses and sizes of the L4 topology.
var (
	// apiAddr is the API server's address, on the switch's bridge: every
	// node reaches it on the wire like a control-plane host.
	apiAddr = netip.MustParseAddr("10.100.0.250")
	// podNet covers every node's pod range (netns.PodCIDR).
	podNet = netip.MustParsePrefix("10.244.0.0/16")
)

const (
	l4Namespace = "bench"
	// nodePortRange is wider than Kubernetes' default 30000-32767 so that
	// 10,000 NodePort Services fit; it stays below the ephemeral ports
	// (32768-60999) and nodegress's SNAT ports (61000-65535).
	nodePortRange = "20000-32767"
	nodePortMin   = 20000
	// endpointsPerExtra is the size of every extra Service's
	// EndpointSlice: 10,000 Services make 100,000 endpoints.
	endpointsPerExtra = 10
	// firstPacketConns is how many fresh connections measure the
	// first-packet latency at each scale.
	firstPacketConns = 1000
	// firstPacketTimeout bounds one first-packet connection.
	firstPacketTimeout = 2 * time.Second
	// flipsPerPhase is how many EndpointSlice changes each phase times.
	flipsPerPhase = 1
	// l4Connections is wrk's and udp-rr's concurrency (the reference
	// measurement's -c32).
	l4Connections = 32
	// readyTimeout bounds a dataplane's start until every Service answers
	// (with 1,000 extra Services); scaleReadyTimeout the same with 10,000.
	readyTimeout      = 60 * time.Second
	scaleReadyTimeout = 90 * time.Second
)

// scaleLevels are the numbers of extra NodePort Services the first-packet
// latency is measured with (besides the benchmark's own).
var scaleLevels = []int{0, 1000, 10000}

// dataplane is one implementation of the NodePort hop.
type dataplane struct {
	key, title string
	// start runs it on every node (node1 first) and returns the
	// processes; nil for routing only.
	start func(e *l4Env) ([]*benchkit.Proc, error)
	// stop ends the processes and removes everything the dataplane put
	// into the node namespaces.
	stop func(e *l4Env, procs []*benchkit.Proc) error
	// ready tells whether the dataplane on node i finished its first
	// sync (besides the Services answering from the client).
	ready func(e *l4Env, i int, p *benchkit.Proc) error
}

var (
	dpIptables = &dataplane{key: "iptables", title: "kube-proxy iptables",
		start: kubeProxyStart("iptables"), stop: kubeProxyStop, ready: kubeProxyReady}
	dpNftables = &dataplane{key: "nftables", title: "kube-proxy nftables",
		start: kubeProxyStart("nftables"), stop: kubeProxyStop, ready: kubeProxyReady}
	dpNodegress = &dataplane{key: "nodegress", title: "nodegress",
		start: nodegressStart, stop: nodegressStop, ready: nodegressReady}
	// dpRouting sends the load to the pods' own addresses: no NodePort
	// hop at all, the floor every dataplane adds to.
	dpRouting = &dataplane{key: "routing", title: "routing only (no NodePort hop)"}
)

// l4Dataplanes are the table's columns, in order.
var l4Dataplanes = []*dataplane{dpRouting, dpIptables, dpNftables, dpNodegress}

// l4Load is one load measured in every phase.
type l4Load struct {
	key, title string
	// svc is the Service the load goes to; pod the backend it reaches.
	svc, pod string
	udp      bool
	// newConn sends "Connection: close": one request per connection.
	newConn bool
	// fromConnect runs benchload instead of wrk, which times new
	// connections from connect() (wrk starts after the handshake, so a
	// retransmitted SYN never shows in its latency).
	fromConnect bool
	// rate, when set, is benchload's fixed schedule (requests or
	// connections per second): every dataplane is timed at the same
	// offered load, below what any of them sustains.
	rate float64
	// dataplanes, when set, are the only ones the load runs on: a
	// feature that the others lack, or that a Service reached without
	// the NodePort hop (routing) does not have.
	dataplanes []*dataplane
	// baseline is the load this one is a variant of (the same path
	// without the feature the row is about). It runs in the same
	// phase, selected or not, and the report gives the ratio of the two
	// rates per phase: the two share what differs between phases (how
	// busy the machine was, that start of the dataplane).
	baseline string
	// verify checks, after the load, that the dataplane really applied
	// the row's feature; the samples of a load that measured something
	// else are not recorded.
	verify func(e *l4Env, dp *dataplane) error
}

// on tells whether the load runs on dp at all.
func (l l4Load) on(dp *dataplane) bool {
	return l.dataplanes == nil || slices.Contains(l.dataplanes, dp)
}

// Fixed rates of the latency rows, below every dataplane's capacity
// (kube-proxy iptables: ~60k keep-alive requests/s, ~6k connections/s).
const (
	fixedKeepAliveRate = 40000
	fixedNewConnRate   = 4000
	// fixedRateMaxInFlight bounds the fixed-rate loads' open connections
	// (keep-alive: the pool is opened before the clock starts).
	fixedRateMaxInFlight = 1024
)

var l4Loads = []l4Load{
	{key: "keepalive-local", title: "keep-alive, backend on the same node", svc: "ka-local", pod: "pod1a"},
	{key: "keepalive-remote", title: "keep-alive, backend on the other node", svc: "ka-remote", pod: "pod2a"},
	{key: "newconn-local", title: "new connection per request, same node", svc: "ka-local", pod: "pod1a", newConn: true},
	{key: "newconn-remote", title: "new connection per request, other node", svc: "ka-remote", pod: "pod2a", newConn: true},
	{key: "udp-local", title: "UDP request/response, same node", svc: "udp-local", pod: "pod1a", udp: true},
	{key: "udp-remote", title: "UDP request/response, other node", svc: "udp-remote", pod: "pod2a", udp: true},
	{key: "connect-local", title: "new connection per request from connect(), same node", svc: "ka-local", pod: "pod1a", newConn: true, fromConnect: true},
	{key: "connect-remote", title: "new connection per request from connect(), other node", svc: "ka-remote", pod: "pod2a", newConn: true, fromConnect: true},
	{key: "fixedka-local", title: "keep-alive at a fixed rate, same node", svc: "ka-local", pod: "pod1a", fromConnect: true, rate: fixedKeepAliveRate},
	{key: "fixedka-remote", title: "keep-alive at a fixed rate, other node", svc: "ka-remote", pod: "pod2a", fromConnect: true, rate: fixedKeepAliveRate},
	{key: "fixednc-local", title: "new connections at a fixed rate, same node", svc: "ka-local", pod: "pod1a", newConn: true, fromConnect: true, rate: fixedNewConnRate},
	{key: "fixednc-remote", title: "new connections at a fixed rate, other node", svc: "ka-remote", pod: "pod2a", newConn: true, fromConnect: true, rate: fixedNewConnRate},
	// The cost of features, each against newconn-remote: the same load
	// to an nginx on node2, so that only the feature differs. One client
	// means one affinity entry, so every connection reaches the same one
	// of the affinity Service's backends, as newconn-remote's reach
	// their only one. Last in the phase, so that the rows before them
	// run as they did without them.
	{key: "affinity-remote", title: "new connection per request, ClientIP affinity, other node", svc: "aff-remote", pod: "pod2c", newConn: true,
		dataplanes: []*dataplane{dpIptables, dpNftables, dpNodegress}, baseline: "newconn-remote", verify: verifyAffinity},
	{key: "maglev-remote", title: "new connection per request, Maglev, other node", svc: "mag-remote", pod: maglevBackend, newConn: true,
		dataplanes: []*dataplane{dpNodegress}, baseline: "newconn-remote", verify: verifyMaglev},
	// New connections to one backend at fixed rates, for the SYNs the
	// client retransmits when a SNAT port is refused or missing.
	{key: "fixednc1k-remote", title: "new connections at a fixed 1,000/s, other node", svc: "ka-remote", pod: "pod2a", newConn: true, fromConnect: true, rate: 1000,
		dataplanes: kubeProxyAndNodegress},
	{key: "fixednc5k-remote", title: "new connections at a fixed 5,000/s, other node", svc: "ka-remote", pod: "pod2a", newConn: true, fromConnect: true, rate: 5000,
		dataplanes: kubeProxyAndNodegress},
	{key: "fixednc10k-remote", title: "new connections at a fixed 10,000/s, other node", svc: "ka-remote", pod: "pod2a", newConn: true, fromConnect: true, rate: 10000,
		dataplanes: kubeProxyAndNodegress},
	// Direct server return: the same loads to a Service annotated for it,
	// on a backend of its own. kube-proxy ignores the annotation and
	// SNATs as ever: its cells are its usual path to another node.
	{key: "dsr-keepalive-remote", title: "keep-alive, other node, DSR", svc: "dsr-remote", pod: dsrBackend,
		dataplanes: kubeProxyAndNodegress, verify: verifyDSR},
	{key: "dsr-newconn-remote", title: "new connection per request, other node, DSR", svc: "dsr-remote", pod: dsrBackend, newConn: true,
		dataplanes: kubeProxyAndNodegress, baseline: "newconn-remote", verify: verifyDSR},
	{key: "dsr-connect-remote", title: "new connection per request from connect(), other node, DSR", svc: "dsr-remote", pod: dsrBackend, newConn: true, fromConnect: true,
		dataplanes: kubeProxyAndNodegress, verify: verifyDSR},
	{key: "dsr-fixednc1k-remote", title: "new connections at a fixed 1,000/s, other node, DSR", svc: "dsr-remote", pod: dsrBackend, newConn: true, fromConnect: true, rate: 1000,
		dataplanes: kubeProxyAndNodegress, verify: verifyDSR},
	{key: "dsr-fixednc5k-remote", title: "new connections at a fixed 5,000/s, other node, DSR", svc: "dsr-remote", pod: dsrBackend, newConn: true, fromConnect: true, rate: 5000,
		dataplanes: kubeProxyAndNodegress, verify: verifyDSR},
	{key: "dsr-fixednc10k-remote", title: "new connections at a fixed 10,000/s, other node, DSR", svc: "dsr-remote", pod: dsrBackend, newConn: true, fromConnect: true, rate: 10000,
		dataplanes: kubeProxyAndNodegress, verify: verifyDSR},
}

// kubeProxyAndNodegress are the dataplanes with a NodePort hop.
var kubeProxyAndNodegress = []*dataplane{dpIptables, dpNftables, dpNodegress}

// The feature rows' backends: nginx pods on node2 that no other load
// reaches, so that each row starts as newconn-remote does, with no
// earlier load's flows to its backend. The per-load flush clears the
// kernel's conntrack and the backends' TIME_WAIT sockets, but not
// nodegress's own flow maps: there the SNAT ports of an earlier load's
// closed flows to the same backend stay reserved for the backend's
// TIME_WAIT, and a second load to pod2a within seconds ran out of ports
// and lost SYNs, measuring that instead of the feature.
var (
	// affinityBackends are the pods behind the ClientIP affinity
	// Service; whichever the first connection picks, the path is
	// newconn-remote's.
	affinityBackends = []string{"pod2c", "pod2d", "pod2e"}
	// maglevBackend is the only pod behind the Maglev Service.
	maglevBackend = "pod2b"
	// dsrBackend is the only pod behind the DSR Service.
	dsrBackend = "pod2f"
)

// l4Env is the state of one L4 run.
type l4Env struct {
	t   *testing.T
	s   settings
	reg *benchkit.Registry
	dir string
	// work is a short directory (unix socket paths are limited) for the
	// agents' sockets and pin directories.
	work string

	tp     *netns.Topology
	cp     *kube.ControlPlane
	client kubernetes.Interface

	kubeProxy, nodegress, podserver, load string

	// nodePorts of the benchmark's Services by name.
	mu        sync.Mutex
	nodePorts map[string]int32
	extras    int
	// phase counts started dataplane phases (pin directories, logs).
	phase atomic.Int32

	// res collects every sample: res[metric][dataplane].
	res map[string]map[string][]float64
	// notes end up under the table.
	notes []string
	// loadStart is /proc/loadavg when the run began.
	loadStart string
	// attached says where the agents' datapath ran on ext0, as seen once
	// they were ready (--xdp-mode auto picks per device).
	attached atomic.Value
}

// TestL4 compares the NodePort hop of kube-proxy (iptables, nftables)
// with nodegress's datapath on a two-node namespace cluster and writes a
// Markdown table and an SVG chart under results/.
func TestL4(t *testing.T) {
	s := loadSettings(t)
	if os.Getenv("BENCH_DURATION") == "" {
		// 12 phases of 6 loads each; 3 s per load keeps the suite
		// under ten minutes and still gives every rate ~10^5 requests.
		s.duration = 3 * time.Second
	}
	if !l4Selected(s) {
		t.Skipf("BENCH_FILTER %q selects no L4 row (rows: %s; dataplanes: routing, iptables, nftables, nodegress)",
			s.filter, strings.Join(l4Rows(), ", "))
	}
	for _, tool := range []string{"taskset", "wrk", "nginx", "iptables", "nft", "conntrack", "ip", "ethtool"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: run scripts/install-bench-deps.sh (make bench does)", tool)
		}
	}
	netns.RequirePrivileged(t)
	// The harness's session holds the API server and etcd too: give it
	// the priority every benchmark process gets (see benchkit.Priority),
	// so that other work on the machine slows neither the object
	// creation nor the dataplanes' syncs.
	_ = os.WriteFile("/proc/self/autogroup", []byte(strconv.Itoa(benchkit.Priority)), 0)
	began := time.Now()
	e := &l4Env{t: t, s: s, reg: s.registry(), dir: filepath.Join(s.rundir, "l4"),
		nodePorts: map[string]int32{}, res: map[string]map[string][]float64{}, loadStart: loadAvg()}
	if err := os.MkdirAll(e.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var err error
	if e.work, err = os.MkdirTemp("", "ngl4-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(e.work) })
	e.kubeProxy = filepath.Join(kube.BinDir(t), "kube-proxy")
	e.nodegress = harness.Nodegress(t)
	e.podserver = harness.Podserver(t)
	e.load = benchBinary(t, e.dir, "BENCHLOAD_BIN", "benchload")

	e.setup()
	ctx := t.Context()

	// First-packet latency with only the benchmark's own Services, in
	// alternating rounds as every other row: one pass in a fixed order
	// measured the harness warming up as much as the dataplanes.
	if e.any("firstpacket1") {
		for round := 1; round <= s.rounds; round++ {
			for _, dp := range []*dataplane{dpIptables, dpNodegress, dpNftables, dpNodegress} {
				if e.s.match("firstpacket1/" + dp.key) {
					e.run(ctx, dp, readyTimeout, func([]*benchkit.Proc) { e.firstPacket(ctx, dp, "firstpacket1") })
				}
			}
		}
	}

	e.addExtras(ctx, scaleLevels[1])
	// The floor: the same loads straight to the pods.
	if e.anyLoad(dpRouting) {
		e.run(ctx, dpRouting, readyTimeout, func([]*benchkit.Proc) { e.loads(ctx, dpRouting) })
	}
	// Rounds alternate the dataplanes so that slow drifts of a shared
	// machine spread over all of them.
	for round := 1; round <= s.rounds; round++ {
		for _, dp := range []*dataplane{dpIptables, dpNodegress, dpNftables, dpNodegress} {
			if !e.anyLoad(dp) && !e.s.match("firstpacket1k/"+dp.key) && !e.s.match("epchange/"+dp.key) {
				continue
			}
			fmt.Printf("\n== round %d/%d: %s (%d extra services)\n", round, s.rounds, dp.title, e.extras)
			e.run(ctx, dp, readyTimeout, func(procs []*benchkit.Proc) {
				e.loads(ctx, dp)
				if e.s.match("firstpacket1k/" + dp.key) {
					e.firstPacket(ctx, dp, "firstpacket1k")
				}
				if e.s.match("epchange/" + dp.key) {
					e.endpointChanges(ctx, dp)
				}
			})
		}
	}

	if e.any("scale10k") {
		e.addExtras(ctx, scaleLevels[2])
		for _, dp := range []*dataplane{dpIptables, dpNodegress, dpNftables} {
			if e.s.match("scale10k/" + dp.key) {
				e.scale(ctx, dp)
			}
		}
	}

	report := e.report(time.Since(began))
	base := filepath.Join(s.results, "l4-"+stamp())
	if err := os.WriteFile(base+".md", []byte(report), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(base+".svg", []byte(e.chart()), 0o644); err != nil {
		t.Fatal(err)
	}
	if abs, err := filepath.Abs(base); err == nil {
		base = abs
	}
	fmt.Printf("\nreport written to %s.md, chart to %s.svg\n", base, base)
}

// l4Rows are the row names BENCH_FILTER selects from, with a dataplane:
// "keepalive-remote/nodegress".
func l4Rows() []string {
	var rows []string
	for _, l := range l4Loads {
		rows = append(rows, l.key)
	}
	return append(rows, "firstpacket1", "firstpacket1k", "epchange", "scale10k")
}

func l4Selected(s settings) bool {
	for _, dp := range l4Dataplanes {
		for _, l := range l4Loads {
			if loadSelected(s, l, dp) {
				return true
			}
		}
		for _, r := range []string{"firstpacket1", "firstpacket1k", "epchange", "scale10k"} {
			if s.match(r + "/" + dp.key) {
				return true
			}
		}
	}
	return false
}

// loadSelected tells whether load l runs in dp's phases: the filter
// selects it there, or a load that l is the baseline of.
func loadSelected(s settings, l l4Load, dp *dataplane) bool {
	if !l.on(dp) {
		return false
	}
	if s.match(l.key + "/" + dp.key) {
		return true
	}
	for _, o := range l4Loads {
		if o.baseline == l.key && o.on(dp) && s.match(o.key+"/"+dp.key) {
			return true
		}
	}
	return false
}

// any tells whether the filter selects row for some dataplane.
func (e *l4Env) any(row string) bool {
	for _, dp := range l4Dataplanes {
		if e.s.match(row + "/" + dp.key) {
			return true
		}
	}
	return false
}

func (e *l4Env) anyLoad(dp *dataplane) bool {
	for _, l := range l4Loads {
		if loadSelected(e.s, l, dp) {
			return true
		}
	}
	return false
}

// setup builds the cluster: namespaces, control plane, Nodes, backends
// and the benchmark's Services.
func (e *l4Env) setup() {
	t := e.t
	// node2's pods beyond pod2a and pod2b are the ClientIP affinity
	// Service's backends.
	tp := netns.NodesWith(t, benchChecksums(), 2, 3+len(affinityBackends))
	e.tp = tp
	all := []*netns.NS{tp.Switch, tp.Client.NS}
	for _, n := range tp.Nodes {
		all = append(all, n.NS)
	}
	for _, p := range tp.Pods() {
		all = append(all, p.NS)
	}
	for _, ns := range all {
		e.remember("netns", ns.Name)
	}
	benchkit.AllowTargets(netns.WireNet, podNet)
	tp.Switch.MustIP("addr", "add", netip.PrefixFrom(apiAddr, netns.WireNet.Bits()).String(), "dev", "br0")
	// The routing-only floor sends to pod addresses through node1, as
	// NodePort traffic enters.
	tp.Client.MustIP("route", "add", podNet.String(), "via", tp.Nodes[0].Addr.String())

	start := time.Now()
	e.cp = kube.Start(t, kube.InNetns(tp.Switch), kube.ListenOn(apiAddr),
		kube.WithAPIServerArgs("--service-node-port-range="+nodePortRange))
	cfg := rest.CopyConfig(e.cp.Config)
	// Thousands of objects are created in bursts.
	cfg.QPS, cfg.Burst = 5000, 5000
	var err error
	if e.client, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := e.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: l4Namespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, n := range tp.Nodes {
		if err := e.createNode(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	e.startBackends()
	on := func(pods ...string) []endpoint {
		var eps []endpoint
		for _, name := range pods {
			p := tp.Pod(name)
			eps = append(eps, endpoint{p.Addr, p.Node.Name})
		}
		return eps
	}
	for _, svc := range []struct {
		name  string
		proto corev1.Protocol
		port  int32
		eps   []endpoint
		mod   func(*corev1.Service)
	}{
		{"ka-local", corev1.ProtocolTCP, 80, on("pod1a"), nil},
		{"ka-remote", corev1.ProtocolTCP, 80, on("pod2a"), nil},
		{"udp-local", corev1.ProtocolUDP, harness.PodUDPPort, on("pod1a"), nil},
		{"udp-remote", corev1.ProtocolUDP, harness.PodUDPPort, on("pod2a"), nil},
		{"flip", corev1.ProtocolTCP, harness.PodHTTPPort, on("pod1b"), nil},
		{"probe", corev1.ProtocolTCP, 80, on("pod2a"), nil},
		// The API server defaults the timeout to 3 hours, which
		// every dataplane reads.
		{"aff-remote", corev1.ProtocolTCP, 80, on(affinityBackends...), func(s *corev1.Service) {
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		}},
		// ka-remote with Maglev (on its own backend), for nodegress's
		// row only: kube-proxy ignores the annotation.
		{"mag-remote", corev1.ProtocolTCP, 80, on(maglevBackend), func(s *corev1.Service) {
			s.Annotations = map[string]string{controller.AnnotationLBAlgorithm: "maglev"}
		}},
		{"dsr-remote", corev1.ProtocolTCP, 80, on(dsrBackend), func(s *corev1.Service) {
			s.Annotations = map[string]string{controller.AnnotationForwardingMode: "dsr"}
		}},
	} {
		np, err := e.createService(ctx, svc.name, svc.proto, svc.port, svc.eps, svc.mod)
		if err != nil {
			t.Fatal(err)
		}
		e.nodePorts[svc.name] = np
	}
	fmt.Printf("cluster ready in %s: API server at %s, NodePorts %v\n", time.Since(start).Round(time.Millisecond), e.cp.URL, e.nodePorts)
}

// remember appends line to a file of the run directory that
// scripts/bench.sh reads to clean up after a harness that died (a test
// timeout runs no cleanups): network namespaces, bpffs mounts.
func (e *l4Env) remember(file, line string) {
	f, err := os.OpenFile(filepath.Join(e.s.rundir, file), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	if _, err := fmt.Fprintln(f, line); err != nil {
		e.t.Fatal(err)
	}
}

type endpoint struct {
	addr netip.Addr
	node string
}

func (e *l4Env) createNode(ctx context.Context, n *netns.Node) error {
	api := e.client.CoreV1().Nodes()
	node, err := api.Create(ctx, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: map[string]string{"kubernetes.io/hostname": n.Name}},
		Spec:       corev1.NodeSpec{PodCIDR: n.PodCIDR.String(), PodCIDRs: []string{n.PodCIDR.String()}},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create node %s: %w", n.Name, err)
	}
	// kubelet would report these; kube-proxy takes its node IP from them.
	node.Status.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: n.Addr.String()},
		{Type: corev1.NodeHostName, Address: n.Name},
	}
	node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
	if _, err := api.UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("status of node %s: %w", n.Name, err)
	}
	return nil
}

// createService creates a NodePort Service without selector and its
// EndpointSlice (no controller-manager runs), and returns the allocated
// NodePort. mod, when not nil, adds to the Service before it is created.
func (e *l4Env) createService(ctx context.Context, name string, proto corev1.Protocol, port int32, eps []endpoint, mod func(*corev1.Service)) (int32, error) {
	return e.createServiceOn(ctx, name, proto, port, 0, eps, mod)
}

// createServiceOn is createService with a chosen NodePort (0: allocated).
func (e *l4Env) createServiceOn(ctx context.Context, name string, proto corev1.Protocol, port, nodePort int32, eps []endpoint, mod func(*corev1.Service)) (int32, error) {
	obj := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{
			Type:  corev1.ServiceTypeNodePort,
			Ports: []corev1.ServicePort{{Port: port, Protocol: proto, TargetPort: intstr.FromInt32(port), NodePort: nodePort}},
		},
	}
	if mod != nil {
		mod(obj)
	}
	svc, err := e.client.CoreV1().Services(l4Namespace).Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		return 0, fmt.Errorf("create service %s: %w", name, err)
	}
	if _, err := e.client.DiscoveryV1().EndpointSlices(l4Namespace).Create(ctx, slice(name, proto, port, eps), metav1.CreateOptions{}); err != nil {
		return 0, fmt.Errorf("create endpointslice of %s: %w", name, err)
	}
	return svc.Spec.Ports[0].NodePort, nil
}

func slice(svc string, proto corev1.Protocol, port int32, eps []endpoint) *discoveryv1.EndpointSlice {
	ready, portName := true, ""
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: svc + "-1", Labels: map[string]string{
			discoveryv1.LabelServiceName: svc,
			discoveryv1.LabelManagedBy:   "nodegress-bench",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &port, Protocol: &proto}},
	}
	for _, ep := range eps {
		node := ep.node
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{ep.addr.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			NodeName:   &node,
		})
	}
	return es
}

// addExtras grows the extra NodePort Services to n, each with
// endpointsPerExtra endpoints spread over both nodes (addresses in the
// pod ranges that no pod answers on: no traffic goes there), then
// recreates the probe Service so it is the newest.
func (e *l4Env) addExtras(ctx context.Context, n int) {
	t := e.t
	if n <= e.extras {
		return
	}
	start := time.Now()
	if err := e.client.CoreV1().Services(l4Namespace).Delete(ctx, "probe", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := e.client.DiscoveryV1().EndpointSlices(l4Namespace).Delete(ctx, "probe-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// The API server and etcd inherit the harness's core; creating
	// thousands of objects goes faster on both (nothing is measured
	// meanwhile).
	restore := widenControlPlane()
	defer restore()
	// Chosen NodePorts spare the API server's allocator a random search
	// in a filling range; the benchmark's own Services keep theirs.
	used := map[int32]bool{}
	e.mu.Lock()
	for _, np := range e.nodePorts {
		used[np] = true
	}
	e.mu.Unlock()
	var ports []int32
	for p := int32(nodePortMin); len(ports) < n; p++ {
		if !used[p] {
			ports = append(ports, p)
		}
	}
	jobs := make(chan int)
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range jobs {
				eps := make([]endpoint, endpointsPerExtra)
				for j := range eps {
					node := e.tp.Nodes[j%2]
					a := node.PodCIDR.Addr().As4()
					a[3] = byte(20 + (i*endpointsPerExtra+j)%230)
					eps[j] = endpoint{netip.AddrFrom4(a), node.Name}
				}
				if _, err := e.createServiceOn(ctx, fmt.Sprintf("x-%05d", i), corev1.ProtocolTCP, 8080, ports[i], eps, nil); err != nil {
					firstErr.CompareAndSwap(nil, err)
				}
			}
		})
	}
	for i := e.extras; i < n; i++ {
		if firstErr.Load() != nil {
			break
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		t.Fatal(err)
	}
	e.extras = n
	probe := e.tp.Pod("pod2a")
	np, err := e.createService(ctx, "probe", corev1.ProtocolTCP, 80, []endpoint{{probe.Addr, probe.Node.Name}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.mu.Lock()
	e.nodePorts["probe"] = np
	e.mu.Unlock()
	fmt.Printf("\n%d extra NodePort services (%d endpoints) created in %s; probe service on NodePort %d\n",
		n, n*endpointsPerExtra, time.Since(start).Round(time.Millisecond), np)
}

// widenControlPlane lets the harness's kube-apiserver and etcd (its
// children) run on both cores, and returns the function that pins them
// back to the harness's own cores.
func widenControlPlane() func() {
	var mine, both unix.CPUSet
	if err := unix.SchedGetaffinity(0, &mine); err != nil {
		return func() {}
	}
	both.Set(benchkit.LoadCPU)
	both.Set(benchkit.SUTCPU)
	setControlPlaneAffinity(&both)
	return func() { setControlPlaneAffinity(&mine) }
}

// setControlPlaneAffinity sets the CPUs of every thread of the harness's
// kube-apiserver and etcd.
func setControlPlaneAffinity(set *unix.CPUSet) {
	entries, _ := os.ReadDir("/proc")
	for _, en := range entries {
		if _, err := strconv.Atoi(en.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", en.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		i, j := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if i < 0 || j < i {
			continue
		}
		comm, rest := s[i+1:j], strings.Fields(s[j+1:])
		if len(rest) < 2 || rest[1] != strconv.Itoa(os.Getpid()) || (comm != "kube-apiserver" && comm != "etcd") {
			continue
		}
		tasks, _ := os.ReadDir(filepath.Join("/proc", en.Name(), "task"))
		for _, task := range tasks {
			if tid, err := strconv.Atoi(task.Name()); err == nil {
				_ = unix.SchedSetaffinity(tid, set)
			}
		}
	}
}

// startBackends runs nginx (port 80) in pod1a and in every pod of node2
// (pod2a, and the feature rows' backends, idle but for them) and podserver
// (HTTP 8080, UDP 9090) in every pod, all pinned to benchkit.SUTCPU:
// the load and the dataplanes' control processes run on LoadCPU.
func (e *l4Env) startBackends() {
	t := e.t
	for _, p := range e.tp.Pods() {
		dir := filepath.Join(e.dir, p.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		ps, err := benchkit.Start(e.reg, "podserver-"+p.Name, benchkit.SUTCPU, []string{"GOMAXPROCS=1"}, filepath.Join(dir, "podserver.log"),
			benchkit.InNetns(p.NS.Name, e.podserver, "--name", p.Name,
				"--http", ":"+strconv.Itoa(harness.PodHTTPPort), "--h2c", ":"+strconv.Itoa(harness.PodH2CPort),
				"--udp", ":"+strconv.Itoa(harness.PodUDPPort))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(ps.Stop)
		ports := []int{harness.PodHTTPPort}
		if p.Name == "pod1a" || p.Node == e.tp.Nodes[1] {
			conf := filepath.Join(dir, "nginx.conf")
			if err := benchkit.Render("l4/backend-nginx.conf", conf, map[string]string{"RUNDIR": dir}); err != nil {
				t.Fatal(err)
			}
			ng, err := benchkit.Start(e.reg, "nginx-"+p.Name, benchkit.SUTCPU, nil, filepath.Join(dir, "nginx.log"),
				benchkit.InNetns(p.NS.Name, "nginx", "-c", conf, "-p", dir, "-e", filepath.Join(dir, "nginx.error.log"), "-g", "daemon off;")...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(ng.Stop)
			ports = append(ports, 80)
		}
		for _, port := range ports {
			if err := waitDial(p.NS, netip.AddrPortFrom(p.Addr, uint16(port)), 10*time.Second); err != nil {
				t.Fatalf("backend in %s: %v", p.Name, err)
			}
		}
	}
}

func waitDial(ns *netns.NS, addr netip.AddrPort, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		c, err := ns.DialContext(ctx, "tcp", addr.String())
		cancel()
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not accepting connections after %s: %w", addr, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// run is one phase: start dp on every node, wait until it serves every
// Service, call fn, then stop it and flush connection tracking in every
// namespace, whatever happened.
func (e *l4Env) run(ctx context.Context, dp *dataplane, timeout time.Duration, fn func(procs []*benchkit.Proc)) {
	if err := e.tryRun(ctx, dp, timeout, fn, nil); err != nil {
		e.t.Fatalf("%s: %v", dp.title, err)
	}
}

// tryRun is run that returns the error of a dataplane that does not serve
// within timeout, after calling failed (if not nil) with its processes.
func (e *l4Env) tryRun(ctx context.Context, dp *dataplane, timeout time.Duration, fn, failed func(procs []*benchkit.Proc)) error {
	t := e.t
	e.phase.Add(1)
	var procs []*benchkit.Proc
	if dp.start != nil {
		var err error
		procs, err = dp.start(e)
		if err != nil {
			t.Fatalf("start %s: %v", dp.title, err)
		}
	}
	defer func() {
		if dp.stop != nil {
			if err := dp.stop(e, procs); err != nil {
				t.Fatalf("stop %s: %v", dp.title, err)
			}
		}
		e.flushConntrack()
	}()
	if err := e.waitServing(ctx, dp, procs, timeout); err != nil {
		if failed != nil {
			failed(procs)
		}
		return err
	}
	fn(procs)
	return nil
}

// waitServing waits until the dataplane reports its first sync on every
// node and every benchmark Service answers from the client.
func (e *l4Env) waitServing(ctx context.Context, dp *dataplane, procs []*benchkit.Proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		last = nil
		for i, p := range procs {
			if p.Exited() {
				return fmt.Errorf("%s exited:\n%s", p.Name, p.Tail(30))
			}
			if err := dp.ready(e, i, p); err != nil {
				last = err
			}
		}
		if last == nil {
			last = e.checkServices(ctx, dp)
		}
		if last == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("not serving after %s: %w", timeout, last)
}

// target is where a load or check for svc (backed by pod) goes through dp.
func (e *l4Env) target(dp *dataplane, svc, pod string) netip.AddrPort {
	if dp == dpRouting {
		port := uint16(80)
		if strings.HasPrefix(svc, "udp") {
			port = harness.PodUDPPort
		} else if svc == "flip" {
			port = harness.PodHTTPPort
		}
		return netip.AddrPortFrom(e.tp.Pod(pod).Addr, port)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return netip.AddrPortFrom(e.tp.Nodes[0].Addr, uint16(e.nodePorts[svc]))
}

func (e *l4Env) checkServices(ctx context.Context, dp *dataplane) error {
	for _, c := range []struct{ svc, pod string }{{"ka-local", "pod1a"}, {"ka-remote", "pod2a"}, {"probe", "pod2a"}} {
		if _, err := firstByte(ctx, e.tp.Client.NS, e.target(dp, c.svc, c.pod), time.Second); err != nil {
			return fmt.Errorf("service %s: %w", c.svc, err)
		}
	}
	for _, c := range []struct{ svc, pod string }{{"udp-local", "pod1a"}, {"udp-remote", "pod2a"}} {
		ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		r, err := harness.UDPRequest(ctx, e.tp.Client.NS, e.target(dp, c.svc, c.pod), "ping")
		cancel()
		if err != nil {
			return fmt.Errorf("service %s: %w", c.svc, err)
		}
		if r.Pod != c.pod {
			return fmt.Errorf("service %s answered by %s, want %s", c.svc, r.Pod, c.pod)
		}
	}
	if dp != dpRouting {
		for _, svc := range []string{"aff-remote", "mag-remote"} {
			if _, err := firstByte(ctx, e.tp.Client.NS, e.target(dp, svc, ""), time.Second); err != nil {
				return fmt.Errorf("service %s: %w", svc, err)
			}
		}
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if _, err := harness.HTTPGet(ctx, e.tp.Client.NS, e.target(dp, "flip", "")); err != nil {
			return fmt.Errorf("service flip: %w", err)
		}
	}
	return nil
}

var getRequest = []byte("GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")

// firstByte opens a fresh connection from ns, sends one GET and returns
// the time from the start of the connect to the first byte of the answer.
func firstByte(ctx context.Context, ns *netns.NS, addr netip.AddrPort, timeout time.Duration) (time.Duration, error) {
	var took time.Duration
	err := ns.Do(func() error {
		var err error
		took, err = firstByteHere(ctx, addr, timeout)
		return err
	})
	return took, err
}

// firstByteHere is firstByte from the calling thread's namespace.
func firstByteHere(ctx context.Context, addr netip.AddrPort, timeout time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t0 := time.Now()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return 0, err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	_ = c.SetDeadline(deadline)
	if _, err := c.Write(getRequest); err != nil {
		return 0, err
	}
	br := bufio.NewReader(c)
	b, err := br.Peek(12)
	if err != nil {
		return 0, err
	}
	took := time.Since(t0)
	if !strings.HasPrefix(string(b), "HTTP/1.1 200") {
		return 0, fmt.Errorf("answer %q", b)
	}
	// Let the server close first, as every load here does.
	_, _ = io.Copy(io.Discard, br)
	return took, nil
}

// record adds one sample of metric for dp.
func (e *l4Env) record(metric string, dp *dataplane, v float64) {
	m := e.res[metric]
	if m == nil {
		m = map[string][]float64{}
		e.res[metric] = m
	}
	m[dp.key] = append(m[dp.key], v)
}

// loads measures every selected load once through dp.
func (e *l4Env) loads(ctx context.Context, dp *dataplane) {
	t := e.t
	// Warm up: code paged in, caches and neighbour entries filled.
	if _, _, err := (benchkit.Wrk{URL: "http://" + e.target(dp, "ka-remote", "pod2a").String() + "/", Threads: 1,
		Connections: l4Connections, Duration: time.Second, Netns: e.tp.Client.Name}).Run(ctx, benchkit.LoadCPU); err != nil {
		t.Fatalf("%s: warm up: %v", dp.title, err)
	}
	// rates of this phase, for the loads compared with a baseline.
	rates := map[string]float64{}
	for _, l := range l4Loads {
		if !loadSelected(e.s, l, dp) {
			continue
		}
		addr := e.target(dp, l.svc, l.pod)
		before, _ := benchkit.ReadCPUStats(benchkit.LoadCPU, benchkit.SUTCPU)
		synBefore := e.clientSynRetrans()
		var r benchkit.Result
		var out string
		var err error
		switch {
		case l.udp:
			r, out, err = benchkit.UDPRR{Bin: e.load, Addr: addr.String(), Connections: l4Connections,
				Duration: e.s.duration, Netns: e.tp.Client.Name}.Run(ctx, benchkit.LoadCPU)
		case l.fromConnect:
			conns := l4Connections
			if l.rate > 0 {
				// Users arrive on their own: a stalled connection holds
				// up only itself.
				conns = fixedRateMaxInFlight
			}
			r, out, err = benchkit.HTTPRR{Bin: e.load, Addr: addr.String(), NewConn: l.newConn, Connections: conns,
				Duration: e.s.duration, Rate: l.rate, Netns: e.tp.Client.Name}.Run(ctx, benchkit.LoadCPU)
		default:
			w := benchkit.Wrk{URL: "http://" + addr.String() + "/", Threads: 1, Connections: l4Connections,
				Duration: e.s.duration, Netns: e.tp.Client.Name}
			if l.newConn {
				w.Headers = []string{"Connection: close"}
			}
			r, out, err = w.Run(ctx, benchkit.LoadCPU)
		}
		after, _ := benchkit.ReadCPUStats(benchkit.LoadCPU, benchkit.SUTCPU)
		synRetrans := e.clientSynRetrans() - synBefore
		_ = os.WriteFile(filepath.Join(e.dir, fmt.Sprintf("%s-%s-%d.txt", l.key, dp.key, e.phase.Load())), []byte(out), 0o644)
		if err != nil {
			t.Errorf("%s %s: %v", l.key, dp.title, err)
			continue
		}
		cpu := after.Sub(before)
		n := float64(r.Requests)
		if n == 0 {
			t.Errorf("%s %s: no request completed", l.key, dp.title)
			continue
		}
		if l.verify != nil {
			if err := l.verify(e, dp); err != nil {
				t.Errorf("%s %s: the row's feature was not in effect: %v", l.key, dp.title, err)
				continue
			}
		}
		rates[l.key] = r.Rate
		if base, ok := rates[l.baseline]; ok && base > 0 {
			e.record(l.key+"/vsbase", dp, r.Rate/base)
			if dp == dpIptables {
				e.noteNodePortOrder(l)
			}
		}
		softirq := float64(cpu.Softirq) / benchkit.ClockTick / n * 1e6
		busy := float64(cpu.Busy) / benchkit.ClockTick / n * 1e6
		e.record(l.key+"/rate", dp, r.Rate)
		e.record(l.key+"/p50", dp, float64(r.P50))
		e.record(l.key+"/p99", dp, float64(r.P99))
		e.record(l.key+"/softirq", dp, softirq)
		e.record(l.key+"/busy", dp, busy)
		e.record(l.key+"/errors", dp, float64(r.Errors))
		if l.newConn {
			// A retransmitted SYN delays its connection: milliseconds
			// after a refusal, a second after a loss.
			e.record(l.key+"/synretrans", dp, float64(synRetrans)/n*1000)
		}
		if l.rate > 0 && r.Rate < 0.95*l.rate {
			e.notes = append(e.notes, fmt.Sprintf("%s %s: %s/s achieved of the %s/s scheduled", l.key, dp.title,
				benchkit.Rate(r.Rate), benchkit.Rate(l.rate)))
		}
		if r.ErrorShare() > 0.001 {
			e.notes = append(e.notes, fmt.Sprintf("%s %s: %d of %d requests failed in a round (%s)", l.key, dp.title,
				r.Errors, r.Requests+r.Errors, firstNonEmpty(r.LastError, "see the load tool's output in the run directory")))
		}
		fmt.Printf("%-17s %-30s %8s/s  p50 %-9s p99 %-9s softirq %5.2f s/1M  all CPU %5.2f s/1M  errors %d  SYN retransmits %d\n",
			l.key, dp.title, benchkit.Rate(r.Rate), benchkit.Latency(r.P50), benchkit.Latency(r.P99), softirq, busy, r.Errors, synRetrans)
		// Let the sockets of the last run drain, then clear what they
		// left: every load starts from the same state, whatever ran
		// before it in the phase.
		time.Sleep(300 * time.Millisecond)
		e.flushConntrack()
	}
}

// clientSynRetrans reads the client namespace's count of retransmitted
// SYNs (TcpExt TCPSynRetrans); 0 when it cannot be read.
func (e *l4Env) clientSynRetrans() int64 {
	out, err := e.tp.Client.NS.Exec("cat", "/proc/net/netstat")
	if err != nil {
		return 0
	}
	return netstatValue(out, "TcpExt", "TCPSynRetrans")
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// firstPacket times firstPacketConns fresh connections, one after the
// other, to the newest Service.
func (e *l4Env) firstPacket(ctx context.Context, dp *dataplane, row string) {
	addr := e.target(dp, "probe", "pod2a")
	var lat []time.Duration
	var failed int
	var lastErr error
	_ = e.tp.Client.Do(func() error {
		for range firstPacketConns {
			d, err := firstByteHere(ctx, addr, firstPacketTimeout)
			if err != nil {
				// A lost SYN costs the client a retransmission
				// timeout: count the connection at the bound, as a
				// user waiting would see at least that.
				failed++
				lastErr = err
				d = firstPacketTimeout
			}
			lat = append(lat, d)
		}
		return nil
	})
	if failed > 0 {
		e.notes = append(e.notes, fmt.Sprintf("%s %s: %d of %d fresh connections got no answer within %s (%v); counted at %s in the percentiles",
			row, dp.title, failed, firstPacketConns, firstPacketTimeout, lastErr, firstPacketTimeout))
	}
	p50, p99 := percentile(lat, 0.5), percentile(lat, 0.99)
	e.record(row+"/p50", dp, float64(p50))
	e.record(row+"/p99", dp, float64(p99))
	fmt.Printf("%-17s %-30s p50 %-9s p99 %-9s (%d fresh connections, %d failed, %d NodePort services)\n",
		row, dp.title, benchkit.Latency(p50), benchkit.Latency(p99), len(lat), failed, e.services())
}

// services is how many NodePort Services exist.
func (e *l4Env) services() int { return e.extras + len(e.nodePorts) }

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	xs := append([]time.Duration(nil), ds...)
	for i := 1; i < len(xs); i++ {
		for j := i; j > 0 && xs[j] < xs[j-1]; j-- {
			xs[j], xs[j-1] = xs[j-1], xs[j]
		}
	}
	return xs[min(len(xs)-1, int(p*float64(len(xs))))]
}

// endpointChanges moves the flip Service's only endpoint between pod1b
// and pod2b and times each change from the API update to the first
// fresh connection answered by the new pod.
func (e *l4Env) endpointChanges(ctx context.Context, dp *dataplane) {
	t := e.t
	addr := e.target(dp, "flip", "")
	api := e.client.DiscoveryV1().EndpointSlices(l4Namespace)
	for range flipsPerPhase {
		cur, err := api.Get(ctx, "flip-1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		to := e.tp.Pod("pod2b")
		if cur.Endpoints[0].Addresses[0] == to.Addr.String() {
			to = e.tp.Pod("pod1b")
		}
		next := slice("flip", corev1.ProtocolTCP, harness.PodHTTPPort, []endpoint{{to.Addr, to.Node.Name}})
		next.ResourceVersion = cur.ResourceVersion
		t0 := time.Now()
		if _, err := api.Update(ctx, next, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		var took time.Duration
		for deadline := t0.Add(15 * time.Second); time.Now().Before(deadline); {
			rctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			r, err := harness.HTTPGet(rctx, e.tp.Client.NS, addr)
			cancel()
			if err == nil && r.Pod == to.Name {
				took = time.Since(t0)
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
		if took == 0 {
			t.Errorf("epchange %s: %s still not answering 15s after the EndpointSlice update", dp.title, to.Name)
			continue
		}
		e.record("epchange/ms", dp, float64(took))
		fmt.Printf("%-17s %-30s %s (to %s)\n", "epchange", dp.title, benchkit.Latency(took), to.Name)
		// kube-proxy's minimum sync interval is 1 s: the next change
		// starts from a quiet dataplane, like a change on a calm cluster.
		time.Sleep(1500 * time.Millisecond)
	}
}

// scale starts dp with 10,000 extra Services and records how long it
// takes to serve the newest, its first-packet latency, and the memory of
// node1's dataplane process.
func (e *l4Env) scale(ctx context.Context, dp *dataplane) {
	fmt.Printf("\n== %s with %d NodePort services, %d endpoints\n", dp.title, e.services(), e.extras*endpointsPerExtra)
	t0 := time.Now()
	err := e.tryRun(ctx, dp, scaleReadyTimeout, func(procs []*benchkit.Proc) {
		took := time.Since(t0)
		e.record("scale10k/ready", dp, float64(took))
		// Let the process settle: the first sync's garbage collected,
		// node2's dataplane done too.
		time.Sleep(3 * time.Second)
		rss := e.recordRSS(dp, procs[0])
		fmt.Printf("%-17s %-30s serving after %s, RSS %s\n", "scale10k", dp.title, took.Round(time.Millisecond), mib(rss))
		e.firstPacket(ctx, dp, "firstpacket10k")
	}, func(procs []*benchkit.Proc) {
		// Still syncing: its memory now is what it holds while
		// programming the rules.
		rss := e.recordRSS(dp, procs[0])
		e.record("scale10k/ready", dp, math.Inf(1))
		e.notes = append(e.notes, fmt.Sprintf("%s had not served the newest of %d Services %s after it started (RSS %s then); "+
			"its log is in the run directory", dp.title, e.services(), scaleReadyTimeout, mib(rss)))
	})
	if err != nil {
		fmt.Printf("%-17s %-30s %v\n", "scale10k", dp.title, err)
	}
}

func (e *l4Env) recordRSS(dp *dataplane, p *benchkit.Proc) float64 {
	rss, err := benchkit.RSS(p.Pid())
	if err != nil {
		e.t.Errorf("rss of %s: %v", p.Name, err)
		return 0
	}
	e.record("scale10k/rss", dp, float64(rss))
	return float64(rss)
}

func mib(b float64) string { return strconv.FormatFloat(b/(1<<20), 'f', 0, 64) + " MiB" }

// flushConntrack empties the connection tracking table of every
// namespace and closes every TIME_WAIT socket, so that no phase finds the
// previous one's flows: a backend's TIME_WAIT socket for a 4-tuple the
// next dataplane's SNAT picks again answers that SYN with an ACK (the
// client resets and retries) whenever the SYN's timestamp is
// not newer, which depends on the previous phase's traffic, not on the
// dataplane measured.
func (e *l4Env) flushConntrack() {
	var all []*netns.NS
	all = append(all, e.tp.Client.NS, e.tp.Switch)
	for _, n := range e.tp.Nodes {
		all = append(all, n.NS)
	}
	for _, p := range e.tp.Pods() {
		all = append(all, p.NS)
	}
	for _, ns := range all {
		// Exit status 1 with "0 flow entries" is success for conntrack.
		out, err := ns.Exec("conntrack", "-F")
		if err != nil && !strings.Contains(out, "flow entries have been deleted") {
			e.t.Errorf("conntrack -F in %s: %v", ns.Name, err)
		}
		if out, err := ns.Exec("ss", "-K", "-t", "state", "time-wait"); err != nil {
			e.t.Errorf("closing TIME_WAIT sockets in %s: %v: %s", ns.Name, err, out)
		}
	}
}

// kube-proxy.

func kubeProxyStart(mode string) func(e *l4Env) ([]*benchkit.Proc, error) {
	return func(e *l4Env) ([]*benchkit.Proc, error) {
		var procs []*benchkit.Proc
		for _, n := range e.tp.Nodes {
			log := filepath.Join(e.dir, fmt.Sprintf("kube-proxy-%s-%s-%d.log", mode, n.Name, e.phase.Load()))
			p, err := benchkit.Start(e.reg, "kube-proxy-"+n.Name, benchkit.LoadCPU, nil, log,
				benchkit.InNetns(n.NS.Name, e.kubeProxy,
					"--kubeconfig="+e.cp.Kubeconfig,
					"--hostname-override="+n.Name,
					"--proxy-mode="+mode,
					"--cluster-cidr="+podNet.String(),
					"--nodeport-addresses="+netns.WireNet.String(),
					// nf_conntrack_max is global: a namespace cannot set it.
					"--conntrack-max-per-core=0",
					"--metrics-bind-address=127.0.0.1:10249",
					"--healthz-bind-address=127.0.0.1:10256",
					"--v=1",
				)...)
			if err != nil {
				stopAll(procs)
				return nil, err
			}
			procs = append(procs, p)
		}
		return procs, nil
	}
}

// kubeProxyReady asks kube-proxy's health endpoint, which answers 200
// once the first sync of the rules is done.
func kubeProxyReady(e *l4Env, i int, p *benchkit.Proc) error {
	n := e.tp.Nodes[i]
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DialContext: n.DialContext}}
	defer c.CloseIdleConnections()
	res, err := c.Get("http://127.0.0.1:10256/healthz")
	if err != nil {
		return fmt.Errorf("%s healthz: %w", p.Name, err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s healthz: %s", p.Name, res.Status)
	}
	return nil
}

// kubeProxyStop stops kube-proxy, runs its --cleanup, and removes the
// (then empty) tables the iptables-nft backend leaves: an empty nat table
// still registers its hooks and keeps connection tracking on for
// everything the node forwards, which would tax the next phase.
func kubeProxyStop(e *l4Env, procs []*benchkit.Proc) error {
	stopAll(procs)
	var errs []error
	for _, n := range e.tp.Nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		out, err := n.Command(ctx, e.kubeProxy, "--cleanup", "--v=0").CombinedOutput()
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("kube-proxy --cleanup on %s: %w\n%s", n.Name, err, out))
		}
		if out, err := n.Exec("nft", "flush", "ruleset"); err != nil {
			errs = append(errs, fmt.Errorf("%w: %s", err, out))
		}
		if err := checkClean(n); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// checkClean verifies that nothing of either dataplane is left on a node:
// no netfilter rules, no XDP or tcx programs on its external device.
func checkClean(n *netns.Node) error {
	out, err := n.Exec("nft", "list", "ruleset")
	if err != nil {
		return err
	}
	if strings.TrimSpace(out) != "" {
		return fmt.Errorf("%s: netfilter rules left:\n%s", n.Name, out)
	}
	mode, err := n.XDPMode(n.Dev)
	if err != nil {
		return err
	}
	in, eg, err := n.TCXPrograms(n.Dev)
	if err != nil {
		return err
	}
	if mode != netns.XDPAttachedNone || in+eg > 0 {
		return fmt.Errorf("%s: programs left on %s: xdp mode %d, tcx %d ingress %d egress", n.Name, n.Dev, mode, in, eg)
	}
	return nil
}

func stopAll(procs []*benchkit.Proc) {
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(p.Stop)
	}
	wg.Wait()
}

// Checks that a feature row measured the feature. Each looks at node1,
// where the NodePort hop happens, for the client's state after the load:
// that a dataplane accepted the Service does not prove it applied the
// field (an annotation misspelt, a field a version ignores).

// verifyAffinity finds the client's address in the dataplane's affinity
// state: kube-proxy iptables' recent lists (one per endpoint, in the
// namespace's /proc/net/xt_recent), kube-proxy nftables' affinity sets,
// nodegress's affinity map.
func verifyAffinity(e *l4Env, dp *dataplane) error {
	n := e.tp.Nodes[0]
	client := e.tp.Client.Addr.String()
	switch dp {
	case dpIptables:
		// A shell for the glob; `ip netns exec` gives it the node's
		// /proc/net.
		out, err := n.Exec("sh", "-c", "cat /proc/net/xt_recent/*")
		if err != nil {
			return fmt.Errorf("recent lists: %w: %s", err, out)
		}
		if !strings.Contains(out, "src="+client+" ") {
			return fmt.Errorf("no recent list holds %s:\n%s", client, out)
		}
	case dpNftables:
		out, err := n.Exec("nft", "list", "table", "ip", "kube-proxy")
		if err != nil {
			return fmt.Errorf("nft: %w: %s", err, out)
		}
		if !nftAffinityHas(out, client) {
			return fmt.Errorf("no affinity set holds %s", client)
		}
	case dpNodegress:
		if c, err := pinnedEntries(e, "affinity"); err != nil || c == 0 {
			return fmt.Errorf("affinity map: %d entries (%v)", c, err)
		}
	default:
		return fmt.Errorf("%s keeps no affinity", dp.title)
	}
	return nil
}

// verifyMaglev checks that nodegress built exactly one Maglev table: the
// annotated Service's, while every other one keeps the default hash.
func verifyMaglev(e *l4Env, dp *dataplane) error {
	if dp != dpNodegress {
		return fmt.Errorf("%s has no Maglev", dp.title)
	}
	if c, err := pinnedEntries(e, "maglev_tables"); err != nil || c != 1 {
		return fmt.Errorf("%d Maglev tables, want 1 (%v)", c, err)
	}
	return nil
}

// verifyDSR checks that nodegress reached the DSR row's backend by direct
// server return: node1 encapsulated, node2 decapsulated. kube-proxy SNATs.
func verifyDSR(e *l4Env, dp *dataplane) error {
	if dp != dpNodegress {
		return nil
	}
	// node2 hands decapsulated packets straight to the pod with
	// --pod-redirect (dsr_decap_peer), else to its routing (dsr_decap).
	for i, reasons := range [][]string{{"fwd_dsr"}, {"dsr_decap", "dsr_decap_peer"}} {
		n := e.tp.Nodes[i]
		bpffs, _ := e.agentPaths(n)
		out, err := n.Exec(e.nodegress, "maps", "--bpffs", bpffs)
		if err != nil {
			return fmt.Errorf("nodegress maps on %s: %w: %s", n.Name, err, out)
		}
		if !countedAny(out, reasons) {
			return fmt.Errorf("%s counted none of %v", n.Name, reasons)
		}
	}
	return nil
}

// countedAny tells whether `nodegress maps` output counted packets under
// one of the reasons.
func countedAny(mapsOut string, reasons []string) bool {
	for _, l := range strings.Split(mapsOut, "\n") {
		f := strings.Fields(l)
		if len(f) == 3 && slices.Contains(reasons, f[0]) && f[1] != "0" {
			return true
		}
	}
	return false
}

// noteNodePortOrder notes where l's Service and its baseline's are in
// node1's KUBE-NODEPORTS chain. kube-proxy iptables matches a new
// connection's first packet against that chain's rules in order (after
// every ClusterIP rule of KUBE-SERVICES), and writes them in a random order
// on every sync, so with 1,000 Services the two rows' costs differ by
// their places as much as by the feature: the note lets readers weigh a
// phase's ratio.
func (e *l4Env) noteNodePortOrder(l l4Load) {
	out, err := e.tp.Nodes[0].Exec("iptables-save", "-t", "nat")
	if err != nil {
		return
	}
	var base string
	for _, o := range l4Loads {
		if o.key == l.baseline {
			base = o.svc
		}
	}
	pos, rules := chainPosition(out, "KUBE-NODEPORTS", l4Namespace+"/"+l.svc)
	basePos, _ := chainPosition(out, "KUBE-NODEPORTS", l4Namespace+"/"+base)
	e.notes = append(e.notes, fmt.Sprintf("%s kube-proxy iptables, phase %d: in KUBE-NODEPORTS (%s rules, matched in order) %s is rule %s, %s's %s rule %s",
		l.key, e.phase.Load(), thousands(rules), l.svc, thousands(pos), l.baseline, base, thousands(basePos)))
}

// pinnedEntries counts the entries of one of node1's agent's pinned maps.
func pinnedEntries(e *l4Env, name string) (int, error) {
	bpffs, _ := e.agentPaths(e.tp.Nodes[0])
	m, err := ebpf.LoadPinnedMap(filepath.Join(bpffs, "maps", name), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return 0, err
	}
	defer m.Close()
	// Keys only: the maps' values (map ids, structs) need no decoding.
	var prev any // nil: the first key
	for c := 0; ; c++ {
		key := make([]byte, m.KeySize())
		if err := m.NextKey(prev, key); err != nil {
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				return c, nil
			}
			return c, err
		}
		prev = key
	}
}

// nodegress.

func (e *l4Env) agentPaths(n *netns.Node) (bpffs, sock string) {
	dir := filepath.Join(e.work, fmt.Sprintf("%s-%d", n.Name, e.phase.Load()))
	return filepath.Join(dir, "bpffs"), filepath.Join(dir, "trace.sock")
}

func xdpMode() string { return cmp.Or(os.Getenv("BENCH_XDP_MODE"), "auto") }

// benchChecksums is the topology's checksum handling: the kernel's default
// offloads, or full checksums from every sender into a node with
// BENCH_CHECKSUMS=full (frames as a hardware NIC receives them, so that
// forced XDP on the veths translates them itself).
func benchChecksums() netns.Checksums {
	if os.Getenv("BENCH_CHECKSUMS") == "full" {
		return netns.FullChecksums
	}
	return netns.OffloadChecksums
}

func checksumsNote(e *l4Env) string {
	if e.tp.Checksums == netns.FullChecksums {
		return "off on every veth that sends into a node (BENCH_CHECKSUMS=full): frames carry complete checksums, as from a hardware NIC"
	}
	return "the kernel's defaults on every veth, as in kind: senders hand on CHECKSUM_PARTIAL frames"
}

func attachedOf(e *l4Env) string {
	if a, ok := e.attached.Load().(string); ok {
		return a
	}
	return "unknown (no agent became ready)"
}

// nodegressStart starts a fresh agent on every node, with its own new
// pin directory: a bpffs mounted in the harness's mount namespace, as
// `ip netns exec` gives the agent a private copy of the mounts.
func nodegressStart(e *l4Env) ([]*benchkit.Proc, error) {
	var procs []*benchkit.Proc
	for _, n := range e.tp.Nodes {
		bpffs, sock := e.agentPaths(n)
		if err := os.MkdirAll(bpffs, 0o700); err != nil {
			return nil, err
		}
		e.remember("mounts", bpffs)
		if err := unix.Mount("bpf", bpffs, "bpf", 0, "mode=0700"); err != nil {
			stopAll(procs)
			return nil, fmt.Errorf("mount bpffs at %s: %w", bpffs, err)
		}
		log := filepath.Join(e.dir, fmt.Sprintf("nodegress-%s-%d.log", n.Name, e.phase.Load()))
		p, err := benchkit.Start(e.reg, "nodegress-"+n.Name, benchkit.LoadCPU, nil, log,
			benchkit.InNetns(n.NS.Name, e.nodegress, "agent",
				"--kubeconfig", e.cp.Kubeconfig,
				"--devices", n.Dev,
				"--node-name", n.Name,
				"--bpffs", bpffs,
				"--trace-socket", sock,
				// The L4 datapath alone: kube-proxy has no Ingress proxy.
				"--ingress=false",
				"--update-status=false",
				"--xdp-mode", xdpMode(),
				// kube-proxy is not running beside it: local pods get
				// their packets straight from tc, as when nodegress
				// replaces kube-proxy (the default there).
				"--pod-redirect", "on",
			)...)
		if err != nil {
			stopAll(procs)
			return nil, err
		}
		procs = append(procs, p)
	}
	return procs, nil
}

// nodegressReady waits for the agent's "initial sync done" log line and
// its XDP program on the external device.
func nodegressReady(e *l4Env, i int, p *benchkit.Proc) error {
	b, err := os.ReadFile(p.Log)
	if err != nil {
		return err
	}
	if !strings.Contains(string(b), "initial sync done") {
		return fmt.Errorf("%s: no initial sync yet", p.Name)
	}
	n := e.tp.Nodes[i]
	mode, err := n.XDPMode(n.Dev)
	if err != nil {
		return err
	}
	if in, eg, err := n.TCXPrograms(n.Dev); err != nil || in == 0 || eg == 0 {
		return fmt.Errorf("%s: tcx programs on %s: %d ingress, %d egress (%v)", p.Name, n.Dev, in, eg, err)
	}
	forced := xdpMode() == "native" || xdpMode() == "generic"
	if mode == netns.XDPAttachedNone && forced {
		return fmt.Errorf("%s: no xdp program on %s", p.Name, n.Dev)
	}
	e.attached.Store(attachedDescription(mode))
	return nil
}

// attachedDescription names where the datapath runs for an XDP attach mode.
func attachedDescription(mode uint32) string {
	switch mode {
	case netns.XDPAttachedNative:
		return "native XDP + tc"
	case netns.XDPAttachedGeneric:
		return "generic XDP + tc"
	case netns.XDPAttachedNone:
		return "tc only"
	}
	return fmt.Sprintf("xdp mode %d + tc", mode)
}

// nodegressStop stops the agents, removes their datapath with `nodegress
// cleanup` and unmounts the pin directories.
func nodegressStop(e *l4Env, procs []*benchkit.Proc) error {
	stopAll(procs)
	var errs []error
	for _, n := range e.tp.Nodes {
		bpffs, _ := e.agentPaths(n)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := n.Command(ctx, e.nodegress, "cleanup", "--bpffs", bpffs).CombinedOutput()
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("nodegress cleanup on %s: %w\n%s", n.Name, err, out))
		}
		if err := unix.Unmount(bpffs, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", bpffs, err))
		}
		if err := checkClean(n); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
