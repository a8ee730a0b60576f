/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Backend selection for a new flow, shared by the packet datapath and the
 * socket-level load balancer: ClientIP affinity first, then a slot of the
 * service's active backends by hash.
 */
#ifndef NODEGRESS_SELECT_H
#define NODEGRESS_SELECT_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "affinity.h"
#include "consts.h"
#include "hash.h"
#include "maps.h"
#include "structs.h"

/*
 * Picks the backend of the service's Maglev table for the flow. The hash
 * is seeded cluster-wide (maglev_seed), so every node agrees.
 */
static __always_inline int select_by_maglev(const struct frontend_value *fe,
					    const struct flow_tuple *t,
					    __u32 *backend_id)
{
	struct dp_config *cfg = get_config();
	__u32 idx, *id;
	void *table;

	if (!cfg || cfg->maglev_size == 0)
		return -1;
	table = bpf_map_lookup_elem(&maglev_tables, &fe->svc_id);
	if (!table)
		return -1;
	idx = flow_hash(t, cfg->maglev_seed) % cfg->maglev_size;
	id = bpf_map_lookup_elem(table, &idx);
	if (!id || !*id)
		return -1;
	*backend_id = *id;
	return 0;
}

/* Picks an active backend of the frontend's service by flow hash. */
static __always_inline int select_by_hash(const struct frontend_value *fe,
					  const struct flow_tuple *t,
					  __u32 hash, __u32 *backend_id,
					  struct backend_value **be)
{
	struct backend_slot_key slot = {.svc_id = fe->svc_id};
	__u32 *id;

	if (fe->backend_count == 0)
		return -1;
	if (fe->flags & FE_F_MAGLEV) {
		if (select_by_maglev(fe, t, backend_id))
			return -1;
		*be = bpf_map_lookup_elem(&backends, backend_id);
		return *be ? 0 : -1;
	}
	slot.slot = hash % fe->backend_count + 1;
	id = bpf_map_lookup_elem(&backend_slots, &slot);
	if (!id)
		return -1;
	*be = bpf_map_lookup_elem(&backends, id);
	if (!*be)
		return -1;
	*backend_id = *id;
	return 0;
}

/*
 * Picks the backend of a new flow: the client's affinity backend when the
 * service keeps ClientIP affinity and it is still valid, else one by flow
 * hash (which then becomes the client's affinity backend).
 */
static __always_inline int select_backend(const struct frontend_value *fe,
					  const struct flow_tuple *t,
					  __u32 hash, __u64 now,
					  __u32 *backend_id,
					  struct backend_value **be)
{
	__u32 id;

	if (!(fe->flags & FE_F_AFFINITY))
		return select_by_hash(fe, t, hash, backend_id, be);
	id = affinity_backend(fe, t->saddr, now);
	if (id) {
		*be = bpf_map_lookup_elem(&backends, &id);
		if (*be) {
			*backend_id = id;
			affinity_record(fe->svc_id, t->saddr, id, now);
			return 0;
		}
	}
	if (select_by_hash(fe, t, hash, backend_id, be))
		return -1;
	affinity_record(fe->svc_id, t->saddr, *backend_id, now);
	return 0;
}

#endif /* NODEGRESS_SELECT_H */
