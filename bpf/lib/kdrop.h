/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Kernel drops of service traffic: the kfree_skb tracepoint sees every
 * packet the kernel frees with a drop reason, on the whole machine. Only
 * those that belong to a flow nodegress translated (conntrack or
 * reverse_nat knows their tuple, in either direction), steered (their
 * destination is an L7 frontend) or watched (kdrop_watch: the L7 proxy's
 * own connections to backend pods) are reported, with the kernel's reason
 * code and the address of the code that dropped them; the agent names
 * both. Everything else costs a few map lookups and is forgotten.
 */
#ifndef NODEGRESS_KDROP_H
#define NODEGRESS_KDROP_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "consts.h"
#include "maps.h"
#include "structs.h"
#include "tuple.h"

/*
 * The few kernel fields read, relocated by CO-RE against the running
 * kernel's BTF: their offsets are the kernel's, not these declarations'.
 */
struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));

struct net {
	struct ns_common ns;
} __attribute__((preserve_access_index));

typedef struct {
	struct net *net;
} possible_net_t;

struct net_device {
	int ifindex;
	possible_net_t nd_net;
} __attribute__((preserve_access_index));

struct sk_buff {
	unsigned int len;
	struct net_device *dev;
	__be16 protocol;
	__u16 network_header;
	unsigned char *head;
} __attribute__((preserve_access_index));

/*
 * Connections the agent watches besides the translated and steered ones:
 * the L7 proxy's connections to backend pods, which no datapath map knows
 * (the proxy dials pod addresses itself). Key: the tuple of the
 * connection's first packet (proxy -> pod); the value is unused. While a
 * request trace with kernel drops runs, the proxy adds its open ones and
 * each it dials, deleting each as it closes or the trace ends; LRU evicts
 * what a crash left. Not pinned: it lives as long as the agent's program.
 */
#ifndef KDROP_WATCH_MAX
#define KDROP_WATCH_MAX 4096
#endif
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, KDROP_WATCH_MAX);
	__type(key, struct flow_tuple);
	__type(value, __u8);
} kdrop_watch SEC(".maps");

/* The kernel's enum; only the value that is not a drop is named here. */
enum skb_drop_reason {
	SKB_CONSUMED = 1,
};

/* IPv4's fragment offset bits of frag_off (host order). */
#ifndef IP_OFFSET_MASK
#define IP_OFFSET_MASK 0x1fff
#endif

/* skb->network_header when no layer set it (the kernel's ~0U as __u16). */
#define KDROP_NO_HEADER 0xffff

/*
 * One kernel drop of a tracked packet, sent on the events ring buffer. Its
 * size tells it from a trace_event there (asserted in kdrop.c).
 */
struct kdrop_event {
	__u64 ts_ns;	/* bpf_ktime_get_ns */
	__u64 location; /* kernel address of the code that dropped it */
	__u32 reason;	/* the kernel's enum skb_drop_reason */
	__u32 ifindex;	/* skb->dev, 0 when it had none */
	__u32 svc_id;
	__u32 backend_id;
	__u32 pkt_len;
	/* the network namespace of skb->dev (its inode number): ifindex is
	 * an index in there, often a pod's */
	__u32 netns;
	__u8 stage; /* STAGE_KERNEL */
	__u8 pad[3];
	/* the client's flow as conntrack keys it (client -> frontend) */
	struct flow_tuple flow;
	/* the dropped packet's tuple, as the kernel held it */
	struct flow_tuple pkt;
	__u32 pad2;
};

/* The client flow of a reply key's reverse_nat entry. */
static __always_inline void kdrop_flow_of(struct flow_tuple *flow,
					  const struct rev_nat_entry *rn,
					  __u8 proto)
{
	flow->saddr = rn->client_addr;
	flow->daddr = rn->frontend_addr;
	flow->sport = rn->client_port;
	flow->dport = rn->frontend_port;
	flow->proto = proto;
	flow->pad[0] = 0;
	flow->pad[1] = 0;
	flow->pad[2] = 0;
}

static __always_inline int kdrop_conntrack(struct kdrop_event *ev,
					   const struct flow_tuple *flow)
{
	struct ct_entry *ct = bpf_map_lookup_elem(&conntrack, flow);

	if (!ct)
		return 0;
	ev->flow = *flow;
	ev->svc_id = ct->svc_id;
	ev->backend_id = ct->backend_id;
	return 1;
}

static __always_inline int kdrop_reverse_nat(struct kdrop_event *ev,
					     const struct flow_tuple *reply)
{
	struct rev_nat_entry *rn = bpf_map_lookup_elem(&reverse_nat, reply);
	struct flow_tuple flow;

	if (!rn)
		return 0;
	kdrop_flow_of(&flow, rn, reply->proto);
	if (!kdrop_conntrack(ev, &flow))
		ev->flow = flow;
	return 1;
}

/*
 * kdrop_match tells whether the packet with tuple t belongs to a flow
 * nodegress handles, and fills in the flow and its service when it does.
 * A client's packet matches conntrack as it arrived, its reply after
 * translation back; a client's packet after DNAT (or SNAT) and the
 * backend's reply match reverse_nat; a connection to an L7 frontend
 * matches the frontend; a watched connection matches in either direction,
 * with no service.
 */
static __always_inline int kdrop_match(struct kdrop_event *ev,
				       const struct flow_tuple *t)
{
	struct frontend_value *fe;
	struct frontend_key fk = {};
	struct flow_tuple r;

	tuple_reverse(&r, t);
	if (kdrop_conntrack(ev, t) || kdrop_conntrack(ev, &r) ||
	    kdrop_reverse_nat(ev, &r) || kdrop_reverse_nat(ev, t))
		return 1;
	fk.addr = t->daddr;
	fk.port = t->dport;
	fk.proto = t->proto;
	fk.scope = FE_SCOPE_EXTERNAL;
	fe = bpf_map_lookup_elem(&frontends, &fk);
	if (fe && (fe->flags & FE_F_L7)) {
		ev->flow = *t;
		ev->svc_id = fe->svc_id;
		ev->backend_id = 0;
		return 1;
	}
	if (bpf_map_lookup_elem(&kdrop_watch, t))
		ev->flow = *t;
	else if (bpf_map_lookup_elem(&kdrop_watch, &r))
		ev->flow = r;
	else
		return 0;
	ev->svc_id = 0;
	ev->backend_id = 0;
	return 1;
}

/*
 * kdrop_tuple reads the IPv4 TCP/UDP tuple of skb from its network header
 * (the kernel's memory, so through bpf_probe_read_kernel: nothing here is
 * a packet pointer the verifier could bound). Returns 0 on success.
 */
static __always_inline int kdrop_tuple(struct sk_buff *skb,
				       struct flow_tuple *t)
{
	struct iphdr ip;
	unsigned char *head;
	__u16 nh;
	__be16 ports[2];

	if (BPF_CORE_READ(skb, protocol) != bpf_htons(ETH_P_IP))
		return -1;
	nh = BPF_CORE_READ(skb, network_header);
	if (nh == KDROP_NO_HEADER)
		return -1;
	head = BPF_CORE_READ(skb, head);
	if (!head || bpf_probe_read_kernel(&ip, sizeof(ip), head + nh))
		return -1;
	if (ip.version != 4 || ip.ihl < 5)
		return -1;
	if (ip.protocol != IPPROTO_TCP && ip.protocol != IPPROTO_UDP)
		return -1;
	/* A later fragment carries no ports. */
	if (ip.frag_off & bpf_htons(IP_OFFSET_MASK))
		return -1;
	if (bpf_probe_read_kernel(ports, sizeof(ports), head + nh + ip.ihl * 4))
		return -1;
	t->saddr = ip.saddr;
	t->daddr = ip.daddr;
	t->sport = ports[0];
	t->dport = ports[1];
	t->proto = ip.protocol;
	t->pad[0] = 0;
	t->pad[1] = 0;
	t->pad[2] = 0;
	return 0;
}

static __always_inline void kdrop_report(struct sk_buff *skb, __u64 location,
					 __u32 reason)
{
	struct flow_tuple t;
	struct kdrop_event ev = {};
	struct kdrop_event *out;

	if (reason == bpf_core_enum_value(enum skb_drop_reason, SKB_CONSUMED))
		return;
	if (kdrop_tuple(skb, &t))
		return;
	if (!kdrop_match(&ev, &t))
		return;
	out = bpf_ringbuf_reserve(&events, sizeof(*out), 0);
	if (!out)
		return;
	ev.ts_ns = bpf_ktime_get_ns();
	ev.location = location;
	ev.reason = reason;
	ev.ifindex = BPF_CORE_READ(skb, dev, ifindex);
	ev.netns = BPF_CORE_READ(skb, dev, nd_net.net, ns.inum);
	ev.pkt_len = BPF_CORE_READ(skb, len);
	ev.stage = STAGE_KERNEL;
	ev.pkt = t;
	*out = ev;
	bpf_ringbuf_submit(out, 0);
}

#endif /* NODEGRESS_KDROP_H */
