/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The outcome of the datapath's lookups for one packet, decided once by code
 * shared between XDP and tc and then carried out by each hook in its own way
 * (direct writes in XDP, checksum-aware skb helpers in tc).
 */
#ifndef NODEGRESS_DECISION_H
#define NODEGRESS_DECISION_H

#include <linux/types.h>

#include "structs.h"

enum action {
	ACT_PASS = 0, /* leave the packet untouched, let the kernel have it */
	ACT_DROP,     /* drop it (the reason says why) */
	ACT_NAT_PASS, /* rewrite to xlated, then up the stack (local pod) */
	ACT_FORWARD,  /* rewrite, set MACs, send out ifindex */
	ACT_FORWARD_NEIGH, /* rewrite, let the kernel resolve the neighbour (tc)
			    */
};

struct decision {
	__u16 reason; /* enum reason */
	__u8 verdict; /* enum verdict */
	__u8 action;  /* enum action */
	__u32 svc_id;
	__u32 backend_id;
	__u32 ifindex; /* egress device for ACT_FORWARD* */
	__be32 nexthop;
	__u8 smac[6];
	__u8 dmac[6];
	struct flow_tuple xlated;
};

#endif /* NODEGRESS_DECISION_H */
