/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Flow state: the conntrack entry that binds a client flow to its backend,
 * and the reverse_nat entry that lets the reply be translated back. Remote
 * flows also own a SNAT port, chosen here.
 */
#ifndef NODEGRESS_CONNTRACK_H
#define NODEGRESS_CONNTRACK_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "consts.h"
#include "maps.h"
#include "parsing.h"
#include "structs.h"

static __always_inline __u8 ct_flags_from_tcp(__u8 tcp_flags)
{
	__u8 flags = 0;

	if (tcp_flags & TCP_FLAG_FIN)
		flags |= CT_F_SEEN_FIN;
	if (tcp_flags & TCP_FLAG_RST)
		flags |= CT_F_SEEN_RST;
	return flags;
}

/* A flow idle for longer than its protocol allows may give up its state. */
static __always_inline int ct_is_stale(__u64 now, __u64 last_seen, __u8 proto,
				       __u8 flags)
{
	__u64 idle = now - last_seen;

	if (proto == IPPROTO_UDP)
		return idle > CT_UDP_IDLE_NS;
	if (!(flags & CT_F_REPLIED))
		return idle > CT_UNREPLIED_NS;
	if (flags & (CT_F_SEEN_FIN | CT_F_SEEN_RST))
		return idle > CT_TCP_CLOSED_NS;
	return idle > CT_TCP_IDLE_NS;
}

/* The key under which the reply of a flow to backend be arrives. */
static __always_inline void reply_key(struct flow_tuple *key,
				      const struct backend_value *be,
				      __be32 to_addr, __be16 to_port,
				      __u8 proto)
{
	key->saddr = be->addr;
	key->daddr = to_addr;
	key->sport = be->port;
	key->dport = to_port;
	key->proto = proto;
	key->pad[0] = 0;
	key->pad[1] = 0;
	key->pad[2] = 0;
}

static __always_inline void rev_nat_fill(struct rev_nat_entry *rn,
					 const struct flow_tuple *client,
					 __u64 now, __u8 flags)
{
	rn->last_seen_ns = now;
	rn->client_addr = client->saddr;
	rn->frontend_addr = client->daddr;
	rn->client_port = client->sport;
	rn->frontend_port = client->dport;
	rn->flags = flags;
	rn->pad[0] = 0;
	rn->pad[1] = 0;
	rn->pad[2] = 0;
	rn->ts_off = 0;
	rn->pad2 = 0;
}

static __always_inline int rev_nat_same_flow(const struct rev_nat_entry *rn,
					     const struct flow_tuple *client)
{
	return rn->client_addr == client->saddr &&
	       rn->frontend_addr == client->daddr &&
	       rn->client_port == client->sport &&
	       rn->frontend_port == client->dport;
}

/*
 * A remote flow idle for longer than its timeout may have lost its SNAT
 * port to another flow; it still owns it if the port's reverse entry names
 * it.
 */
static __always_inline int snat_port_owned(const struct ct_entry *ct,
					   const struct backend_value *be,
					   const struct flow_tuple *client)
{
	struct rev_nat_entry *rn;
	struct flow_tuple key;

	reply_key(&key, be, ct->nat_addr, ct->nat_port, client->proto);
	rn = bpf_map_lookup_elem(&reverse_nat, &key);
	return rn && rev_nat_same_flow(rn, client);
}

/*
 * A port the node serves a frontend on (a NodePort, :80/:443 for the
 * proxy) must never be a SNAT port: replies to it would be taken for new
 * traffic to that frontend.
 */
static __always_inline int snat_port_is_frontend(__be32 addr, __be16 port,
						 __u8 proto)
{
	struct frontend_key fk = {
	    .addr = addr,
	    .port = port,
	    .proto = proto,
	};

	return bpf_map_lookup_elem(&frontends, &fk) != NULL;
}

/*
 * A port another flow held may go to a new flow (new_flags) once that flow
 * is stale and, if it ended with FINs, the backend's TIME_WAIT for the port
 * takes the new flow's SYN: at once when both flows' timestamps are
 * translated and the old one closed both ways, else once it is surely over.
 */
static __always_inline int snat_port_expired(__u64 now,
					     const struct rev_nat_entry *old,
					     __u8 proto, __u8 new_flags)
{
	const __u8 closed = CT_F_FIN_CLIENT | CT_F_FIN_BACKEND;

	if (proto == IPPROTO_TCP && (old->flags & CT_F_SEEN_FIN) &&
	    !(old->flags & CT_F_SEEN_RST)) {
		if ((new_flags & CT_F_TS) && (old->flags & CT_F_TS) &&
		    (old->flags & closed) == closed)
			return now - old->last_seen_ns > SNAT_TS_REUSE_NS;
		return now - old->last_seen_ns > SNAT_TIME_WAIT_NS;
	}
	return ct_is_stale(now, old->last_seen_ns, proto, old->flags);
}

/*
 * The source address of SNAT slot a (0: the device's own address, then its
 * extra SNAT addresses).
 */
static __always_inline __be32 snat_slot_addr(const struct device_value *dev,
					     __u32 a)
{
	if (a == 0 || a > MAX_SNAT_EXTRA)
		return dev->addr;
	return dev->snat_addrs[(a - 1) & (MAX_SNAT_EXTRA - 1)];
}

/*
 * snat_alloc reserves a source address and port of the egress device dev
 * for the client's flow to a remote backend by inserting its reverse_nat
 * entry. The pool is every port of the range on each of the device's SNAT
 * addresses; it probes from a hashed start, in strides, so concurrent CPUs
 * rarely collide and a client flow that comes back (a reused client port)
 * finds the address and port it had. A free port, the
 * flow's own port (state lost to LRU eviction, or a new connection on the same
 * 4-tuple) or an expired one is taken; failing those, the first port whose
 * flow is stale but may still be in the backend's TIME_WAIT, which is better
 * than no connection.
 */
static __always_inline int snat_alloc(const struct flow_tuple *client,
				      const struct backend_value *be,
				      const struct device_value *dev,
				      const struct dp_config *cfg, __u32 hash,
				      __u64 now, __u32 ts_off, __u8 ts_flag,
				      __be32 *addr_out, __be16 *port_out)
{
	struct rev_nat_entry rn;
	struct flow_tuple key;
	__u32 min = cfg->snat_port_min;
	__be32 fallback_addr = 0;
	__be16 fallback = 0;
	__u32 range, slots;
	int i;

	if (cfg->snat_port_max < cfg->snat_port_min || min == 0)
		return -1;
	range = (__u32)cfg->snat_port_max - min + 1;
	slots = range;
	if (dev->snat_extra > 0 && dev->snat_extra <= MAX_SNAT_EXTRA)
		slots = range * (1 + dev->snat_extra);
	rev_nat_fill(&rn, client, now, CT_F_REMOTE | ts_flag);
	rn.ts_off = ts_off;
	reply_key(&key, be, dev->addr, 0, client->proto);

	for (i = 0; i < SNAT_PORT_ATTEMPTS; i++) {
		struct rev_nat_entry *old;
		__u32 slot;

		/* Probes jump across the range: a block of NodePorts inside it
		 * (a cluster's node port range may overlap it) must not
		 * swallow every probe of a flow. */
		slot = (hash + i * SNAT_PROBE_STRIDE) % slots;
		key.daddr = snat_slot_addr(dev, slot / range);
		key.dport = bpf_htons((__u16)(min + slot % range));
		if (snat_port_is_frontend(key.daddr, key.dport, client->proto))
			continue;
		if (!bpf_map_update_elem(&reverse_nat, &key, &rn, BPF_NOEXIST))
			goto done;
		old = bpf_map_lookup_elem(&reverse_nat, &key);
		if (!old)
			continue;
		if (rev_nat_same_flow(old, client) ||
		    snat_port_expired(now, old, client->proto, rn.flags)) {
			if (!bpf_map_update_elem(&reverse_nat, &key, &rn,
						 BPF_ANY))
				goto done;
		} else if (!fallback &&
			   ct_is_stale(now, old->last_seen_ns, client->proto,
				       old->flags)) {
			fallback_addr = key.daddr;
			fallback = key.dport;
		}
	}
	if (!fallback)
		return -1;
	key.daddr = fallback_addr;
	key.dport = fallback;
	if (bpf_map_update_elem(&reverse_nat, &key, &rn, BPF_ANY))
		return -1;
done:
	*addr_out = key.daddr;
	*port_out = key.dport;
	return 0;
}

#endif /* NODEGRESS_CONNTRACK_H */
