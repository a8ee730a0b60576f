// Package benchkit is what nodegress's benchmarks share: pinned processes
// that are always cleaned up, load generators (wrk, h2load) and their
// output parsers, medians, config templates, certificates, the machine's
// description and the Markdown report. Suites (L7 proxies now, the L4
// datapath against kube-proxy later) build on it; it knows nothing of
// what they measure.
package benchkit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The machine has two cores. Every benchmark gives the system under test
// one core of its own and puts everything else (load generator, backends,
// the harness) on the other, so results compare per core.
const (
	// LoadCPU runs load generators, backends and the harness.
	LoadCPU = 0
	// SUTCPU runs the one process under test (a proxy).
	SUTCPU = 1
)

// stopGrace is how long a process gets between SIGTERM and SIGKILL.
const stopGrace = 3 * time.Second

// Proc is a started process, pinned to one CPU, in its own process group
// so that stopping it also stops the workers it forked (nginx).
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	// Log holds the process's stdout and stderr.
	Log string

	reg     *Registry
	done    chan struct{}
	waitErr error
	stopMu  sync.Mutex
	stopped bool
}

// Registry records the process groups a run started in a file, one per
// line, so that the calling script can kill them even when the harness
// itself dies (a test timeout does not run cleanups).
type Registry struct {
	mu   sync.Mutex
	path string
}

// NewRegistry appends process groups to path; an empty path records
// nothing.
func NewRegistry(path string) *Registry { return &Registry{path: path} }

func (r *Registry) add(pgid int) error {
	if r == nil || r.path == "" {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	f, err := os.OpenFile(r.path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("record process group: %w", err)
	}
	defer f.Close()
	_, err = fmt.Fprintln(f, pgid)
	return err
}

// remove forgets a process group that was stopped, so the script's
// fallback never signals a group id the kernel may have reused.
func (r *Registry) remove(pgid int) {
	if r == nil || r.path == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	b, err := os.ReadFile(r.path)
	if err != nil {
		return
	}
	var keep []string
	for _, l := range strings.Fields(string(b)) {
		if l != strconv.Itoa(pgid) {
			keep = append(keep, l+"\n")
		}
	}
	_ = os.WriteFile(r.path, []byte(strings.Join(keep, "")), 0o600)
}

// Start runs argv pinned to cpu (with taskset, so the pinning is visible in
// ps and reproducible by hand), with env added to the harness's
// environment, its output going to logPath.
func Start(reg *Registry, name string, cpu int, env []string, logPath string, argv ...string) (*Proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer logf.Close()
	args := append([]string{"-c", strconv.Itoa(cpu)}, argv...)
	cmd := exec.Command("taskset", args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Pdeathsig covers the harness being killed outright; the session's
	// process group covers workers forked by the process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	prioritize(cmd.Process.Pid)
	p := &Proc{Name: name, Cmd: cmd, Log: logPath, reg: reg, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	if err := reg.add(cmd.Process.Pid); err != nil {
		p.Stop()
		return nil, err
	}
	return p, nil
}

// Pid is the process id (taskset execs the command, so it is the
// command's own).
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop ends the process group: SIGTERM, then SIGKILL after a grace period.
// It is safe to call more than once.
func (p *Proc) Stop() {
	p.stopMu.Lock()
	defer p.stopMu.Unlock()
	if p.stopped {
		return
	}
	p.stopped = true
	pgid := p.Cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopGrace):
	}
	// Workers may outlive a master that exited on SIGTERM.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	select {
	case <-p.done:
		p.reg.remove(pgid)
	case <-time.After(stopGrace):
	}
}

// Tail returns the last lines of the process's log, for error messages.
func (p *Proc) Tail(lines int) string {
	b, err := os.ReadFile(p.Log)
	if err != nil {
		return ""
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// WaitTCP waits until addr accepts a TCP connection, the process exits or
// timeout passes.
func (p *Proc) WaitTCP(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p.Exited() {
			return fmt.Errorf("%s exited: %v\n%s", p.Name, p.waitErr, p.Tail(20))
		}
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s: %s not accepting connections after %s\n%s", p.Name, addr, timeout, p.Tail(20))
}

// CPUTicks is the user+system CPU time of the process and all its
// descendants, in clock ticks.
func (p *Proc) CPUTicks() (uint64, error) { return treeTicks(p.Pid()) }

// ClockTick is the kernel's USER_HZ, the unit of /proc CPU times.
const ClockTick = 100

func treeTicks(root int) (uint64, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	type stat struct {
		ppid  int
		ticks uint64
	}
	all := map[int]stat{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ppid, ticks, err := procStat(pid)
		if err != nil {
			continue // gone meanwhile
		}
		all[pid] = stat{ppid, ticks}
	}
	s, ok := all[root]
	if !ok {
		return 0, fmt.Errorf("process %d not found", root)
	}
	total := s.ticks
	// Descendants by repeated passes; process trees here are two deep.
	in := map[int]bool{root: true}
	for changed := true; changed; {
		changed = false
		for pid, st := range all {
			if !in[pid] && in[st.ppid] {
				in[pid] = true
				total += st.ticks
				changed = true
			}
		}
	}
	return total, nil
}

// procStat reads the parent pid and utime+stime of pid.
func procStat(pid int) (ppid int, ticks uint64, err error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, 0, err
	}
	return parseProcStat(string(b))
}

func parseProcStat(s string) (ppid int, ticks uint64, err error) {
	// The command name may contain spaces and parentheses: fields start
	// after the last ')'.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, errors.New("malformed stat")
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
	if len(f) < 13 {
		return 0, 0, errors.New("short stat")
	}
	ppid, err = strconv.Atoi(f[1])
	if err != nil {
		return 0, 0, err
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, err
	}
	return ppid, ut + st, nil
}

// CPUBusy reads the busy and total ticks of one CPU from /proc/stat; the
// difference of two readings gives the CPU's utilization, whoever used
// it (interrupts and softirqs included).
func CPUBusy(cpu int) (busy, total uint64, err error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	return parseCPUStat(f, cpu)
}

func parseCPUStat(f interface{ Read([]byte) (int, error) }, cpu int) (busy, total uint64, err error) {
	want := "cpu" + strconv.Itoa(cpu)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || fields[0] != want {
			continue
		}
		for i, v := range fields[1:] {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return 0, 0, err
			}
			total += n
			// user nice system idle iowait irq softirq steal ...:
			// idle and iowait are not busy.
			if i != 3 && i != 4 {
				busy += n
			}
		}
		return busy, total, nil
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	return 0, 0, fmt.Errorf("%s not in /proc/stat", want)
}

// Usage measures where the CPU time went over one measurement: the
// system under test, the load side (the load tool and the backends) and
// everything else on the two cores. Call BeginUsage, run the load, call
// End.
type Usage struct {
	sut   *Proc
	load  []*Proc
	t0    time.Time
	sut0  uint64
	load0 uint64
	busy0 uint64
	cpus  []int
}

// BeginUsage takes the first readings. sut runs on SUTCPU; load are the
// long-running processes on LoadCPU (backends).
func BeginUsage(sut *Proc, load ...*Proc) *Usage {
	u := &Usage{sut: sut, load: load, t0: time.Now(), cpus: []int{SUTCPU, LoadCPU}}
	u.sut0, _ = sut.CPUTicks()
	u.load0 = u.loadTicks()
	u.busy0 = u.busyTicks()
	return u
}

func (u *Usage) loadTicks() uint64 {
	var n uint64
	for _, p := range u.load {
		t, _ := p.CPUTicks()
		n += t
	}
	return n
}

func (u *Usage) busyTicks() uint64 {
	var n uint64
	for _, c := range u.cpus {
		b, _, _ := CPUBusy(c)
		n += b
	}
	return n
}

// End fills in r's ProcCPU, LoadCPU (adding r.ToolCPU, which the load
// runner measured) and Background, as fractions of one core.
func (u *Usage) End(r *Result) {
	wall := time.Since(u.t0).Seconds()
	if wall <= 0 {
		return
	}
	sut, _ := u.sut.CPUTicks()
	load := u.loadTicks()
	busy := u.busyTicks()
	perTick := 1.0 / ClockTick / wall
	r.ProcCPU = float64(sut-u.sut0) * perTick
	r.LoadCPU = float64(load-u.load0)*perTick + r.ToolCPU.Seconds()/wall
	r.Background = max(0, float64(busy-u.busy0)*perTick-r.ProcCPU-r.LoadCPU)
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// RunBounded runs a command to completion within timeout, pinned to cpu,
// with env added to the harness's environment, and returns its combined
// output and the CPU time it used.
func RunBounded(ctx context.Context, timeout time.Duration, cpu int, env []string, argv ...string) (string, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	args := append([]string{"-c", strconv.Itoa(cpu)}, argv...)
	cmd := exec.CommandContext(ctx, "taskset", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = time.Second
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	var buf strings.Builder
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Start()
	if err == nil {
		prioritize(cmd.Process.Pid)
		err = cmd.Wait()
	}
	out := buf.String()
	var used time.Duration
	if cmd.ProcessState != nil {
		used = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	if ctx.Err() != nil {
		return out, used, fmt.Errorf("%s: %w", argv[0], ctx.Err())
	}
	if err != nil {
		return out, used, fmt.Errorf("%s: %w\n%s", argv[0], err, out)
	}
	return out, used, nil
}

// Priority is the autogroup nice value given to every benchmark process.
//
// With sched_autogroup (Debian's default), CPU time is shared between
// sessions before nice values count, so a compile in another terminal
// takes half of the proxy's core whatever its nice. Each benchmark process
// runs in its own session, and that session's group gets this priority,
// so background work barely disturbs the measurement.
const Priority = -20

var priorityNote struct {
	sync.Mutex
	s string
}

// PriorityNote says how the last process was prioritized, for the report.
func PriorityNote() string {
	priorityNote.Lock()
	defer priorityNote.Unlock()
	return priorityNote.s
}

func prioritize(pid int) {
	note := fmt.Sprintf("each in its own session, autogroup nice %d", Priority)
	path := filepath.Join("/proc", strconv.Itoa(pid), "autogroup")
	if err := os.WriteFile(path, []byte(strconv.Itoa(Priority)), 0); err != nil {
		// No autogroups (or no privilege): plain nice is what counts.
		note = fmt.Sprintf("nice %d", Priority)
		if err := syscall.Setpriority(syscall.PRIO_PROCESS, pid, Priority); err != nil {
			note = "not raised (" + err.Error() + "): background load shares the cores"
		}
	}
	priorityNote.Lock()
	priorityNote.s = note
	priorityNote.Unlock()
}
