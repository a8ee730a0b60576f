package explain

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// serve runs a server on a socket in a fresh directory until the test ends.
func serve(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "explain.sock")
	srv := NewServer(path, &Explainer{Datapath: fakeDatapath{svcs: programmed()}}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("unix", path)
		if err == nil {
			c.Close()
			return path
		}
		if time.Now().After(deadline) {
			t.Fatalf("socket never answered: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// exchange sends one raw line and returns the decoded answer; halfClose
// shuts the sending side down after it, as a client that stops short.
func exchange(t *testing.T, path, line string, halfClose bool) Answer {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(line)); err != nil {
		t.Fatal(err)
	}
	if halfClose {
		_ = c.CloseWrite()
	}
	b, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	var a Answer
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatalf("answer %q: %v", b, err)
	}
	return a
}

func TestProtocol(t *testing.T) {
	path := serve(t)
	tests := []struct {
		name, line, wantErr string
	}{
		{"a frontend", `{"version":1,"target":"192.0.2.10:30080","from":"198.18.0.1","proto":"tcp"}` + "\n", ""},
		{"unknown field", `{"version":1,"target":"192.0.2.10:30080","follow":true}` + "\n", `unknown field "follow"`},
		{"newer version", `{"version":2,"target":"192.0.2.10:30080"}` + "\n", "protocol version 2 not supported"},
		{"no version", `{"target":"192.0.2.10:30080"}` + "\n", "protocol version 0 not supported"},
		{"no target", `{"version":1}` + "\n", "no target"},
		{"IPv6 client", `{"version":1,"target":"192.0.2.10:30080","from":"::1"}` + "\n", "IPv4 only"},
		{"bad protocol", `{"version":1,"target":"192.0.2.10:30080","proto":"sctp"}` + "\n", `protocol "sctp"`},
		{"two values", `{"version":1,"target":"192.0.2.10:30080"}{}` + "\n", "more than one JSON value"},
		{"not JSON", "hello\n", "bad request"},
		{"too long", `{"version":1,"target":"` + strings.Repeat("a", maxRequest) + `"}` + "\n", "longer than"},
		{"no newline before close", `{"version":1,"target":"192.0.2.10:30080"}`, "read request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := exchange(t, path, tc.line, !strings.HasSuffix(tc.line, "\n"))
			if a.Version != Version {
				t.Errorf("answer version %d", a.Version)
			}
			if tc.wantErr == "" {
				if a.Error != "" || len(a.Frontends) != 1 || a.Frontends[0].Verdict.Reason != "fwd_remote" {
					t.Errorf("answer %+v", a)
				}
				return
			}
			if !strings.Contains(a.Error, tc.wantErr) || len(a.Frontends) != 0 {
				t.Errorf("answer %+v, want error %q", a, tc.wantErr)
			}
		})
	}
}

func TestAsk(t *testing.T) {
	path := serve(t)
	ctx := context.Background()
	a, err := Ask(ctx, path, Query{Target: "default/empty"})
	if err != nil || len(a.Frontends) != 1 || a.Frontends[0].Verdict.Reason != "reject_no_backend" {
		t.Fatalf("Ask = %+v, %v", a, err)
	}
	var out strings.Builder
	if err := WriteText(&out, a); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"default/empty from 203.0.113.7", "frontend 192.0.2.10:30081/TCP", "verdict: reject (reject_no_backend)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("text output lacks %q:\n%s", want, out.String())
		}
	}
	if _, err := Ask(ctx, path, Query{Target: "default/missing"}); err == nil || !strings.Contains(err.Error(), "no service default/missing") {
		t.Errorf("Ask for a missing service: %v", err)
	}
	if _, err := Ask(ctx, filepath.Join(t.TempDir(), "none.sock"), Query{Target: "default/web"}); err == nil || !strings.Contains(err.Error(), "no agent answers") {
		t.Errorf("Ask without an agent: %v", err)
	}
}

// TestServerBounds checks that connections beyond maxConns are refused at
// once, with the reason, while a request within the bound is answered, and
// that the socket is the owner's alone.
func TestServerBounds(t *testing.T) {
	path := serve(t)
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v (%v), want 0600", fi.Mode(), err)
	}
	// Silent clients hold every slot until their request timeout.
	for range maxConns {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	if a := exchange(t, path, `{"version":1,"target":"192.0.2.10:30080"}`+"\n", false); !strings.Contains(a.Error, errBusy.Error()) {
		t.Errorf("connection over the bound: answer %+v, want %q", a, errBusy)
	}
}

// TestServerAnswersWithinBound is the positive side of TestServerBounds:
// with one slot left, the request is answered.
func TestServerAnswersWithinBound(t *testing.T) {
	path := serve(t)
	for range maxConns - 1 {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	// The readiness probe of serve may still hold the last slot for a
	// moment; the silent clients hold theirs for seconds.
	deadline := time.Now().Add(2 * time.Second)
	for {
		a := exchange(t, path, `{"version":1,"target":"192.0.2.10:30080"}`+"\n", false)
		if a.Error == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("answer %+v, want no error", a)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
