// go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The nodegress datapath. xdp_lb (XDP) and tc_ingress (tcx ingress) forward
 * NodePort/ExternalIP/LoadBalancer traffic of external devices straight to
 * backend pods; tc_egress (tcx egress) translates local backends' replies
 * back. tc_ingress does the same work as xdp_lb for packets XDP left alone:
 * devices without XDP, and flows whose next hop the kernel must resolve first.
 * sk_steer (sk_lookup) hands connections to L7 frontends to the local proxy.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "lib/capture.h"
#include "lib/consts.h"
#include "lib/decision.h"
#include "lib/dsr.h"
#include "lib/icmp_nat.h"
#include "lib/lb.h"
#include "lib/nat.h"
#include "lib/parsing.h"
#include "lib/reject.h"
#include "lib/sock_lb.h"
#include "lib/steer.h"
#include "lib/tcp_ts.h"
#include "lib/trace.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* Keep types only the Go side reads in BTF, so bpf2go generates them. */
const struct trace_event *unused_trace_event __attribute__((unused));
const struct trace_packet *unused_trace_packet __attribute__((unused));
const enum frontend_flags *unused_frontend_flags __attribute__((unused));
const enum backend_flags *unused_backend_flags __attribute__((unused));
const enum ct_flags *unused_ct_flags __attribute__((unused));
const enum device_flags *unused_device_flags __attribute__((unused));
const enum config_flags *unused_config_flags __attribute__((unused));
const enum stage *unused_stage __attribute__((unused));
const enum verdict *unused_verdict __attribute__((unused));
const enum reason *unused_reason __attribute__((unused));
const enum frontend_scope *unused_frontend_scope __attribute__((unused));

/* Written into XDP metadata for packets XDP has fully dealt with. */
#define XDP_DONE_MAGIC 0x6e677264 /* "ngrd" */

/*
 * xdp_l4_csum_complete is l4_csum_complete for the packet of an XDP program.
 * It handles IPv4 headers without options, so that every offset is a
 * constant the verifier can follow; a packet with options gets 0 (tc then
 * rewrites it).
 */
__attribute__((noinline)) int xdp_l4_csum_complete(struct xdp_md *ctx)
{
	void *data_end = (void *)(long)ctx->data_end;
	void *data = (void *)(long)ctx->data;
	struct iphdr *ip = data + sizeof(struct ethhdr);

	if ((void *)(ip + 1) > data_end || ip->ihl != 5)
		return 0;
	return l4_csum_complete(ip, ip + 1, data_end);
}

/* tcp_ts_scan for the packet of an XDP program and of a tc program. */
__attribute__((noinline)) __u32 xdp_tcp_ts_field(struct xdp_md *ctx,
						 __u32 l4_off)
{
	return tcp_ts_scan((void *)(long)ctx->data, (void *)(long)ctx->data_end,
			   l4_off);
}

__attribute__((noinline)) __u32 tc_tcp_ts_field(struct __sk_buff *skb,
						__u32 l4_off)
{
	return tcp_ts_scan((void *)(long)skb->data, (void *)(long)skb->data_end,
			   l4_off);
}

/* Tells tc_ingress that it has nothing left to do for this packet. */
static __always_inline void xdp_mark_done(struct xdp_md *ctx)
{
	void *data, *meta;

	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(__u32)))
		return;
	meta = (void *)(long)ctx->data_meta;
	data = (void *)(long)ctx->data;
	if (meta + sizeof(__u32) > data)
		return;
	*(__u32 *)meta = XDP_DONE_MAGIC;
}

SEC("xdp")
int xdp_lb(struct xdp_md *ctx)
{
	void *data_end = (void *)(long)ctx->data_end;
	void *data = (void *)(long)ctx->data;
	__u32 ifindex = ctx->ingress_ifindex;
	struct icmp_error ie = {};
	struct dsr_packet dp = {};
	struct decision d = {};
	struct packet pkt = {};
	int ret = XDP_PASS;
	__u32 captured = 0;
	__u16 ip_len = 0;
	int reason;

	reason = parse_packet(data, data_end, data_end - data, &pkt);
	if (reason == REASON_PASS_NOT_TCP_UDP &&
	    !parse_icmp_error(data_end, &pkt, &ie))
		reason = REASON_PASS_ICMP_ERROR;
	if (reason) {
		decide_unparsed(&d, reason, 0);
		goto out;
	}
	if (dsr_candidate(&pkt) && dsr_parse(data_end, &pkt, &dp) >= 0) {
		/* Decapsulation resizes the skb: tc does it. */
		d.xlated = pkt.tuple;
		decide_pass(&d, REASON_PASS_DSR);
		goto out;
	}
	ip_len = bpf_ntohs(pkt.ip->tot_len);
	pkt.mtu_len = ip_len;
	if (pkt.tuple.proto == IPPROTO_TCP)
		pkt.ts_field = xdp_tcp_ts_field(ctx, pkt.l4_off);
	lb_ingress(ctx, &pkt, ifindex, &d, 0);
	xdp_defer(&pkt, &d);
	xdp_check_csum(ctx, ifindex, &pkt, &d);

	if (d.action == ACT_NAT_PASS || d.action == ACT_FORWARD)
		captured = capture_in(ctx, 1);
	switch (d.action) {
	case ACT_NAT_PASS:
		xdp_rewrite_l3_l4(&pkt, &d);
		break;
	case ACT_FORWARD:
		xdp_rewrite_l3_l4(&pkt, &d);
		xdp_rewrite_ts(&pkt, &d);
		xdp_decrease_ttl(pkt.ip);
		if (!d.encap_daddr)
			xdp_set_macs(&pkt, &d);
		else if (xdp_dsr_encap(ctx, &d, &pkt.tuple, ip_len)) {
			decide_rewrite_failed(&d, REASON_DROP_MALFORMED_L2);
			break;
		}
		if (d.ifindex == ifindex)
			ret = XDP_TX;
		else
			ret = bpf_redirect(d.ifindex, 0);
		break;
	default:
		break;
	}
out:
	if (d.action == ACT_DROP)
		ret = XDP_DROP;
	account_packet(ctx, 1, ifindex, STAGE_XDP, &pkt.tuple, &d, pkt.len,
		       captured);
	/* What XDP passed on for tc to finish is not marked done. */
	if (ret == XDP_PASS && !decision_left_to_tc(&d))
		xdp_mark_done(ctx);
	return ret;
}

/*
 * Headers a tc program reads must be in the skb's linear part; pull them
 * in when a driver or GSO left them in fragments.
 */
#define TC_PULL_LEN                                                            \
	(sizeof(struct ethhdr) + DSR_ENCAP_LEN + 60 + sizeof(struct tcphdr))

static __always_inline int tc_parse(struct __sk_buff *skb, struct packet *pkt)
{
	__u32 linear = skb->data_end - skb->data;

	if (linear < TC_PULL_LEN && skb->len > linear)
		bpf_skb_pull_data(skb, skb->len < TC_PULL_LEN ? skb->len
							      : TC_PULL_LEN);
	return parse_packet((void *)(long)skb->data,
			    (void *)(long)skb->data_end, skb->len, pkt);
}

/*
 * tc_icmp_error recognizes an ICMP error about a TCP/UDP flow in a packet
 * tc_parse passed as not TCP/UDP, and gives pkt the outer tuple.
 */
static __always_inline int
tc_icmp_error(struct __sk_buff *skb, struct packet *pkt, struct icmp_error *ie)
{
	if (parse_icmp_error((void *)(long)skb->data_end, pkt, ie))
		return -1;
	pkt->tuple.saddr = pkt->ip->saddr;
	pkt->tuple.daddr = pkt->ip->daddr;
	pkt->tuple.proto = IPPROTO_ICMP;
	return 0;
}

/*
 * The IPv4 length of what leaves the node for this skb: the packet, or
 * each segment of a GSO skb (headers plus gso_size), whatever device
 * later cuts it.
 */
static __always_inline __u16 tc_segment_len(struct __sk_buff *skb,
					    const struct packet *pkt)
{
	__u32 hdrs = pkt->l4_off - pkt->l3_off;

	if (skb->gso_size == 0)
		return bpf_ntohs(pkt->ip->tot_len);
	if (pkt->tuple.proto == IPPROTO_TCP)
		hdrs += ((((__u8 *)pkt->ports)[12] >> 4) & 0xf) * 4;
	else
		hdrs += sizeof(struct udphdr);
	return (__u16)(hdrs + skb->gso_size);
}

/* Translates a TCP/UDP packet, or an ICMP error (icmp set). */
static __always_inline int tc_rewrite(struct __sk_buff *skb,
				      const struct packet *pkt,
				      const struct icmp_error *icmp,
				      const struct decision *d)
{
	if (icmp)
		return tc_rewrite_icmp(skb, pkt, icmp, d);
	return tc_rewrite_l3_l4(skb, pkt, d);
}

static __always_inline int xdp_already_done(struct __sk_buff *skb)
{
	void *meta = (void *)(long)skb->data_meta;
	void *data = (void *)(long)skb->data;

	return meta + sizeof(__u32) <= data && *(__u32 *)meta == XDP_DONE_MAGIC;
}

SEC("tcx/ingress")
int tc_ingress(struct __sk_buff *skb)
{
	struct decision d = {};
	struct packet pkt = {};
	__u32 ifindex = skb->ifindex;
	struct icmp_error ie = {}, *icmp = NULL;
	struct flow_tuple *orig = &pkt.tuple, dsr_orig;
	struct dsr_packet dp = {};
	int ret = TC_ACT_OK;
	__u32 captured = 0;
	__u16 ip_len = 0;
	__u8 ttl;
	int reason;

	if (xdp_already_done(skb))
		return TC_ACT_OK;

	reason = tc_parse(skb, &pkt);
	if (reason == REASON_PASS_NOT_TCP_UDP &&
	    !tc_icmp_error(skb, &pkt, &ie)) {
		icmp = &ie;
		ttl = pkt.ip->ttl;
		lb_icmp_ingress(skb, &pkt, &ie, ifindex, &d);
	} else if (reason) {
		decide_unparsed(&d, reason, 0);
		goto out;
	} else if (dsr_candidate(&pkt) &&
		   (reason = dsr_parse((void *)(long)skb->data_end, &pkt,
				       &dp)) >= 0) {
		d.xlated = pkt.tuple;
		if (reason) {
			decide_drop(&d, reason);
			goto out;
		}
		/* Traced as the flow the client sent, as it arrives here. */
		dsr_orig = dp.inner;
		dsr_orig.daddr = dp.frontend_addr;
		dsr_orig.dport = dp.frontend_port;
		orig = &dsr_orig;
		lb_dsr_decap(skb, ifindex, &dp, &d);
	} else {
		ttl = pkt.ip->ttl;
		ip_len = bpf_ntohs(pkt.ip->tot_len);
		pkt.mtu_len = tc_segment_len(skb, &pkt);
		if (pkt.tuple.proto == IPPROTO_TCP)
			pkt.ts_field = tc_tcp_ts_field(skb, pkt.l4_off);
		lb_ingress(skb, &pkt, ifindex, &d, 1);
	}

	if (d.action != ACT_PASS && d.action != ACT_DROP)
		captured = capture_in(skb, 0);
	switch (d.action) {
	case ACT_NAT_PASS:
		if (tc_rewrite(skb, &pkt, icmp, &d))
			decide_rewrite_failed(&d, REASON_DROP_MALFORMED_L4);
		break;
	case ACT_FORWARD:
	case ACT_FORWARD_NEIGH:
		if (tc_rewrite(skb, &pkt, icmp, &d) ||
		    tc_rewrite_ts(skb, &pkt, &d) ||
		    tc_decrease_ttl(skb, &pkt, ttl)) {
			decide_rewrite_failed(&d, REASON_DROP_MALFORMED_L4);
			break;
		}
		if (d.encap_daddr &&
		    tc_dsr_encap(skb, &d, &pkt.tuple, ip_len)) {
			decide_rewrite_failed(&d, REASON_DROP_MALFORMED_L2);
			break;
		}
		if (d.action == ACT_FORWARD) {
			if (tc_set_macs(skb, &d)) {
				decide_rewrite_failed(&d,
						      REASON_DROP_MALFORMED_L2);
				break;
			}
			ret = bpf_redirect(d.ifindex, 0);
		} else {
			struct bpf_redir_neigh nh = {
			    .nh_family = AF_INET,
			    .ipv4_nh = d.nexthop,
			};

			ret = bpf_redirect_neigh(d.ifindex, &nh, sizeof(nh), 0);
		}
		d.verdict = VERDICT_REDIRECT;
		break;
	case ACT_REJECT:
		if (tc_reject(skb, &pkt)) {
			decide_rewrite_failed(&d, REASON_DROP_NO_BACKEND);
			break;
		}
		ret = bpf_redirect(ifindex, 0);
		break;
	case ACT_FRAG_NEEDED:
		if (tc_icmp_reply(skb, &pkt, ICMP_DEST_UNREACH,
				  ICMP_FRAG_NEEDED, d.mtu)) {
			decide_rewrite_failed(&d, REASON_DROP_FRAG_NEEDED);
			break;
		}
		ret = bpf_redirect(ifindex, 0);
		break;
	case ACT_REDIRECT_PEER:
		if (tc_rewrite(skb, &pkt, icmp, &d) ||
		    tc_decrease_ttl(skb, &pkt, ttl) || tc_set_macs(skb, &d)) {
			decide_rewrite_failed(&d, REASON_DROP_MALFORMED_L4);
			break;
		}
		ret = bpf_redirect_peer(d.ifindex, 0);
		break;
	case ACT_DECAP:
		if (tc_dsr_decap(skb, &dp)) {
			decide_rewrite_failed(&d, REASON_DROP_DSR_MALFORMED);
			break;
		}
		if (d.reason != REASON_DSR_DECAP_PEER)
			break;
		if (tc_set_macs(skb, &d)) {
			decide_rewrite_failed(&d, REASON_DROP_MALFORMED_L2);
			break;
		}
		ret = bpf_redirect_peer(d.ifindex, 0);
		break;
	default:
		break;
	}
out:
	if (d.action == ACT_DROP)
		ret = TC_ACT_SHOT;
	account_packet(skb, 0, ifindex, STAGE_TC_INGRESS, orig, &d, pkt.len,
		       captured);
	return ret;
}

SEC("tcx/egress")
int tc_egress(struct __sk_buff *skb)
{
	struct icmp_error ie = {}, *icmp = NULL;
	struct decision d = {};
	struct packet pkt = {};
	int ret = TC_ACT_OK;
	__u32 captured = 0;
	int reason;

	reason = tc_parse(skb, &pkt);
	if (reason == REASON_PASS_NOT_TCP_UDP &&
	    !tc_icmp_error(skb, &pkt, &ie)) {
		icmp = &ie;
		lb_icmp_egress(&pkt, &ie, &d);
	} else if (reason) {
		decide_unparsed(&d, reason, 1);
		goto out;
	} else {
		lb_egress(&pkt, skb->ingress_ifindex, &d);
	}
	if (d.verdict == VERDICT_DROP)
		ret = TC_ACT_SHOT;
	if (d.action == ACT_NAT_PASS)
		captured = capture_in(skb, 0);
	if (d.action == ACT_NAT_PASS && tc_rewrite(skb, &pkt, icmp, &d)) {
		decide_rewrite_failed(&d, REASON_DROP_MALFORMED_L4);
		ret = TC_ACT_SHOT;
	}
out:
	account_packet(skb, 0, skb->ifindex, STAGE_TC_EGRESS, &pkt.tuple, &d,
		       pkt.len, captured);
	return ret;
}

SEC("sk_lookup")
int sk_steer(struct bpf_sk_lookup *ctx)
{
	struct decision d = {};
	struct bpf_sock *sk = steer_lookup(ctx, &d);

	if (d.reason == REASON_PASS_NO_FRONTEND)
		return SK_PASS; /* not an L7 frontend: not even counted */
	if (sk) {
		/* A proxy socket that cannot take the connection: normal
		 * lookup. */
		if (bpf_sk_assign(ctx, sk, 0))
			decide_pass(&d, REASON_PASS_SK_ASSIGN_FAILED);
		else
			decide(&d, ACT_PASS, VERDICT_REDIRECT, REASON_SK_STEER);
		bpf_sk_release(sk);
	}
	account(ctx->ingress_ifindex, STAGE_SK_LOOKUP, &d.xlated, &d, 0);
	return SK_PASS;
}

/*
 * Socket-level load balancing: connect() and unconnected sendmsg() to a
 * frontend go to a backend; getpeername() and recvmsg() show the frontend.
 */
static __always_inline int sock_lb(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct decision d = {};
	struct flow_tuple orig;

	sock_lb_decide(ctx, cookie, &d);
	if (d.reason == REASON_PASS_NO_FRONTEND)
		return 1; /* not a service: not even counted */
	orig = d.xlated;
	orig.daddr = ctx->user_ip4;
	orig.dport = (__be16)ctx->user_port;
	account(0, STAGE_SOCK, &orig, &d, 0);
	if (d.action == ACT_REJECT) {
		bpf_set_retval(-ECONNREFUSED);
		return 0;
	}
	sock_rev_record(cookie, &d, ctx->user_ip4, (__be16)ctx->user_port);
	ctx->user_ip4 = d.xlated.daddr;
	ctx->user_port = (__u32)d.xlated.dport;
	return 1;
}

SEC("cgroup/connect4")
int sock_connect4(struct bpf_sock_addr *ctx)
{
	return sock_lb(ctx);
}

SEC("cgroup/sendmsg4")
int sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock_lb(ctx);
}

SEC("cgroup/recvmsg4")
int sock_recvmsg4(struct bpf_sock_addr *ctx)
{
	sock_rev_xlate(ctx);
	return 1;
}

SEC("cgroup/getpeername4")
int sock_getpeername4(struct bpf_sock_addr *ctx)
{
	sock_rev_xlate(ctx);
	return 1;
}
