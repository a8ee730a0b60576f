// Package kube runs a real Kubernetes control plane for tests: etcd and
// kube-apiserver, built from Go modules by scripts/kube-bins.sh, started on
// loopback or inside a test's network namespace, with an admin identity (a
// client certificate in system:masters), RBAC authorization and
// ServiceAccount tokens. No controller-manager or scheduler runs: objects
// are stored and watched exactly as on a cluster, but nothing reconciles
// them (no Pods for a DaemonSet, no EndpointSlices for a Service,
// namespaces stay Terminating), which is what tests of a controller want.
//
// The control plane itself is package cp; this package ties it to a test:
// it skips when the binaries are not built, stops everything in t.Cleanup
// and logs the end of both logs when the test failed.
package kube

import (
	"net/netip"
	"testing"
	"time"

	"github.com/nodegress/nodegress/tests/kube/cp"
	"github.com/nodegress/nodegress/tests/netns"
)

// AdminUser is the user name of the admin identity (group system:masters).
const AdminUser = cp.AdminUser

// DefaultServiceCIDR is the Service ClusterIP range unless WithServiceCIDR
// says otherwise. It stays clear of the tests/netns address plan.
var DefaultServiceCIDR = cp.DefaultServiceCIDR

// Option changes how Start runs the control plane.
type Option = cp.Option

// InNetns runs etcd and kube-apiserver inside ns (through `ip netns exec`).
// etcd listens on the namespace's loopback; the API server on the address
// given by ListenOn, 127.0.0.1 by default. The returned Config and Client
// dial from inside ns, so the test reaches the API server whatever the
// routing; processes elsewhere (agents in node namespaces) need a route to
// the ListenOn address.
func InNetns(ns *netns.NS) Option { return cp.InNetns(ns) }

// ListenOn makes the API server bind and advertise addr (which must be an
// address of the host, or of the namespace given with InNetns).
func ListenOn(addr netip.Addr) Option { return cp.ListenOn(addr) }

// WithServiceCIDR sets --service-cluster-ip-range.
func WithServiceCIDR(p netip.Prefix) Option { return cp.WithServiceCIDR(p) }

// WithAPIServerArgs adds kube-apiserver flags, in "--flag=value" form; one
// naming a flag Start sets replaces it.
func WithAPIServerArgs(args ...string) Option { return cp.WithAPIServerArgs(args...) }

// ControlPlane is a running etcd and kube-apiserver tied to a test. Its
// fields and methods are those of cp.ControlPlane (Kubeconfig, Client,
// StopAPIServer, Kubectl, ServiceAccountKubeconfig, ...), plus MustKubectl.
type ControlPlane struct {
	*cp.ControlPlane
	t testing.TB
}

// Start runs etcd and kube-apiserver and waits until the API server is
// ready (bounded). Everything stops in t.Cleanup, even when the test fails;
// on failure the end of both logs is written to the test log. It skips the
// test when the binaries are not built (see BinDir).
func Start(t testing.TB, opts ...Option) *ControlPlane {
	t.Helper()
	bin := BinDir(t)
	// Made before the cleanup below is registered, so it is removed after
	// the processes using it have stopped.
	dir := t.TempDir()
	began := time.Now()
	c, err := cp.Start(bin, dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	kc := &ControlPlane{ControlPlane: c, t: t}
	t.Cleanup(kc.cleanup)
	t.Logf("kubernetes control plane at %s ready in %s", c.URL, time.Since(began).Round(time.Millisecond))
	return kc
}

// MustKubectl is Kubectl that fails the test on error.
func (c *ControlPlane) MustKubectl(args ...string) []byte {
	c.t.Helper()
	out, err := c.Kubectl(args...)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

// cleanup stops both processes and logs their output when the test failed.
func (c *ControlPlane) cleanup() {
	if err := c.Stop(); err != nil {
		c.t.Errorf("stop: %v", err)
	}
	if c.t.Failed() {
		c.t.Logf("%s", c.LogTails(40))
	}
}
