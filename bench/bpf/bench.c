/* SPDX-License-Identifier: GPL-2.0 */
/* Helper programs for the benchmarks (bench/), never part of the datapath. Built with clang like the
 * datapath (bench/bpf/Makefile -> bench/bpf/build/bench.o) and loaded through libbpf
 * (datapath/objload.py, bench/bpfhelpers.py): a prologue may tail-call only programs of the same
 * type *and* expected_attach_type, and libbpf's SEC("xdp") sets BPF_XDP where BCC sets 0, so a
 * BCC-built prologue cannot tail-call the clang-built xdp_nic (the prog array insert fails with
 * EINVAL). bench/bpfhelpers.py sets the XDP programs' expected_attach_type to the datapath's.
 *
 * Live frames (BPF_PROG_TEST_RUN + BPF_F_TEST_XDP_LIVE_FRAMES) recycle their pages without
 * copying the frame in again, so a program that rewrites MACs and decrements the TTL would see its
 * own edits on the next use of the page (docs/design.md "Live frames"). The prologues below copy the
 * original headers back from `tmpl` and then tail-call the program under test (slot 0 of
 * xdp_jmp / tc_jmp): every frame the program under test sees is the frame we meant to send.
 *
 * The door programs are the pod's first hook in "to the pod's door" runs: they count and drop. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#define TMPL_LEN 60 /* bytes restored: a whole minimum-size frame (14 + 20 + 8 + 18 payload, no FCS) */

struct frame_tmpl {
	__u8 bytes[TMPL_LEN];
};

/* The frame under test, written by bench/bpfhelpers.py before each run. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct frame_tmpl);
	__uint(max_entries, 1);
} tmpl SEC(".maps");

/* Slot 0: the program under test (xdpcni's pinned xdp_nic/tc_nic, or xdp_pass/xdp_drop below). */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(key_size, 4);
	__uint(value_size, 4);
	__uint(max_entries, 1);
} xdp_jmp SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(key_size, 4);
	__uint(value_size, 4);
	__uint(max_entries, 1);
} tc_jmp SEC(".maps");

/* Door counters: index 0 XDP door, 1 TC door, 2 prologue fell through (tail call failed). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 4);
} hits SEC(".maps");

static __always_inline void hit(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&hits, &idx);

	if (c)
		*c += 1;
}

SEC("xdp")
int xdp_prologue(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 k = 0;
	struct frame_tmpl *t = bpf_map_lookup_elem(&tmpl, &k);

	if (!t || data + TMPL_LEN > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(data, t->bytes, TMPL_LEN);
	bpf_tail_call(ctx, &xdp_jmp, 0);
	hit(2);
	return XDP_ABORTED;
}

SEC("tc")
int tc_prologue(struct __sk_buff *ctx)
{
	__u32 k = 0;
	struct frame_tmpl *t = bpf_map_lookup_elem(&tmpl, &k);

	if (!t)
		return TC_ACT_SHOT;
	bpf_skb_store_bytes(ctx, 0, t->bytes, TMPL_LEN, 0);
	bpf_tail_call(ctx, &tc_jmp, 0);
	hit(2);
	return TC_ACT_SHOT;
}

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("xdp")
int xdp_drop(struct xdp_md *ctx)
{
	return XDP_DROP;
}

SEC("tc")
int tc_pass(struct __sk_buff *ctx)
{
	return TC_ACT_OK;
}

SEC("xdp")
int door_xdp(struct xdp_md *ctx)
{
	hit(0);
	return XDP_DROP;
}

SEC("tc")
int door_tc(struct __sk_buff *ctx)
{
	hit(1);
	return TC_ACT_SHOT;
}

char _license[] SEC("license") = "GPL";
