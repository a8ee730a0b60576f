// go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * trace_drop (tp_btf/kfree_skb; trace_drop_tp on the skb:kfree_skb tracepoint
 * where tp_btf is refused) reports kernel drops of packets of flows the
 * datapath translated or steered. It is an object of its own: the agent
 * loads and attaches it only while a trace client asks for kernel drops,
 * against the datapath's maps, and a kernel without BTF for the tracepoint
 * costs that feature only.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "lib/kdrop.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* Keep the event in BTF, so bpf2go generates its Go twin. */
const struct kdrop_event *unused_kdrop_event __attribute__((unused));

/* The agent tells the two kinds of events apart by their size. */
_Static_assert(sizeof(struct kdrop_event) != sizeof(struct trace_event),
	       "kdrop_event and trace_event must differ in size");
/* Packet records are a trace_packet and at least one byte more. */
_Static_assert(sizeof(struct kdrop_event) < sizeof(struct trace_packet),
	       "every packet record must be longer than a kdrop_event");

SEC("tp_btf/kfree_skb")
int BPF_PROG(trace_drop, struct sk_buff *skb, void *location,
	     enum skb_drop_reason reason)
{
	kdrop_report(skb, (__u64)(long)location, (__u32)reason);
	return 0;
}

/* The skb:kfree_skb tracepoint's record, as far as it is read here. */
struct trace_event_raw_kfree_skb {
	void *skbaddr;
	void *location;
	enum skb_drop_reason reason;
} __attribute__((preserve_access_index));

/*
 * trace_drop_tp is trace_drop for kernels that refuse tp_btf programs on
 * kfree_skb: the same report from the classic tracepoint's record. Kernels
 * before drop reasons (5.17) report reason 0.
 */
SEC("tracepoint/skb/kfree_skb")
int trace_drop_tp(struct trace_event_raw_kfree_skb *ctx)
{
	__u32 reason = 0;

	if (bpf_core_field_exists(ctx->reason))
		reason = (__u32)ctx->reason;
	kdrop_report((struct sk_buff *)ctx->skbaddr, (__u64)(long)ctx->location,
		     reason);
	return 0;
}
