package loader

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nodegress/nodegress/tests/netns"
)

// The socket-level load balancer is tested with real sockets: a child
// process (this test binary again) starts inside a test cgroup the
// datapath is attached to, and reports what its sockets saw.

const sockChildEnv = "NODEGRESS_SOCKLB_CHILD"

func TestMain(m *testing.M) {
	if args := os.Getenv(sockChildEnv); args != "" {
		os.Exit(sockChild(strings.Fields(args)))
	}
	os.Exit(m.Run())
}

// sockChild runs one client operation and prints its outcome:
//
//	tcp ADDR   connect, read the server's line: "ok LOCAL-OF-SERVER PEER"
//	udp ADDR   unconnected sendto/recvfrom: "ok SERVER-LINE FROM"
func sockChild(args []string) int {
	if len(args) != 2 {
		fmt.Println("usage: tcp|udp ADDR")
		return 2
	}
	switch args[0] {
	case "tcp":
		c, err := net.DialTimeout("tcp", args[1], 2*time.Second)
		if err != nil {
			fmt.Println("err", errName(err))
			return 0
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			fmt.Println("err", errName(err))
			return 0
		}
		fmt.Println("ok", strings.TrimSpace(line), c.RemoteAddr())
	case "udp":
		pc, err := net.ListenPacket("udp4", "0.0.0.0:0")
		if err != nil {
			fmt.Println("err", errName(err))
			return 0
		}
		defer pc.Close()
		to, _ := net.ResolveUDPAddr("udp4", args[1])
		_ = pc.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := pc.WriteTo([]byte("ping"), to); err != nil {
			fmt.Println("err", errName(err))
			return 0
		}
		buf := make([]byte, 512)
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			fmt.Println("err", errName(err))
			return 0
		}
		fmt.Println("ok", strings.TrimSpace(string(buf[:n])), from)
	}
	return 0
}

func errName(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, os.ErrDeadlineExceeded), strings.Contains(err.Error(), "timeout"):
		return "timeout"
	}
	return strings.ReplaceAll(err.Error(), " ", "_")
}

// testCgroup makes a cgroup2 directory for one test under the unified
// hierarchy and returns it open, for CLONE_INTO_CGROUP.
func testCgroup(t *testing.T) (string, *os.File) {
	root, err := CgroupRoot("")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "nodegress-test-"+netns.RandomSuffix(6))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.Close()
		// Children have exited by now; rmdir fails while one lives.
		deadline := time.Now().Add(5 * time.Second)
		for os.Remove(dir) != nil && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	})
	return dir, f
}

// TestSocketLB: a process in the attached cgroup reaches a ClusterIP's
// backends by TCP and UDP, sees the ClusterIP as its peer and as the
// datagrams' source, is refused at once by a service without endpoints,
// and keeps one backend with ClientIP affinity; a process outside the
// cgroup is not translated.
func TestSocketLB(t *testing.T) {
	netns.RequirePrivileged(t)
	ns := netns.New(t, "ngsock-"+netns.RandomSuffix(5))
	ns.MustIP("link", "add", "ext0", "type", "veth", "peer", "name", "ext1")
	ns.MustIP("link", "set", "ext0", "up")
	ns.MustIP("link", "set", "ext1", "up")
	ns.MustIP("link", "set", "lo", "up")
	ns.MustIP("addr", "add", "10.200.0.1/24", "dev", "ext0")
	ns.MustIP("addr", "add", "10.200.0.2/24", "dev", "ext0")
	cgDir, cgFD := testCgroup(t)

	// Two backends that tell who they are.
	for _, a := range []string{"10.200.0.1:8080", "10.200.0.2:8080"} {
		ln, err := ns.Listen("tcp", a)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				fmt.Fprintf(c, "%s\n", c.LocalAddr())
				c.Close()
			}
		}()
		pc, err := ns.ListenPacket("udp", a)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		go func() {
			buf := make([]byte, 512)
			for {
				_, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				_, _ = pc.WriteTo([]byte(pc.LocalAddr().String()+"\n"), from)
			}
		}()
	}

	bpffs := filepath.Join(t.TempDir(), "bpffs")
	var dp *Datapath
	if err := ns.Do(func() error {
		var err error
		dp, err = Open(Config{BPFFS: bpffs, Devices: []string{"ext0"}, SNATPortMin: 61000, SNATPortMax: 65535,
			SocketLB: true, CgroupRoot: cgDir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dp.Close()
		if err := ns.Do(func() error { return Cleanup(bpffs) }); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		_ = unix.Unmount(bpffs, unix.MNT_DETACH)
	})
	backends := []Backend{{Addr: netip.MustParseAddr("10.200.0.1"), Port: 8080, Local: true}, {Addr: netip.MustParseAddr("10.200.0.2"), Port: 8080, Local: true}}
	cip := Frontend{Addr: netip.MustParseAddr("10.96.0.10"), Port: 80}
	dns := Frontend{Addr: netip.MustParseAddr("10.96.0.10"), Port: 53}
	sticky := Frontend{Addr: netip.MustParseAddr("10.96.0.11"), Port: 80}
	empty := Frontend{Addr: netip.MustParseAddr("10.96.0.12"), Port: 80}
	if err := dp.Apply([]Service{
		{Name: "ns/web:http/TCP", Proto: TCP, Internal: true, Frontends: []Frontend{cip}, Backends: backends},
		{Name: "ns/web:dns/UDP", Proto: UDP, Internal: true, Frontends: []Frontend{dns}, Backends: backends},
		{Name: "ns/sticky:http/TCP", Proto: TCP, Internal: true, Frontends: []Frontend{sticky}, Backends: backends, AffinityTimeout: time.Minute},
		{Name: "ns/empty:http/TCP", Proto: TCP, Internal: true, Frontends: []Frontend{empty}},
	}); err != nil {
		t.Fatal(err)
	}

	child := func(inCgroup bool, op, addr string) string {
		t.Helper()
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cmd := ns.Command(ctx, exe)
		cmd.Env = append(os.Environ(), sockChildEnv+"="+op+" "+addr)
		if inCgroup {
			cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cgFD.Fd())}
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child %s %s: %v\n%s", op, addr, err, out)
		}
		return strings.TrimSpace(string(out))
	}

	seen := map[string]bool{}
	for range 16 {
		out := child(true, "tcp", "10.96.0.10:80")
		f := strings.Fields(out)
		if len(f) != 3 || f[0] != "ok" || f[2] != "10.96.0.10:80" {
			t.Fatalf("tcp to the ClusterIP: %q, want ok BACKEND 10.96.0.10:80", out)
		}
		seen[f[1]] = true
	}
	if len(seen) != 2 {
		t.Errorf("16 connections reached %v, want both backends", seen)
	}
	out := child(true, "udp", "10.96.0.10:53")
	if f := strings.Fields(out); len(f) != 3 || f[0] != "ok" || !strings.HasPrefix(f[1], "10.200.0.") || f[2] != "10.96.0.10:53" {
		t.Errorf("udp to the ClusterIP: %q, want ok BACKEND 10.96.0.10:53", out)
	}
	stickySeen := map[string]bool{}
	for range 8 {
		f := strings.Fields(child(true, "tcp", "10.96.0.11:80"))
		if len(f) == 3 {
			stickySeen[f[1]] = true
		}
	}
	if len(stickySeen) != 1 {
		t.Errorf("with affinity 8 connections reached %v, want one backend", stickySeen)
	}
	if out := child(true, "tcp", "10.96.0.12:80"); out != "err refused" {
		t.Errorf("tcp to a service without endpoints: %q, want refused", out)
	}
	// Outside the cgroup nothing is translated: the ClusterIP is nowhere.
	if out := child(false, "tcp", "10.96.0.10:80"); strings.HasPrefix(out, "ok") {
		t.Errorf("a process outside the cgroup reached the ClusterIP: %q", out)
	}
}
