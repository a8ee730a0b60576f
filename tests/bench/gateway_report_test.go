//go:build bench

package bench

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nodegress/nodegress/tests/bench/benchkit"
	"github.com/nodegress/nodegress/tests/kube"
)

// report renders the gateway suite's Markdown report.
func (e *gwEnv) report(took time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Gateway API beyond the conformance suite\n\n")
	fmt.Fprintf(&b, "`%s`, %s, %s.\n\n", e.s.command, time.Now().Format("2006-01-02 15:04"), took.Round(time.Second))
	b.WriteString(benchkit.Machine([]string{filepath.Join(kube.BinDir(e.t), "kube-apiserver"), "--version"}))
	fmt.Fprintf(&b, "- load average (1, 5, 15 min) at the start: %s, at the end: %s\n", e.loadStart, loadAvg())
	fmt.Fprintf(&b, "- the agent alone on core %d (%s); API server, etcd, pod servers, client and harness on core %d\n\n",
		benchkit.SUTCPU, benchkit.PriorityNote(), benchkit.LoadCPU)
	b.WriteString("One nodegress agent (node1) follows a real kube-apiserver and etcd with the Gateway API CRDs " +
		"of `manifests/gateway-api`; the client sends its requests to the Gateway's address, which the agent's " +
		"datapath hands to its proxy. The agent runs as the DaemonSet runs it (Ingress and Gateway API on, the " +
		"elected status writer, access log off). There is no peer on this machine to run beside it in the same " +
		"run: the figures are absolute.\n\n")

	if len(e.scales) > 0 {
		b.WriteString("## From an HTTPRoute write to traffic\n\n")
		fmt.Fprintf(&b, "Per scale %d changes of each kind, one after the other, each after a random pause of up "+
			"to 300 ms; timed from the API call until the client, polling through the Gateway every 2 ms on a kept-alive "+
			"connection, gets the answer of the new configuration. `create`: a new HTTPRoute for its own host "+
			"(404 before, 200 after); `update`: the probe route's only path match moved to a new path (merge patch); "+
			"`delete`: the route created just before deleted (200 before, 404 after). `served` is the time from the first "+
			"of the scale's bulk creates (%d at a time) until the newest route and 50 sampled ones answered. The agent's "+
			"syncs and CPU are over the samples of the row. With %d samples, p99 is the slowest one.\n\n", gwSamples, gwParallel, gwSamples)
		tb := benchkit.Table{Header: []string{"HTTPRoutes", "bulk created → served"}}
		for _, c := range gwChanges {
			tb.Header = append(tb.Header, c.key+" p50", c.key+" p99")
		}
		tb.Header = append(tb.Header, "failed", "agent syncs", "mean sync", "agent CPU per change")
		for _, r := range e.scales {
			row := []string{strconv.Itoa(r.routes), "–"}
			if r.took > 0 {
				row[1] = r.took.Round(time.Millisecond).String()
			}
			failed := 0
			for _, c := range gwChanges {
				ds := r.samples[c.key]
				row = append(row, benchkit.Latency(percentile(ds, 0.50)), benchkit.Latency(percentile(ds, 0.99)))
				failed += r.failed[c.key]
			}
			mean := "–"
			if r.syncs > 0 {
				mean = benchkit.Latency(time.Duration(r.syncSeconds / r.syncs * float64(time.Second)))
			}
			row = append(row, strconv.Itoa(failed), strconv.Itoa(int(r.syncs)), mean,
				benchkit.Latency(time.Duration(r.cpu/float64(max(1, r.changes))*float64(time.Second))))
			tb.Rows = append(tb.Rows, row)
		}
		b.WriteString(tb.Markdown())
		b.WriteString("\n")
	}

	if len(e.churn) > 0 {
		fmt.Fprintf(&b, "## Changes under load, %d HTTPRoutes\n\n", e.churnAt)
		b.WriteString("`harness.RouteChurn` (the scenario of `tests/apie2e` TestGatewayChurnUnderLoad, at scale): " +
			"4 workers on kept-alive connections and 2 opening a connection per request send GET / without pause, " +
			"cycling over the hosts of every route created in bulk, and count every answer; nothing is retried. Each phase " +
			"makes its API writes, waits until their effect is seen through the proxy (`seen after`), then runs on until it " +
			"has at least 5,000 2xx answers. `add-routes`/`remove-routes`: 100 extra routes created, then deleted " +
			"(polled until 200, then 404); `change-routes`: every loaded route's backendRefs moved from Service web to " +
			"web2 (until every host's latest answer came from web2's pod); `add-endpoints`: a pod on node2 added to web2's " +
			"EndpointSlice; `remove-endpoints`: web2's first pod removed from it (still running, as a terminating pod).\n\n")
		tb := benchkit.Table{Header: []string{"phase", "API writes", "writes took", "seen after", "duration", "requests", "2xx", "non-2xx", "no answer"}}
		var total, ok, bad, errs int
		for _, p := range e.churn {
			non2xx := p.Failed() - p.Errors
			seen, wrote := "–", "–"
			if p.Seen > 0 {
				seen = p.Seen.Round(time.Millisecond).String()
			}
			if p.Wrote > 0 {
				wrote = p.Wrote.Round(time.Millisecond).String()
			}
			tb.Rows = append(tb.Rows, []string{p.Name, strconv.Itoa(p.Writes), wrote, seen, p.End.Sub(p.Start).Round(time.Millisecond).String(),
				strconv.Itoa(p.Total()), strconv.Itoa(p.OK), strconv.Itoa(non2xx), strconv.Itoa(p.Errors)})
			total, ok, bad, errs = total+p.Total(), ok+p.OK, bad+non2xx, errs+p.Errors
		}
		tb.Rows = append(tb.Rows, []string{"**all**", "", "", "", "", strconv.Itoa(total), strconv.Itoa(ok), strconv.Itoa(bad), strconv.Itoa(errs)})
		b.WriteString(tb.Markdown())
		for _, p := range e.churn {
			if p.Failed() > 0 {
				fmt.Fprintf(&b, "\n- %s", p.PhaseCounts)
			}
		}
		if e.churnErr != nil {
			fmt.Fprintf(&b, "\nThe scenario did not finish: %v\n", e.churnErr)
		}
		b.WriteString("\n")
	}

	if r := e.res; r != nil {
		fmt.Fprintf(&b, "## The agent at %d HTTPRoutes\n\n", r.routes)
		settled := fmt.Sprintf("idle after %s", r.settleAfter.Round(time.Second))
		if !r.settled {
			settled = "not idle within 2 minutes: the last 5 s window"
		}
		b.WriteString("Read once the agent was idle (under 5% of a core over 5 s) or after waiting 2 minutes for that, " +
			"before the change samples of this scale. RSS from /proc; Go heap and runtime memory from the agent's own " +
			"`/metrics` (`go_memstats_*`); CPU from /proc (user + system, the agent's threads).\n\n")
		tb := benchkit.Table{Header: []string{"RSS", "Go heap in use", "Go heap allocated", "Go runtime total (sys)", "idle CPU", "CPU to take in the last bulk", "mean sync (all so far)"}}
		tb.Rows = append(tb.Rows, []string{mib(float64(r.rss)), mib(r.heapInuse), mib(r.heapAlloc), mib(r.goSys),
			benchkit.Percent(r.idleCPU) + " (" + settled + ")", fmt.Sprintf("%.1f s", r.bulkCPU),
			benchkit.Latency(time.Duration(r.syncMean * float64(time.Second)))})
		b.WriteString(tb.Markdown())
		fmt.Fprintf(&b, "\nThe %d HTTPRoutes as the API server returns them (JSON, without status and managed fields) "+
			"are %.1f MiB; the proxy takes its configuration as one value swapped atomically and has no size limit. "+
			"%d of them had their status written by the agent %s after the last bulk creation began.\n\n",
			r.routes, float64(r.routesJSON)/(1<<20), r.withStatus, r.statusAfter.Round(time.Second))
		if !r.settled && r.withStatus < r.routes {
			b.WriteString("The agent was not idle because, as the elected status writer, it was still writing the routes' " +
				"status (one API request each, at client-go's default rate limit), and every status it writes comes back " +
				"as an HTTPRoute update event that requests a full sync of all routes. The change samples of this scale " +
				"ran while that went on.\n\n")
		}
		if r.programmingCount > 0 {
			fmt.Fprintf(&b, "The agent's `nodegress_network_programming_duration_seconds` (EndpointSlice changes only) "+
				"had %d observations, mean %s.\n\n", int(r.programmingCount),
				benchkit.Latency(time.Duration(r.programmingSum/r.programmingCount*float64(time.Second))))
		}
	}

	if len(e.scales) > 0 {
		b.WriteString("## Every sample (ms)\n\n")
		for _, r := range e.scales {
			for _, c := range gwChanges {
				var xs []string
				for _, d := range r.samples[c.key] {
					xs = append(xs, strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64))
				}
				fmt.Fprintf(&b, "- %d routes, %s: %s\n", r.routes, c.key, strings.Join(xs, " "))
			}
		}
		b.WriteString("\n")
	}
	if len(e.notes) > 0 {
		b.WriteString("## Notes\n\n")
		for _, n := range e.notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	return b.String()
}
