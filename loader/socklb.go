package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// DefaultCgroupRoots are where the socket-level load balancer attaches
// when Config.CgroupRoot is empty: the first that is a cgroup2 mount (the
// unified hierarchy of a cgroup v1 "hybrid" host comes second).
var DefaultCgroupRoots = []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"}

// socketHooks are the cgroup hooks of the socket-level load balancer.
func (d *Datapath) socketHooks() []struct {
	name   string
	attach ebpf.AttachType
	prog   *ebpf.Program
} {
	return []struct {
		name   string
		attach ebpf.AttachType
		prog   *ebpf.Program
	}{
		{"connect4", ebpf.AttachCGroupInet4Connect, d.objs.SockConnect4},
		{"sendmsg4", ebpf.AttachCGroupUDP4Sendmsg, d.objs.SockSendmsg4},
		{"recvmsg4", ebpf.AttachCGroupUDP4Recvmsg, d.objs.SockRecvmsg4},
		{"getpeername4", ebpf.AttachCgroupInet4GetPeername, d.objs.SockGetpeername4},
	}
}

func cgroupPin(bpffs, hook string) string { return filepath.Join(linksDir(bpffs), "cgroup_"+hook) }

// CgroupRoot resolves where the socket-level load balancer attaches: dir
// when given, or its unified/ subdirectory when dir holds the v1
// hierarchies of a "hybrid" host; else the first of DefaultCgroupRoots
// that is cgroup2.
func CgroupRoot(dir string) (string, error) {
	candidates := DefaultCgroupRoots
	if dir != "" {
		candidates = []string{dir, filepath.Join(dir, "unified")}
	}
	for _, c := range candidates {
		var st unix.Statfs_t
		if err := unix.Statfs(c, &st); err == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return c, nil
		}
	}
	if dir != "" {
		return "", fmt.Errorf("cgroup root %s is not a cgroup2 directory", dir)
	}
	return "", fmt.Errorf("no cgroup2 hierarchy at %v: mount one (mount -t cgroup2 none DIR) and pass --cgroup-root DIR", DefaultCgroupRoots)
}

// attachSocketLB attaches the socket-level load balancer to the cgroup2
// directory of Config.CgroupRoot (every process below it is served), or,
// when Config.SocketLB is off, detaches what an earlier run left. Pinned
// links of an earlier run on the same cgroup get the new programs in place.
func (d *Datapath) attachSocketLB() error {
	if !d.cfg.SocketLB {
		for _, h := range d.socketHooks() {
			pin := cgroupPin(d.cfg.BPFFS, h.name)
			if l, err := link.LoadPinnedLink(pin, nil); err == nil {
				_ = l.Unpin()
				_ = l.Close()
				d.log.Info("detached socket load balancer of an earlier run", "hook", h.name)
			}
		}
		return nil
	}
	root, err := CgroupRoot(d.cfg.CgroupRoot)
	if err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Stat(root, &st); err != nil {
		return fmt.Errorf("cgroup root: %w", err)
	}
	for _, h := range d.socketHooks() {
		pin := cgroupPin(d.cfg.BPFFS, h.name)
		if l, err := link.LoadPinnedLink(pin, nil); err == nil {
			info, infoErr := l.Info()
			if infoErr == nil && info.Cgroup() != nil && info.Cgroup().CgroupId == st.Ino {
				if err := l.Update(h.prog); err == nil {
					d.record(Attachment{Device: root, Hook: "cgroup-" + h.name, Mode: "updated", link: l})
					continue
				}
			}
			_ = l.Unpin()
			_ = l.Close()
		} else if !errors.Is(err, os.ErrNotExist) {
			_ = os.Remove(pin)
		}
		l, err := link.AttachCgroup(link.CgroupOptions{Path: root, Attach: h.attach, Program: h.prog})
		if err != nil {
			return fmt.Errorf("attach %s to cgroup %s: %w", h.name, root, err)
		}
		if err := l.Pin(pin); err != nil {
			l.Close()
			return fmt.Errorf("pin %s link: %w", h.name, err)
		}
		d.record(Attachment{Device: root, Hook: "cgroup-" + h.name, Mode: "cgroup", link: l})
	}
	d.log.Info("socket load balancer attached", "cgroup", root)
	return nil
}
