package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/netns"
)

// TestProxyProtocol runs the agent with the client's address as a load
// balancer sending the PROXY protocol, through the datapath's steering
// to node1's proxy: a pod sees the address the header carries (v1 and
// v2); a connection from the load balancer without a header is refused,
// on the same frontend.
func TestProxyProtocol(t *testing.T) {
	tp := netns.TwoNodes(t, 1, 1)
	svcs := []harness.Service{svc("web", tp.Pod("pod1a"), tp.Pod("pod2a"))}
	site := harness.Ingress{Name: "site", Rules: []harness.IngressRule{rule("pp.test", path("/", "web"))}}
	lb := netip.PrefixFrom(tp.Client.Addr, 32)
	// The Ingress comes after the agent: the helper's readiness request
	// has no header, which the agent rightly refuses from the load
	// balancer; the first request below waits instead.
	c := newL7ClusterArgs(t, tp, svcs, []string{"--proxy-protocol-from", lb.String()})
	c.applyIngress(site)
	frontend := netip.AddrPortFrom(c.node1().Addr, 80)
	client := &net.TCPAddr{IP: net.ParseIP("198.51.100.23"), Port: 40000}
	dst := net.TCPAddrFromAddrPort(frontend)

	// echoVia sends header and a GET /headers on a new connection and
	// returns the pod's echo of the request.
	echoVia := func(header []byte) (*harness.Echo, error) {
		ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
		defer cancel()
		conn, err := c.client().DialContext(ctx, "tcp", frontend.String())
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write(append(header, "GET /headers HTTP/1.1\r\nHost: pp.test\r\nConnection: close\r\n\r\n"...)); err != nil {
			return nil, err
		}
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			return nil, err
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		if err != nil || res.StatusCode != 200 {
			return nil, fmt.Errorf("%d %q %v", res.StatusCode, body, err)
		}
		var e harness.Echo
		if err := json.Unmarshal(body, &e); err != nil {
			return nil, fmt.Errorf("echo %q: %w", body, err)
		}
		return &e, nil
	}
	for _, version := range []byte{1, 2} {
		header, err := proxyproto.HeaderProxyFromAddrs(version, client, dst).Format()
		if err != nil {
			t.Fatal(err)
		}
		var e *harness.Echo
		err = harness.Eventually(5*settle, 50*time.Millisecond, func() (err error) {
			e, err = echoVia(header)
			return err
		})
		if err != nil {
			t.Fatalf("v%d: %v", version, err)
		}
		if got := e.Headers.Get("X-Forwarded-For"); got != "198.51.100.23" {
			t.Errorf("v%d: pod %s saw X-Forwarded-For %q, want the header's client 198.51.100.23", version, e.Pod, got)
		}
	}
	if e, err := echoVia(nil); err == nil {
		t.Errorf("a connection from the load balancer without a PROXY header was served by %s", e.Pod)
	}
}
