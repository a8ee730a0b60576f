package loader

import (
	"encoding/binary"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// oldStruct is a struct of an older build, given as (name, size) members
// in their order.
func oldStruct(name string, members ...any) *btf.Struct {
	st := &btf.Struct{Name: name}
	off := uint32(0)
	for i := 0; i < len(members); i += 2 {
		sz := uint32(members[i+1].(int))
		st.Members = append(st.Members, btf.Member{Name: members[i].(string), Offset: btf.Bits(off * 8),
			Type: &btf.Int{Name: "u" + string(rune('0'+sz)), Size: sz}})
		off += sz
	}
	st.Size = off
	return st
}

// TestMigrateOlderLayouts starts an agent on maps an older build pinned
// with other layouts (conntrack values reordered with a field the new
// build lacks, the config and frontends values smaller): the state is
// migrated field by field, not wiped. The hash seed survives (flows keep
// their backends), conntrack entries keep their meaning, frontends their
// service ids.
func TestMigrateOlderLayouts(t *testing.T) {
	ns, _, bpffs := newOpenEnv(t, "ngmig-")
	dir := mapsDir(bpffs)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	spec, err := loadDatapath()
	if err != nil {
		t.Fatal(err)
	}
	pin := func(name string, value *btf.Struct, key btf.Type, keySize uint32, fill func(*ebpf.Map)) {
		t.Helper()
		ms := spec.Maps[name].Copy()
		ms.Value, ms.ValueSize = value, value.Size
		if key != nil {
			ms.Key, ms.KeySize = key, keySize
		}
		m, err := ebpf.NewMapWithOptions(ms, ebpf.MapOptions{PinPath: dir})
		if err != nil {
			t.Fatalf("pin old %s: %v", name, err)
		}
		defer m.Close()
		fill(m)
	}

	flow := datapathFlowTuple{Saddr: addrToBE(netip.MustParseAddr("192.0.2.10")), Daddr: addrToBE(netip.MustParseAddr("10.0.0.1")),
		Sport: portToBE(40000), Dport: portToBE(30080), Proto: uint8(TCP)}
	oldCT := oldStruct("ct_entry", "svc_id", 4, "backend_id", 4, "obsolete", 4, "backend_addr", 4, "nat_addr", 4,
		"backend_port", 2, "nat_port", 2, "created_ns", 8, "last_seen_ns", 8, "flags", 1, "pad", 3)
	pin("conntrack", oldCT, nil, 0, func(m *ebpf.Map) {
		v := make([]byte, oldCT.Size)
		le := binary.LittleEndian
		le.PutUint32(v[0:], 7)                                            // svc_id
		le.PutUint32(v[4:], 9)                                            // backend_id
		le.PutUint32(v[8:], 0xdeadbeef)                                   // obsolete
		le.PutUint32(v[12:], addrToBE(netip.MustParseAddr("10.244.1.5"))) // backend_addr
		le.PutUint32(v[16:], addrToBE(netip.MustParseAddr("10.0.0.1")))   // nat_addr
		le.PutUint16(v[20:], portToBE(8080))                              // backend_port
		le.PutUint16(v[22:], portToBE(61001))                             // nat_port
		le.PutUint64(v[24:], 1000)                                        // created_ns
		le.PutUint64(v[32:], 2000)                                        // last_seen_ns
		v[40] = uint8(datapathCtFlagsCT_F_REMOTE)                         // flags
		if err := m.Update(flow, v, ebpf.UpdateAny); err != nil {
			t.Fatal(err)
		}
	})
	oldCfg := oldStruct("dp_config", "flags", 4, "snat_port_min", 2, "snat_port_max", 2, "hash_seed", 4, "pad", 4)
	pin("config", oldCfg, nil, 0, func(m *ebpf.Map) {
		v := make([]byte, oldCfg.Size)
		binary.LittleEndian.PutUint32(v[8:], 0xabcdef1)
		if err := m.Update(uint32(0), v, ebpf.UpdateAny); err != nil {
			t.Fatal(err)
		}
	})
	fe := Frontend{Addr: netip.MustParseAddr("10.0.0.1"), Port: 30080}
	oldFE := oldStruct("frontend_value", "svc_id", 4, "backend_count", 2, "flags", 2)
	pin("frontends", oldFE, nil, 0, func(m *ebpf.Map) {
		v := make([]byte, oldFE.Size)
		binary.LittleEndian.PutUint32(v[0:], 7)
		binary.LittleEndian.PutUint16(v[4:], 1)
		if err := m.Update(frontendKeyOf(fe, TCP), v, ebpf.UpdateAny); err != nil {
			t.Fatal(err)
		}
	})

	var dp *Datapath
	if err := ns.Do(func() error {
		var err error
		dp, err = Open(Config{BPFFS: bpffs, Devices: []string{"ext0"}, SNATPortMin: 61000, SNATPortMax: 65535,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		return err
	}); err != nil {
		t.Fatalf("open over an older build's pins: %v", err)
	}
	defer dp.Close()

	var ct datapathCtEntry
	if err := dp.objs.Conntrack.Lookup(flow, &ct); err != nil {
		t.Fatalf("conntrack entry after the upgrade: %v", err)
	}
	want := datapathCtEntry{CreatedNs: 1000, LastSeenNs: 2000, SvcId: 7, BackendId: 9,
		BackendAddr: addrToBE(netip.MustParseAddr("10.244.1.5")), NatAddr: addrToBE(netip.MustParseAddr("10.0.0.1")),
		BackendPort: portToBE(8080), NatPort: portToBE(61001), Flags: uint8(datapathCtFlagsCT_F_REMOTE)}
	if ct != want {
		t.Errorf("migrated conntrack entry %+v, want %+v", ct, want)
	}
	var cfg datapathDpConfig
	if err := dp.objs.Config.Lookup(uint32(0), &cfg); err != nil || cfg.HashSeed != 0xabcdef1 {
		t.Errorf("config after the upgrade: %+v (%v), want the old hash seed", cfg, err)
	}
	// The frontend's service keeps its id.
	if err := dp.Apply([]Service{{Name: "ns/web:http/TCP", Proto: TCP, Frontends: []Frontend{fe},
		Backends: []Backend{{Addr: netip.MustParseAddr("10.244.1.5"), Port: 8080}}}}); err != nil {
		t.Fatal(err)
	}
	if id := dp.ids.services["ns/web:http/TCP"]; id != 7 {
		t.Errorf("service id after the upgrade %d, want 7", id)
	}
}

// TestReopenKeepsEveryMap opens the datapath twice with the same build:
// every pinned map, per-CPU counters included, is kept as it is, neither
// migrated nor replaced (a scalar key such as __u32 once made every map
// look changed, and the counters restarted from zero on each restart).
func TestReopenKeepsEveryMap(t *testing.T) {
	ns, _, bpffs := newOpenEnv(t, "ngreopen-")
	open := func(log *slog.Logger) *Datapath {
		t.Helper()
		var dp *Datapath
		if err := ns.Do(func() error {
			var err error
			dp, err = Open(Config{BPFFS: bpffs, Devices: []string{"ext0"}, SNATPortMin: 61000, SNATPortMax: 65535, Logger: log})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return dp
	}
	ids := func() map[string]ebpf.MapID {
		t.Helper()
		out := map[string]ebpf.MapID{}
		entries, err := os.ReadDir(mapsDir(bpffs))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			m, err := ebpf.LoadPinnedMap(mapsDir(bpffs)+"/"+e.Name(), nil)
			if err != nil {
				t.Fatal(err)
			}
			info, err := m.Info()
			m.Close()
			if err != nil {
				t.Fatal(err)
			}
			id, _ := info.ID()
			out[e.Name()] = id
		}
		return out
	}
	open(slog.New(slog.NewTextHandler(io.Discard, nil))).Close()
	before := ids()
	if len(before) == 0 || before["stats"] == 0 {
		t.Fatalf("pinned maps %v: no stats map", before)
	}
	var logs strings.Builder
	open(slog.New(slog.NewTextHandler(&logs, nil))).Close()
	after := ids()
	for name, id := range before {
		if after[name] != id {
			t.Errorf("map %s replaced on reopen (id %d → %d)", name, id, after[name])
		}
	}
	if strings.Contains(logs.String(), "pinned map") {
		t.Errorf("reopen with the same build touched pinned maps:\n%s", logs.String())
	}
}
