package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/nodegress/nodegress/controller"
	"github.com/nodegress/nodegress/controller/healthcheck"
)

// healthzRetryIn is how long the node health server waits before trying
// its address again when it cannot listen, as kube-proxy does.
const healthzRetryIn = 5 * time.Second

// healthFlags are the health servers kube-proxy runs, served by the
// agent in its place.
type healthFlags struct {
	nodePorts     bool
	bindAddress   string
	statusAddress string
}

func (h *healthFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&h.nodePorts, "health-check-node-ports", true, "serve the healthCheckNodePort of LoadBalancer Services with externalTrafficPolicy Local, as kube-proxy does, so load balancers send their traffic only to nodes with local endpoints; turn off where kube-proxy still runs (it opens the same ports)")
	fs.StringVar(&h.statusAddress, "proxy-status-address", "", "IP:PORT of kube-proxy's status server (/proxyMode, /healthz, /livez, /metrics), e.g. 127.0.0.1:10249 where tools look for kube-proxy's mode and metrics once it is gone; /proxyMode answers \"nodegress\"; empty: off")
	fs.StringVar(&h.bindAddress, "healthz-bind-address", "", "IP:PORT of kube-proxy's node health server (/healthz, /livez), e.g. 0.0.0.0:10256 where load balancers probe kube-proxy; an IP alone means port 10256; empty: off")
}

// healthServers are the servers the flags asked for; nil fields are off.
type healthServers struct {
	proxy      *healthcheck.Proxy
	services   *healthcheck.ServiceServer
	addr       string // of the node health server
	statusAddr string // of the status server
}

func newHealthServers(f healthFlags, log *slog.Logger) (*healthServers, error) {
	addr, err := healthzAddr(f.bindAddress)
	if err != nil {
		return nil, fmt.Errorf("--healthz-bind-address: %w", err)
	}
	status := ""
	if f.statusAddress != "" {
		if _, _, err := net.SplitHostPort(f.statusAddress); err != nil {
			return nil, fmt.Errorf("--proxy-status-address %q: want IP:PORT", f.statusAddress)
		}
		status = f.statusAddress
	}
	h := &healthServers{addr: addr, statusAddr: status}
	if !f.nodePorts && addr == "" && status == "" {
		return h, nil
	}
	// The healthCheckNodePorts report the sync loop's health too, so it
	// is tracked even without the node health server.
	h.proxy = healthcheck.NewProxy(healthcheck.DefaultTimeout)
	if f.nodePorts {
		h.services = healthcheck.NewServiceServer(h.proxy, healthcheck.ServiceConfig{Logger: log.With("component", "health")})
	}
	return h, nil
}

// configure hands the controller the servers to feed.
func (h *healthServers) configure(cfg *controller.Config) {
	// Only set fields: a nil pointer in an interface is not a nil
	// interface.
	if h.proxy != nil {
		cfg.ProxyHealth = h.proxy
	}
	if h.services != nil {
		cfg.ServiceHealth = h.services
	}
}

// run serves the node health server and the status server until ctx is
// done, trying again while an address cannot be listened on (another
// kube-proxy, a slow restart).
func (h *healthServers) run(ctx context.Context, log *slog.Logger, metrics http.Handler) {
	// Both are waited for: a successor agent takes their ports over.
	var wg sync.WaitGroup
	if h.statusAddr != "" {
		wg.Go(func() {
			serveRetrying(ctx, log, "status server", h.statusAddr, h.proxy.StatusHandler("nodegress", metrics))
		})
	}
	if h.addr != "" {
		wg.Go(func() { serveRetrying(ctx, log, "node health server", h.addr, h.proxy.Handler()) })
	}
	wg.Wait()
}

func serveRetrying(ctx context.Context, log *slog.Logger, what, addr string, handler http.Handler) {
	log.Info(what, "addr", addr)
	for {
		err := healthcheck.ListenAndServe(ctx, addr, handler)
		if ctx.Err() != nil {
			return
		}
		log.Error(what, "addr", addr, "err", err, "retry_in", healthzRetryIn)
		if !sleepCtx(ctx, healthzRetryIn) {
			return
		}
	}
}

// close closes the healthCheckNodePorts.
func (h *healthServers) close() {
	if h.services != nil {
		h.services.Close()
	}
}

// healthzAddr checks --healthz-bind-address and completes an IP alone with
// kube-proxy's port.
func healthzAddr(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		a, perr := netip.ParseAddr(s)
		if perr != nil {
			return "", fmt.Errorf("%q: want IP:PORT or IP", s)
		}
		return net.JoinHostPort(a.String(), strconv.Itoa(healthcheck.DefaultPort)), nil
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			return "", fmt.Errorf("%q: %q is not an IP address", s, host)
		}
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return "", fmt.Errorf("%q: invalid port %q", s, port)
	}
	return s, nil
}
