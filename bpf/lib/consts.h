/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Limits, flags and the reason codes every datapath decision is counted and
 * traced under. Limits are #ifndef-guarded so a build can override them; the
 * reason codes are an ABI shared with the Go side (loader.Reason) and only ever
 * grow at the end.
 */
#ifndef NODEGRESS_CONSTS_H
#define NODEGRESS_CONSTS_H

#ifndef MAX_FRONTENDS
#define MAX_FRONTENDS 65536
#endif
#ifndef MAX_BACKENDS
#define MAX_BACKENDS 262144
#endif
#ifndef MAX_BACKEND_SLOTS
#define MAX_BACKEND_SLOTS 262144
#endif
#ifndef MAX_CONNTRACK
#define MAX_CONNTRACK 262144
#endif
#ifndef MAX_DEVICES
#define MAX_DEVICES 64
#endif
#ifndef MAX_PROXY_SOCKETS
#define MAX_PROXY_SOCKETS 64
#endif
#ifndef EVENTS_RINGBUF_BYTES
#define EVENTS_RINGBUF_BYTES (1 << 22)
#endif
/* Attempts at finding a free SNAT port before a new remote flow is dropped. */
/* Distance between SNAT port probes: prime, so every port is reachable. */
#define SNAT_PROBE_STRIDE 40503
#ifndef SNAT_PORT_ATTEMPTS
#define SNAT_PORT_ATTEMPTS 32
#endif

/* Idle time after which a flow's state may be reused (SNAT port, backend). */
#define CT_TCP_IDLE_NS	 (6ULL * 3600 * 1000000000ULL)
#define CT_TCP_CLOSED_NS (10ULL * 1000000000ULL)
#define CT_UDP_IDLE_NS	 (60ULL * 1000000000ULL)
/* A remote flow whose backend never answered (a SYN flood, say) gives its
 * SNAT port up quickly. */
#define CT_UNREPLIED_NS (60ULL * 1000000000ULL)
/*
 * A SNAT port whose flow ended with FINs goes to another client flow only
 * after the backend's TIME_WAIT for it (60s on Linux) is surely over. A SYN
 * from another client flow would meet that TIME_WAIT socket, and clients
 * draw TCP timestamp offsets per 4-tuple (Linux 6.18 does), so its
 * timestamp is as likely older as newer: the backend answers with an ACK,
 * the client resets and retries (milliseconds later, a second after a
 * second refusal). The same client flow coming back may take its port at once
 * (its timestamps keep rising), as may any flow when nothing better is free.
 */
#define SNAT_TIME_WAIT_NS (65ULL * 1000000000ULL)
/* last_seen is refreshed at most this often, to keep hot flows off the bus. */
#define CT_REFRESH_NS (1000000000ULL)

/* frontend_value.flags */
#define FE_F_L7 (1 << 0) /* hand to the local proxy: XDP_PASS untouched */

/* backend_value.flags */
#define BE_F_LOCAL	 (1 << 0) /* pod on this node: DNAT and pass up */
#define BE_F_TERMINATING (1 << 1) /* keeps its flows, gets no new ones */

/* ct_entry.flags */
#define CT_F_REMOTE   (1 << 0) /* backend on another node: flow is SNAT'd */
#define CT_F_SEEN_FIN (1 << 1)
#define CT_F_SEEN_RST (1 << 2)
#define CT_F_REPLIED  (1 << 3) /* reverse_nat only: the backend answered */

/*
 * device_value.flags. A virtual device (veth, netkit, tun, ...) hands XDP the
 * frames its peer transmitted, often CHECKSUM_PARTIAL: the L4 checksum field
 * holds only the pseudo-header sum and XDP has no skb to tell. Rewritten and
 * sent out from XDP, such a frame arrives with a broken checksum; passed up
 * after an XDP rewrite, its checksum is finished from a wrong start. On these
 * devices XDP translates only frames whose checksum it verified complete and
 * leaves the rest to tc, whose skb helpers handle both kinds.
 */
#define DEV_F_PARTIAL_CSUM (1 << 0)

/* dp_config.flags */
#define CFG_F_TRACE (1 << 0) /* emit one ringbuf event per decision */

/* trace_event.stage */
enum stage {
	STAGE_XDP = 1,
	STAGE_TC_INGRESS = 2,
	STAGE_TC_EGRESS = 3,
};

/* trace_event.verdict */
enum verdict {
	VERDICT_PASS = 1,
	VERDICT_TX = 2,
	VERDICT_REDIRECT = 3,
	VERDICT_DROP = 4,
};

/*
 * Why a packet got its verdict. Index into the stats map and the reason field
 * of trace events; names in loader/reasons.go must follow this order.
 */
enum reason {
	REASON_UNSPEC = 0,
	REASON_PASS_NOT_IPV4,	  /* ARP, IPv6, anything not IPv4 */
	REASON_PASS_NOT_TCP_UDP,  /* ICMP and other L4 protocols */
	REASON_PASS_NO_FRONTEND,  /* no frontend and no reply state matched */
	REASON_PASS_FRAGMENT,	  /* IPv4 fragment: ports unknown */
	REASON_PASS_L7,		  /* L7 frontend: left to the local proxy */
	REASON_PASS_FIB,	  /* no route/neighbour: the kernel resolves */
	REASON_FWD_LOCAL,	  /* DNAT to a backend on this node */
	REASON_FWD_REMOTE,	  /* DNAT+SNAT to a backend on another node */
	REASON_REPLY_LOCAL,	  /* reverse DNAT of a local backend's reply */
	REASON_REPLY_REMOTE,	  /* reverse SNAT+DNAT of a remote reply */
	REASON_DROP_MALFORMED_L2, /* truncated Ethernet/VLAN header */
	REASON_DROP_MALFORMED_IP, /* truncated IPv4 header, bad IHL/length */
	REASON_DROP_MALFORMED_L4, /* truncated TCP/UDP header, bad doff */
	REASON_DROP_NO_BACKEND,	  /* frontend without an active backend */
	REASON_DROP_SNAT_EXHAUSTED, /* no free SNAT port in the range */
	REASON_DROP_NO_SNAT_ADDR, /* egress device has no address to SNAT to */
	REASON_DROP_TTL_EXCEEDED, /* would forward with TTL <= 1 */
	REASON_DROP_MAP_FULL,	  /* conntrack/NAT insert failed */
	REASON_PASS_NOT_TRACKED,  /* egress packet of no translated flow */
	REASON_PASS_CSUM_PARTIAL, /* checksum not complete: tc rewrites */
	REASON_MAX,
};

#endif /* NODEGRESS_CONSTS_H */
