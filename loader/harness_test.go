package loader

import (
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/nodegress/nodegress/tests/netns"
)

// A harness is one freshly loaded datapath whose programs are run with
// BPF_PROG_TEST_RUN: maps are private (not pinned) and small, so every test
// starts from empty state and needs no bpffs.

// Return codes of the hooks.
const (
	xdpDrop     = 1
	xdpPass     = 2
	xdpTX       = 3
	xdpRedirect = 4

	tcActOK       = 0
	tcActShot     = 2
	tcActRedirect = 7
)

// xdpDoneMagic is what xdp_lb leaves in the metadata of packets it has
// dealt with, so that tc_ingress skips them (XDP_DONE_MAGIC in datapath.c).
const xdpDoneMagic = 0x6e677264

// Test configuration written to the config map.
const (
	testSNATMin  = 61000
	testSNATMax  = 65535
	testHashSeed = 0x5eed1234
	// testMaglevSeed seeds the Maglev tables and hash; testMaglevSize is
	// the table size the object is built with.
	testMaglevSeed = 0x3a61e7
	testMaglevSize = DefaultMaglevTableSize
)

type hook int

const (
	hookXDP hook = iota
	hookTCIngress
	hookTCEgress
)

func (h hook) String() string {
	return [...]string{"xdp", "tc_ingress", "tc_egress"}[h]
}

// ret is the return code of hook for verdict v.
func (h hook) ret(v Verdict) uint32 {
	if h == hookXDP {
		switch v {
		case VerdictPass:
			return xdpPass
		case VerdictDrop:
			return xdpDrop
		case VerdictTX:
			return xdpTX
		case VerdictRedirect:
			return xdpRedirect
		}
	} else {
		switch v {
		case VerdictPass:
			return tcActOK
		case VerdictDrop:
			return tcActShot
		case VerdictRedirect:
			return tcActRedirect
		}
	}
	panic("no return code for " + v.String() + " in " + h.String())
}

// xdpMD is struct xdp_md.
type xdpMD struct {
	Data           uint32
	DataEnd        uint32
	DataMeta       uint32
	IngressIfindex uint32
	RxQueueIndex   uint32
	EgressIfindex  uint32
}

// skbMD is struct __sk_buff. Test runs take only ifindex, a few
// timestamps and the GSO fields from it; the rest must be zero.
type skbMD struct {
	Len            uint32
	PktType        uint32
	Mark           uint32
	QueueMapping   uint32
	Protocol       uint32
	VlanPresent    uint32
	VlanTCI        uint32
	VlanProto      uint32
	Priority       uint32
	IngressIfindex uint32
	Ifindex        uint32
	TCIndex        uint32
	CB             [5]uint32
	Hash           uint32
	TCClassid      uint32
	Data           uint32
	DataEnd        uint32
	NapiID         uint32
	Family         uint32
	RemoteIP4      uint32
	LocalIP4       uint32
	RemoteIP6      [4]uint32
	LocalIP6       [4]uint32
	RemotePort     uint32
	LocalPort      uint32
	DataMeta       uint32
	FlowKeys       uint64
	Tstamp         uint64
	WireLen        uint32
	GSOSegs        uint32
	SK             uint64
	GSOSize        uint32
	TstampType     uint8
	_              [3]uint8
	HWTstamp       uint64
}

type harness struct {
	// t is the test (or benchmark) failures are reported to; subtests
	// that share a harness set it to themselves.
	t    testing.TB
	objs datapathObjects
	// ns, when set, is where programs run: bpf_fib_lookup resolves routes
	// and neighbours in the network namespace of the test run.
	ns *netns.NS
	// ifindex is the device packets arrive on (XDP ingress, skb->ifindex);
	// 0 means loopback.
	ifindex uint32
	// gsoSize and gsoSegs make tc programs see a GSO skb, as GRO hands
	// them up from a NIC.
	gsoSize, gsoSegs uint32
	// ingressIfindex is the device a tc program's packet came in on
	// (0: sent by the node itself).
	ingressIfindex uint32
	// dp is the bookkeeping apply programs through.
	dp          *Datapath
	maglevInner *ebpf.MapSpec
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	netns.RequirePrivileged(t)
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	spec, err := loadDatapath()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinNone
		switch m.Type {
		case ebpf.Hash, ebpf.LRUHash:
			// Preallocating production sizes costs time and memory per test.
			m.MaxEntries = 1024
		case ebpf.RingBuf:
			m.MaxEntries = 1 << 16
		}
	}
	h := &harness{t: t, maglevInner: spec.Maps["maglev_tables"].InnerMap.Copy()}
	if err := spec.LoadAndAssign(&h.objs, nil); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			t.Fatalf("load datapath: %+v", verr)
		}
		t.Fatalf("load datapath: %v", err)
	}
	t.Cleanup(func() { h.objs.Close() })
	h.reset()
	return h
}

// reset empties every map but stats (tests look at stats deltas), and
// writes the default config: a loaded datapath can serve many cases, which
// saves the verifier's time of loading one per case.
func (h *harness) reset() {
	h.t.Helper()
	h.dp = nil
	h.clear(h.objs.Frontends, h.objs.BackendSlots, h.objs.Backends, h.objs.Conntrack, h.objs.ReverseNat, h.objs.Devices,
		h.objs.ServiceBackends, h.objs.SourceRanges, h.objs.Affinity, h.objs.MaglevTables)
	h.setConfig(datapathDpConfig{SnatPortMin: testSNATMin, SnatPortMax: testSNATMax, HashSeed: testHashSeed,
		MaglevSeed: testMaglevSeed, MaglevSize: testMaglevSize})
}

// clear deletes every entry of the maps ms.
func (h *harness) clear(ms ...*ebpf.Map) {
	h.t.Helper()
	for _, m := range ms {
		var keys [][]byte
		var k, v []byte
		it := m.Iterate()
		for it.Next(&k, &v) {
			keys = append(keys, append([]byte(nil), k...))
		}
		if err := it.Err(); err != nil {
			h.t.Fatal(err)
		}
		for _, k := range keys {
			if err := m.Delete(k); err != nil {
				h.t.Fatal(err)
			}
		}
	}
}

func (h *harness) setConfig(cfg datapathDpConfig) {
	h.t.Helper()
	if err := h.objs.Config.Update(uint32(0), cfg, ebpf.UpdateAny); err != nil {
		h.t.Fatalf("write config: %v", err)
	}
}

func (h *harness) config() datapathDpConfig {
	h.t.Helper()
	var cfg datapathDpConfig
	if err := h.objs.Config.Lookup(uint32(0), &cfg); err != nil {
		h.t.Fatalf("read config: %v", err)
	}
	return cfg
}

func (h *harness) setTracing(on bool) {
	cfg := h.config()
	cfg.Flags &^= cfgFlagTrace
	if on {
		cfg.Flags |= cfgFlagTrace
	}
	h.setConfig(cfg)
}

// testBackend is one backend of a test service.
type testBackend struct {
	id          uint32
	addr        string // addr:port
	local       bool
	terminating bool
}

func (b testBackend) value() datapathBackendValue {
	ap := netip.MustParseAddrPort(b.addr)
	v := datapathBackendValue{Addr: addrToBE(ap.Addr()), Port: portToBE(ap.Port())}
	if b.local {
		v.Flags |= backendFlagLocal
	}
	if b.terminating {
		v.Flags |= backendFlagTerminating
	}
	return v
}

func (b testBackend) addrPort() netip.AddrPort { return netip.MustParseAddrPort(b.addr) }

// service programs a frontend with its backends the way Apply does:
// backends, then slots 1..n of the active ones, then the frontend.
func (h *harness) service(svcID uint32, frontend string, proto Proto, l7 bool, backends ...testBackend) {
	h.t.Helper()
	var active []uint32
	for _, b := range backends {
		h.putBackend(b)
		if !b.terminating {
			active = append(active, b.id)
		}
	}
	h.setSlots(svcID, active...)
	fe := netip.MustParseAddrPort(frontend)
	val := datapathFrontendValue{SvcId: svcID, BackendCount: uint16(len(active))}
	if l7 {
		val.Flags |= frontendFlagL7
	}
	if err := h.objs.Frontends.Update(frontendKeyOf(Frontend{Addr: fe.Addr(), Port: fe.Port()}, proto), val, ebpf.UpdateAny); err != nil {
		h.t.Fatalf("write frontend: %v", err)
	}
}

// setFrontendFlags adds flags to a programmed frontend.
func (h *harness) setFrontendFlags(frontend string, proto Proto, flags uint16) {
	h.t.Helper()
	fe := netip.MustParseAddrPort(frontend)
	key := frontendKeyOf(Frontend{Addr: fe.Addr(), Port: fe.Port()}, proto)
	var v datapathFrontendValue
	if err := h.objs.Frontends.Lookup(key, &v); err != nil {
		h.t.Fatalf("read frontend %s: %v", frontend, err)
	}
	v.Flags |= flags
	if err := h.objs.Frontends.Update(key, v, ebpf.UpdateAny); err != nil {
		h.t.Fatalf("write frontend %s: %v", frontend, err)
	}
}

// apply programs services through the loader's own bookkeeping onto the
// harness's maps, as the agent does, and returns their ids by name.
func (h *harness) apply(svcs ...Service) map[string]uint32 {
	h.t.Helper()
	if h.dp == nil {
		h.dp = &Datapath{log: slog.New(slog.NewTextHandler(io.Discard, nil)), names: newNameTable(),
			lb:     bpfLBMaps(h.objs.Frontends, h.objs.BackendSlots, h.objs.Backends, h.objs.ServiceBackends, h.objs.SourceRanges),
			syncL7: func(map[uint32]string, map[netip.Addr]bool) []error { return nil },
			cfg:    Config{MaglevTableSize: testMaglevSize, MaglevSeed: testMaglevSeed}}
		h.dp.lb.maglev = bpfMaglevMaps{outer: h.objs.MaglevTables, inner: h.maglevInner}
		if err := h.dp.recoverState(); err != nil {
			h.t.Fatal(err)
		}
	}
	if err := h.dp.Apply(svcs); err != nil {
		h.t.Fatalf("apply: %v", err)
	}
	ids := map[string]uint32{}
	for _, s := range svcs {
		ids[s.Name] = h.dp.ids.services[s.Name]
	}
	return ids
}

func (h *harness) putBackend(b testBackend) {
	h.t.Helper()
	if err := h.objs.Backends.Update(b.id, b.value(), ebpf.UpdateAny); err != nil {
		h.t.Fatalf("write backend %d: %v", b.id, err)
	}
}

func (h *harness) deleteBackend(id uint32) {
	h.t.Helper()
	if err := h.objs.Backends.Delete(id); err != nil {
		h.t.Fatalf("delete backend %d: %v", id, err)
	}
}

// setSlots makes ids the service's active backends and updates the
// backend count of every frontend of the service.
func (h *harness) setSlots(svcID uint32, ids ...uint32) {
	h.t.Helper()
	for i, id := range ids {
		if err := h.objs.BackendSlots.Update(datapathBackendSlotKey{SvcId: svcID, Slot: uint32(i + 1)}, id, ebpf.UpdateAny); err != nil {
			h.t.Fatalf("write slot: %v", err)
		}
	}
	for slot := uint32(len(ids) + 1); ; slot++ {
		if err := h.objs.BackendSlots.Delete(datapathBackendSlotKey{SvcId: svcID, Slot: slot}); err != nil {
			break
		}
	}
	var (
		k   datapathFrontendKey
		v   datapathFrontendValue
		fix []datapathFrontendKey
	)
	it := h.objs.Frontends.Iterate()
	for it.Next(&k, &v) {
		if v.SvcId == svcID {
			fix = append(fix, k)
		}
	}
	for _, k := range fix {
		if err := h.objs.Frontends.Lookup(k, &v); err != nil {
			h.t.Fatal(err)
		}
		v.BackendCount = uint16(len(ids))
		if err := h.objs.Frontends.Update(k, v, ebpf.UpdateAny); err != nil {
			h.t.Fatal(err)
		}
	}
}

func (h *harness) setDevice(ifindex uint32, addr string) {
	h.t.Helper()
	v := datapathDeviceValue{Addr: addrToBE(netip.MustParseAddr(addr))}
	if err := h.objs.Devices.Update(ifindex, v, ebpf.UpdateAny); err != nil {
		h.t.Fatalf("write device: %v", err)
	}
}

// ct returns the conntrack entry of f's flow.
func (h *harness) ct(f frame) (datapathCtEntry, bool) {
	var e datapathCtEntry
	err := h.objs.Conntrack.Lookup(f.tuple(), &e)
	return e, err == nil
}

func (h *harness) revNAT(key datapathFlowTuple) (datapathRevNatEntry, bool) {
	var e datapathRevNatEntry
	err := h.objs.ReverseNat.Lookup(key, &e)
	return e, err == nil
}

func (h *harness) count(m *ebpf.Map) int {
	var (
		k datapathFlowTuple
		n int
	)
	var v []byte
	it := m.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil {
		h.t.Fatal(err)
	}
	return n
}

func (h *harness) stats() map[Reason]Counter {
	h.t.Helper()
	s, err := readStats(h.objs.Stats)
	if err != nil {
		h.t.Fatal(err)
	}
	return s
}

// result is the outcome of one program run.
type result struct {
	ret uint32
	pkt []byte // the packet after the run, XDP metadata stripped
	// meta is the XDP metadata the program left in front of the packet.
	meta []byte
}

// done tells whether xdp_lb marked the packet as dealt with.
func (r result) done() bool {
	return len(r.meta) == 4 && binary.NativeEndian.Uint32(r.meta) == xdpDoneMagic
}

func (h *harness) prog(k hook) *ebpf.Program {
	switch k {
	case hookXDP:
		return h.objs.XdpLb
	case hookTCIngress:
		return h.objs.TcIngress
	default:
		return h.objs.TcEgress
	}
}

// run runs the program of hook k on pkt.
func (h *harness) run(k hook, pkt []byte) (result, error) {
	var (
		res    result
		ctxOut xdpMD
	)
	opts := &ebpf.RunOptions{Data: pkt, DataOut: make([]byte, len(pkt)+256)}
	if k == hookXDP {
		opts.Context = xdpMD{DataEnd: uint32(len(pkt)), IngressIfindex: h.ifindex}
		opts.ContextOut = &ctxOut
	} else if h.ifindex != 0 || h.gsoSize != 0 || h.ingressIfindex != 0 {
		opts.Context = skbMD{Ifindex: h.ifindex, IngressIfindex: h.ingressIfindex, GSOSize: h.gsoSize, GSOSegs: h.gsoSegs}
	}
	runIn := func() error {
		ret, err := h.prog(k).Run(opts)
		res.ret = ret
		return err
	}
	var err error
	if h.ns != nil {
		err = h.ns.Do(runIn)
	} else {
		err = runIn()
	}
	if err != nil {
		return res, err
	}
	res.pkt = opts.DataOut
	if k == hookXDP {
		res.meta = opts.DataOut[:ctxOut.Data]
		res.pkt = opts.DataOut[ctxOut.Data:ctxOut.DataEnd]
	}
	return res, nil
}

// expect runs pkt through hook k and fails the test unless the program
// returned the code of verdict and counted exactly this packet, under
// reason. It returns the output packet.
func (h *harness) expect(k hook, pkt []byte, verdict Verdict, reason Reason) result {
	h.t.Helper()
	before := h.stats()
	res, err := h.run(k, pkt)
	if err != nil {
		h.t.Fatalf("%s: run: %v", k, err)
	}
	if want := k.ret(verdict); res.ret != want {
		h.t.Errorf("%s: returned %d, want %d (%s)", k, res.ret, want, verdict)
	}
	h.expectCounted(before, reason, 1, len(pkt))
	return res
}

// expectCounted checks that since before, n packets of length size each
// were counted under reason and none under any other reason.
func (h *harness) expectCounted(before map[Reason]Counter, reason Reason, n, size int) {
	h.t.Helper()
	after := h.stats()
	for _, r := range Reasons() {
		dp := after[r].Packets - before[r].Packets
		db := after[r].Bytes - before[r].Bytes
		want := uint64(0)
		if r == reason {
			want = uint64(n)
		}
		if dp != want {
			h.t.Errorf("stats %s: +%d packets, want +%d", r, dp, want)
		}
		if dp == want && r == reason && db != want*uint64(size) {
			h.t.Errorf("stats %s: +%d bytes, want +%d", r, db, want*uint64(size))
		}
	}
}

// events opens a reader of the events ring buffer.
func (h *harness) events() *ringbuf.Reader {
	h.t.Helper()
	rd, err := ringbuf.NewReader(h.objs.Events)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { rd.Close() })
	return rd
}

// nextEvent reads one event, or reports none within wait.
func nextEvent(t *testing.T, rd *ringbuf.Reader, wait time.Duration) (Event, bool) {
	t.Helper()
	rd.SetDeadline(time.Now().Add(wait))
	rec, err := rd.Read()
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return Event{}, false
	}
	if err != nil {
		t.Fatalf("read event: %v", err)
	}
	ev, err := decodeDatapathRecord(rec.RawSample, newMonoClock())
	if err != nil {
		t.Fatal(err)
	}
	return ev, true
}
