package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nodegress/nodegress/loader"
	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/netns"
)

// TestLargeTransfers moves megabytes both ways through a NodePort, to a
// local and to a remote backend: thousands of full-size segments whose
// checksums the datapath rewrites. A wrong checksum on any of them shows up
// as a stalled or corrupt transfer.
func TestLargeTransfers(t *testing.T) {
	tp := netns.TwoNodes(t, 1, 1)
	c := newCluster(t, tp, []int{1, 2},
		harness.Service{Name: "bulk-local", Ports: []harness.Port{http80(30150)}, Endpoints: harness.Endpoints(tp.Pod("pod1a"))},
		harness.Service{Name: "bulk-remote", Ports: []harness.Port{http80(30151)}, Endpoints: harness.Endpoints(tp.Pod("pod2a"))},
	)
	n1 := c.node(1)
	const size = 8 << 20
	upload := randomBytes(t, size)
	tests := []struct {
		name string
		addr netip.AddrPort
		want harness.Reply
	}{
		{"local backend", addrPort(n1.Addr, 30150), harness.Reply{Pod: "pod1a", Client: netns.ClientIP}},
		{"remote backend", addrPort(n1.Addr, 30151), harness.Reply{Pod: "pod2a", Client: n1.Addr}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := c.with(t)
			c.waitServed(tt.addr, 5*settle)
			start := time.Now()
			r, err := harness.HTTPDownload(c.ctx, c.client(), tt.addr, size)
			if err != nil {
				t.Fatalf("download: %v", err)
			}
			if r != tt.want {
				t.Errorf("download answered by %v, want %v", r, tt.want)
			}
			t.Logf("downloaded %d MiB in %s", size>>20, time.Since(start).Round(time.Millisecond))
			start = time.Now()
			r, err = harness.HTTPUpload(c.ctx, c.client(), tt.addr, upload)
			if err != nil {
				t.Fatalf("upload: %v", err)
			}
			if r != tt.want {
				t.Errorf("upload answered by %v, want %v", r, tt.want)
			}
			t.Logf("uploaded %d MiB in %s", size>>20, time.Since(start).Round(time.Millisecond))
		})
	}
}

// TestConcurrentConnections opens many connections at once through local and
// remote backends: every one must get its answer from a backend of the
// service, with the client address that backend's locality implies.
func TestConcurrentConnections(t *testing.T) {
	tp := netns.TwoNodes(t, 2, 2)
	c := newCluster(t, tp, []int{1, 2}, harness.Service{
		Name:      "many",
		Ports:     []harness.Port{http80(30160)},
		Endpoints: harness.Endpoints(tp.Pods()...),
	})
	n1 := c.node(1)
	addr := addrPort(n1.Addr, 30160)
	c.waitServed(addr, 5*settle)
	want := map[string]netip.Addr{
		"pod1a": netns.ClientIP, "pod1b": netns.ClientIP,
		"pod2a": n1.Addr, "pod2b": n1.Addr,
	}

	const workers, perWorker = 16, 25
	var (
		mu     sync.Mutex
		byPod  = map[string]int{}
		errs   []error
		wg     sync.WaitGroup
		starts = make(chan struct{})
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-starts
			for range perWorker {
				r, err := c.get(addr)
				mu.Lock()
				switch {
				case err != nil:
					errs = append(errs, err)
				case want[r.Pod] != r.Client:
					errs = append(errs, fmt.Errorf("%s saw client %s, want %s", r.Pod, r.Client, want[r.Pod]))
				default:
					byPod[r.Pod]++
				}
				mu.Unlock()
			}
		}()
	}
	close(starts)
	wg.Wait()
	t.Logf("%d connections: %v, %d errors", workers*perWorker, byPod, len(errs))
	for i, err := range errs {
		if i == 10 {
			t.Errorf("... and %d more", len(errs)-10)
			break
		}
		t.Error(err)
	}
	for p := range want {
		if byPod[p] == 0 {
			t.Errorf("%s answered none of %d connections", p, workers*perWorker)
		}
	}
}

// TestUDPRemoteBackend sends datagrams through node1 to a pod on node2: the
// flow is SNAT'd to node1's address and the reply comes back through node1.
func TestUDPRemoteBackend(t *testing.T) {
	tp := netns.TwoNodes(t, 0, 1)
	c := newCluster(t, tp, []int{1, 2}, harness.Service{
		Name:      "echo",
		Ports:     []harness.Port{{Name: "echo", Protocol: "UDP", Port: 9090, TargetPort: harness.PodUDPPort, NodePort: 30096}},
		Endpoints: harness.Endpoints(tp.Pod("pod2a")),
	})
	n1 := c.node(1)
	addr := addrPort(n1.Addr, 30096)
	if err := harness.Eventually(5*settle, 50*time.Millisecond, func() error {
		_, err := harness.UDPRequest(c.ctx, c.client(), addr, "hello")
		return err
	}); err != nil {
		t.Fatalf("udp %s not served: %v", addr, err)
	}
	tl := c.requests(addr, 16, true, map[string]netip.Addr{"pod2a": n1.Addr})
	t.Logf("%s: %s", addr, tl)
}

// TestExternalTrafficPolicyLocal checks a service that must keep the
// client's address: a node forwards only to its own backends, and a node
// without one does not forward at all (as kube-proxy does).
func TestExternalTrafficPolicyLocal(t *testing.T) {
	tp := netns.TwoNodes(t, 0, 1)
	c := newCluster(t, tp, []int{1, 2}, harness.Service{
		Name:                  "local",
		Ports:                 []harness.Port{http80(30170)},
		ExternalTrafficPolicy: "Local",
		Endpoints:             harness.Endpoints(tp.Pod("pod2a")),
	})
	n1, n2 := c.node(1), c.node(2)

	t.Run("node with a local backend", func(t *testing.T) {
		c := c.with(t)
		addr := addrPort(n2.Addr, 30170)
		c.waitServed(addr, 5*settle)
		c.requests(addr, 8, false, map[string]netip.Addr{"pod2a": netns.ClientIP})
	})
	t.Run("node without one", func(t *testing.T) {
		for i := range 2 {
			if r, err := c.get(addrPort(n1.Addr, 30170)); err == nil {
				t.Errorf("request %d through node1 answered by %s, want no answer", i, r.Pod)
			}
		}
	})
}

// TestNodeTrafficPasses checks that traffic for the node itself, on ports
// that are no frontend, reaches the node's own sockets untouched while the
// agent runs: TCP, UDP, and TCP on a frontend address with another port.
func TestNodeTrafficPasses(t *testing.T) {
	tp := netns.SingleNode(t, 1)
	c := newCluster(t, tp, []int{1}, harness.Service{Name: "web", Ports: []harness.Port{http80(30180)}, Endpoints: harness.Endpoints(tp.Pod("pod1a"))})
	node := c.node(1)
	c.waitServed(addrPort(node.Addr, 30180), 5*settle)

	ln, err := node.Listen("tcp", addrPort(node.Addr, 30181).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
				_, _ = io.Copy(conn, conn)
			}()
		}
	}()
	pc, err := node.ListenPacket("udp", addrPort(node.Addr, 30181).String())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()

	for _, network := range []string{"tcp", "udp"} {
		t.Run(network, func(t *testing.T) {
			for i := range 5 {
				conn, err := c.client().DialContext(c.ctx, network, addrPort(node.Addr, 30181).String())
				if err != nil {
					t.Fatalf("dial %d: %v", i, err)
				}
				msg := fmt.Sprintf("hello %d", i)
				_ = conn.SetDeadline(time.Now().Add(harness.RequestTimeout))
				if _, err := conn.Write([]byte(msg)); err != nil {
					t.Fatal(err)
				}
				if tc, ok := conn.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
				buf := make([]byte, 64)
				n, err := io.ReadAtLeast(conn, buf, len(msg))
				conn.Close()
				if err != nil || string(buf[:n]) != msg {
					t.Errorf("echo %d from the node: %q, %v", i, buf[:n], err)
				}
			}
		})
	}
}

// TestSourcePortReuse opens a new connection from the same client address
// and port after the previous one closed and its backend was removed: the
// new SYN must pick a backend of the current set instead of following the
// old flow's state.
func TestSourcePortReuse(t *testing.T) {
	tp := netns.SingleNode(t, 2)
	a, b := tp.Pod("pod1a"), tp.Pod("pod1b")
	svc := harness.Service{Name: "reuse", Ports: []harness.Port{http80(30190)}, Endpoints: harness.Endpoints(a)}
	c := newCluster(t, tp, []int{1}, svc)
	addr := addrPort(c.node(1).Addr, 30190)
	c.waitServed(addr, 5*settle)

	const srcPort = 40123
	get := func() (harness.Reply, error) {
		return harness.HTTPGetFrom(c.ctx, c.client(), addrPort(netns.ClientIP, srcPort), addr)
	}
	if r, err := get(); err != nil || r.Pod != "pod1a" {
		t.Fatalf("first connection from port %d: %v, %v; want pod1a", srcPort, r, err)
	}
	svc.Endpoints = harness.Endpoints(b)
	c.apply(svc)
	c.waitBackends(addr, b)
	for i := range 3 {
		r, err := get()
		if err != nil {
			t.Fatalf("connection %d from port %d after the change: %v", i, srcPort, err)
		}
		if r.Pod != "pod1b" {
			t.Errorf("connection %d from port %d after the change answered by %s, want pod1b", i, srcPort, r.Pod)
		}
	}
}

// synRetransmits is the client namespace's count of retransmitted SYNs.
func synRetransmits(t *testing.T, ns *netns.NS) int {
	t.Helper()
	out, err := ns.Exec("cat", "/proc/net/netstat")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out, "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != "TcpExt:" || len(values) != len(names) {
			continue
		}
		for j, n := range names {
			if n == "TCPSynRetrans" {
				v, err := strconv.Atoi(values[j])
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
		}
	}
	t.Fatalf("no TcpExt TCPSynRetrans in /proc/net/netstat:\n%s", out)
	return 0
}

// TestSNATPortReuse cycles new connections to one remote backend through
// a range of 16 SNAT ports, three times over: the backend (a real Linux
// stack) holds each closed connection in TIME_WAIT, and takes the next
// client's SYN from the same port over it because the datapath gives every
// flow timestamps that start at the node's clock. No SYN is lost or
// refused. Without client timestamps the same path keeps closed ports for
// the backend's whole TIME_WAIT, and the seventeenth connection finds none
// (to another backend: ports are per backend).
func TestSNATPortReuse(t *testing.T) {
	tp := netns.TwoNodes(t, 1, 2)
	svc := harness.Service{Name: "reuse-remote", Ports: []harness.Port{http80(30191)}, Endpoints: harness.Endpoints(tp.Pod("pod2a"))}
	other := harness.Service{Name: "reuse-other", Ports: []harness.Port{http80(30192)}, Endpoints: harness.Endpoints(tp.Pod("pod2b"))}
	c := newClusterWith(t, tp, harness.AgentConfig{Args: []string{"--snat-ports", "20000-20015"}}, []int{1, 2}, svc, other)
	n1 := c.node(1)
	addr := addrPort(n1.Addr, 30191)
	c.waitServed(addr, 5*settle)
	agent := c.agents[0]

	// In any 2 s (the idle time before a port is reused) at most 11 of
	// the 16 ports are taken, with waitServed's.
	retrans, exhausted := synRetransmits(t, c.client()), counted(t, agent, loader.ReasonDropSNATExhausted)
	const conns, pace = 48, 200 * time.Millisecond // a port comes back every 3.2 s
	start := time.Now()
	for i := range conns {
		time.Sleep(time.Until(start.Add(time.Duration(i) * pace)))
		r, err := c.get(addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		if r.Pod != "pod2a" || r.Client != n1.Addr {
			t.Fatalf("connection %d answered by %v, want pod2a seeing %s", i, r, n1.Addr)
		}
	}
	if got := synRetransmits(t, c.client()) - retrans; got != 0 {
		t.Errorf("%d SYNs retransmitted for %d connections through 16 ports", got, conns)
	}
	if got := counted(t, agent, loader.ReasonDropSNATExhausted); got != exhausted {
		t.Errorf("%d SYNs found no SNAT port", got-exhausted)
	}

	t.Run("without client timestamps", func(t *testing.T) {
		c := c.with(t)
		addr := addrPort(n1.Addr, 30192)
		tp.Client.MustSysctl("net.ipv4.tcp_timestamps", "0")
		exhausted := counted(t, agent, loader.ReasonDropSNATExhausted)
		for i := range 16 {
			if _, err := c.get(addr); err != nil {
				t.Fatalf("connection %d of 16 (one per port): %v", i, err)
			}
		}
		ctx, cancel := context.WithTimeout(c.ctx, 500*time.Millisecond)
		defer cancel()
		if r, err := harness.HTTPGet(ctx, c.client(), addr); err == nil {
			t.Errorf("a seventeenth connection was answered (%v) while every port's backend TIME_WAIT lasts", r)
		}
		if got := counted(t, agent, loader.ReasonDropSNATExhausted); got == exhausted {
			t.Errorf("no SYN counted under %s", loader.ReasonDropSNATExhausted)
		}
	})
}

// TestSNATAddresses gives node1 a second address for SNAT
// (--snat-addresses) and two SNAT ports: four connections held open to one
// remote backend all get through, from both addresses, and a fifth finds
// no port.
func TestSNATAddresses(t *testing.T) {
	tp := netns.TwoNodes(t, 1, 1)
	n1 := tp.Nodes[0]
	second := netip.MustParseAddr("10.100.0.101")
	n1.MustIP("addr", "add", netip.PrefixFrom(second, netns.WireNet.Bits()).String(), "dev", n1.Dev)
	svc := harness.Service{Name: "two-addrs", Ports: []harness.Port{http80(30193)}, Endpoints: harness.Endpoints(tp.Pod("pod2a"))}
	c := newClusterWith(t, tp, harness.AgentConfig{Args: []string{"--snat-ports", "20000-20001", "--snat-addresses", second.String() + "/32"}}, []int{1}, svc)
	addr := addrPort(n1.Addr, 30193)
	// Programmed, without a connection that would hold a port.
	c.waitBackends(addr, tp.Pod("pod2a"))

	seen := map[netip.Addr]int{}
	for i := range 4 {
		hc, err := harness.DialHTTP(c.ctx, c.client(), addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { hc.Close() })
		r, err := hc.Get(c.ctx)
		if err != nil {
			t.Fatalf("connection %d of 4 (two addresses, two ports): %v", i, err)
		}
		seen[r.Client]++
	}
	if seen[n1.Addr] != 2 || seen[second] != 2 {
		t.Errorf("pod2a saw the connections from %v, want two from each of %s and %s", seen, n1.Addr, second)
	}
	exhausted := counted(t, c.agents[0], loader.ReasonDropSNATExhausted)
	ctx, cancel := context.WithTimeout(c.ctx, 500*time.Millisecond)
	defer cancel()
	if r, err := harness.HTTPGet(ctx, c.client(), addr); err == nil {
		t.Errorf("a fifth connection was answered (%v) with every address and port held", r)
	}
	if counted(t, c.agents[0], loader.ReasonDropSNATExhausted) == exhausted {
		t.Errorf("no SYN counted under %s", loader.ReasonDropSNATExhausted)
	}
}
