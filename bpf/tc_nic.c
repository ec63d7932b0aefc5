/* SPDX-License-Identifier: GPL-2.0 */
/* TC ingress on the node's NIC (clsact, direct action): the same forwarding logic as xdp_nic.c for
 * NICs where XDP redirect does not pay (veth, generic XDP). Delivery with bpf_redirect_peer goes
 * from here straight into the pod's eth0 in the pod namespace: no host stack, no backlog queue,
 * no second pass through the host-side veth. Everything else: TC_ACT_OK (the stack decides). */
#include "lib/nic.h"

XDPCNI_PROG("tc")
int tc_nic(struct __sk_buff *ctx)
{
	struct fwd_plan plan = {};
	struct endpoint_info *ep = NULL;
	struct node_config *cfg;
	__u32 key0 = 0, bytes = ctx->len;
	bool pop_vlan = false;
	int reason;

	cfg = node_cfg_lookup(&key0);
	if (!cfg)
		return TC_ACT_OK;
	ctx_pull(ctx, L3_PULL_LEN);
	reason = nic_decide(ctx, cfg, &plan, &ep, &pop_vlan);
	if (reason != CHECK_OK || !ep)
		goto pass;
	if (ctx_rewrite(ctx, &plan, ep->pod_mac, ep->host_mac) < 0) {
		reason = REASON_PASS_PADDING;
		goto pass;
	}
	/* bpf_redirect_peer cannot report a missing target (the kernel drops it later), so check the
	 * endpoint's veth is still registered: the CNI removes `ifaces` on DEL and GC sweeps entries
	 * whose veth vanished. (XDP mode gets this from the DEVMAP, which drops dead devices.) */
	if (!ifaces_lookup(&ep->ifindex)) {
		account(ctx, XDPCNI_HOOK_TC_NIC, ep->ep_id, REASON_DROP_REDIRECT, bytes);
		return TC_ACT_SHOT;
	}
	if (pop_vlan)
		bpf_skb_vlan_pop(ctx);
	account(ctx, XDPCNI_HOOK_TC_NIC, ep->ep_id, REASON_FWD_NIC_TO_POD, bytes);
	return bpf_redirect_peer(ep->ifindex, 0);
pass:
	account(ctx, XDPCNI_HOOK_TC_NIC, ep ? ep->ep_id : 0, reason, bytes);
	return TC_ACT_OK;
}
