/* SPDX-License-Identifier: GPL-2.0 */
/* NIC ingress: the decision shared by the XDP and TC NIC programs (xdp_nic.c, tc_nic.c): the L2
 * rules, the IP rules of fwd.h, the endpoint, its MTU, then the conntrack gate. */
#pragma once
#include "fwd.h"
#include "conntrack.h"
#include "monitor.h"

/* Returns CHECK_OK with *epp the endpoint to deliver to (plan filled, packet not yet modified), or
 * the reason that sends the packet to the stack. *epp is then the endpoint when the refusal came
 * after it was found (policy, MTU, conntrack: counted on the pod's row), else NULL (node row).
 * TC: may pull the skb (conntrack gate): packet pointers taken before the call are stale after. */
static __always_inline int nic_decide(struct ctx_buff *ctx, struct node_config *cfg, struct fwd_plan *plan,
				      struct endpoint_info **epp, bool *pop_vlan)
{
	void *data = ctx_data(ctx);
	void *data_end = ctx_data_end(ctx);
	struct hdr_cursor nh = {.pos = data};
	struct ethhdr *eth;
	struct endpoint_info *ep;
	int proto, r;

	*epp = NULL;
	plan->l3off = ETH_HLEN;
	proto = parse_ethhdr(&nh, data_end, &eth);
	if (proto < 0)
		return REASON_PASS_BAD_HEADER;
	if (!mac_eq(eth->h_dest, cfg->nic_mac))
		return REASON_PASS_L2_DEST;
#ifdef XDPCNI_XDP
	if (proto_is_vlan(proto)) {
		struct vlan_tag *tag;

		proto = parse_vlan(&nh, data_end, &tag);
		if (proto < 0 || !cfg->vlan_id || proto_is_vlan(proto) ||
		    (bpf_ntohs(tag->tci) & VLAN_VID_MASK) != cfg->vlan_id)
			return REASON_PASS_VLAN;
		plan->l3off += sizeof(struct vlan_tag);
		*pop_vlan = true;
	}
#else
	/* The kernel moved the outer tag into skb metadata before TC ingress runs. */
	if (ctx->vlan_present) {
		if (!cfg->vlan_id || (ctx->vlan_tci & VLAN_VID_MASK) != cfg->vlan_id)
			return REASON_PASS_VLAN;
		*pop_vlan = true;
	}
	if (proto_is_vlan(proto))
		return REASON_PASS_VLAN;
#endif
	r = check_ip(proto, &nh, data_end, ctx_len(ctx), plan);
	if (r != CHECK_OK)
		return r;
	/* Source validation the kernel does (martian source, rp_filter): a frame from the wire with a
	 * local pod's or the node's own address as source is not the fast path's to deliver. */
	if (endpoints_lookup(&plan->src))
		return REASON_PASS_MARTIAN;
	ep = endpoints_lookup(&plan->dst);
	if (!ep || (ep->flags & XDPCNI_EP_F_NODE))
		return REASON_PASS_NO_ENDPOINT;
	*epp = ep;
	if (ep->flags & XDPCNI_EP_F_INGRESS_VIA_STACK)
		return REASON_PASS_POLICY;
	/* Larger than the pod's MTU (its host veth has the same): the stack fragments or answers
	 * frag-needed / packet-too-big. A redirect would be lost (XDP) or delivered oversize (TC). */
	if (ctx_check_mtu(ctx, ep->ifindex, plan->ip_len))
		return REASON_PASS_MTU;
	if (cfg->flags & XDPCNI_NODE_F_CONNTRACK)
		return check_conntrack(ctx, plan);
	return CHECK_OK;
}
