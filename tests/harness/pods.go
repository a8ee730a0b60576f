package harness

import (
	"bufio"
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nodegress/nodegress/tests/netns"
)

// Ports every pod server listens on.
const (
	PodHTTPPort = 8080
	// PodH2CPort serves the same as PodHTTPPort, with cleartext HTTP/2
	// (prior knowledge) besides HTTP/1.1.
	PodH2CPort = 8081
	// PodHTTPSPort serves it over TLS with the pod's own certificate (its
	// name as CN).
	PodHTTPSPort = 8443
	PodUDPPort   = 9090
)

// StartPodServers runs podserver in each pod (HTTP on PodHTTPPort, HTTP/1.1
// and h2c on PodH2CPort, HTTPS on PodHTTPSPort, UDP echo on PodUDPPort) and waits until all are
// listening. They are killed in
// t.Cleanup.
func StartPodServers(t testing.TB, pods ...*netns.Pod) {
	t.Helper()
	bin := Podserver(t)
	for _, p := range pods {
		startPodServer(t, bin, p)
	}
}

func startPodServer(t testing.TB, bin string, p *netns.Pod) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := p.Command(ctx, bin,
		"--name", p.Name,
		"--http", fmt.Sprintf(":%d", PodHTTPPort),
		"--h2c", fmt.Sprintf(":%d", PodH2CPort),
		"--https", fmt.Sprintf(":%d", PodHTTPSPort),
		"--udp", fmt.Sprintf(":%d", PodUDPPort))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start podserver in %s: %v", p.Name, err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "ready" {
				ready <- true
				break
			}
		}
		ready <- false
		// Keep draining so the server never blocks on a full pipe.
		for sc.Scan() {
		}
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("podserver in %s exited before ready: %s", p.Name, stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("podserver in %s not ready after 5s: %s", p.Name, stderr.String())
	}
}
