/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Carrying out a decision on the packet: address/port rewrite with checksum
 * updates, TTL decrement and MAC rewrite for forwarded packets. XDP writes
 * the packet directly (checksums are complete on the wire); tc goes through
 * the skb helpers, which also keep CHECKSUM_PARTIAL and CHECKSUM_COMPLETE
 * skbs consistent.
 */
#ifndef NODEGRESS_NAT_H
#define NODEGRESS_NAT_H

#include <stddef.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>

#include "csum.h"
#include "decision.h"
#include "parsing.h"

/* UDP's "no checksum" value; a computed 0 is sent as 0xffff instead. */
#define UDP_CSUM_MANGLED_0 0xffff

static __always_inline void xdp_rewrite_l3_l4(const struct packet *pkt,
					      const struct decision *d)
{
	struct iphdr *ip = pkt->ip;
	__u16 *l4_csum = pkt->l4_csum;
	__be16 *ports = pkt->ports;
	int udp = pkt->tuple.proto == IPPROTO_UDP;
	int l4 = !(udp && *l4_csum == 0);

	if (d->xlated.saddr != pkt->tuple.saddr) {
		csum_replace4(&ip->check, pkt->tuple.saddr, d->xlated.saddr);
		if (l4)
			csum_replace4(l4_csum, pkt->tuple.saddr,
				      d->xlated.saddr);
		ip->saddr = d->xlated.saddr;
	}
	if (d->xlated.daddr != pkt->tuple.daddr) {
		csum_replace4(&ip->check, pkt->tuple.daddr, d->xlated.daddr);
		if (l4)
			csum_replace4(l4_csum, pkt->tuple.daddr,
				      d->xlated.daddr);
		ip->daddr = d->xlated.daddr;
	}
	if (d->xlated.sport != pkt->tuple.sport) {
		if (l4)
			csum_replace2(l4_csum, pkt->tuple.sport,
				      d->xlated.sport);
		ports[0] = d->xlated.sport;
	}
	if (d->xlated.dport != pkt->tuple.dport) {
		if (l4)
			csum_replace2(l4_csum, pkt->tuple.dport,
				      d->xlated.dport);
		ports[1] = d->xlated.dport;
	}
	if (udp && l4 && *l4_csum == 0)
		*l4_csum = UDP_CSUM_MANGLED_0;
}

/* Adds d->ts_delta to the TCP timestamp field d->ts_field (tcp_ts.h). */
static __always_inline void xdp_rewrite_ts(const struct packet *pkt,
					   const struct decision *d)
{
	__u8 *p = (__u8 *)pkt->eth + (d->ts_field & 0xff);
	__be32 from, to;

	if (!d->ts_field || (void *)(p + 4) > pkt->data_end)
		return;
	__builtin_memcpy(&from, p, sizeof(from));
	to = bpf_htonl(bpf_ntohl(from) + d->ts_delta);
	csum_replace4(pkt->l4_csum, from, to);
	__builtin_memcpy(p, &to, sizeof(to));
}

/* Like the kernel's ip_decrease_ttl: TTL is the high byte of its word. */
static __always_inline void xdp_decrease_ttl(struct iphdr *ip)
{
	__u32 check = ip->check;

	check += bpf_htons(0x0100);
	ip->check = (__u16)(check + (check >= 0xFFFF));
	ip->ttl--;
}

static __always_inline void xdp_set_macs(const struct packet *pkt,
					 const struct decision *d)
{
	__builtin_memcpy(pkt->eth->h_dest, d->dmac, ETH_ALEN);
	__builtin_memcpy(pkt->eth->h_source, d->smac, ETH_ALEN);
}

/* Writes an IPv4 address of the header at l3_off and fixes its checksum. */
static __always_inline int tc_store_addr(struct __sk_buff *skb, __u32 l3_off,
					 __u32 field_off, __be32 from,
					 __be32 to)
{
	if (bpf_l3_csum_replace(skb, l3_off + offsetof(struct iphdr, check),
				from, to, sizeof(to)) ||
	    bpf_skb_store_bytes(skb, l3_off + field_off, &to, sizeof(to), 0))
		return -1;
	return 0;
}

static __always_inline int tc_replace4(struct __sk_buff *skb,
				       const struct packet *pkt,
				       __u32 field_off, __be32 from, __be32 to,
				       __u64 l4_flags)
{
	__u32 l4_csum_off =
	    pkt->l4_off + (pkt->tuple.proto == IPPROTO_TCP
			       ? offsetof(struct tcphdr, check)
			       : offsetof(struct udphdr, check));

	if (from == to)
		return 0;
	if (bpf_l4_csum_replace(skb, l4_csum_off, from, to,
				l4_flags | BPF_F_PSEUDO_HDR | sizeof(to)) ||
	    tc_store_addr(skb, pkt->l3_off, field_off, from, to))
		return -1;
	return 0;
}

static __always_inline int tc_replace_port(struct __sk_buff *skb,
					   const struct packet *pkt,
					   __u32 field_off, __be16 from,
					   __be16 to, __u64 l4_flags)
{
	__u32 l4_csum_off =
	    pkt->l4_off + (pkt->tuple.proto == IPPROTO_TCP
			       ? offsetof(struct tcphdr, check)
			       : offsetof(struct udphdr, check));

	if (from == to)
		return 0;
	if (bpf_l4_csum_replace(skb, l4_csum_off, from, to,
				l4_flags | sizeof(to)) ||
	    bpf_skb_store_bytes(skb, pkt->l4_off + field_off, &to, sizeof(to),
				0))
		return -1;
	return 0;
}

/*
 * tc_rewrite_l3_l4 translates the packet to d->xlated. It uses only offsets
 * saved in pkt: the helpers invalidate every packet pointer.
 */
static __always_inline int tc_rewrite_l3_l4(struct __sk_buff *skb,
					    const struct packet *pkt,
					    const struct decision *d)
{
	__u64 l4_flags =
	    pkt->tuple.proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	if (tc_replace4(skb, pkt, offsetof(struct iphdr, saddr),
			pkt->tuple.saddr, d->xlated.saddr, l4_flags) ||
	    tc_replace4(skb, pkt, offsetof(struct iphdr, daddr),
			pkt->tuple.daddr, d->xlated.daddr, l4_flags) ||
	    tc_replace_port(skb, pkt, 0, pkt->tuple.sport, d->xlated.sport,
			    l4_flags) ||
	    tc_replace_port(skb, pkt, 2, pkt->tuple.dport, d->xlated.dport,
			    l4_flags))
		return -1;
	return 0;
}

/* xdp_rewrite_ts for an skb; pkt's offsets only (pointers are stale). */
static __always_inline int tc_rewrite_ts(struct __sk_buff *skb,
					 const struct packet *pkt,
					 const struct decision *d)
{
	__u32 csum_off = pkt->l4_off + offsetof(struct tcphdr, check);
	__be32 from, to;

	if (!d->ts_field)
		return 0;
	if (bpf_skb_load_bytes(skb, d->ts_field, &from, sizeof(from)))
		return -1;
	to = bpf_htonl(bpf_ntohl(from) + d->ts_delta);
	if (bpf_l4_csum_replace(skb, csum_off, from, to, sizeof(to)) ||
	    bpf_skb_store_bytes(skb, d->ts_field, &to, sizeof(to), 0))
		return -1;
	return 0;
}

static __always_inline int tc_decrease_ttl(struct __sk_buff *skb,
					   const struct packet *pkt, __u8 ttl)
{
	/* TTL and protocol share one 16-bit word of the IPv4 header. */
	__u32 word_off = pkt->l3_off + offsetof(struct iphdr, ttl);
	__u16 old_word, new_word;
	__u8 new_ttl = ttl - 1;

	old_word = bpf_htons((__u16)ttl << 8 | pkt->tuple.proto);
	new_word = bpf_htons((__u16)new_ttl << 8 | pkt->tuple.proto);
	if (bpf_l3_csum_replace(skb,
				pkt->l3_off + offsetof(struct iphdr, check),
				old_word, new_word, sizeof(new_word)) ||
	    bpf_skb_store_bytes(skb, word_off, &new_ttl, sizeof(new_ttl), 0))
		return -1;
	return 0;
}

static __always_inline int tc_set_macs(struct __sk_buff *skb,
				       const struct decision *d)
{
	if (bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_dest), d->dmac,
				ETH_ALEN, 0) ||
	    bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_source), d->smac,
				ETH_ALEN, 0))
		return -1;
	return 0;
}

#endif /* NODEGRESS_NAT_H */
