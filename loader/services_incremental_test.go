package loader

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nodegress/nodegress/tests/netns"
)

// openServiceTestDatapath opens a datapath on a veth inside a fresh
// namespace, with a private bpffs.
func openServiceTestDatapath(t testing.TB) (*Datapath, string, *netns.NS) {
	netns.RequirePrivileged(t)
	ns := netns.New(t, "ngincr-"+netns.RandomSuffix(5))
	ns.MustIP("link", "add", "ext0", "type", "veth", "peer", "name", "ext1")
	ns.MustIP("addr", "add", "10.200.0.1/24", "dev", "ext0")
	ns.MustIP("link", "set", "ext0", "up")
	ns.MustIP("link", "set", "ext1", "up")
	bpffs := filepath.Join(t.TempDir(), "bpffs")
	var dp *Datapath
	err := ns.Do(func() error {
		var err error
		dp, err = Open(Config{BPFFS: bpffs, Devices: []string{"ext0"}, XDPMode: XDPGeneric, SNATPortMin: 61000, SNATPortMax: 65535,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dp.Close()
		if err := ns.Do(func() error { return Cleanup(bpffs) }); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		_ = unix.Unmount(bpffs, unix.MNT_DETACH)
	})
	return dp, bpffs, ns
}

// scaleServices is n services with one frontend and perSvc backends each;
// gen shifts the backends of service changed (-1: none).
func scaleServices(n, perSvc, changed, gen int) []Service {
	out := make([]Service, 0, n)
	for i := range n {
		s := Service{
			Name:      fmt.Sprintf("scale/svc-%05d:http/TCP", i),
			Proto:     TCP,
			Frontends: []Frontend{{Addr: netip.AddrFrom4([4]byte{198, 18, byte(i / 250), byte(i%250 + 1)}), Port: 80}},
		}
		for j := range perSvc {
			k := i*perSvc + j
			if i == changed {
				k += gen
			}
			s.Backends = append(s.Backends, Backend{Addr: netip.AddrFrom4([4]byte{10, byte(64 + k/65536), byte(k / 256), byte(k)}), Port: 8080})
		}
		out = append(out, s)
	}
	return out
}

// readMaps reads the three service maps, real or fake, as the mirror
// keeps them.
func readMaps(t testing.TB, d *Datapath) programmedState {
	t.Helper()
	got, err := readServiceMaps(d.lb)
	if err != nil {
		t.Fatal(err)
	}
	st := newProgrammedState()
	st.frontends, st.slots, st.backends = got.frontends, got.slots, got.backends
	st.members, st.ranges = got.members, got.ranges
	return st
}

// serviceDatapaths runs a bookkeeping test on the in-memory maps and, with
// privileges, on real BPF maps too: the two must behave alike.
func serviceDatapaths(t *testing.T, test func(t *testing.T, open func(t testing.TB) *Datapath)) {
	t.Run("fake", func(t *testing.T) {
		test(t, func(testing.TB) *Datapath { d, _ := newFakeDatapath(); return d })
	})
	t.Run("bpf", func(t *testing.T) {
		test(t, func(t testing.TB) *Datapath { d, _, _ := openServiceTestDatapath(t); return d })
	})
}

// checkMirror fails unless the maps hold exactly what the bookkeeping says
// they do, and nothing is left to write.
func checkMirror(t *testing.T, d *Datapath) {
	t.Helper()
	got := readMaps(t, d)
	if !maps.Equal(got.frontends, d.state.frontends) || !maps.Equal(got.slots, d.state.slots) || !maps.Equal(got.backends, d.state.backends) ||
		!maps.Equal(got.members, d.state.members) || !maps.Equal(got.ranges, d.state.ranges) {
		t.Fatalf("maps differ from the mirror: %d/%d/%d entries in maps, %d/%d/%d mirrored",
			len(got.frontends), len(got.slots), len(got.backends), len(d.state.frontends), len(d.state.slots), len(d.state.backends))
	}
	if n := len(d.state.dirtyFE) + len(d.state.dirtySlot) + len(d.state.dirtyBE) + len(d.state.dirtyMem) + len(d.state.dirtyRng); n != 0 {
		t.Fatalf("%d entries still dirty", n)
	}
}

// TestUpdateTouchesOnlyTheChange programs 10,000 services, changes one
// backend of one of them through Update and checks that only that
// service's entries were written, every other entry is as it was, and a
// later Apply of the same full state has nothing left to write.
func TestUpdateTouchesOnlyTheChange(t *testing.T) {
	serviceDatapaths(t, testUpdateTouchesOnlyTheChange)
}

func testUpdateTouchesOnlyTheChange(t *testing.T, open func(testing.TB) *Datapath) {
	d := open(t)
	const n, per = 10000, 10
	all := scaleServices(n, per, -1, 0)
	if err := d.Apply(all); err != nil {
		t.Fatal(err)
	}
	// A frontend per service; a backend, a slot and a membership each.
	if got, want := d.state.ops, n+3*n*per; got != want {
		t.Fatalf("initial apply: %d map operations, want %d", got, want)
	}
	before := readMaps(t, d)

	// Service 1234 swaps its first backend for a new one.
	const victim = 1234
	changed := slices.Clone(all[victim].Backends)
	changed[0] = Backend{Addr: netip.MustParseAddr("10.250.0.1"), Port: 8080}
	svc := all[victim]
	svc.Backends = changed
	ops := d.state.ops
	if err := d.Update([]Service{svc}, nil); err != nil {
		t.Fatal(err)
	}
	// One backend written, one slot rewritten, one membership added and
	// one deleted, one backend deleted.
	if got := d.state.ops - ops; got != 5 {
		t.Errorf("update of one backend: %d map operations, want 5", got)
	}
	checkMirror(t, d)
	after := readMaps(t, d)
	victimID := d.ids.services[svc.Name]
	for k, v := range before.frontends {
		if after.frontends[k] != v {
			t.Errorf("frontend %+v changed: %+v -> %+v", k, v, after.frontends[k])
		}
	}
	diffSlots := 0
	for k, v := range before.slots {
		if after.slots[k] != v {
			if k.SvcId != victimID {
				t.Errorf("slot %+v of another service changed", k)
			}
			diffSlots++
		}
	}
	if diffSlots != 1 {
		t.Errorf("%d slots changed, want 1", diffSlots)
	}
	if len(after.backends) != len(before.backends) {
		t.Errorf("%d backends, want %d", len(after.backends), len(before.backends))
	}

	// The same state through Apply writes nothing more.
	all[victim] = svc
	ops = d.state.ops
	if err := d.Apply(all); err != nil {
		t.Fatal(err)
	}
	if got := d.state.ops - ops; got != 0 {
		t.Errorf("apply after update: %d map operations, want 0", got)
	}

	// Removing one service deletes its frontend, slots, memberships and
	// backends only.
	ops = d.state.ops
	if err := d.Update(nil, []string{all[7].Name}); err != nil {
		t.Fatal(err)
	}
	if got, want := d.state.ops-ops, 1+3*per; got != want {
		t.Errorf("remove: %d map operations, want %d", got, want)
	}
	checkMirror(t, d)
}

// TestUpdateMatchesApply drives the same sequence of changes through
// Update and through Apply of the resulting full state, on two datapaths,
// and compares what they program: ids may differ, the forwarding must not.
func TestUpdateMatchesApply(t *testing.T) {
	serviceDatapaths(t, testUpdateMatchesApply)
}

func testUpdateMatchesApply(t *testing.T, open func(testing.TB) *Datapath) {
	inc, ref := open(t), open(t)
	ap := netip.MustParseAddr
	be := func(s string, flags ...string) Backend {
		b := Backend{Addr: ap(s), Port: 8080}
		for _, f := range flags {
			b.Local = b.Local || f == "local"
			b.Terminating = b.Terminating || f == "term"
		}
		return b
	}
	fe := func(s string, port uint16) Frontend { return Frontend{Addr: ap(s), Port: port} }
	type step struct {
		name    string
		changed []Service
		removed []string
	}
	steps := []step{
		{name: "initial", changed: []Service{
			{Name: "a", Proto: TCP, Frontends: []Frontend{fe("198.51.100.1", 80)}, Backends: []Backend{be("10.1.0.1"), be("10.1.0.2", "local")}},
			{Name: "b", Proto: TCP, Frontends: []Frontend{fe("198.51.100.2", 80)}, Backends: []Backend{be("10.1.0.2", "local"), be("10.1.0.3", "term")}},
			{Name: "u", Proto: UDP, Frontends: []Frontend{fe("198.51.100.1", 53)}, Backends: []Backend{be("10.1.0.9")}},
		}},
		{name: "shared backend terminating in one service only", changed: []Service{
			{Name: "a", Proto: TCP, Frontends: []Frontend{fe("198.51.100.1", 80)}, Backends: []Backend{be("10.1.0.1"), be("10.1.0.2", "local", "term")}},
		}},
		{name: "frontend moves from b to c", removed: []string{"b"}, changed: []Service{
			{Name: "c", Proto: TCP, Frontends: []Frontend{fe("198.51.100.2", 80)}, Backends: []Backend{be("10.1.0.4")}},
		}},
		{name: "backends shrink and grow", changed: []Service{
			{Name: "a", Proto: TCP, Frontends: []Frontend{fe("198.51.100.1", 80)}, Backends: []Backend{be("10.1.0.5")}},
			{Name: "c", Proto: TCP, Frontends: []Frontend{fe("198.51.100.2", 80), fe("198.51.100.3", 80)}, Backends: []Backend{be("10.1.0.4"), be("10.1.0.6"), be("10.1.0.7")}},
		}},
		{name: "invalid service removes what it had", changed: []Service{
			{Name: "u", Proto: UDP, Frontends: []Frontend{fe("198.51.100.1", 0)}},
		}},
		{name: "everything goes", removed: []string{"a", "c", "u", "never-existed"}},
	}
	current := map[string]Service{}
	for _, s := range steps {
		for _, name := range s.removed {
			delete(current, name)
		}
		for _, svc := range s.changed {
			current[svc.Name] = svc
		}
		errInc := inc.Update(s.changed, s.removed)
		errRef := ref.Apply(slices.Collect(maps.Values(current)))
		if (errInc == nil) != (errRef == nil) {
			t.Fatalf("%s: update error %v, apply error %v", s.name, errInc, errRef)
		}
		checkMirror(t, inc)
		checkMirror(t, ref)
		if got, want := forwarding(inc), forwarding(ref); !slices.Equal(got, want) {
			t.Fatalf("%s: update programs\n%s\napply programs\n%s", s.name, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	if n := len(inc.state.frontends) + len(inc.state.slots) + len(inc.state.backends); n != 0 {
		t.Errorf("%d entries left after removing everything", n)
	}
	if len(inc.ids.services) != 0 || len(inc.ids.backends) != 0 {
		t.Errorf("ids left: %v %v", inc.ids.services, inc.ids.backends)
	}
}

// forwarding renders the programmed maps without ids: frontend -> service
// name, backend count, flags, and its slots' backends with their flags.
func forwarding(d *Datapath) []string {
	var out []string
	for k, v := range d.state.frontends {
		line := fmt.Sprintf("%v:%d/%d -> %s n=%d f=%d:", addrFromBE(k.Addr), portFromBE(k.Port), k.Proto, d.state.byID[v.SvcId].name, v.BackendCount, v.Flags)
		for i := range uint32(v.BackendCount) {
			bid := d.state.slots[datapathBackendSlotKey{SvcId: v.SvcId, Slot: i + 1}]
			b := d.state.backends[bid]
			line += fmt.Sprintf(" %v:%d/%d", addrFromBE(b.Addr), portFromBE(b.Port), b.Flags)
		}
		out = append(out, line)
	}
	for _, b := range d.state.backends {
		out = append(out, fmt.Sprintf("backend %v:%d/%d", addrFromBE(b.Addr), portFromBE(b.Port), b.Flags))
	}
	slices.Sort(out)
	return out
}

// TestUpdateSteersL7 checks that an L7 service added by Update is steered
// to its listener and gets its local route, and that removing it undoes
// both.
func TestUpdateSteersL7(t *testing.T) {
	d, _, ns := openServiceTestDatapath(t)
	var ln *net.TCPListener
	if err := ns.Do(func() error {
		var err error
		ln, err = ListenProxy(context.Background(), "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := d.RegisterProxyListener("http", ln); err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(nil); err != nil {
		t.Fatal(err)
	}
	lb := netip.MustParseAddr("10.200.9.9") // on no device
	l7 := Service{Name: "l7/http", Proto: TCP, L7: true, ProxyListener: "http", Frontends: []Frontend{{Addr: lb, Port: 80}}}
	if err := d.Update([]Service{l7}, nil); err != nil {
		t.Fatal(err)
	}
	id := d.ids.services[l7.Name]
	var fd uint64
	if err := d.objs.ProxySockets.Lookup(id, &fd); err != nil {
		t.Errorf("proxy socket of L7 service %d: %v", id, err)
	}
	hasRoute := func() bool {
		t.Helper()
		var found bool
		if err := ns.Do(func() error {
			routes, err := ourLocalRoutes(d.netlink)
			for _, r := range routes {
				if a, ok := netip.AddrFromSlice(r.Dst.IP); ok && a.Unmap() == lb {
					found = true
				}
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return found
	}
	if !hasRoute() {
		t.Errorf("no local route for %s after Update", lb)
	}
	if err := d.Update(nil, []string{l7.Name}); err != nil {
		t.Fatal(err)
	}
	if err := d.objs.ProxySockets.Lookup(id, &fd); err == nil {
		t.Errorf("L7 service %d still steered after removal", id)
	}
	deadline := time.Now().Add(2 * time.Second)
	for hasRoute() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if hasRoute() {
		t.Errorf("local route for %s left after removal", lb)
	}
}

// BenchmarkUpdateOneService measures programming one changed backend of
// one service among 10,000 (100,000 backends).
func BenchmarkUpdateOneService(b *testing.B) {
	d, _, _ := openServiceTestDatapath(b)
	all := scaleServices(10000, 10, -1, 0)
	if err := d.Apply(all); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		svc := scaleServices(1, 10, 0, 100000+i%2)[0]
		svc.Name = all[500].Name
		svc.Frontends = all[500].Frontends
		if err := d.Update([]Service{svc}, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkApplyOneServiceChanged is the same change through Apply of the
// full state, the way every sync worked before Update.
func BenchmarkApplyOneServiceChanged(b *testing.B) {
	d, _, _ := openServiceTestDatapath(b)
	all := scaleServices(10000, 10, -1, 0)
	if err := d.Apply(all); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		svc := scaleServices(1, 10, 0, 100000+i%2)[0]
		svc.Name = all[500].Name
		svc.Frontends = all[500].Frontends
		all[500] = svc
		if err := d.Apply(all); err != nil {
			b.Fatal(err)
		}
	}
}

// TestContestedFrontendRefused checks the precondition that a frontend
// belongs to one service: a service claiming a held frontend is refused
// whole (none of its frontends programmed, whatever it had removed), and
// gets the frontend once the holder is gone.
func TestContestedFrontendRefused(t *testing.T) {
	d, _ := newFakeDatapath()
	fe := Frontend{Addr: netip.MustParseAddr("198.51.100.1"), Port: 80}
	other := Frontend{Addr: netip.MustParseAddr("198.51.100.2"), Port: 80}
	svc := func(name, backend string, fes ...Frontend) Service {
		return Service{Name: name, Proto: TCP, Frontends: fes, Backends: []Backend{{Addr: netip.MustParseAddr(backend), Port: 8080}}}
	}
	owner := func(f Frontend) string {
		t.Helper()
		v, ok := d.state.frontends[frontendKeyOf(f, TCP)]
		if !ok {
			return ""
		}
		return d.state.byID[v.SvcId].name
	}
	b := svc("b", "10.1.0.2", fe)
	if err := d.Update([]Service{b, svc("a", "10.1.0.1", other)}, nil); err != nil {
		t.Fatal(err)
	}
	// a now also claims b's frontend: refused whole, its own frontend goes.
	err := d.Update([]Service{svc("a", "10.1.0.1", other, fe)}, nil)
	if !errors.Is(err, ErrFrontendConflict) || owner(fe) != "b" || owner(other) != "" {
		t.Fatalf("update of a contender: err %v, owners %q %q; want ErrFrontendConflict, b and none", err, owner(fe), owner(other))
	}
	checkMirror(t, d)
	// Apply leaves the holder its frontend too.
	err = d.Apply([]Service{b, svc("a", "10.1.0.1", fe)})
	if !errors.Is(err, ErrFrontendConflict) || owner(fe) != "b" {
		t.Fatalf("apply: err %v, owner %q; want ErrFrontendConflict and b", err, owner(fe))
	}
	// Two new services of one change: the first by name is programmed.
	fresh := Frontend{Addr: netip.MustParseAddr("198.51.100.3"), Port: 80}
	err = d.Update([]Service{svc("y", "10.1.0.5", fresh), svc("x", "10.1.0.4", fresh)}, nil)
	if !errors.Is(err, ErrFrontendConflict) || owner(fresh) != "x" {
		t.Fatalf("two new contenders: err %v, owner %q; want ErrFrontendConflict and x", err, owner(fresh))
	}
	checkMirror(t, d)
	// A service listing one frontend twice is invalid.
	if err := d.Update([]Service{svc("c", "10.1.0.3", other, other)}, nil); err == nil || owner(other) != "" {
		t.Fatalf("duplicate frontend: err %v, owner %q", err, owner(other))
	}
	// The holder goes, the claimant's next Update gets the frontend.
	if err := d.Update([]Service{svc("a", "10.1.0.1", other, fe)}, []string{"b", "c"}); err != nil || owner(fe) != "a" || owner(other) != "a" {
		t.Fatalf("after the holder left: err %v, owners %q %q; want a", err, owner(fe), owner(other))
	}
	checkMirror(t, d)
}

// TestFailedWritesRetried fills a map to its capacity mid-Apply: what was
// not written stays dirty, and the next Apply writes exactly that.
func TestFailedWritesRetried(t *testing.T) {
	d, f := newFakeDatapath()
	all := scaleServices(20, 3, -1, 0)
	f.backends.capacity = 30
	if err := d.Apply(all); !errors.Is(err, errFakeMapFull) {
		t.Fatalf("apply into a full map: %v", err)
	}
	// Frontends come last: none may point at a missing backend.
	if len(f.frontends.m) != 0 {
		t.Fatalf("%d frontends written before their backends", len(f.frontends.m))
	}
	f.backends.capacity = 0
	ops := d.state.ops
	if err := d.Apply(all); err != nil {
		t.Fatal(err)
	}
	if got, want := d.state.ops-ops, 30+60+60+20; got != want {
		t.Errorf("retry: %d map operations, want %d (what failed)", got, want)
	}
	checkMirror(t, d)
}

// TestRecoverPinnedState starts on maps an earlier run filled: the same
// services keep their ids and cost no write; entries nobody wants go.
func TestRecoverPinnedState(t *testing.T) {
	prev, f := newFakeDatapath()
	all := scaleServices(10, 2, -1, 0)
	if err := prev.Apply(all); err != nil {
		t.Fatal(err)
	}
	ids := maps.Clone(prev.ids.services)
	// An entry of a service the next run no longer has.
	stray := Service{Name: "gone/svc:http/TCP", Proto: TCP, Frontends: []Frontend{{Addr: netip.MustParseAddr("203.0.113.9"), Port: 80}},
		Backends: []Backend{{Addr: netip.MustParseAddr("10.9.9.9"), Port: 80}}}
	if err := prev.Update([]Service{stray}, nil); err != nil {
		t.Fatal(err)
	}

	d, _ := fakeDatapathOn(f)
	if err := d.Apply(all); err != nil {
		t.Fatal(err)
	}
	if got, want := d.state.ops, 4; got != want {
		t.Errorf("apply after restart: %d map operations, want %d (the stray service's entries)", got, want)
	}
	if !maps.Equal(d.ids.services, ids) {
		t.Errorf("service ids after restart %v, want %v", d.ids.services, ids)
	}
	checkMirror(t, d)
}
