//go:build bench

package bench

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/nodegress/nodegress/tests/bench/benchkit"
)

func fmtRate(v float64) string    { return benchkit.Rate(v) + "/s" }
func fmtLatency(v float64) string { return benchkit.Latency(time.Duration(v)) }
func fmtCount(v float64) string   { return strconv.FormatFloat(v, 'f', 1, 64) }
func fmtSeconds(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) + " s" }
func fmtDuration(v float64) string {
	if math.IsInf(v, 1) {
		return "> " + scaleReadyTimeout.String() + " (not done)"
	}
	d := time.Duration(v)
	if d >= 10*time.Second {
		return d.Round(100 * time.Millisecond).String()
	}
	return benchkit.Latency(d)
}

func l4Metrics() []l4Metric {
	var ms []l4Metric
	for _, side := range []struct{ key, title string }{{"local", "same node"}, {"remote", "other node"}} {
		ms = append(ms,
			l4Metric{key: "keepalive-" + side.key + "/rate", title: "keep-alive requests/s, " + side.title, format: fmtRate},
			l4Metric{key: "keepalive-" + side.key + "/p99", title: "keep-alive p99, " + side.title, lowerBetter: true, format: fmtLatency},
			l4Metric{key: "newconn-" + side.key + "/rate", title: "new TCP connections/s, " + side.title, format: fmtRate},
			l4Metric{key: "newconn-" + side.key + "/p99", title: "new connection p99 (wrk: request → answer, handshake not timed), " + side.title, lowerBetter: true, format: fmtLatency},
			l4Metric{key: "connect-" + side.key + "/p99", title: "new connection p99 from connect() to the last byte, " + side.title, lowerBetter: true, format: fmtLatency,
				also: "connect-" + side.key + "/p50", alsoLabel: "p50"},
			l4Metric{key: "newconn-" + side.key + "/synretrans", title: "SYNs the client retransmitted per 1,000 new connections, " + side.title, lowerBetter: true, format: fmtCount},
			l4Metric{key: "udp-" + side.key + "/rate", title: "UDP request/response/s, " + side.title, format: fmtRate, also: "udp-" + side.key + "/p99", alsoLabel: "p99", alsoFormat: fmtLatency},
		)
	}
	for _, side := range []struct{ key, title string }{{"local", "same node"}, {"remote", "other node"}} {
		ms = append(ms,
			l4Metric{key: "fixedka-" + side.key + "/p99", title: fmt.Sprintf("keep-alive p99 at a fixed %s requests/s, %s", thousands(fixedKeepAliveRate), side.title),
				lowerBetter: true, format: fmtLatency, also: "fixedka-" + side.key + "/p50", alsoLabel: "p50"},
			l4Metric{key: "fixednc-" + side.key + "/p99", title: fmt.Sprintf("new connection p99 from connect() at a fixed %s connections/s, %s", thousands(fixedNewConnRate), side.title),
				lowerBetter: true, format: fmtLatency, also: "fixednc-" + side.key + "/p50", alsoLabel: "p50"},
		)
	}
	// Features, each against newconn-remote in the same phase.
	ms = append(ms,
		l4Metric{key: "affinity-remote/rate", title: fmt.Sprintf("new TCP connections/s with ClientIP affinity (%d backends), other node", len(affinityBackends)),
			format: fmtRate, also: "affinity-remote/synretrans", alsoLabel: "SYN retransmits/1k", alsoFormat: fmtCount},
		l4Metric{key: "affinity-remote/vsbase", title: "ClientIP affinity: new connections/s with ÷ without (same phase), other node",
			format: fmtRatio, relative: true},
		l4Metric{key: "maglev-remote/rate", title: "new TCP connections/s with Maglev (nodegress only), other node",
			format: fmtRate, also: "newconn-remote/rate", alsoLabel: "default hash"},
		l4Metric{key: "maglev-remote/vsbase", title: "Maglev ÷ default hash, new connections/s (same phase), other node",
			format: fmtRatio, relative: true},
	)
	// SNAT ports under load, and direct server return.
	for _, rate := range []struct{ key, title string }{{"1k", "1,000"}, {"5k", "5,000"}, {"10k", "10,000"}} {
		ms = append(ms, l4Metric{key: "fixednc" + rate.key + "-remote/synretrans",
			title: "SYNs retransmitted per 1,000 new connections at a fixed " + rate.title + "/s to one backend, other node", lowerBetter: true,
			format: fmtCount, also: "fixednc" + rate.key + "-remote/p99", alsoLabel: "p99", alsoFormat: fmtLatency})
	}
	ms = append(ms,
		l4Metric{key: "dsr-newconn-remote/rate", title: "new TCP connections/s, other node, nodegress by DSR (kube-proxy: SNAT)",
			format: fmtRate, also: "dsr-newconn-remote/synretrans", alsoLabel: "SYN retransmits/1k", alsoFormat: fmtCount},
		l4Metric{key: "dsr-newconn-remote/vsbase", title: "DSR ÷ SNAT, new connections/s (same phase), other node",
			format: fmtRatio, relative: true},
		l4Metric{key: "dsr-connect-remote/p99", title: "new connection p99 from connect() to the last byte, other node, DSR", lowerBetter: true,
			format: fmtLatency, also: "dsr-connect-remote/p50", alsoLabel: "p50"},
		l4Metric{key: "dsr-keepalive-remote/rate", title: "keep-alive requests/s, other node, DSR", format: fmtRate,
			also: "dsr-keepalive-remote/p99", alsoLabel: "p99", alsoFormat: fmtLatency},
	)
	for _, rate := range []struct{ key, title string }{{"1k", "1,000"}, {"5k", "5,000"}, {"10k", "10,000"}} {
		ms = append(ms, l4Metric{key: "dsr-fixednc" + rate.key + "-remote/synretrans",
			title: "SYNs retransmitted per 1,000 new connections at a fixed " + rate.title + "/s to one backend, other node, DSR", lowerBetter: true,
			format: fmtCount, also: "dsr-fixednc" + rate.key + "-remote/p99", alsoLabel: "p99", alsoFormat: fmtLatency})
	}
	for _, side := range []struct{ key, title string }{{"local", "same node"}, {"remote", "other node"}} {
		for _, l := range []struct{ key, title string }{{"keepalive", "keep-alive"}, {"newconn", "new-connection"}, {"udp", "UDP"}} {
			ms = append(ms, l4Metric{key: l.key + "-" + side.key + "/softirq",
				title: "network CPU (softirq) per 1M " + l.title + " requests, " + side.title, lowerBetter: true, format: fmtSeconds,
				also: l.key + "-" + side.key + "/busy", alsoLabel: "all"})
		}
	}
	own := len(benchServices)
	for i, row := range []string{"firstpacket1", "firstpacket1k", "firstpacket10k"} {
		ms = append(ms, l4Metric{key: row + "/p50", title: fmt.Sprintf("first-packet latency (connect → first byte), %s NodePort services",
			thousands(scaleLevels[i]+own)), lowerBetter: true, format: fmtLatency, also: row + "/p99", alsoLabel: "p99"})
	}
	ms = append(ms,
		l4Metric{key: "epchange/ms", title: "EndpointSlice update → first answer from the new backend (1k services)", lowerBetter: true, format: fmtDuration},
		l4Metric{key: "scale10k/ready", title: fmt.Sprintf("start → serving the newest of %s services / %s endpoints",
			thousands(scaleLevels[2]+own), thousands(scaleLevels[2]*endpointsPerExtra)), lowerBetter: true, format: fmtDuration},
		l4Metric{key: "scale10k/rss", title: fmt.Sprintf("memory (RSS) of the node's agent / kube-proxy at %s services / %s endpoints",
			thousands(scaleLevels[2]+own), thousands(scaleLevels[2]*endpointsPerExtra)), lowerBetter: true, format: mib},
	)
	return ms
}

// benchServices are the benchmark's own NodePort Services.
var benchServices = []string{"ka-local", "ka-remote", "udp-local", "udp-remote", "flip", "probe", "aff-remote", "mag-remote", "dsr-remote"}

func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// median of a metric's samples for dp; NaN when there are none.
func (e *l4Env) median(metric, dp string) (float64, int) {
	xs := e.res[metric][dp]
	if len(xs) == 0 {
		return math.NaN(), 0
	}
	return benchkit.Median(xs), len(xs)
}

func (e *l4Env) report(took time.Duration) string {
	s := e.s
	cols := []*dataplane{dpRouting, dpIptables, dpNftables, dpNodegress}
	tbl := benchkit.Table{Header: []string{"measurement"}}
	for _, dp := range cols {
		tbl.Header = append(tbl.Header, dp.title)
	}
	tbl.Header = append(tbl.Header, "nodegress ahead?")
	var behind []string
	for _, m := range l4Metrics() {
		row := []string{m.title}
		base, _ := e.median(m.key, dpIptables.key)
		any := false
		for _, dp := range cols {
			v, n := e.median(m.key, dp.key)
			if n == 0 {
				row = append(row, "–")
				continue
			}
			any = true
			cell := m.format(v)
			if m.also != "" {
				if a, n := e.median(m.also, dp.key); n > 0 {
					cell += " (" + m.alsoLabel + " " + m.formatAlso(a) + ")"
				}
			}
			if dp != dpIptables && dp != dpRouting && !m.relative && base > 0 && !math.IsInf(base, 0) {
				cell += " " + fmtRatio(v/base)
			}
			row = append(row, cell)
		}
		if !any {
			continue
		}
		ng, n := e.median(m.key, dpNodegress.key)
		verdict := "–"
		if n > 0 && !m.relative {
			bestKP := math.NaN()
			for _, dp := range []*dataplane{dpIptables, dpNftables} {
				if v, k := e.median(m.key, dp.key); k > 0 && (math.IsNaN(bestKP) || better(m, v, bestKP) > 1) {
					bestKP = v
				}
			}
			if !math.IsNaN(bestKP) {
				f := better(m, ng, bestKP)
				verdict = "yes, " + fmtRatio(f)
				if f < 1 {
					verdict = "no, " + fmtRatio(f)
					behind = append(behind, m.title)
				}
			}
		}
		row = append(row, verdict)
		tbl.Rows = append(tbl.Rows, row)
	}

	var b strings.Builder
	fmt.Fprintf(&b, "# L4: the NodePort hop, kube-proxy and nodegress (%s)\n\n", time.Now().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "Command: `%s` (%d round(s) of %s per load and dataplane, %s in all)\n\n", s.command, s.rounds, s.duration, took.Round(time.Second))
	b.WriteString(benchkit.Machine([]string{e.kubeProxy, "--version"}, []string{e.nodegress, "version"},
		[]string{"iptables", "-V"}, []string{"nft", "-v"}, []string{"nginx", "-v"}, []string{"wrk", "-v"}))
	// The machine may be shared: how busy it was says how far to trust
	// rates and tail latencies (CPU per request suffers less).
	fmt.Fprintf(&b, "- load average at the start: %s; at the end: %s\n", e.loadStart, loadAvg())
	fmt.Fprintf(&b, `
Topology (tests/netns.TwoNodes): a client, node1 and node2 on one L2 segment (a bridge in a switch
namespace), pods behind veths (two on node1, five on node2), pod ranges routed between the
nodes; the API server (etcd + kube-apiserver %s, the same build as kube-proxy) on the switch's
bridge address. The client sends to node1's address at the Service's NodePort; "same node" is
nginx in a pod on node1,
"other node" nginx in a pod on node2 (NodePort → pod on the other node, as in the reference
measurement). Besides the benchmark's %d Services, %s extra NodePort Services with %d endpoints
each exist during the rounds (%s for the last rows). Services, EndpointSlices and Nodes are written
by the harness (no controller-manager runs); kube-proxy (--proxy-mode iptables|nftables,
--nodeport-addresses %s, default sync periods) and the nodegress agent (--kubeconfig, --xdp-mode %s
on ext0, which put it in: %s; --ingress=false) run in every node namespace. Checksum offloads:
%s. One dataplane at a time: each phase starts it on both
nodes, waits for its first sync and for every Service to answer, measures, stops it and cleans up
(kube-proxy --cleanup and an empty nft ruleset, or nodegress cleanup; checked: no rules, no XDP or
tcx programs left), then flushes conntrack in every namespace. Phases alternate: kube-proxy
iptables, nodegress, kube-proxy nftables, nodegress, … ; every value is the median of the phases.

Pinning: wrk -t1 -c%d, benchload udp-rr -c%d (32 sockets, one datagram in flight each) or benchload
tcp-crr/http-rr (one thread, raw epoll, 32 connections; fixed-rate rows: up to 1,024 in flight), the
harness, the API server, kube-proxy and the agents on core %d; the backends (nginx with one worker,
podserver with GOMAXPROCS=1 for UDP) on core %d. Scheduling priority: %s. With veths, a packet is
processed in softirq on the core that sent it, so the request direction's NodePort hop runs on
core %d and the answer's on core %d.

`, kubeVersion(e.kubeProxy), len(benchServices), thousands(scaleLevels[1]), endpointsPerExtra, thousands(scaleLevels[2]),
		"10.100.0.0/24", xdpMode(), attachedOf(e), checksumsNote(e), l4Connections, l4Connections, benchkit.LoadCPU, benchkit.SUTCPU, benchkit.PriorityNote(),
		benchkit.LoadCPU, benchkit.SUTCPU)
	b.WriteString(tbl.Markdown())
	b.WriteString(`
Ratios are to kube-proxy iptables (for latencies, CPU, time and memory, below 1× is better).
"nodegress ahead?" compares with the better kube-proxy mode. Keep-alive and new-connection rates
and the first p99 of each are wrk's, as in the reference measurement; wrk starts a request's clock
after the TCP handshake, so a SYN lost or answered with an ACK (the client resets and retries,
milliseconds later the first time, a second later the next) slows the rate but never shows in that p99. The rows "from connect()" are benchload tcp-crr's,
with the same 32 connections, timing connect() to the answer's last byte as a user waits; "SYNs
the client retransmitted" counts TCPSynRetrans in the client namespace during wrk's rounds. The
fixed-rate rows schedule requests (or connections) at that rate whatever the answers do (open
loop: a late answer delays everything behind it, all of it timed from when it was due), so every
dataplane carries the same load: a latency comparison a closed loop cannot give, as the faster
dataplane there also loads the backend more. Between loads (and phases) conntrack is flushed and
TIME_WAIT sockets closed in every namespace, so no load inherits another's state. UDP rates and p99 are benchload's (per datagram).
Network CPU: the softirq time of both cores from
/proc/stat per million requests — every namespace's packet processing (bridge, forwarding,
netfilter, XDP, TCP receive) runs there, the load tool's and backend's own work does not; the
kernel samples it per tick (no IRQ time accounting), so it is exact to a few percent over a
round. "all" is every busy tick of both cores per million requests (load tool and backend
included: they are the same in every column, so differences are the dataplane's). The routing-only
column sends the same loads to the pods' addresses through node1 with no NodePort hop (answers
from node2's pod go straight back to the client): the floor any NodePort implementation adds to.
`)
	fmt.Fprintf(&b, `The feature rows send the other-node new-connection load to a Service that differs from its
Service only in the feature, later in the same phase, and give the ratio of the two rates per
phase (median over phases). Their backends are nginx pods on node2 that no other load reaches: the
flush between loads clears the kernel's conntrack but not nodegress's flow maps, where the SNAT
ports of an earlier load's closed flows to the same backend stay reserved for the backend's
TIME_WAIT. ClientIP affinity: sessionAffinity ClientIP (the default 3 h timeout) over %d
backends. With one client address every connection goes to the backend its first one went to, as
the one-backend row's go to their only one, and the ratio is what keeping affinity costs:
kube-proxy iptables checks an xt_recent list per endpoint until one holds the client and sets it
again, kube-proxy nftables does the same with a set per endpoint, nodegress looks up and refreshes
one map entry per client and Service. After each such load the harness finds the client in that
state on node1, or records no sample. kube-proxy iptables matches a connection's first packet
against KUBE-NODEPORTS's rules in order, and writes them in a random order on every sync: with
1,000 Services the two Services' places (in the notes, per phase) move its ratio as much as
affinity does. Maglev (nodegress only: kube-proxy has none): a one-backend Service annotated
nodegress.io/lb-algorithm: maglev, checked to have the only Maglev table; its ratio is Maglev's
table lookup against the default hash.
`, len(affinityBackends))
	fmt.Fprintf(&b, `First-packet latency: %s fresh connections, one after the other, from the client to the newest
Service's NodePort (backend on the other node): connect to the first byte of the answer, p50 (p99).
EndpointSlice change: the only endpoint of a Service moves between pods on both nodes; time from
the API update to the first fresh connection the new pod answers (polled every few ms), median
over all changes. Memory: VmRSS of node1's agent or kube-proxy 3 s after it served the newest
Service (kernel memory of rules or maps not included).
`, thousands(firstPacketConns))
	if len(behind) > 0 {
		fmt.Fprintf(&b, "\nnodegress is not ahead in: %s.\n", strings.Join(behind, "; "))
	}
	if len(e.notes) > 0 {
		b.WriteString("\nNotes:\n")
		for _, n := range e.notes {
			b.WriteString("- " + n + "\n")
		}
	}
	b.WriteString("\n## Every sample\n\n")
	det := benchkit.Table{Header: []string{"metric", "dataplane", "samples (phase order)"}}
	// A row's also may be another row's metric (Maglev's hash baseline).
	listed := map[string]bool{}
	for _, m := range l4Metrics() {
		for i, key := range []string{m.key, m.also} {
			if key == "" || listed[key] {
				continue
			}
			listed[key] = true
			format := m.format
			if i == 1 {
				format = m.formatAlso
			}
			for _, dp := range cols {
				xs := e.res[key][dp.key]
				if len(xs) == 0 {
					continue
				}
				var parts []string
				for _, x := range xs {
					parts = append(parts, format(x))
				}
				det.Rows = append(det.Rows, []string{key, dp.title, strings.Join(parts, " / ")})
			}
		}
	}
	b.WriteString(det.Markdown())
	fmt.Print("\n" + b.String())
	return b.String()
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func kubeVersion(bin string) string {
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return "unknown version"
	}
	return strings.TrimPrefix(strings.TrimSpace(string(out)), "Kubernetes ")
}

// chart draws, for every metric, how many times better kube-proxy
// nftables and nodegress are than kube-proxy iptables.
func (e *l4Env) chart() string {
	c := benchkit.BarChart{
		Title:  "NodePort hop: times better than kube-proxy iptables (log scale)",
		Series: []string{dpNftables.title, dpNodegress.title},
		Note:   "Right: the measured medians. Rates: higher is better; latency, CPU, time, memory: the bar shows base/value. " + e.s.command,
	}
	for _, m := range l4Metrics() {
		base, n := e.median(m.key, dpIptables.key)
		if n == 0 || m.relative {
			continue
		}
		g := benchkit.BarGroup{Label: shortTitle(m.title)}
		for _, dp := range []*dataplane{dpNftables, dpNodegress} {
			v, k := e.median(m.key, dp.key)
			if k == 0 {
				continue
			}
			g.Bars = append(g.Bars, benchkit.Bar{Series: dp.title, Ratio: better(m, v, base),
				Text: m.format(v) + " vs " + m.format(base)})
		}
		c.Groups = append(c.Groups, g)
	}
	return c.SVG()
}

func shortTitle(s string) string {
	r := strings.NewReplacer(
		"network CPU (softirq) per 1M ", "softirq s/1M ",
		" requests, ", ", ",
		"first-packet latency (connect → first byte), ", "first packet, ",
		" NodePort services", " svcs",
		"EndpointSlice update → first answer from the new backend (1k services)", "EndpointSlice change → datapath",
		"memory (RSS) of the node's agent / kube-proxy at ", "RSS at ",
		"start → serving the newest of ", "start → serving, ",
		" services / ", " svcs / ",
		"request/response", "req/resp",
	)
	return r.Replace(s)
}
