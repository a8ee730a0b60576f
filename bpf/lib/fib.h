/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Route and neighbour lookup for packets the datapath sends back out itself
 * (to remote backends, and their replies to clients), so they skip the
 * kernel's forwarding path entirely.
 */
#ifndef NODEGRESS_FIB_H
#define NODEGRESS_FIB_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "consts.h"
#include "decision.h"

#ifndef AF_INET
#define AF_INET 2
#endif

/* fib_forward's answer for a packet too big for the route (d->mtu). */
#define FIB_FRAG_NEEDED (-2)

/*
 * fib_forward fills d's egress device, next hop and MACs for sending xlated
 * out.
 * With can_resolve (tc), a missing neighbour entry still forwards: the kernel
 * resolves it (bpf_redirect_neigh). Without (XDP), the packet is left to the
 * next hook untouched. A packet of check_len bytes (0: not checked) that
 * exceeds the route's MTU gets FIB_FRAG_NEEDED, with the MTU in d->mtu.
 * Returns 0 when d says how to forward.
 */
static __always_inline int fib_forward(void *ctx, __u32 ifindex, __u8 tos,
				       __u16 check_len, struct decision *d,
				       int can_resolve)
{
	struct bpf_fib_lookup p = {};
	long rc;

	p.family = AF_INET;
	p.tos = tos;
	p.l4_protocol = d->xlated.proto;
	p.tot_len = check_len;
	p.ipv4_src = d->xlated.saddr;
	p.ipv4_dst = d->xlated.daddr;
	p.ifindex = ifindex;

	rc = bpf_fib_lookup(ctx, &p, sizeof(p), 0);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		d->action = ACT_FORWARD;
		d->ifindex = p.ifindex;
		d->nexthop = p.ipv4_dst; /* the gateway, or xlated.daddr */
		__builtin_memcpy(d->smac, p.smac, ETH_ALEN);
		__builtin_memcpy(d->dmac, p.dmac, ETH_ALEN);
		return 0;
	}
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED) {
		d->mtu = p.mtu_result;
		return FIB_FRAG_NEEDED;
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH && can_resolve) {
		d->action = ACT_FORWARD_NEIGH;
		d->ifindex = p.ifindex;
		d->nexthop = p.ipv4_dst;
		return 0;
	}
	return -1;
}

#endif /* NODEGRESS_FIB_H */
