/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Incremental Internet checksum updates (RFC 1624) for the XDP path, where
 * no skb helpers exist, and a full check of an L4 checksum for devices whose
 * frames may carry unfinished (CHECKSUM_PARTIAL) ones. Values are
 * summed as they lie in memory (network order): one's complement sums do not
 * depend on byte order as long as every operand is taken the same way.
 */
#ifndef NODEGRESS_CSUM_H
#define NODEGRESS_CSUM_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

static __always_inline __u32 csum_add32(__u32 sum, __u32 addend)
{
	sum += addend;
	return sum + (sum < addend);
}

static __always_inline __u16 csum_fold32(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* HC' = ~(~HC + ~m + m') for a 32-bit field m. */
static __always_inline void csum_replace4(__u16 *sum, __be32 from, __be32 to)
{
	__u32 s = (__u16) ~*sum;

	s = csum_add32(s, ~from);
	s = csum_add32(s, to);
	*sum = csum_fold32(s);
}

/* HC' = ~(~HC + ~m + m') for a 16-bit field m. */
static __always_inline void csum_replace2(__u16 *sum, __be16 from, __be16 to)
{
	__u32 s = (__u16) ~*sum;

	s = csum_add32(s, (__u16)~from);
	s = csum_add32(s, to);
	*sum = csum_fold32(s);
}

/* Full checksums are summed in blocks of CSUM_BLOCK bytes, at most
 * CSUM_MAX_BLOCKS of them: enough for a 9000-byte jumbo frame. */
#define CSUM_BLOCK	256
#define CSUM_MAX_BLOCKS 36

/* Adds the len bytes at p to sum when len is one of the tail sizes. */
#define CSUM_TAIL_STEP(n)                                                      \
	do {                                                                   \
		if (len & (n)) {                                               \
			if (p + (n) > (__u8 *)data_end)                        \
				return 0;                                      \
			sum = bpf_csum_diff(NULL, 0, (__be32 *)p, (n),         \
					    (__u32)sum);                       \
			if (sum < 0)                                           \
				return 0;                                      \
			p += (n);                                              \
		}                                                              \
	} while (0)

/*
 * l4_csum_complete tells whether the TCP/UDP checksum of a linear IPv4
 * packet (ip and l4 inside [.., data_end)) is complete and right: the one's
 * complement sum of the pseudo-header and the whole segment is all ones. A
 * CHECKSUM_PARTIAL frame, whose field holds only the pseudo-header sum, fails
 * (but for a 1 in 65536 coincidence, when its bytes are valid as they are).
 * A UDP checksum of 0 means none was computed: nothing to keep right.
 */
static __always_inline int l4_csum_complete(const struct iphdr *ip, void *l4,
					    void *data_end)
{
	struct {
		__be32 saddr;
		__be32 daddr;
		__u8 zero;
		__u8 proto;
		__be16 len;
	} pseudo;
	__u8 *p = l4;
	__u32 len;
	__s64 sum;
	int i;

	if (ip->protocol == IPPROTO_UDP) {
		struct udphdr *udp = l4;

		if ((void *)(udp + 1) > data_end)
			return 0;
		if (udp->check == 0)
			return 1;
		len = bpf_ntohs(udp->len);
	} else {
		len = bpf_ntohs(ip->tot_len) - ip->ihl * 4;
	}
	pseudo.saddr = ip->saddr;
	pseudo.daddr = ip->daddr;
	pseudo.zero = 0;
	pseudo.proto = ip->protocol;
	pseudo.len = bpf_htons(len);
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&pseudo, sizeof(pseudo), 0);
	if (sum < 0)
		return 0;

	for (i = 0; i < CSUM_MAX_BLOCKS; i++) {
		if (len < CSUM_BLOCK)
			break;
		if (p + CSUM_BLOCK > (__u8 *)data_end)
			return 0;
		sum =
		    bpf_csum_diff(NULL, 0, (__be32 *)p, CSUM_BLOCK, (__u32)sum);
		if (sum < 0)
			return 0;
		p += CSUM_BLOCK;
		len -= CSUM_BLOCK;
	}
	if (len >= CSUM_BLOCK)
		return 0; /* longer than we verify: leave it to tc */
	CSUM_TAIL_STEP(128);
	CSUM_TAIL_STEP(64);
	CSUM_TAIL_STEP(32);
	CSUM_TAIL_STEP(16);
	CSUM_TAIL_STEP(8);
	CSUM_TAIL_STEP(4);
	len &= 3;
	if (len) {
		/* The last odd bytes count as if padded with zeros. */
		__u8 last[4] = {};

		if (p + 1 > (__u8 *)data_end)
			return 0;
		last[0] = p[0];
		if (len > 1) {
			if (p + 2 > (__u8 *)data_end)
				return 0;
			last[1] = p[1];
		}
		if (len > 2) {
			if (p + 3 > (__u8 *)data_end)
				return 0;
			last[2] = p[2];
		}
		sum = bpf_csum_diff(NULL, 0, (__be32 *)last, sizeof(last),
				    (__u32)sum);
		if (sum < 0)
			return 0;
	}
	return csum_fold32((__u32)sum) == 0;
}

/*
 * xdp_l4_csum_complete is l4_csum_complete for the packet of an XDP program,
 * defined (once) in the program file: a global function, so that the
 * verifier checks its loop once, not once for every path that reaches it.
 */
int xdp_l4_csum_complete(struct xdp_md *ctx);

#endif /* NODEGRESS_CSUM_H */
