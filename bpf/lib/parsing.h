/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Header parsing shared by the XDP and tc programs. Every read is bounds
 * checked against data_end before it happens; a packet that is too short for
 * what its headers claim gets a malformed reason, never an out-of-bounds read.
 */
#ifndef NODEGRESS_PARSING_H
#define NODEGRESS_PARSING_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>

#include "consts.h"
#include "structs.h"

#define IP_MF	  0x2000
#define IP_OFFSET 0x1fff

/* A parsed IPv4 TCP or UDP packet; pointers are valid until data moves. */
struct packet {
	struct ethhdr *eth;
	struct iphdr *ip;
	__be16 *ports;	/* source port, then destination port */
	__u16 *l4_csum; /* TCP or UDP checksum field */
	__u32 l3_off;	/* offset of the IPv4 header from the packet start */
	__u32 l4_off;	/* offset of the TCP/UDP header */
	void *data_end;
	__u32 len;	/* bytes from the Ethernet header to data_end */
	__u8 tcp_flags; /* byte 13 of the TCP header, 0 for UDP */
	/* TCP: the offset of the timestamp option's TSval from the TCP
	 * header (tcp_ts.h), 0 for none; set by the hook */
	__u16 ts_field;
	/* The IPv4 length of the packet, or of each segment of a GSO skb,
	 * that forwarding checks against the route's MTU (0: none). */
	__u16 mtu_len;
	struct flow_tuple tuple;
};

#define ICMP_DEST_UNREACH  3
#define ICMP_PORT_UNREACH  3
#define ICMP_FRAG_NEEDED   4
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12
#define IP_DF		   0x4000

/*
 * An ICMP error quoting a TCP or UDP packet of a flow the datapath may have
 * translated: where its parts are, and the quoted packet's tuple as quoted.
 */
struct icmp_error {
	__u32 icmp_off;	 /* the ICMP header */
	__u32 inner_off; /* the quoted IPv4 header (without options) */
	struct flow_tuple inner;
};

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

/*
 * parse_packet fills pkt and returns 0 for an IPv4 TCP/UDP packet whose
 * ports can be read, else the reason to give the packet. wire_len is the
 * whole packet's length: in tc only the headers are sure to be linear
 * (data_end), the payload of a GSO skb is not.
 */
static __always_inline int parse_packet(void *data, void *data_end,
					__u32 wire_len, struct packet *pkt)
{
	struct ethhdr *eth = data;
	struct iphdr *ip;
	__u32 ip_len, tot_len;
	void *l4;

	pkt->len = wire_len;
	pkt->data_end = data_end;
	if ((void *)(eth + 1) > data_end)
		return REASON_DROP_MALFORMED_L2;
	pkt->eth = eth;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return REASON_PASS_NOT_IPV4;

	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return REASON_DROP_MALFORMED_IP;
	if (ip->version != 4 || ip->ihl < 5)
		return REASON_DROP_MALFORMED_IP;
	ip_len = ip->ihl * 4;
	tot_len = bpf_ntohs(ip->tot_len);
	if ((void *)ip + ip_len > data_end)
		return REASON_DROP_MALFORMED_IP;
	/* Trailing bytes (Ethernet padding) are fine; missing ones are not. */
	if (tot_len < ip_len || tot_len > wire_len - sizeof(*eth))
		return REASON_DROP_MALFORMED_IP;
	pkt->ip = ip;
	pkt->l3_off = sizeof(*eth);
	pkt->l4_off = sizeof(*eth) + ip_len;

	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return REASON_PASS_FRAGMENT;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return REASON_PASS_NOT_TCP_UDP;

	l4 = (void *)ip + ip_len;
	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;

		if ((void *)(tcp + 1) > data_end || tcp->doff < 5 ||
		    ip_len + tcp->doff * 4 > tot_len)
			return REASON_DROP_MALFORMED_L4;
		pkt->l4_csum = &tcp->check;
		pkt->tcp_flags = ((__u8 *)tcp)[13];
	} else {
		struct udphdr *udp = l4;

		if ((void *)(udp + 1) > data_end ||
		    bpf_ntohs(udp->len) < sizeof(*udp) ||
		    ip_len + bpf_ntohs(udp->len) > tot_len)
			return REASON_DROP_MALFORMED_L4;
		pkt->l4_csum = &udp->check;
		pkt->tcp_flags = 0;
	}
	pkt->ports = l4;

	pkt->tuple.saddr = ip->saddr;
	pkt->tuple.daddr = ip->daddr;
	pkt->tuple.sport = pkt->ports[0];
	pkt->tuple.dport = pkt->ports[1];
	pkt->tuple.proto = ip->protocol;
	return 0;
}

/*
 * parse_icmp_error fills ie for a packet parse_packet passed as not TCP/UDP
 * when it is an ICMP error (destination unreachable, time exceeded,
 * parameter problem) quoting at least the ports of a TCP or UDP packet.
 * Returns 0 then. Quoted headers with options are not looked at.
 */
static __always_inline int parse_icmp_error(void *data_end,
					    const struct packet *pkt,
					    struct icmp_error *ie)
{
	struct iphdr *ip = pkt->ip, *inner;
	__u8 *icmp;
	__be16 *ports;

	if (!ip || ip->protocol != IPPROTO_ICMP ||
	    (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)))
		return -1;
	icmp = (void *)ip + ip->ihl * 4;
	if ((void *)(icmp + 8) > data_end)
		return -1;
	if (icmp[0] != ICMP_DEST_UNREACH && icmp[0] != ICMP_TIME_EXCEEDED &&
	    icmp[0] != ICMP_PARAMETERPROB)
		return -1;
	inner = (void *)(icmp + 8);
	if ((void *)(inner + 1) > data_end || inner->version != 4 ||
	    inner->ihl != 5 ||
	    (inner->protocol != IPPROTO_TCP && inner->protocol != IPPROTO_UDP))
		return -1;
	ports = (void *)(inner + 1);
	if ((void *)(ports + 2) > data_end)
		return -1;
	ie->icmp_off = pkt->l4_off;
	ie->inner_off = pkt->l4_off + 8;
	ie->inner.saddr = inner->saddr;
	ie->inner.daddr = inner->daddr;
	ie->inner.sport = ports[0];
	ie->inner.dport = ports[1];
	ie->inner.proto = inner->protocol;
	return 0;
}

#endif /* NODEGRESS_PARSING_H */
