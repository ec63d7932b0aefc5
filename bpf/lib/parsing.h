/* SPDX-License-Identifier: GPL-2.0 */
/* Header parsing with a cursor (after xdp-project/xdp-tutorial common/parsing_helpers.h): one
 * parse_<header>() per header; each bounds-checks, advances the cursor and returns the next
 * protocol (host order for ethertypes), or -1 when the header does not fit in the packet. */
#pragma once
#include "compat.h"
#include <linux/if_ether.h>
#include <linux/if_vlan.h>
#include <linux/ip.h>
#include <linux/ipv6.h>

/* The kernel-internal <linux/if_vlan.h> (BCC) has it; the uapi one (clang build) does not. */
#ifndef VLAN_VID_MASK
#define VLAN_VID_MASK 0x0fff
#endif

struct hdr_cursor {
	void *pos;
};

struct vlan_tag {
	__be16 tci;
	__be16 encap_proto;
};

static __always_inline int parse_ethhdr(struct hdr_cursor *nh, void *data_end, struct ethhdr **eth)
{
	struct ethhdr *h = nh->pos;

	if ((void *)(h + 1) > data_end)
		return -1;
	nh->pos = h + 1;
	*eth = h;
	return bpf_ntohs(h->h_proto);
}

static __always_inline bool proto_is_vlan(int proto)
{
	return proto == ETH_P_8021Q || proto == ETH_P_8021AD;
}

/* One 802.1Q/802.1ad tag. */
static __always_inline int parse_vlan(struct hdr_cursor *nh, void *data_end, struct vlan_tag **tag)
{
	struct vlan_tag *t = nh->pos;

	if ((void *)(t + 1) > data_end)
		return -1;
	nh->pos = t + 1;
	*tag = t;
	return bpf_ntohs(t->encap_proto);
}

/* The fixed 20-byte IPv4 header; options (IHL > 5) are left to the caller to reject. */
static __always_inline int parse_iphdr(struct hdr_cursor *nh, void *data_end, struct iphdr **iph)
{
	struct iphdr *h = nh->pos;

	if ((void *)(h + 1) > data_end)
		return -1;
	nh->pos = h + 1;
	*iph = h;
	return h->protocol;
}

static __always_inline int parse_ip6hdr(struct hdr_cursor *nh, void *data_end, struct ipv6hdr **ip6h)
{
	struct ipv6hdr *h = nh->pos;

	if ((void *)(h + 1) > data_end)
		return -1;
	nh->pos = h + 1;
	*ip6h = h;
	return h->nexthdr;
}
