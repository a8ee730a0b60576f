/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * ClientIP session affinity, as kube-proxy keeps it: per service port, a
 * client address's new connections go to the backend its last new
 * connection went to, while that was less than the service's timeout ago
 * and the backend is still an active backend of the service.
 */
#ifndef NODEGRESS_AFFINITY_H
#define NODEGRESS_AFFINITY_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "maps.h"
#include "structs.h"

#define NS_PER_SEC 1000000000ULL

/* The client's affinity backend, or 0 when it has none (any longer). */
static __always_inline __u32 affinity_backend(const struct frontend_value *fe,
					      __be32 client, __u64 now)
{
	struct affinity_key key = {.svc_id = fe->svc_id, .client = client};
	struct service_backend_key member = {.svc_id = fe->svc_id};
	struct affinity_value *v;

	v = bpf_map_lookup_elem(&affinity, &key);
	if (!v)
		return 0;
	if (now - v->last_used_ns > (__u64)fe->affinity_timeout_s * NS_PER_SEC)
		return 0;
	member.backend_id = v->backend_id;
	if (!bpf_map_lookup_elem(&service_backends, &member))
		return 0;
	return v->backend_id;
}

/* Records (or refreshes) the client's backend; a full map only costs
 * affinity, never the connection. */
static __always_inline void affinity_record(__u32 svc_id, __be32 client,
					    __u32 backend_id, __u64 now)
{
	struct affinity_key key = {.svc_id = svc_id, .client = client};
	struct affinity_value v = {.last_used_ns = now,
				   .backend_id = backend_id};

	bpf_map_update_elem(&affinity, &key, &v, BPF_ANY);
}

#endif /* NODEGRESS_AFFINITY_H */
