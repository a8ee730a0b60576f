package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// BPFFSRoot is where Linux hosts keep their bpffs. Hosts without systemd
// leave it unmounted (a plain sysfs directory, where nothing can be created),
// and under `ip netns exec` /sys is a fresh sysfs without it.
const BPFFSRoot = "/sys/fs/bpf"

// ensureBPFFS makes dir a directory on a bpffs and returns where it mounted
// one to get there ("" when it mounted none):
//   - dir is on a bpffs already (or its closest existing parent is): nothing
//     to mount;
//   - dir is under BPFFSRoot, which is not a bpffs: a bpffs is mounted at
//     BPFFSRoot itself, as systemd and Cilium do, so every tool finds it
//     where it expects it;
//   - anywhere else: a bpffs is mounted at dir, marked so that Cleanup
//     unmounts it again.
func ensureBPFFS(dir string) (mountedAt string, err error) {
	dir = filepath.Clean(dir)
	parent, err := closestExisting(dir)
	if err != nil {
		return "", err
	}
	onBPFFS, err := isBPFFS(parent)
	if err != nil {
		return "", err
	}
	if onBPFFS {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", fmt.Errorf("create bpffs dir %s: %w", dir, err)
		}
		return "", nil
	}
	if dir == BPFFSRoot || strings.HasPrefix(dir, BPFFSRoot+"/") {
		if err := mountBPFFS(BPFFSRoot); err != nil {
			return "", err
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return BPFFSRoot, fmt.Errorf("create bpffs dir %s: %w", dir, err)
		}
		return BPFFSRoot, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create bpffs dir %s: %w", dir, err)
	}
	if err := mountBPFFS(dir); err != nil {
		return "", err
	}
	// Cleanup unmounts only a bpffs it finds this marker in: never one
	// that the system or another tool mounted.
	if err := os.Mkdir(filepath.Join(dir, mountMarker), 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return dir, fmt.Errorf("mark bpffs at %s: %w", dir, err)
	}
	return dir, nil
}

func mountBPFFS(at string) error {
	if err := os.MkdirAll(at, 0o700); err != nil {
		return fmt.Errorf("%s is not a bpffs and cannot be created to mount one: %w; mount a bpffs there (mount -t bpf bpf %s) or pass --bpffs with a directory on one", at, err, at)
	}
	if err := unix.Mount("bpf", at, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("%s is not a bpffs and mounting one there failed: %w; run as root (CAP_SYS_ADMIN), mount one yourself (mount -t bpf bpf %s) or pass --bpffs with a directory on one", at, err, at)
	}
	return nil
}

// closestExisting returns dir or, when it does not exist, its closest
// parent that does.
func closestExisting(dir string) (string, error) {
	for p := dir; ; p = filepath.Dir(p) {
		_, err := os.Stat(p)
		if err == nil {
			return p, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("stat %s: %w", p, err)
		}
		if p == filepath.Dir(p) {
			return p, nil
		}
	}
}

// mountMarker is a directory the agent creates in a bpffs it mounted itself.
const mountMarker = "mounted_by_nodegress" // bpffs refuses names with dots

func isBPFFS(dir string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return st.Type == unix.BPF_FS_MAGIC, nil
}
