/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Map keys and values shared with Go (bpf2go -type). Every struct has explicit
 * padding so C and Go agree on the layout byte for byte. Addresses and ports
 * are network byte order (__be*); ids, counts, flags and times host order.
 */
#ifndef NODEGRESS_STRUCTS_H
#define NODEGRESS_STRUCTS_H

#include <linux/types.h>

#include "consts.h"

/* A packet's IPv4 5-tuple as it appears on the wire. */
struct flow_tuple {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

/*
 * frontends key: an address clients connect to, in one scope: packets
 * arriving on external devices, or sockets of in-cluster clients (whose
 * backends differ under Local traffic policies).
 */
struct frontend_key {
	__be32 addr;
	__be16 port;
	__u8 proto;
	__u8 scope; /* enum frontend_scope */
};

/* frontends value: which service, how many active backend slots it has. */
struct frontend_value {
	__u32 svc_id;
	__u16 backend_count; /* slots 1..backend_count in backend_slots */
	__u16 flags;	     /* FE_F_* */
	__u32
	    affinity_timeout_s; /* FE_F_AFFINITY: ClientIP affinity lifetime */
	__u32 pad;
};

/*
 * source_ranges key (LPM trie): a client prefix allowed to reach the
 * service's restricted frontends. prefixlen counts the 32 bits of svc_id
 * plus the prefix's, so only the service's own ranges match.
 */
struct source_range_key {
	__u32 prefixlen;
	__u32 svc_id;
	__be32 addr;
};

/* service_backends key: backend_id is an active backend of svc_id. */
struct service_backend_key {
	__u32 svc_id;
	__u32 backend_id;
};

/* affinity key: one client address of one service (ClientIP affinity). */
struct affinity_key {
	__u32 svc_id;
	__be32 client;
};

/* affinity value: the backend the client's new connections go to. */
struct affinity_value {
	__u64 last_used_ns;
	__u32 backend_id;
	__u32 pad;
};

/* backend_slots key: slot N (1-based) of a service's active backends. */
struct backend_slot_key {
	__u32 svc_id;
	__u32 slot;
};

/* backends value, keyed by a __u32 backend id. */
struct backend_value {
	__be32 addr;
	__be16 port;
	__u8 flags; /* BE_F_* */
	__u8 pad;
};

/*
 * sock_rev_nat key: a socket (by cookie) and the backend it was sent to
 * by the socket-level load balancer.
 */
struct sock_rev_key {
	__u64 cookie;
	__be32 addr;
	__be16 port;
	__u16 pad;
};

/* sock_rev_nat value: the frontend the socket asked for. */
struct sock_rev_value {
	__be32 addr;
	__be16 port;
	__u16 pad;
};

/* conntrack value, keyed by the client's flow_tuple (client -> frontend). */
struct ct_entry {
	__u64 created_ns;
	__u64 last_seen_ns;
	__u32 svc_id;
	__u32 backend_id;
	/* Where the flow goes: kept so that an established TCP flow outlives
	 * the removal of its backend from the service, as with kube-proxy. */
	__be32 backend_addr;
	__be32 nat_addr; /* SNAT source for remote backends, else 0 */
	__be16 backend_port;
	__be16 nat_port; /* SNAT source port for remote backends, else 0 */
	__u8 flags;	 /* CT_F_* */
	__u8 pad[3];
	/* CT_F_TS: added to the client's TCP timestamps (tcp_ts.h) */
	__u32 ts_off;
	__u32 pad2;
};

/*
 * reverse_nat value, keyed by the reply's flow_tuple as it arrives
 * (backend -> client for local backends, backend -> node:nat_port for remote
 * ones): what to rewrite the reply to.
 */
struct rev_nat_entry {
	__u64 last_seen_ns;
	__be32 client_addr;
	__be32 frontend_addr;
	__be16 client_port;
	__be16 frontend_port;
	__u8 flags; /* CT_F_* of the forward entry */
	__u8 pad[3];
	/* CT_F_TS: taken from the backend's timestamp echoes */
	__u32 ts_off;
	__u32 pad2;
};

/*
 * devices value, keyed by ifindex: the address SNAT uses leaving it, and what
 * XDP may trust about the frames it receives there.
 */
struct device_value {
	__be32 addr;
	__u32 flags; /* DEV_F_* */
	/* more SNAT sources (--snat-addresses): the first snat_extra */
	__be32 snat_addrs[MAX_SNAT_EXTRA];
	__u32 snat_extra;
};

/* config: single-entry array written by the agent. */
struct dp_config {
	__u32 flags;	     /* CFG_F_* */
	__u16 snat_port_min; /* host order, inclusive */
	__u16 snat_port_max; /* host order, inclusive */
	__u32 hash_seed;     /* per-node seed of the backend selection hash */
	__u32 maglev_seed;   /* cluster-wide seed of the Maglev flow hash */
	__u32 maglev_size;   /* entries of every Maglev table (prime) */
	__u16 snaplen;	     /* CFG_F_TRACE_PKT: bytes to copy, each way */
	__u16 pad;
};

/* stats value (per-CPU array indexed by enum reason). */
struct reason_stats {
	__u64 packets;
	__u64 bytes;
};

/* One datapath decision, sent on the events ring buffer when tracing. */
struct trace_event {
	__u64 ts_ns; /* bpf_ktime_get_ns */
	__u32 ifindex;
	__u32 svc_id;
	__u32 backend_id;
	__u16 reason; /* enum reason */
	__u8 stage;   /* enum stage */
	__u8 verdict; /* enum verdict */
	struct flow_tuple orig;
	struct flow_tuple xlated; /* equal to orig when nothing was rewritten */
	__u32 pkt_len;
	__u32 pad;
};

/*
 * A trace_event with the packet's bytes (CFG_F_TRACE_PKT), followed by
 * in_len bytes of the frame as it came into the hook and out_len bytes of
 * the frame as the hook handed it on. out_len is 0 when the hook did not
 * rewrite the packet (passed, dropped): then both are the same bytes. Both
 * start at the Ethernet header.
 */
struct trace_packet {
	struct trace_event ev;
	__u32 out_pkt_len; /* length of the frame as the hook left it */
	__u16 in_len;
	__u16 out_len;
	/* Keeps every packet record longer than a kdrop_event, whatever its
	 * data: the agent tells the kinds of records apart by size. */
	__u8 reserved[16];
};

#endif /* NODEGRESS_STRUCTS_H */
