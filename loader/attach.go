package loader

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Attachment is one program attached to one device.
type Attachment struct {
	Device  string
	Ifindex int
	// Hook is "xdp", "tcx-ingress" or "tcx-egress".
	Hook string
	// Mode is "native" or "generic" for XDP, "tcx" otherwise; "updated" when
	// an attachment pinned by an earlier run got the new program in place.
	Mode string
	link link.Link
}

// Attachments lists where the datapath is attached.
func (d *Datapath) Attachments() []Attachment {
	d.attachMu.Lock()
	defer d.attachMu.Unlock()
	return append([]Attachment(nil), d.attached...)
}

func (d *Datapath) attachAll() error {
	if err := os.MkdirAll(linksDir(d.cfg.BPFFS), 0o700); err != nil {
		return fmt.Errorf("create link pin dir: %w", err)
	}
	if err := d.syncDevices(); err != nil {
		return err
	}
	for _, dev := range d.cfg.Devices {
		iface, err := net.InterfaceByName(dev)
		if err != nil {
			return fmt.Errorf("device %s: %w", dev, err)
		}
		kind, err := d.deviceKind(iface)
		if err != nil {
			return err
		}
		switch {
		case d.cfg.XDPMode == XDPOff:
			d.detachXDP(iface)
		case d.cfg.XDPMode == XDPAuto && kind.partialChecksums():
			d.log.Info("xdp not attached: a virtual device may receive frames with partial checksums, tc translates them",
				"dev", dev, "kind", string(kind))
			d.detachXDP(iface)
		default:
			if kind.partialChecksums() {
				d.log.Warn("xdp on a virtual device: frames without a complete checksum are left to tc (slower than --xdp-mode=auto, which uses tc only here)",
					"dev", dev, "kind", string(kind))
			}
			if err := d.attachXDP(iface); err != nil {
				return err
			}
		}
		for _, hook := range []struct {
			name string
			prog *ebpf.Program
			at   ebpf.AttachType
		}{
			{"tcx-ingress", d.objs.TcIngress, ebpf.AttachTCXIngress},
			{"tcx-egress", d.objs.TcEgress, ebpf.AttachTCXEgress},
		} {
			err := d.attachPinned(iface, hook.name, hook.prog, func() (link.Link, string, error) {
				l, err := link.AttachTCX(link.TCXOptions{Interface: iface.Index, Program: hook.prog, Attach: hook.at})
				return l, "tcx", err
			})
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// deviceKind is the netlink link kind of a device: "device" for one driven
// by a hardware (or paravirtual NIC) driver, "veth", "bridge", "tuntap", ...
type deviceKind string

// partialChecksums tells whether frames received on the device may be
// CHECKSUM_PARTIAL, their L4 checksum field holding only the pseudo-header
// sum. Hardware drivers ("device") deliver what was on the wire (virtio_net
// turns guest checksum offload off while native XDP runs), and so do bonds
// of them; any other kind (veth, netkit, tuntap, bridge, macvlan, ipvlan,
// vlan, vxlan, ...) may hand on what a peer or the local stack sent
// unfinished, and is treated so.
func (k deviceKind) partialChecksums() bool { return k != "device" && k != "bond" }

func (d *Datapath) deviceKind(iface *net.Interface) (deviceKind, error) {
	l, err := d.netlink.LinkByIndex(iface.Index)
	if err != nil {
		return "", fmt.Errorf("device %s: %w", iface.Name, err)
	}
	return deviceKind(l.Type()), nil
}

// detachXDP removes an XDP attachment an earlier run pinned on iface, for a
// device where this run wants none (another --xdp-mode, or auto on a
// virtual device).
func (d *Datapath) detachXDP(iface *net.Interface) {
	pin := filepath.Join(linksDir(d.cfg.BPFFS), iface.Name+"_xdp")
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			d.log.Warn("unusable pinned xdp link, removing it", "pin", pin, "err", err)
			_ = os.Remove(pin)
		}
		return
	}
	defer l.Close()
	if linkIfindex(l) == iface.Index {
		if err := l.Detach(); err != nil && !errors.Is(err, os.ErrNotExist) {
			d.log.Warn("detach xdp of an earlier run", "dev", iface.Name, "err", err)
		} else {
			d.log.Info("detached xdp attached by an earlier run", "dev", iface.Name)
		}
	}
	_ = l.Unpin()
}

func (d *Datapath) attachXDP(iface *net.Interface) error {
	return d.attachPinned(iface, "xdp", d.objs.XdpLb, func() (link.Link, string, error) {
		attach := func(flags link.XDPAttachFlags) (link.Link, error) {
			return link.AttachXDP(link.XDPOptions{Program: d.objs.XdpLb, Interface: iface.Index, Flags: flags})
		}
		switch d.cfg.XDPMode {
		case XDPGeneric:
			l, err := attach(link.XDPGenericMode)
			return l, "generic", err
		case XDPNative:
			l, err := attach(link.XDPDriverMode)
			return l, "native", err
		}
		l, err := attach(link.XDPDriverMode)
		if err == nil {
			return l, "native", nil
		}
		d.log.Warn("native xdp unavailable, falling back to generic", "dev", iface.Name, "err", err)
		// Generic XDP sees the skbs the stack built, which may be
		// CHECKSUM_PARTIAL on any device: flag it before it runs.
		if err := d.setDeviceFlags(iface.Index, devFlagPartialChecksums); err != nil {
			return nil, "", err
		}
		l, err = attach(link.XDPGenericMode)
		return l, "generic", err
	})
}

// attachPinned attaches prog to iface through a link pinned in the bpffs, so
// the attachment outlives the agent. A link pinned by an earlier run on the
// same device gets the new program atomically instead: no packet sees the
// device without a program.
func (d *Datapath) attachPinned(iface *net.Interface, hook string, prog *ebpf.Program, attach func() (link.Link, string, error)) error {
	pin := filepath.Join(linksDir(d.cfg.BPFFS), iface.Name+"_"+hook)
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		if linkIfindex(l) == iface.Index {
			if err := l.Update(prog); err == nil {
				d.record(Attachment{Device: iface.Name, Ifindex: iface.Index, Hook: hook, Mode: "updated", link: l})
				d.log.Info("updated pinned attachment", "dev", iface.Name, "hook", hook)
				return nil
			} else {
				d.log.Warn("update of pinned attachment failed, attaching anew", "dev", iface.Name, "hook", hook, "err", err)
			}
		}
		// A stale pin (device re-created) or one that cannot take the program.
		_ = l.Unpin()
		_ = l.Close()
	} else if !errors.Is(err, os.ErrNotExist) {
		d.log.Warn("unusable pinned link, removing it", "pin", pin, "err", err)
		_ = os.Remove(pin)
	}

	l, mode, err := attach()
	if err != nil {
		return fmt.Errorf("attach %s to %s: %w", hook, iface.Name, err)
	}
	if err := l.Pin(pin); err != nil {
		l.Close()
		return fmt.Errorf("pin %s link of %s: %w", hook, iface.Name, err)
	}
	d.record(Attachment{Device: iface.Name, Ifindex: iface.Index, Hook: hook, Mode: mode, link: l})
	d.log.Info("attached", "dev", iface.Name, "hook", hook, "mode", mode)
	return nil
}

func (d *Datapath) record(a Attachment) {
	d.attachMu.Lock()
	d.attached = append(d.attached, a)
	d.attachMu.Unlock()
}

func linkIfindex(l link.Link) int {
	info, err := l.Info()
	if err != nil {
		return -1
	}
	if x := info.XDP(); x != nil {
		return int(x.Ifindex)
	}
	if t := info.TCX(); t != nil {
		return int(t.Ifindex)
	}
	return -1
}

// devFlagPartialChecksums is DEV_F_PARTIAL_CSUM of bpf/lib/consts.h: XDP on
// the device translates only frames whose checksum it verified complete.
const devFlagPartialChecksums = uint32(datapathDeviceFlagsDEV_F_PARTIAL_CSUM)

// syncDevices records, per attached device, the address remote flows leaving
// through it are SNAT'd to and whether its frames may carry partial
// checksums.
func (d *Datapath) syncDevices() error {
	want := map[uint32]datapathDeviceValue{}
	for _, dev := range d.cfg.Devices {
		iface, err := net.InterfaceByName(dev)
		if err != nil {
			return fmt.Errorf("device %s: %w", dev, err)
		}
		addrs, err := interfaceIPv4s(iface)
		if err != nil {
			return err
		}
		kind, err := d.deviceKind(iface)
		if err != nil {
			return err
		}
		var v datapathDeviceValue
		if kind.partialChecksums() || d.cfg.XDPMode == XDPGeneric || d.genericXDPAttached(iface) {
			v.Flags |= devFlagPartialChecksums
		}
		if len(addrs) > 0 {
			v.Addr = addrToBE(addrs[0])
			extra := snatExtras(addrs, d.cfg.SNATAddresses)
			if len(extra) > MaxSNATExtra {
				d.log.Warn("more SNAT addresses than a device can use", "dev", dev, "using", extra[:MaxSNATExtra], "unused", extra[MaxSNATExtra:])
				extra = extra[:MaxSNATExtra]
			}
			for i, a := range extra {
				v.SnatAddrs[i] = addrToBE(a)
			}
			v.SnatExtra = uint32(len(extra))
			if len(d.cfg.SNATAddresses) > 0 {
				d.log.Info("SNAT source addresses", "dev", dev, "addrs", append([]netip.Addr{addrs[0]}, extra...))
			}
		} else {
			d.log.Warn("device has no IPv4 address: flows to remote backends through it will be dropped", "dev", dev)
		}
		want[uint32(iface.Index)] = v
	}
	var (
		key   uint32
		val   datapathDeviceValue
		stale []uint32
	)
	it := d.objs.Devices.Iterate()
	for it.Next(&key, &val) {
		if _, ok := want[key]; !ok {
			stale = append(stale, key)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read devices map: %w", err)
	}
	for _, k := range stale {
		if err := d.objs.Devices.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete device %d: %w", k, err)
		}
	}
	for k, v := range want {
		if err := d.objs.Devices.Update(k, v, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("write device %d: %w", k, err)
		}
	}
	return nil
}

// MaxSNATExtra is how many SNAT addresses a device may have besides its
// first (MAX_SNAT_EXTRA of bpf/lib/consts.h).
const MaxSNATExtra = len(datapathDeviceValue{}.SnatAddrs)

// snatExtras are a device's addresses (addrs, its first in front) that
// SNAT may use besides the first: those inside prefixes, in order.
func snatExtras(addrs []netip.Addr, prefixes []netip.Prefix) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs[1:] {
		if slices.ContainsFunc(prefixes, func(p netip.Prefix) bool { return p.Contains(a) }) {
			out = append(out, a)
		}
	}
	return out
}

// genericXDPAttached tells whether an XDP program (an earlier run's, kept
// pinned) runs in generic mode on iface.
func (d *Datapath) genericXDPAttached(iface *net.Interface) bool {
	l, err := d.netlink.LinkByIndex(iface.Index)
	if err != nil {
		return false
	}
	x := l.Attrs().Xdp
	return x != nil && x.Attached && x.AttachMode == xdpAttachedSKB
}

// xdpAttachedSKB is XDP_ATTACHED_SKB of linux/if_link.h: generic XDP.
const xdpAttachedSKB = 2

// setDeviceFlags adds flags to iface's entry in the devices map.
func (d *Datapath) setDeviceFlags(ifindex int, flags uint32) error {
	var v datapathDeviceValue
	if err := d.objs.Devices.Lookup(uint32(ifindex), &v); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("read device %d: %w", ifindex, err)
	}
	v.Flags |= flags
	if err := d.objs.Devices.Update(uint32(ifindex), v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("write device %d: %w", ifindex, err)
	}
	return nil
}

// DeviceIPv4s returns the IPv4 addresses of the named devices, in order:
// the node addresses NodePorts are served on.
func DeviceIPv4s(devices []string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, dev := range devices {
		iface, err := net.InterfaceByName(dev)
		if err != nil {
			return nil, fmt.Errorf("device %s: %w", dev, err)
		}
		addrs, err := interfaceIPv4s(iface)
		if err != nil {
			return nil, err
		}
		out = append(out, addrs...)
	}
	return out, nil
}

func interfaceIPv4s(iface *net.Interface) ([]netip.Addr, error) {
	addrs, err := iface.Addrs()
	if err != nil {
		return nil, fmt.Errorf("addresses of %s: %w", iface.Name, err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		ipnet, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipnet.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if ip.Is4() && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() {
			out = append(out, ip)
		}
	}
	return out, nil
}

// Check reports a datapath that no longer works: a program detached from
// a device it was attached to (a bpf link detached by another tool, or
// its device gone), or maps that cannot be read.
func (d *Datapath) Check() error {
	for _, a := range d.Attachments() {
		info, err := a.link.Info()
		if err != nil {
			return fmt.Errorf("%s attachment of %s: %w", a.Hook, a.Device, err)
		}
		// A detached device link reports ifindex 0.
		if (info.XDP() != nil || info.TCX() != nil) && linkIfindex(a.link) != a.Ifindex {
			return fmt.Errorf("%s program no longer attached to %s", a.Hook, a.Device)
		}
	}
	if _, err := d.Stats(); err != nil {
		return fmt.Errorf("read datapath counters: %w", err)
	}
	return nil
}
