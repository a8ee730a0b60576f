package loader

import (
	"errors"
	"fmt"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// isPeerDevice tells whether tc may hand packets routed out of l to its
// peer with bpf_redirect_peer: the host end of a veth or netkit pair, other
// than the external devices the datapath runs on.
func (d *Datapath) isPeerDevice(l netlink.Link) bool {
	t := l.Type()
	return (t == "veth" || t == "netkit") && !slices.Contains(d.cfg.Devices, l.Attrs().Name)
}

// watchPeerDevices keeps the peer_devices map equal to the namespace's
// peer devices (isPeerDevice) while the datapath is open, when
// Config.PodRedirect is set; otherwise it empties the map.
func (d *Datapath) watchPeerDevices() error {
	m := d.objs.PeerDevices
	if !d.cfg.PodRedirect {
		return syncPeerDevices(m, nil)
	}
	ns, err := netns.Get()
	if err != nil {
		return fmt.Errorf("peer devices: network namespace: %w", err)
	}
	updates := make(chan netlink.LinkUpdate, 256)
	done := make(chan struct{})
	// Subscribed before listing, so that no change falls in between.
	err = netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
		Namespace: &ns,
		ErrorCallback: func(err error) {
			d.log.Warn("watching devices for pod redirect", "err", err)
		},
	})
	if err != nil {
		ns.Close()
		return fmt.Errorf("peer devices: subscribe to links: %w", err)
	}
	stop := func() {
		close(done)
		ns.Close()
	}
	links, err := d.netlink.LinkList()
	if err != nil {
		stop()
		return fmt.Errorf("peer devices: list links: %w", err)
	}
	var want []uint32
	for _, l := range links {
		if d.isPeerDevice(l) {
			want = append(want, uint32(l.Attrs().Index))
		}
	}
	if err := syncPeerDevices(m, want); err != nil {
		stop()
		return err
	}
	d.log.Info("pod redirect on", "peer devices", len(want))
	go d.followPeerDevices(updates, done)
	d.stopPeers = stop
	return nil
}

// followPeerDevices applies link updates to peer_devices until done. When
// the kernel's stream breaks, the map is emptied: packets then take the
// host's routing, which is slower but never wrong.
func (d *Datapath) followPeerDevices(updates <-chan netlink.LinkUpdate, done <-chan struct{}) {
	m := d.objs.PeerDevices
	for u := range updates {
		idx := uint32(u.Attrs().Index)
		var err error
		if u.Header.Type == unix.RTM_NEWLINK && d.isPeerDevice(u.Link) {
			err = m.Put(idx, uint8(1))
		} else if err = m.Delete(idx); errors.Is(err, ebpf.ErrKeyNotExist) {
			err = nil
		}
		if err != nil {
			d.log.Warn("updating peer devices", "ifindex", idx, "err", err)
		}
	}
	select {
	case <-done:
	default:
		d.log.Warn("lost the device watch: local pods are reached through the host's routing")
		if err := syncPeerDevices(m, nil); err != nil {
			d.log.Warn("emptying peer devices", "err", err)
		}
	}
}

// syncPeerDevices makes m hold exactly the ifindexes want.
func syncPeerDevices(m *ebpf.Map, want []uint32) error {
	var (
		k     uint32
		v     uint8
		stale []uint32
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		if !slices.Contains(want, k) {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("peer devices: read: %w", err)
	}
	for _, k := range stale {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("peer devices: delete %d: %w", k, err)
		}
	}
	for _, k := range want {
		if err := m.Put(k, uint8(1)); err != nil {
			return fmt.Errorf("peer devices: add %d: %w", k, err)
		}
	}
	return nil
}
