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

/* Trace events the ring buffer had no room for (with or without bytes). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} trace_lost SEC(".maps");

static __always_inline void trace_count_lost(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&trace_lost, &zero);

	if (n)
		(*n)++;
}

static __always_inline int reason_is_noise(__u16 reason)
{
	return reason == REASON_PASS_NOT_IPV4 ||
	       reason == REASON_PASS_NOT_TCP_UDP ||
	       reason == REASON_PASS_NO_FRONTEND ||
	       reason == REASON_PASS_NOT_TRACKED ||
	       reason == REASON_PASS_ICMP_ERROR;
}

/*
 * Counts the decision; returns the datapath config when it is also to be
 * traced, NULL when not. *reason is the reason as counted.
 */
static __always_inline struct dp_config *account_count(const struct decision *d,
						       __u32 len, __u32 *reason)
{
	struct reason_stats *st;
	struct dp_config *cfg;

	*reason = d->reason;
	if (*reason >= REASON_MAX)
		*reason = REASON_UNSPEC;
	st = bpf_map_lookup_elem(&stats, reason);
	if (st) {
		st->packets++;
		st->bytes += len;
	}

	if (reason_is_noise(*reason))
		return NULL;
	cfg = get_config();
	if (!cfg || !(cfg->flags & CFG_F_TRACE))
		return NULL;
	return cfg;
}

static __always_inline void trace_fill(struct trace_event *ev, __u32 ifindex,
				       __u8 stage,
				       const struct flow_tuple *orig,
				       const struct decision *d, __u32 reason,
				       __u32 len)
{
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
}

static __always_inline void trace_emit(__u32 ifindex, __u8 stage,
				       const struct flow_tuple *orig,
				       const struct decision *d, __u32 reason,
				       __u32 len)
{
	struct trace_event *ev;

	ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		trace_count_lost();
		return;
	}
	trace_fill(ev, ifindex, stage, orig, d, reason, len);
	bpf_ringbuf_submit(ev, 0);
}

/* Accounting of a decision without a packet (socket-level hooks). */
static __always_inline void account(__u32 ifindex, __u8 stage,
				    const struct flow_tuple *orig,
				    const struct decision *d, __u32 len)
{
	__u32 reason;

	if (!account_count(d, len, &reason))
		return;
	trace_emit(ifindex, stage, orig, d, reason, len);
}

#endif /* NODEGRESS_TRACE_H */
