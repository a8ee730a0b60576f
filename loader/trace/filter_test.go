package trace

import (
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/nodegress/nodegress/loader"
)

func TestFilterMatch(t *testing.T) {
	fwd := fwdEvent()
	drop := fwdEvent()
	drop.Verdict, drop.Reason, drop.Xlated, drop.BackendID = loader.VerdictDrop, loader.ReasonDropNoBackend, loader.Tuple{}, 0

	tests := []struct {
		name   string
		filter Filter
		ev     loader.Event
		want   bool
	}{
		{"empty filter matches all", Filter{}, fwd, true},
		{"service substring", Filter{Service: "default/web"}, fwd, true},
		{"service exact", Filter{Service: "default/web:http/TCP"}, fwd, true},
		{"service other", Filter{Service: "default/api"}, fwd, false},
		{"service is case-sensitive", Filter{Service: "Default/web"}, fwd, false},
		{"device", Filter{Device: "eth0"}, fwd, true},
		{"device other", Filter{Device: "eth1"}, fwd, false},
		{"device is exact", Filter{Device: "eth"}, fwd, false},
		{"addr original source", Filter{Addr: "192.0.2.10"}, fwd, true},
		{"addr original destination", Filter{Addr: "10.0.0.1"}, fwd, true},
		{"addr translated destination", Filter{Addr: "10.1.0.7"}, fwd, true},
		{"addr prefix", Filter{Addr: "10.1.0.0/16"}, fwd, true},
		{"addr unmasked prefix", Filter{Addr: "10.1.2.3/16"}, fwd, true},
		{"addr none", Filter{Addr: "10.9.9.9"}, fwd, false},
		{"addr does not match the empty translated tuple", Filter{Addr: "0.0.0.0/0"}, drop, true},
		{"addr only in translation, translation empty", Filter{Addr: "10.1.0.7"}, drop, false},
		{"port original destination", Filter{Port: 30080}, fwd, true},
		{"port translated destination", Filter{Port: 8080}, fwd, true},
		{"port translated source", Filter{Port: 61000}, fwd, true},
		{"port none", Filter{Port: 443}, fwd, false},
		{"proto name", Filter{Proto: "tcp"}, fwd, true},
		{"proto upper case", Filter{Proto: "TCP"}, fwd, true},
		{"proto number", Filter{Proto: "6"}, fwd, true},
		{"proto other", Filter{Proto: "udp"}, fwd, false},
		{"verdict drop on forward", Filter{Verdict: "drop"}, fwd, false},
		{"verdict drop on drop", Filter{Verdict: "drop"}, drop, true},
		{"verdict list", Filter{Verdict: "tx, redirect"}, fwd, true},
		{"reason", Filter{Reason: "drop_no_backend"}, drop, true},
		{"reason list", Filter{Reason: "fwd_local,fwd_remote"}, fwd, true},
		{"reason other", Filter{Reason: "fwd_local"}, fwd, false},
		{"all fields", Filter{Service: "web", Device: "eth0", Addr: "10.1.0.7", Port: 8080, Proto: "tcp", Verdict: "tx", Reason: "fwd_remote"}, fwd, true},
		{"all fields but one", Filter{Service: "web", Device: "eth0", Addr: "10.1.0.7", Port: 8080, Proto: "tcp", Verdict: "tx", Reason: "fwd_local"}, fwd, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := tt.filter.compile()
			if err != nil {
				t.Fatal(err)
			}
			if got := m.match(&tt.ev, "eth0", "default/web:http/TCP"); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestFilterValidate(t *testing.T) {
	tests := []struct {
		name    string
		filter  Filter
		wantErr string // "" for valid
	}{
		{"empty", Filter{}, ""},
		{"everything", Filter{Service: "x", Device: "eth0", Addr: "10.0.0.0/8", Port: 80, Proto: "udp", Verdict: "PASS,drop", Reason: "pass_l7", Count: 3, Duration: time.Second}, ""},
		{"unnamed reason code", Filter{Reason: "reason_99"}, ""},
		{"bad address", Filter{Addr: "10.0.0"}, "address filter"},
		{"bad prefix", Filter{Addr: "10.0.0.0/33"}, "address filter"},
		{"bad proto", Filter{Proto: "sctp"}, `unknown protocol "sctp"`},
		{"proto zero", Filter{Proto: "0"}, "unknown protocol"},
		{"bad verdict", Filter{Verdict: "pass,forward"}, `unknown verdict "forward" (want pass, tx, redirect, drop)`},
		{"bad reason", Filter{Reason: "no_backend"}, `unknown reason "no_backend" (want one of unspec,`},
		{"negative count", Filter{Count: -1}, "count -1"},
		{"negative duration", Filter{Duration: -time.Second}, "duration -1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.filter.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("got %v, want no error", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestFilterFlags(t *testing.T) {
	var f Filter
	fs := flag.NewFlagSet("trace", flag.ContinueOnError)
	f.RegisterFlags(fs)
	err := fs.Parse([]string{
		"--service", "default/web", "--device", "eth0", "--addr", "10.1.0.0/16", "--port", "8080",
		"--proto", "tcp", "--verdict", "drop", "--reason", "drop_no_backend", "--count", "5", "--duration", "2s",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := Filter{Service: "default/web", Device: "eth0", Addr: "10.1.0.0/16", Port: 8080, Proto: "tcp",
		Verdict: "drop", Reason: "drop_no_backend", Count: 5, Duration: 2 * time.Second}
	if f != want {
		t.Errorf("got %+v, want %+v", f, want)
	}

	fs = flag.NewFlagSet("trace", flag.ContinueOnError)
	fs.SetOutput(new(strings.Builder))
	(&Filter{}).RegisterFlags(fs)
	if err := fs.Parse([]string{"--port", "70000"}); err == nil {
		t.Error("--port 70000: want an error")
	}
}
