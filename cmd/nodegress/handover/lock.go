package handover

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ErrLocked means another agent holds the lock.
var ErrLocked = errors.New("held by another agent")

// Lock is held by the one agent of a node that writes to its datapath: an
// exclusive flock(2) on a file, released when the agent hands over, exits
// or is killed. A second agent that found no running agent to take over
// from (one still starting, or one restarted by the kubelet) waits for it
// instead of writing the same maps.
type Lock struct{ f *os.File }

// TryLock takes the lock at path, or returns ErrLocked (wrapped) when
// another process holds it.
func TryLock(path string) (*Lock, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("lock directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	// A namespace-less regular file: blocking mode does not matter.
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w", path, ErrLocked)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return &Lock{f: f}, nil
}

// Release lets another agent take the lock; once.
func (l *Lock) Release() {
	if l != nil && l.f != nil {
		_ = l.f.Close()
		l.f = nil
	}
}
