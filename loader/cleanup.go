package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Cleanup detaches every program pinned under bpffs and removes the pinned
// maps and the directory: the datapath stops forwarding. It works whether
// or not an agent is running, and on a directory that is already clean.
func Cleanup(bpffs string) error {
	if bpffs == "" {
		bpffs = DefaultBPFFS
	}
	var errs []error
	links, err := os.ReadDir(linksDir(bpffs))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("list pinned links: %w", err))
	}
	for _, e := range links {
		p := filepath.Join(linksDir(bpffs), e.Name())
		l, err := link.LoadPinnedLink(p, nil)
		if err != nil {
			errs = append(errs, os.Remove(p))
			continue
		}
		// Detach explicitly: another process may still hold the link open.
		if err := l.Detach(); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("detach %s: %w", p, err))
		}
		errs = append(errs, l.Unpin(), l.Close())
	}
	// Run in the agent's network namespace, cleanup also takes back the
	// local routes the datapath added for L7 frontends.
	if err := removeLocalRoutes(); err != nil {
		errs = append(errs, err)
	}
	maps, err := os.ReadDir(mapsDir(bpffs))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("list pinned maps: %w", err))
	}
	for _, e := range maps {
		if err := os.Remove(filepath.Join(mapsDir(bpffs), e.Name())); err != nil {
			errs = append(errs, fmt.Errorf("remove pinned map: %w", err))
		}
	}
	for _, dir := range []string{linksDir(bpffs), mapsDir(bpffs)} {
		if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
		}
	}
	// A bpffs the agent mounted itself goes too; any other stays mounted.
	marker := filepath.Join(bpffs, mountMarker)
	if _, err := os.Stat(marker); err == nil {
		if err := os.Remove(marker); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", marker, err))
		}
		_ = unix.Unmount(bpffs, unix.MNT_DETACH)
	}
	if err := os.Remove(bpffs); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.EBUSY) {
		errs = append(errs, fmt.Errorf("remove %s: %w", bpffs, err))
	}
	return errors.Join(errs...)
}
