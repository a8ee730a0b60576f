package e2e

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nodegress/nodegress/loader"
	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/netns"
)

// TestPathMTU: the links from the switch to node2 and to the client carry
// only 1400 bytes (as a tunnel would), which node1's routes there say
// (locked MTU), while the client and the pod have 1500-byte devices and
// negotiate a 1460-byte MSS. Uploads and downloads through a NodePort of
// node1 still complete: the datapath answers packets too big for the route
// with "fragmentation needed" (counted) where they would otherwise vanish
// in the switch, and path MTU discovery on the client and the pod does
// the rest.
func TestPathMTU(t *testing.T) {
	tp := netns.TwoNodes(t, 1, 1)
	pod2a := tp.Pod("pod2a")
	c := newCluster(t, tp, []int{1},
		harness.Service{Name: "remote", Ports: []harness.Port{http80(30160)}, Endpoints: harness.Endpoints(pod2a)})
	n1, n2 := c.node(1), c.node(2)
	addr := addrPort(n1.Addr, 30160)
	c.waitServed(addr, 5*settle)
	// The switch drops frames above 1400 bytes towards node2 and the
	// client; node1's routes know (forwarding honours a locked MTU).
	tp.Switch.MustIP("link", "set", "sw-node2", "mtu", "1400")
	tp.Switch.MustIP("link", "set", "sw-client", "mtu", "1400")
	n1.MustIP("route", "replace", n2.PodCIDR.String(), "via", n2.Addr.String(), "dev", netns.ExtDev, "mtu", "lock", "1400")
	n1.MustIP("route", "add", netns.ClientIP.String()+"/32", "dev", netns.ExtDev, "mtu", "lock", "1400")

	body := make([]byte, 256<<10)
	if _, err := rand.Read(body); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(file, body, 0o644); err != nil {
		t.Fatal(err)
	}
	curl := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(c.ctx, 20*time.Second)
		defer cancel()
		out, err := c.client().Command(ctx, "curl", append([]string{"-sS", "--fail", "-m", "15"}, args...)...).CombinedOutput()
		return string(out), err
	}

	t.Run("upload", func(t *testing.T) {
		out, err := curl("--data-binary", "@"+file, fmt.Sprintf("http://%s/upload", addr))
		want := fmt.Sprintf("bytes=%d sha256=%x", len(body), sha256.Sum256(body))
		if err != nil || !strings.Contains(out, want) {
			t.Fatalf("upload through a 1400-byte route: %v %q, want %q", err, out, want)
		}
	})
	t.Run("download", func(t *testing.T) {
		out, err := curl("-o", "-", fmt.Sprintf("http://%s/data?size=%d", addr, len(body)))
		if err != nil || len(out) != len(body) {
			t.Fatalf("download through a 1400-byte route: %v, %d bytes", err, len(out))
		}
	})
	if n, err := c.agents[0].Counted(loader.ReasonICMPFragNeeded.String()); err != nil || n < 2 {
		t.Errorf("%s counted %d times (%v), want both directions", loader.ReasonICMPFragNeeded, n, err)
	}
}
