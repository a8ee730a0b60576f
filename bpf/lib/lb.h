/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Service load balancing: frontend lookup, backend selection, conntrack and
 * NAT decisions for packets arriving on an external device (lb_ingress) and
 * for replies of local backends leaving it (lb_egress). Only decides; the
 * calling hook rewrites the packet.
 */
#ifndef NODEGRESS_LB_H
#define NODEGRESS_LB_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "consts.h"
#include "conntrack.h"
#include "csum.h"
#include "decision.h"
#include "dsr.h"
#include "fib.h"
#include "hash.h"
#include "maps.h"
#include "migrating.h"
#include "parsing.h"
#include "select.h"
#include "source_ranges.h"
#include "structs.h"
#include "tcp_ts.h"
#include "tuple.h"

/* The length fib_forward checks against the route's MTU, 0 for none. */
static __always_inline __u16 mtu_check_len(const struct packet *pkt)
{
	return pkt->mtu_len;
}

/*
 * A packet fib_forward would not forward: too big for the route (rc
 * FIB_FRAG_NEEDED) it is answered with "fragmentation needed" when it may
 * not be fragmented, dropped when it may (the datapath does not fragment);
 * otherwise the kernel resolves what the lookup could not. The packet is
 * left untranslated.
 */
static __always_inline void decide_unforwarded(const struct packet *pkt,
					       struct decision *d, int rc)
{
	d->xlated = pkt->tuple;
	if (rc != FIB_FRAG_NEEDED)
		decide_pass(d, REASON_PASS_FIB);
	else if (pkt->ip->frag_off & bpf_htons(IP_DF))
		decide(d, ACT_FRAG_NEEDED, VERDICT_REDIRECT,
		       REASON_ICMP_FRAG_NEEDED);
	else
		decide_drop(d, REASON_DROP_FRAG_NEEDED);
}

static __always_inline void set_verdict_forward(struct decision *d,
						__u32 in_ifindex, __u16 reason)
{
	d->reason = reason;
	if (d->action == ACT_FORWARD && d->ifindex == in_ifindex)
		d->verdict = VERDICT_TX;
	else
		d->verdict = VERDICT_REDIRECT;
}

/*
 * A new flow to a frontend without an active backend: rejected, so the
 * client learns at once, or dropped when the service has endpoints
 * elsewhere that this traffic may not use (kube-proxy's rules for Local
 * traffic policies).
 */
static __always_inline void decide_no_backend(const struct frontend_value *fe,
					      struct decision *d)
{
	if (fe->flags & FE_F_NO_BACKEND_DROP)
		decide_drop(d, REASON_DROP_NO_BACKEND);
	else
		decide(d, ACT_REJECT, VERDICT_REDIRECT,
		       REASON_REJECT_NO_BACKEND);
}

/*
 * ct_backend fills be with the existing flow's backend and returns 0, or
 * returns -1 when the flow must pick again: a new connection (SYN) reusing
 * the tuple of a closed flow or of one bound to a terminating or removed
 * backend, a UDP flow whose backend was removed (UDP has no SYN to tell a
 * new conversation), or a long-idle remote flow whose SNAT port went to
 * another flow. A TCP flow whose backend was removed keeps going to that
 * pod, like kube-proxy's conntrack entries do: the pod may still be
 * draining it.
 */
static __always_inline int ct_backend(struct ct_entry *ct,
				      const struct packet *pkt, __u64 now,
				      struct backend_value *be)
{
	struct backend_value *cur =
	    bpf_map_lookup_elem(&backends, &ct->backend_id);
	int syn =
	    (pkt->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN;

	if (cur && cur->addr == ct->backend_addr &&
	    cur->port == ct->backend_port) {
		if (syn && ((cur->flags & BE_F_TERMINATING) ||
			    (ct->flags & (CT_F_SEEN_FIN | CT_F_SEEN_RST))))
			return -1;
		*be = *cur;
	} else {
		if (syn || pkt->tuple.proto != IPPROTO_TCP)
			return -1;
		be->addr = ct->backend_addr;
		be->port = ct->backend_port;
		be->flags =
		    (ct->flags & (CT_F_REMOTE | CT_F_DSR)) ? 0 : BE_F_LOCAL;
		be->pad = 0;
	}
	if ((ct->flags & CT_F_REMOTE) &&
	    ct_is_stale(now, ct->last_seen_ns, pkt->tuple.proto, ct->flags) &&
	    !snat_port_owned(ct, be, &pkt->tuple))
		return -1;
	return 0;
}

/* Keeps last_seen and close flags of a live flow current, rarely writing. */
static __always_inline void ct_refresh(struct ct_entry *ct,
				       const struct packet *pkt,
				       const struct backend_value *be,
				       __u64 now)
{
	__u8 closing = ct_flags_from_tcp(pkt->tcp_flags);
	struct rev_nat_entry *rn;
	struct flow_tuple key;

	if ((ct->flags & closing) == closing &&
	    now - ct->last_seen_ns < CT_REFRESH_NS)
		return;
	ct->last_seen_ns = now;
	ct->flags |= closing;
	if (!(ct->flags & CT_F_REMOTE))
		return;
	/* The SNAT port stays reserved only while its entry looks alive. */
	reply_key(&key, be, ct->nat_addr, ct->nat_port, pkt->tuple.proto);
	rn = bpf_map_lookup_elem(&reverse_nat, &key);
	if (rn) {
		rn->last_seen_ns = now;
		rn->flags |= closing;
		if (closing & CT_F_SEEN_FIN)
			rn->flags |= CT_F_FIN_CLIENT;
	}
}

/*
 * ts_translate has a remote TCP flow's packet carry its timestamp field
 * (TSval from the client, TSecr from the backend; echo says which) shifted
 * by delta, if the segment has timestamps.
 */
static __always_inline void ts_translate(const struct packet *pkt, int echo,
					 __u32 delta, struct decision *d)
{
	if (!pkt->ts_field)
		return;
	d->ts_field = pkt->l4_off + pkt->ts_field + (echo ? 4 : 0);
	d->ts_delta = delta;
}

/*
 * New flow to a remote backend: route to it, then take a SNAT port on the
 * egress device's address. Returns 0 with d ready to forward.
 */
static __always_inline int
new_remote_flow(void *ctx, const struct packet *pkt, __u32 ifindex,
		const struct backend_value *be, struct ct_entry *ct,
		struct decision *d, int can_resolve, __u32 hash, __u64 now)
{
	__u32 tsval, ts_off = 0;
	struct device_value *dev;
	struct dp_config *cfg;
	__u8 ts_flag = 0;
	__be32 addr;
	__be16 port;
	int rc;

	d->xlated.daddr = be->addr;
	d->xlated.dport = be->port;
	rc = fib_forward(ctx, ifindex, pkt->ip->tos, mtu_check_len(pkt), d,
			 can_resolve);
	if (rc) {
		decide_unforwarded(pkt, d, rc);
		return -1;
	}
	dev = bpf_map_lookup_elem(&devices, &d->ifindex);
	if (!dev || !dev->addr) {
		decide_drop(d, REASON_DROP_NO_SNAT_ADDR);
		return -1;
	}
	/* A TCP flow with timestamps gets its own offset (tcp_ts.h). */
	if (pkt->ts_field && !tcp_ts_read(pkt, pkt->ts_field, &tsval)) {
		ts_off = ts_clock_ms(now) - tsval;
		ts_flag = CT_F_TS;
	}
	cfg = get_config();
	if (!cfg || snat_alloc(&pkt->tuple, be, dev, cfg, hash, now, ts_off,
			       ts_flag, &addr, &port)) {
		decide_drop(d, REASON_DROP_SNAT_EXHAUSTED);
		return -1;
	}
	ct->flags |= CT_F_REMOTE | ts_flag;
	ct->ts_off = ts_off;
	ct->nat_addr = addr;
	ct->nat_port = port;
	if (ts_flag)
		ts_translate(pkt, 0, ts_off, d);
	d->xlated.saddr = addr;
	d->xlated.sport = port;
	return 0;
}

/*
 * pod_peer tells whether tc may hand d->xlated straight to a local pod
 * (CFG_F_POD_REDIRECT): the route to it leaves through the host end of a
 * veth pair the agent registered. It fills d's device and MACs then.
 */
static __always_inline int pod_peer(void *ctx, __u32 ifindex, __u8 tos,
				    struct decision *d)
{
	struct dp_config *cfg = get_config();

	return cfg && (cfg->flags & CFG_F_POD_REDIRECT) &&
	       !fib_forward(ctx, ifindex, tos, 0, d, 0) &&
	       d->ifindex != ifindex &&
	       bpf_map_lookup_elem(&peer_devices, &d->ifindex);
}

/*
 * local_deliver sends a packet to local backend be: DNAT'd and passed up
 * to the kernel, which routes it to the pod; or, in tc, straight into the
 * pod (pod_peer), skipping the host's routing and netfilter.
 */
static __always_inline void local_deliver(void *ctx, const struct packet *pkt,
					  __u32 ifindex,
					  const struct backend_value *be,
					  struct decision *d, int in_tc)
{
	d->xlated.daddr = be->addr;
	d->xlated.dport = be->port;
	if (in_tc && pod_peer(ctx, ifindex, pkt->ip->tos, d)) {
		decide(d, ACT_REDIRECT_PEER, VERDICT_REDIRECT,
		       REASON_FWD_LOCAL_PEER);
		return;
	}
	decide(d, ACT_NAT_PASS, VERDICT_PASS, REASON_FWD_LOCAL);
}

/*
 * dsr_forward routes a packet of a DSR flow to remote backend be: DNAT'd,
 * then encapsulated to the route's gateway, the backend's node, from the
 * egress device's address. The route's MTU must hold the encapsulation
 * too; a client learns the smaller MTU from "fragmentation needed". Returns
 * 0 with d ready to forward, 1 when the route has no gateway (no node to
 * tunnel to: the backend is on the same link), and -1 when d says what
 * else to do.
 */
static __always_inline int dsr_forward(void *ctx, const struct packet *pkt,
				       __u32 ifindex,
				       const struct backend_value *be,
				       struct decision *d, int can_resolve)
{
	struct device_value *dev;
	__u32 len = mtu_check_len(pkt);
	int rc;

	d->xlated.daddr = be->addr;
	d->xlated.dport = be->port;
	if (len) {
		len += DSR_ENCAP_LEN;
		if (len > 0xffff)
			len = 0xffff;
	}
	rc = fib_forward(ctx, ifindex, pkt->ip->tos, len, d, can_resolve);
	if (rc == FIB_FRAG_NEEDED && d->mtu > DSR_ENCAP_LEN)
		d->mtu -= DSR_ENCAP_LEN;
	if (rc) {
		decide_unforwarded(pkt, d, rc);
		return -1;
	}
	if (d->nexthop == be->addr)
		return 1;
	dev = bpf_map_lookup_elem(&devices, &d->ifindex);
	if (!dev || !dev->addr) {
		d->xlated = pkt->tuple;
		decide_drop(d, REASON_DROP_NO_SNAT_ADDR);
		return -1;
	}
	d->encap_saddr = dev->addr;
	d->encap_daddr = d->nexthop;
	d->encap_sport = dsr_source_port(flow_hash(&pkt->tuple, 0));
	return 0;
}

static __always_inline int in_snat_range(__be16 port)
{
	struct dp_config *cfg = get_config();
	__u16 p = bpf_ntohs(port);

	return cfg && p >= cfg->snat_port_min && p <= cfg->snat_port_max;
}

/* A packet to a frontend: pick or keep its backend and translate. */
static __always_inline void lb_frontend(void *ctx, const struct packet *pkt,
					__u32 ifindex,
					const struct frontend_value *fe,
					struct decision *d, int can_resolve)
{
	struct backend_value *be = NULL;
	struct backend_value kept;
	struct ct_entry *ct;
	struct ct_entry fresh = {};
	__u64 now = bpf_ktime_get_ns();
	struct dp_config *cfg;
	__u32 backend_id = 0;
	__u32 hash;
	int rc;

	d->svc_id = fe->svc_id;
	ct = bpf_map_lookup_elem(&conntrack, &pkt->tuple);
	if (ct && !ct_backend(ct, pkt, now, &kept)) {
		d->backend_id = ct->backend_id;
		ct_refresh(ct, pkt, &kept, now);
		d->xlated.daddr = kept.addr;
		d->xlated.dport = kept.port;
		if (ct->flags & CT_F_DSR) {
			rc = dsr_forward(ctx, pkt, ifindex, &kept, d,
					 can_resolve);
			if (rc > 0) {
				d->xlated = pkt->tuple;
				decide_drop(d, REASON_DROP_DSR_NO_NODE);
			} else if (rc == 0) {
				set_verdict_forward(d, ifindex, REASON_FWD_DSR);
			}
			return;
		}
		if (!(ct->flags & CT_F_REMOTE)) {
			local_deliver(ctx, pkt, ifindex, &kept, d, can_resolve);
			return;
		}
		d->xlated.saddr = ct->nat_addr;
		d->xlated.sport = ct->nat_port;
		rc = fib_forward(ctx, ifindex, pkt->ip->tos, mtu_check_len(pkt),
				 d, can_resolve);
		if (rc) {
			decide_unforwarded(pkt, d, rc);
			return;
		}
		if (ct->flags & CT_F_TS)
			ts_translate(pkt, 0, ct->ts_off, d);
		set_verdict_forward(d, ifindex, REASON_FWD_REMOTE);
		return;
	}
	if (!ct && mid_tcp_flow(pkt) && state_migrating()) {
		decide_drop(d, REASON_DROP_STATE_MIGRATING);
		return;
	}

	if ((fe->flags & FE_F_SOURCE_RANGES) &&
	    !source_range_allows(fe->svc_id, pkt->tuple.saddr)) {
		decide_drop(d, REASON_DROP_SOURCE_RANGE);
		return;
	}
	if (fe->backend_count == 0) {
		decide_no_backend(fe, d);
		return;
	}
	cfg = get_config();
	hash = flow_hash(&pkt->tuple, cfg ? cfg->hash_seed : 0);
	if (select_backend(fe, &pkt->tuple, hash, now, &backend_id, &be)) {
		decide_drop(d, REASON_DROP_NO_BACKEND);
		return;
	}
	d->backend_id = backend_id;
	fresh.created_ns = now;
	fresh.last_seen_ns = now;
	fresh.svc_id = fe->svc_id;
	fresh.backend_id = backend_id;
	fresh.backend_addr = be->addr;
	fresh.backend_port = be->port;
	fresh.flags = ct_flags_from_tcp(pkt->tcp_flags);

	if (be->flags & BE_F_LOCAL) {
		struct rev_nat_entry rn;
		struct flow_tuple key;

		reply_key(&key, be, pkt->tuple.saddr, pkt->tuple.sport,
			  pkt->tuple.proto);
		rev_nat_fill(&rn, &pkt->tuple, now, 0);
		if (bpf_map_update_elem(&reverse_nat, &key, &rn, BPF_ANY) ||
		    bpf_map_update_elem(&conntrack, &pkt->tuple, &fresh,
					BPF_ANY)) {
			decide_drop(d, REASON_DROP_MAP_FULL);
			return;
		}
		local_deliver(ctx, pkt, ifindex, be, d, can_resolve);
		return;
	}

	if (fe->flags & FE_F_DSR) {
		rc = dsr_forward(ctx, pkt, ifindex, be, d, can_resolve);
		if (rc < 0)
			return;
		if (rc == 0) {
			fresh.flags |= CT_F_DSR;
			if (bpf_map_update_elem(&conntrack, &pkt->tuple, &fresh,
						BPF_ANY)) {
				d->xlated = pkt->tuple;
				decide_drop(d, REASON_DROP_MAP_FULL);
				return;
			}
			set_verdict_forward(d, ifindex, REASON_FWD_DSR);
			return;
		}
		/* The backend shares a link with this node: SNAT it. */
		d->xlated = pkt->tuple;
	}
	if (new_remote_flow(ctx, pkt, ifindex, be, &fresh, d, can_resolve, hash,
			    now)) {
		d->xlated = pkt->tuple;
		return;
	}
	if (bpf_map_update_elem(&conntrack, &pkt->tuple, &fresh, BPF_ANY)) {
		d->xlated = pkt->tuple;
		decide_drop(d, REASON_DROP_MAP_FULL);
		return;
	}
	set_verdict_forward(d, ifindex, REASON_FWD_REMOTE);
}

/* Fills the service and backend of the flow a reply belongs to (tracing). */
static __always_inline void trace_ids(const struct rev_nat_entry *rn,
				      __u8 proto, struct decision *d)
{
	struct flow_tuple fwd = {
	    .saddr = rn->client_addr,
	    .daddr = rn->frontend_addr,
	    .sport = rn->client_port,
	    .dport = rn->frontend_port,
	    .proto = proto,
	};
	struct dp_config *cfg = get_config();
	struct ct_entry *ct;

	if (!cfg || !(cfg->flags & CFG_F_TRACE))
		return;
	ct = bpf_map_lookup_elem(&conntrack, &fwd);
	if (ct) {
		d->svc_id = ct->svc_id;
		d->backend_id = ct->backend_id;
	}
}

/* A remote backend's reply to this node's SNAT port: back to the client. */
static __always_inline void lb_remote_reply(void *ctx, const struct packet *pkt,
					    __u32 ifindex,
					    struct rev_nat_entry *rn,
					    struct decision *d, int can_resolve)
{
	__u64 now = bpf_ktime_get_ns();
	__u8 seen;
	int rc;

	trace_ids(rn, pkt->tuple.proto, d);
	if (now - rn->last_seen_ns >= CT_REFRESH_NS)
		rn->last_seen_ns = now;
	seen = ct_flags_from_tcp(pkt->tcp_flags) | CT_F_REPLIED;
	if (seen & CT_F_SEEN_FIN)
		seen |= CT_F_FIN_BACKEND;
	if ((rn->flags & seen) != seen)
		rn->flags |= seen;
	d->xlated.saddr = rn->frontend_addr;
	d->xlated.sport = rn->frontend_port;
	d->xlated.daddr = rn->client_addr;
	d->xlated.dport = rn->client_port;
	rc = fib_forward(ctx, ifindex, pkt->ip->tos, mtu_check_len(pkt), d,
			 can_resolve);
	if (rc) {
		decide_unforwarded(pkt, d, rc);
		return;
	}
	if (rn->flags & CT_F_TS)
		ts_translate(pkt, 1, -rn->ts_off, d);
	set_verdict_forward(d, ifindex, REASON_REPLY_REMOTE);
}

/* lb_ingress without the checks every forward gets. */
static __always_inline void lb_ingress_decide(void *ctx,
					      const struct packet *pkt,
					      __u32 ifindex, struct decision *d,
					      int can_resolve)
{
	struct frontend_key fk = {
	    .addr = pkt->tuple.daddr,
	    .port = pkt->tuple.dport,
	    .proto = pkt->tuple.proto,
	};
	struct frontend_value *fe;
	struct rev_nat_entry *rn;

	d->xlated = pkt->tuple;
	fe = bpf_map_lookup_elem(&frontends, &fk);
	if (fe) {
		if (fe->flags & FE_F_L7) {
			d->svc_id = fe->svc_id;
			decide_pass(d, REASON_PASS_L7);
			return;
		}
		lb_frontend(ctx, pkt, ifindex, fe, d, can_resolve);
		return;
	}
	if (in_snat_range(pkt->tuple.dport)) {
		rn = bpf_map_lookup_elem(&reverse_nat, &pkt->tuple);
		if (rn && (rn->flags & CT_F_REMOTE)) {
			lb_remote_reply(ctx, pkt, ifindex, rn, d, can_resolve);
			return;
		}
		if (!rn && reply_not_copied_in(ctx, pkt, ifindex)) {
			decide_drop(d, REASON_DROP_STATE_MIGRATING);
			return;
		}
	}
	decide_pass(d, REASON_PASS_NO_FRONTEND);
}

/* Decision for a parsed packet arriving on an external device. */
static __always_inline void lb_ingress(void *ctx, const struct packet *pkt,
				       __u32 ifindex, struct decision *d,
				       int can_resolve)
{
	lb_ingress_decide(ctx, pkt, ifindex, d, can_resolve);
	decide_ttl(d, pkt->ip->ttl);
}

/* Decision for a packet leaving an external device: local backends' replies. */
static __always_inline void lb_egress(const struct packet *pkt,
				      __u32 ingress_ifindex, struct decision *d)
{
	struct rev_nat_entry *rn;
	__u64 now;

	d->xlated = pkt->tuple;
	rn = bpf_map_lookup_elem(&reverse_nat, &pkt->tuple);
	if (!rn && reply_not_copied_out(pkt, ingress_ifindex)) {
		decide_drop(d, REASON_DROP_STATE_MIGRATING);
		return;
	}
	if (!rn || (rn->flags & CT_F_REMOTE)) {
		decide_pass(d, REASON_PASS_NOT_TRACKED);
		return;
	}
	now = bpf_ktime_get_ns();
	if (now - rn->last_seen_ns >= CT_REFRESH_NS)
		rn->last_seen_ns = now;
	trace_ids(rn, pkt->tuple.proto, d);
	d->xlated.saddr = rn->frontend_addr;
	d->xlated.sport = rn->frontend_port;
	decide(d, ACT_NAT_PASS, VERDICT_PASS,
	       (rn->flags & CT_F_DSR) ? REASON_REPLY_DSR : REASON_REPLY_LOCAL);
}

/*
 * lb_dsr_decap decides for a DSR packet another node sent this one: the
 * inner packet goes to its local backend (up to the kernel, or straight
 * into the pod: pod_peer), and the backend's replies will leave with the
 * frontend the client used as their source (lb_egress).
 */
static __always_inline void lb_dsr_decap(void *ctx, __u32 ifindex,
					 const struct dsr_packet *dp,
					 struct decision *d)
{
	struct flow_tuple client = {
	    .saddr = dp->inner.saddr,
	    .daddr = dp->frontend_addr,
	    .sport = dp->inner.sport,
	    .dport = dp->frontend_port,
	    .proto = dp->inner.proto,
	};
	__u8 closing = ct_flags_from_tcp(dp->tcp_flags);
	__u64 now = bpf_ktime_get_ns();
	struct rev_nat_entry *old, rn;
	struct flow_tuple key;

	d->xlated = dp->inner;
	tuple_reverse(&key, &dp->inner);
	old = bpf_map_lookup_elem(&reverse_nat, &key);
	if (old && (old->flags & CT_F_DSR) && rev_nat_same_flow(old, &client)) {
		if (now - old->last_seen_ns >= CT_REFRESH_NS)
			old->last_seen_ns = now;
		if ((old->flags & closing) != closing)
			old->flags |= closing;
	} else {
		rev_nat_fill(&rn, &client, now, CT_F_DSR | closing);
		if (bpf_map_update_elem(&reverse_nat, &key, &rn, BPF_ANY)) {
			decide_drop(d, REASON_DROP_MAP_FULL);
			return;
		}
	}
	if (pod_peer(ctx, ifindex, 0, d)) {
		decide(d, ACT_DECAP, VERDICT_REDIRECT, REASON_DSR_DECAP_PEER);
		return;
	}
	decide(d, ACT_DECAP, VERDICT_PASS, REASON_DSR_DECAP);
}

/*
 * lb_icmp_ingress decides for an ICMP error arriving on an external device
 * that belongs to a translated flow:
 *  - about a packet this node sent to a remote backend (from a SNAT port):
 *    back to the client, as if the frontend had sent it;
 *  - about a reply this node sent to a client from a frontend (e.g. a
 *    router's "fragmentation needed"): to the backend, as if sent to what
 *    the backend's packet was addressed to.
 * An error sent by the backend itself appears to come from the frontend.
 * Anything else is passed up untouched.
 */
static __always_inline void lb_icmp_ingress(void *ctx, const struct packet *pkt,
					    const struct icmp_error *ie,
					    __u32 ifindex, struct decision *d)
{
	struct rev_nat_entry *rn;
	struct flow_tuple key;
	struct ct_entry *ct;
	int rc;

	d->xlated = pkt->tuple;
	d->inner_xlated = ie->inner;
	tuple_reverse(&key, &ie->inner);
	rn = bpf_map_lookup_elem(&reverse_nat, &key);
	if (rn && (rn->flags & CT_F_REMOTE)) {
		if (pkt->tuple.saddr == ie->inner.daddr)
			d->xlated.saddr = rn->frontend_addr;
		d->xlated.daddr = rn->client_addr;
		d->inner_xlated.saddr = rn->client_addr;
		d->inner_xlated.sport = rn->client_port;
		d->inner_xlated.daddr = rn->frontend_addr;
		d->inner_xlated.dport = rn->frontend_port;
		goto forward;
	}
	ct = bpf_map_lookup_elem(&conntrack, &key);
	if (!ct) {
		decide_pass(d, REASON_PASS_NOT_TCP_UDP);
		return;
	}
	d->svc_id = ct->svc_id;
	d->backend_id = ct->backend_id;
	d->xlated.daddr = ct->backend_addr;
	d->inner_xlated.saddr = ct->backend_addr;
	d->inner_xlated.sport = ct->backend_port;
	if (!(ct->flags & CT_F_REMOTE)) {
		decide(d, ACT_NAT_PASS, VERDICT_PASS, REASON_ICMP_XLATE);
		return;
	}
	d->xlated.saddr = ct->nat_addr;
	d->inner_xlated.daddr = ct->nat_addr;
	d->inner_xlated.dport = ct->nat_port;
forward:
	rc = fib_forward(ctx, ifindex, pkt->ip->tos, 0, d, 1);
	if (rc) {
		d->xlated = pkt->tuple;
		d->inner_xlated = ie->inner;
		decide_pass(d, REASON_PASS_FIB);
		return;
	}
	set_verdict_forward(d, ifindex, REASON_ICMP_FWD);
	decide_ttl(d, pkt->ip->ttl);
}

/*
 * lb_icmp_egress decides for an ICMP error a local backend sends to a
 * client about a translated flow: it names the frontend the client used.
 */
static __always_inline void lb_icmp_egress(const struct packet *pkt,
					   const struct icmp_error *ie,
					   struct decision *d)
{
	struct rev_nat_entry *rn;
	struct flow_tuple key;

	d->xlated = pkt->tuple;
	d->inner_xlated = ie->inner;
	tuple_reverse(&key, &ie->inner);
	rn = bpf_map_lookup_elem(&reverse_nat, &key);
	if (!rn || (rn->flags & CT_F_REMOTE)) {
		decide_pass(d, REASON_PASS_NOT_TRACKED);
		return;
	}
	if (pkt->tuple.saddr == ie->inner.daddr)
		d->xlated.saddr = rn->frontend_addr;
	d->inner_xlated.daddr = rn->frontend_addr;
	d->inner_xlated.dport = rn->frontend_port;
	decide(d, ACT_NAT_PASS, VERDICT_PASS, REASON_ICMP_XLATE);
}

/*
 * What XDP leaves to tc: a reject or a "fragmentation needed", which need
 * the packet resized, is passed on untouched for tc_ingress to decide again
 * and answer.
 */
static __always_inline void xdp_defer(const struct packet *pkt,
				      struct decision *d)
{
	if (d->action == ACT_REJECT) {
		d->xlated = pkt->tuple;
		decide_pass(d, REASON_PASS_REJECT);
	} else if (d->action == ACT_FRAG_NEEDED) {
		d->xlated = pkt->tuple;
		decide_pass(d, REASON_PASS_FIB);
	}
}

/*
 * XDP's own check before it carries out a rewrite: on a device whose frames
 * may be CHECKSUM_PARTIAL (DEV_F_PARTIAL_CSUM), only a frame whose checksum
 * is complete may be rewritten in XDP; any other is left to tc untouched,
 * where the flow state this decision created is found again.
 */
static __always_inline void xdp_check_csum(struct xdp_md *ctx, __u32 ifindex,
					   const struct packet *pkt,
					   struct decision *d)
{
	struct device_value *dev;

	if (d->action != ACT_NAT_PASS && d->action != ACT_FORWARD)
		return;
	dev = bpf_map_lookup_elem(&devices, &ifindex);
	if (!dev || !(dev->flags & DEV_F_PARTIAL_CSUM))
		return;
	if (xdp_l4_csum_complete(ctx))
		return;
	d->xlated = pkt->tuple;
	decide_pass(d, REASON_PASS_CSUM_PARTIAL);
}

#endif /* NODEGRESS_LB_H */
