/* SPDX-License-Identifier: GPL-2.0 */
/* Pod egress checks (anti-spoofing, then the pod-side L2 rules), used by tc_pod.c before the
 * shared IP rules of fwd.h. Same convention as every check_*(): CHECK_OK or the deciding reason. */
#pragma once
#include "fwd.h"
#include "conntrack.h"
#include "monitor.h"

/* The source key of an IP packet; 1 when the source is one the stack must see and may see (IPv4
 * 0.0.0.0, IPv6 unspecified for duplicate address detection, the pod's link-local for neighbour
 * discovery: the kernel never forwards these), -1 when truncated. Any other source must be one of
 * the pod's own addresses: ::1, multicast and IPv4-mapped (::ffff:a.b.c.d, a forged IPv4 source
 * that dual-stack sockets report as the IPv4 sender) are looked up like any other and dropped. */
static __always_inline int load_src(int proto, void *l3, void *data_end, struct endpoint_key *src)
{
	if (proto == ETH_P_IP) {
		struct iphdr *iph = l3;

		if ((void *)(iph + 1) > data_end)
			return -1;
		if (iph->saddr == 0)
			return 1;
		src->family = XDPCNI_FAMILY_IPV4;
		__builtin_memcpy(src->addr, &iph->saddr, 4);
		return 0;
	}
	if (proto == ETH_P_IPV6) {
		struct ipv6hdr *ip6h = l3;

		if ((void *)(ip6h + 1) > data_end)
			return -1;
		if (ipv6_unspecified_or_link_local(&ip6h->saddr))
			return 1;
		src->family = XDPCNI_FAMILY_IPV6;
		__builtin_memcpy(src->addr, &ip6h->saddr, 16);
		return 0;
	}
	return 1;
}

/* Anti-spoofing: the pod's own MAC, and (for IP with a routable source) one of the pod's own
 * addresses on this very veth. Then the endpoint's policy flags for its egress. */
static __always_inline int check_pod_source(struct ethhdr *eth, int proto, void *l3, void *data_end,
					    struct iface_info *ifc, __u32 ifindex)
{
	struct endpoint_key src = {};
	struct endpoint_info *src_ep;
	int r;

	if (!mac_eq(eth->h_source, ifc->pod_mac))
		return REASON_DROP_SPOOF_MAC;
	r = load_src(proto, l3, data_end, &src);
	if (r < 0)
		return REASON_PASS_BAD_HEADER;
	if (r > 0)
		return CHECK_OK; /* no routable source: the IP rules send it to the stack */
	src_ep = endpoints_lookup(&src);
	if (!src_ep || src_ep->ifindex != ifindex || (src_ep->flags & XDPCNI_EP_F_NODE))
		return REASON_DROP_SPOOF_IP;
	if (src_ep->flags & XDPCNI_EP_F_EGRESS_VIA_STACK)
		return REASON_PASS_POLICY;
	return CHECK_OK;
}

/* Pods send untagged frames only: a tag (moved into skb metadata by the kernel before TC ingress,
 * or a second one left in the frame) would leave the node tagged on the fast path, a VLAN hop. */
static __always_inline int check_pod_untagged(struct __sk_buff *ctx, int proto)
{
	if (ctx->vlan_present || proto_is_vlan(proto))
		return REASON_DROP_VLAN;
	return CHECK_OK;
}

/* Only frames addressed to the host veth's MAC are routed by the kernel. */
static __always_inline int check_pod_l2_dest(struct ethhdr *eth, struct iface_info *ifc)
{
	if (!mac_eq(eth->h_dest, ifc->host_mac))
		return REASON_PASS_L2_DEST;
	return CHECK_OK;
}
