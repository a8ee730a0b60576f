/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Socket steering for L7 frontends: the kernel's socket lookup for a
 * connection to an L7 frontend (a node address on :80/:443, a LoadBalancer
 * IP) picks the local proxy's listening socket, so the proxy needs no
 * wildcard bind and sees the original destination address.
 */
#ifndef NODEGRESS_STEER_H
#define NODEGRESS_STEER_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "consts.h"
#include "decision.h"
#include "maps.h"
#include "structs.h"

#ifndef AF_INET
#define AF_INET 2
#endif

/*
 * steer_lookup looks up the proxy socket of a socket lookup. A lookup that
 * is not for an L7 frontend gets d->reason REASON_PASS_NO_FRONTEND (the
 * caller leaves it alone: sk_lookup runs for every new connection on the
 * node); one for an L7 frontend gets its service and tuple (client ->
 * frontend) in d, and REASON_PASS_NO_PROXY_SOCKET for the caller to
 * replace when it returns a socket. Returns the proxy socket (to be
 * released), or NULL when there is none.
 */
static __always_inline struct bpf_sock *
steer_lookup(const struct bpf_sk_lookup *ctx, struct decision *d)
{
	struct frontend_key fk = {};
	struct frontend_value *fe;

	decide_pass(d, REASON_PASS_NO_FRONTEND);
	if (ctx->family != AF_INET)
		return NULL;
	fk.addr = ctx->local_ip4;
	fk.port = bpf_htons((__u16)ctx->local_port);
	fk.proto = ctx->protocol;
	fe = bpf_map_lookup_elem(&frontends, &fk);
	if (!fe || !(fe->flags & FE_F_L7))
		return NULL;
	d->svc_id = fe->svc_id;
	d->xlated.saddr = ctx->remote_ip4;
	d->xlated.daddr = fk.addr;
	d->xlated.sport = ctx->remote_port;
	d->xlated.dport = fk.port;
	d->xlated.proto = fk.proto;
	decide_pass(d, REASON_PASS_NO_PROXY_SOCKET);
	return bpf_map_lookup_elem(&proxy_sockets, &fe->svc_id);
}

#endif /* NODEGRESS_STEER_H */
