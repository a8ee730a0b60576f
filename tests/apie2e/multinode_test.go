package apie2e

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/netns"
)

// Ports and addresses of the application.
const (
	webNodePort  = 30080
	lbNodePort   = 30081
	flipNodePort = 30090
	appHost      = "app.example.test"
	secureHost   = "secure.example.test"
	lateHost     = "late.example.test"
)

// lbIP is web-lb's LoadBalancer IP; the client routes netns.ServiceNet
// via node1.
var lbIP = netip.MustParseAddr("10.96.20.1")

func http80(nodePort uint16) harness.Port {
	return harness.Port{Name: "http", Port: 80, TargetPort: harness.PodHTTPPort, NodePort: nodePort}
}

func hostRule(host, service string) harness.IngressRule {
	return harness.IngressRule{Host: host, Paths: []harness.IngressPath{{
		Path: "/", Backend: harness.IngressBackend{Service: service, Port: 80},
	}}}
}

// TestMultiNode runs an agent on each of three nodes against one API
// server and checks what a cluster operator relies on: every node serves
// every NodePort and Ingress, to pods on any node; the agents are ready
// once synced; the elected agent publishes the node IPs in Ingress status;
// an EndpointSlice change reaches every node's datapath within a second;
// and with the API server gone the nodes keep serving, then catch up with
// a change made once it is back.
func TestMultiNode(t *testing.T) {
	c := newAPICluster(t, 1, 1, 1)
	p1, p2, p3 := c.tp.Pod("pod1a"), c.tp.Pod("pod2a"), c.tp.Pod("pod3a")
	all := []*netns.Pod{p1, p2, p3}

	web := harness.Service{Name: "web", Namespace: appNS, Ports: []harness.Port{http80(webNodePort)}, Endpoints: harness.Endpoints(all...)}
	webLB := harness.Service{
		Name: "web-lb", Namespace: appNS, Type: "LoadBalancer", LoadBalancerIPs: []netip.Addr{lbIP},
		Ports: []harness.Port{http80(lbNodePort)}, Endpoints: harness.Endpoints(all...),
	}
	flip := harness.Service{Name: "flip", Namespace: appNS, Ports: []harness.Port{http80(flipNodePort)}, Endpoints: harness.Endpoints(p1)}
	for _, s := range []harness.Service{web, webLB, flip} {
		c.applyService(t, s)
	}
	c.applyTLSSecret(t, "secure-tls", secureHost)
	c.applyIngress(t, harness.Ingress{Name: "app", Namespace: appNS, Rules: []harness.IngressRule{hostRule(appHost, "web")}})
	c.applyIngress(t, harness.Ingress{
		Name: "secure", Namespace: appNS,
		TLS:   []harness.IngressTLS{{Hosts: []string{secureHost}, SecretName: "secure-tls"}},
		Rules: []harness.IngressRule{hostRule(secureHost, "web")},
	})

	began := time.Now()
	c.startAgents()
	t.Logf("agents started in %s", ms(time.Since(began)))

	t.Run("ready after the first sync", func(t *testing.T) {
		for _, n := range c.tp.Nodes {
			start := time.Now()
			err := harness.Eventually(10*time.Second, 50*time.Millisecond, func() error {
				code, body, err := agentHTTP(c.ctx, n, "/readyz")
				if err != nil {
					return err
				}
				if code != http.StatusOK {
					return fmt.Errorf("/readyz: %d %s", code, body)
				}
				return nil
			})
			if err != nil {
				t.Fatalf("%s: %v", n.Name, err)
			}
			if code, body, err := agentHTTP(c.ctx, n, "/healthz"); err != nil || code != http.StatusOK {
				t.Errorf("%s: /healthz: %d %s %v", n.Name, code, body, err)
			}
			t.Logf("%s: /readyz 200 (waited %s)", n.Name, ms(time.Since(start)))
		}
	})

	t.Run("ingress status shows the node IPs", func(t *testing.T) {
		for _, name := range []string{"app", "secure"} {
			c.waitIngressStatus(t, name, statusWithin)
		}
		t.Logf("status %v written %s after the agents started", c.nodeIPs(), ms(time.Since(began)))
	})

	t.Run("nodeport through every node", func(t *testing.T) {
		for _, n := range c.tp.Nodes {
			addr := netip.AddrPortFrom(n.Addr, webNodePort)
			byPod := map[string]int{}
			for i := range 30 {
				r, err := harness.HTTPGet(c.ctx, c.client(), addr)
				if err != nil {
					t.Fatalf("request %d to %s: %v", i, addr, err)
				}
				// A local backend sees the client; a remote one the
				// node that SNAT'd the flow to it.
				want := n.Addr
				if c.tp.Pod(r.Pod).Node == n {
					want = netns.ClientIP
				}
				if r.Client != want {
					t.Errorf("request %d to %s: %s saw client %s, want %s", i, addr, r.Pod, r.Client, want)
				}
				byPod[r.Pod]++
			}
			for _, p := range all {
				if byPod[p.Name] == 0 {
					t.Errorf("%s: %s never answered: %v", addr, p.Name, byPod)
				}
			}
			t.Logf("%s: %v", addr, byPod)
		}
	})

	t.Run("loadbalancer ip", func(t *testing.T) {
		addr := netip.AddrPortFrom(lbIP, 80)
		byPod := map[string]int{}
		for i := range 30 {
			r, err := harness.HTTPGet(c.ctx, c.client(), addr)
			if err != nil {
				t.Fatalf("request %d to %s: %v", i, addr, err)
			}
			byPod[r.Pod]++
		}
		for _, p := range all {
			if byPod[p.Name] == 0 {
				t.Errorf("%s: %s never answered: %v", addr, p.Name, byPod)
			}
		}
		t.Logf("%s (routed via node1): %v", addr, byPod)
	})

	t.Run("ingress through every node", func(t *testing.T) {
		seen := map[string]int{}
		for _, n := range c.tp.Nodes {
			for _, url := range []string{"http://" + appHost + "/", "https://" + secureHost + "/"} {
				probe := c.ingressProbe(n, url)
				for i := range 6 {
					pod, err := probe(c.ctx)
					if err != nil {
						t.Fatalf("request %d: %v", i, err)
					}
					seen[pod]++
				}
			}
		}
		for _, p := range all {
			if seen[p.Name] == 0 {
				t.Errorf("%s never answered through the proxies: %v", p.Name, seen)
			}
		}
		t.Logf("HTTP and HTTPS through the proxies of every node: %v", seen)
	})

	t.Run("endpointslice change reaches every node within a second", func(t *testing.T) {
		swap := flip
		swap.Endpoints = harness.Endpoints(p2)
		rs := c.measureChange(t, change{
			nodePort: flipNodePort, before: []*netns.Pod{p1}, after: []*netns.Pod{p2},
			apply: func() { c.applySlice(t, swap) }, limit: applyWithin,
		})
		checkSwitchovers(t, "swap pod1a -> pod2a", rs, applyWithin)
		c.checkMaps(t, flipNodePort, p2)

		grow := flip
		grow.Endpoints = harness.Endpoints(p2, p3)
		rs = c.measureChange(t, change{
			nodePort: flipNodePort, before: []*netns.Pod{p2}, after: []*netns.Pod{p2, p3},
			apply: func() { c.applySlice(t, grow) }, limit: applyWithin, watchMaps: true,
		})
		checkSwitchovers(t, "add pod3a", rs, applyWithin)
		c.checkMaps(t, flipNodePort, p2, p3)
		flip = grow
	})

	t.Run("api server outage", func(t *testing.T) {
		c.testOutage(t, flip)
	})
}

// testOutage stops the API server under load: every node keeps serving its
// NodePorts and Ingresses and stays ready. Once the API server is back, a
// change made right away (EndpointSlice, new Ingress) reaches every node.
func (c *apiCluster) testOutage(t *testing.T, flip harness.Service) {
	var load []*prober
	for _, n := range c.tp.Nodes {
		load = append(load,
			startProber(c.ctx, n.Name+" nodeport", 10*time.Millisecond, c.nodePortProbe(netip.AddrPortFrom(n.Addr, webNodePort))),
			startProber(c.ctx, n.Name+" ingress", 10*time.Millisecond, c.ingressProbe(n, "https://"+secureHost+"/")),
		)
	}
	// The API server is down between these two.
	var down, up time.Time
	stopped := false
	stopLoad := func() {
		if stopped {
			return
		}
		stopped = true
		for _, p := range load {
			ss := p.Stop()
			var failed []sample
			during := 0
			for _, s := range ss {
				switch {
				case s.err != nil:
					failed = append(failed, s)
				case s.sent.After(down) && s.done.Before(up):
					during++
				}
			}
			t.Logf("load %s: %d requests, %d of them answered while the API server was down, %d failed", p.name, len(ss), during, len(failed))
			if during == 0 && !down.IsZero() && !up.IsZero() {
				t.Errorf("load %s: no request answered while the API server was down", p.name)
			}
			for i, s := range failed {
				if i == 5 {
					t.Errorf("load %s: ... and %d more failures", p.name, len(failed)-5)
					break
				}
				t.Errorf("load %s: request at %s: %v", p.name, s.sent.Format("15:04:05.000"), s.err)
			}
		}
	}
	defer stopLoad()
	c.waitIngressStatus(t, "app", statusWithin)
	// The status of an Ingress shows every node throughout: a leader cut
	// off from the API server, then a new term after it returns, must not
	// drop nodes whose agents kept running.
	wantStatus := strings.Join(c.nodeIPs(), ",")
	status := startProber(c.ctx, "status of app", 250*time.Millisecond, func(ctx context.Context) (string, error) {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		ing, err := c.admin.NetworkingV1().Ingresses(appNS).Get(ctx, "app", metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		var got []string
		for _, a := range ing.Status.LoadBalancer.Ingress {
			got = append(got, a.IP+a.Hostname)
		}
		slices.Sort(got)
		return strings.Join(got, ","), nil
	})
	defer func() {
		read := 0
		for _, s := range status.Stop() {
			if s.err != nil {
				continue
			}
			read++
			if s.pod != wantStatus {
				t.Errorf("status of ingress app at %s: [%s], want [%s]", s.sent.Format("15:04:05.000"), s.pod, wantStatus)
			}
		}
		t.Logf("status of ingress app read %d times around the outage", read)
	}()
	// The status is read before the outage too, not only during it.
	if err := harness.Eventually(5*time.Second, 50*time.Millisecond, func() error {
		for _, s := range status.snapshot() {
			if s.err == nil {
				return nil
			}
		}
		return fmt.Errorf("status of ingress app not read yet")
	}); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	if err := c.cp.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	down = time.Now()
	t.Logf("API server stopped in %s", ms(down.Sub(start)))
	ctx, cancel := context.WithTimeout(c.ctx, 2*time.Second)
	_, err := c.admin.CoreV1().Namespaces().Get(ctx, appNS, metav1.GetOptions{})
	cancel()
	if err == nil {
		t.Fatal("API server still answers after StopAPIServer")
	}

	// Long enough for watches to fail, relists to be attempted and the
	// status leader's renewals to miss their deadline.
	const outage = 6 * time.Second
	for end := time.Now().Add(outage); time.Now().Before(end); time.Sleep(time.Second) {
		for i, a := range c.agents {
			n := c.tp.Nodes[i]
			if !a.Running() {
				t.Fatalf("agent on %s exited while the API server was down: %v", n.Name, a.ExitErr())
			}
			if code, body, err := agentHTTP(c.ctx, n, "/readyz"); err != nil || code != http.StatusOK {
				t.Errorf("%s: /readyz while the API server is down: %d %s %v", n.Name, code, body, err)
			}
		}
	}
	up = time.Now()
	if err := c.cp.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	t.Logf("API server ready again in %s, %s after it stopped", ms(time.Since(up)), ms(time.Since(down)))

	// A change made at once: flip's backends are replaced, and a new
	// Ingress (host and status) appears.
	var (
		wg         sync.WaitGroup
		mu         sync.Mutex
		lateServed = map[string]time.Duration{}
		lateErrs   []string
		lateStatus time.Duration
	)
	var before []*netns.Pod
	for _, e := range flip.Endpoints {
		before = append(before, e.Pod)
	}
	// pod1a, unless flip is there already (the subtests before did not
	// run): then pod3a.
	target := c.tp.Pod("pod1a")
	if slices.Contains(before, target) {
		target = c.tp.Pod("pod3a")
	}
	back := flip
	back.Endpoints = harness.Endpoints(target)
	rs := c.measureChange(t, change{nodePort: flipNodePort, before: before, after: []*netns.Pod{target}, limit: catchUpWithin, pause: 10 * time.Millisecond, apply: func() {
		c.applyIngress(t, harness.Ingress{Name: "late", Namespace: appNS, Rules: []harness.IngressRule{hostRule(lateHost, "web")}})
		applied := time.Now()
		for _, n := range c.tp.Nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				probe := c.ingressProbe(n, "http://"+lateHost+"/")
				err := harness.Eventually(catchUpWithin, 50*time.Millisecond, func() error {
					_, err := probe(c.ctx)
					return err
				})
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					lateErrs = append(lateErrs, fmt.Sprintf("%s: %v", n.Name, err))
					return
				}
				lateServed[n.Name] = time.Since(applied)
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := c.nodeIPs()
			err := harness.Eventually(catchUpWithin, 100*time.Millisecond, func() error {
				got, err := c.ingressStatus("late")
				if err != nil {
					return err
				}
				if !slices.Equal(got, want) {
					return fmt.Errorf("status %v, want %v", got, want)
				}
				return nil
			})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				lateErrs = append(lateErrs, "status of ingress late: "+err.Error())
				return
			}
			lateStatus = time.Since(applied)
		}()
		// Last: what measureChange times from apply's return.
		c.applySlice(t, back)
	}})
	wg.Wait()
	checkSwitchovers(t, "after the restart, swap to "+target.Name, rs, catchUpWithin)
	c.checkMaps(t, flipNodePort, target)
	for _, e := range lateErrs {
		t.Error(e)
	}
	var served []string
	for _, n := range c.tp.Nodes {
		served = append(served, fmt.Sprintf("%s %s", n.Name, ms(lateServed[n.Name])))
	}
	t.Logf("after the restart, new Ingress served on %s; its status written after %s", strings.Join(served, ", "), ms(lateStatus))
	stopLoad()
}
