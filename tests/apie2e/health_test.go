package apie2e

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodegress/nodegress/controller/healthcheck"
	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/netns"
)

const (
	localNodePort = 30095
	// healthzAddr is each agent's --healthz-bind-address.
	healthzAddr = "127.0.0.1:10256"
)

// TestHealthCheckNodePort checks what a cloud load balancer sees with
// kube-proxy gone: the API server allocates a healthCheckNodePort to a
// LoadBalancer Service with externalTrafficPolicy Local, and each agent
// answers it on its node as kube-proxy would, 200 on the node with the
// pod and 503 on the other, then 503 on both once the pod is gone. The
// node health server answers /healthz 200 until the cluster autoscaler's
// taint marks a node for removal.
func TestHealthCheckNodePort(t *testing.T) {
	c := newAPICluster(t, 1, 0)
	n1, n2 := c.tp.Nodes[0], c.tp.Nodes[1]
	pod := c.tp.Pod("pod1a")
	svc := harness.Service{
		Name: "local-lb", Namespace: appNS, Type: "LoadBalancer", ExternalTrafficPolicy: "Local",
		Ports: []harness.Port{http80(localNodePort)}, Endpoints: harness.Endpoints(pod),
	}
	c.applyService(t, svc)
	obj, err := c.admin.CoreV1().Services(appNS).Get(c.ctx, svc.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hcPort := obj.Spec.HealthCheckNodePort
	if hcPort == 0 {
		t.Fatalf("the API server allocated no healthCheckNodePort: %+v", obj.Spec)
	}
	hcAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(hcPort)))
	c.startAgents("--healthz-bind-address", healthzAddr)

	// answers waits until the health check port of n answers code with
	// the body kube-proxy would send.
	answers := func(t *testing.T, n *netns.Node, code, endpoints int) {
		t.Helper()
		want := fmt.Sprintf("{\n\t\"service\": {\n\t\t\"namespace\": %q,\n\t\t\"name\": %q\n\t},\n\t\"localEndpoints\": %d,\n\t\"serviceProxyHealthy\": true\n}",
			appNS, svc.Name, endpoints)
		start := time.Now()
		err := harness.Eventually(applyWithin+5*time.Second, 50*time.Millisecond, func() error {
			got, body, err := nodeHTTP(c.ctx, n, hcAddr, "/")
			if err != nil {
				return err
			}
			if got != code || body != want {
				return fmt.Errorf("%d %q, want %d %q", got, body, code, want)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: health check port %d: %v", n.Name, hcPort, err)
		}
		t.Logf("%s: health check port %d answers %d (waited %s)", n.Name, hcPort, code, ms(time.Since(start)))
	}
	// healthz waits until /healthz of n answers code.
	healthz := func(t *testing.T, n *netns.Node, code int, eligible bool) {
		t.Helper()
		err := harness.Eventually(applyWithin+5*time.Second, 50*time.Millisecond, func() error {
			got, body, err := nodeHTTP(c.ctx, n, healthzAddr, "/healthz")
			if err != nil {
				return err
			}
			if got != code || !strings.Contains(body, fmt.Sprintf(`"nodeEligible":%t,`, eligible)) {
				return fmt.Errorf("%d %s, want %d with nodeEligible %t", got, body, code, eligible)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: /healthz: %v", n.Name, err)
		}
	}

	t.Run("200 where the pod runs, 503 elsewhere", func(t *testing.T) {
		answers(t, n1, http.StatusOK, 1)
		answers(t, n2, http.StatusServiceUnavailable, 0)
	})
	t.Run("503 everywhere once the pod is gone", func(t *testing.T) {
		gone := svc
		gone.Endpoints = nil
		c.applySlice(t, gone)
		answers(t, n1, http.StatusServiceUnavailable, 0)
		answers(t, n2, http.StatusServiceUnavailable, 0)
	})
	t.Run("node health server drains a node tainted for removal", func(t *testing.T) {
		healthz(t, n1, http.StatusOK, true)
		healthz(t, n2, http.StatusOK, true)
		node, err := c.admin.CoreV1().Nodes().Get(c.ctx, n2.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		node.Spec.Taints = append(node.Spec.Taints, corev1.Taint{Key: healthcheck.ToBeDeletedTaint, Effect: corev1.TaintEffectNoSchedule})
		if _, err := c.admin.CoreV1().Nodes().Update(c.ctx, node, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		healthz(t, n2, http.StatusServiceUnavailable, false)
		healthz(t, n1, http.StatusOK, true)
		if code, body, err := nodeHTTP(c.ctx, n2, healthzAddr, "/livez"); err != nil || code != http.StatusOK {
			t.Errorf("%s: /livez of a drained node: %d %s %v, want 200", n2.Name, code, body, err)
		}
	})
}
