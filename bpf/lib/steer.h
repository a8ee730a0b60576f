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
#include "maps.h"
#include "structs.h"

#ifndef AF_INET
#define AF_INET 2
#endif

/* Returns the proxy socket for the lookup, or NULL to let the kernel look. */
static __always_inline struct bpf_sock *
steer_lookup(const struct bpf_sk_lookup *ctx)
{
	struct frontend_key fk = {};
	struct frontend_value *fe;

	if (ctx->family != AF_INET)
		return NULL;
	fk.addr = ctx->local_ip4;
	fk.port = bpf_htons((__u16)ctx->local_port);
	fk.proto = ctx->protocol;
	fe = bpf_map_lookup_elem(&frontends, &fk);
	if (!fe || !(fe->flags & FE_F_L7))
		return NULL;
	return bpf_map_lookup_elem(&proxy_sockets, &fe->svc_id);
}

#endif /* NODEGRESS_STEER_H */
