package loader

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// ListenProxy opens a TCP listener the datapath can steer to: plain TCP,
// because Go listens with multipath TCP by default where the kernel has it,
// and sockmaps refuse MPTCP sockets.
func ListenProxy(ctx context.Context, addr string) (*net.TCPListener, error) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	l, err := lc.Listen(ctx, "tcp4", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return l.(*net.TCPListener), nil
}

// RegisterProxyListener makes a listening socket of the local L7 proxy
// available under name: connections to the frontends of L7 services whose
// ProxyListener is name are handed to it by sk_steer, whatever address the
// socket is bound to. Registering again (a new socket) re-steers them.
func (d *Datapath) RegisterProxyListener(name string, conn syscall.Conn) error {
	raw, err := conn.SyscallConn()
	if err != nil {
		return fmt.Errorf("proxy listener %s: %w", name, err)
	}
	var dupErr error
	var fd, proto int
	if err := raw.Control(func(s uintptr) {
		proto, _ = unix.GetsockoptInt(int(s), unix.SOL_SOCKET, unix.SO_PROTOCOL)
		// Keep our own descriptor: the caller may close its listener.
		fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return fmt.Errorf("proxy listener %s: %w", name, err)
	}
	if dupErr != nil {
		return fmt.Errorf("proxy listener %s: dup: %w", name, dupErr)
	}
	if proto == unix.IPPROTO_MPTCP {
		unix.Close(fd)
		return fmt.Errorf("proxy listener %s: multipath TCP sockets cannot be steered (listen with net.ListenConfig.SetMultipathTCP(false))", name)
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	if old, ok := d.listeners[name]; ok {
		unix.Close(old)
	}
	d.listeners[name] = fd
	for id, l := range d.steered {
		if l == name {
			delete(d.steered, id)
		}
	}
	return d.syncProxySockets(d.lastL7)
}

// syncProxySockets points every L7 service's id at its listener's socket.
// syncProxyListeners steers the L7 services to their listeners and routes
// their addresses locally.
func (d *Datapath) syncProxyListeners(l7 map[uint32]string, addrs map[netip.Addr]bool) []error {
	var errs []error
	if err := d.syncProxySockets(l7); err != nil {
		errs = append(errs, err)
	}
	if err := d.syncLocalRoutes(addrs); err != nil {
		errs = append(errs, err)
	}
	return errs
}

func (d *Datapath) syncProxySockets(l7 map[uint32]string) error {
	var errs []error
	for id, name := range l7 {
		if d.steered[id] == name {
			continue
		}
		fd, ok := d.listeners[name]
		if !ok {
			continue
		}
		if err := d.objs.ProxySockets.Update(id, uint64(fd), ebpf.UpdateAny); err != nil {
			errs = append(errs, fmt.Errorf("steer L7 service %d to listener %s: %w", id, name, err))
			continue
		}
		d.steered[id] = name
	}
	for id := range d.steered {
		if _, ok := l7[id]; ok {
			continue
		}
		if err := d.objs.ProxySockets.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("unsteer L7 service %d: %w", id, err))
			continue
		}
		delete(d.steered, id)
	}
	d.lastL7 = l7
	return errors.Join(errs...)
}

// attachSteering attaches sk_steer to the agent's network namespace through
// a pinned link, replacing the program of an earlier run in place.
func (d *Datapath) attachSteering() error {
	pin := filepath.Join(linksDir(d.cfg.BPFFS), "netns_sk_lookup")
	ns, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return fmt.Errorf("open network namespace: %w", err)
	}
	defer ns.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(ns.Fd()), &st); err != nil {
		return fmt.Errorf("stat network namespace: %w", err)
	}

	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		info, infoErr := l.Info()
		if infoErr == nil && info.NetNs() != nil && uint64(info.NetNs().NetnsInode) == st.Ino {
			if err := l.Update(d.objs.SkSteer); err == nil {
				d.record(Attachment{Device: "netns", Hook: "sk-lookup", Mode: "updated", link: l})
				return nil
			}
		}
		_ = l.Unpin()
		_ = l.Close()
	} else if !errors.Is(err, os.ErrNotExist) {
		_ = os.Remove(pin)
	}
	l, err := link.AttachNetNs(int(ns.Fd()), d.objs.SkSteer)
	if err != nil {
		return fmt.Errorf("attach sk_lookup: %w", err)
	}
	if err := l.Pin(pin); err != nil {
		l.Close()
		return fmt.Errorf("pin sk_lookup link: %w", err)
	}
	d.record(Attachment{Device: "netns", Hook: "sk-lookup", Mode: "netns", link: l})
	d.log.Info("attached", "hook", "sk-lookup")
	return nil
}
