/* SPDX-License-Identifier: GPL-2.0 */
/* Helper programs for the benchmarks (bench/), never part of the datapath.
 *
 * Live frames (BPF_PROG_TEST_RUN + BPF_F_TEST_XDP_LIVE_FRAMES) recycle their pages without
 * copying the frame in again, so a program that rewrites MACs and decrements the TTL would see its
 * own edits on the next use of the page (docs/design.md "Live frames"). The prologues below copy the
 * original headers back from `tmpl` and then tail-call the program under test (slot 0 of
 * xdp_jmp / tc_jmp): every frame the program under test sees is the frame we meant to send.
 *
 * The door programs are the pod's first hook in "to the pod's door" runs: they count and drop. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>

#define TMPL_LEN 60 /* bytes restored: a whole minimum-size frame (14 + 20 + 8 + 18 payload, no FCS) */

struct frame_tmpl {
	__u8 bytes[TMPL_LEN];
};

/* The frame under test, written by bench/bpfhelpers.py before each run. */
BPF_ARRAY(tmpl, struct frame_tmpl, 1);
/* Slot 0: the program under test (xdpcni's pinned xdp_nic/tc_nic, or xdp_pass/xdp_drop below). */
BPF_PROG_ARRAY(xdp_jmp, 1);
BPF_PROG_ARRAY(tc_jmp, 1);
/* Door counters: index 0 XDP door, 1 TC door, 2 prologue fell through (tail call failed). */
BPF_PERCPU_ARRAY(hits, __u64, 4);

static __always_inline void hit(__u32 idx)
{
	__u64 *c = hits.lookup(&idx);

	if (c)
		*c += 1;
}

int xdp_prologue(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 k = 0;
	struct frame_tmpl *t = tmpl.lookup(&k);

	if (!t || data + TMPL_LEN > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(data, t->bytes, TMPL_LEN);
	xdp_jmp.call(ctx, 0);
	hit(2);
	return XDP_ABORTED;
}

int tc_prologue(struct __sk_buff *ctx)
{
	__u32 k = 0;
	struct frame_tmpl *t = tmpl.lookup(&k);

	if (!t)
		return TC_ACT_SHOT;
	bpf_skb_store_bytes(ctx, 0, t->bytes, TMPL_LEN, 0);
	tc_jmp.call(ctx, 0);
	hit(2);
	return TC_ACT_SHOT;
}

int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

int xdp_drop(struct xdp_md *ctx)
{
	return XDP_DROP;
}

int tc_pass(struct __sk_buff *ctx)
{
	return TC_ACT_OK;
}

int door_xdp(struct xdp_md *ctx)
{
	hit(0);
	return XDP_DROP;
}

int door_tc(struct __sk_buff *ctx)
{
	hit(1);
	return TC_ACT_SHOT;
}
