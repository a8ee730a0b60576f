package loader

import (
	"context"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nodegress/nodegress/tests/netns"
)

// TestSteerToProxyListener checks that a connection to an L7 frontend lands
// on the registered proxy socket, bound elsewhere, with the frontend as its
// local address and the client as its remote one.
func TestSteerToProxyListener(t *testing.T) {
	netns.RequirePrivileged(t)
	ns := netns.New(t, "ngsteer-"+netns.RandomSuffix(5))
	ns.MustIP("link", "add", "ext0", "type", "veth", "peer", "name", "ext1")
	ns.MustIP("addr", "add", "10.200.0.1/24", "dev", "ext0")
	ns.MustIP("addr", "add", "10.200.0.2/24", "dev", "ext1")
	ns.MustIP("link", "set", "ext0", "up")
	ns.MustIP("link", "set", "ext1", "up")

	bpffs := filepath.Join(t.TempDir(), "bpffs")
	// Open mounts a bpffs there; take it down even when Open fails.
	t.Cleanup(func() { _ = unix.Unmount(bpffs, unix.MNT_DETACH) })
	var dp *Datapath
	var ln *net.TCPListener
	err := ns.Do(func() error {
		var err error
		dp, err = Open(Config{BPFFS: bpffs, Devices: []string{"ext0"}, XDPMode: XDPGeneric, SNATPortMin: 61000, SNATPortMax: 65535})
		if err != nil {
			return err
		}
		ln, err = ListenProxy(context.Background(), "127.0.0.1:0")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ln.Close()
		dp.Close()
		if err := ns.Do(func() error { return Cleanup(bpffs) }); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		_ = unix.Unmount(bpffs, unix.MNT_DETACH)
	})

	if err := dp.RegisterProxyListener("http", ln); err != nil {
		t.Fatal(err)
	}
	// 10.200.9.9 is on no device, like a LoadBalancer IP: the datapath
	// adds a local route for it in the namespace it was opened in, even
	// though Apply runs on a thread of the host's namespace.
	frontend := netip.MustParseAddr("10.200.0.1")
	lbIP := netip.MustParseAddr("10.200.9.9")
	if err := dp.Apply([]Service{{
		Name: "l7/http", Proto: TCP, L7: true, ProxyListener: "http",
		Frontends: []Frontend{{Addr: frontend, Port: 80}, {Addr: lbIP, Port: 80}},
	}}); err != nil {
		t.Fatal(err)
	}
	if out := ns.MustIP("route", "show", "table", "local", "10.200.9.9"); !strings.Contains(out, "local 10.200.9.9") {
		t.Errorf("no local route for the LoadBalancer IP in the node namespace: %q", out)
	}
	if out, _ := exec.Command("ip", "route", "show", "table", "local", "10.200.9.9").CombinedOutput(); len(strings.TrimSpace(string(out))) != 0 {
		t.Errorf("local route leaked into the host namespace: %q", out)
	}

	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	client, err := ns.DialContext(ctx, "tcp", "10.200.0.1:80")
	if err != nil {
		t.Fatalf("dial L7 frontend: %v", err)
	}
	defer client.Close()
	select {
	case c := <-accepted:
		defer c.Close()
		if got := c.LocalAddr().String(); got != "10.200.0.1:80" {
			t.Errorf("proxy saw local address %s, want the frontend 10.200.0.1:80", got)
		}
		if got, want := c.RemoteAddr().String(), client.LocalAddr().String(); got != want {
			t.Errorf("proxy saw client %s, want %s", got, want)
		}
	case <-ctx.Done():
		t.Fatal("connection to the L7 frontend never reached the proxy listener")
	}
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	lbClient, err := ns.DialContext(ctx, "tcp", "10.200.9.9:80")
	if err != nil {
		t.Fatalf("dial LoadBalancer IP L7 frontend: %v", err)
	}
	defer lbClient.Close()
	select {
	case c := <-accepted:
		defer c.Close()
		if got := c.LocalAddr().String(); got != "10.200.9.9:80" {
			t.Errorf("proxy saw local address %s, want 10.200.9.9:80", got)
		}
	case <-ctx.Done():
		t.Fatal("connection to the LoadBalancer IP never reached the proxy listener")
	}

	// A multipath TCP listener (Go's default) is refused with a clear error.
	var lc net.ListenConfig
	lc.SetMultipathTCP(true)
	if mp, err := lc.Listen(ctx, "tcp4", "127.0.0.1:0"); err == nil && isMPTCP(t, mp.(*net.TCPListener)) {
		defer mp.Close()
		if err := dp.RegisterProxyListener("mptcp", mp.(*net.TCPListener)); err == nil {
			t.Error("multipath TCP listener registered, want an error")
		}
	}

	// Without the L7 service, the frontend is an ordinary closed port again.
	if err := dp.Apply(nil); err != nil {
		t.Fatal(err)
	}
	if c, err := ns.DialContext(ctx, "tcp", "10.200.0.1:80"); err == nil {
		c.Close()
		t.Fatal("connection still steered after the L7 service was removed")
	}
	if out := ns.MustIP("route", "show", "table", "local", "10.200.9.9"); strings.TrimSpace(out) != "" {
		t.Errorf("local route for a removed L7 frontend left: %q", out)
	}
}

func isMPTCP(t *testing.T, l *net.TCPListener) bool {
	raw, err := l.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var proto int
	raw.Control(func(fd uintptr) { proto, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PROTOCOL) })
	return proto == unix.IPPROTO_MPTCP
}
