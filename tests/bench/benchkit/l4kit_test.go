package benchkit

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseCPUStats(t *testing.T) {
	stat := "cpu  10 0 10 100 0 0 0 0 0 0\ncpu0 1 2 3 40 5 6 7 8 0 0\ncpu1 10 20 30 400 50 60 70 80 0 0\nintr 5\n"
	for _, tc := range []struct {
		name string
		cpus []int
		want CPUStat
	}{
		{"one", []int{1}, CPUStat{Busy: 270, Softirq: 70, Total: 720}},
		{"both", []int{0, 1}, CPUStat{Busy: 297, Softirq: 77, Total: 792}},
		{"all by default", nil, CPUStat{Busy: 297, Softirq: 77, Total: 792}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseCPUStats(strings.NewReader(stat), tc.cpus)
			if err != nil || got != tc.want {
				t.Errorf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestCheckAddrAllowed(t *testing.T) {
	AllowTargets(netip.MustParsePrefix("10.100.0.0/24"))
	for _, tc := range []struct {
		host string
		ok   bool
	}{
		{"10.100.0.1:30080", true},
		{"10.100.0.1", true},
		{"127.0.0.1:80", true},
		{"10.100.1.1:80", false},
		{"example.com:80", false},
	} {
		if err := CheckAddr(tc.host); (err == nil) != tc.ok {
			t.Errorf("CheckAddr(%s) = %v, want ok %v", tc.host, err, tc.ok)
		}
	}
}

func TestInNetns(t *testing.T) {
	if got := strings.Join(InNetns("ns1", "wrk", "-c1"), " "); got != "ip netns exec ns1 wrk -c1" {
		t.Errorf("got %q", got)
	}
	if got := strings.Join(InNetns("", "wrk"), " "); got != "wrk" {
		t.Errorf("got %q", got)
	}
}

func TestBarChartSVG(t *testing.T) {
	svg := BarChart{Title: "t <1>", Series: []string{"a", "b"}, Groups: []BarGroup{
		{Label: "rate", Bars: []Bar{{Series: "a", Ratio: 1.2, Text: "12k"}, {Series: "b", Ratio: 0.5, Text: "5k"}}},
	}}.SVG()
	for _, want := range []string{"<svg ", "t &lt;1&gt;", "12k", "1/2×", "</svg>"} {
		if !strings.Contains(svg, want) {
			t.Errorf("svg lacks %q", want)
		}
	}
}
