package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/netns"
)

// TestTraceRequests follows one HTTP request end to end with `nodegress
// trace --requests`: the client's connection steered by the datapath to
// the proxy on node1 (by XDP or tc, then by its socket lookup), the
// Ingress rule it matched, and the proxy's connection to the only pod, on
// node2, in one JSON record. By default
// tc steers on these veths (XDP is left off where frames carry partial
// checksums); with XDP forced on, XDP does.
func TestTraceRequests(t *testing.T) {
	for _, tc := range []struct {
		name      string
		args      []string
		wantStage string
	}{
		{"default", nil, "tc-ingress"},
		{"native xdp", []string{"--xdp-mode", "native"}, "xdp"},
	} {
		t.Run(tc.name, func(t *testing.T) { traceOneRequest(t, tc.args, tc.wantStage) })
	}
}

func traceOneRequest(t *testing.T, args []string, wantStage string) {
	tp := netns.TwoNodes(t, 1, 1)
	remote := tp.Pod("pod2a")
	c := newL7ClusterArgs(t, tp, []harness.Service{svc("web", remote), svc("local", tp.Pod("pod1a"))}, args,
		harness.Ingress{Name: "site", Rules: []harness.IngressRule{
			rule("site.test", path("/app", "web")),
			rule("local.test", path("/", "local")),
		}})
	// A new connection per request: the steering of a connection is seen
	// when it opens, so only connections opened while the trace runs
	// have theirs in the record.
	cl := c.nodeClient(harness.L7Options{DisableKeepAlives: true})

	// Requests until the trace has its record; the IDs the pod received
	// are collected to find the traced one among them.
	sentIDs := map[string]bool{}
	local := 0
	out := runTraceDriving(t, c.cluster, c.agent, func() {
		// A request the filter leaves out (another host) first.
		if r, err := cl.Get(c.ctx, "http://local.test/x"); err == nil && r.StatusCode == 200 {
			local++
		}
		r, err := cl.Get(c.ctx, "http://site.test/app/items")
		if err != nil {
			t.Fatalf("GET: %v", err)
		}
		if r.StatusCode != 200 || r.Echo == nil || r.Echo.Pod != remote.Name {
			t.Fatalf("GET: %s, want 200 from %s", r, remote.Name)
		}
		sentIDs[r.Echo.Headers.Get("X-Request-Id")] = true
	}, "--requests", "--host", "site.test", "--path", "/app", "--status", "2xx", "--output", "json", "--count", "1")
	t.Logf("nodegress trace --requests:\n%s", out)
	if local == 0 {
		t.Fatal("no request to the other host was answered: the filter was not put to the test")
	}

	type tuple struct{ Proto, Src, Dst string }
	type event struct {
		Stage, Verdict, Reason, Device string
		Orig                           tuple
	}
	var r struct {
		Type, ID, Node, Method, Host, Path string
		Status                             int
		Bytes                              int64
		DurationMS                         float64 `json:"duration_ms"`
		Client                             struct {
			Tuple    tuple
			Steering []event
			Drops    []event
		}
		Route struct {
			Kind, Name, Host, Path string
			Rule                   int
		}
		Upstream struct {
			Service, Pod, Node string
			Tuple              tuple
			Drops              []event
		}
	}
	line, _, _ := strings.Cut(out, "\n")
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatalf("trace line %q: %v", line, err)
	}
	if r.Type != "request" || r.Method != "GET" || r.Host != "site.test" || r.Path != "/app/items" || r.Status != 200 {
		t.Errorf("request %s %s %s%s %d, want request GET site.test/app/items 200", r.Type, r.Method, r.Host, r.Path, r.Status)
	}
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(r.ID) || !sentIDs[r.ID] {
		t.Errorf("request ID %q: want one the pod received as X-Request-ID (%d received)", r.ID, len(sentIDs))
	}
	if r.Bytes <= 0 || r.DurationMS <= 0 {
		t.Errorf("bytes %d, duration %vms", r.Bytes, r.DurationMS)
	}
	// The client connection, and the datapath passing it to the proxy.
	node1 := c.node1()
	if !strings.HasPrefix(r.Client.Tuple.Src, netns.ClientIP.String()+":") || r.Client.Tuple.Dst != addrPort(node1.Addr, 80).String() {
		t.Errorf("client connection %s > %s, want %s:* > %s:80", r.Client.Tuple.Src, r.Client.Tuple.Dst, netns.ClientIP, node1.Addr)
	}
	if !slices.ContainsFunc(r.Client.Steering, func(e event) bool {
		return e.Stage == wantStage && e.Verdict == "PASS" && e.Reason == "pass_l7" &&
			e.Orig.Src == r.Client.Tuple.Src && e.Device == node1.Dev
	}) {
		t.Errorf("steering %+v: want %s passing the client's connection to the proxy on %s", r.Client.Steering, wantStage, node1.Dev)
	}
	// Then its socket lookup handing it to the proxy's listening socket.
	if !slices.ContainsFunc(r.Client.Steering, func(e event) bool {
		return e.Stage == "sk-lookup" && e.Verdict == "REDIRECT" && e.Reason == "sk_steer" &&
			e.Orig.Src == r.Client.Tuple.Src && e.Orig.Dst == r.Client.Tuple.Dst && e.Device == node1.Dev
	}) {
		t.Errorf("steering %+v: want sk-lookup steering the client's connection to the proxy socket on %s", r.Client.Steering, node1.Dev)
	}
	if len(r.Client.Drops)+len(r.Upstream.Drops) != 0 {
		t.Errorf("drops %+v %+v on a request that went through", r.Client.Drops, r.Upstream.Drops)
	}
	// The route, and the pod on the other node.
	if r.Node != "node1" || r.Route.Kind != "ingress" || r.Route.Name != "default/site" || r.Route.Host != "site.test" || r.Route.Path != "/app" {
		t.Errorf("node %q route %+v, want node1 and ingress default/site site.test /app", r.Node, r.Route)
	}
	if r.Upstream.Pod != "default/"+remote.Name || r.Upstream.Node != remote.Node.Name || !strings.HasPrefix(r.Upstream.Service, "default/web:") {
		t.Errorf("upstream %+v, want pod default/%s on %s of default/web", r.Upstream, remote.Name, remote.Node.Name)
	}
	if r.Upstream.Tuple.Dst != addrPort(remote.Addr, harness.PodHTTPPort).String() || r.Upstream.Tuple.Src == "" {
		t.Errorf("upstream connection %s > %s, want * > %s:%d", r.Upstream.Tuple.Src, r.Upstream.Tuple.Dst, remote.Addr, harness.PodHTTPPort)
	}

	// The access log names the same request.
	if err := harness.Eventually(2*time.Second, 20*time.Millisecond, func() error {
		b, err := os.ReadFile(c.accessLog)
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			var l accessLine
			if json.Unmarshal(sc.Bytes(), &l) == nil && l.RequestID == r.ID {
				return nil
			}
		}
		return os.ErrNotExist
	}); err != nil {
		t.Errorf("access log has no line with request_id %s: %v", r.ID, err)
	}
}
