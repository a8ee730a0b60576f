package loader

import (
	"errors"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// TestABI checks the Go side of the datapath's ABI against the object's
// BTF: every reason, stage and verdict has a Go name that follows its C
// name, and every reason the verdict REASON_TABLE gives it. It fails when C
// grows a value the Go tables do not know, or the two disagree.
func TestABI(t *testing.T) {
	spec, err := loadDatapath()
	if err != nil {
		t.Fatal(err)
	}
	enum := func(name string) *btf.Enum {
		t.Helper()
		var e *btf.Enum
		if err := spec.Types.TypeByName(name, &e); err != nil {
			t.Fatalf("enum %s not in the object's BTF: %v", name, err)
		}
		return e
	}

	var verdicts []uint8
	if v, ok := spec.Variables["reason_verdicts"]; !ok {
		t.Fatal("reason_verdicts not in the object")
	} else {
		verdicts = make([]uint8, v.Size())
		if err := v.Get(verdicts); err != nil {
			t.Fatal(err)
		}
	}
	var max uint64
	for _, v := range enum("reason").Values {
		if v.Name == "REASON_MAX" {
			max = v.Value
			continue
		}
		r := Reason(v.Value)
		want := strings.ToLower(strings.TrimPrefix(v.Name, "REASON_"))
		if r.String() != want {
			t.Errorf("reason %d (%s): Go name %q, want %q", v.Value, v.Name, r, want)
		}
		if int(v.Value) >= len(verdicts) || int(v.Value) >= len(reasonTable) {
			t.Errorf("reason %s has no verdict in reason_verdicts or the Go table", v.Name)
			continue
		}
		if got := Verdict(verdicts[v.Value]); reasonTable[r].verdict != got {
			t.Errorf("reason %s: Go verdict %s, REASON_TABLE says %s", v.Name, reasonTable[r].verdict, got)
		}
	}
	if max != uint64(reasonMax) || len(reasonTable) != int(reasonMax) || len(Reasons()) != int(reasonMax) {
		t.Errorf("REASON_MAX %d, Go reasonMax %d, table %d", max, reasonMax, len(reasonTable))
	}

	named := map[string]map[uint64]string{
		"stage":   {uint64(StageXDP): "xdp", uint64(StageTCIngress): "tc_ingress", uint64(StageTCEgress): "tc_egress", uint64(StageSock): "sock", uint64(StageKernel): "kernel", uint64(StageSkLookup): "sk_lookup"},
		"verdict": {uint64(VerdictPass): "pass", uint64(VerdictTX): "tx", uint64(VerdictRedirect): "redirect", uint64(VerdictDrop): "drop"},
	}
	str := map[string]func(uint64) string{
		"stage":   func(v uint64) string { return strings.ReplaceAll(Stage(v).String(), "-", "_") },
		"verdict": func(v uint64) string { return strings.ToLower(Verdict(v).String()) },
	}
	for name, want := range named {
		vals := enum(name).Values
		if len(vals) != len(want) {
			t.Errorf("enum %s has %d values, Go knows %d", name, len(vals), len(want))
		}
		for _, v := range vals {
			cName := strings.ToLower(v.Name[strings.IndexByte(v.Name, '_')+1:])
			if want[v.Value] != cName || str[name](v.Value) != cName {
				t.Errorf("%s %s = %d: Go has %q (String %q)", name, v.Name, v.Value, want[v.Value], str[name](v.Value))
			}
		}
	}
}

// TestABIMapsPinned makes sure every map is pinned by name: an unpinned map
// would be lost, with its state, on every agent restart.
func TestABIMapsPinned(t *testing.T) {
	spec, err := loadDatapath()
	if err != nil {
		t.Fatal(err)
	}
	for name, m := range spec.Maps {
		if strings.HasPrefix(name, ".") {
			continue // global variables' sections
		}
		if m.Pinning != ebpf.PinByName {
			t.Errorf("map %s is not pinned by name", name)
		}
	}
	if _, ok := spec.Maps["stats"]; !ok {
		t.Error(errors.New("no stats map"))
	}
}
