package l7proxy

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// h2specBin finds h2spec (scripts/h2spec.sh builds it into bin/): from
// H2SPEC_BIN, the repository's bin/, or PATH.
func h2specBin() string {
	if b := os.Getenv("H2SPEC_BIN"); b != "" {
		return b
	}
	if b, err := filepath.Abs("../bin/h2spec"); err == nil {
		if _, err := os.Stat(b); err == nil {
			return b
		}
	}
	b, _ := exec.LookPath("h2spec")
	return b
}

// TestH2Spec runs the h2spec conformance suite (RFC 9113 and RFC 7541)
// against the HTTP/2 server: every case over TLS, and over h2c with prior
// knowledge all but the preface section, since the plain port answers
// anything that is not HTTP/2's preface as HTTP/1.1.
func TestH2Spec(t *testing.T) {
	bin := h2specBin()
	if bin == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("h2spec not found: scripts/h2spec.sh builds it")
		}
		t.Skip("h2spec not found: run scripts/h2spec.sh")
	}
	p := h2TestProxy(t, Options{}, okHandler)
	tests := []struct {
		name string
		args []string
	}{
		{"tls", []string{"-h", "127.0.0.1", "-p", port(t, p.httpsAddr), "-t", "-k"}},
		{"h2c", []string{"-h", "127.0.0.1", "-p", port(t, p.httpAddr),
			"generic", "hpack", "http2/4", "http2/5", "http2/6", "http2/7", "http2/8"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			args := append([]string{"-o", "3"}, tt.args...)
			out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
			if err != nil {
				t.Fatalf("h2spec %v: %v\n%s", args, err, out)
			}
		})
	}
}

func port(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
