/* SPDX-License-Identifier: GPL-2.0 */
/* Context abstraction (after Cilium's __ctx_buff): the forwarding logic in fwd.h compiles for XDP
 * (XDPCNI_XDP defined) and for TC (struct __sk_buff) from one source. */
#pragma once
#include "compat.h"
#include <linux/pkt_cls.h>

#ifdef XDPCNI_XDP
#define ctx_buff xdp_md
#define CTX_PASS XDP_PASS
#define CTX_DROP XDP_DROP

static __always_inline void *ctx_data(struct xdp_md *ctx)
{
	return (void *)(long)ctx->data;
}
static __always_inline void *ctx_data_end(struct xdp_md *ctx)
{
	return (void *)(long)ctx->data_end;
}
static __always_inline __u32 ctx_len(struct xdp_md *ctx)
{
	__u32 len = ctx->data_end - ctx->data;

	/* Opaque to clang: otherwise it folds `n - (end - data)` into `(n + data) - end`, which is
	 * arithmetic on pkt_end and the verifier rejects it. */
	asm volatile("" : "+r"(len));
	return len;
}
static __always_inline __u32 ctx_ifindex(struct xdp_md *ctx)
{
	return ctx->ingress_ifindex;
}
/* XDP frames on our MTUs are linear: nothing to pull. */
static __always_inline void ctx_pull(struct xdp_md *ctx, __u32 len) {}
/* Cut Ethernet padding so the pod gets exactly the IP packet, as kernel forwarding does. */
static __always_inline int ctx_trim(struct xdp_md *ctx, __u32 len)
{
	return bpf_xdp_adjust_tail(ctx, (int)len - (int)ctx_len(ctx));
}
/* True when an IP packet of `ip_len` bytes does not fit the MTU of device `ifindex` (node
 * namespace). XDP frames are never GSO: the IP length is the whole story (VLAN tag excluded). */
static __always_inline int ctx_check_mtu(struct xdp_md *ctx, __u32 ifindex, __u32 ip_len)
{
	__u32 mtu_len = ip_len;

	return bpf_check_mtu(ctx, ifindex, &mtu_len, 0, 0) > 0; /* < 0: no such device (stale endpoint) */
}
#else
#define ctx_buff __sk_buff
#define CTX_PASS TC_ACT_OK
#define CTX_DROP TC_ACT_SHOT

static __always_inline void *ctx_data(struct __sk_buff *ctx)
{
	return (void *)(long)ctx->data;
}
static __always_inline void *ctx_data_end(struct __sk_buff *ctx)
{
	return (void *)(long)ctx->data_end;
}
static __always_inline __u32 ctx_len(struct __sk_buff *ctx)
{
	return ctx->len;
}
static __always_inline __u32 ctx_ifindex(struct __sk_buff *ctx)
{
	return ctx->ingress_ifindex;
}
/* Frames from PACKET_MMAP senders reach TC with only the Ethernet header linear: pull the headers
 * we parse (failure is fine: short packets are then caught by the bounds checks). */
static __always_inline void ctx_pull(struct __sk_buff *ctx, __u32 len)
{
	bpf_skb_pull_data(ctx, len);
}
static __always_inline int ctx_trim(struct __sk_buff *ctx, __u32 len)
{
	return bpf_skb_change_tail(ctx, len, 0);
}
/* True when the skb does not fit the MTU of device `ifindex` (node namespace). GSO-aware: a
 * GRO/TSO super-packet passes when each of its segments fits (BPF_MTU_CHK_SEGS, which needs
 * mtu_len 0 = the skb's own length). */
static __always_inline int ctx_check_mtu(struct __sk_buff *ctx, __u32 ifindex, __u32 ip_len)
{
	__u32 mtu_len = 0;

	return bpf_check_mtu(ctx, ifindex, &mtu_len, 0, BPF_MTU_CHK_SEGS) > 0; /* < 0: no such device */
}
#endif
