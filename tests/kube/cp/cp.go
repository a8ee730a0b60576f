// Package cp runs a real Kubernetes control plane: etcd and kube-apiserver,
// built from Go modules by scripts/kube-bins.sh, started on loopback or
// inside a network namespace, with an admin identity (a client certificate
// in system:masters), RBAC authorization and ServiceAccount tokens. No
// controller-manager or scheduler runs: objects are stored and watched
// exactly as on a cluster, but nothing reconciles them (no Pods for a
// DaemonSet, no EndpointSlices for a Service, namespaces stay Terminating),
// which is what tests of a controller and the demo want.
//
// It is the part of tests/kube that needs no testing.TB, so commands (the
// demo's control plane) run it too; tests use tests/kube, which adds
// skipping, cleanup and failure logs.
package cp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/nodegress/nodegress/tests/netns"
)

// AdminUser is the user name of the admin identity (group system:masters).
const AdminUser = "nodegress-admin"

// Bounds of the waits, generous for two cores busy with other work: the
// API server has been seen to need 40 s to become ready there, 3 s when idle.
const (
	etcdReadyTimeout      = 30 * time.Second
	apiServerReadyTimeout = 90 * time.Second
	stopGrace             = 20 * time.Second
	kubectlTimeout        = 60 * time.Second
)

// DefaultServiceCIDR is the Service ClusterIP range unless WithServiceCIDR
// says otherwise. It stays clear of the tests/netns address plan.
var DefaultServiceCIDR = netip.MustParsePrefix("10.0.0.0/16")

// Option changes how Start runs the control plane.
type Option func(*options)

type options struct {
	ns          *netns.NS
	addr        netip.Addr
	serviceCIDR netip.Prefix
	extraArgs   []string
}

// InNetns runs etcd and kube-apiserver inside ns (through `ip netns exec`).
// etcd listens on the namespace's loopback; the API server on the address
// given by ListenOn, 127.0.0.1 by default. The returned Config and Client
// dial from inside ns, so the test reaches the API server whatever the
// routing; processes elsewhere (agents in node namespaces) need a route to
// the ListenOn address.
func InNetns(ns *netns.NS) Option { return func(o *options) { o.ns = ns } }

// ListenOn makes the API server bind and advertise addr (which must be an
// address of the host, or of the namespace given with InNetns).
func ListenOn(addr netip.Addr) Option { return func(o *options) { o.addr = addr } }

// WithServiceCIDR sets --service-cluster-ip-range.
func WithServiceCIDR(p netip.Prefix) Option { return func(o *options) { o.serviceCIDR = p } }

// WithAPIServerArgs adds kube-apiserver flags, in "--flag=value" form; one
// naming a flag Start sets replaces it.
func WithAPIServerArgs(args ...string) Option {
	return func(o *options) { o.extraArgs = append(o.extraArgs, args...) }
}

// ControlPlane is a running etcd and kube-apiserver.
type ControlPlane struct {
	// Kubeconfig is the path of an admin kubeconfig (group system:masters).
	// Outside the namespace given with InNetns it works only if the API
	// server's address is routed there.
	Kubeconfig string
	// Config is the admin's client configuration; it dials from inside the
	// InNetns namespace if there is one.
	Config *rest.Config
	// Client is a clientset built from Config.
	Client kubernetes.Interface
	// Addr is the API server's address and port; URL is https://Addr.
	Addr netip.AddrPort
	URL  string
	// CAPEM is the certificate authority the API server's serving
	// certificate chains to.
	CAPEM []byte
	// BinDir holds the kube-apiserver, kubectl, kube-proxy and etcd used.
	BinDir string
	// Dir holds certificates, kubeconfigs, etcd's data and the logs
	// (etcd.log, kube-apiserver.log).
	Dir string

	ns      *netns.NS
	apiArgs []string

	mu        sync.Mutex
	etcd      *process
	apiserver *process
}

// Start runs etcd and kube-apiserver from the binaries in binDir, keeping
// certificates, kubeconfigs, etcd's data and logs in dir (which must
// exist), and waits until the API server is ready (bounded). On error
// everything it started is stopped again. Stop ends both.
func Start(binDir, dir string, opts ...Option) (*ControlPlane, error) {
	o := options{addr: netip.MustParseAddr("127.0.0.1"), serviceCIDR: DefaultServiceCIDR}
	for _, opt := range opts {
		opt(&o)
	}
	if err := checkBins(binDir); err != nil {
		return nil, err
	}
	cp := &ControlPlane{BinDir: binDir, Dir: dir, ns: o.ns}
	if err := cp.start(o); err != nil {
		_ = cp.Stop()
		return nil, fmt.Errorf("start control plane: %w", err)
	}
	return cp, nil
}

func (cp *ControlPlane) start(o options) error {
	loopback := netip.MustParseAddr("127.0.0.1")
	etcdClient, err := cp.freePort(loopback)
	if err != nil {
		return err
	}
	etcdPeer, err := cp.freePort(loopback)
	if err != nil {
		return err
	}
	apiPort, err := cp.freePort(o.addr)
	if err != nil {
		return err
	}
	cp.Addr = netip.AddrPortFrom(o.addr, apiPort)
	cp.URL = "https://" + cp.Addr.String()

	etcdURL := "http://" + netip.AddrPortFrom(loopback, etcdClient).String()
	peerURL := "http://" + netip.AddrPortFrom(loopback, etcdPeer).String()
	etcd, err := startProcess(cp.ns, "etcd", filepath.Join(cp.Dir, "etcd.log"), filepath.Join(cp.BinDir, "etcd"),
		"--name=default",
		"--data-dir="+filepath.Join(cp.Dir, "etcd"),
		"--listen-client-urls="+etcdURL,
		"--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=default="+peerURL,
		// Test data need not survive a power cut; fsync would dominate
		// every write on a busy disk.
		"--unsafe-no-fsync=true",
		"--log-level=warn",
	)
	if err != nil {
		return err
	}
	cp.mu.Lock()
	cp.etcd = etcd
	cp.mu.Unlock()
	if err := cp.waitEtcd(etcdURL); err != nil {
		return err
	}

	firstServiceIP := o.serviceCIDR.Masked().Addr().Next()
	p, err := newPKI(cp.Dir, uniqueAddrs(o.addr, loopback, firstServiceIP))
	if err != nil {
		return err
	}
	cp.CAPEM = p.caPEM
	cp.apiArgs = mergeArgs([]string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=" + o.addr.String(),
		"--advertise-address=" + o.addr.String(),
		"--secure-port=" + strconv.Itoa(int(apiPort)),
		"--tls-cert-file=" + p.certFile,
		"--tls-private-key-file=" + p.keyFile,
		"--client-ca-file=" + p.caFile,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + p.saPubFile,
		"--service-account-signing-key-file=" + p.saKeyFile,
		"--authorization-mode=RBAC",
		"--service-cluster-ip-range=" + o.serviceCIDR.String(),
		// The DaemonSet in manifests/ runs privileged.
		"--allow-privileged=true",
		"--cert-dir=" + filepath.Join(cp.Dir, "apiserver-certs"),
		"--profiling=false",
	}, o.extraArgs)
	if o.addr.IsLoopback() {
		// The "kubernetes" Service cannot have a loopback endpoint, and the
		// API server refuses to start rather than publish one; without a
		// reconciler the Service simply has no endpoints.
		cp.apiArgs = mergeArgs(cp.apiArgs, []string{"--endpoint-reconciler-type=none"})
	}

	cp.Config = &rest.Config{
		Host: cp.URL,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   p.caPEM,
			CertData: p.adminCertPEM,
			KeyData:  p.adminKeyPEM,
		},
		// Tests create objects in bursts; the default 5 QPS would make
		// them measure the client's rate limiter.
		QPS:   100,
		Burst: 200,
	}
	if cp.ns != nil {
		cp.Config.Dial = cp.ns.DialContext
	}
	if cp.Client, err = kubernetes.NewForConfig(cp.Config); err != nil {
		return fmt.Errorf("clientset: %w", err)
	}
	cp.Kubeconfig = filepath.Join(cp.Dir, "admin.kubeconfig")
	if err := writeKubeconfig(cp.Kubeconfig, cp.URL, p.caPEM, "default", &clientcmdapi.AuthInfo{
		ClientCertificateData: p.adminCertPEM,
		ClientKeyData:         p.adminKeyPEM,
	}); err != nil {
		return err
	}
	return cp.StartAPIServer()
}

// StartAPIServer starts kube-apiserver again after StopAPIServer, with the
// same address, flags and certificates, and waits until it is ready. etcd
// kept running, so every object is still there.
func (cp *ControlPlane) StartAPIServer() error {
	cp.mu.Lock()
	if cp.apiserver != nil && cp.apiserver.running() {
		cp.mu.Unlock()
		return errors.New("kube-apiserver already running")
	}
	p, err := startProcess(cp.ns, "kube-apiserver", filepath.Join(cp.Dir, "kube-apiserver.log"),
		filepath.Join(cp.BinDir, "kube-apiserver"), cp.apiArgs...)
	if err == nil {
		cp.apiserver = p
	}
	cp.mu.Unlock()
	if err != nil {
		return err
	}
	rc := cp.Client.Discovery().RESTClient()
	return poll(p, apiServerReadyTimeout, 250*time.Millisecond, func(ctx context.Context) error {
		body, err := rc.Get().AbsPath("/readyz").Do(ctx).Raw()
		if err != nil {
			return fmt.Errorf("readyz: %w: %s", err, bytes.TrimSpace(body))
		}
		return nil
	})
}

// StopAPIServer stops kube-apiserver (SIGTERM, then SIGKILL after a grace
// period) and leaves etcd running. Clients see connection errors until
// StartAPIServer.
func (cp *ControlPlane) StopAPIServer() error {
	cp.mu.Lock()
	p := cp.apiserver
	cp.mu.Unlock()
	if p == nil {
		return nil
	}
	return p.stop(stopGrace)
}

// RestartAPIServer is StopAPIServer then StartAPIServer.
func (cp *ControlPlane) RestartAPIServer() error {
	if err := cp.StopAPIServer(); err != nil {
		return err
	}
	return cp.StartAPIServer()
}

// Kubectl runs the cached kubectl with the admin kubeconfig (inside the
// InNetns namespace if there is one) and returns its standard output; the
// error carries its standard error. It is bounded in time.
func (cp *ControlPlane) Kubectl(args ...string) ([]byte, error) {
	return cp.KubectlAs(cp.Kubeconfig, args...)
}

// KubectlAs is Kubectl with another kubeconfig, for instance one made by
// ServiceAccountKubeconfig.
func (cp *ControlPlane) KubectlAs(kubeconfig string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), kubectlTimeout)
	defer cancel()
	full := append([]string{
		"--kubeconfig=" + kubeconfig,
		// Keep discovery caches with the test, not in $HOME.
		"--cache-dir=" + filepath.Join(cp.Dir, "kubectl-cache"),
	}, args...)
	kubectl := filepath.Join(cp.BinDir, "kubectl")
	var cmd *exec.Cmd
	if cp.ns != nil {
		cmd = cp.ns.Command(ctx, kubectl, full...)
	} else {
		cmd = exec.CommandContext(ctx, kubectl, full...)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}

// Stop stops both processes, the API server first so it never runs
// without its storage. It returns an error only when one outlives SIGKILL.
func (cp *ControlPlane) Stop() error {
	cp.mu.Lock()
	procs := []*process{cp.apiserver, cp.etcd}
	cp.mu.Unlock()
	var errs []error
	for _, p := range procs {
		if p == nil {
			continue
		}
		if err := p.stop(stopGrace); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// LogTails returns the last n lines of etcd's and kube-apiserver's logs,
// for a failure report.
func (cp *ControlPlane) LogTails(n int) string {
	cp.mu.Lock()
	procs := []*process{cp.apiserver, cp.etcd}
	cp.mu.Unlock()
	var b strings.Builder
	for _, p := range procs {
		if p != nil {
			fmt.Fprintf(&b, "end of %s log:\n%s\n", p.name, tail(p.logPath, n))
		}
	}
	return b.String()
}

// waitEtcd waits until etcd answers its health endpoint.
func (cp *ControlPlane) waitEtcd(url string) error {
	client := &http.Client{Transport: &http.Transport{DialContext: cp.dial}}
	defer client.CloseIdleConnections()
	return poll(cp.etcd, etcdReadyTimeout, 100*time.Millisecond, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/health", nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("etcd health: %s", resp.Status)
		}
		return nil
	})
}

func (cp *ControlPlane) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if cp.ns != nil {
		return cp.ns.DialContext(ctx, network, addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// freePort returns a TCP port free on addr where the processes will run.
// The port is released before the process binds it; nothing else in a
// test's namespace (or on loopback, in practice) takes it in between.
func (cp *ControlPlane) freePort(addr netip.Addr) (uint16, error) {
	listen := net.Listen
	if cp.ns != nil {
		listen = cp.ns.Listen
	}
	l, err := listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		return 0, fmt.Errorf("find free port on %s: %w", addr, err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port), nil
}

// writeKubeconfig writes a kubeconfig with one cluster, user and context.
func writeKubeconfig(path, server string, caPEM []byte, namespace string, user *clientcmdapi.AuthInfo) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["nodegress-test"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos["user"] = user
	cfg.Contexts["nodegress-test"] = &clientcmdapi.Context{Cluster: "nodegress-test", AuthInfo: "user", Namespace: namespace}
	cfg.CurrentContext = "nodegress-test"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}

func uniqueAddrs(addrs ...netip.Addr) []netip.Addr {
	var out []netip.Addr
	seen := map[netip.Addr]bool{}
	for _, a := range addrs {
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return out
}
