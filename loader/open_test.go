package loader

import (
	"errors"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nodegress/nodegress/tests/netns"
)

// TestOpenApplyRestartCleanup drives the loader's API the way the agent
// does: open on a device, apply service sets, restart, clean up; and reads
// the result back from the pinned maps as `nodegress maps` does.
func TestOpenApplyRestartCleanup(t *testing.T) {
	ns, ext0, bpffs := newOpenEnv(t, "ngopen-")
	var dp *Datapath
	t.Cleanup(func() {
		if dp != nil {
			dp.Close()
		}
	})
	open := func() *Datapath {
		t.Helper()
		var d *Datapath
		err := ns.Do(func() error {
			var err error
			d, err = Open(Config{
				BPFFS:   bpffs,
				Devices: []string{"ext0"},
				// auto would leave XDP off on a veth: this test
				// is about XDP's pins too.
				XDPMode:     XDPNative,
				SNATPortMin: 61000,
				SNATPortMax: 65535,
				Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
			})
			return err
		})
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		return d
	}
	read := func() *Snapshot {
		t.Helper()
		s, err := ReadPinned(bpffs)
		if err != nil {
			t.Fatalf("read pinned maps: %v", err)
		}
		return s
	}
	ap := netip.MustParseAddr

	web := Service{
		Name:  "default/web:http/TCP",
		Proto: TCP,
		Frontends: []Frontend{
			{Addr: ap("10.0.0.1"), Port: 30080},
			{Addr: ap("203.0.113.5"), Port: 80},
		},
		Backends: []Backend{
			{Addr: ap("10.244.0.5"), Port: 8080, Local: true},
			{Addr: ap("10.244.1.5"), Port: 8080},
			{Addr: ap("10.244.1.6"), Port: 8080, Terminating: true},
		},
	}
	dns := Service{
		Name:      "kube-system/dns:dns/UDP",
		Proto:     UDP,
		Frontends: []Frontend{{Addr: ap("10.0.0.1"), Port: 30053}},
		Backends:  []Backend{{Addr: ap("10.244.0.7"), Port: 53, Local: true}},
	}
	ingress := Service{
		Name:      "nodegress/ingress:https/TCP",
		Proto:     TCP,
		L7:        true,
		Frontends: []Frontend{{Addr: ap("10.0.0.1"), Port: 443}},
	}

	dp = open()
	if mode, err := ns.XDPMode("ext0"); err != nil || mode == netns.XDPAttachedNone {
		t.Errorf("xdp on ext0: mode %d, %v; want attached", mode, err)
	}
	if in, eg, err := ns.TCXPrograms("ext0"); err != nil || in != 1 || eg != 1 {
		t.Errorf("tcx programs on ext0: ingress %d egress %d, %v; want 1 and 1", in, eg, err)
	}

	// First service set.
	if err := dp.Apply([]Service{web, dns, ingress}); err != nil {
		t.Fatalf("apply: %v", err)
	}
	s := read()
	if s.SNATPortMin != 61000 || s.SNATPortMax != 65535 || s.Tracing {
		t.Errorf("config: snat %d-%d tracing %v", s.SNATPortMin, s.SNATPortMax, s.Tracing)
	}
	if want := map[uint32]DeviceState{uint32(ext0.Attrs().Index): {SNATAddr: ap("10.0.0.1"), PartialChecksums: true}}; !maps.Equal(s.Devices, want) {
		t.Errorf("devices %v, want %v", s.Devices, want)
	}
	fe := frontendsByAddr(s)
	webID := fe["10.0.0.1:30080/TCP"].ServiceID
	if webID == 0 || fe["203.0.113.5:80/TCP"].ServiceID != webID {
		t.Fatalf("frontends of one service got ids %d and %d", webID, fe["203.0.113.5:80/TCP"].ServiceID)
	}
	wantFE := map[string]FrontendEntry{
		"10.0.0.1:30080/TCP": {BackendCount: 2, ServiceID: webID},
		"203.0.113.5:80/TCP": {BackendCount: 2, ServiceID: webID},
		"10.0.0.1:30053/UDP": {BackendCount: 1},
		"10.0.0.1:443/TCP":   {L7: true},
	}
	checkFrontends(t, fe, wantFE)
	be := backendsByAddr(s)
	if len(be) != 4 || !be["10.244.0.5:8080"].Local || be["10.244.1.5:8080"].Local ||
		!be["10.244.1.6:8080"].Terminating || be["10.244.0.5:8080"].Terminating {
		t.Errorf("backends %+v", s.Backends)
	}
	if got, want := s.Slots[webID], []uint32{be["10.244.0.5:8080"].ID, be["10.244.1.5:8080"].ID}; !slices.Equal(got, want) {
		t.Errorf("slots of web %v, want the active backends %v", got, want)
	}
	if dp.ServiceName(webID) != web.Name || dp.BackendName(be["10.244.1.5:8080"].ID) != "10.244.1.5:8080" {
		t.Errorf("names: %q, %q", dp.ServiceName(webID), dp.BackendName(be["10.244.1.5:8080"].ID))
	}
	maxID := uint32(0)
	for _, f := range s.Frontends {
		maxID = max(maxID, f.ServiceID)
	}
	for _, b := range s.Backends {
		maxID = max(maxID, b.ID)
	}

	// Second set: a backend goes, one comes, a service goes.
	web.Backends = []Backend{web.Backends[0], web.Backends[1], {Addr: ap("10.244.0.9"), Port: 8080, Local: true}}
	if err := dp.Apply([]Service{web, ingress}); err != nil {
		t.Fatalf("apply: %v", err)
	}
	s = read()
	fe = frontendsByAddr(s)
	if len(fe) != 3 || fe["10.0.0.1:30080/TCP"].ServiceID != webID || fe["10.0.0.1:30080/TCP"].BackendCount != 3 {
		t.Errorf("frontends after update %+v", s.Frontends)
	}
	be2 := backendsByAddr(s)
	if len(be2) != 3 || be2["10.244.0.5:8080"].ID != be["10.244.0.5:8080"].ID || be2["10.244.1.5:8080"].ID != be["10.244.1.5:8080"].ID {
		t.Errorf("backends after update %+v", s.Backends)
	}
	if id := be2["10.244.0.9:8080"].ID; id <= maxID {
		t.Errorf("new backend got id %d, want a fresh one above %d", id, maxID)
	}
	if got, want := s.Slots[webID], []uint32{be2["10.244.0.5:8080"].ID, be2["10.244.1.5:8080"].ID, be2["10.244.0.9:8080"].ID}; !slices.Equal(got, want) {
		t.Errorf("slots of web %v, want %v", got, want)
	}
	if len(s.Slots) != 1 {
		t.Errorf("slots of removed services left: %v", s.Slots)
	}
	if err := dp.SetTracing(true); err != nil {
		t.Fatal(err)
	}
	if !read().Tracing {
		t.Error("tracing not on in the config map")
	}

	// Restart: the maps and attachments stay, ids are kept.
	before := read()
	if err := dp.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	dp = nil
	if mode, _ := ns.XDPMode("ext0"); mode == netns.XDPAttachedNone {
		t.Error("xdp detached when the agent stopped")
	}
	dp = open()
	for _, a := range dp.Attachments() {
		if a.Mode != "updated" {
			t.Errorf("attachment %s/%s is %q after restart, want updated in place", a.Device, a.Hook, a.Mode)
		}
	}
	if err := dp.Apply([]Service{web, ingress}); err != nil {
		t.Fatalf("apply after restart: %v", err)
	}
	after := read()
	if !slices.Equal(after.Frontends, before.Frontends) || !slices.Equal(after.Backends, before.Backends) ||
		!slices.Equal(after.Slots[webID], before.Slots[webID]) {
		t.Errorf("state changed across a restart:\nbefore %+v\nafter  %+v", before, after)
	}
	if after.Tracing {
		t.Error("tracing still on after a restart")
	}
	dns.Frontends[0].Port = 30054
	if err := dp.Apply([]Service{web, ingress, dns}); err != nil {
		t.Fatal(err)
	}
	if id := frontendsByAddr(read())["10.0.0.1:30054/UDP"].ServiceID; id <= be2["10.244.0.9:8080"].ID {
		t.Errorf("service added after restart got id %d, reusing the id space", id)
	}

	// Check: a working datapath passes; one whose program another tool
	// detached from a device does not.
	if err := dp.Check(); err != nil {
		t.Errorf("check of a working datapath: %v", err)
	}
	if err := dp.Attachments()[0].link.Detach(); err != nil {
		t.Fatalf("detach: %v", err)
	}
	if err := dp.Check(); err == nil {
		t.Error("check passed with a program detached")
	}

	// Cleanup: nothing attached, nothing pinned.
	dp.Close()
	dp = nil
	if err := Cleanup(bpffs); err != nil {
		t.Fatalf("cleanup: %v", err)
	}
	if _, err := os.Stat(bpffs); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin directory still there: %v", err)
	}
	if mode, err := ns.XDPMode("ext0"); err != nil || mode != netns.XDPAttachedNone {
		t.Errorf("xdp on ext0 after cleanup: mode %d, %v", mode, err)
	}
	if in, eg, err := ns.TCXPrograms("ext0"); err != nil || in != 0 || eg != 0 {
		t.Errorf("tcx programs on ext0 after cleanup: ingress %d egress %d, %v", in, eg, err)
	}
	if err := Cleanup(bpffs); err != nil {
		t.Errorf("second cleanup: %v", err)
	}
}

// newOpenEnv makes a namespace (named prefix + random) with a veth ext0
// (10.0.0.1/24) and a private bpffs: pins of the test are invisible to
// anything else. The returned pin directory is cleaned up and the bpffs
// unmounted in t.Cleanup, after the test's own cleanups.
func newOpenEnv(t *testing.T, prefix string) (*netns.NS, netlink.Link, string) {
	t.Helper()
	netns.RequirePrivileged(t)
	ns := netns.New(t, prefix+netns.RandomSuffix(6))
	ns.MustIP("link", "add", "ext0", "type", "veth", "peer", "name", "ext0p")
	ns.MustIP("addr", "add", "10.0.0.1/24", "dev", "ext0")
	ns.MustIP("link", "set", "ext0", "up")
	ns.MustIP("link", "set", "ext0p", "up")
	ext0, err := ns.Link("ext0")
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if err := unix.Mount("bpf", root, "bpf", 0, ""); err != nil {
		t.Fatalf("mount bpffs: %v", err)
	}
	bpffs := filepath.Join(root, "nodegress")
	t.Cleanup(func() {
		if err := Cleanup(bpffs); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if err := unix.Unmount(root, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount bpffs: %v", err)
		}
	})
	return ns, ext0, bpffs
}

func frontendsByAddr(s *Snapshot) map[string]FrontendEntry {
	m := map[string]FrontendEntry{}
	for _, f := range s.Frontends {
		m[f.Frontend.String()+"/"+f.Proto.String()] = f
	}
	return m
}

func backendsByAddr(s *Snapshot) map[string]BackendEntry {
	m := map[string]BackendEntry{}
	for _, b := range s.Backends {
		m[b.Backend.String()] = b
	}
	return m
}

// checkFrontends compares backend counts and flags of got with want, and
// service ids where want has one.
func checkFrontends(t *testing.T, got, want map[string]FrontendEntry) {
	t.Helper()
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("frontend %s missing", k)
			continue
		}
		if g.BackendCount != w.BackendCount || g.L7 != w.L7 || (w.ServiceID != 0 && g.ServiceID != w.ServiceID) {
			t.Errorf("frontend %s: %+v, want %+v", k, g, w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d frontends, want %d", len(got), len(want))
	}
}

// TestXDPModeOnVirtualDevice checks where xdp_lb goes on a veth, whose
// frames may carry partial checksums: --xdp-mode=auto leaves it to tc alone
// (and removes an XDP attachment an earlier run pinned there), a forced mode
// attaches XDP as asked; either way the device is flagged so that XDP
// rewrites only frames with complete checksums.
func TestXDPModeOnVirtualDevice(t *testing.T) {
	ns, ext0, bpffs := newOpenEnv(t, "ngmode-")

	// In this order, so that auto and off each follow a run that left an
	// XDP attachment pinned.
	for _, c := range []struct {
		mode    XDPMode
		wantXDP uint32
	}{
		{XDPNative, netns.XDPAttachedNative},
		{XDPAuto, netns.XDPAttachedNone},
		{XDPGeneric, netns.XDPAttachedGeneric},
		{XDPOff, netns.XDPAttachedNone},
		{XDPAuto, netns.XDPAttachedNone},
	} {
		t.Run(string(c.mode), func(t *testing.T) {
			var dp *Datapath
			err := ns.Do(func() error {
				var err error
				dp, err = Open(Config{
					BPFFS: bpffs, Devices: []string{"ext0"}, XDPMode: c.mode,
					SNATPortMin: 61000, SNATPortMax: 65535,
					Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
				})
				return err
			})
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			defer dp.Close()
			if mode, err := ns.XDPMode("ext0"); err != nil || mode != c.wantXDP {
				t.Errorf("xdp on ext0: mode %d (%v), want %d", mode, err, c.wantXDP)
			}
			// The positive side of "no XDP": tc carries the datapath.
			if in, eg, err := ns.TCXPrograms("ext0"); err != nil || in != 1 || eg != 1 {
				t.Errorf("tcx on ext0: %d ingress, %d egress (%v), want 1 and 1", in, eg, err)
			}
			hooks := map[string]bool{}
			for _, a := range dp.Attachments() {
				hooks[a.Hook] = true
			}
			if hooks["xdp"] != (c.wantXDP != netns.XDPAttachedNone) || !hooks["tcx-ingress"] || !hooks["tcx-egress"] {
				t.Errorf("attachments %v", dp.Attachments())
			}
			s, err := ReadPinned(bpffs)
			if err != nil {
				t.Fatal(err)
			}
			dev, ok := s.Devices[uint32(ext0.Attrs().Index)]
			if !ok || !dev.PartialChecksums || dev.SNATAddr != netip.MustParseAddr("10.0.0.1") {
				t.Errorf("device state of ext0: %+v (present %v), want 10.0.0.1 with partial checksums", dev, ok)
			}
		})
	}
}

// TestUpgradeKeepsCompatibleMaps opens the datapath over maps pinned by an
// older build whose stats map was smaller: only that map is replaced, the
// flows in conntrack (and every other map) are kept.
func TestUpgradeKeepsCompatibleMaps(t *testing.T) {
	ns, _, bpffs := newOpenEnv(t, "ngupg-")
	spec, err := loadDatapath()
	if err != nil {
		t.Fatal(err)
	}
	dir := mapsDir(bpffs)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// The older build: stats sized by its enum reason (21 reasons).
	spec.Maps["stats"].MaxEntries = 21
	flow := datapathFlowTuple{Saddr: addrToBE(netip.MustParseAddr("192.0.2.10")), Daddr: addrToBE(netip.MustParseAddr("10.0.0.1")), Sport: portToBE(40000), Dport: portToBE(30080), Proto: uint8(TCP)}
	for name, ms := range spec.Maps {
		if ms.Pinning != ebpf.PinByName {
			continue
		}
		m, err := ebpf.NewMapWithOptions(ms, ebpf.MapOptions{PinPath: dir})
		if err != nil {
			t.Fatalf("pin %s: %v", name, err)
		}
		if name == "conntrack" {
			if err := m.Update(flow, datapathCtEntry{SvcId: 7, BackendId: 9}, ebpf.UpdateAny); err != nil {
				t.Fatal(err)
			}
		}
		m.Close()
	}

	var dp *Datapath
	err = ns.Do(func() error {
		var err error
		dp, err = Open(Config{BPFFS: bpffs, Devices: []string{"ext0"}, SNATPortMin: 61000, SNATPortMax: 65535,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		return err
	})
	if err != nil {
		t.Fatalf("open over older pins: %v", err)
	}
	defer dp.Close()
	var ct datapathCtEntry
	if err := dp.objs.Conntrack.Lookup(flow, &ct); err != nil || ct.SvcId != 7 || ct.BackendId != 9 {
		t.Errorf("conntrack entry after the upgrade: %+v (%v), want the pinned one", ct, err)
	}
	if info, err := dp.objs.Stats.Info(); err != nil || info.MaxEntries <= 21 {
		t.Errorf("stats map after the upgrade: %+v (%v), want the new size", info, err)
	}
}
