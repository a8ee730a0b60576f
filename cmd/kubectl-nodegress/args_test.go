package main

import (
	"slices"
	"testing"
)

func TestSplitArgs(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		own      []string
		rest     []string
		wantFail bool
	}{
		{
			name: "trace flags pass through in order",
			args: []string{"--service", "default/web", "--kernel-drops", "--requests", "--request-id=abc", "-count", "3"},
			rest: []string{"--service", "default/web", "--kernel-drops", "--requests", "--request-id=abc", "-count", "3"},
		},
		{
			name: "own flags in every spelling, mixed in",
			args: []string{"--node", "n1", "--service", "web", "--node=n2", "-n", "ng", "-o=json", "--context", "c1", "-kubeconfig", "/k", "--reason", "NO_SOCKET"},
			own:  []string{"--node=n1", "--node=n2", "--namespace=ng", "--output=json", "--context=c1", "--kubeconfig=/k"},
			rest: []string{"--service", "web", "--reason", "NO_SOCKET"},
		},
		{
			name: "a boolean own flag takes no value",
			args: []string{"--insecure-skip-tls-verify", "--kernel-drops"},
			own:  []string{"--insecure-skip-tls-verify"},
			rest: []string{"--kernel-drops"},
		},
		{
			// Go's flag package takes -service; it is no -s (--server)
			// with the value "ervice".
			name: "single-dash agent flags are not shorthands",
			args: []string{"-service", "web", "-socket=/x", "-o", "json"},
			own:  []string{"--output=json"},
			rest: []string{"-service", "web", "-socket=/x"},
		},
		{
			name: "duration and pcap are read, not swallowed silently",
			args: []string{"--duration", "5s", "--pcap=-"},
			own:  []string{"--duration=5s", "--pcap=-"},
		},
		{
			name: "everything after -- is the agent's",
			args: []string{"--node", "n1", "--", "--node", "n2", "-n"},
			own:  []string{"--node=n1"},
			rest: []string{"--node", "n2", "-n"},
		},
		{
			name:     "an own flag without its value",
			args:     []string{"--service", "web", "--node"},
			wantFail: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := newOptions(nil).flagSet("trace")
			own, rest, err := splitArgs(fs, tt.args)
			if tt.wantFail {
				if err == nil {
					t.Fatalf("splitArgs(%q) = %q, %q, want an error", tt.args, own, rest)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(own, tt.own) || !slices.Equal(rest, tt.rest) {
				t.Errorf("splitArgs(%q)\n own  %q, want %q\n rest %q, want %q", tt.args, own, tt.own, rest, tt.rest)
			}
			if err := fs.Parse(own); err != nil {
				t.Errorf("own flags %q do not parse: %v", own, err)
			}
		})
	}
}

func TestSplitNodes(t *testing.T) {
	got := splitNodes([]string{"n1,n2", " n3 ", "", "n1"})
	if want := []string{"n1", "n2", "n3", "n1"}; !slices.Equal(got, want) {
		t.Errorf("splitNodes = %q, want %q", got, want)
	}
}
