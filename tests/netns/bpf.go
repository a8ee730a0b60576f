package netns

import (
	"fmt"
	"net"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/nodegress/nodegress/tests/internal/xdpstub"
)

// AttachXDPPass attaches an XDP_PASS program in native mode to dev inside the
// namespace, detached in t.Cleanup.
//
// A frame XDP_TX'd or redirected into a veth is only received if the peer of
// that veth has an XDP program attached (checked on kernel 6.18; enabling GRO
// on the peer was not enough). Topologies give this stub to the client/switch
// side peer of every node's external veth, standing in for a real NIC or
// switch port that accepts any frame. Pod-side veths never get one: local
// delivery must work without it.
func (n *NS) AttachXDPPass(dev string) {
	n.t.Helper()
	var l link.Link
	err := n.Do(func() error {
		var err error
		l, err = xdpstub.AttachLink(dev)
		return err
	})
	if err != nil {
		n.t.Fatalf("netns %s: %v", n.Name, err)
	}
	n.t.Cleanup(func() { _ = l.Close() })
}

// TCXPrograms counts the programs attached to dev's tcx ingress and egress
// hooks.
func (n *NS) TCXPrograms(dev string) (ingress, egress int, err error) {
	err = n.Do(func() error {
		iface, err := net.InterfaceByName(dev)
		if err != nil {
			return fmt.Errorf("look up %s: %w", dev, err)
		}
		for _, q := range []struct {
			at  ebpf.AttachType
			out *int
		}{{ebpf.AttachTCXIngress, &ingress}, {ebpf.AttachTCXEgress, &egress}} {
			res, err := link.QueryPrograms(link.QueryOptions{Target: iface.Index, Attach: q.at})
			if err != nil {
				return fmt.Errorf("query %s programs on %s: %w", q.at, dev, err)
			}
			*q.out = len(res.Programs)
		}
		return nil
	})
	return ingress, egress, err
}
