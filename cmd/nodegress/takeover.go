package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/nodegress/nodegress/cmd/nodegress/handover"
)

// handoverFlags say where agents of one node meet to hand the proxy's
// listeners over (handover.go) and where they are kept while the agent
// restarts.
type handoverFlags struct {
	socket string
	keeper string
}

func (h *handoverFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&h.socket, "handover-socket", "", "unix socket where a new agent on this node takes over from the running one: it gets the proxy's listening sockets, so no connection is refused while agents are replaced (default: handover.sock next to --trace-socket; \"off\": none)")
	fs.StringVar(&h.keeper, "listener-keeper", "", "unix socket of a `nodegress keep-listeners` process that holds the proxy's listening sockets while this agent restarts, even after SIGKILL (empty: none)")
}

// path resolves the handover socket; "" means off.
func (h *handoverFlags) path(traceSocket string) string {
	switch h.socket {
	case "off":
		return ""
	case "":
		return filepath.Join(filepath.Dir(traceSocket), "handover.sock")
	}
	return h.socket
}

// lockPath is the node's datapath writer lock (handover.Lock), next to
// the trace socket.
func lockPath(traceSocket string) string {
	return filepath.Join(filepath.Dir(traceSocket), "agent.lock")
}

// takeNodeOver makes this agent the one that writes to the node's
// datapath, before the datapath is opened. The agent running on the node,
// if any, stops writing and hands over the proxy's listeners (the returned
// takeover is then to be told when this agent serves); else the listeners
// come from the keeper. Either way the writer lock is taken: an agent that
// found nobody to take over from while another one is starting (or is
// being restarted) waits for it. No listeners and no error: this is the
// node's first agent.
func takeNodeOver(ctx context.Context, h handoverFlags, traceSocket string, log *slog.Logger) (*handover.Takeover, map[string]*os.File, *handover.Lock, error) {
	path := h.path(traceSocket)
	var to *handover.Takeover
	warned := false
	for {
		if to == nil && path != "" {
			var err error
			to, err = handover.Take(ctx, path)
			switch {
			case err == nil:
				log.Info("taking over from the running agent", "pid", to.PID, "listeners", len(to.Listeners))
			case errors.Is(err, handover.ErrNoPeer), errors.Is(err, handover.ErrBusy):
				to = nil
			default:
				return nil, nil, nil, fmt.Errorf("--handover-socket: %w", err)
			}
		}
		lock, err := handover.TryLock(lockPath(traceSocket))
		if err == nil {
			if to != nil {
				return to, to.Listeners, lock, nil
			}
			if err := waitForUnlockedAgent(ctx, traceSocket, log); err != nil {
				lock.Release()
				return nil, nil, nil, err
			}
			ls, err := keptListeners(h, log)
			if err != nil {
				lock.Release()
				return nil, nil, nil, err
			}
			return nil, ls, lock, nil
		}
		if !errors.Is(err, handover.ErrLocked) {
			if to != nil {
				to.Abort()
			}
			return nil, nil, nil, err
		}
		if !warned {
			log.Info("another agent on this node writes to the datapath (starting up, or handing over); waiting for it", "lock", lockPath(traceSocket))
			warned = true
		}
		if !sleepCtx(ctx, 200*time.Millisecond) {
			if to != nil {
				to.Abort()
			}
			return nil, nil, nil, ctx.Err()
		}
	}
}

// waitForUnlockedAgent waits while an agent that takes no writer lock (a
// release without handover) serves the trace socket: the lock alone would
// not keep this agent from writing the same maps.
func waitForUnlockedAgent(ctx context.Context, traceSocket string, log *slog.Logger) error {
	warned := false
	for {
		c, err := net.DialTimeout("unix", traceSocket, time.Second)
		if err != nil {
			return nil
		}
		c.Close()
		if !warned {
			log.Warn("an agent without handover support serves the trace socket; waiting for it to stop", "socket", traceSocket)
			warned = true
		}
		if !sleepCtx(ctx, 500*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// sleepCtx waits for d, or until ctx ends (false).
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// keptListeners fetches the listeners the keeper holds, if one is set.
func keptListeners(h handoverFlags, log *slog.Logger) (map[string]*os.File, error) {
	if h.keeper == "" {
		return nil, nil
	}
	ls, err := handover.Fetch(h.keeper)
	if err != nil {
		if errors.Is(err, handover.ErrNoPeer) {
			log.Warn("no listener keeper answers; listeners are opened anew", "keeper", h.keeper)
			return nil, nil
		}
		return nil, fmt.Errorf("--listener-keeper: %w", err)
	}
	if len(ls) > 0 {
		log.Info("listeners from the keeper", "keeper", h.keeper, "listeners", len(ls))
	}
	return ls, nil
}

// keepListeners stores the proxy's listeners with the keeper, and again
// every handover.StoreInterval: the keeper lets go of sockets no agent
// claims, and may have restarted and lost them. It returns when ctx ends.
func keepListeners(ctx context.Context, path string, ip *ingressProxy, log *slog.Logger) {
	wait := time.Duration(0)
	warned := false
	for {
		if !sleepCtx(ctx, wait) {
			return
		}
		files, err := ip.files()
		if err == nil {
			err = handover.Store(path, files)
			closeFiles(files)
		}
		switch {
		case err == nil:
			if warned || wait == 0 {
				log.Info("listeners kept", "keeper", path)
			}
			warned, wait = false, handover.StoreInterval
		default:
			if !warned {
				log.Warn("listener keeper not reachable; a killed agent's listeners would close", "keeper", path, "err", err)
			}
			warned, wait = true, 5*time.Second
		}
	}
}

func closeFiles(files map[string]*os.File) {
	for _, f := range files {
		_ = f.Close()
	}
}

// runKeepListeners is `nodegress keep-listeners`: the keeper process.
func runKeepListeners(args []string) int {
	fs := flag.NewFlagSet("keep-listeners", flag.ContinueOnError)
	socket := fs.String("socket", "", "unix socket to serve (the agent's --listener-keeper)")
	releaseAfter := fs.Duration("release-after", time.Minute, "close the listeners when no agent has stored or fetched them for this long, so that clients of an agent in a crash loop are refused rather than left waiting (0: never)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "text or json")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log, err := newLogger(*logLevel, *logFormat)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nodegress keep-listeners:", err)
		return 2
	}
	if *socket == "" {
		fmt.Fprintln(os.Stderr, "nodegress keep-listeners: --socket is required")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *releaseAfter != 0 && *releaseAfter < 2*handover.StoreInterval {
		fmt.Fprintf(os.Stderr, "nodegress keep-listeners: --release-after must be 0 or at least %s (agents store every %s)\n", 2*handover.StoreInterval, handover.StoreInterval)
		return 2
	}
	if err := handover.NewKeeper(log, *releaseAfter).Serve(ctx, *socket); err != nil {
		log.Error("keep-listeners", "err", err)
		return 1
	}
	return 0
}
