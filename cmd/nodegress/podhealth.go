package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// handleHealth serves /healthz (agentHealth.live) and /readyz on mux.
func handleHealth(mux *http.ServeMux, h *agentHealth, log *slog.Logger) {
	// A liveness failure is news; not being ready yet, at start, is not.
	check := func(f func(context.Context) error, level slog.Level) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if err := f(r.Context()); err != nil {
				log.Log(r.Context(), level, "health check failed", "path", r.URL.Path, "err", err)
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			io.WriteString(w, "ok\n")
		}
	}
	mux.HandleFunc("/healthz", check(h.live, slog.LevelWarn))
	mux.HandleFunc("/readyz", check(h.ready, slog.LevelDebug))
}

// serveHealthSocket serves /healthz and /readyz on a unix socket until ctx
// ends, for `nodegress health`: the pod's own probes. Probes of the node
// address (--metrics-addr) reach whichever agent holds the port, which
// during a handover is another pod's.
func serveHealthSocket(ctx context.Context, path string, h *agentHealth, log *slog.Logger) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("--health-socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("--health-socket: %w", err)
	}
	mux := http.NewServeMux()
	handleHealth(mux, h, log)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// runHealth is `nodegress health`: asks the agent's health socket and
// exits 0 when the answer is ok, 1 otherwise (an exec probe).
func runHealth(args []string) int {
	fs := flag.NewFlagSet("health", flag.ContinueOnError)
	socket := fs.String("socket", "", "the agent's --health-socket")
	check := fs.String("check", "healthz", "healthz (alive) or readyz (serving)")
	timeout := fs.Duration("timeout", 4*time.Second, "how long to wait for the answer")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *socket == "" || (*check != "healthz" && *check != "readyz") {
		fmt.Fprintln(os.Stderr, "nodegress health: want --socket PATH and --check healthz|readyz")
		return 2
	}
	cl := &http.Client{Timeout: *timeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", *socket)
		},
	}}
	resp, err := cl.Get("http://agent/" + *check)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nodegress health:", err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	fmt.Println(strings.TrimSpace(string(body)))
	if resp.StatusCode != http.StatusOK {
		return 1
	}
	return 0
}
