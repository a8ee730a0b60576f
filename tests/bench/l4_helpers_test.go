package bench

// The L4 suite's pure helpers: ratios for the table, the netstat
// parser, and readers of kube-proxy's rules. They carry no build tag, so
// that their tables run in every `go test ./...`, while the suite itself
// needs -tags bench.

import (
	"math"
	"strconv"
	"strings"
	"testing"
)

// l4Metric is one row of the L4 table.
type l4Metric struct {
	key, title  string
	lowerBetter bool
	format      func(float64) string
	// also names a metric shown in parentheses (a p99 beside a p50),
	// formatted with alsoFormat (default: format).
	also, alsoLabel string
	alsoFormat      func(float64) string
	// relative metrics are themselves ratios within a dataplane (a
	// feature's rate to its baseline's): no ratio to kube-proxy
	// iptables, no verdict and no bar in the chart, which would compare
	// ratios of ratios.
	relative bool
}

func (m l4Metric) formatAlso(v float64) string {
	if m.alsoFormat != nil {
		return m.alsoFormat(v)
	}
	return m.format(v)
}

// better is how many times better v is than base (above 1: better); a
// count of zero against a positive one is infinitely better.
func better(m l4Metric, v, base float64) float64 {
	if m.lowerBetter {
		v, base = base, v
	}
	if base == 0 {
		if v == 0 {
			return 1
		}
		return math.Inf(1)
	}
	return v / base
}

// fmtRatio formats a ratio for the table.
func fmtRatio(f float64) string {
	if math.IsInf(f, 1) {
		return "∞"
	}
	return strconv.FormatFloat(f, 'f', 2, 64) + "×"
}

// netstatValue finds one counter in /proc/net/netstat's text: each group
// is a line of names followed by a line of values.
func netstatValue(text, group, name string) int64 {
	lines := strings.Split(text, "\n")
	for i := 0; i+1 < len(lines); i++ {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != group+":" || len(values) != len(names) || values[0] != group+":" {
			continue
		}
		for j, n := range names {
			if n == name {
				v, _ := strconv.ParseInt(values[j], 10, 64)
				return v
			}
		}
	}
	return 0
}

// nftAffinityHas tells whether an affinity set of kube-proxy's nftables
// table (`nft list table ip kube-proxy`) holds addr: kube-proxy keeps one
// set per endpoint, named affinity-..., of the clients sent there.
func nftAffinityHas(ruleset, addr string) bool {
	in := false
	for line := range strings.Lines(ruleset) {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "set "):
			in = strings.Contains(line, " affinity-")
		case line == "}":
			in = false
		case in:
			// Elements may follow each other on one line or
			// continue on the next: "{ a timeout 3h expires 2h, b ... }".
			for _, f := range strings.FieldsFunc(line, func(r rune) bool { return r == ' ' || r == ',' || r == '{' || r == '}' || r == '\t' }) {
				if f == addr {
					return true
				}
			}
		}
	}
	return false
}

// chainPosition finds the rule commented comment in chain of an
// `iptables-save` text: its 1-based position (0: absent) and the number of
// rules in the chain.
func chainPosition(save, chain, comment string) (pos, rules int) {
	prefix, mark := "-A "+chain+" ", `--comment "`+comment+`" `
	for line := range strings.Lines(save) {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		rules++
		if pos == 0 && strings.Contains(line, mark) {
			pos = rules
		}
	}
	return pos, rules
}

func TestChainPosition(t *testing.T) {
	save := `*nat
:KUBE-NODEPORTS - [0:0]
-A KUBE-SERVICES -d 10.100.0.1/32 -m comment --comment "kubernetes service nodeports" -j KUBE-NODEPORTS
-A KUBE-NODEPORTS -p tcp -m comment --comment "bench/x-00001" -m tcp --dport 20001 -j KUBE-EXT-A
-A KUBE-NODEPORTS -p tcp -m comment --comment "bench/ka-remote" -m tcp --dport 21004 -j KUBE-EXT-B
-A KUBE-EXT-B -m comment --comment "bench/aff-remote" -j KUBE-SVC-C
-A KUBE-NODEPORTS -p tcp -m comment --comment "bench/aff-remote" -m tcp --dport 26768 -j KUBE-EXT-C
-A KUBE-NODEPORTS -p tcp -m comment --comment "bench/ka-remote-2" -m tcp --dport 26769 -j KUBE-EXT-D
COMMIT
`
	tests := []struct {
		comment   string
		pos, size int
	}{
		{"bench/ka-remote", 2, 4},
		{"bench/aff-remote", 3, 4},
		{"bench/x-00001", 1, 4},
		{"bench/absent", 0, 4},
		{"bench/ka", 0, 4},
	}
	for _, tt := range tests {
		if pos, size := chainPosition(save, "KUBE-NODEPORTS", tt.comment); pos != tt.pos || size != tt.size {
			t.Errorf("chainPosition(%q) = %d of %d, want %d of %d", tt.comment, pos, size, tt.pos, tt.size)
		}
	}
	if pos, size := chainPosition("", "KUBE-NODEPORTS", "bench/ka-remote"); pos != 0 || size != 0 {
		t.Errorf("empty text: %d of %d", pos, size)
	}
}

func TestNftAffinityHas(t *testing.T) {
	set := func(name, elements string) string {
		return "\tset " + name + " {\n\t\ttype ipv4_addr\n\t\tflags dynamic,timeout\n\t\ttimeout 3h\n" + elements + "\t}\n"
	}
	table := func(sets ...string) string {
		return "table ip kube-proxy {\n\tcomment \"rules for kube-proxy\"\n" + strings.Join(sets, "") +
			"\tchain service-X-bench/aff-remote/tcp/ {\n\t\tip saddr @affinity-A-bench/aff-remote/tcp/__10.244.2.10/80 goto endpoint-A\n\t}\n}\n"
	}
	const client = "10.100.0.10"
	tests := []struct {
		name    string
		ruleset string
		want    bool
	}{
		{"client in an affinity set", table(set("affinity-A-bench/aff-remote/tcp/__10.244.2.10/80",
			"\t\telements = { 10.100.0.10 timeout 3h expires 2h59m58s }\n")), true},
		{"client second on a continued line", table(set("affinity-A-bench/aff-remote/tcp/__10.244.2.10/80",
			"\t\telements = { 10.100.0.11 timeout 3h expires 2h,\n\t\t\t     10.100.0.10 timeout 3h expires 2h }\n")), true},
		{"empty affinity sets", table(set("affinity-A-bench/aff-remote/tcp/__10.244.2.10/80", "")), false},
		{"another client", table(set("affinity-A-bench/aff-remote/tcp/__10.244.2.10/80",
			"\t\telements = { 10.100.0.100 timeout 3h expires 2h }\n")), false},
		{"client in another set", table(set("cluster-ips", "\t\telements = { 10.100.0.10 }\n")), false},
		{"only in a rule", table(), false},
		{"empty", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := nftAffinityHas(tt.ruleset, client); got != tt.want {
				t.Errorf("nftAffinityHas = %t, want %t in\n%s", got, tt.want, tt.ruleset)
			}
		})
	}
}

func TestNetstatValue(t *testing.T) {
	text := "TcpExt: SyncookiesSent TCPSynRetrans TWRecycled\nTcpExt: 3 42 7\n" +
		"IpExt: InNoRoutes TCPSynRetrans\nIpExt: 1 99\n"
	tests := []struct {
		name       string
		text       string
		group, key string
		want       int64
	}{
		{"counter in its group", text, "TcpExt", "TCPSynRetrans", 42},
		{"same name in another group", text, "IpExt", "TCPSynRetrans", 99},
		{"first column", text, "TcpExt", "SyncookiesSent", 3},
		{"missing counter", text, "TcpExt", "Nope", 0},
		{"missing group", text, "MPTcpExt", "TCPSynRetrans", 0},
		{"values line cut short", "TcpExt: A TCPSynRetrans\nTcpExt: 1\n", "TcpExt", "TCPSynRetrans", 0},
		{"empty", "", "TcpExt", "TCPSynRetrans", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := netstatValue(tt.text, tt.group, tt.key); got != tt.want {
				t.Errorf("netstatValue(%q, %q) = %d, want %d", tt.group, tt.key, got, tt.want)
			}
		})
	}
}

func TestBetter(t *testing.T) {
	higher, lower := l4Metric{}, l4Metric{lowerBetter: true}
	tests := []struct {
		name    string
		m       l4Metric
		v, base float64
		want    string
	}{
		{"higher rate is better", higher, 150, 100, "1.50×"},
		{"lower rate is worse", higher, 50, 100, "0.50×"},
		{"lower latency is better", lower, 1, 2, "2.00×"},
		{"higher latency is worse", lower, 4, 2, "0.50×"},
		{"zero count against a positive one", lower, 0, 3, "∞"},
		{"zero against zero", lower, 0, 0, "1.00×"},
		{"positive count against zero", lower, 3, 0, "0.00×"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fmtRatio(better(tt.m, tt.v, tt.base)); got != tt.want {
				t.Errorf("better(%v, %v) = %s, want %s", tt.v, tt.base, got, tt.want)
			}
		})
	}
}
