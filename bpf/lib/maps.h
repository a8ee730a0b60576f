/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every map of the datapath. All are pinned by name under the agent's bpffs
 * directory, so forwarding state outlives the agent process: a restarted or
 * upgraded agent picks the same maps up again and established flows keep
 * their backends.
 */
#ifndef NODEGRESS_MAPS_H
#define NODEGRESS_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "consts.h"
#include "structs.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_FRONTENDS);
	__type(key, struct frontend_key);
	__type(value, struct frontend_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} frontends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_BACKEND_SLOTS);
	__type(key, struct backend_slot_key);
	__type(value, __u32); /* backend id */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} backend_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_BACKENDS);
	__type(key, __u32); /* backend id */
	__type(value, struct backend_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} backends SEC(".maps");

/*
 * Maglev lookup tables by service id: entry i is the backend id of flows
 * whose Maglev hash is i modulo the table size. Each service's table is a
 * map of its own, replaced whole when its backends change.
 */
struct maglev_table {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAGLEV_TABLE_SIZE);
	__type(key, __u32);
	__type(value, __u32); /* backend id */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, MAX_MAGLEV_SERVICES);
	__type(key, __u32); /* svc_id */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct maglev_table);
} maglev_tables SEC(".maps");

/* What each translated socket asked for, to show it back to the socket. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_CONNTRACK);
	__type(key, struct sock_rev_key);
	__type(value, struct sock_rev_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sock_rev_nat SEC(".maps");

/* Clients allowed to reach restricted frontends, per service. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_SOURCE_RANGES);
	__type(key, struct source_range_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} source_ranges SEC(".maps");

/* Which backends are active in which service (affinity checks). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_BACKEND_SLOTS);
	__type(key, struct service_backend_key);
	__type(value, __u32); /* slot */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} service_backends SEC(".maps");

/* ClientIP affinity: the backend of each client of each service. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_AFFINITY);
	__type(key, struct affinity_key);
	__type(value, struct affinity_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} affinity SEC(".maps");

/* Client -> frontend flows and the backend each one is bound to. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_CONNTRACK);
	__type(key, struct flow_tuple);
	__type(value, struct ct_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} conntrack SEC(".maps");

/* Reply flows (as they arrive) and what to translate them back to. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_CONNTRACK);
	__type(key, struct flow_tuple);
	__type(value, struct rev_nat_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} reverse_nat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_DEVICES);
	__type(key, __u32); /* ifindex */
	__type(value, struct device_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} devices SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dp_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} config SEC(".maps");

/*
 * Room for reasons to come: a pinned map whose size changed would be
 * replaced on upgrade, and with it the counters.
 */
#define STATS_SLOTS 64
_Static_assert(REASON_MAX <= STATS_SLOTS,
	       "stats map too small for enum reason");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STATS_SLOTS);
	__type(key, __u32); /* enum reason */
	__type(value, struct reason_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, EVENTS_RINGBUF_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} events SEC(".maps");

/*
 * The host-side ends of pods' veth (or netkit) pairs, by ifindex, as the
 * agent sees them come and go: a packet routed out of one may be handed
 * straight to its peer inside the pod (bpf_redirect_peer).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PEER_DEVICES);
	__type(key, __u32); /* ifindex */
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} peer_devices SEC(".maps");

/*
 * The local L7 proxy's listening sockets, keyed by the service id of the L7
 * frontends they serve. A socket leaves the map by itself when it closes.
 */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, MAX_PROXY_SOCKETS);
	__type(key, __u32); /* svc_id */
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} proxy_sockets SEC(".maps");

static __always_inline struct dp_config *get_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&config, &zero);
}

#endif /* NODEGRESS_MAPS_H */
