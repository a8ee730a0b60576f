/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Accounting of every decision: a per-CPU counter by reason always, and a
 * ring buffer event when the agent has tracing switched on. Passes of
 * packets that have nothing to do with nodegress are counted but not
 * traced, so a trace shows service traffic and drops, not the host's noise.
 */
#ifndef NODEGRESS_TRACE_H
#define NODEGRESS_TRACE_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "consts.h"
#include "decision.h"
#include "maps.h"
#include "structs.h"

static __always_inline int reason_is_noise(__u16 reason)
{
	return reason == REASON_PASS_NOT_IPV4 ||
	       reason == REASON_PASS_NOT_TCP_UDP ||
	       reason == REASON_PASS_NO_FRONTEND ||
	       reason == REASON_PASS_NOT_TRACKED ||
	       reason == REASON_PASS_ICMP_ERROR;
}

static __always_inline void account(__u32 ifindex, __u8 stage,
				    const struct flow_tuple *orig,
				    const struct decision *d, __u32 len)
{
	struct reason_stats *st;
	struct dp_config *cfg;
	struct trace_event *ev;
	__u32 reason = d->reason;

	if (reason >= REASON_MAX)
		reason = REASON_UNSPEC;
	st = bpf_map_lookup_elem(&stats, &reason);
	if (st) {
		st->packets++;
		st->bytes += len;
	}

	if (reason_is_noise(reason))
		return;
	cfg = get_config();
	if (!cfg || !(cfg->flags & CFG_F_TRACE))
		return;
	ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev)
		return;
	ev->ts_ns = bpf_ktime_get_ns();
	ev->ifindex = ifindex;
	ev->svc_id = d->svc_id;
	ev->backend_id = d->backend_id;
	ev->reason = reason;
	ev->stage = stage;
	ev->verdict = d->verdict;
	ev->orig = *orig;
	ev->xlated = d->xlated;
	ev->pkt_len = len;
	ev->pad = 0;
	bpf_ringbuf_submit(ev, 0);
}

#endif /* NODEGRESS_TRACE_H */
