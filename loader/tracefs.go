package loader

import (
	"errors"
	"fmt"
	"log/slog"

	"golang.org/x/sys/unix"
)

// tracefsDir is where the kernel drop tracepoint's fallback needs tracefs:
// the tracepoint is found by its id under events/.
const tracefsDir = "/sys/kernel/tracing"

// ensureTracefs mounts tracefs on /sys/kernel/tracing unless it, or the
// older debugfs path, is mounted already: a container, or a machine
// without systemd, often has neither. The mount is left in place, like
// bpffs's. It must run before the first tracepoint is attached: the
// library looks for tracefs once per process.
func ensureTracefs(log *slog.Logger) error {
	for _, m := range []struct {
		dir   string
		magic int64
	}{{tracefsDir, unix.TRACEFS_MAGIC}, {"/sys/kernel/debug/tracing", unix.TRACEFS_MAGIC}, {"/sys/kernel/debug/tracing", unix.DEBUGFS_MAGIC}} {
		var st unix.Statfs_t
		if unix.Statfs(m.dir, &st) == nil && int64(st.Type) == m.magic {
			return nil
		}
	}
	if err := unix.Mount("tracefs", tracefsDir, "tracefs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("mount tracefs on %s: the kernel has no tracefs: %w", tracefsDir, err)
		}
		return fmt.Errorf("mount tracefs on %s: %w", tracefsDir, err)
	}
	log.Info("mounted tracefs", "dir", tracefsDir)
	return nil
}
