package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nodegress/nodegress/tests/netns"
)

// CaptureEnv turns packet captures on in e2e tests when set to a non-empty
// value: every wire-facing device is recorded and, when a test fails, the
// packets are printed with the other diagnostics.
const CaptureEnv = "NODEGRESS_E2E_PCAP"

// captureLines bounds how much of a capture a failed test prints.
const captureLines = 300

// Capture records packets on dev inside ns with tcpdump until the end of the
// test and logs them, decoded, if the test failed. Frames an XDP program
// sends with XDP_TX or redirect bypass packet taps on the sending device:
// capture the receiving peer to see them.
func Capture(t testing.TB, ns *netns.NS, dev string) {
	t.Helper()
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Logf("no packet capture on %s/%s: tcpdump not found", ns.Name, dev)
		return
	}
	file := filepath.Join(t.TempDir(), "capture.pcap")
	ctx, cancel := context.WithCancel(context.Background())
	cmd := ns.Command(ctx, "tcpdump", "-i", dev, "-nn", "-U", "--immediate-mode", "-s", "256", "-w", file)
	// SIGINT makes tcpdump flush and close the file; --immediate-mode
	// keeps packets from waiting in a kernel block that SIGINT would lose.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGINT) }
	cmd.WaitDelay = 3 * time.Second
	stderr := new(syncBuffer)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("tcpdump on %s/%s: %v", ns.Name, dev, err)
	}
	// tcpdump is ready once it reports listening.
	deadline := time.Now().Add(3 * time.Second)
	for !strings.Contains(stderr.String(), "listening on") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if !t.Failed() {
			return
		}
		out, err := exec.Command("tcpdump", "-nn", "-e", "-r", file).CombinedOutput()
		lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
		if len(lines) > captureLines {
			lines = append([]string{fmt.Sprintf("(first %d packets omitted)", len(lines)-captureLines)}, lines[len(lines)-captureLines:]...)
		}
		t.Logf("==== packets on %s in %s (%v):\n%s", dev, ns.Name, err, strings.Join(lines, "\n"))
	})
}

// CaptureEnabled tells whether CaptureEnv asks for packet captures.
func CaptureEnabled() bool { return os.Getenv(CaptureEnv) != "" }

// syncBuffer is a bytes buffer safe to read while a command writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
