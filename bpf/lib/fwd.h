/* SPDX-License-Identifier: GPL-2.0 */
/* The forwarding rules (docs/design.md "Forwarding rules"): a packet takes the fast path only
 * when the kernel would forward it unchanged but for MACs and TTL; anything else goes to the
 * stack so the kernel decides. Shared by the NIC program (XDP and TC) and the pod program. */
#pragma once
#include "ctx.h"
#include "parsing.h"
#include "maps.h"

#define IP_MF_BIT 0x2000
#define IP_OFFSET_MASK 0x1fff
#define FAMILY_AF_INET 2
#define FAMILY_AF_INET6 10
#define L3_PULL_LEN (ETH_HLEN + 4 + sizeof(struct ipv6hdr))

/* What the checks decided for a packet that may take the fast path. */
struct fwd_plan {
	struct endpoint_key dst; /* destination address as an endpoints key */
	struct endpoint_key src; /* source address as an endpoints key */
	__u32 l3off;             /* offset of the IP header in the frame */
	__u32 ip_len;            /* IP packet length (the frame is trimmed to l3off + ip_len) */
	__u8 family;             /* XDPCNI_FAMILY_IPV4 / _IPV6 */
	__u8 tos;
	__u8 l4proto;
	__u8 pad;
	__be32 flowinfo;
};

/* A check's reason that drops the packet (anti-spoofing, dead target) rather than passing it. */
static __always_inline bool reason_drops(int reason)
{
	return reason == REASON_DROP_SPOOF_MAC || reason == REASON_DROP_SPOOF_IP ||
	       reason == REASON_DROP_REDIRECT || reason == REASON_DROP_VLAN;
}

static __always_inline bool mac_eq(const __u8 *a, const __u8 *b)
{
	return *(__u32 *)a == *(__u32 *)b && *(__u16 *)(a + 4) == *(__u16 *)(b + 4);
}

static __always_inline bool ipv4_csum_ok(struct iphdr *iph)
{
	__u16 *w = (__u16 *)iph;
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += w[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return sum == 0xffff;
}

/* 0/8, 127/8, 169.254/16, 224/4 multicast, 240/4 (incl. limited broadcast). */
static __always_inline bool ipv4_martian(__be32 addr)
{
	__u32 a = bpf_ntohl(addr);
	__u32 top = a >> 24;

	return top == 0 || top == 127 || (a >> 16) == 0xa9fe || top >= 224;
}

/* ::, ::1, IPv4-mapped, fe80::/10 link-local, ff00::/8 multicast. */
static __always_inline bool ipv6_martian(const struct in6_addr *a)
{
	__u32 w0 = bpf_ntohl(a->in6_u.u6_addr32[0]);

	if ((w0 >> 24) == 0xff || (w0 >> 22) == (0xfe80 >> 6))
		return true;
	if (w0 == 0 && a->in6_u.u6_addr32[1] == 0) {
		__u32 w2 = bpf_ntohl(a->in6_u.u6_addr32[2]);
		__u32 w3 = bpf_ntohl(a->in6_u.u6_addr32[3]);
		return (w2 == 0 && w3 <= 1) || w2 == 0xffff;
	}
	return false;
}

/* :: (duplicate address detection) and fe80::/10 (neighbour discovery): a pod's legitimate
 * non-routable IPv6 sources. */
static __always_inline bool ipv6_unspecified_or_link_local(const struct in6_addr *a)
{
	__u32 w0 = bpf_ntohl(a->in6_u.u6_addr32[0]);

	if ((w0 >> 22) == (0xfe80 >> 6))
		return true;
	return !(a->in6_u.u6_addr32[0] | a->in6_u.u6_addr32[1] | a->in6_u.u6_addr32[2] |
		 a->in6_u.u6_addr32[3]);
}

static __always_inline bool ipv6_is_ext_header(__u8 nexthdr)
{
	return nexthdr == 0 /* hop-by-hop */ || nexthdr == 43 /* routing */ || nexthdr == 44 /* fragment */ ||
	       nexthdr == 60 /* dest opts */;
}

/* IPv4 rules: CHECK_OK or the REASON_PASS_* that sends the packet to the stack. */
static __always_inline int check_ipv4(struct hdr_cursor *nh, void *data_end, __u32 l3_avail,
				      struct fwd_plan *plan)
{
	struct iphdr *iph;
	__u16 tot_len;

	if (parse_iphdr(nh, data_end, &iph) < 0)
		return REASON_PASS_BAD_HEADER;
	if (iph->version != 4 || iph->ihl < 5)
		return REASON_PASS_BAD_HEADER;
	if (iph->ihl > 5)
		return REASON_PASS_IP_OPTIONS;
	if (!ipv4_csum_ok(iph))
		return REASON_PASS_BAD_HEADER;
	tot_len = bpf_ntohs(iph->tot_len);
	if (tot_len < sizeof(*iph) || tot_len > l3_avail)
		return REASON_PASS_BAD_HEADER;
	if (iph->frag_off & bpf_htons(IP_MF_BIT | IP_OFFSET_MASK))
		return REASON_PASS_FRAGMENT;
	if (ipv4_martian(iph->saddr) || ipv4_martian(iph->daddr))
		return REASON_PASS_MARTIAN;
	if (iph->ttl <= 1)
		return REASON_PASS_TTL;
	plan->family = XDPCNI_FAMILY_IPV4;
	plan->dst.family = XDPCNI_FAMILY_IPV4;
	plan->src.family = XDPCNI_FAMILY_IPV4;
	__builtin_memcpy(plan->dst.addr, &iph->daddr, 4);
	__builtin_memcpy(plan->src.addr, &iph->saddr, 4);
	plan->ip_len = tot_len;
	plan->tos = iph->tos;
	plan->l4proto = iph->protocol;
	return CHECK_OK;
}

/* IPv6 rules: CHECK_OK or the REASON_PASS_* that sends the packet to the stack. */
static __always_inline int check_ipv6(struct hdr_cursor *nh, void *data_end, __u32 l3_avail,
				      struct fwd_plan *plan)
{
	struct ipv6hdr *ip6h;
	__u32 len;

	if (parse_ip6hdr(nh, data_end, &ip6h) < 0)
		return REASON_PASS_BAD_HEADER;
	if (ip6h->version != 6)
		return REASON_PASS_BAD_HEADER;
	len = sizeof(*ip6h) + bpf_ntohs(ip6h->payload_len);
	if (len > l3_avail)
		return REASON_PASS_BAD_HEADER;
	if (ipv6_is_ext_header(ip6h->nexthdr))
		return REASON_PASS_EXT_HEADER;
	if (ipv6_martian(&ip6h->saddr) || ipv6_martian(&ip6h->daddr))
		return REASON_PASS_MARTIAN;
	if (ip6h->hop_limit <= 1)
		return REASON_PASS_TTL;
	plan->family = XDPCNI_FAMILY_IPV6;
	plan->dst.family = XDPCNI_FAMILY_IPV6;
	plan->src.family = XDPCNI_FAMILY_IPV6;
	__builtin_memcpy(plan->dst.addr, &ip6h->daddr, 16);
	__builtin_memcpy(plan->src.addr, &ip6h->saddr, 16);
	plan->ip_len = len;
	plan->l4proto = ip6h->nexthdr;
	plan->flowinfo = *(__be32 *)ip6h & bpf_htonl(0x0fffffff);
	return CHECK_OK;
}

/* IP rules by the ethertype at the cursor: CHECK_OK or a REASON_PASS_*. */
static __always_inline int check_ip(int proto, struct hdr_cursor *nh, void *data_end, __u32 frame_len,
				    struct fwd_plan *plan)
{
	__u32 l3_avail = frame_len - plan->l3off;

	if (proto == ETH_P_IP)
		return check_ipv4(nh, data_end, l3_avail, plan);
	if (proto == ETH_P_IPV6)
		return check_ipv6(nh, data_end, l3_avail, plan);
	return REASON_PASS_NOT_IP;
}

/* Kernel's ip_decrease_ttl(): incremental checksum update for TTL - 1. */
static __always_inline void ipv4_decrease_ttl(struct iphdr *iph)
{
	__u32 check = iph->check;

	check += bpf_htons(0x0100);
	iph->check = (__u16)(check + (check >= 0xFFFF));
	iph->ttl--;
}

/* Trim padding, decrement TTL/hop limit and write the new MACs. Returns 0, or -1 if the
 * packet changed under us (then it must go to the stack untouched... it is still untouched). */
static __always_inline int ctx_rewrite(struct ctx_buff *ctx, struct fwd_plan *plan, const __u8 *dmac,
				       const __u8 *smac)
{
	void *data, *data_end;
	struct ethhdr *eth;
	__u32 l3off = plan->l3off;

	if (l3off + plan->ip_len < ctx_len(ctx)) {
		if (ctx_trim(ctx, l3off + plan->ip_len) < 0)
			return -1;
	}
	data = ctx_data(ctx);
	data_end = ctx_data_end(ctx);
	if (l3off > ETH_HLEN + 4)
		return -1;
	if (plan->family == XDPCNI_FAMILY_IPV4) {
		struct iphdr *iph = data + l3off;

		if ((void *)(iph + 1) > data_end)
			return -1;
		ipv4_decrease_ttl(iph);
	} else {
		struct ipv6hdr *ip6h = data + l3off;

		if ((void *)(ip6h + 1) > data_end)
			return -1;
		ip6h->hop_limit--;
	}
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return -1;
	__builtin_memcpy(eth->h_dest, dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, smac, ETH_ALEN);
	return 0;
}
