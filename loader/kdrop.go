package loader

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// KernelDrop is what the kernel said about a packet of a tracked flow it
// dropped.
type KernelDrop struct {
	// Reason is the kernel's enum skb_drop_reason value; ReasonName its
	// name in the running kernel's BTF without the SKB_DROP_REASON_
	// prefix ("NO_SOCKET"), or "reason N" when the kernel does not name it.
	Reason     uint32
	ReasonName string
	// Location is the address of the kernel code that dropped the packet;
	// Symbol names it ("ip_rcv_finish_core+0x1b2"), or is the address in
	// hex when /proc/kallsyms hides addresses.
	Location uint64
	Symbol   string
	// Netns is the inode number of the network namespace of the device
	// the packet was on, when that is not the agent's (a pod's): the
	// event's Ifindex is then 0, as an index there names nothing here.
	Netns uint32
}

// kdropEventSize tells kernel drop events from datapath decisions on the
// shared ring buffer (bpf/kdrop.c asserts the sizes differ).
var kdropEventSize = binary.Size(kdropKdropEvent{})

// kernelDrops is the kernel drop program while it is loaded and attached.
type kernelDrops struct {
	mu   sync.Mutex
	prog *ebpf.Program
	// watch is the program's kdrop_watch map, created with it.
	watch *ebpf.Map
	link  link.Link
	// hook is the tracepoint attached to, for logs and tests.
	hook string
	// onlyTracepoint skips tp_btf, as a kernel that refuses it would
	// (tests of the fallback).
	onlyTracepoint bool
}

// SetKernelDrops attaches trace_drop to the kfree_skb tracepoint (on) or
// detaches it (off): tp_btf/kfree_skb, or the classic skb:kfree_skb
// tracepoint where the kernel refuses that. The program is loaded against
// the datapath's maps; the link is not pinned, so it never outlives the
// agent. Detached, kernel drops cost nothing.
func (d *Datapath) SetKernelDrops(on bool) error {
	k := &d.kdrop
	k.mu.Lock()
	defer k.mu.Unlock()
	if !on {
		if k.link == nil {
			return nil
		}
		err := k.link.Close()
		k.link = nil
		if err != nil {
			return fmt.Errorf("detach kernel drop tracing: %w", err)
		}
		return nil
	}
	if k.link != nil {
		return nil
	}
	// Read the names now (once, some 100 ms for kallsyms' 100,000 lines
	// or more) rather than stall the delivery of the first events: a
	// request record joined meanwhile would miss its drops.
	kernel.reason(0)
	kernel.symbol(0)
	var errs []error
	if !k.onlyTracepoint {
		err := k.attach(d, kdropProgTraceDrop, "tp_btf/kfree_skb", func(p *ebpf.Program) (link.Link, error) {
			return link.AttachTracing(link.TracingOptions{Program: p})
		})
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	if err := ensureTracefs(d.log); err != nil {
		return errors.Join(append(errs, err)...)
	}
	err := k.attach(d, kdropProgTraceDropTp, "tracepoint/skb/kfree_skb", func(p *ebpf.Program) (link.Link, error) {
		return link.Tracepoint("skb", "kfree_skb", p, nil)
	})
	if err == nil {
		if len(errs) > 0 {
			d.log.Info("kernel drops traced on the skb:kfree_skb tracepoint", "tp_btf_err", errs[0])
		}
		return nil
	}
	return errors.Join(append(errs, err)...)
}

// attach loads program name (once; a failed attach keeps it for the next
// try) and attaches it with fn.
func (k *kernelDrops) attach(d *Datapath, name, hook string, fn func(*ebpf.Program) (link.Link, error)) error {
	if k.prog != nil && k.hook != hook {
		k.closeProg()
	}
	if k.prog == nil {
		prog, watch, err := d.loadKernelDrops(name)
		if err != nil {
			return fmt.Errorf("%s: %w", hook, err)
		}
		k.prog, k.watch, k.hook = prog, watch, hook
	}
	l, err := fn(k.prog)
	if err != nil {
		return fmt.Errorf("attach %s: %w", hook, err)
	}
	k.link = l
	return nil
}

// loadKernelDrops loads program name against the datapath's maps, with a
// new kdrop_watch map of its own.
func (d *Datapath) loadKernelDrops(name string) (*ebpf.Program, *ebpf.Map, error) {
	spec, err := loadKdrop()
	if err != nil {
		return nil, nil, fmt.Errorf("load kernel drop spec: %w", err)
	}
	maps := map[string]*ebpf.Map{
		"conntrack":   d.objs.Conntrack,
		"reverse_nat": d.objs.ReverseNat,
		"frontends":   d.objs.Frontends,
		"events":      d.objs.Events,
	}
	// The datapath's maps are what they are (sized by the agent or a
	// test): the program takes them as they come.
	for n, m := range maps {
		ms := spec.Maps[n]
		if ms == nil {
			return nil, nil, fmt.Errorf("kernel drop spec: no map %s", n)
		}
		ms.MaxEntries = m.MaxEntries()
		ms.Pinning = ebpf.PinNone
	}
	// LoadAndAssign creates only what the one program uses: the other
	// one may not load on this kernel, and the datapath's other maps are
	// not needed.
	opts := &ebpf.CollectionOptions{MapReplacements: maps}
	var (
		prog  *ebpf.Program
		watch *ebpf.Map
	)
	switch name {
	case kdropProgTraceDrop:
		var o struct {
			P *ebpf.Program `ebpf:"trace_drop"`
			W *ebpf.Map     `ebpf:"kdrop_watch"`
		}
		err, prog, watch = spec.LoadAndAssign(&o, opts), o.P, o.W
	case kdropProgTraceDropTp:
		var o struct {
			P *ebpf.Program `ebpf:"trace_drop_tp"`
			W *ebpf.Map     `ebpf:"kdrop_watch"`
		}
		err, prog, watch = spec.LoadAndAssign(&o, opts), o.P, o.W
	default:
		return nil, nil, fmt.Errorf("kernel drop spec: no program %s", name)
	}
	if err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, nil, fmt.Errorf("load kernel drop tracing: %+v", verr)
		}
		return nil, nil, fmt.Errorf("load kernel drop tracing (needs a kernel with BTF): %w", err)
	}
	return prog, watch, nil
}

// errKernelDropsNotLoaded refuses watching a flow before kernel drop
// tracing was ever switched on.
var errKernelDropsNotLoaded = errors.New("kernel drop tracing not loaded")

// WatchFlow has kernel drop tracing report the drops of packets of the
// connection t (in either direction) too, though no datapath map knows
// it: the L7 proxy's connections to pods. t is the tuple of the
// connection's first packet. The watch lives until UnwatchFlow, or until
// the bounded map (LRU) makes room for newer ones; it is lost when the
// agent stops. It fails before SetKernelDrops(true) first succeeded.
func (d *Datapath) WatchFlow(t Tuple) error {
	return d.kdrop.updateWatch(t, true)
}

// UnwatchFlow forgets a connection WatchFlow watched; one that is not
// watched (any more) is no error.
func (d *Datapath) UnwatchFlow(t Tuple) error {
	return d.kdrop.updateWatch(t, false)
}

func (k *kernelDrops) updateWatch(t Tuple, on bool) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.watch == nil {
		return errKernelDropsNotLoaded
	}
	key := tupleToBPF(t)
	if on {
		if err := k.watch.Update(key, uint8(1), ebpf.UpdateAny); err != nil {
			return fmt.Errorf("watch %s: %w", t, err)
		}
		return nil
	}
	if err := k.watch.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("unwatch %s: %w", t, err)
	}
	return nil
}

func (k *kernelDrops) close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.link != nil {
		k.link.Close()
		k.link = nil
	}
	k.closeProg()
}

// closeProg closes the program and its watch map; mu is held.
func (k *kernelDrops) closeProg() {
	if k.prog != nil {
		k.prog.Close()
		k.prog = nil
	}
	if k.watch != nil {
		k.watch.Close()
		k.watch = nil
	}
}

func decodeKernelDrop(raw *kdropKdropEvent, clock monoClock, names *kernelNames) Event {
	ifindex, netns := raw.Ifindex, uint32(0)
	if raw.Netns != processNetns {
		ifindex, netns = 0, raw.Netns
	}
	return Event{
		Time:      clock.wall(raw.TsNs),
		Ifindex:   ifindex,
		Stage:     Stage(raw.Stage),
		Verdict:   VerdictDrop,
		ServiceID: raw.SvcId,
		BackendID: raw.BackendId,
		Orig:      tupleFromBPF(datapathFlowTuple(raw.Flow)),
		Xlated:    tupleFromBPF(datapathFlowTuple(raw.Pkt)),
		Length:    raw.PktLen,
		KernelDrop: &KernelDrop{
			Reason:     raw.Reason,
			ReasonName: names.reason(raw.Reason),
			Location:   raw.Location,
			Symbol:     names.symbol(raw.Location),
			Netns:      netns,
		},
	}
}

// kernelNames names drop reasons from the running kernel's BTF and code
// addresses from /proc/kallsyms, each read once, on first use.
type kernelNames struct {
	reasonsOnce sync.Once
	reasons     map[uint64]string

	symsOnce sync.Once
	syms     []ksym // by address
}

// processNetns is the inode number of the agent's network namespace, read
// when the package is initialised: every thread is in it then. Read later,
// it could be the namespace a thread of the process has entered for a
// moment (a test's, through /proc/self, the thread group leader's), and
// kernel drops in that namespace would be taken for the agent's own.
var processNetns = func() uint32 {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return 0
	}
	return uint32(st.Ino)
}()

type ksym struct {
	addr uint64
	name string
}

var kernel kernelNames

func (n *kernelNames) reason(v uint32) string {
	n.reasonsOnce.Do(func() { n.reasons = loadDropReasons() })
	if s, ok := n.reasons[uint64(v)]; ok {
		return s
	}
	return "reason " + strconv.FormatUint(uint64(v), 10)
}

// loadDropReasons reads enum skb_drop_reason from the kernel's BTF, so a
// newer kernel's reasons are named without a rebuild. nil when the kernel
// has no BTF.
func loadDropReasons() map[uint64]string {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return nil
	}
	var e *btf.Enum
	if err := spec.TypeByName("skb_drop_reason", &e); err != nil {
		return nil
	}
	return dropReasonNames(e)
}

func dropReasonNames(e *btf.Enum) map[uint64]string {
	m := make(map[uint64]string, len(e.Values))
	for _, v := range e.Values {
		name := strings.TrimPrefix(v.Name, "SKB_DROP_REASON_")
		if _, dup := m[v.Value]; !dup {
			m[v.Value] = name
		}
	}
	return m
}

func (n *kernelNames) symbol(addr uint64) string {
	n.symsOnce.Do(func() { n.syms = loadKallsyms("/proc/kallsyms") })
	return symbolize(n.syms, addr)
}

// symbolize names addr as symbol+offset, or in hex when no symbol covers it.
func symbolize(syms []ksym, addr uint64) string {
	i, found := slices.BinarySearchFunc(syms, addr, func(s ksym, a uint64) int {
		switch {
		case s.addr < a:
			return -1
		case s.addr > a:
			return 1
		}
		return 0
	})
	if !found {
		i--
	}
	if i < 0 || addr == 0 {
		return "0x" + strconv.FormatUint(addr, 16)
	}
	s := syms[i]
	if addr == s.addr {
		return s.name
	}
	return s.name + "+0x" + strconv.FormatUint(addr-s.addr, 16)
}

// loadKallsyms reads the kernel's text symbols sorted by address; nil when
// the file is unreadable or hides addresses (kptr_restrict).
func loadKallsyms(path string) []ksym {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var syms []ksym
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "ffffffff81000000 T _stext [module]"
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 {
			continue
		}
		if t := fields[1]; t != "t" && t != "T" {
			continue
		}
		addr, err := strconv.ParseUint(fields[0], 16, 64)
		if err != nil || addr == 0 {
			continue
		}
		syms = append(syms, ksym{addr: addr, name: fields[2]})
	}
	slices.SortStableFunc(syms, func(a, b ksym) int {
		switch {
		case a.addr < b.addr:
			return -1
		case a.addr > b.addr:
			return 1
		}
		return 0
	})
	return syms
}
