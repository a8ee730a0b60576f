package handover

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"
)

// Keeper holds the agent's listening sockets in a process of its own (a
// second container of the agent's pod), so that they stay open when the
// agent is killed: connections then wait in the accept queue until the
// restarted agent fetches the sockets and accepts them, instead of being
// refused.
type Keeper struct {
	mu    sync.Mutex
	files map[string]*os.File
	log   *slog.Logger
}

// NewKeeper returns a keeper holding nothing.
func NewKeeper(log *slog.Logger) *Keeper {
	return &Keeper{files: map[string]*os.File{}, log: log}
}

// Serve answers store and fetch requests on path until ctx ends, then
// closes the sockets it holds.
func (k *Keeper) Serve(ctx context.Context, path string) error {
	ln, err := listen(path)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	defer k.replace(nil)
	k.log.Info("keeping listeners", "socket", path)
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept on %s: %w", path, err)
		}
		k.handle(c)
	}
}

// handle answers one request; requests are served one at a time, and each
// is bounded in time.
func (k *Keeper) handle(c *net.UnixConn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	m, files, err := receive(c)
	if err != nil {
		k.log.Warn("keeper: bad request", "err", err)
		return
	}
	switch m.Op {
	case opStore:
		ls, err := named(m, files)
		if err != nil {
			_ = send(c, message{Op: opRefused, Error: err.Error()})
			return
		}
		k.replace(ls)
		k.log.Info("keeping listeners", "names", m.Names, "from_pid", m.PID)
		_ = send(c, message{Op: opStored})
	case opFetch:
		closeAll(files)
		k.mu.Lock()
		names, held := sortedNames(k.files)
		err := send(c, message{Op: opListeners, Names: names, PID: os.Getpid()}, held...)
		k.mu.Unlock()
		if err != nil {
			k.log.Warn("keeper: fetch", "err", err)
		}
	default:
		closeAll(files)
		_ = send(c, message{Op: opRefused, Error: fmt.Sprintf("unknown request %q", m.Op)})
	}
}

func (k *Keeper) replace(ls map[string]*os.File) {
	k.mu.Lock()
	old := k.files
	if ls == nil {
		ls = map[string]*os.File{}
	}
	k.files = ls
	k.mu.Unlock()
	for _, f := range old {
		_ = f.Close()
	}
}

// Store hands the keeper at path the listeners to hold, replacing what it
// held. The caller keeps its own descriptors.
func Store(path string, listeners map[string]*os.File) error {
	c, err := dial(path)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	names, files := sortedNames(listeners)
	if err := send(c, message{Op: opStore, Names: names, PID: os.Getpid()}, files...); err != nil {
		return err
	}
	m, rest, err := receive(c)
	closeAll(rest)
	if err != nil {
		return fmt.Errorf("keeper %s: %w", path, err)
	}
	if m.Op != opStored {
		return fmt.Errorf("keeper %s: %s %s", path, m.Op, m.Error)
	}
	return nil
}

// Fetch returns the listeners the keeper at path holds (none, at the pod's
// first start). ErrNoPeer (wrapped) means no keeper runs.
func Fetch(path string) (map[string]*os.File, error) {
	c, err := dial(path)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := send(c, message{Op: opFetch, PID: os.Getpid()}); err != nil {
		return nil, err
	}
	m, files, err := receive(c)
	if err != nil {
		return nil, fmt.Errorf("keeper %s: %w", path, err)
	}
	if m.Op != opListeners {
		closeAll(files)
		return nil, fmt.Errorf("keeper %s: %s %s", path, m.Op, m.Error)
	}
	ls, err := named(m, files)
	if err != nil {
		return nil, fmt.Errorf("keeper %s: %w", path, err)
	}
	return ls, nil
}
