package e2e

import (
	"bufio"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/netns"
)

// TestTraceRequestsUpstreamDrops runs `nodegress trace --requests
// --kernel-drops` while requests go to two paths of one Ingress: one to a
// pod that serves, one to a pod that does not listen on the Service's
// target port. The second pod's kernel drops the proxy's SYN (NO_SOCKET)
// and answers with a reset, the proxy answers 502, and the record of that
// request names the drop on its upstream connection; the served request's
// record has no drops.
func TestTraceRequestsUpstreamDrops(t *testing.T) {
	tp := netns.TwoNodes(t, 1, 1)
	served, refusing := tp.Pod("pod2a"), tp.Pod("pod1a")
	const closedPort = 9 // nothing listens there in the pod
	closed := harness.Service{
		Name: "closed", Type: "ClusterIP",
		Ports:     []harness.Port{{Name: "http", Port: 80, TargetPort: closedPort}},
		Endpoints: harness.Endpoints(refusing),
	}
	c := newL7ClusterArgs(t, tp, []harness.Service{svc("web", served), closed}, nil,
		harness.Ingress{Name: "site", Rules: []harness.IngressRule{
			rule("site.test", path("/ok", "web"), path("/broken", "closed")),
		}})
	cl := c.nodeClient(harness.L7Options{DisableKeepAlives: true})

	// Both requests until the trace has enough records: the upstream
	// connections dialled once the trace listens are the watched ones.
	const records = 6
	var ok, broken int
	out := runTraceDriving(t, c.cluster, c.agent, func() {
		if r, err := cl.Get(c.ctx, "http://site.test/broken"); err == nil && r.StatusCode == 502 {
			broken++
		}
		if r, err := cl.Get(c.ctx, "http://site.test/ok"); err == nil && r.StatusCode == 200 {
			ok++
		}
	}, "--requests", "--kernel-drops", "--host", "site.test", "--output", "json", "--count", "6")
	t.Logf("nodegress trace --requests --kernel-drops:\n%s", out)
	if ok == 0 || broken == 0 {
		t.Fatalf("%d requests served, %d answered 502: want both", ok, broken)
	}

	type tuple struct{ Proto, Src, Dst string }
	type event struct {
		Stage, Verdict, Reason, Device, Location string
		Orig, Xlated                             tuple
	}
	type record struct {
		Path     string
		Status   int
		Error    string
		Upstream struct {
			Service string
			Tuple   tuple
			Drops   []event
		}
	}
	var okSeen, brokenSeen, brokenWithDrop int
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var r record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("trace line %q: %v", sc.Text(), err)
		}
		switch r.Path {
		case "/ok":
			okSeen++
			if r.Status != 200 || len(r.Upstream.Drops) != 0 {
				t.Errorf("served request: status %d, upstream drops %+v; want 200 and none", r.Status, r.Upstream.Drops)
			}
		case "/broken":
			brokenSeen++
			want := addrPort(refusing.Addr, closedPort).String()
			if r.Status != 502 || r.Error == "" || r.Upstream.Tuple.Dst != want || r.Upstream.Tuple.Src == "" {
				t.Errorf("refused request: status %d error %q upstream %s > %s; want 502, an error, and *:* > %s",
					r.Status, r.Error, r.Upstream.Tuple.Src, r.Upstream.Tuple.Dst, want)
			}
			if slices.ContainsFunc(r.Upstream.Drops, func(e event) bool {
				return e.Stage == "kernel" && e.Verdict == "DROP" && e.Reason == "NO_SOCKET" &&
					e.Orig.Src == r.Upstream.Tuple.Src && e.Orig.Dst == want && strings.HasPrefix(e.Device, "netns:")
			}) {
				brokenWithDrop++
			} else {
				t.Errorf("refused request's upstream drops %+v: want the pod's kernel dropping %s > %s with NO_SOCKET",
					r.Upstream.Drops, r.Upstream.Tuple.Src, want)
			}
		}
	}
	if okSeen == 0 || brokenSeen == 0 || okSeen+brokenSeen != records {
		t.Errorf("%d records of /ok, %d of /broken: want both among the %d", okSeen, brokenSeen, records)
	}
}
