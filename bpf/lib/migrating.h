/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Holding the packets of flows an upgrade has not copied yet. An agent
 * whose maps are laid out differently from the pinned ones copies the
 * previous agent's flows into its own maps before its programs replace
 * the old ones, and once more right after: a flow the old programs
 * started in between is unknown to the new maps for that moment. Taken
 * for a new flow, its next segment would get another SNAT port or TCP
 * timestamp offset, and a reply to its SNAT port would meet the host
 * stack's RST. While migrating_flows is set, such packets are dropped
 * (drop_state_migrating) for TCP to retransmit once the flow is copied;
 * what can start a flow, and every packet the host or another path
 * owns, goes on as always.
 */
#ifndef NODEGRESS_MIGRATING_H
#define NODEGRESS_MIGRATING_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

#include "consts.h"
#include "maps.h"
#include "parsing.h"
#include "structs.h"

/*
 * Set by the agent from just before its programs are attached until the
 * previous agent's conntrack and reverse NAT entries are all copied. A
 * global of this object (its .bss), not a pinned map: the previous agent's
 * programs, which know all their flows, never see it.
 */
__u32 migrating_flows;

static __always_inline int state_migrating(void)
{
	return migrating_flows != 0;
}

/* mid_tcp_flow: a TCP segment that cannot start a connection. */
static __always_inline int mid_tcp_flow(const struct packet *pkt)
{
	return pkt->tuple.proto == IPPROTO_TCP &&
	       !(pkt->tcp_flags & TCP_FLAG_SYN);
}

/* is_snat_addr: addr is one the datapath SNATs flows on dev to. */
static __always_inline int is_snat_addr(const struct device_value *dev,
					__be32 addr)
{
	__u32 i;

	if (addr == dev->addr)
		return 1;
	for (i = 0; i < MAX_SNAT_EXTRA; i++) {
		if (i >= dev->snat_extra)
			break;
		if (dev->snat_addrs[i] == addr)
			return 1;
	}
	return 0;
}

/*
 * reply_not_copied_in tells whether a packet to a SNAT port without a
 * reverse NAT entry, arriving on device ifindex, is held: while migrating,
 * to one of the device's SNAT addresses, and owned by no socket of the
 * host (which would otherwise answer it with a RST or an ICMP error). The
 * host's own connections and listeners in the range are untouched.
 */
static __always_inline int
reply_not_copied_in(void *ctx, const struct packet *pkt, __u32 ifindex)
{
	struct bpf_sock_tuple t = {};
	struct device_value *dev;
	struct bpf_sock *sk;

	if (!state_migrating())
		return 0;
	dev = bpf_map_lookup_elem(&devices, &ifindex);
	if (!dev || !is_snat_addr(dev, pkt->tuple.daddr))
		return 0;
	t.ipv4.saddr = pkt->tuple.saddr;
	t.ipv4.daddr = pkt->tuple.daddr;
	t.ipv4.sport = pkt->tuple.sport;
	t.ipv4.dport = pkt->tuple.dport;
	if (pkt->tuple.proto == IPPROTO_TCP)
		sk = bpf_skc_lookup_tcp(ctx, &t, sizeof(t.ipv4),
					BPF_F_CURRENT_NETNS, 0);
	else if (pkt->tuple.proto == IPPROTO_UDP)
		sk = bpf_sk_lookup_udp(ctx, &t, sizeof(t.ipv4),
				       BPF_F_CURRENT_NETNS, 0);
	else
		return 0;
	if (sk) {
		bpf_sk_release(sk);
		return 0;
	}
	return 1;
}

/*
 * reply_not_copied_out tells whether an untracked packet leaving an
 * external device is held: while migrating, mid-flow TCP that came in
 * from a local pod's device (a local backend's reply whose flow is not
 * copied yet would leave untranslated). The node's own packets
 * (ingress_ifindex 0) and packets forwarded from an external device (the
 * datapath's own redirects among them) are untouched.
 */
static __always_inline int reply_not_copied_out(const struct packet *pkt,
						__u32 ingress_ifindex)
{
	if (!state_migrating() || !mid_tcp_flow(pkt) || !ingress_ifindex)
		return 0;
	return !bpf_map_lookup_elem(&devices, &ingress_ifindex);
}

#endif /* NODEGRESS_MIGRATING_H */
