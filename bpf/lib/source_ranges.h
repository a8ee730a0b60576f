/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * loadBalancerSourceRanges: a restricted frontend (FE_F_SOURCE_RANGES)
 * accepts new flows only from client prefixes listed for its service.
 */
#ifndef NODEGRESS_SOURCE_RANGES_H
#define NODEGRESS_SOURCE_RANGES_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "maps.h"
#include "structs.h"

static __always_inline int source_range_allows(__u32 svc_id, __be32 client)
{
	struct source_range_key key = {
	    .prefixlen = 64,
	    .svc_id = svc_id,
	    .addr = client,
	};

	return bpf_map_lookup_elem(&source_ranges, &key) != NULL;
}

#endif /* NODEGRESS_SOURCE_RANGES_H */
