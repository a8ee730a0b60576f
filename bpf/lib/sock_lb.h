/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Socket-level load balancing for in-cluster clients (cgroup sock_addr
 * hooks): a connect() or an unconnected sendmsg() to a service frontend is
 * sent to a backend chosen then, so the flow's packets never need NAT; the
 * socket still sees the frontend as its peer (getpeername, recvmsg).
 */
#ifndef NODEGRESS_SOCK_LB_H
#define NODEGRESS_SOCK_LB_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

#include "consts.h"
#include "decision.h"
#include "hash.h"
#include "maps.h"
#include "select.h"
#include "structs.h"

#ifndef ECONNREFUSED
#define ECONNREFUSED 111
#endif

static __always_inline int sock_proto(const struct bpf_sock_addr *ctx,
				      __u8 *proto)
{
	if (ctx->protocol == IPPROTO_TCP)
		*proto = IPPROTO_TCP;
	else if (ctx->protocol == IPPROTO_UDP)
		*proto = IPPROTO_UDP;
	else
		return -1;
	return 0;
}

/*
 * sock_lb_decide picks the backend for a socket's destination, or decides
 * to refuse it. The hash covers the socket and the frontend, so every
 * datagram of one unconnected UDP socket to one frontend reaches one
 * backend. ClientIP affinity is kept per network namespace (a pod, or the
 * node for hostNetwork clients), which is what a client address is to a
 * socket that has not got one yet.
 */
static __always_inline void sock_lb_decide(struct bpf_sock_addr *ctx,
					   __u64 cookie, struct decision *d)
{
	struct frontend_key fk = {.addr = ctx->user_ip4,
				  .scope = FE_SCOPE_SOCKET};
	struct backend_value *be = NULL;
	const struct frontend_value *fe;
	struct flow_tuple t = {};
	struct dp_config *cfg;
	__u32 backend_id = 0;
	__u64 now;

	decide_pass(d, REASON_PASS_NO_FRONTEND);
	if (sock_proto(ctx, &fk.proto))
		return;
	fk.port = (__be16)ctx->user_port;
	fe = bpf_map_lookup_elem(&frontends, &fk);
	if (!fe)
		return;
	d->svc_id = fe->svc_id;
	t.saddr = (__be32)bpf_get_netns_cookie(ctx);
	t.daddr = fk.addr;
	t.sport = (__be16)cookie;
	t.dport = fk.port;
	t.proto = fk.proto;
	d->xlated = t;
	if (fe->backend_count == 0) {
		/* Refused at once. A Local internal policy without a local
		 * endpoint is refused too (kube-proxy lets it time out), under
		 * its own reason. */
		decide(d, ACT_REJECT, VERDICT_DROP,
		       (fe->flags & FE_F_NO_BACKEND_DROP)
			   ? REASON_DROP_NO_BACKEND
			   : REASON_SOCK_REJECT);
		return;
	}
	cfg = get_config();
	now = bpf_ktime_get_ns();
	if (select_backend(fe, &t,
			   flow_hash(&t, (cfg ? cfg->hash_seed : 0) ^
					     (__u32)(cookie >> 32)),
			   now, &backend_id, &be)) {
		decide(d, ACT_REJECT, VERDICT_DROP, REASON_DROP_NO_BACKEND);
		return;
	}
	d->backend_id = backend_id;
	d->xlated.daddr = be->addr;
	d->xlated.dport = be->port;
	decide(d, ACT_NAT_PASS, VERDICT_REDIRECT, REASON_SOCK_FWD);
}

/* Remembers what the socket asked for; a full map only costs the name. */
static __always_inline void sock_rev_record(__u64 cookie,
					    const struct decision *d,
					    __be32 fe_addr, __be16 fe_port)
{
	struct sock_rev_key key = {
	    .cookie = cookie,
	    .addr = d->xlated.daddr,
	    .port = d->xlated.dport,
	};
	struct sock_rev_value v = {.addr = fe_addr, .port = fe_port};

	bpf_map_update_elem(&sock_rev_nat, &key, &v, BPF_ANY);
}

/* Shows the frontend where the socket would see its backend. */
static __always_inline void sock_rev_xlate(struct bpf_sock_addr *ctx)
{
	struct sock_rev_key key = {
	    .cookie = bpf_get_socket_cookie(ctx),
	    .addr = ctx->user_ip4,
	    .port = (__be16)ctx->user_port,
	};
	struct sock_rev_value *v;

	v = bpf_map_lookup_elem(&sock_rev_nat, &key);
	if (!v)
		return;
	ctx->user_ip4 = v->addr;
	ctx->user_port = (__u32)v->port;
}

#endif /* NODEGRESS_SOCK_LB_H */
