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
	"net/netip"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	gwapi "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nodegress/nodegress/controller"
	"github.com/nodegress/nodegress/l7proxy"
	"github.com/nodegress/nodegress/loader"
)

// l7Flags configure the Ingress proxy of the agent.
type l7Flags struct {
	enabled         bool
	httpPort        uint
	httpsPort       uint
	publishService  string
	defaultBackend  string
	controllerName  string
	trustedProxies  string
	proxyProtocol   string
	accessLog       string
	metricsAddr     string
	shutdownTimeout time.Duration

	gatewayAPI            string
	gatewayAddressPool    string
	gatewayAddressRanges  string
	gatewayAddressSource  string
	gatewayControllerName string
}

func (f *l7Flags) register(fs *flag.FlagSet) {
	fs.BoolVar(&f.enabled, "ingress", true, "serve Ingresses of our class with the local L7 proxy")
	fs.UintVar(&f.httpPort, "http-port", 80, "port the node's addresses serve HTTP on")
	fs.UintVar(&f.httpsPort, "https-port", 443, "port the node's addresses serve HTTPS on")
	fs.StringVar(&f.publishService, "publish-service", "", "NAMESPACE/NAME of the LoadBalancer Service fronting the ingress: its LoadBalancer IPs are served too")
	fs.StringVar(&f.defaultBackend, "default-backend-service", "", "NAMESPACE/NAME:PORT serving requests no Ingress matches (default: 404)")
	fs.StringVar(&f.controllerName, "ingress-controller-name", controller.DefaultControllerName, "spec.controller of the IngressClasses served")
	fs.StringVar(&f.trustedProxies, "trusted-proxies", "", "comma-separated CIDRs whose X-Forwarded-* headers are trusted")
	fs.StringVar(&f.proxyProtocol, "proxy-protocol-from", "", "comma-separated CIDRs of load balancers whose connections start with a PROXY protocol header (v1 or v2), required from them; the client address it carries is used everywhere")
	fs.StringVar(&f.accessLog, "access-log", "-", "JSON access log: a file path, - for standard output, or off")
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "address serving Prometheus /metrics, /healthz and /readyz (empty: off)")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 10*time.Second, "how long in-flight requests get to finish on shutdown")
	fs.StringVar(&f.gatewayAPI, "gateway-api", "auto", "serve the Gateway API (with --ingress): on, off, or auto (on when the API server has the Gateway API's CRDs, checked at start; always standalone)")
	fs.StringVar(&f.gatewayAddressPool, "gateway-address-pool", "", "CIDR[,CIDR...]: addresses given to Gateways without spec.addresses; they must be routed to the nodes")
	fs.StringVar(&f.gatewayAddressRanges, "gateway-address-ranges", "", "CIDR[,CIDR...]: where Gateways' spec.addresses may be besides the pool (the network routes them to the nodes); others are not usable. Empty: any address")
	fs.StringVar(&f.gatewayAddressSource, "gateway-address-source", "pool", "where Gateways without spec.addresses get addresses: pool (--gateway-address-pool) or service (the load balancer IPs of a LoadBalancer Service the elected agent creates for each Gateway)")
	fs.StringVar(&f.gatewayControllerName, "gateway-controller-name", controller.DefaultGatewayControllerName, "spec.controllerName of the GatewayClasses served")
}

func (f *l7Flags) ports() (uint16, uint16, error) {
	if f.httpPort == 0 || f.httpPort > 65535 || f.httpsPort == 0 || f.httpsPort > 65535 || f.httpPort == f.httpsPort {
		return 0, 0, fmt.Errorf("--http-port %d / --https-port %d: want two different ports in 1-65535", f.httpPort, f.httpsPort)
	}
	return uint16(f.httpPort), uint16(f.httpsPort), nil
}

func (f *l7Flags) trusted() ([]netip.Prefix, error) {
	out, err := parsePrefixList(f.trustedProxies)
	if err != nil {
		return nil, fmt.Errorf("--trusted-proxies: %w", err)
	}
	return out, nil
}

func (f *l7Flags) accessLogWriter() (io.Writer, func(), error) {
	switch f.accessLog {
	case "off", "":
		return nil, func() {}, nil
	case "-":
		return os.Stdout, func() {}, nil
	}
	file, err := os.OpenFile(f.accessLog, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
	if err != nil {
		return nil, nil, fmt.Errorf("--access-log: %w", err)
	}
	return file, func() { file.Close() }, nil
}

// ingressProxy is the running L7 proxy and its steered listeners.
type ingressProxy struct {
	proxy   *l7proxy.Proxy
	servers chan error
	closers []func()
	log     *slog.Logger
	timeout time.Duration
	// probes check the listeners for /healthz.
	probes []proxyProbe
	// listeners by name, and the accept loops serve starts on them.
	listeners map[string]*net.TCPListener
	loops     []func()
	serveOnce sync.Once
	shutOnce  sync.Once
}

// startIngressProxy creates the proxy, opens its listeners on loopback (or
// takes inherited ones, by name, from an earlier agent) and registers them
// with the datapath, which steers the node's HTTP/HTTPS frontends to them:
// the proxy binds no wildcard address and sees each connection's original
// destination. It accepts nothing until serve: before the first sync it
// would answer with an empty route table, while connections can wait in
// the accept queue (or go to the agent it takes over from).
func startIngressProxy(ctx context.Context, f *l7Flags, dp *loader.Datapath, reg prometheus.Registerer, log *slog.Logger, inherited map[string]*os.File) (*ingressProxy, *controller.L7Config, error) {
	httpPort, httpsPort, err := f.ports()
	if err != nil {
		return nil, nil, err
	}
	trusted, err := f.trusted()
	if err != nil {
		return nil, nil, err
	}
	proxyProtocol, err := parsePrefixList(f.proxyProtocol)
	if err != nil {
		return nil, nil, fmt.Errorf("--proxy-protocol-from: %w", err)
	}
	accessLog, closeLog, err := f.accessLogWriter()
	if err != nil {
		return nil, nil, err
	}
	p, err := l7proxy.New(l7proxy.Options{
		TrustedProxies:    trusted,
		ProxyProtocolFrom: proxyProtocol,
		AccessLog:         accessLog,
		Logger:            log,
		Registry:          reg,
		HTTPSPort:         int(httpsPort),
	})
	if err != nil {
		closeLog()
		return nil, nil, fmt.Errorf("ingress proxy: %w", err)
	}
	ip := &ingressProxy{proxy: p, servers: make(chan error, 2), closers: []func(){closeLog}, log: log, timeout: f.shutdownTimeout,
		listeners: map[string]*net.TCPListener{}}
	for _, l := range []struct {
		name  string
		serve func(net.Listener) error
	}{
		{controller.ListenerHTTP, p.ServeHTTP},
		{controller.ListenerHTTPS, p.ServeHTTPS},
	} {
		ln, err := inheritedListener(inherited, l.name)
		if err == nil && ln == nil {
			ln, err = loader.ListenProxy(ctx, "127.0.0.1:0")
		}
		if err != nil {
			ip.close()
			return nil, nil, err
		}
		if err := dp.RegisterProxyListener(l.name, ln); err != nil {
			ln.Close()
			ip.close()
			return nil, nil, err
		}
		serve := l.serve
		ip.listeners[l.name] = ln
		ip.loops = append(ip.loops, func() { ip.servers <- serve(ln) })
		ip.probes = append(ip.probes, proxyProbe{name: l.name, addr: ln.Addr().String(), tls: l.name == controller.ListenerHTTPS,
			proxyHeader: slices.ContainsFunc(proxyProtocol, func(p netip.Prefix) bool { return p.Contains(netip.MustParseAddr("127.0.0.1")) })})
		ip.closers = append(ip.closers, func() { ln.Close() })
		log.Info("ingress proxy listening", "listener", l.name, "addr", ln.Addr())
	}
	return ip, &controller.L7Config{
		HTTPPort:              httpPort,
		HTTPSPort:             httpsPort,
		ControllerName:        f.controllerName,
		PublishService:        f.publishService,
		DefaultBackendService: f.defaultBackend,
		Proxy:                 p,
	}, nil
}

// inheritedListener returns the inherited listener called name, nil when
// there is none.
func inheritedListener(inherited map[string]*os.File, name string) (*net.TCPListener, error) {
	f := inherited[name]
	if f == nil {
		return nil, nil
	}
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("inherited %s listener: %w", name, err)
	}
	tl, ok := l.(*net.TCPListener)
	if !ok {
		l.Close()
		return nil, fmt.Errorf("inherited %s listener is no TCP listener", name)
	}
	return tl, nil
}

// serve starts accepting on the listeners; once.
func (ip *ingressProxy) serve() {
	ip.serveOnce.Do(func() {
		for _, loop := range ip.loops {
			go loop()
		}
		ip.log.Info("ingress proxy accepting connections")
	})
}

// files returns a duplicate of each listening socket, by name, to hand to
// another process; the caller closes them.
func (ip *ingressProxy) files() (map[string]*os.File, error) {
	out := make(map[string]*os.File, len(ip.listeners))
	for name, l := range ip.listeners {
		f, err := l.File()
		if err != nil {
			closeFiles(out)
			return nil, fmt.Errorf("%s listener: %w", name, err)
		}
		out[name] = f
	}
	return out, nil
}

// shutdown stops accepting, lets in-flight requests, upgraded connections
// and streams finish within the shutdown timeout, then closes everything;
// once. Listening sockets shared with another agent stay open there.
func (ip *ingressProxy) shutdown() {
	ip.shutOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), ip.timeout)
		defer cancel()
		if err := ip.proxy.Shutdown(ctx); err != nil {
			ip.log.Warn("ingress proxy shutdown", "err", err)
		}
		ip.close()
	})
}

func (ip *ingressProxy) close() {
	for _, c := range ip.closers {
		c()
	}
}

// serveMetrics serves Prometheus metrics and health endpoints: /healthz
// fails when a part that serves traffic is wedged, /readyz also until the
// first full sync (selfcheck.go).
func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry, health *agentHealth, log *slog.Logger) error {
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	handleHealth(mux, health, log)
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ln, err := listenRetrying(ctx, addr, log)
	if err != nil || ln == nil {
		return err
	}
	log.Info("serving metrics", "addr", ln.Addr().String())
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// listenRetrying listens on addr, trying again while the address is in use:
// during a handover the agent being replaced still holds it for a moment.
// It returns nil, nil when ctx ends first.
func listenRetrying(ctx context.Context, addr string, log *slog.Logger) (net.Listener, error) {
	warned := false
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			return ln, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("--metrics-addr: %w", err)
		}
		if !warned {
			log.Info("metrics address in use; waiting for it", "addr", addr)
			warned = true
		}
		if !sleepCtx(ctx, 100*time.Millisecond) {
			return nil, nil
		}
	}
}

// gatewayResources are the Gateway API kinds the agent follows; auto
// turns the Gateway API on when the API server serves them all.
var gatewayResources = []string{"gatewayclasses", "gateways", "httproutes", "grpcroutes", "referencegrants"}

// gatewayStatusQPS bounds the Gateway API client's requests per second.
const gatewayStatusQPS = 50

// optionalGatewayResources are followed when served.
var optionalGatewayResources = []string{"tlsroutes", "backendtlspolicies", "listenersets"}

// gatewayConfig resolves --gateway-api and its companions; nil when the
// Gateway API is off.
func gatewayConfig(f *l7Flags, standalone bool, client kubernetes.Interface, cfg *rest.Config, log *slog.Logger) (*controller.GatewayConfig, error) {
	pool, err := parsePrefixes(f.gatewayAddressPool)
	if err != nil {
		return nil, fmt.Errorf("--gateway-address-pool: %w", err)
	}
	ranges, err := parsePrefixes(f.gatewayAddressRanges)
	if err != nil {
		return nil, fmt.Errorf("--gateway-address-ranges: %w", err)
	}
	source, err := controller.ParseGatewayAddressSource(f.gatewayAddressSource)
	if err != nil {
		return nil, fmt.Errorf("--gateway-address-source: %w", err)
	}
	gc := &controller.GatewayConfig{ControllerName: f.gatewayControllerName, AddressPool: pool, AddressRanges: ranges,
		AddressSource: source}
	switch f.gatewayAPI {
	case "off":
		return nil, nil
	case "on", "auto":
	default:
		return nil, fmt.Errorf("--gateway-api %q: want auto, on or off", f.gatewayAPI)
	}
	if standalone {
		return gc, nil
	}
	missing, err := missingGatewayResources(client, slices.Concat(gatewayResources, optionalGatewayResources))
	if err != nil {
		return nil, fmt.Errorf("--gateway-api %s: %w", f.gatewayAPI, err)
	}
	// CRDs older than Gateway API v1.5 have no TLSRoute and ListenerSet
	// in v1, older than v1.4 no BackendTLSPolicy: the rest works without
	// them.
	if slices.Contains(missing, "tlsroutes") {
		log.Info("gateway api: TLSRoutes not served in " + gwapi.GroupVersion.String() + "; TLS listeners get no routes")
		gc.SkipTLSRoutes = true
	}
	if slices.Contains(missing, "backendtlspolicies") {
		log.Info("gateway api: BackendTLSPolicies not served in " + gwapi.GroupVersion.String() + "; backends are not verified")
		gc.SkipBackendTLSPolicies = true
	}
	if slices.Contains(missing, "listenersets") {
		log.Info("gateway api: ListenerSets not served in " + gwapi.GroupVersion.String())
		gc.SkipListenerSets = true
	}
	missing = slices.DeleteFunc(missing, func(r string) bool { return slices.Contains(optionalGatewayResources, r) })
	if f.gatewayAPI == "auto" {
		if len(missing) > 0 {
			log.Info("gateway api off: its CRDs are not installed (see manifests/gateway-api); restart the agent after installing them",
				"missing", missing)
			return nil, nil
		}
	}
	// The elected agent writes the status of every Gateway API object of
	// ours: client-go's default 5 requests/s would take minutes for a few
	// thousand routes.
	gcfg := rest.CopyConfig(cfg)
	gcfg.QPS, gcfg.Burst = gatewayStatusQPS, 2*gatewayStatusQPS
	if gc.Client, err = gwclient.NewForConfig(gcfg); err != nil {
		return nil, fmt.Errorf("gateway api client: %w", err)
	}
	return gc, nil
}

// missingGatewayResources lists the resources of want the API server
// does not serve in gateway.networking.k8s.io/v1.
func missingGatewayResources(client kubernetes.Interface, want []string) ([]string, error) {
	list, err := client.Discovery().ServerResourcesForGroupVersion(gwapi.GroupVersion.String())
	if apierrors.IsNotFound(err) {
		return want, nil
	}
	if err != nil {
		return nil, fmt.Errorf("discover %s: %w", gwapi.GroupVersion, err)
	}
	var missing []string
	for _, r := range want {
		if !slices.ContainsFunc(list.APIResources, func(a metav1.APIResource) bool { return a.Name == r }) {
			missing = append(missing, r)
		}
	}
	return missing, nil
}
