package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
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

// acquireListeners finds the proxy's listening sockets of an earlier agent
// of this node: from the running agent, which stops syncing before it
// answers (the returned takeover is then to be told when this agent
// serves), else from the keeper. No listeners and no error: this is the
// node's first agent.
func acquireListeners(ctx context.Context, h handoverFlags, traceSocket string, log *slog.Logger) (*handover.Takeover, map[string]*os.File, error) {
	if path := h.path(traceSocket); path != "" {
		to, err := handover.Take(ctx, path)
		switch {
		case err == nil:
			log.Info("taking over from the running agent", "pid", to.PID, "listeners", len(to.Listeners))
			return to, to.Listeners, nil
		case !errors.Is(err, handover.ErrNoPeer):
			return nil, nil, fmt.Errorf("--handover-socket: %w", err)
		}
	}
	if h.keeper == "" {
		return nil, nil, nil
	}
	ls, err := handover.Fetch(h.keeper)
	if err != nil {
		if errors.Is(err, handover.ErrNoPeer) {
			log.Warn("no listener keeper answers; listeners are opened anew", "keeper", h.keeper)
			return nil, nil, nil
		}
		return nil, nil, fmt.Errorf("--listener-keeper: %w", err)
	}
	if len(ls) > 0 {
		log.Info("listeners from the keeper", "keeper", h.keeper, "listeners", len(ls))
	}
	return nil, ls, nil
}

// keepListeners stores the proxy's listeners with the keeper, and again
// every minute in case the keeper restarted and lost them. It returns when
// ctx ends.
func keepListeners(ctx context.Context, path string, ip *ingressProxy, log *slog.Logger) {
	wait := time.Duration(0)
	warned := false
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
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
			warned, wait = false, time.Minute
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
	if err := handover.NewKeeper(log).Serve(ctx, *socket); err != nil {
		log.Error("keep-listeners", "err", err)
		return 1
	}
	return 0
}
