package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/netns"
)

// testTimeout bounds every e2e test, whatever it waits for.
const testTimeout = 2 * time.Minute

// settle is how long a change to the standalone directory may take to reach
// the datapath: new connections must see it within this time.
const settle = 2 * time.Second

// cluster is a topology with pod servers, a standalone directory and agents.
type cluster struct {
	t      *testing.T
	ctx    context.Context
	tp     *netns.Topology
	m      *harness.Manifests
	agents []*harness.Agent
}

// newCluster builds tp's manifests (its Nodes and svcs), starts a pod server
// in every pod and an agent with default settings on every node listed in
// agentNodes (1-based).
func newCluster(t *testing.T, tp *netns.Topology, agentNodes []int, svcs ...harness.Service) *cluster {
	t.Helper()
	return newClusterWith(t, tp, harness.AgentConfig{}, agentNodes, svcs...)
}

// newClusterWith is newCluster with agents configured as in base (its Dir is
// the cluster's standalone directory).
func newClusterWith(t *testing.T, tp *netns.Topology, base harness.AgentConfig, agentNodes []int, svcs ...harness.Service) *cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	c := &cluster{t: t, ctx: ctx, tp: tp, m: harness.NewManifests(t)}
	c.m.Write(t, "nodes.yaml", harness.NodesYAML(tp)...)
	for _, s := range svcs {
		c.apply(s)
	}
	harness.StartPodServers(t, tp.Pods()...)
	if harness.CaptureEnabled() {
		harness.Capture(t, tp.Client.NS, tp.Client.Dev)
		for _, n := range tp.Nodes {
			harness.Capture(t, n.NS, n.Dev)
			for _, p := range n.Pods {
				harness.Capture(t, p.NS, netns.PodDev)
			}
		}
	}
	base.Dir = c.m.Dir
	for _, i := range agentNodes {
		c.agents = append(c.agents, harness.StartAgent(t, tp.Nodes[i-1], base))
	}
	return c
}

// with returns a copy of c reporting to t, for subtests.
func (c *cluster) with(t *testing.T) *cluster {
	cp := *c
	cp.t = t
	return &cp
}

// apply writes s to its own file, replacing its previous version.
func (c *cluster) apply(s harness.Service) {
	c.t.Helper()
	c.m.Write(c.t, svcFile(s.Name), s.YAML()...)
}

func svcFile(name string) string { return "svc-" + name + ".yaml" }

func (c *cluster) node(i int) *netns.Node { return c.tp.Nodes[i-1] }

func (c *cluster) pod(name string) *netns.Pod { return c.tp.Pod(name) }

func (c *cluster) client() *netns.NS { return c.tp.Client.NS }

// get is one HTTP request on a new connection from the client.
func (c *cluster) get(addr netip.AddrPort) (harness.Reply, error) {
	return harness.HTTPGet(c.ctx, c.client(), addr)
}

// waitBackends waits until the datapath of every agent selects new flows to
// frontend addr (TCP) among exactly the pods' HTTP endpoints: a change
// written with apply has reached the maps. Terminating endpoints are no
// longer selected.
func (c *cluster) waitBackends(addr netip.AddrPort, pods ...*netns.Pod) {
	c.t.Helper()
	want := make([]string, 0, len(pods))
	for _, p := range pods {
		want = append(want, netip.AddrPortFrom(p.Addr, harness.PodHTTPPort).String())
	}
	slices.Sort(want)
	key := addr.String() + "/TCP"
	start := time.Now()
	for _, a := range c.agents {
		err := harness.Eventually(settle, 50*time.Millisecond, func() error {
			m, err := a.ParsedMaps()
			if err != nil {
				return err
			}
			got, ok := m.Backends(key)
			if !ok {
				return fmt.Errorf("no frontend %s", key)
			}
			got = slices.Sorted(slices.Values(got))
			if !slices.Equal(got, want) {
				return fmt.Errorf("%s selects %v, want %v", key, got, want)
			}
			return nil
		})
		if err != nil {
			c.t.Fatalf("datapath on %s: %v\nagent log:\n%s", a.Node.Name, err, a.Log())
		}
	}
	c.t.Logf("%s selects %v after %s", key, want, time.Since(start).Round(time.Millisecond))
}

// waitServed waits until a request to addr is answered, for the first
// request after a change.
func (c *cluster) waitServed(addr netip.AddrPort, timeout time.Duration) harness.Reply {
	c.t.Helper()
	var r harness.Reply
	err := harness.Eventually(timeout, 50*time.Millisecond, func() error {
		var err error
		r, err = c.get(addr)
		return err
	})
	if err != nil {
		c.t.Fatalf("%s not served: %v", addr, err)
	}
	return r
}

// tally counts answers by pod and checks the client address each pod saw.
type tally struct {
	byPod    map[string]int
	failures []string
}

func newTally() *tally { return &tally{byPod: map[string]int{}} }

func (tl *tally) pods() []string {
	var ps []string
	for p := range tl.byPod {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	return ps
}

func (tl *tally) String() string {
	var parts []string
	for _, p := range tl.pods() {
		parts = append(parts, fmt.Sprintf("%s:%d", p, tl.byPod[p]))
	}
	return fmt.Sprintf("answers {%s}, %d failures", strings.Join(parts, " "), len(tl.failures))
}

// requests sends n requests on new connections (HTTP, or UDP from new
// sockets when udp is set) to addr. wantClient maps each pod to the client
// address it must see; a pod missing from it must not answer.
func (c *cluster) requests(addr netip.AddrPort, n int, udp bool, wantClient map[string]netip.Addr) *tally {
	c.t.Helper()
	tl := newTally()
	for i := range n {
		var r harness.Reply
		var err error
		if udp {
			r, err = harness.UDPRequest(c.ctx, c.client(), addr, fmt.Sprintf("req-%d", i))
		} else {
			r, err = c.get(addr)
		}
		if err != nil {
			tl.failures = append(tl.failures, err.Error())
			c.t.Errorf("request %d to %s: %v", i, addr, err)
			continue
		}
		tl.byPod[r.Pod]++
		want, ok := wantClient[r.Pod]
		switch {
		case !ok:
			c.t.Errorf("request %d to %s answered by %s, want one of %v", i, addr, r.Pod, keys(wantClient))
		case r.Client != want:
			c.t.Errorf("request %d to %s: %s saw client %s, want %s", i, addr, r.Pod, r.Client, want)
		}
	}
	return tl
}

// wantAll fails the test unless every pod in pods answered at least once.
func (c *cluster) wantAll(tl *tally, pods ...string) {
	c.t.Helper()
	for _, p := range pods {
		if tl.byPod[p] == 0 {
			c.t.Errorf("%s never answered: %s", p, tl)
		}
	}
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func addrPort(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }

// randomBytes returns n random bytes: an upload whose every segment's
// checksum is different.
func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// http80 is the usual service port: 80 to the pods' HTTP port.
func http80(nodePort uint16) harness.Port {
	return harness.Port{Name: "http", Port: 80, TargetPort: harness.PodHTTPPort, NodePort: nodePort}
}
