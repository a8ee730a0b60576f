/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Direct server return: the encapsulation that carries a client's packet
 * from the node it reached to its backend's node, and back out of it.
 *
 * The packet, already DNAT'd to the backend, travels in GENEVE (RFC 8926)
 * over UDP, built here because the kernel may have no tunnel devices. One
 * critical option names the frontend the client used, so the backend's node
 * can give the backend's replies the frontend as their source and send them
 * to the client directly:
 *
 *   outer IPv4 (20) | UDP to DSR_GENEVE_PORT (8) | GENEVE, protocol IPv4 (8)
 *   | option class DSR_OPT_CLASS type DSR_OPT_TYPE: frontend addr, port (12)
 *   | the client's packet as DNAT'd
 */
#ifndef NODEGRESS_DSR_H
#define NODEGRESS_DSR_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>

#include "csum.h"
#include "decision.h"
#include "parsing.h"
#include "structs.h"

#define DSR_GENEVE_PORT 6081
/* An option class of GENEVE's experimental range (0xfff0-0xffff). */
#define DSR_OPT_CLASS 0xfff0
/* Type 1 with the critical bit: a receiver that does not know the option
 * must drop the packet rather than deliver it without translating replies. */
#define DSR_OPT_TYPE	  0x81
#define DSR_OPT_DATA_LEN  8 /* frontend address, port, 2 reserved bytes */
#define GENEVE_F_CRITICAL 0x40
#define DSR_OUTER_TTL	  64

struct geneve_hdr {
	__u8 ver_opt_len; /* version (2 bits, 0), options length in words */
	__u8 flags;	  /* O, C, reserved */
	__be16 proto;	  /* the payload's EtherType */
	__u8 vni[3];
	__u8 reserved;
};

struct dsr_frontend_opt {
	__be16 opt_class;
	__u8 type;
	__u8 len; /* 3 reserved bits, data length in words */
	__be32 addr;
	__be16 port;
	__u16 reserved;
};

/* Everything the ingress node puts between Ethernet and the inner IPv4. */
struct dsr_hdr {
	struct iphdr ip;
	struct udphdr udp;
	struct geneve_hdr geneve;
	struct dsr_frontend_opt opt;
};

#define DSR_ENCAP_LEN ((__u32)sizeof(struct dsr_hdr))
_Static_assert(sizeof(struct dsr_hdr) == 48, "dsr_hdr has no padding");
#define DSR_OPTS_WORDS (sizeof(struct dsr_frontend_opt) / 4)

/* The IPv4 header checksum of a header without options. */
static __always_inline __u16 ipv4_hdr_csum(const struct iphdr *ip)
{
	const __u16 *w = (const __u16 *)ip;
	__u32 sum = 0;
	int i;

#pragma unroll
	for (i = 0; i < (int)(sizeof(*ip) / 2); i++)
		sum += w[i];
	return csum_fold32(sum);
}

/*
 * dsr_build fills h for encapsulating an inner IPv4 packet of inner_len
 * bytes that a client sent to frontend, as d says: from d->encap_saddr to
 * d->encap_daddr. The outer header forbids fragmentation: the ingress node
 * checked the route's MTU, and fragments would reach the backend's node as
 * pieces its datapath cannot decapsulate.
 */
static __always_inline void dsr_build(struct dsr_hdr *h,
				      const struct decision *d,
				      const struct flow_tuple *frontend,
				      __u16 inner_len)
{
	__builtin_memset(h, 0, sizeof(*h));
	h->ip.version = 4;
	h->ip.ihl = 5;
	h->ip.tot_len = bpf_htons(inner_len + DSR_ENCAP_LEN);
	h->ip.frag_off = bpf_htons(IP_DF);
	h->ip.ttl = DSR_OUTER_TTL;
	h->ip.protocol = IPPROTO_UDP;
	h->ip.saddr = d->encap_saddr;
	h->ip.daddr = d->encap_daddr;
	h->ip.check = ipv4_hdr_csum(&h->ip);
	/* No UDP checksum (RFC 8926 allows it over IPv4): the inner packet
	 * carries its own. */
	h->udp.source = d->encap_sport;
	h->udp.dest = bpf_htons(DSR_GENEVE_PORT);
	h->udp.len = bpf_htons(inner_len + DSR_ENCAP_LEN - sizeof(h->ip));
	h->geneve.ver_opt_len = DSR_OPTS_WORDS;
	h->geneve.flags = GENEVE_F_CRITICAL;
	h->geneve.proto = bpf_htons(ETH_P_IP);
	h->opt.opt_class = bpf_htons(DSR_OPT_CLASS);
	h->opt.type = DSR_OPT_TYPE;
	h->opt.len = DSR_OPT_DATA_LEN / 4;
	h->opt.addr = frontend->daddr;
	h->opt.port = frontend->dport;
}

/* A spread of outer source ports, so that routers hash flows apart. */
static __always_inline __be16 dsr_source_port(__u32 hash)
{
	return bpf_htons(0xc000 | (hash & 0x3fff));
}

/* Where dsr_parse found the inner packet and what the option said. */
struct dsr_packet {
	__u32 encap_len; /* bytes between Ethernet and the inner IPv4 */
	__be32 frontend_addr;
	__be16 frontend_port;
	__u8 tcp_flags;
	struct flow_tuple inner;
};

/* Whether pkt may be a DSR packet, before looking inside. */
static __always_inline int dsr_candidate(const struct packet *pkt)
{
	return pkt->tuple.proto == IPPROTO_UDP &&
	       pkt->tuple.dport == bpf_htons(DSR_GENEVE_PORT);
}

/*
 * dsr_parse reads a candidate's GENEVE header and, when its first option is
 * nodegress's frontend, the inner packet. Returns 0 for a DSR packet, the
 * drop reason for one whose inner packet is not an IPv4 TCP/UDP packet it
 * can translate, and -1 for GENEVE traffic of others (left alone).
 */
static __always_inline int dsr_parse(void *data_end, const struct packet *pkt,
				     struct dsr_packet *dp)
{
	struct geneve_hdr *gn = (void *)(pkt->ports + 4);
	struct dsr_frontend_opt *opt = (void *)(gn + 1);
	struct iphdr *inner;
	__u32 opts_len;
	__be16 *ports;
	__u8 *l4;

	if ((void *)(opt + 1) > data_end)
		return -1;
	if ((gn->ver_opt_len >> 6) != 0 || gn->proto != bpf_htons(ETH_P_IP) ||
	    opt->opt_class != bpf_htons(DSR_OPT_CLASS) ||
	    opt->type != DSR_OPT_TYPE ||
	    (opt->len & 0x1f) != DSR_OPT_DATA_LEN / 4)
		return -1;
	opts_len = (gn->ver_opt_len & 0x3f) * 4;
	if (opts_len < sizeof(*opt))
		return REASON_DROP_DSR_MALFORMED;
	inner = (void *)(gn + 1) + opts_len;
	if ((void *)(inner + 1) > data_end || inner->version != 4 ||
	    inner->ihl < 5)
		return REASON_DROP_DSR_MALFORMED;
	if (inner->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return REASON_DROP_DSR_MALFORMED;
	l4 = (void *)inner + inner->ihl * 4;
	ports = (void *)l4;
	if (inner->protocol == IPPROTO_TCP) {
		if ((void *)(l4 + 14) > data_end)
			return REASON_DROP_DSR_MALFORMED;
		dp->tcp_flags = l4[13];
	} else if (inner->protocol == IPPROTO_UDP) {
		if ((void *)(l4 + 8) > data_end)
			return REASON_DROP_DSR_MALFORMED;
		dp->tcp_flags = 0;
	} else {
		return REASON_DROP_DSR_MALFORMED;
	}
	dp->encap_len = (void *)inner - (void *)pkt->ip;
	dp->frontend_addr = opt->addr;
	dp->frontend_port = opt->port;
	dp->inner.saddr = inner->saddr;
	dp->inner.daddr = inner->daddr;
	dp->inner.sport = ports[0];
	dp->inner.dport = ports[1];
	dp->inner.proto = inner->protocol;
	dp->inner.pad[0] = 0;
	dp->inner.pad[1] = 0;
	dp->inner.pad[2] = 0;
	return 0;
}

/*
 * xdp_dsr_encap puts the encapsulation and a new Ethernet header (d's MACs)
 * in front of the IPv4 packet of inner_len bytes that ctx holds.
 */
static __always_inline int xdp_dsr_encap(struct xdp_md *ctx,
					 const struct decision *d,
					 const struct flow_tuple *frontend,
					 __u16 inner_len)
{
	struct dsr_hdr h;
	struct ethhdr *eth;
	void *data, *data_end;

	dsr_build(&h, d, frontend, inner_len);
	if (bpf_xdp_adjust_head(ctx, -(int)DSR_ENCAP_LEN))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) + DSR_ENCAP_LEN > data_end)
		return -1;
	__builtin_memcpy(eth->h_dest, d->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, d->smac, ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_IP);
	__builtin_memcpy((void *)(eth + 1), &h, DSR_ENCAP_LEN);
	return 0;
}

/*
 * tc_dsr_encap is xdp_dsr_encap for an skb; the Ethernet header stays for
 * the caller to address. The skb learns that it now carries a UDP tunnel,
 * so that a GSO skb is cut into encapsulated segments and a partial inner
 * checksum is still finished on the way out.
 */
static __always_inline int tc_dsr_encap(struct __sk_buff *skb,
					const struct decision *d,
					const struct flow_tuple *frontend,
					__u16 inner_len)
{
	struct dsr_hdr h;

	dsr_build(&h, d, frontend, inner_len);
	if (bpf_skb_adjust_room(skb, DSR_ENCAP_LEN, BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_FIXED_GSO |
				    BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 |
				    BPF_F_ADJ_ROOM_ENCAP_L4_UDP))
		return -1;
	return bpf_skb_store_bytes(skb, sizeof(struct ethhdr), &h,
				   DSR_ENCAP_LEN, 0)
		   ? -1
		   : 0;
}

/* tc_dsr_decap strips what dsr_parse found in front of the inner packet. */
static __always_inline int tc_dsr_decap(struct __sk_buff *skb,
					const struct dsr_packet *dp)
{
	if (dp->encap_len > 60 + DSR_ENCAP_LEN + 252)
		return -1;
	return bpf_skb_adjust_room(skb, -(__s32)dp->encap_len, BPF_ADJ_ROOM_MAC,
				   BPF_F_ADJ_ROOM_FIXED_GSO)
		   ? -1
		   : 0;
}

#endif /* NODEGRESS_DSR_H */
