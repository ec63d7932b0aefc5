/* SPDX-License-Identifier: GPL-2.0 */
/* Live events for `xdpcnictl monitor` (node/monitor.py): every program reports its verdict through
 * account(), which counts it and, only while a monitor listens (monitor_cfg.active), puts an event
 * into the monitor_events ring buffer: every drop, and every Nth other packet per CPU and hook
 * (monitor_cfg.sample_n, 0 = none). Nobody listening costs one inlined array lookup per packet. */
#pragma once
#include "fwd.h"

#ifdef XDPCNI_BCC
/* BCC 0.26 build (fallback): no monitor events. */
static __always_inline void monitor(struct ctx_buff *ctx, __u32 hook, __u32 ep_id, __u32 reason, __u32 bytes)
{
}
#else
/* Not inlined: the parse below exists once per program and runs only for reported packets. */
static __noinline int monitor_emit(struct ctx_buff *ctx, __u32 hook, __u32 ep_id, __u32 reason, __u32 bytes)
{
	void *data = ctx_data(ctx);
	void *data_end = ctx_data_end(ctx);
	struct hdr_cursor nh = {.pos = data};
	struct monitor_event ev = {};
	struct ethhdr *eth;
	int proto;

	ev.ts_ns = bpf_ktime_get_ns();
	ev.ifindex = ctx_ifindex(ctx);
	ev.ep_id = ep_id;
	ev.len = bytes;
	ev.hook = hook;
	ev.reason = reason;
	ev.cpu = bpf_get_smp_processor_id();
	proto = parse_ethhdr(&nh, data_end, &eth);
	if (proto < 0)
		goto out;
	__builtin_memcpy(ev.smac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(ev.dmac, eth->h_dest, ETH_ALEN);
	if (proto_is_vlan(proto)) {
		struct vlan_tag *tag;

		proto = parse_vlan(&nh, data_end, &tag);
		if (proto < 0)
			goto out;
		ev.vlan = bpf_ntohs(tag->tci) & VLAN_VID_MASK;
	}
	ev.ethertype = proto;
	if (proto == ETH_P_IP) {
		struct iphdr *iph;

		if (parse_iphdr(&nh, data_end, &iph) < 0)
			goto out;
		ev.family = XDPCNI_FAMILY_IPV4;
		ev.l4proto = iph->protocol;
		__builtin_memcpy(ev.src, &iph->saddr, 4);
		__builtin_memcpy(ev.dst, &iph->daddr, 4);
		if (iph->ihl != 5 || (iph->frag_off & bpf_htons(IP_MF_BIT | IP_OFFSET_MASK)))
			goto out;
	} else if (proto == ETH_P_IPV6) {
		struct ipv6hdr *ip6h;

		if (parse_ip6hdr(&nh, data_end, &ip6h) < 0)
			goto out;
		ev.family = XDPCNI_FAMILY_IPV6;
		ev.l4proto = ip6h->nexthdr;
		__builtin_memcpy(ev.src, &ip6h->saddr, 16);
		__builtin_memcpy(ev.dst, &ip6h->daddr, 16);
	} else {
		goto out;
	}
	if (ev.l4proto == 6 /* TCP */ || ev.l4proto == 17 /* UDP */) {
		__be16 *ports = nh.pos;

		if ((void *)(ports + 2) <= data_end) {
			ev.sport = ports[0];
			ev.dport = ports[1];
		}
	}
out:
	bpf_ringbuf_output(&monitor_events, &ev, sizeof(ev), 0);
	return 0;
}

static __always_inline void monitor(struct ctx_buff *ctx, __u32 hook, __u32 ep_id, __u32 reason, __u32 bytes)
{
	struct monitor_config *cfg;
	__u32 key = 0;
	__u64 *seq;

	cfg = monitor_cfg_lookup(&key);
	if (!cfg || !cfg->active)
		return;
	if (!reason_drops(reason)) {
		if (!cfg->sample_n)
			return;
		key = hook;
		seq = monitor_seq_lookup(&key);
		if (!seq)
			return;
		*seq += 1;
		if (*seq < cfg->sample_n)
			return;
		*seq = 0;
	}
	monitor_emit(ctx, hook, ep_id, reason, bytes);
}
#endif

/* Count the packet's verdict on its endpoint's row and report it to a listening monitor. */
static __always_inline void account(struct ctx_buff *ctx, __u32 hook, __u32 ep_id, __u32 reason, __u32 bytes)
{
	count(ep_id, reason, bytes);
	monitor(ctx, hook, ep_id, reason, bytes);
}
