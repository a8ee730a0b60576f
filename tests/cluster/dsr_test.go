package cluster

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/nodegress/nodegress/controller"
)

// dsrNodePort serves the web pods by direct server return.
const dsrNodePort = 30081

// decapReasons count DSR packets a backend's node decapsulated: handed to
// its routing, or straight into the pod (--pod-redirect, on when replacing
// kube-proxy).
var decapReasons = []string{"dsr_decap", "dsr_decap_peer"}

// checkDSR serves the web pods (one per node) through a second NodePort
// annotated for direct server return and sends new connections to the
// first node's: every pod answers and sees the client's own address, where
// the SNAT'd NodePort shows remote pods the first node's. The first node
// encapsulated, the others decapsulated.
func checkDSR(t *testing.T, c *cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web-dsr", Namespace: testNS,
			Annotations: map[string]string{controller.AnnotationForwardingMode: "dsr"}},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeNodePort,
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), NodePort: dsrNodePort}},
		},
	}
	if _, err := c.client.CoreV1().Services(testNS).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ingress, others := c.nodes[0], c.nodes[1:]
	encapsulated := datapathCounted(t, c, ingress, "fwd_dsr")
	decapsulated := 0
	for _, n := range others {
		decapsulated += datapathCounted(t, c, n, decapReasons...)
	}

	// One connection per curl, two requests on it: who answers, and whom
	// it sees.
	get := func(port int) (pod, client string, err error) {
		base := fmt.Sprintf("http://%s:%d", c.nodeIPs[0], port)
		out, err := exec.Command("ip", "netns", "exec", c.clientNS, "curl", "-sS", "-m", "2", "-w", "\n", base+"/hostname", base+"/clientip").CombinedOutput()
		if err != nil {
			return "", "", fmt.Errorf("%w: %s", err, out)
		}
		f := strings.Fields(string(out))
		if len(f) != 2 || !strings.HasPrefix(f[0], "web-") {
			return "", "", fmt.Errorf("not an agnhost answer: %q", out)
		}
		host, _, err := net.SplitHostPort(f[1])
		return f[0], host, err
	}
	if err := poll(ctx, 200*time.Millisecond, func() (bool, error) {
		_, _, err := get(dsrNodePort)
		return err == nil, nil
	}); err != nil {
		c.dump(t)
		t.Fatalf("NodePort %d never answered: %v", dsrNodePort, err)
	}
	const tries = 30 // a pod misses all 30 with probability about 1.6e-5
	byPod := map[string]int{}
	for i := 0; i < tries; i++ {
		pod, client, err := get(dsrNodePort)
		if err != nil {
			t.Errorf("connection %d: %v", i, err)
			continue
		}
		byPod[pod]++
		if client != c.env["CLIENT_IP"] {
			t.Errorf("connection %d: %s saw client %s, want the client's own %s", i, pod, client, c.env["CLIENT_IP"])
		}
	}
	t.Logf("DSR NodePort %s:%d answered by %v", c.nodeIPs[0], dsrNodePort, byPod)
	if len(byPod) != len(c.nodes) {
		c.dump(t)
		t.Errorf("answered by %d pods %v, want all %d (one per node)", len(byPod), byPod, len(c.nodes))
	}
	if got := datapathCounted(t, c, ingress, "fwd_dsr"); got <= encapsulated {
		t.Errorf("%s encapsulated nothing (fwd_dsr %d, then %d)", ingress, encapsulated, got)
	}
	after := 0
	for _, n := range others {
		after += datapathCounted(t, c, n, decapReasons...)
	}
	if after <= decapsulated {
		t.Errorf("%v decapsulated nothing (%v: %d, then %d)", others, decapReasons, decapsulated, after)
	}

	// The SNAT'd NodePort on the same path: a remote pod sees the node.
	seen := map[string]bool{}
	for i := 0; i < tries && len(seen) < 2; i++ {
		_, client, err := get(nodePort)
		if err != nil {
			t.Errorf("SNAT connection %d: %v", i, err)
			continue
		}
		seen[client] = true
	}
	if !seen[c.nodeIPs[0]] {
		t.Errorf("no pod behind the SNAT'd NodePort saw %s: %v", c.nodeIPs[0], seen)
	}
}
