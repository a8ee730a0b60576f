package main

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nodegress/nodegress/loader/trace"
)

func TestRunTracePcapArguments(t *testing.T) {
	dir := t.TempDir()
	socket := filepath.Join(dir, "none.sock")
	file := filepath.Join(dir, "out.pcapng")
	tests := []struct {
		name    string
		args    []string
		snaplen int
		want    string
	}{
		// Arguments that pass reach for the agent, which is not there.
		{"good", nil, 96, "no agent listening"},
		{"output format too", []string{"--output", "json"}, 96, "--output and --pcap exclude each other"},
		{"no bytes", nil, 0, "--snaplen 0: must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("trace", flag.ContinueOnError)
			format := trace.Format("text")
			fs.Var(&format, "output", "")
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			err := runTracePcap(context.Background(), fs, socket, trace.Filter{}, file, tt.snaplen)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
	// Only the good arguments got as far as creating the file.
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("pcap file: %v, mode %v; want it created 0600", err, fi)
	}
}
