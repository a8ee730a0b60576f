package harness

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nodegress/nodegress/loader"
	"github.com/nodegress/nodegress/tests/netns"
)

// NodeCgroups makes one cgroup2 directory per node for the socket load
// balancer of a test cluster and returns them by node name: the processes
// of a node (its pods' clients) start inside its directory, and its agent
// attaches there, so the nodes of one machine stay apart. The directories
// are reached through a mount of the cgroup2 hierarchy under the test's
// temporary directory, which `ip netns exec` (remounting /sys) keeps
// visible to the agents.
func NodeCgroups(t testing.TB, nodes ...*netns.Node) map[string]string {
	t.Helper()
	root, err := loader.CgroupRoot("")
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(t.TempDir(), "cgroup2")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("none", mnt, "cgroup2", 0, ""); err != nil {
		t.Fatalf("mount cgroup2: %v", err)
	}
	base := filepath.Join(mnt, "nodegress-test-"+netns.RandomSuffix(6))
	out := map[string]string{}
	for _, n := range append([]*netns.Node{{Name: ""}}, nodes...) {
		dir := filepath.Join(base, n.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if n.Name != "" {
			out[n.Name] = dir
		}
	}
	t.Cleanup(func() {
		// Processes started inside have exited when cleanups run; a
		// directory still busy is retried for a while.
		deadline := time.Now().Add(5 * time.Second)
		for _, dir := range out {
			for os.Remove(dir) != nil && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
		}
		_ = os.Remove(base)
		_ = unix.Unmount(mnt, unix.MNT_DETACH)
	})
	return out
}

// StartInCgroup starts cmd as a process of cgroup dir from its first
// instruction (CLONE_INTO_CGROUP), so nothing it does escapes the cgroup's
// programs.
func StartInCgroup(cmd *exec.Cmd, dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.UseCgroupFD = true
	cmd.SysProcAttr.CgroupFD = int(f.Fd())
	return cmd.Start()
}
