// Package privsock makes the agent's root-only unix sockets (trace,
// explain): never reachable with looser permissions than 0600, a stale
// socket of a dead agent replaced, a live agent's left alone.
package privsock

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// Socket is a listening socket and the file it was made as.
type Socket struct {
	*net.UnixListener
	path string
	file os.FileInfo
}

// Listen binds what's socket at path under a temporary name and renames
// it into place once it is 0600, so it is never reachable with looser
// permissions and a stale socket is replaced atomically. A socket some
// process still answers on is an error: another agent runs.
func Listen(path, what string) (*Socket, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s socket directory: %w", what, err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("%s socket %s: exists and is not a socket", what, path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s socket %s: another agent is listening on it", what, path)
		}
	}
	tmp := filepath.Join(dir, "."+base+"."+strconv.Itoa(os.Getpid()))
	_ = os.Remove(tmp)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s socket: %w", what, err)
	}
	// The file is renamed below; Remove deletes it by its final name.
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (*Socket, error) {
		ln.Close()
		_ = os.Remove(tmp)
		return nil, err
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(fmt.Errorf("restrict %s socket: %w", what, err))
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(fmt.Errorf("move %s socket into place: %w", what, err))
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fail(fmt.Errorf("%s socket: %w", what, err))
	}
	return &Socket{UnixListener: ln, path: path, file: fi}, nil
}

// Remove deletes the socket file unless another agent has replaced it
// meanwhile. It does not close the listener.
func (s *Socket) Remove(log *slog.Logger) {
	if fi, err := os.Lstat(s.path); err == nil && os.SameFile(fi, s.file) {
		if err := os.Remove(s.path); err != nil {
			log.Warn("remove socket", "socket", s.path, "err", err)
		}
	}
}
