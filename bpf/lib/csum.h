/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Incremental Internet checksum updates (RFC 1624) for the XDP path, where
 * the packet carries complete checksums and no skb helpers exist. Values are
 * summed as they lie in memory (network order): one's complement sums do not
 * depend on byte order as long as every operand is taken the same way.
 */
#ifndef NODEGRESS_CSUM_H
#define NODEGRESS_CSUM_H

#include <linux/types.h>

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

#endif /* NODEGRESS_CSUM_H */
