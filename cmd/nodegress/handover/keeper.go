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
//
// Sockets nobody accepts from are worse than closed ones: clients and
// load balancers' health checks see a port that takes connections and
// never answers. So the keeper lets go of them when no agent has stored
// or fetched them for releaseAfter (an agent stores them again every
// StoreInterval): an agent in a crash loop then leaves the port closed.
type Keeper struct {
	mu           sync.Mutex
	files        map[string]*os.File
	lastContact  time.Time
	releaseAfter time.Duration
	log          *slog.Logger
}

// StoreInterval is how often an agent stores its listeners again; a
// keeper's releaseAfter must be well above it.
const StoreInterval = 20 * time.Second

// NewKeeper returns a keeper holding nothing, which lets go of what it
// holds releaseAfter after the last store or fetch (0: never).
func NewKeeper(log *slog.Logger, releaseAfter time.Duration) *Keeper {
	return &Keeper{files: map[string]*os.File{}, log: log, releaseAfter: releaseAfter}
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
	k.log.Info("keeping listeners", "socket", path, "release_after", k.releaseAfter)
	if k.releaseAfter > 0 {
		go k.releaseUnclaimed(ctx)
	}
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
		k.log.Debug("keeping listeners", "names", m.Names, "from_pid", m.PID)
		_ = send(c, message{Op: opStored})
	case opFetch:
		closeAll(files)
		k.mu.Lock()
		k.lastContact = time.Now()
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

// releaseUnclaimed lets go of the sockets once no agent has been in
// touch for releaseAfter.
func (k *Keeper) releaseUnclaimed(ctx context.Context) {
	t := time.NewTicker(max(k.releaseAfter/10, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		k.mu.Lock()
		stale := len(k.files) > 0 && time.Since(k.lastContact) > k.releaseAfter
		k.mu.Unlock()
		if stale {
			k.log.Warn("no agent stored or fetched the listeners; closing them so that clients are refused instead of left waiting", "after", k.releaseAfter)
			k.replace(nil)
		}
	}
}

func (k *Keeper) replace(ls map[string]*os.File) {
	k.mu.Lock()
	old := k.files
	if ls == nil {
		ls = map[string]*os.File{}
	}
	k.files = ls
	k.lastContact = time.Now()
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
