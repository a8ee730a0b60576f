package controller

import (
	"cmp"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// The desired Ingress status: which addresses the Ingresses of nodegress's
// class should show, computed from the Ingresses, their classes, the
// publish Service or the node Leases and Nodes. Pure functions; the
// elected writer (status_writer.go) applies what they decide.

// StatusInput is everything DesiredIngressStatus reads.
type StatusInput struct {
	Ingresses      []*networkingv1.Ingress
	IngressClasses []*networkingv1.IngressClass
	// ControllerName selects nodegress's IngressClasses, as
	// L7Config.ControllerName. Empty means DefaultControllerName.
	ControllerName string
	// PublishService is "namespace/name" or empty, as
	// L7Config.PublishService; Services are looked up in for it.
	PublishService string
	Services       []*corev1.Service
	// NodeLeases are the Leases of the election namespace (others are
	// ignored) and Nodes the cluster's Node objects.
	NodeLeases []*coordinationv1.Lease
	Nodes      []*corev1.Node
	Now        time.Time
	// Settling is a leader's first moments (see statusTiming.settle): an
	// address of a node whose Lease is held but expired stays where a
	// status shows it, and is not added elsewhere.
	Settling bool
}

// IngressStatusChange is an Ingress whose status.loadBalancer.ingress must
// become Want.
type IngressStatusChange struct {
	Ingress *networkingv1.Ingress
	Want    []networkingv1.IngressLoadBalancerIngress
}

// DesiredIngressStatus returns the Ingresses of nodegress's class whose
// status differs (in any order) from the addresses they should show, in
// namespace/name order; the same addresses for all of them. It returns an
// error, and no changes, when the publish Service does not exist.
func DesiredIngressStatus(in StatusInput) ([]IngressStatusChange, error) {
	var publish *corev1.Service
	if in.PublishService != "" {
		ref, err := parseServiceRef(in.PublishService, false)
		if err != nil {
			return nil, fmt.Errorf("publish service: %w", err)
		}
		for _, s := range in.Services {
			if s.Namespace == ref.Namespace && s.Name == ref.Name {
				publish = s
			}
		}
	}
	addrs, err := statusAddresses(in.PublishService != "", publish, in.NodeLeases, in.Nodes, in.Now)
	if err != nil {
		return nil, err
	}
	sel := newIngressClassSelector(in.IngressClasses, in.ControllerName)
	ings := slices.Clone(in.Ingresses)
	slices.SortFunc(ings, func(a, b *networkingv1.Ingress) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	var out []IngressStatusChange
	for _, ing := range ings {
		if !sel.isOurs(ing) {
			continue
		}
		cur := ing.Status.LoadBalancer.Ingress
		if want := addrs.want(cur, in.Settling); !lbIngressEqual(cur, want) {
			out = append(out, IngressStatusChange{Ingress: ing, Want: want})
		}
	}
	return out, nil
}

// statusAddrs is what the Ingresses of ours should show.
type statusAddrs struct {
	// live are the addresses to show, sorted.
	live []networkingv1.IngressLoadBalancerIngress
	// stale are the addresses of nodes whose Lease is held but expired:
	// their agent stopped renewing without releasing it (it crashed, or it
	// is cut off from the API server, or the API server was away).
	stale []networkingv1.IngressLoadBalancerIngress
	// nextExpiry is when the first counted Lease expires (zero if none):
	// the moment the answer changes without any event.
	nextExpiry time.Time
}

func (a statusAddrs) equal(b statusAddrs) bool {
	return lbIngressEqual(a.live, b.live) && lbIngressEqual(a.stale, b.stale)
}

// want is the status an Ingress showing cur should get. While settling,
// stale addresses it shows are kept.
func (a statusAddrs) want(cur []networkingv1.IngressLoadBalancerIngress, settling bool) []networkingv1.IngressLoadBalancerIngress {
	out := slices.Clone(a.live)
	if !settling || len(a.stale) == 0 {
		return out
	}
	for _, c := range cur {
		if slices.ContainsFunc(a.stale, func(s networkingv1.IngressLoadBalancerIngress) bool { return reflect.DeepEqual(s, c) }) {
			out = append(out, c)
		}
	}
	return normalizeLBIngress(out)
}

// statusAddresses computes what every Ingress of ours shows: the publish
// Service's load balancer addresses when usePublish, else the InternalIPs
// of the nodes with a running node Lease.
func statusAddresses(usePublish bool, publish *corev1.Service, leases []*coordinationv1.Lease, nodes []*corev1.Node, now time.Time) (statusAddrs, error) {
	var out statusAddrs
	if usePublish {
		if publish == nil {
			return out, errPublishServiceMissing
		}
		for _, lb := range publish.Status.LoadBalancer.Ingress {
			if lb.IP == "" && lb.Hostname == "" {
				continue
			}
			out.live = append(out.live, networkingv1.IngressLoadBalancerIngress{IP: lb.IP, Hostname: lb.Hostname})
		}
		out.live = normalizeLBIngress(out.live)
		return out, nil
	}
	byName := make(map[string]*corev1.Node, len(nodes))
	for _, n := range nodes {
		byName[n.Name] = n
	}
	for _, l := range leases {
		node, expires, ok := nodeLeaseHolder(l)
		if !ok {
			continue
		}
		n := byName[node]
		if n == nil {
			continue
		}
		live := expires.After(now)
		counted := false
		for _, na := range n.Status.Addresses {
			if na.Type != corev1.NodeInternalIP {
				continue
			}
			a, err := netip.ParseAddr(na.Address)
			if err != nil || !a.Unmap().Is4() {
				continue
			}
			lb := networkingv1.IngressLoadBalancerIngress{IP: a.Unmap().String()}
			if live {
				out.live = append(out.live, lb)
			} else {
				out.stale = append(out.stale, lb)
			}
			counted = true
		}
		if live && counted && (out.nextExpiry.IsZero() || expires.Before(out.nextExpiry)) {
			out.nextExpiry = expires
		}
	}
	out.live = normalizeLBIngress(out.live)
	// A node counted live through one Lease is not stale through another.
	out.stale = slices.DeleteFunc(normalizeLBIngress(out.stale), func(s networkingv1.IngressLoadBalancerIngress) bool {
		return slices.ContainsFunc(out.live, func(l networkingv1.IngressLoadBalancerIngress) bool { return reflect.DeepEqual(l, s) })
	})
	if len(out.stale) == 0 {
		out.stale = nil
	}
	return out, nil
}

// lbIngressCompare orders addresses: IPs first, numerically, then
// hostnames.
func lbIngressCompare(a, b networkingv1.IngressLoadBalancerIngress) int {
	ai, aerr := netip.ParseAddr(a.IP)
	bi, berr := netip.ParseAddr(b.IP)
	switch {
	case aerr == nil && berr == nil:
		if c := ai.Compare(bi); c != 0 {
			return c
		}
	case aerr == nil:
		return -1
	case berr == nil:
		return 1
	default:
		if c := cmp.Compare(a.IP, b.IP); c != 0 {
			return c
		}
	}
	return cmp.Compare(a.Hostname, b.Hostname)
}

// normalizeLBIngress sorts addresses and drops duplicates; nil for none.
func normalizeLBIngress(addrs []networkingv1.IngressLoadBalancerIngress) []networkingv1.IngressLoadBalancerIngress {
	if len(addrs) == 0 {
		return nil
	}
	slices.SortStableFunc(addrs, lbIngressCompare)
	return slices.CompactFunc(addrs, func(a, b networkingv1.IngressLoadBalancerIngress) bool {
		return reflect.DeepEqual(a, b)
	})
}

// lbIngressEqual compares two status lists in any order.
func lbIngressEqual(a, b []networkingv1.IngressLoadBalancerIngress) bool {
	if len(a) != len(b) {
		return false
	}
	a = slices.SortedStableFunc(slices.Values(a), lbIngressCompare)
	b = slices.SortedStableFunc(slices.Values(b), lbIngressCompare)
	return reflect.DeepEqual(a, b)
}

func lbIngressString(addrs []networkingv1.IngressLoadBalancerIngress) string {
	parts := make([]string, 0, len(addrs))
	for _, a := range addrs {
		parts = append(parts, cmp.Or(a.IP, a.Hostname))
	}
	return strings.Join(parts, ",")
}
