package l7proxy

import (
	"context"
	"maps"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// streamSocket is a new, unconnected TCP socket of the family, as the
// dialer hands it to its Control.
func streamSocket(t *testing.T, family int) syscall.RawConn {
	t.Helper()
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	f := os.NewFile(uintptr(fd), "tcp socket")
	t.Cleanup(func() { f.Close() })
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatalf("raw socket: %v", err)
	}
	return rc
}

// dialAttempt is one connect attempt of a dial, as the dialer's Control
// sees it.
type dialAttempt struct {
	family  int
	address string
}

// TestBindAndRegisterAttempts checks that the dial Control registers the
// IPv4 attempt of a dial with the watch, that an attempt of another family
// (which the dialer races against the IPv4 ones from another goroutine)
// leaves the registration alone, before or after it, and that a second
// IPv4 attempt replaces the first one's, whose watch then ends. Run with
// -race: the attempts of the two families run at once.
func TestBindAndRegisterAttempts(t *testing.T) {
	remote := closedPort(t)
	v4 := dialAttempt{unix.AF_INET, remote.String()}
	v6 := dialAttempt{unix.AF_INET6, "[2001:db8::1]:80"}
	for _, tc := range []struct {
		name       string
		attempts   []dialAttempt
		concurrent bool
	}{
		{"IPv4 only", []dialAttempt{v4}, false},
		{"IPv4 then IPv6", []dialAttempt{v4, v6}, false},
		{"IPv6 then IPv4", []dialAttempt{v6, v4}, false},
		{"IPv6 alone", []dialAttempt{v6}, false},
		{"IPv4 twice", []dialAttempt{v4, v4}, false},
		{"IPv6 and IPv4 at once", []dialAttempt{v6, v4}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := newWatchLog()
			w := &upstreamWatcher{}
			stop := w.start(log.watch)
			defer stop()
			u := &liveUpstream{w: w}
			conns := make([]syscall.RawConn, len(tc.attempts))
			for i, a := range tc.attempts {
				conns[i] = streamSocket(t, a.family)
			}
			var wg sync.WaitGroup
			for i, a := range tc.attempts {
				attempt := func() {
					if err := u.bindAndRegister(context.Background(), "tcp", a.address, conns[i]); err != nil {
						t.Errorf("control of %s: %v", a.address, err)
					}
				}
				if tc.concurrent {
					wg.Go(attempt)
				} else {
					attempt()
				}
			}
			wg.Wait()

			locals := log.locals(remote)
			v4Attempts := 0
			for _, a := range tc.attempts {
				if a == v4 {
					v4Attempts++
				}
			}
			if len(locals) != v4Attempts {
				t.Fatalf("watch told of %v towards %s, want one local address per IPv4 attempt (%d)",
					log.state(), remote, v4Attempts)
			}
			w.mu.Lock()
			live := len(w.live)
			w.mu.Unlock()
			if v4Attempts == 0 {
				if u.registered || live != 0 || len(log.state()) != 0 {
					t.Fatalf("no IPv4 attempt: registered %v, %d live, watch told of %v; want nothing",
						u.registered, live, log.state())
				}
				return
			}
			if !u.registered || live != 1 || u.remote != remote || locals[u.local] != 0 {
				t.Fatalf("registered %v as %s > %s, %d live, watch %v: want the last IPv4 attempt registered and watched",
					u.registered, u.local, u.remote, live, log.state())
			}
			// The replaced IPv4 attempts' watches end after the linger.
			want := map[netip.AddrPort]int{}
			for l := range locals {
				want[l] = 1
			}
			want[u.local] = 0
			deadline := time.Now().Add(failedDialWatchLinger + 5*time.Second)
			for got := log.locals(remote); !maps.Equal(got, want); got = log.locals(remote) {
				if time.Now().After(deadline) {
					t.Fatalf("watches ended %v, want %v", got, want)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}
