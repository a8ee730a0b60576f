// Command benchproxy runs nodegress's L7 proxy alone, on loopback, with one
// route equivalent to an Ingress rule without host and a Prefix "/" path to
// one backend. The benchmark uses it to measure the proxy's own cost next to
// nginx and haproxy on the same network path, without the agent's datapath.
//
// Usage:
//
//	benchproxy --http 127.0.0.1:PORT --https 127.0.0.1:PORT --backend 127.0.0.1:PORT \
//	           --cert FILE --key FILE [--access-log FILE] [--pprof 127.0.0.1:PORT]
//
// It serves until SIGTERM or SIGINT. --pprof exposes net/http/pprof on a
// side listener so a CPU profile can be taken under load.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nodegress/nodegress/l7proxy"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "benchproxy:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("benchproxy", flag.ContinueOnError)
	httpAddr := fs.String("http", "127.0.0.1:18080", "plain HTTP listen address")
	httpsAddr := fs.String("https", "127.0.0.1:18443", "HTTPS listen address")
	backend := fs.String("backend", "", "backend address (ip:port)")
	certFile := fs.String("cert", "", "PEM certificate served for every SNI name")
	keyFile := fs.String("key", "", "PEM key of --cert")
	accessLog := fs.String("access-log", "", "JSON access log file (empty: off)")
	pprofAddr := fs.String("pprof", "", "serve net/http/pprof on this address (empty: off)")
	gateway := fs.Bool("gateway", false, "route through a Gateway listener on both addresses (one HTTPRoute) instead of an Ingress")
	if err := fs.Parse(args); err != nil {
		return err
	}
	be, err := netip.ParseAddrPort(*backend)
	if err != nil {
		return fmt.Errorf("--backend: %w", err)
	}
	if !be.Addr().IsLoopback() {
		// The benchmark must never send load off this machine.
		return fmt.Errorf("--backend %s is not a loopback address", be)
	}
	certPEM, err := os.ReadFile(*certFile)
	if err != nil {
		return fmt.Errorf("--cert: %w", err)
	}
	keyPEM, err := os.ReadFile(*keyFile)
	if err != nil {
		return fmt.Errorf("--key: %w", err)
	}
	cert, err := l7proxy.ParseCertificate(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("--cert/--key: %w", err)
	}

	opts := l7proxy.Options{}
	if *accessLog != "" {
		f, err := os.OpenFile(*accessLog, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
		if err != nil {
			return fmt.Errorf("--access-log: %w", err)
		}
		defer f.Close()
		opts.AccessLog = f
	}
	p, err := l7proxy.New(opts)
	if err != nil {
		return err
	}
	// What the controller makes of one Ingress with a host-less rule,
	// path "/" (Prefix) to a one-endpoint Service, and a TLS section.
	const upstream = "bench/backend:http"
	cfg := l7proxy.Config{
		Routes: []l7proxy.Route{{
			Path: "/", PathType: l7proxy.PathPrefix, Upstream: upstream, Ingress: "bench/bench",
		}},
		Upstreams: []l7proxy.Upstream{{
			Name: upstream, Namespace: "bench", Service: "backend",
			Endpoints: []l7proxy.Endpoint{{Addr: be}},
		}},
		Certificates: []l7proxy.Certificate{{Cert: cert, Source: "bench/tls"}},
	}
	if *gateway {
		// What the controller makes of a Gateway with an HTTP and an
		// HTTPS listener on these addresses and one HTTPRoute, rule
		// PathPrefix "/", to the same Service.
		var fronts []netip.AddrPort
		for _, a := range []string{*httpAddr, *httpsAddr} {
			ap, err := netip.ParseAddrPort(a)
			if err != nil {
				return fmt.Errorf("--gateway needs ip:port listen addresses: %w", err)
			}
			fronts = append(fronts, ap)
		}
		cfg.Routes = nil
		cfg.Listeners = []l7proxy.Listener{{Name: "bench/gw/http", Frontends: fronts, Routes: []l7proxy.HTTPRoute{{
			Source: "bench/bench",
			Rules: []l7proxy.HTTPRouteRule{{
				Matches:  []l7proxy.HTTPMatch{{PathType: l7proxy.PathPrefix, Path: "/"}},
				Backends: []l7proxy.WeightedBackend{{Upstream: upstream, Weight: 1}},
			}},
		}}}}
	}
	if errs := p.Update(cfg); len(errs) > 0 {
		return fmt.Errorf("configure proxy: %w", errors.Join(errs...))
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	served := make(chan error, 3)
	for _, l := range []struct {
		addr  string
		serve func(net.Listener) error
	}{
		{*httpAddr, p.ServeHTTP},
		{*httpsAddr, p.ServeHTTPS},
	} {
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			return err
		}
		closers = append(closers, ln)
		go func() { served <- l.serve(ln) }()
	}
	if *pprofAddr != "" {
		ln, err := net.Listen("tcp", *pprofAddr)
		if err != nil {
			return fmt.Errorf("--pprof: %w", err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		closers = append(closers, srv)
		go func() {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				served <- err
			}
		}()
	}

	select {
	case <-ctx.Done():
	case err := <-served:
		if err != nil {
			return err
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = p.Shutdown(sctx)
	return nil
}
