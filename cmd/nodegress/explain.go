package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/nodegress/nodegress/controller"
	"github.com/nodegress/nodegress/explain"
	"github.com/nodegress/nodegress/loader"
)

const explainUsage = `Usage: nodegress explain [flags] TARGET

TARGET is one of
  IP:PORT                 a frontend: ClusterIP, NodePort on a node address, LoadBalancer/external IP, Ingress or Gateway address
  NAMESPACE/NAME[:PORT]   a Service: all its frontends on this node
  HOST/PATH or URL        an Ingress or HTTPRoute match (http://host/path for a host without a dot, https:// for HTTPS)

Flags:
`

func runExplain(args []string) int {
	fs := flag.NewFlagSet("explain", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), explainUsage)
		fs.PrintDefaults()
	}
	socket := fs.String("socket", explain.DefaultSocket, "the agent's explain socket")
	from := fs.String("from", explain.DefaultClient.String(), "client address of the new connection")
	proto := fs.String("proto", "", "tcp or udp (default: both for frontends and Services)")
	via := fs.String("via", "", "frontend ADDRESS:PORT a HOST/PATH is reached through (a Gateway's address; default: the Ingress routes)")
	output := fs.String("output", "text", "text or json")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 || (*output != "text" && *output != "json") {
		fs.Usage()
		return 2
	}
	q := explain.Query{Target: fs.Arg(0), Proto: *proto}
	var err error
	if q.From, err = netip.ParseAddr(*from); err != nil {
		fmt.Fprintln(os.Stderr, "nodegress explain: --from:", err)
		return 2
	}
	if *via != "" {
		if q.Via, err = netip.ParseAddrPort(*via); err != nil {
			fmt.Fprintln(os.Stderr, "nodegress explain: --via:", err)
			return 2
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	a, err := explain.Ask(ctx, *socket, q)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nodegress explain:", err)
		return 1
	}
	if *output == "json" {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(a)
	} else {
		err = explain.WriteText(os.Stdout, a)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "nodegress explain:", err)
		return 1
	}
	return 0
}

// explainSocketPath is the explain socket: the flag's, or explain.sock
// next to the trace socket.
func explainSocketPath(flagValue, traceSocket string) string {
	if flagValue != "" {
		return flagValue
	}
	return filepath.Join(filepath.Dir(traceSocket), "explain.sock")
}

// serveExplain answers `nodegress explain` from the live maps and routes
// until ctx is done.
func serveExplain(ctx context.Context, path string, dp *loader.Datapath, podRedirect bool, ctrl *controller.Controller, ingress *ingressProxy, log *slog.Logger) {
	ex := &explain.Explainer{Datapath: dp, Stats: dp.Stats, PodRedirect: podRedirect, Owners: ctrl.EndpointOwner}
	if ingress != nil {
		ex.Routes = ingress.proxy
	}
	if err := explain.NewServer(path, ex, log).Serve(ctx); err != nil {
		log.Warn("explain server", "err", err)
	}
}
