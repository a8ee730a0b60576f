/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * TCP timestamps of SNAT'd flows. A SNAT port a closed flow used goes to
 * the next client flow within seconds, while the backend still holds the
 * closed connection in TIME_WAIT. The backend takes the new SYN over that
 * connection (RFC 6191) only if its timestamp is newer than the last one
 * the old connection carried; clients' timestamps have arbitrary offsets,
 * so the datapath gives every flow to a remote backend its own: the
 * client's timestamp plus ts_off, chosen when the flow starts so that it
 * starts at this node's millisecond clock. Every flow through a port then
 * carries newer timestamps than the flows before it. The backend's echoes
 * are translated back on the way to the client.
 */
#ifndef NODEGRESS_TCP_TS_H
#define NODEGRESS_TCP_TS_H

#include <linux/bpf.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "parsing.h"

#define TCPOPT_EOL	  0
#define TCPOPT_NOP	  1
#define TCPOPT_TIMESTAMP  8
#define TCPOLEN_TIMESTAMP 10
/* Options looked at before giving up on finding a timestamp. */
#define TCP_MAX_OPTS 16

/* The clock a new flow's translated timestamps start from (ms). */
static __always_inline __u32 ts_clock_ms(__u64 now_ns)
{
	return (__u32)(now_ns / 1000000);
}

/*
 * tcp_ts_scan returns the offset from the TCP header at l4_off of the
 * timestamp option's TSval (TSecr follows it), or 0 when the segment has
 * none. Linux puts NOP, NOP, TS first on every segment after the
 * handshake; other layouts are walked, option by option, within the
 * header. The datapath calls it through one global function per hook, so
 * that the verifier checks the walk once.
 */
static __always_inline __u32 tcp_ts_scan(void *data, void *data_end,
					 __u32 l4_off)
{
	__u8 *tcp = data + (l4_off & 127);
	__u32 opt_len, i = 0;
	__u8 *opt;
	int n;

	if ((void *)(tcp + sizeof(struct tcphdr)) > data_end)
		return 0;
	opt = tcp + sizeof(struct tcphdr);
	opt_len = ((tcp[12] >> 4) & 0xf) * 4;
	if (opt_len <= sizeof(struct tcphdr))
		return 0;
	opt_len -= sizeof(struct tcphdr);
	if (opt_len >= 12 && (void *)(opt + 12) <= data_end &&
	    opt[0] == TCPOPT_NOP && opt[1] == TCPOPT_NOP &&
	    opt[2] == TCPOPT_TIMESTAMP && opt[3] == TCPOLEN_TIMESTAMP)
		return sizeof(struct tcphdr) + 4;
	/* A bounded number of options: a SYN carries a handful. */
	for (n = 0; n < TCP_MAX_OPTS; n++) {
		__u8 *o = opt + (i & 63);
		__u8 kind, len;

		if (i >= opt_len || (void *)(o + 2) > data_end)
			return 0;
		kind = o[0];
		if (kind == TCPOPT_EOL)
			return 0;
		if (kind == TCPOPT_NOP) {
			i++;
			continue;
		}
		len = o[1];
		if (len < 2)
			return 0;
		if (kind == TCPOPT_TIMESTAMP) {
			if (len != TCPOLEN_TIMESTAMP || i + len > opt_len ||
			    (void *)(o + TCPOLEN_TIMESTAMP) > data_end)
				return 0;
			return sizeof(struct tcphdr) + i + 2;
		}
		i += len;
	}
	return 0;
}

/* Reads the 32-bit field at off from the TCP header (host order). */
static __always_inline int tcp_ts_read(const struct packet *pkt, __u32 off,
				       __u32 *val)
{
	void *data_end = pkt->data_end;
	__u8 *p = (__u8 *)pkt->ports + (off & 63);

	if ((void *)(p + 4) > data_end)
		return -1;
	*val = (__u32)p[0] << 24 | (__u32)p[1] << 16 | (__u32)p[2] << 8 | p[3];
	return 0;
}

#endif /* NODEGRESS_TCP_TS_H */
