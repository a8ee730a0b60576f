package bench

import "testing"

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
