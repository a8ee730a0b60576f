package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nodegress/nodegress/cmd/nodegress/handover"
	"github.com/nodegress/nodegress/controller"
	"github.com/nodegress/nodegress/loader"
	"github.com/nodegress/nodegress/loader/trace"
)

// DefaultTraceSocket is where the agent serves `nodegress trace`.
const DefaultTraceSocket = "/run/nodegress/trace.sock"

type agentFlags struct {
	standalone       string
	kubeconfig       string
	devices          string
	nodeName         string
	bpffs            string
	traceSocket      string
	explainSocket    string
	snatPorts        string
	xdpMode          string
	replaceKubeProxy bool
	lbAlgorithm      string
	forwardingMode   string
	podRedirect      string
	snatAddresses    string
	maglevTableSize  uint
	maglevSeed       string
	cgroupRoot       string
	logLevel         string
	logFormat        string
	l7               l7Flags
	// Ingress status write-back (API server mode only).
	updateStatus      bool
	electionNamespace string
	health            healthFlags
	handover          handoverFlags
	healthSocket      string
}

func runAgent(args []string) int {
	var f agentFlags
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.StringVar(&f.standalone, "standalone", "", "directory of Kubernetes YAML (Service, EndpointSlice, Node, Ingress, IngressClass, Secret) to serve instead of an API server, watched for changes")
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig of the API server to follow (default: in-cluster config)")
	fs.StringVar(&f.devices, "devices", "", "comma-separated external devices to attach the datapath to")
	fs.StringVar(&f.nodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name: selects its Node object and marks its endpoints local (default $NODE_NAME, else the host name)")
	fs.StringVar(&f.bpffs, "bpffs", loader.DefaultBPFFS, "directory the datapath's maps and links are pinned in (a bpffs is mounted there if needed)")
	fs.StringVar(&f.traceSocket, "trace-socket", DefaultTraceSocket, "unix socket the trace command connects to")
	fs.StringVar(&f.explainSocket, "explain-socket", "", "unix socket the explain command connects to (default: explain.sock next to --trace-socket)")
	fs.StringVar(&f.snatPorts, "snat-ports", "1024-29999", "source port range for flows SNAT'd to remote backends, per backend address and port; keep it outside net.ipv4.ip_local_port_range (the node's own connections); ports of frontends are skipped")
	fs.BoolVar(&f.replaceKubeProxy, "replace-kube-proxy", false, "serve every Service to in-cluster clients too (ClusterIPs, and NodePorts, externalIPs and load balancer IPs from pods and the node) with socket-level load balancing, so kube-proxy can be removed; off, ClusterIP traffic is left to kube-proxy")
	fs.StringVar(&f.cgroupRoot, "cgroup-root", "", "cgroup2 directory whose processes the socket-level load balancer serves (default: /sys/fs/cgroup if it is cgroup2, else /sys/fs/cgroup/unified)")
	fs.StringVar(&f.lbAlgorithm, "lb-algorithm", "hash", "backend selection of Services without a nodegress.io/lb-algorithm annotation: hash (per node) or maglev (every node picks the same backend for a flow; a backend change moves about 1/N of the flows)")
	fs.StringVar(&f.forwardingMode, "forwarding-mode", "snat", "how remote backends of Services without a nodegress.io/forwarding-mode annotation are reached: snat (replies return through this node) or dsr (direct server return: the client's packets go GENEVE-encapsulated to the backend's node, which answers the client itself; needs routed pod CIDRs, 48 bytes of MTU and a network that lets nodes send from the Services' addresses)")
	fs.StringVar(&f.snatAddresses, "snat-addresses", "", "CIDR[,CIDR...]: a device's IPv4 addresses inside these prefixes (besides its first, always used) are SNAT sources too, each with the whole --snat-ports range (at most 8 per device); replies to them must reach this node")
	fs.StringVar(&f.podRedirect, "pod-redirect", "auto", "hand packets for pods on this node straight into the pod (tc bpf_redirect_peer to the pod's veth or netkit peer), skipping the host's routing and netfilter: on, off, or auto (on with --replace-kube-proxy; kube-proxy's rules drop a pod's first reply to a request they never saw)")
	fs.UintVar(&f.maglevTableSize, "maglev-table-size", loader.DefaultMaglevTableSize, "entries of each Maglev table, a prime well above 100 times the backends of the largest service")
	fs.StringVar(&f.maglevSeed, "maglev-seed", "", "seed of the Maglev tables and flow hash, the same on every node (default: derived from the UID of the default/kubernetes Service, the same cluster-wide; in standalone mode a fixed value)")
	fs.StringVar(&f.xdpMode, "xdp-mode", string(loader.XDPAuto), "XDP attach mode: auto (native, else generic per device), native, generic or off (tc only)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "text", "text or json")
	f.l7.register(fs)
	fs.BoolVar(&f.updateStatus, "update-status", true, "write status.loadBalancer of our Ingresses (API server mode; one elected agent writes)")
	fs.StringVar(&f.electionNamespace, "election-namespace", defaultElectionNamespace(), "namespace of the Leases electing the status writer and telling which nodes run an agent; $POD_NAMESPACE when set")
	f.health.register(fs)
	f.handover.register(fs)
	fs.StringVar(&f.healthSocket, "health-socket", "", "unix socket serving /healthz and /readyz for `nodegress health` (exec probes of the agent's own pod; empty: off)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log, err := newLogger(f.logLevel, f.logFormat)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nodegress agent:", err)
		return 2
	}
	if err := agent(f, log); err != nil {
		log.Error("agent stopped", "err", err)
		return 1
	}
	return 0
}

func agent(f agentFlags, log *slog.Logger) error {
	client, restCfg, err := kubeClient(f)
	if err != nil {
		return err
	}
	devices := splitList(f.devices)
	if len(devices) == 0 {
		return errors.New("--devices is required")
	}
	portMin, portMax, err := parsePortRange(f.snatPorts)
	if err != nil {
		return fmt.Errorf("--snat-ports: %w", err)
	}
	mode, err := loader.ParseXDPMode(f.xdpMode)
	if err != nil {
		return fmt.Errorf("--xdp-mode: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// Before the datapath is touched: the agent running on this node, if
	// any, stops writing to it and hands over the proxy's listeners.
	predecessor, inherited, writerLock, err := takeNodeOver(ctx, f.handover, f.traceSocket, log)
	if err != nil {
		return err
	}
	defer writerLock.Release()
	defer closeFiles(inherited) // those not taken by the proxy
	if predecessor != nil {
		defer predecessor.Abort()
	}
	health, err := newHealthServers(f.health, log)
	if err != nil {
		return err
	}
	defer health.close()
	if err := enableForwarding(log); err != nil {
		return err
	}

	if f.lbAlgorithm != "hash" && f.lbAlgorithm != "maglev" {
		return fmt.Errorf("--lb-algorithm %q: want hash or maglev", f.lbAlgorithm)
	}
	if f.forwardingMode != "snat" && f.forwardingMode != "dsr" {
		return fmt.Errorf("--forwarding-mode %q: want snat or dsr", f.forwardingMode)
	}
	podRedirect, err := parsePodRedirect(f.podRedirect, f.replaceKubeProxy)
	if err != nil {
		return err
	}
	snatAddresses, err := parsePrefixes(f.snatAddresses)
	if err != nil {
		return fmt.Errorf("--snat-addresses: %w", err)
	}
	if f.maglevTableSize > 1<<20 || !loader.IsPrime(uint32(f.maglevTableSize)) {
		return fmt.Errorf("--maglev-table-size %d: want a prime up to %d", f.maglevTableSize, 1<<20)
	}
	seed, err := maglevSeed(f.maglevSeed, client, log)
	if err != nil {
		return err
	}

	dp, err := loader.Open(loader.Config{
		BPFFS:           f.bpffs,
		Devices:         devices,
		XDPMode:         mode,
		SNATPortMin:     portMin,
		SNATPortMax:     portMax,
		SNATAddresses:   snatAddresses,
		SocketLB:        f.replaceKubeProxy,
		CgroupRoot:      f.cgroupRoot,
		MaglevTableSize: uint32(f.maglevTableSize),
		MaglevSeed:      seed,
		PodRedirect:     podRedirect,
		Logger:          log,
	})
	if err != nil {
		return err
	}
	var closeDP sync.Once
	closeDatapath := func() { closeDP.Do(func() { dp.Close() }) }
	defer closeDatapath()

	nodeIPs, err := loader.DeviceIPv4s(devices)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(newDatapathCollector(dp, log))
	var l7 *controller.L7Config
	var probes []proxyProbe
	var ingress *ingressProxy
	if f.l7.enabled {
		var cfg *controller.L7Config
		ingress, cfg, err = startIngressProxy(ctx, &f.l7, dp, reg, log, inherited)
		if err != nil {
			return err
		}
		defer ingress.shutdown()
		l7, probes = cfg, ingress.probes
	}
	var gateway *controller.GatewayConfig
	if l7 != nil {
		if gateway, err = gatewayConfig(&f.l7, f.standalone != "", client, restCfg, log); err != nil {
			return err
		}
	}
	ctrlCfg := controller.Config{
		NodeName:          f.nodeName,
		NodeIPs:           nodeIPs,
		StandaloneDir:     f.standalone,
		Client:            client,
		L7:                l7,
		Gateway:           gateway,
		SocketLB:          f.replaceKubeProxy,
		Maglev:            f.lbAlgorithm == "maglev",
		DSR:               f.forwardingMode == "dsr",
		UpdateStatus:      f.updateStatus,
		ElectionNamespace: f.electionNamespace,
		Logger:            log,
		Registry:          reg,
	}
	health.configure(&ctrlCfg)
	ctrl, err := controller.New(ctrlCfg, dp)
	if err != nil {
		return err
	}
	// The controller, and the node-wide servers a successor takes over,
	// stop when this agent hands over; the proxy goes on until its
	// successor serves.
	ctrlCtx, stopCtrl := context.WithCancel(ctx)
	defer stopCtrl()
	nodeCtx, stopNode := context.WithCancel(ctx)
	defer stopNode()
	var nodeServers sync.WaitGroup
	nodeServers.Go(func() { health.run(nodeCtx, log, promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})) })
	nodeServers.Go(func() {
		ts := trace.NewServer(f.traceSocket, dp, dp, log)
		if ingress != nil {
			ts.SetRequestSource(proxyRequests{proxy: ingress.proxy, node: ctrl.NodeName(), flows: dp, log: log})
		}
		if err := ts.Serve(nodeCtx); err != nil {
			log.Warn("trace server", "err", err)
		}
	})
	nodeServers.Go(func() {
		serveExplain(nodeCtx, explainSocketPath(f.explainSocket, f.traceSocket), dp, podRedirect, ctrl, ingress, log)
	})
	selfCheck := &agentHealth{syncLoop: ctrl.Health, datapath: dp.Check, synced: ctrl.Synced(), listeners: probes}
	if f.l7.metricsAddr != "" {
		nodeServers.Go(func() {
			if err := serveMetrics(nodeCtx, f.l7.metricsAddr, reg, selfCheck, log); err != nil {
				log.Error("metrics server", "err", err)
			}
		})
	}
	// The pod's own: it answers after a handover too (alive, not ready).
	if f.healthSocket != "" {
		hctx, stopHealth := context.WithCancel(ctx)
		var podHealth sync.WaitGroup
		defer func() {
			stopHealth()
			podHealth.Wait()
		}()
		podHealth.Go(func() {
			if err := serveHealthSocket(hctx, f.healthSocket, selfCheck, log); err != nil {
				log.Error("health socket", "err", err)
			}
		})
	}
	if ingress != nil && f.handover.keeper != "" {
		nodeServers.Go(func() { keepListeners(nodeCtx, f.handover.keeper, ingress, log) })
	}
	stopNodeServers := func() {
		stopNode()
		nodeServers.Wait()
		health.close()
	}
	defer stopNodeServers()

	ctrlDone := make(chan error, 1)
	go func() { ctrlDone <- ctrl.Run(ctrlCtx) }()
	log.Info("agent running", "devices", devices, "bpffs", f.bpffs, "standalone", f.standalone, "kubeconfig", f.kubeconfig)

	select {
	case <-ctrl.Synced():
	case err := <-ctrlDone:
		return err
	case <-ctx.Done():
		stopCtrl()
		return <-ctrlDone
	}
	if ingress != nil {
		ingress.serve()
	}
	log.Info("initial sync done, serving", "node_ips", nodeIPs)
	if predecessor != nil {
		if err := predecessor.Serving(); err != nil {
			log.Warn("telling the replaced agent", "pid", predecessor.PID, "err", err)
		}
	}
	var takeovers <-chan *handover.Request
	if path := f.handover.path(f.traceSocket); path != "" {
		srv, err := handover.Listen(path, log)
		if err != nil {
			log.Warn("handover socket: this agent cannot be replaced without refusing connections", "err", err)
		} else {
			defer srv.Close()
			takeovers = srv.Requests()
		}
	}

	select {
	case err := <-ctrlDone:
		return err
	case <-ctx.Done():
		stopCtrl()
		runErr := <-ctrlDone
		log.Info("agent stopped; the datapath keeps forwarding with its last state until `nodegress cleanup`", "bpffs", f.bpffs)
		return runErr
	case req := <-takeovers:
		return handOver(ctx, req, ingress, func() {
			stopCtrl()
			if err := <-ctrlDone; err != nil {
				log.Warn("controller stopped", "err", err)
			}
			stopNodeServers()
			closeDatapath()
			writerLock.Release()
			selfCheck.handedOver.Store(true)
		}, log)
	}
}

// handOver gives this agent's place to a successor: freeze stops
// everything that writes to the datapath or holds a node-wide address, then
// the proxy's listeners go to the successor. The proxy serves on with its
// last routes until the successor serves too, then drains. The agent then
// idles until it is stopped: under a DaemonSet, exiting would make the
// kubelet restart it, and the restarted agent would take the node back.
func handOver(ctx context.Context, req *handover.Request, ingress *ingressProxy, freeze func(), log *slog.Logger) error {
	log.Info("handing over to a new agent", "pid", req.PID)
	freeze()
	files := map[string]*os.File{}
	if ingress != nil {
		var err error
		if files, err = ingress.files(); err != nil {
			req.Refuse(err.Error())
			return fmt.Errorf("handover: %w", err)
		}
	}
	err := req.Grant(files)
	closeFiles(files)
	if err == nil {
		err = req.WaitServing(ctx)
	}
	if err == nil {
		log.Info("the new agent serves; draining", "pid", req.PID)
	}
	if ingress != nil {
		ingress.shutdown()
	}
	switch {
	case err == nil:
		log.Info("handed over and drained; idle until stopped", "pid", req.PID)
	case ctx.Err() != nil:
		log.Info("stopped during a handover; the new agent has the listeners", "pid", req.PID)
		return nil
	default:
		// This agent stopped syncing: exit, so that it starts anew and
		// adopts the datapath as the successor may have left it.
		return fmt.Errorf("handover to pid %d failed: %w", req.PID, err)
	}
	<-ctx.Done()
	return nil
}

func defaultElectionNamespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	return controller.DefaultElectionNamespace
}

// enableForwarding turns on IPv4 forwarding: packets the datapath DNATs to
// local pods are routed by the kernel, and bpf_fib_lookup refuses to
// forward on devices where forwarding is off.
func enableForwarding(log *slog.Logger) error {
	const path = "/proc/sys/net/ipv4/ip_forward"
	cur, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if strings.TrimSpace(string(cur)) == "1" {
		return nil
	}
	if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enable ip forwarding: %w", err)
	}
	log.Info("enabled net.ipv4.ip_forward")
	return nil
}

func newLogger(level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: unknown format %q (want text or json)", format)
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if p := strings.TrimSpace(part); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func parsePortRange(s string) (uint16, uint16, error) {
	lo, hi, ok := strings.Cut(s, "-")
	if !ok {
		return 0, 0, fmt.Errorf("%q: want MIN-MAX", s)
	}
	min, err := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
	if err != nil {
		return 0, 0, fmt.Errorf("%q: %w", s, err)
	}
	max, err := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
	if err != nil {
		return 0, 0, fmt.Errorf("%q: %w", s, err)
	}
	if min == 0 || max < min {
		return 0, 0, fmt.Errorf("%q: want 1 <= MIN <= MAX <= 65535", s)
	}
	return uint16(min), uint16(max), nil
}

// kubeClient connects to the API server unless the agent runs standalone:
// with --kubeconfig, or with the in-cluster service account.
func kubeClient(f agentFlags) (kubernetes.Interface, *rest.Config, error) {
	if f.standalone != "" {
		if f.kubeconfig != "" {
			return nil, nil, errors.New("--standalone and --kubeconfig exclude each other")
		}
		return nil, nil, nil
	}
	var cfg *rest.Config
	var err error
	if f.kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", f.kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
		if errors.Is(err, rest.ErrNotInCluster) {
			return nil, nil, errors.New("no source: give --standalone DIR, --kubeconfig FILE, or run in a cluster")
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("api server config: %w", err)
	}
	cfg.UserAgent = "nodegress/" + version
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("api server client: %w", err)
	}
	return client, cfg, nil
}

// parsePodRedirect resolves --pod-redirect: auto means on when nodegress
// replaces kube-proxy, whose rules would otherwise drop pods' first
// replies as conntrack-INVALID.
func parsePodRedirect(v string, replaceKubeProxy bool) (bool, error) {
	switch v {
	case "on":
		return true, nil
	case "off":
		return false, nil
	case "auto":
		return replaceKubeProxy, nil
	}
	return false, fmt.Errorf("--pod-redirect %q: want auto, on or off", v)
}

// parsePrefixList parses a comma-separated list of CIDRs; an address
// alone is its single-address prefix.
func parsePrefixList(v string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range splitList(v) {
		p, err := netip.ParsePrefix(f)
		if err != nil {
			a, aerr := netip.ParseAddr(f)
			if aerr != nil {
				return nil, fmt.Errorf("%q is no CIDR or address", f)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// parsePrefixes is parsePrefixList for IPv4 prefixes only.
func parsePrefixes(v string) ([]netip.Prefix, error) {
	out, err := parsePrefixList(v)
	if err != nil {
		return nil, err
	}
	for _, p := range out {
		if !p.Addr().Is4() {
			return nil, fmt.Errorf("%s: not IPv4", p)
		}
	}
	return out, nil
}
