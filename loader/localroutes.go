package loader

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// routeProtocol marks the local routes the datapath adds, so it finds and
// removes exactly its own (see /etc/iproute2/rt_protos: 0x4e is unused).
const routeProtocol netlink.RouteProtocol = 0x4e

// syncLocalRoutes makes the kernel deliver L7 frontend addresses that are
// not on any local device (LoadBalancer IPs of the published ingress
// Service): it adds "local" routes for them, so the packet reaches socket
// lookup, where sk_steer hands it to the proxy. Routes it added for
// addresses no longer wanted are removed.
func (d *Datapath) syncLocalRoutes(addrs map[netip.Addr]bool) error {
	lo, err := d.netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("local routes: %w", err)
	}
	have, err := ourLocalRoutes(d.netlink)
	if err != nil {
		return err
	}
	ours := map[netip.Addr]netlink.Route{}
	for _, r := range have {
		if r.Dst == nil {
			continue
		}
		if a, ok := netip.AddrFromSlice(r.Dst.IP); ok {
			ours[a.Unmap()] = r
		}
	}
	local, err := localAddrs(d.netlink)
	if err != nil {
		return err
	}

	var errs []error
	for a := range addrs {
		if _, ok := ours[a]; ok || local[a] {
			continue
		}
		r := localRoute(a, lo.Attrs().Index)
		if err := d.netlink.RouteAdd(&r); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("add local route for %s: %w", a, err))
			continue
		}
		d.log.Info("added local route for L7 frontend", "frontend", a)
	}
	for a, r := range ours {
		if addrs[a] {
			continue
		}
		if err := d.netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete local route for %s: %w", a, err))
			continue
		}
		d.log.Info("removed local route", "frontend", a)
	}
	return errors.Join(errs...)
}

func localRoute(a netip.Addr, loIndex int) netlink.Route {
	return netlink.Route{
		LinkIndex: loIndex,
		Dst:       &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)},
		Table:     unix.RT_TABLE_LOCAL,
		Type:      unix.RTN_LOCAL,
		Scope:     netlink.SCOPE_HOST,
		Protocol:  routeProtocol,
	}
}

func ourLocalRoutes(h *netlink.Handle) ([]netlink.Route, error) {
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_LOCAL, Protocol: routeProtocol},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return nil, fmt.Errorf("list local routes: %w", err)
	}
	return routes, nil
}

// localAddrs are the addresses configured on the namespace's devices.
func localAddrs(h *netlink.Handle) (map[netip.Addr]bool, error) {
	list, err := h.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	out := map[netip.Addr]bool{}
	for _, a := range list {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			out[ip.Unmap()] = true
		}
	}
	return out, nil
}

// removeLocalRoutes deletes every local route the datapath added in the
// calling thread's network namespace.
func removeLocalRoutes() error {
	h, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	have, err := ourLocalRoutes(h)
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range have {
		if err := h.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete local route %s: %w", r.Dst, err))
		}
	}
	return errors.Join(errs...)
}
