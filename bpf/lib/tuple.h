/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Operations on a flow's 5-tuple shared by the datapath and the kernel drop
 * tracer, so that both build map keys byte for byte alike.
 */
#ifndef NODEGRESS_TUPLE_H
#define NODEGRESS_TUPLE_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "structs.h"

/*
 * The tuple of the other direction (a packet's answer, or the packet an ICMP
 * error quotes), padding zeroed: it is a map key.
 */
static __always_inline void tuple_reverse(struct flow_tuple *out,
					  const struct flow_tuple *t)
{
	out->saddr = t->daddr;
	out->daddr = t->saddr;
	out->sport = t->dport;
	out->dport = t->sport;
	out->proto = t->proto;
	out->pad[0] = 0;
	out->pad[1] = 0;
	out->pad[2] = 0;
}

#endif /* NODEGRESS_TUPLE_H */
