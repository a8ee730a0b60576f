/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * ICMP errors the datapath answers with itself: port unreachable for a new
 * flow to a service without endpoints (as kube-proxy rejects it: the sender
 * sees "connection refused" at once), and fragmentation needed for a packet
 * too big for the route to its backend (path MTU discovery). The packet is
 * turned into the reply and sent back out the device it came in on.
 */
#ifndef NODEGRESS_REJECT_H
#define NODEGRESS_REJECT_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "csum.h"
#include "parsing.h"

/* linux/icmp.h drags in libc headers; the 8 bytes an error needs. */
struct icmp_error_hdr {
	__u8 type;
	__u8 code;
	__u16 checksum;
	__u32 unused;
};

/* The whole reply: headers, then the offending IP header and 8 bytes. */
struct icmp_reject {
	struct ethhdr eth;
	struct iphdr ip;
	struct icmp_error_hdr icmp;
	struct iphdr orig_ip;
	__u8 orig_l4[8];
} __attribute__((packed));

#define ICMP_REJECT_TOS 0xc0 /* internetwork control, as the kernel's */

static __always_inline __u16 csum_of(void *p, __u32 len)
{
	return csum_fold32(bpf_csum_diff(NULL, 0, p, len, 0));
}

/*
 * tc_icmp_reply rewrites the skb into an ICMP error (type, code; mtu for
 * "fragmentation needed") to pkt's sender, from the address it sent to; the
 * caller redirects it out the ingress device. Returns non-zero (drop) for
 * packets it cannot answer: VLAN-tagged frames or IP options.
 */
static __always_inline int tc_icmp_reply(struct __sk_buff *skb,
					 const struct packet *pkt, __u8 type,
					 __u8 code, __u16 mtu)
{
	struct icmp_reject r = {};

	if (pkt->l3_off != sizeof(struct ethhdr) ||
	    pkt->l4_off != sizeof(struct ethhdr) + sizeof(struct iphdr))
		return -1;
	if (bpf_skb_load_bytes(skb, pkt->l3_off, &r.orig_ip, sizeof(r.orig_ip)))
		return -1;
	if (bpf_skb_load_bytes(skb, pkt->l4_off, r.orig_l4, sizeof(r.orig_l4)))
		return -1;
	__builtin_memcpy(r.eth.h_dest, pkt->eth->h_source, ETH_ALEN);
	__builtin_memcpy(r.eth.h_source, pkt->eth->h_dest, ETH_ALEN);
	r.eth.h_proto = bpf_htons(ETH_P_IP);
	r.ip.version = 4;
	r.ip.ihl = 5;
	r.ip.tos = ICMP_REJECT_TOS;
	r.ip.tot_len = bpf_htons(sizeof(r) - sizeof(r.eth));
	r.ip.ttl = 64;
	r.ip.protocol = IPPROTO_ICMP;
	r.ip.saddr = r.orig_ip.daddr;
	r.ip.daddr = r.orig_ip.saddr;
	r.ip.check = csum_of(&r.ip, sizeof(r.ip));
	r.icmp.type = type;
	r.icmp.code = code;
	r.icmp.unused = bpf_htonl(mtu); /* RFC 1191: next-hop MTU */
	r.icmp.checksum = csum_of(&r.icmp, sizeof(r.icmp) + sizeof(r.orig_ip) +
					       sizeof(r.orig_l4));
	if (bpf_skb_change_tail(skb, sizeof(r), 0))
		return -1;
	return bpf_skb_store_bytes(skb, 0, &r, sizeof(r), 0);
}

/* The reply to a new flow of a service without endpoints. */
static __always_inline int tc_reject(struct __sk_buff *skb,
				     const struct packet *pkt)
{
	return tc_icmp_reply(skb, pkt, ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, 0);
}

#endif /* NODEGRESS_REJECT_H */
