// Package netns builds throw-away network topologies for privileged tests:
// named network namespaces joined by veth pairs (and a bridge for an L2
// segment), with addresses, routes and sysctls, all removed in t.Cleanup even
// when the test fails.
//
// Namespaces are created with `ip netns add`, so they can be entered with
// `ip netns exec NAME ...` by the binaries under test, and from Go with Do.
package netns

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
)

// runDir is where `ip netns add` bind-mounts named namespaces.
const runDir = "/run/netns"

// NS is a named network namespace that lives as long as the test that made it.
type NS struct {
	// Name is the namespace's name under /run/netns.
	Name string
	t    testing.TB
}

// RandomSuffix returns n random hex characters, to keep names unique across
// concurrent test runs on one host.
func RandomSuffix(n int) string {
	b := make([]byte, (n+1)/2)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b)[:n]
}

// New creates the namespace name (which must not exist yet) with loopback up,
// IPv6 off (so router solicitations and DAD don't show up in traces) and
// reverse-path filtering off (Debian enables it and new namespaces inherit
// it; pod replies routed asymmetrically would otherwise be dropped). The
// namespace, and every process still running in it, is removed in t.Cleanup.
func New(t testing.TB, name string) *NS {
	t.Helper()
	if _, err := os.Stat(filepath.Join(runDir, name)); err == nil {
		t.Fatalf("netns %s already exists", name)
	}
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	n := &NS{Name: name, t: t}
	t.Cleanup(n.destroy)

	n.MustIP("link", "set", "lo", "up")
	// Set before any device is created: new devices copy "default", and the
	// effective rp_filter is the maximum of "all" and the device's value.
	for _, kv := range [][2]string{
		{"net.ipv4.conf.all.rp_filter", "0"},
		{"net.ipv4.conf.default.rp_filter", "0"},
	} {
		n.MustSysctl(kv[0], kv[1])
	}
	for _, kv := range [][2]string{
		{"net.ipv6.conf.all.disable_ipv6", "1"},
		{"net.ipv6.conf.default.disable_ipv6", "1"},
	} {
		// A kernel without IPv6 has nothing to turn off.
		if err := n.Sysctl(kv[0], kv[1]); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("netns %s: %v", name, err)
		}
	}
	return n
}

// destroy kills whatever still runs inside the namespace (only processes
// started by the test can be there), then deletes it.
func (n *NS) destroy() {
	for range 3 {
		out, err := exec.Command("ip", "netns", "pids", n.Name).Output()
		if err != nil || len(bytes.TrimSpace(out)) == 0 {
			break
		}
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
		n.t.Errorf("ip netns del %s: %v: %s", n.Name, err, out)
	}
}

// String returns the namespace's name.
func (n *NS) String() string { return n.Name }

// IP runs `ip -n NAME args...` and returns its combined output.
func (n *NS) IP(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"-n", n.Name}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ip -n %s %s: %w: %s", n.Name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// MustIP is IP that fails the test on error.
func (n *NS) MustIP(args ...string) string {
	n.t.Helper()
	out, err := n.IP(args...)
	if err != nil {
		n.t.Fatal(err)
	}
	return out
}

// Command returns a command that runs name inside the namespace through
// `ip netns exec` (which also gives it a private /sys of the namespace).
func (n *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Exec runs name inside the namespace and returns its combined output.
func (n *NS) Exec(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := n.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("netns %s: %s %s: %w: %s", n.Name, name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// MustExec is Exec that fails the test on error.
func (n *NS) MustExec(name string, args ...string) string {
	n.t.Helper()
	out, err := n.Exec(name, args...)
	if err != nil {
		n.t.Fatal(err)
	}
	return out
}

// Sysctl writes value to the sysctl key (dotted form) of the namespace.
func (n *NS) Sysctl(key, value string) error {
	path := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	return n.Do(func() error {
		// /proc/sys/net resolves against the network namespace of the
		// thread that opens it, which Do has switched.
		if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
		}
		return nil
	})
}

// MustSysctl is Sysctl that fails the test on error.
func (n *NS) MustSysctl(key, value string) {
	n.t.Helper()
	if err := n.Sysctl(key, value); err != nil {
		n.t.Fatalf("netns %s: %v", n.Name, err)
	}
}

// Do runs fn on an OS thread that has joined the namespace, then moves the
// thread back. If it cannot move back, the thread stays locked to the exiting
// goroutine so the runtime throws it away and no other goroutine ever runs in
// the wrong namespace. (The main thread can never be thrown away, only
// parked, which is why the thread must move back rather than rely on that.)
func (n *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vnetns.Get()
		if err != nil {
			errc <- fmt.Errorf("open current netns: %w", err)
			return
		}
		defer orig.Close()
		h, err := vnetns.GetFromPath(filepath.Join(runDir, n.Name))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open netns %s: %w", n.Name, err)
			return
		}
		defer h.Close()
		if err := vnetns.Set(h); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", n.Name, err)
			return
		}
		err = fn()
		if vnetns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// DialContext dials from inside the namespace. The socket is created on a
// thread in the namespace; once created it stays in that namespace whatever
// thread later uses it, so the connection can be used from any goroutine.
func (n *NS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var conn net.Conn
	err := n.Do(func() error {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		conn = c
		return err
	})
	return conn, err
}

// Listen opens a listening socket inside the namespace.
func (n *NS) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() error {
		c, err := net.Listen(network, addr)
		l = c
		return err
	})
	return l, err
}

// ListenPacket opens a packet socket inside the namespace.
func (n *NS) ListenPacket(network, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := n.Do(func() error {
		c, err := net.ListenPacket(network, addr)
		pc = c
		return err
	})
	return pc, err
}

// Link returns the namespace's view of the device dev, including its XDP
// attachment (Attrs().Xdp).
func (n *NS) Link(dev string) (netlink.Link, error) {
	h, err := vnetns.GetFromPath(filepath.Join(runDir, n.Name))
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", n.Name, err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in %s: %w", n.Name, err)
	}
	defer nh.Close()
	l, err := nh.LinkByName(dev)
	if err != nil {
		return nil, fmt.Errorf("netns %s: link %s: %w", n.Name, dev, err)
	}
	return l, nil
}

// XDP attach modes as reported in IFLA_XDP_ATTACHED.
const (
	XDPAttachedNone    = 0
	XDPAttachedNative  = 1
	XDPAttachedGeneric = 2
	XDPAttachedHW      = 3
	XDPAttachedMulti   = 4
)

// XDPMode tells how an XDP program is attached to dev: one of the
// XDPAttached* values.
func (n *NS) XDPMode(dev string) (uint32, error) {
	l, err := n.Link(dev)
	if err != nil {
		return 0, err
	}
	x := l.Attrs().Xdp
	if x == nil || !x.Attached {
		return XDPAttachedNone, nil
	}
	return x.AttachMode, nil
}

// MAC returns the hardware address of dev.
func (n *NS) MAC(dev string) (net.HardwareAddr, error) {
	l, err := n.Link(dev)
	if err != nil {
		return nil, err
	}
	return l.Attrs().HardwareAddr, nil
}

// DisableTxChecksum turns TX checksum offload off on dev. A veth otherwise
// hands CHECKSUM_PARTIAL skbs across, whose L4 checksum field holds only the
// pseudo-header sum; an XDP program on the peer would see that instead of the
// full checksum every real NIC puts on the wire.
func (n *NS) DisableTxChecksum(dev string) error {
	_, err := n.Exec("ethtool", "-K", dev, "tx", "off")
	return err
}
