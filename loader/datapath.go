// Package loader is the Go side of the nodegress datapath: it loads the BPF
// programs, pins their maps, attaches them to devices and keeps the maps
// equal to the services it is given.
package loader

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// XDPMode says how xdp_lb is attached to a device.
type XDPMode string

// XDP attach modes.
const (
	// XDPAuto tries native (driver) mode and falls back to generic per device.
	XDPAuto    XDPMode = "auto"
	XDPNative  XDPMode = "native"
	XDPGeneric XDPMode = "generic"
	// XDPOff leaves every packet to tc_ingress.
	XDPOff XDPMode = "off"
)

// ParseXDPMode validates an XDP mode name.
func ParseXDPMode(s string) (XDPMode, error) {
	switch m := XDPMode(s); m {
	case XDPAuto, XDPNative, XDPGeneric, XDPOff:
		return m, nil
	}
	return "", fmt.Errorf("unknown xdp mode %q (want auto, native, generic or off)", s)
}

// Config says where and how the datapath runs.
type Config struct {
	// BPFFS is the directory maps and links are pinned in. When it is not
	// on a bpffs, one is mounted at BPFFSRoot (for directories under it)
	// or at BPFFS itself.
	BPFFS string
	// Devices are the external interfaces the programs attach to.
	Devices []string
	XDPMode XDPMode
	// SNATPortMin and SNATPortMax bound the source ports used towards
	// remote backends. Keep them outside the kernel's ephemeral range.
	SNATPortMin, SNATPortMax uint16
	// SNATAddresses are prefixes of more SNAT source addresses: a
	// device's addresses inside them (other than its first, always used)
	// multiply the ports of the SNAT range, up to MaxSNATExtra per device.
	SNATAddresses []netip.Prefix
	// SocketLB attaches the socket-level load balancer to CgroupRoot (see
	// the CgroupRoot function for the default), which serves Internal
	// services to every process below it.
	SocketLB   bool
	CgroupRoot string
	// MaglevTableSize is the size of every Maglev table (a prime; 0 means
	// DefaultMaglevTableSize). MaglevSeed seeds the Maglev tables and flow
	// hash: give every node of a cluster the same, so that they all pick
	// the same backend for a flow.
	MaglevTableSize uint32
	MaglevSeed      uint32
	// PodRedirect has tc hand packets for local pods straight to the
	// pod's end of its veth (or netkit) pair, skipping the host's routing
	// and netfilter. Replies still cross them: rules that drop
	// conntrack-INVALID packets (kube-proxy's) drop the pod's first
	// answer, whose request they never saw.
	PodRedirect bool
	Logger      *slog.Logger
}

// DefaultBPFFS is where the agent pins its state unless told otherwise.
const DefaultBPFFS = "/sys/fs/bpf/nodegress"

// Datapath is the loaded, attached datapath of one node.
type Datapath struct {
	// evSync is the running ReadEvents' barrier (SyncEvents).
	evSync atomic.Pointer[eventSync]
	// holding: the programs hold the packets of flows an upgrade has not
	// copied yet (migrating_flows); Open's goroutine only.
	holding bool
	cfg     Config
	log     *slog.Logger
	objs    datapathObjects

	// netlink works in the network namespace Open ran in, whatever thread
	// later calls.
	netlink *netlink.Handle

	// kdrop is trace_drop while a trace client wants kernel drops.
	kdrop kernelDrops

	attachMu sync.Mutex
	attached []Attachment

	mu sync.Mutex // guards everything below and the service maps
	// lb are the service maps; syncL7 steers L7 services to the proxy
	// listeners and routes their addresses locally. Both are the real thing
	// after Open and fakes in the bookkeeping's unit tests.
	lb         lbMaps
	migrations []*migration
	syncL7     func(l7 map[uint32]string, addrs map[netip.Addr]bool) []error
	state      programmedState
	ids        idAllocator
	names      nameTable
	// listeners are the proxy's sockets by name (our own descriptors);
	// steered says which L7 service id points at which; lastL7 is the L7
	// services of the last Apply.
	listeners map[string]int
	steered   map[uint32]string
	lastL7    map[uint32]string
	// stopPeers ends the watch that keeps peer_devices current.
	stopPeers func()
}

// Open loads the programs, re-uses pinned maps from an earlier run (so
// established flows survive an agent restart), configures the datapath and
// attaches it to cfg.Devices.
func Open(cfg Config) (*Datapath, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.BPFFS == "" {
		cfg.BPFFS = DefaultBPFFS
	}
	if cfg.XDPMode == "" {
		cfg.XDPMode = XDPAuto
	}
	if cfg.MaglevTableSize == 0 {
		cfg.MaglevTableSize = DefaultMaglevTableSize
	}
	if !IsPrime(cfg.MaglevTableSize) || cfg.MaglevTableSize > 1<<20 {
		return nil, fmt.Errorf("maglev table size %d: want a prime up to %d", cfg.MaglevTableSize, 1<<20)
	}
	if cfg.SNATPortMin == 0 || cfg.SNATPortMax < cfg.SNATPortMin {
		return nil, fmt.Errorf("invalid snat port range %d-%d", cfg.SNATPortMin, cfg.SNATPortMax)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove memlock limit: %w", err)
	}
	mountedAt, err := ensureBPFFS(cfg.BPFFS)
	if err != nil {
		return nil, err
	}
	if mountedAt != "" {
		cfg.Logger.Info("mounted bpffs", "dir", mountedAt)
	}
	nl, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	d := &Datapath{
		netlink:   nl,
		cfg:       cfg,
		log:       cfg.Logger,
		names:     newNameTable(),
		listeners: map[string]int{},
		steered:   map[uint32]string{},
	}
	d.syncL7 = d.syncProxyListeners
	for _, step := range []func() error{d.load, d.configure, d.recoverState, d.watchPeerDevices, d.preCatchUp, d.attachAll, d.catchUpFlows, d.attachSteering, d.attachSocketLB, d.finishMigrations} {
		if err := step(); err != nil {
			d.Close()
			return nil, err
		}
	}
	return d, nil
}

func mapsDir(bpffs string) string  { return filepath.Join(bpffs, "maps") }
func linksDir(bpffs string) string { return filepath.Join(bpffs, "links") }

// load loads the collection with its maps pinned by name. A pinned map
// whose definition changed (an upgrade) is replaced, not reused; every other
// pinned map, and the flows in it, is kept.
func (d *Datapath) load() error {
	dir := mapsDir(d.cfg.BPFFS)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create map pin dir: %w", err)
	}
	spec, err := loadDatapath()
	if err != nil {
		return fmt.Errorf("load datapath spec: %w", err)
	}
	spec.Maps["maglev_tables"].InnerMap.MaxEntries = d.cfg.MaglevTableSize
	// Pinned maps of another layout (an upgrade) are migrated; every
	// other pinned map, and the flows in it, is reused as it is.
	d.migrations, err = d.migrateMaps(dir, spec)
	if err != nil {
		return err
	}
	err = spec.LoadAndAssign(&d.objs, &ebpf.CollectionOptions{
		Maps: ebpf.MapOptions{PinPath: dir},
	})
	if err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return fmt.Errorf("load datapath: %+v", verr)
		}
		return fmt.Errorf("load datapath: %w", err)
	}
	d.lb = bpfLBMaps(d.objs.Frontends, d.objs.BackendSlots, d.objs.Backends, d.objs.ServiceBackends, d.objs.SourceRanges)
	d.lb.maglev = bpfMaglevMaps{outer: d.objs.MaglevTables, inner: spec.Maps["maglev_tables"].InnerMap}
	return nil
}

// flowMaps are the maps whose missing entries the datapath holds packets
// for while an upgrade copies them (bpf/lib/migrating.h).
var flowMaps = []string{"conntrack", "reverse_nat"}

// preCatchUp copies what the previous agent's programs wrote to the old
// maps while this version's programs were loaded and verified (a large
// part of a second), right before they replace the old ones, and has the
// new programs hold the packets of flows they do not know until
// catchUpFlows copied what the old ones write in the last moments.
func (d *Datapath) preCatchUp() error {
	if len(d.migrations) == 0 {
		return nil
	}
	for _, m := range d.migrations {
		if n, err := m.copy(ebpf.UpdateNoExist); err != nil {
			d.log.Warn("catching up with a migrated map", "map", m.name, "err", err)
		} else if n > 0 {
			d.log.Info("caught up with a migrated map before attaching", "map", m.name, "entries", n)
		}
	}
	if slices.ContainsFunc(d.migrations, func(m *migration) bool { return slices.Contains(flowMaps, m.name) }) {
		if err := d.setMigratingFlows(true); err != nil {
			return err
		}
	}
	return nil
}

// catchUpFlows copies the conntrack and reverse NAT entries the previous
// agent's programs wrote since preCatchUp (they ran until attachAll
// replaced them), then lets the datapath take a packet of a flow it does
// not know for a new flow again.
func (d *Datapath) catchUpFlows() error {
	if !d.holding {
		return nil
	}
	start := time.Now()
	d.migrations = slices.DeleteFunc(d.migrations, func(m *migration) bool {
		if !slices.Contains(flowMaps, m.name) {
			return false
		}
		d.finishMigration(m)
		return true
	})
	if err := d.setMigratingFlows(false); err != nil {
		return err
	}
	d.log.Info("previous agent's flows migrated", "held_for", time.Since(start).Round(time.Microsecond))
	return nil
}

// finishMigrations copies what the previous agent's programs wrote to the
// other migrated maps (affinity and socket-level reverse NAT among them,
// which its cgroup programs wrote until attachSocketLB replaced them).
func (d *Datapath) finishMigrations() error {
	for _, m := range d.migrations {
		d.finishMigration(m)
	}
	d.migrations = nil
	return nil
}

func (d *Datapath) finishMigration(m *migration) {
	if n, err := m.catchUp(); err != nil {
		d.log.Warn("catching up with a migrated map", "map", m.name, "err", err)
	} else if n > 0 {
		d.log.Info("caught up with a migrated map", "map", m.name, "entries", n)
	}
}

// setMigratingFlows sets or clears the programs' migrating_flows.
func (d *Datapath) setMigratingFlows(on bool) error {
	if d.objs.MigratingFlows == nil {
		return nil // not loaded
	}
	var v uint32
	if on {
		v = 1
	}
	if err := d.objs.MigratingFlows.Set(v); err != nil {
		return fmt.Errorf("set migrating_flows: %w", err)
	}
	d.holding = on
	return nil
}

// configure writes the config map. The hash seed survives restarts so that
// flows without conntrack state still land on the same backend.
func (d *Datapath) configure() error {
	var cfg datapathDpConfig
	if err := d.objs.Config.Lookup(uint32(0), &cfg); err != nil {
		return fmt.Errorf("read datapath config: %w", err)
	}
	if cfg.HashSeed == 0 {
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return fmt.Errorf("hash seed: %w", err)
		}
		cfg.HashSeed = binary.LittleEndian.Uint32(b[:]) | 1
	}
	cfg.MaglevSeed = d.cfg.MaglevSeed
	cfg.MaglevSize = d.cfg.MaglevTableSize
	cfg.SnatPortMin = d.cfg.SNATPortMin
	cfg.SnatPortMax = d.cfg.SNATPortMax
	cfg.Flags &^= cfgFlagTrace | cfgFlagTracePkt
	cfg.Snaplen = 0
	cfg.Flags &^= cfgFlagPodRedirect
	if d.cfg.PodRedirect {
		cfg.Flags |= cfgFlagPodRedirect
	}
	if err := d.objs.Config.Update(uint32(0), &cfg, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("write datapath config: %w", err)
	}
	return nil
}

// Flags of datapathDpConfig, as CFG_F_* in bpf/lib/consts.h.
const (
	cfgFlagTrace       = uint32(datapathConfigFlagsCFG_F_TRACE)
	cfgFlagPodRedirect = uint32(datapathConfigFlagsCFG_F_POD_REDIRECT)
)

// Close releases this process's handles. Pinned maps and links stay, so the
// datapath keeps forwarding until Cleanup.
func (d *Datapath) Close() error {
	d.kdrop.close()
	d.attachMu.Lock()
	for _, a := range d.attached {
		a.link.Close()
	}
	d.attached = nil
	d.attachMu.Unlock()
	d.mu.Lock()
	for _, fd := range d.listeners {
		unix.Close(fd)
	}
	d.listeners = map[string]int{}
	for _, m := range d.migrations {
		m.close()
	}
	d.migrations = nil
	d.mu.Unlock()
	if d.holding {
		// Opening failed half-way: programs left attached must not go
		// on holding packets of flows they do not know.
		_ = d.setMigratingFlows(false)
	}
	if d.stopPeers != nil {
		d.stopPeers()
		d.stopPeers = nil
	}
	d.netlink.Close()
	return d.objs.Close()
}
