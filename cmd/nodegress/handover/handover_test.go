package handover

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// tcpListener returns a loopback listener and its socket as a file.
func tcpListener(t *testing.T) (*net.TCPListener, *os.File) {
	t.Helper()
	l, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return l, f
}

// acceptOn accepts one connection on the socket f within a second.
func acceptOn(t *testing.T, f *os.File) net.Conn {
	t.Helper()
	l, err := net.FileListener(f)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.(*net.TCPListener).SetDeadline(time.Now().Add(time.Second))
	c, err := l.Accept()
	if err != nil {
		t.Fatalf("accept on the handed-over socket: %v", err)
	}
	return c
}

func TestTakeover(t *testing.T) {
	path := filepath.Join(t.TempDir(), "handover.sock")
	if _, err := Take(context.Background(), path); !errors.Is(err, ErrNoPeer) {
		t.Fatalf("Take without an agent: %v, want ErrNoPeer", err)
	}
	for _, tc := range []struct {
		name    string
		serving bool
	}{
		{"successor serves", true},
		{"successor fails", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := Listen(path, quietLog())
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			ln, f := tcpListener(t)
			granted := make(chan error, 1)
			go func() {
				r := <-srv.Requests()
				if err := r.Grant(map[string]*os.File{"http": f}); err != nil {
					granted <- err
					return
				}
				granted <- r.WaitServing(context.Background())
			}()
			to, err := Take(context.Background(), path)
			if err != nil {
				t.Fatal(err)
			}
			if len(to.Listeners) != 1 || to.Listeners["http"] == nil {
				t.Fatalf("listeners %v", to.Listeners)
			}
			defer to.Listeners["http"].Close()
			// The socket is shared: a connection to the predecessor's
			// address is accepted by the successor.
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			acceptOn(t, to.Listeners["http"]).Close()
			// Handing the socket over left the predecessor's own listener
			// non-blocking: its deadlines still work.
			ln.SetDeadline(time.Now().Add(20 * time.Millisecond))
			accepted := make(chan error, 1)
			go func() {
				c, err := ln.Accept()
				if err == nil {
					c.Close()
				}
				accepted <- err
			}()
			select {
			case err := <-accepted:
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("predecessor accept: %v, want a deadline error", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("predecessor's listener blocks past its deadline")
			}
			if tc.serving {
				if err := to.Serving(); err != nil {
					t.Fatal(err)
				}
				if err := <-granted; err != nil {
					t.Fatalf("predecessor: %v", err)
				}
			} else {
				to.Abort()
				if err := <-granted; err == nil {
					t.Fatal("predecessor: successor failure not reported")
				}
			}
		})
	}
}

func TestTakeoverRefusesAnotherNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("needs root, and CI runs as root")
		}
		t.Skip("needs root to create a network namespace")
	}
	path := filepath.Join(t.TempDir(), "handover.sock")
	srv, err := Listen(path, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	_, f := tcpListener(t)
	granted := make(chan struct{})
	go func() {
		defer close(granted)
		r := <-srv.Requests()
		_ = r.Grant(map[string]*os.File{"http": f})
	}()
	// Same namespace: granted, as a positive check on the same socket.
	to, err := Take(context.Background(), path)
	if err != nil {
		t.Fatalf("same network namespace: %v", err)
	}
	to.Listeners["http"].Close()
	to.Abort()
	<-granted

	errc := make(chan error, 1)
	go func() {
		// The thread stays in its namespace and dies with the goroutine.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		to, err := Take(context.Background(), path)
		if err == nil {
			to.Abort()
			err = errors.New("granted")
		} else {
			t.Logf("refused as expected: %v", err)
			err = nil
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("takeover from another network namespace: %v", err)
	}
}

func TestKeeper(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keeper.sock")
	if _, err := Fetch(path); !errors.Is(err, ErrNoPeer) {
		t.Fatalf("Fetch without a keeper: %v, want ErrNoPeer", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewKeeper(quietLog(), 0).Serve(ctx, path) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("keeper: %v", err)
		}
	}()
	var ls map[string]*os.File
	deadline := time.Now().Add(5 * time.Second)
	for {
		var err error
		if ls, err = Fetch(path); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("keeper not answering: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(ls) != 0 {
		t.Fatalf("a new keeper holds %v", ls)
	}

	// The agent stores its listener, then dies: the socket stays open in
	// the keeper, so a client's connection is queued, not refused.
	ln, f := tcpListener(t)
	addr := ln.Addr().String()
	if err := Store(path, map[string]*os.File{"http": f}); err != nil {
		t.Fatal(err)
	}
	ln.Close()
	f.Close()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatalf("connect while only the keeper holds the socket: %v", err)
	}
	defer c.Close()
	// The restarted agent fetches it and accepts the queued connection.
	ls, err = Fetch(path)
	if err != nil {
		t.Fatal(err)
	}
	if ls["http"] == nil || len(ls) != 1 {
		t.Fatalf("fetched %v", ls)
	}
	sc := acceptOn(t, ls["http"])
	defer sc.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	sc.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := io.ReadFull(sc, b[:]); err != nil || b[0] != 'x' {
		t.Fatalf("queued connection: %q %v", b, err)
	}
	ls["http"].Close()

	// Storing an empty set releases the socket: now nothing listens.
	if err := Store(path, nil); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("connection accepted after the keeper released the last descriptor")
	}
}

func TestReceiveRejectsNonListeners(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keeper.sock")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = NewKeeper(quietLog(), 0).Serve(ctx, path) }()
	deadline := time.Now().Add(5 * time.Second)
	for _, err := Fetch(path); err != nil; _, err = Fetch(path) {
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A regular file is no listening socket.
	bad, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if err := Store(path, map[string]*os.File{"http": bad}); err == nil {
		t.Fatal("keeper stored a file that is not a listening socket")
	}
}

func TestLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "agent.lock")
	first, err := TryLock(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := TryLock(path); !errors.Is(err, ErrLocked) {
		t.Fatalf("second lock: %v, want ErrLocked", err)
	}
	first.Release()
	first.Release() // once
	second, err := TryLock(path)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	second.Release()
}

// TestTakeoverBusy: an agent already handing over refuses another
// successor as busy (it may ask again), not for good.
func TestTakeoverBusy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "handover.sock")
	srv, err := Listen(path, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	// Nobody takes the request from Requests: the agent is busy.
	if _, err := Take(context.Background(), path); !errors.Is(err, ErrBusy) {
		t.Fatalf("Take from a busy agent: %v, want ErrBusy", err)
	}
}

// TestKeeperReleasesUnclaimed: sockets no agent stores or fetches again
// are closed, so that clients are refused instead of left waiting.
func TestKeeperReleasesUnclaimed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keeper.sock")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = NewKeeper(quietLog(), 200*time.Millisecond).Serve(ctx, path) }()
	ln, f := tcpListener(t)
	addr := ln.Addr().String()
	if err := harnessEventually(func() error { return Store(path, map[string]*os.File{"http": f}) }); err != nil {
		t.Fatal(err)
	}
	ln.Close()
	f.Close()
	// Held: a connection is queued.
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatalf("connect while the keeper holds the socket: %v", err)
	}
	c.Close()
	if err := harnessEventually(func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return errors.New("still accepted")
		}
		return nil
	}); err != nil {
		t.Fatalf("unclaimed socket not released: %v", err)
	}
}

func TestDuplicateNamesRefused(t *testing.T) {
	_, f1 := tcpListener(t)
	_, f2 := tcpListener(t)
	d1, err := dupFd(f1)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := dupFd(f2)
	if err != nil {
		t.Fatal(err)
	}
	files := []*os.File{os.NewFile(uintptr(d1), "a"), os.NewFile(uintptr(d2), "b")}
	if _, err := named(message{Names: []string{"http", "http"}}, files); err == nil {
		t.Fatal("two sockets under one name accepted")
	}
	for _, f := range files {
		if err := f.Close(); err == nil {
			t.Error("a refused descriptor was left open")
		}
	}
}

// harnessEventually retries f for up to 5 s.
func harnessEventually(f func() error) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}
