/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Packet capture for traces (`nodegress trace --pcap`): with CFG_F_TRACE_PKT
 * set, the event of a traced decision carries up to dp_config.snaplen bytes
 * (at most CAPTURE_MAX) of the frame as it came into the hook and, when the
 * hook rewrote it, of the frame as the hook handed it on. A hook that is
 * about to rewrite calls capture_in first; account_packet takes the rest.
 * Off, a hook about to rewrite tests the config's flags once (capture_in),
 * and account_packet adds nothing to what tracing already tests. The bytes
 * are gathered in a per-CPU buffer, which no other of these programs can
 * use between a hook's capture_in and its account_packet (they do not nest
 * on a CPU), and written to the ring buffer with their exact length: a
 * record takes sizeof(struct trace_packet) and the bytes, so the 4 MiB
 * ring holds some 7,000 of the largest. Records that do not fit are counted
 * in trace_lost (trace.h).
 */
#ifndef NODEGRESS_CAPTURE_H
#define NODEGRESS_CAPTURE_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "consts.h"
#include "decision.h"
#include "maps.h"
#include "structs.h"
#include "trace.h"

struct capture_buf {
	struct trace_packet hdr;
	__u8 data[2 * CAPTURE_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct capture_buf);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} capture_scratch SEC(".maps");

static __always_inline struct capture_buf *capture_buffer(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&capture_scratch, &zero);
}

static __always_inline int capture_on(const struct dp_config *cfg)
{
	return cfg && (cfg->flags & (CFG_F_TRACE | CFG_F_TRACE_PKT)) ==
			  (CFG_F_TRACE | CFG_F_TRACE_PKT);
}

/* The whole frame's length: XDP (is_xdp) or skb. */
static __always_inline __u32 capture_frame_len(void *ctx, int is_xdp)
{
	if (is_xdp)
		return bpf_xdp_get_buff_len(ctx);
	return ((struct __sk_buff *)ctx)->len;
}

/* Copies the first bytes of the frame to data[off..]; returns how many. */
static __always_inline __u32 capture_copy(void *ctx, int is_xdp,
					  const struct dp_config *cfg,
					  struct capture_buf *buf, __u32 off)
{
	/* 64-bit, so that the compiler tests the very register it passes */
	__u64 n = cfg->snaplen;
	__u64 frame = capture_frame_len(ctx, is_xdp);
	long err;

	if (n > CAPTURE_MAX)
		n = CAPTURE_MAX;
	if (n > frame)
		n = frame;
	if (n == 0 || off > CAPTURE_MAX)
		return 0;
	if (is_xdp)
		err = bpf_xdp_load_bytes(ctx, 0, buf->data + off, n);
	else
		err = bpf_skb_load_bytes(ctx, 0, buf->data + off, n);
	return err ? 0 : n;
}

/*
 * Takes the frame as it came in, before the hook rewrites it. Returns the
 * bytes taken, to be passed to account_packet; 0 when capture is off.
 */
static __always_inline __u32 capture_in(void *ctx, int is_xdp)
{
	struct dp_config *cfg = get_config();
	struct capture_buf *buf;

	if (!capture_on(cfg))
		return 0;
	buf = capture_buffer();
	if (!buf)
		return 0;
	return capture_copy(ctx, is_xdp, cfg, buf, 0);
}

/*
 * account for a hook with a packet: counts the decision and, when it is
 * traced, emits its event, with the packet's bytes while capture is on.
 * in_len is what capture_in returned (0: the packet was not rewritten, or
 * capture was off then), so that the frame as it is now is the frame as
 * it left.
 */
static __always_inline void account_packet(void *ctx, int is_xdp, __u32 ifindex,
					   __u8 stage,
					   const struct flow_tuple *orig,
					   const struct decision *d, __u32 len,
					   __u32 in_len)
{
	struct capture_buf *buf;
	struct dp_config *cfg;
	__u32 reason, out_len = 0;

	cfg = account_count(d, len, &reason);
	if (!cfg)
		return;
	buf = capture_on(cfg) ? capture_buffer() : NULL;
	if (!buf) {
		trace_emit(ifindex, stage, orig, d, reason, len);
		return;
	}
	trace_fill(&buf->hdr.ev, ifindex, stage, orig, d, reason, len);
	if (in_len > CAPTURE_MAX)
		in_len = 0;
	if (in_len)
		out_len = capture_copy(ctx, is_xdp, cfg, buf, in_len);
	else
		in_len = capture_copy(ctx, is_xdp, cfg, buf, 0);
	if (in_len > CAPTURE_MAX || out_len > CAPTURE_MAX)
		return; /* never: both are bounded; tells the verifier */
	buf->hdr.out_pkt_len = capture_frame_len(ctx, is_xdp);
	buf->hdr.in_len = in_len;
	buf->hdr.out_len = out_len;
	__builtin_memset(buf->hdr.reserved, 0, sizeof(buf->hdr.reserved));
	if (bpf_ringbuf_output(&events, buf,
			       sizeof(buf->hdr) + in_len + out_len, 0))
		trace_count_lost();
}

#endif /* NODEGRESS_CAPTURE_H */
