/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Translating ICMP errors of translated flows (tc): the outer addresses,
 * and the quoted packet's addresses and ports, so that the error reaches
 * the host that sent the quoted packet and names its flow as that host
 * knows it. The ICMP checksum covers the quoted bytes and is fixed up for
 * each of them, the quoted IPv4 checksum included.
 */
#ifndef NODEGRESS_ICMP_NAT_H
#define NODEGRESS_ICMP_NAT_H

#include <linux/bpf.h>
#include <linux/ip.h>
#include <linux/stddef.h>
#include <bpf/bpf_helpers.h>

#include "decision.h"
#include "nat.h"
#include "parsing.h"

#define ICMP_CSUM_OFF 2

/* An outer address: no pseudo-header in the ICMP checksum. */
static __always_inline int tc_icmp_outer4(struct __sk_buff *skb,
					  const struct packet *pkt,
					  __u32 field_off, __be32 from,
					  __be32 to)
{
	if (from == to)
		return 0;
	return tc_store_addr(skb, pkt->l3_off, field_off, from, to);
}

/* A quoted IPv4 address: its header checksum, and the ICMP checksum. */
static __always_inline int tc_icmp_inner4(struct __sk_buff *skb,
					  const struct icmp_error *ie,
					  __u32 field_off, __be32 from,
					  __be32 to)
{
	__u32 check_off = ie->inner_off + offsetof(struct iphdr, check);
	__u16 check_old, check_new;

	if (from == to)
		return 0;
	if (bpf_skb_load_bytes(skb, check_off, &check_old, sizeof(check_old)) ||
	    bpf_l3_csum_replace(skb, check_off, from, to, sizeof(to)) ||
	    bpf_skb_load_bytes(skb, check_off, &check_new, sizeof(check_new)) ||
	    bpf_skb_store_bytes(skb, ie->inner_off + field_off, &to, sizeof(to),
				0) ||
	    bpf_l4_csum_replace(skb, ie->icmp_off + ICMP_CSUM_OFF, from, to,
				sizeof(to)) ||
	    bpf_l4_csum_replace(skb, ie->icmp_off + ICMP_CSUM_OFF, check_old,
				check_new, sizeof(check_new)))
		return -1;
	return 0;
}

/* A quoted port: the ICMP checksum only (the quoted TCP/UDP checksum is
 * left as it is, as receivers of ICMP errors do not check it). */
static __always_inline int tc_icmp_inner_port(struct __sk_buff *skb,
					      const struct icmp_error *ie,
					      __u32 field_off, __be16 from,
					      __be16 to)
{
	if (from == to)
		return 0;
	if (bpf_skb_store_bytes(
		skb, ie->inner_off + sizeof(struct iphdr) + field_off, &to,
		sizeof(to), 0) ||
	    bpf_l4_csum_replace(skb, ie->icmp_off + ICMP_CSUM_OFF, from, to,
				sizeof(to)))
		return -1;
	return 0;
}

/* Translates the ICMP error to d->xlated (outer) and d->inner_xlated. */
static __always_inline int tc_rewrite_icmp(struct __sk_buff *skb,
					   const struct packet *pkt,
					   const struct icmp_error *ie,
					   const struct decision *d)
{
	if (tc_icmp_outer4(skb, pkt, offsetof(struct iphdr, saddr),
			   pkt->tuple.saddr, d->xlated.saddr) ||
	    tc_icmp_outer4(skb, pkt, offsetof(struct iphdr, daddr),
			   pkt->tuple.daddr, d->xlated.daddr) ||
	    tc_icmp_inner4(skb, ie, offsetof(struct iphdr, saddr),
			   ie->inner.saddr, d->inner_xlated.saddr) ||
	    tc_icmp_inner4(skb, ie, offsetof(struct iphdr, daddr),
			   ie->inner.daddr, d->inner_xlated.daddr) ||
	    tc_icmp_inner_port(skb, ie, 0, ie->inner.sport,
			       d->inner_xlated.sport) ||
	    tc_icmp_inner_port(skb, ie, 2, ie->inner.dport,
			       d->inner_xlated.dport))
		return -1;
	return 0;
}

#endif /* NODEGRESS_ICMP_NAT_H */
