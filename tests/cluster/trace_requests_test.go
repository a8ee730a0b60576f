package cluster

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// traceHost is the host of the trace test's Ingress.
const traceHost = "trace.cluster.test"

// requestRecord is what the test reads of a `--requests` record.
type requestRecord struct {
	AgentNode string `json:"agent_node"`
	Type      string `json:"type"`
	ID        string `json:"id"`
	Node      string `json:"node"`
	Host      string `json:"host"`
	Status    int    `json:"status"`
	Route     struct {
		Kind string `json:"kind"`
		Name string `json:"name"`
	} `json:"route"`
	Upstream struct {
		Service string `json:"service"`
		Pod     string `json:"pod"`
		Node    string `json:"node"`
	} `json:"upstream"`
}

// generatedRequestID is the shape of an ID the proxy makes up.
var generatedRequestID = regexp.MustCompile(`^[0-9a-f]{32}$`)

// checkRequestAcrossNodes sends Ingress requests to the first node for a
// Service whose only pod runs on the second, while `kubectl nodegress trace
// --requests` runs on every node. A request the pod answered (with the
// request ID the proxy sent it) is one record, from the first node, naming
// the Ingress, the pod, the second node and the status; no other node
// reports it.
func checkRequestAcrossNodes(t *testing.T, c *cluster, plugin string) {
	t.Helper()
	ingressNode, podNode := c.nodes[0], c.nodes[1]
	createService(t, c, corev1.ServiceSpec{
		Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}},
	}, "remote")
	runPodOn(t, c, "remote", podNode)
	ing := ingressTo(traceNS, "remote", traceHost)
	if _, err := c.client.NetworkingV1().Ingresses(traceNS).Create(context.Background(), ing, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	tr := startPluginTrace[requestRecord](t, c, plugin, "--requests", "--host", traceHost, "--output", "json", "--duration", "5m")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The pod answers with the X-Request-ID the proxy sent it.
	url := fmt.Sprintf("http://%s/header?key=X-Request-Id", c.nodeIPs[0])
	answered := map[string]bool{}
	rec, err := tr.waitFor(ctx, func() {
		out, err := exec.Command("ip", "netns", "exec", c.clientNS, "curl", "-sSf", "-m", "2", "-H", "Host: "+traceHost, url).Output()
		if id := strings.TrimSpace(string(out)); err == nil && generatedRequestID.MatchString(id) {
			answered[id] = true
		}
	}, func(r requestRecord) bool { return r.Type == "request" && answered[r.ID] })
	if err != nil {
		c.dump(t)
		t.Fatalf("no request record of an answered request (%d answered): %v\nplugin stderr:\n%s", len(answered), err, tr.stderr())
	}
	t.Logf("request record: %+v", rec)
	tr.stop(t)

	if rec.AgentNode != ingressNode || rec.Node != ingressNode || rec.Status != 200 || rec.Host != traceHost ||
		rec.Route.Kind != "ingress" || rec.Route.Name != traceNS+"/remote" ||
		rec.Upstream.Pod != traceNS+"/remote" || rec.Upstream.Node != podNode {
		t.Errorf("request record %+v: want it from %s, status 200, ingress %s/remote, pod %s/remote on %s",
			rec, ingressNode, traceNS, traceNS, podNode)
	}
	var seen []string
	for _, r := range tr.all() {
		if r.ID == rec.ID {
			seen = append(seen, r.AgentNode)
		}
	}
	if len(seen) != 1 {
		t.Errorf("request %s reported by %v, want by %s alone", rec.ID, seen, ingressNode)
	}
	if s := tr.stderr(); s != "" {
		t.Errorf("plugin reported:\n%s", s)
	}
}
