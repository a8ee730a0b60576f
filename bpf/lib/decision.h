/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The outcome of the datapath's lookups for one packet, decided once by code
 * shared between XDP and tc and then carried out by each hook in its own way
 * (direct writes in XDP, checksum-aware skb helpers in tc).
 */
#ifndef NODEGRESS_DECISION_H
#define NODEGRESS_DECISION_H

#include <linux/types.h>

#include "consts.h"
#include "structs.h"

enum action {
	ACT_PASS = 0, /* leave the packet untouched, let the kernel have it */
	ACT_DROP,     /* drop it (the reason says why) */
	ACT_NAT_PASS, /* rewrite to xlated, then up the stack (local pod) */
	ACT_FORWARD,  /* rewrite, set MACs, send out ifindex */
	ACT_FORWARD_NEIGH, /* rewrite, let the kernel resolve the neighbour (tc)
			    */
	ACT_REJECT,	   /* answer with ICMP port unreachable (tc) */
	ACT_FRAG_NEEDED,   /* answer with ICMP fragmentation needed (tc) */
	ACT_DECAP, /* strip DSR's encapsulation, pass the rest up (tc) */
	ACT_REDIRECT_PEER, /* rewrite, set MACs, into ifindex's peer (tc) */
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
	__u16 mtu; /* ACT_FRAG_NEEDED: the route's MTU */
	/* DSR: a forward goes encapsulated from encap_saddr to encap_daddr
	 * (the backend's node; 0: not encapsulated), UDP source port
	 * encap_sport */
	__be16 encap_sport;
	__be32 encap_saddr;
	__be32 encap_daddr;
	/* TCP timestamp translation: ts_delta is added to the 32-bit field
	 * ts_field bytes from the packet's start (0: none) */
	__u32 ts_delta;
	__u16 ts_field;
	struct flow_tuple xlated;
	/* ICMP errors: the quoted packet as translated (xlated is the outer) */
	struct flow_tuple inner_xlated;
};

/*
 * The verdict of every reason, from REASON_TABLE. Global, so that it is in
 * the object's BTF: the Go side checks its own table against it.
 */
#define REASON_VERDICT_ENTRY(name, verdict) [name] = verdict,
const __u8 reason_verdicts[REASON_MAX] = {REASON_TABLE(REASON_VERDICT_ENTRY)};
#undef REASON_VERDICT_ENTRY

static __always_inline int reason_drops(__u32 reason)
{
	return reason >= REASON_MAX || reason_verdicts[reason] == VERDICT_DROP;
}

static __always_inline void decide(struct decision *d, __u8 action,
				   __u8 verdict, __u16 reason)
{
	d->action = action;
	d->verdict = verdict;
	d->reason = reason;
}

static __always_inline void decide_drop(struct decision *d, __u16 reason)
{
	decide(d, ACT_DROP, VERDICT_DROP, reason);
}

/* Leaves the packet as it is: xlated stays equal to the original tuple. */
static __always_inline void decide_pass(struct decision *d, __u16 reason)
{
	decide(d, ACT_PASS, VERDICT_PASS, reason);
}

/*
 * A packet the parser refused (reason says why): dropped or passed as the
 * reason's verdict says. on_egress: the host's own packets are never
 * dropped on the way out, never ours.
 */
static __always_inline void decide_unparsed(struct decision *d, __u16 reason,
					    int on_egress)
{
	if (on_egress && reason_drops(reason))
		reason = REASON_PASS_NOT_TRACKED;
	if (reason_drops(reason))
		decide_drop(d, reason);
	else
		decide_pass(d, reason);
}

/* A forward that would leave with TTL <= 1 is dropped instead. */
static __always_inline void decide_ttl(struct decision *d, __u8 ttl)
{
	if ((d->action == ACT_FORWARD || d->action == ACT_FORWARD_NEIGH ||
	     d->action == ACT_REDIRECT_PEER) &&
	    ttl <= 1)
		decide_drop(d, REASON_DROP_TTL_EXCEEDED);
}

/* XDP passed the packet on for tc to translate (tc must not skip it). */
static __always_inline int decision_left_to_tc(const struct decision *d)
{
	return d->reason == REASON_PASS_FIB ||
	       d->reason == REASON_PASS_ICMP_ERROR ||
	       d->reason == REASON_PASS_DSR ||
	       d->reason == REASON_PASS_CSUM_PARTIAL ||
	       d->reason == REASON_PASS_REJECT;
}

/* The hook could not carry the decision out on this packet. */
static __always_inline void decide_rewrite_failed(struct decision *d,
						  __u16 reason)
{
	decide_drop(d, reason);
}

#endif /* NODEGRESS_DECISION_H */
