// Package xdpstub loads the smallest possible XDP program, one that passes
// every frame, and attaches it to a veth.
//
// A frame sent with XDP_TX or redirected into a veth is only received if the
// peer of that veth has an XDP program attached in native mode: without one
// the peer has no NAPI context and veth_xdp_xmit drops the frame. A real NIC
// or switch port would simply accept it, so the test topologies give every
// peer of a node's external veth this stub.
package xdpstub

import (
	"fmt"
	"net"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
)

// xdpPass is XDP_PASS from enum xdp_action.
const xdpPass = 2

// Load loads the XDP_PASS program. The caller closes it.
func Load() (*ebpf.Program, error) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "xdp_pass_stub",
		Type: ebpf.XDP,
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, xdpPass),
			asm.Return(),
		},
		License: "GPL",
	})
	if err != nil {
		return nil, fmt.Errorf("load xdp pass stub: %w", err)
	}
	return prog, nil
}

// AttachLink attaches the stub in native mode to dev in the calling thread's
// network namespace through a BPF link. The stub stays attached until the
// returned link is closed or the device goes away.
func AttachLink(dev string) (link.Link, error) {
	iface, err := net.InterfaceByName(dev)
	if err != nil {
		return nil, fmt.Errorf("look up %s: %w", dev, err)
	}
	prog, err := Load()
	if err != nil {
		return nil, err
	}
	// The link holds its own reference to the program.
	defer prog.Close()
	l, err := link.AttachXDP(link.XDPOptions{
		Program:   prog,
		Interface: iface.Index,
		Flags:     link.XDPDriverMode,
	})
	if err != nil {
		return nil, fmt.Errorf("attach xdp pass stub to %s: %w", dev, err)
	}
	return l, nil
}

// AttachPersistent attaches the stub in native mode to dev in the calling
// thread's network namespace through netlink, so it stays attached after the
// process exits (until the device is deleted). Scripts use it, where no
// process lives long enough to hold a BPF link.
func AttachPersistent(dev string) error {
	l, err := netlink.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("look up %s: %w", dev, err)
	}
	prog, err := Load()
	if err != nil {
		return err
	}
	defer prog.Close()
	if err := netlink.LinkSetXdpFdWithFlags(l, prog.FD(), nl.XDP_FLAGS_DRV_MODE); err != nil {
		return fmt.Errorf("attach xdp pass stub to %s: %w", dev, err)
	}
	return nil
}
