package netns

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"

	"github.com/nodegress/nodegress/tests/internal/xdpstub"
)

var (
	privOnce sync.Once
	privErr  error
)

// RequirePrivileged skips the test, with the reason, when the host cannot run
// privileged network tests: not root, `ip` or `ethtool` missing, no network
// namespaces, no XDP, or no native XDP on veth. Under CI (CI=true) it fails
// the test instead: CI runs as root on a kernel that has everything, so a
// skip there would hide a broken environment behind a green run.
func RequirePrivileged(t testing.TB) {
	t.Helper()
	privOnce.Do(func() { privErr = checkPrivileged() })
	if privErr == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("privileged test cannot run under CI: %v", privErr)
	}
	t.Skipf("privileged test skipped: %v", privErr)
}

func checkPrivileged() error {
	if os.Geteuid() != 0 {
		return errors.New("not running as root")
	}
	for _, bin := range []string{"ip", "ethtool"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%s not found: %w", bin, err)
		}
	}
	if err := features.HaveProgramType(ebpf.XDP); err != nil {
		return fmt.Errorf("xdp programs unsupported: %w", err)
	}
	return probeVethXDP()
}

// probeVethXDP creates a namespace with a veth pair and attaches the XDP
// stub in native mode: that covers namespaces, veth and native XDP on veth,
// everything the topologies rely on.
func probeVethXDP() (err error) {
	name := "ngprobe-" + RandomSuffix(6)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return fmt.Errorf("network namespaces unavailable: %w: %s", err, out)
	}
	defer func() {
		if out, derr := exec.Command("ip", "netns", "del", name).CombinedOutput(); derr != nil && err == nil {
			err = fmt.Errorf("ip netns del %s: %w: %s", name, derr, out)
		}
	}()
	if out, err := exec.Command("ip", "-n", name, "link", "add", "name", "a", "type", "veth", "peer", "name", "b").CombinedOutput(); err != nil {
		return fmt.Errorf("veth unavailable: %w: %s", err, out)
	}
	n := &NS{Name: name}
	return n.Do(func() error {
		l, err := xdpstub.AttachLink("a")
		if err != nil {
			return fmt.Errorf("native xdp on veth unavailable: %w", err)
		}
		return l.Close()
	})
}
