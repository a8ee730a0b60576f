package bench

// The L4 suite's pure helpers: ratios for the table and the netstat
// parser. They carry no build tag, so that their tables run in every
// `go test ./...`, while the suite itself needs -tags bench.

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
