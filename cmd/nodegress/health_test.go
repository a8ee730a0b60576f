package main

import (
	"io"
	"log/slog"
	"testing"

	"github.com/nodegress/nodegress/controller"
)

func TestHealthzAddr(t *testing.T) {
	tests := []struct {
		in, want string
		err      bool
	}{
		{in: "", want: ""},
		{in: "0.0.0.0:10256", want: "0.0.0.0:10256"},
		{in: "[::]:10256", want: "[::]:10256"},
		{in: ":10256", want: ":10256"},
		{in: "192.0.2.1", want: "192.0.2.1:10256"},
		{in: "::1", want: "[::1]:10256"},
		{in: "localhost:10256", err: true},
		{in: "0.0.0.0:0", err: true},
		{in: "0.0.0.0:http", err: true},
		{in: "0.0.0.0:70000", err: true},
		{in: "nonsense", err: true},
	}
	for _, tt := range tests {
		got, err := healthzAddr(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("healthzAddr(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

// TestHealthServersConfigure checks which servers each flag combination
// gives the controller; a server turned off must leave its field nil.
func TestHealthServersConfigure(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	tests := []struct {
		name                string
		flags               healthFlags
		wantProxy, wantPort bool
	}{
		{name: "both off", flags: healthFlags{}},
		{name: "node ports only", flags: healthFlags{nodePorts: true}, wantProxy: true, wantPort: true},
		{name: "node health server only", flags: healthFlags{bindAddress: "127.0.0.1:10256"}, wantProxy: true},
		{name: "both", flags: healthFlags{nodePorts: true, bindAddress: "127.0.0.1"}, wantProxy: true, wantPort: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := newHealthServers(tt.flags, log)
			if err != nil {
				t.Fatal(err)
			}
			defer h.close()
			var cfg controller.Config
			h.configure(&cfg)
			if (cfg.ProxyHealth != nil) != tt.wantProxy || (cfg.ServiceHealth != nil) != tt.wantPort {
				t.Errorf("proxy health %v, service health %v; want %v, %v", cfg.ProxyHealth, cfg.ServiceHealth, tt.wantProxy, tt.wantPort)
			}
		})
	}
}
