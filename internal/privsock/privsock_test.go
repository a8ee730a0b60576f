package privsock

import (
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestListen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "x.sock")
	s, err := Listen(path, "test")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket %v (%v), want a 0600 socket", fi.Mode(), err)
	}
	if c, err := net.Dial("unix", path); err != nil {
		t.Fatalf("dial: %v", err)
	} else {
		c.Close()
	}
	// A second agent finds the first one answering.
	if _, err := Listen(path, "test"); err == nil || !strings.Contains(err.Error(), "another agent") {
		t.Errorf("second Listen: %v, want another agent", err)
	}
	// Once the first is gone (its file left behind), a new one takes over.
	s.Close()
	s2, err := Listen(path, "test")
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	// The first one's Remove leaves the new socket alone; the new one's
	// removes it.
	s.Remove(slog.New(slog.DiscardHandler))
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("a replaced agent removed its successor's socket: %v", err)
	}
	s2.Close()
	s2.Remove(slog.New(slog.DiscardHandler))
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
	// Something else at the path is not replaced.
	plain := filepath.Join(dir, "file")
	if err := os.WriteFile(plain, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(plain, "test"); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen over a file: %v, want not a socket", err)
	}
}
