/* SPDX-License-Identifier: GPL-2.0 */
/* XDP on the node's NIC: frames for local pods are rewritten and redirected through the
 * tx_ports DEVMAP_HASH into the pod's host-side veth (then straight into the pod's eth0),
 * skipping the host's routing, netfilter and neighbour code. Everything else: XDP_PASS. */
#define XDPCNI_XDP 1
#include "lib/nic.h"

/* Remove the outer 802.1Q tag after the MACs were rewritten: move them over the tag. */
static __always_inline int xdp_pop_vlan(struct xdp_md *ctx)
{
	void *data = ctx_data(ctx);
	void *data_end = ctx_data_end(ctx);
	__u8 macs[2 * ETH_ALEN];

	if (data + ETH_HLEN + sizeof(struct vlan_tag) > data_end)
		return -1;
	__builtin_memcpy(macs, data, sizeof(macs));
	__builtin_memcpy(data + sizeof(struct vlan_tag), macs, sizeof(macs));
	return bpf_xdp_adjust_head(ctx, sizeof(struct vlan_tag));
}

XDPCNI_PROG("xdp")
int xdp_nic(struct xdp_md *ctx)
{
	struct fwd_plan plan = {};
	struct endpoint_info *ep = NULL;
	struct node_config *cfg;
	__u32 key0 = 0, bytes = ctx_len(ctx);
	bool pop_vlan = false;
	int reason, act;

	cfg = node_cfg_lookup(&key0);
	if (!cfg)
		return XDP_PASS;
	reason = nic_decide(ctx, cfg, &plan, &ep, &pop_vlan);
	if (reason != CHECK_OK || !ep)
		goto pass;
	if (ctx_rewrite(ctx, &plan, ep->pod_mac, ep->host_mac) < 0) {
		reason = REASON_PASS_PADDING;
		goto pass;
	}
	if (pop_vlan && xdp_pop_vlan(ctx) < 0)
		return XDP_DROP; /* cannot happen: the tag was parsed above */
	act = tx_ports_redirect(ep->ifindex, 0);
	account(ctx, XDPCNI_HOOK_XDP_NIC, ep->ep_id,
		act == XDP_REDIRECT ? REASON_FWD_NIC_TO_POD : REASON_DROP_REDIRECT, bytes);
	return act;
pass:
	account(ctx, XDPCNI_HOOK_XDP_NIC, ep ? ep->ep_id : 0, reason, bytes);
	return XDP_PASS;
}
