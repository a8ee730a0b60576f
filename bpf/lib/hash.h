/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Flow hash for backend selection and SNAT port choice: the final mix of
 * Bob Jenkins' lookup3, over the 5-tuple and a per-node seed, so every
 * packet of a flow hashes alike and flows spread evenly over backends.
 */
#ifndef NODEGRESS_HASH_H
#define NODEGRESS_HASH_H

#include <linux/types.h>

#include "structs.h"

#define HASH_INITVAL 0xdeadbeef

static __always_inline __u32 rol32(__u32 word, unsigned int shift)
{
	return (word << shift) | (word >> ((-shift) & 31));
}

static __always_inline __u32 flow_hash(const struct flow_tuple *t, __u32 seed)
{
	__u32 a = t->saddr + HASH_INITVAL + seed;
	__u32 b = t->daddr + HASH_INITVAL + seed;
	__u32 c = (((__u32)t->sport << 16) | t->dport) + HASH_INITVAL + seed +
		  t->proto;

	c ^= b;
	c -= rol32(b, 14);
	a ^= c;
	a -= rol32(c, 11);
	b ^= a;
	b -= rol32(a, 25);
	c ^= b;
	c -= rol32(b, 16);
	a ^= c;
	a -= rol32(c, 4);
	b ^= a;
	b -= rol32(a, 14);
	c ^= b;
	c -= rol32(b, 24);
	return c;
}

#endif /* NODEGRESS_HASH_H */
