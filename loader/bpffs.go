package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ensureBPFFS makes dir a directory on a bpffs, mounting one there when it is
// not. Under `ip netns exec`, /sys is a fresh sysfs without bpffs, so the
// agent cannot count on /sys/fs/bpf being mounted.
func ensureBPFFS(dir string) (mounted bool, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, fmt.Errorf("create bpffs dir %s: %w", dir, err)
	}
	onBPFFS, err := isBPFFS(dir)
	if err != nil {
		return false, err
	}
	if onBPFFS {
		return false, nil
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return false, fmt.Errorf("mount bpffs at %s: %w", dir, err)
	}
	// Cleanup unmounts only a bpffs it finds this marker in: never one
	// that the system or another tool mounted.
	if err := os.Mkdir(filepath.Join(dir, mountMarker), 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return true, fmt.Errorf("mark bpffs at %s: %w", dir, err)
	}
	return true, nil
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
