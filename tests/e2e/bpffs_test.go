package e2e

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/netns"
)

// TestDefaultBPFFS runs the agent as the README's standalone example does,
// with no --bpffs (nor --trace-socket), under `ip netns exec`: there /sys is
// a fresh sysfs, and /sys/fs/bpf a plain directory in which nothing can be
// created, as on a host without systemd. The agent must mount a bpffs at
// /sys/fs/bpf itself and serve local and remote backends. (One agent: two
// with the default trace socket would share the host's /run.)
func TestDefaultBPFFS(t *testing.T) {
	hostBefore := mountsAt(t, harness.DefaultBPFFSRoot)
	tp := netns.TwoNodes(t, 1, 1)
	c := newClusterWith(t, tp, harness.AgentConfig{DefaultPaths: true}, []int{1},
		harness.Service{Name: "mixed", Ports: []harness.Port{http80(30190)}, Endpoints: harness.Endpoints(tp.Pod("pod1a"), tp.Pod("pod2a"))},
	)
	n1 := c.node(1)
	addr := addrPort(n1.Addr, 30190)
	c.waitServed(addr, 5*settle)
	tl := c.requests(addr, 30, false, map[string]netip.Addr{"pod1a": netns.ClientIP, "pod2a": n1.Addr})
	c.wantAll(tl, "pod1a", "pod2a")

	agent := c.agents[0]
	if err := agent.WaitLog(`msg="mounted bpffs" dir=/sys/fs/bpf`, settle); err != nil {
		t.Error(err)
	}
	root := filepath.Join("/proc", strconv.Itoa(agent.PID()), "root", harness.DefaultBPFFSRoot)
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil || st.Type != unix.BPF_FS_MAGIC {
		t.Errorf("the agent's %s: filesystem %#x (%v), want a bpffs", harness.DefaultBPFFSRoot, st.Type, err)
	}
	pins, err := agent.Pins()
	if err != nil || !containsPrefix(pins, "maps/") || !containsPrefix(pins, "links/") {
		t.Errorf("pins under the agent's %s: %v (%v), want maps and links", harness.DefaultBPFFS, pins, err)
	}
	// A user inside the agent's namespaces reads the maps without --bpffs.
	out, err := agent.Maps()
	if err != nil || !strings.Contains(out, addr.String()) {
		t.Errorf("nodegress maps: %v\n%s", err, out)
	}
	if log := agent.Log(); strings.Contains(log, "level=ERROR") {
		t.Errorf("agent logged errors:\n%s", log)
	}
	// The host's own mounts at /sys/fs/bpf are untouched: the agent's went
	// with its mount namespace.
	if hostAfter := mountsAt(t, harness.DefaultBPFFSRoot); !slices.Equal(hostAfter, hostBefore) {
		t.Errorf("host mounts at %s changed:\nbefore %q\nafter  %q", harness.DefaultBPFFSRoot, hostBefore, hostAfter)
	}
}

// mountsAt lists the test process's mounts at dir (mount id, source and
// type from /proc/self/mountinfo).
func mountsAt(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 5 && f[4] == dir {
			out = append(out, line)
		}
	}
	return out
}

func containsPrefix(ss []string, prefix string) bool {
	for _, s := range ss {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}
