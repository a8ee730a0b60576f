package trace

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestAppendText(t *testing.T) {
	orig := Tuple{Proto: "TCP", Src: ap("192.0.2.10:40000"), Dst: ap("10.0.0.1:30080")}
	tests := []struct {
		name string
		rec  Record
		want string
	}{
		{
			name: "forwarded to a remote backend",
			rec: Record{
				Time: testTime, Device: "eth0", Stage: "xdp", Verdict: "TX", Reason: "fwd_remote",
				Service: "default/web:http/TCP", ServiceID: 1, Backend: "10.1.0.7:8080", BackendID: 7,
				Orig:   orig,
				Xlated: &Tuple{Proto: "TCP", Src: ap("10.0.0.1:61000"), Dst: ap("10.1.0.7:8080")},
			},
			want: "10:31:07.123456 eth0     xdp        TX       fwd_remote          TCP 192.0.2.10:40000 > 10.0.0.1:30080 -> 10.0.0.1:61000 > 10.1.0.7:8080 svc=default/web:http/TCP backend=10.1.0.7:8080\n",
		},
		{
			name: "passed without translation",
			rec: Record{
				Time: testTime, Device: "eth0", Stage: "xdp", Verdict: "PASS", Reason: "pass_no_frontend",
				Orig: orig,
			},
			want: "10:31:07.123456 eth0     xdp        PASS     pass_no_frontend    TCP 192.0.2.10:40000 > 10.0.0.1:30080\n",
		},
		{
			name: "translated tuple equal to the original is not repeated",
			rec: Record{
				Time: testTime, Device: "eth0", Stage: "tc-ingress", Verdict: "PASS", Reason: "pass_l7",
				Service: "default/web:https/TCP", Orig: orig, Xlated: &orig,
			},
			want: "10:31:07.123456 eth0     tc-ingress PASS     pass_l7             TCP 192.0.2.10:40000 > 10.0.0.1:30080 svc=default/web:https/TCP\n",
		},
		{
			name: "drop with IDs the agent has no name for",
			rec: Record{
				Time: testTime, Device: "if7", Stage: "xdp", Verdict: "DROP", Reason: "drop_snat_exhausted",
				ServiceID: 12, BackendID: 40, Orig: Tuple{Proto: "UDP", Src: ap("192.0.2.10:5353"), Dst: ap("10.0.0.1:53")},
			},
			want: "10:31:07.123456 if7      xdp        DROP     drop_snat_exhausted UDP 192.0.2.10:5353 > 10.0.0.1:53 svc=#12 backend=#40\n",
		},
		{
			name: "long device name and reply direction",
			rec: Record{
				Time: testTime, Device: "enp0s31f6np0", Stage: "tc-egress", Verdict: "PASS", Reason: "reply_local",
				Service: "default/web:http/TCP",
				Orig:    Tuple{Proto: "TCP", Src: ap("10.1.0.7:8080"), Dst: ap("192.0.2.10:40000")},
				Xlated:  &Tuple{Proto: "TCP", Src: ap("10.0.0.1:30080"), Dst: ap("192.0.2.10:40000")},
			},
			want: "10:31:07.123456 enp0s31f6np0 tc-egress  PASS     reply_local         TCP 10.1.0.7:8080 > 192.0.2.10:40000 -> 10.0.0.1:30080 > 192.0.2.10:40000 svc=default/web:http/TCP\n",
		},
		{
			name: "missing fields",
			rec:  Record{Time: testTime},
			want: "10:31:07.123456 -        -          -        -                   ? ? > ?\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(appendText(nil, &tt.rec, time.UTC))
			if got != tt.want {
				t.Errorf("got\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

func TestPrinterLost(t *testing.T) {
	tests := []struct {
		format Format
		n      uint64
		where  string
		want   string
	}{
		{FormatText, 1, "", "lost 1 event (trace output too slow; narrow the filter)\n"},
		{FormatText, 17, "", "lost 17 events (trace output too slow; narrow the filter)\n"},
		{FormatJSON, 17, "", `{"type":"lost","lost":17}` + "\n"},
		{FormatText, 3, LostInDatapath, "lost 3 events in the datapath (its ring buffer was full: every trace client lost them)\n"},
		{FormatJSON, 3, LostInDatapath, `{"type":"lost","lost":3,"where":"datapath"}` + "\n"},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		p := printer{out: &out, format: tt.format, loc: time.UTC}
		raw := bytes.TrimSpace(encodeNotice(notice{Type: TypeLost, Lost: tt.n, Where: tt.where}))
		if err := p.lost(tt.n, tt.where, raw); err != nil {
			t.Fatal(err)
		}
		if out.String() != tt.want {
			t.Errorf("%s %d: got %q, want %q", tt.format, tt.n, out.String(), tt.want)
		}
	}
}

func TestFormatFlag(t *testing.T) {
	var f Format
	if f.String() != "text" {
		t.Errorf("zero Format: got %q, want text", f.String())
	}
	if err := f.Set("json"); err != nil || f != FormatJSON {
		t.Errorf("Set(json): got %q, %v", f, err)
	}
	if err := f.Set("yaml"); err == nil || !strings.Contains(err.Error(), "want text or json") {
		t.Errorf("Set(yaml): got %v, want an error naming the formats", err)
	}
}
