package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nodegress/nodegress/tests/netns"
)

// The agent's defaults for the pin directory and the trace socket.
const (
	DefaultBPFFSRoot   = "/sys/fs/bpf"
	DefaultBPFFS       = DefaultBPFFSRoot + "/nodegress"
	DefaultTraceSocket = "/run/nodegress/trace.sock"
)

// AgentReadyTimeout bounds how long an agent may take from start until its
// trace socket answers and XDP is attached to every device.
const AgentReadyTimeout = 10 * time.Second

// AgentConfig says how to run one agent. Zero values pick the defaults.
type AgentConfig struct {
	// Dir is the --standalone directory; agents of one cluster may share
	// it. Exactly one of Dir and Kubeconfig is required.
	Dir string
	// Kubeconfig runs the agent against an API server (--kubeconfig)
	// instead of a standalone directory.
	Kubeconfig string
	// Devices default to the node's external device.
	Devices []string
	// NodeName defaults to the node's name.
	NodeName string
	// BPFFS reuses another agent's pin directory (restart tests); by
	// default every agent gets its own.
	BPFFS string
	// DefaultPaths runs the agent as the README's examples do: without
	// --bpffs and --trace-socket. Under `ip netns exec` its /sys/fs/bpf is
	// then a fresh sysfs directory, and the bpffs the agent mounts there
	// lives and dies with the agent's mount namespace.
	DefaultPaths bool
	// XDPMode is passed as --xdp-mode when set; the agent's default is
	// auto, which on the topologies' veth devices means tc only.
	XDPMode string
	// SocketLB, when set, runs agents with --replace-kube-proxy, each
	// attached to its node's cgroup (see NodeCgroups).
	SocketLB map[string]string
	// Binary runs this nodegress binary instead of the one under test
	// (an older release, for upgrade tests).
	Binary string
	// Args are appended to the agent command line.
	Args []string
}

// Agent is a `nodegress agent` process running inside a node's namespace.
type Agent struct {
	t    testing.TB
	Node *netns.Node
	cfg  AgentConfig
	// BPFFS is the pin directory, a bpffs mounted in the test's mount
	// namespace: `ip netns exec` copies it into the agent's mount namespace,
	// so pins outlive the agent and `nodegress cleanup` or `maps` run later
	// see them.
	BPFFS string
	// Socket is the agent's trace socket.
	Socket string
	// LogPath collects the agent's stdout and stderr.
	LogPath string

	cmd     *exec.Cmd
	exited  chan struct{}
	exitErr error
	// stopped is set when the test stopped the agent, as opposed to the
	// agent exiting on its own.
	stopped bool
}

// StartAgent starts an agent on node and waits until it is ready. In
// t.Cleanup it prints diagnostics when the test failed, stops the agent,
// runs `nodegress cleanup` and unmounts the pin directory.
func StartAgent(t testing.TB, node *netns.Node, cfg AgentConfig) *Agent {
	t.Helper()
	if (cfg.Dir == "") == (cfg.Kubeconfig == "") {
		t.Fatal("AgentConfig needs exactly one of Dir and Kubeconfig")
	}
	if len(cfg.Devices) == 0 {
		cfg.Devices = []string{node.Dev}
	}
	if cfg.NodeName == "" {
		cfg.NodeName = node.Name
	}
	bin := cfg.Binary
	if bin == "" {
		bin = Nodegress(t)
	}
	// Unix socket paths are limited to 108 bytes: keep the work directory
	// short instead of nesting it under the test's long TempDir.
	work, err := os.MkdirTemp("", "ng-"+node.Name+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(work) })

	a := &Agent{
		t:       t,
		Node:    node,
		cfg:     cfg,
		BPFFS:   cfg.BPFFS,
		Socket:  filepath.Join(work, "trace.sock"),
		LogPath: filepath.Join(work, "agent.log"),
	}
	if cfg.DefaultPaths {
		a.BPFFS = DefaultBPFFS
		a.Socket = DefaultTraceSocket
	} else if a.BPFFS == "" {
		a.BPFFS = filepath.Join(work, "bpffs")
		mountBPFFS(t, a.BPFFS)
	}
	t.Cleanup(func() {
		if t.Failed() {
			a.dumpDiagnostics()
		}
		if !a.Running() && !a.stopped {
			t.Errorf("agent on %s exited by itself during the test: %v", node.Name, a.exitErr)
		}
		start := time.Now()
		if err := a.Stop(); err != nil {
			t.Errorf("agent on %s: %v", node.Name, err)
		}
		t.Logf("agent on %s stopped in %s", node.Name, time.Since(start).Round(time.Millisecond))
		if out, err := a.Cleanup(); err != nil {
			t.Errorf("agent on %s: %v\n%s", node.Name, err, out)
		}
	})
	a.start(bin)
	a.WaitReady()
	return a
}

func mountBPFFS(t testing.TB, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount bpffs at %s: %v", dir, err)
	}
	t.Cleanup(func() {
		// `nodegress cleanup` removes the directory; removing a mount
		// point from another mount namespace detaches the mount here too.
		err := unix.Unmount(dir, unix.MNT_DETACH)
		if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
			t.Errorf("unmount bpffs %s: %v", dir, err)
		}
	})
}

func (a *Agent) start(bin string) {
	a.t.Helper()
	source := []string{"--standalone", a.cfg.Dir}
	if a.cfg.Kubeconfig != "" {
		source = []string{"--kubeconfig", a.cfg.Kubeconfig}
	}
	args := append([]string{"agent"}, source...)
	args = append(args,
		"--devices", strings.Join(a.cfg.Devices, ","),
		"--node-name", a.cfg.NodeName,
	)
	if !a.cfg.DefaultPaths {
		args = append(args, "--bpffs", a.BPFFS, "--trace-socket", a.Socket)
	}
	if a.cfg.XDPMode != "" {
		args = append(args, "--xdp-mode", a.cfg.XDPMode)
	}
	if dir, ok := a.cfg.SocketLB[a.Node.Name]; ok {
		args = append(args, "--replace-kube-proxy", "--cgroup-root", dir)
	}
	args = append(args, a.cfg.Args...)
	logf, err := os.OpenFile(a.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		a.t.Fatal(err)
	}
	fmt.Fprintf(logf, "### %s: nodegress %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(args, " "))
	// `ip netns exec` execs the agent, so cmd.Process is the agent itself.
	cmd := a.Node.Command(context.Background(), bin, args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Should the test binary die, the agent must not keep running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		a.t.Fatalf("start agent on %s: %v", a.Node.Name, err)
	}
	a.cmd = cmd
	a.exited = make(chan struct{})
	a.exitErr = nil
	a.stopped = false
	go func(exited chan struct{}) {
		a.exitErr = cmd.Wait()
		logf.Close()
		close(exited)
	}(a.exited)
}

// WaitReady waits until the agent's trace socket accepts a connection and its
// programs are attached to each of its devices (tc always, XDP when its mode
// asks for XDP), failing the test if the agent exits or AgentReadyTimeout
// passes.
func (a *Agent) WaitReady() {
	a.t.Helper()
	start := time.Now()
	deadline := start.Add(AgentReadyTimeout)
	var last error
	for time.Now().Before(deadline) {
		if !a.Running() {
			a.t.Fatalf("agent on %s exited during startup: %v\n%s", a.Node.Name, a.exitErr, a.Log())
		}
		if last = a.ready(); last == nil {
			a.t.Logf("agent on %s ready after %s", a.Node.Name, time.Since(start).Round(time.Millisecond))
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	a.t.Fatalf("agent on %s not ready after %s: %v\n%s", a.Node.Name, AgentReadyTimeout, last, a.Log())
}

func (a *Agent) ready() error {
	c, err := net.DialTimeout("unix", a.Socket, time.Second)
	if err != nil {
		return fmt.Errorf("trace socket: %w", err)
	}
	c.Close()
	for _, dev := range a.cfg.Devices {
		if in, eg, err := a.Node.TCXPrograms(dev); err != nil || in == 0 || eg == 0 {
			return fmt.Errorf("tcx programs on %s: %d ingress, %d egress (%v)", dev, in, eg, err)
		}
		if !a.WantsXDP() {
			continue
		}
		mode, err := a.Node.XDPMode(dev)
		if err != nil {
			return err
		}
		if mode == netns.XDPAttachedNone {
			return fmt.Errorf("no xdp program on %s", dev)
		}
	}
	return nil
}

// WantsXDP tells whether the agent was told to attach XDP whatever the
// device: --xdp-mode native or generic. With auto (the default) the test
// topologies' veth devices get tc only.
func (a *Agent) WantsXDP() bool {
	return a.cfg.XDPMode == "native" || a.cfg.XDPMode == "generic"
}

// PID is the agent's process id while it runs.
func (a *Agent) PID() int { return a.cmd.Process.Pid }

// Running tells whether the agent process is still alive.
func (a *Agent) Running() bool {
	select {
	case <-a.exited:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM and waits up to 10 s for the agent to exit, then kills
// it. It returns the agent's exit error when it did not exit cleanly, and is
// a no-op once the agent has exited.
func (a *Agent) Stop() error {
	if a.cmd == nil || !a.Running() {
		return nil
	}
	a.stopped = true
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.exited:
		if a.exitErr != nil {
			return fmt.Errorf("agent exited uncleanly on SIGTERM: %w", a.exitErr)
		}
		return nil
	case <-time.After(10 * time.Second):
	}
	_ = a.cmd.Process.Kill()
	<-a.exited
	return errors.New("agent did not exit within 10s of SIGTERM; killed")
}

// Kill ends the agent with SIGKILL: nothing of its shutdown runs.
func (a *Agent) Kill() {
	a.t.Helper()
	if a.cmd == nil || !a.Running() {
		a.t.Fatalf("agent on %s is not running", a.Node.Name)
	}
	a.stopped = true
	_ = a.cmd.Process.Kill()
	<-a.exited
}

// StartBinary starts a stopped agent again from bin (another build), with
// the same configuration, pin directory and trace socket, and waits until
// it is ready.
func (a *Agent) StartBinary(bin string) {
	a.t.Helper()
	if a.Running() {
		a.t.Fatalf("agent on %s is already running", a.Node.Name)
	}
	a.start(bin)
	a.WaitReady()
}

// Restart stops the agent and starts it again with the same configuration,
// pin directory and trace socket, then waits until it is ready.
func (a *Agent) Restart() {
	a.t.Helper()
	if err := a.Stop(); err != nil {
		a.t.Fatalf("agent on %s: stop: %v\n%s", a.Node.Name, err, a.Log())
	}
	a.Start()
}

// Start starts a stopped agent again with the same configuration, pin
// directory and trace socket, and waits until it is ready.
func (a *Agent) Start() {
	a.t.Helper()
	if a.Running() {
		a.t.Fatalf("agent on %s is already running", a.Node.Name)
	}
	a.start(Nodegress(a.t))
	a.WaitReady()
}

// StartSuccessor starts a second agent process on the agent's node, with
// the same configuration, pin directory and sockets, while the agent runs:
// the successor takes over from it (`--handover-socket`). It waits until the
// successor logs that it serves. The successor is stopped and checked like
// the agent at the end of the test.
func (a *Agent) StartSuccessor() *Agent {
	a.t.Helper()
	s := &Agent{t: a.t, Node: a.Node, cfg: a.cfg, BPFFS: a.BPFFS, Socket: a.Socket,
		LogPath: strings.TrimSuffix(a.LogPath, ".log") + "-successor.log"}
	bin := a.cfg.Binary
	if bin == "" {
		bin = Nodegress(a.t)
	}
	a.t.Cleanup(func() {
		if a.t.Failed() {
			s.dumpDiagnostics()
		}
		if !s.Running() && !s.stopped {
			a.t.Errorf("successor agent on %s exited by itself during the test: %v", s.Node.Name, s.exitErr)
		}
		if err := s.Stop(); err != nil {
			a.t.Errorf("successor agent on %s: %v", s.Node.Name, err)
		}
	})
	s.start(bin)
	if err := s.WaitLog("initial sync done, serving", AgentReadyTimeout); err != nil {
		a.t.Fatalf("successor on %s: %v\n%s", s.Node.Name, err, s.Log())
	}
	return s
}

// ExitErr returns how the agent exited; only meaningful once Running is false.
func (a *Agent) ExitErr() error { return a.exitErr }

// Cleanup runs `nodegress cleanup --bpffs DIR` inside the node's namespace.
func (a *Agent) Cleanup() (string, error) {
	return a.run(30*time.Second, "cleanup", "--bpffs", a.BPFFS)
}

// Maps runs `nodegress maps --bpffs DIR` inside the node's namespace; with
// DefaultPaths, plain `nodegress maps` inside the running agent's mount and
// network namespaces, where its bpffs is.
func (a *Agent) Maps() (string, error) {
	if a.cfg.DefaultPaths {
		if !a.Running() {
			return "", errors.New("agent not running: its bpffs went with its mount namespace")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "nsenter", "-t", strconv.Itoa(a.PID()), "-m", "-n", Nodegress(a.t), "maps").CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("nodegress maps in the agent's namespaces: %w", err)
		}
		return string(out), nil
	}
	return a.run(30*time.Second, "maps", "--bpffs", a.BPFFS)
}

func (a *Agent) run(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := a.Node.Command(ctx, Nodegress(a.t), args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("nodegress %s on %s: %w", strings.Join(args, " "), a.Node.Name, err)
	}
	return string(out), nil
}

// TraceCommand returns `nodegress trace --socket SOCK args...` to run inside
// the node's namespace.
func (a *Agent) TraceCommand(ctx context.Context, args ...string) *exec.Cmd {
	return a.Node.Command(ctx, Nodegress(a.t), append([]string{"trace", "--socket", a.Socket}, args...)...)
}

// Log returns everything the agent wrote so far.
func (a *Agent) Log() string {
	b, err := os.ReadFile(a.LogPath)
	if err != nil {
		return fmt.Sprintf("(no agent log: %v)", err)
	}
	return string(b)
}

// WaitLog waits up to timeout for the agent's log to contain substr.
func (a *Agent) WaitLog(substr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if strings.Contains(a.Log(), substr) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("agent log has no %q after %s", substr, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// PinDir is the pin directory as the test sees it: with DefaultPaths, it
// is only visible in the running agent's mount namespace, through
// /proc/PID/root.
func (a *Agent) PinDir() string {
	if a.cfg.DefaultPaths {
		return filepath.Join("/proc", strconv.Itoa(a.PID()), "root", a.BPFFS)
	}
	return a.BPFFS
}

// Pins lists every file left under the pin directory, except the kernel's
// own iterators (maps.debug, progs.debug) that every bpffs root carries. With
// DefaultPaths the directory is only visible in the running agent's mount
// namespace, through /proc/PID/root.
func (a *Agent) Pins() ([]string, error) {
	var pins []string
	if a.cfg.DefaultPaths && !a.Running() {
		return nil, nil
	}
	dir := a.PinDir()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			if rel != "maps.debug" && rel != "progs.debug" {
				pins = append(pins, rel)
			}
		}
		return nil
	})
	return pins, err
}

// dumpDiagnostics logs what a failed test needs: the agent's log, the
// datapath's maps, and the node's devices, routes and neighbours.
func (a *Agent) dumpDiagnostics() {
	var b bytes.Buffer
	fmt.Fprintf(&b, "==== agent on %s (netns %s) log:\n%s\n", a.Node.Name, a.Node.NS.Name, a.Log())
	if out, err := a.Maps(); err != nil {
		fmt.Fprintf(&b, "==== nodegress maps: %v\n%s\n", err, out)
	} else {
		fmt.Fprintf(&b, "==== nodegress maps:\n%s\n", out)
	}
	for _, args := range [][]string{
		{"-d", "link", "show"},
		{"addr", "show"},
		{"route", "show"},
		{"neigh", "show"},
	} {
		out, _ := a.Node.IP(args...)
		fmt.Fprintf(&b, "==== ip %s:\n%s\n", strings.Join(args, " "), out)
	}
	a.t.Log(b.String())
}
