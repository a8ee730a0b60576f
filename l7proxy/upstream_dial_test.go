package l7proxy

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"

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

// watchedDial is the registration of a dial while a watch is set, and
// what the watch was told.
func watchedDial(t *testing.T) (*liveUpstream, *watchLog) {
	log := newWatchLog()
	w := &upstreamWatcher{}
	t.Cleanup(w.start(log.watch))
	return &liveUpstream{w: w}, log
}

// liveCount is how many connections are registered.
func (w *upstreamWatcher) liveCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.live)
}

// waitWatchesEnded waits for the watches towards remote to have ended
// as many times as want says, per local address.
func waitWatchesEnded(t *testing.T, log *watchLog, remote netip.AddrPort, want map[netip.AddrPort]int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("watches ended %v", want), func() bool { return maps.Equal(log.locals(remote), want) })
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
			u, log := watchedDial(t)
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
			live := u.w.liveCount()
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
			waitWatchesEnded(t, log, remote, want)
		})
	}
}

// addrConn is a connection that only has addresses, as a dial returns it.
type addrConn struct {
	net.Conn
	local, remote netip.AddrPort
}

func (c addrConn) LocalAddr() net.Addr  { return net.TCPAddrFromAddrPort(c.local) }
func (c addrConn) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(c.remote) }

// TestDialConnectedAttempts checks the end of a dial whose IPv4 attempt
// registered itself: the connection of that attempt stays registered and
// watched once; an IPv6 connection that won the race against it is
// registered in its place, and the IPv4 attempt's watch ends, whether the
// attempt's Control ran before, after or at once with the dial's return.
// Run with -race.
func TestDialConnectedAttempts(t *testing.T) {
	remote := closedPort(t)
	v6 := addrConn{local: netip.MustParseAddrPort("[2001:db8::2]:40000"), remote: netip.MustParseAddrPort("[2001:db8::1]:80")}
	for _, tc := range []struct {
		name string
		// winner is the connection the dial returns: the IPv4 attempt's
		// (nil) or v6.
		winner     net.Conn
		order      string // "attempt first", "return first" or "at once"
		maxWatched int
	}{
		{"IPv4 attempt won", nil, "attempt first", 1},
		{"IPv6 won while the IPv4 attempt connects", v6, "attempt first", 1},
		{"IPv6 won before the IPv4 attempt's Control", v6, "return first", 0},
		{"IPv6 won at once with the IPv4 attempt's Control", v6, "at once", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, log := watchedDial(t)
			sock := streamSocket(t, unix.AF_INET)
			attempt := func() {
				if err := u.bindAndRegister(context.Background(), "tcp", remote.String(), sock); err != nil {
					t.Errorf("control: %v", err)
				}
			}
			switch tc.order {
			case "attempt first":
				attempt()
				winner := tc.winner
				if winner == nil {
					winner = addrConn{local: u.local, remote: u.remote}
				}
				u.connected(winner)
			case "return first":
				u.connected(tc.winner)
				attempt()
			case "at once":
				var wg sync.WaitGroup
				wg.Go(attempt)
				u.connected(tc.winner)
				wg.Wait()
			}

			u.attempts.Lock()
			local, regRemote, registered := u.local, u.remote, u.registered
			u.attempts.Unlock()
			live := u.w.liveCount()
			watched := log.locals(remote)
			if len(watched) > tc.maxWatched || (tc.order == "attempt first" && len(watched) != 1) {
				t.Fatalf("watch told of %v, want at most %d IPv4 attempts", log.state(), tc.maxWatched)
			}
			if tc.winner == nil {
				if !registered || live != 1 || regRemote != remote || log.state()[local] != remote.String()+" watched 1 ended 0" {
					t.Fatalf("registered %v as %s > %s, %d live, watch %v: want the IPv4 attempt's connection, watched once",
						registered, local, regRemote, live, log.state())
				}
				return
			}
			if !registered || live != 1 || local != v6.local || regRemote != v6.remote {
				t.Fatalf("registered %v as %s > %s, %d live: want the IPv6 connection %s > %s",
					registered, local, regRemote, live, v6.local, v6.remote)
			}
			want := map[netip.AddrPort]int{}
			for l := range watched {
				want[l] = 1
			}
			waitWatchesEnded(t, log, remote, want)
		})
	}
}
