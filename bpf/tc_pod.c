/* SPDX-License-Identifier: GPL-2.0 */
/* TC ingress on a pod's host-side veth (pod egress). Anti-spoofing first (source MAC and IP must
 * be the pod's own), then the forwarding rules, then: another local pod -> bpf_redirect_peer into
 * it; anywhere else -> bpf_fib_lookup and redirect out of the FIB's device (bpf_redirect_neigh when
 * the neighbour is not resolved yet). Anything the rules do not cover goes to the stack. */
#include "lib/pod.h"

/* BCC 0.26 declares bpf_redirect_neigh with 3 arguments and the verifier rejects that call. */
static long (*redirect_neigh)(__u32 ifindex, struct bpf_redir_neigh *params, int plen,
			      __u64 flags) = (void *)BPF_FUNC_redirect_neigh;

static __always_inline int fib_forward(struct __sk_buff *ctx, struct fwd_plan *plan, __u32 ep_id, __u32 bytes)
{
	struct bpf_fib_lookup p = {};
	struct bpf_redir_neigh nh = {};
	int rc;

	p.ifindex = ctx->ingress_ifindex;
	p.l4_protocol = plan->l4proto;
	/* tot_len 0: the helper checks the skb itself against the egress MTU, GSO-aware (a TSO
	 * super-packet passes when its segments fit); with the IP length every GSO skb would get
	 * FRAG_NEEDED. A real oversize packet still gets it and goes to the stack, which answers
	 * the pod with frag-needed / packet-too-big. */
	p.tot_len = 0;
	if (plan->family == XDPCNI_FAMILY_IPV4) {
		p.family = FAMILY_AF_INET;
		p.tos = plan->tos;
		__builtin_memcpy(&p.ipv4_src, plan->src.addr, 4);
		__builtin_memcpy(&p.ipv4_dst, plan->dst.addr, 4);
	} else {
		p.family = FAMILY_AF_INET6;
		p.flowinfo = plan->flowinfo;
		__builtin_memcpy(p.ipv6_src, plan->src.addr, 16);
		__builtin_memcpy(p.ipv6_dst, plan->dst.addr, 16);
	}
	rc = bpf_fib_lookup(ctx, &p, sizeof(p), 0);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		if (ctx_rewrite(ctx, plan, p.dmac, p.smac) < 0)
			goto pass;
		account(ctx, XDPCNI_HOOK_TC_POD, ep_id, REASON_FWD_POD_TO_NIC, bytes);
		return bpf_redirect(p.ifindex, 0);
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		/* MACs are filled in by the neighbour subsystem; only TTL and padding here. */
		if (ctx_rewrite(ctx, plan, p.dmac, p.smac) < 0)
			goto pass;
		nh.nh_family = p.family;
		if (p.family == FAMILY_AF_INET)
			nh.ipv4_nh = p.ipv4_dst;
		else
			__builtin_memcpy(nh.ipv6_nh, p.ipv6_dst, 16);
		account(ctx, XDPCNI_HOOK_TC_POD, ep_id, REASON_FWD_POD_TO_NIC, bytes);
		return redirect_neigh(p.ifindex, &nh, sizeof(nh), 0);
	}
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED) {
		account(ctx, XDPCNI_HOOK_TC_POD, ep_id, REASON_PASS_MTU, bytes);
		return TC_ACT_OK;
	}
pass:
	account(ctx, XDPCNI_HOOK_TC_POD, ep_id, REASON_PASS_FIB, bytes);
	return TC_ACT_OK;
}

XDPCNI_PROG("tc")
int tc_pod(struct __sk_buff *ctx)
{
	__u32 ifindex = ctx->ingress_ifindex, bytes = ctx->len, key0 = 0;
	struct endpoint_info *dst_ep;
	struct node_config *cfg;
	struct fwd_plan plan = {};
	struct hdr_cursor nh;
	struct iface_info *ifc;
	struct ethhdr *eth;
	void *data, *data_end;
	int proto, r;

	ifc = ifaces_lookup(&ifindex);
	if (!ifc)
		return TC_ACT_OK; /* not (or no longer) an endpoint: the stack decides */
	ctx_pull(ctx, L3_PULL_LEN);
	data = ctx_data(ctx);
	data_end = ctx_data_end(ctx);
	nh.pos = data;
	proto = parse_ethhdr(&nh, data_end, &eth);
	if (proto < 0) {
		r = REASON_PASS_BAD_HEADER;
		goto out;
	}
	r = check_pod_untagged(ctx, proto);
	if (r != CHECK_OK)
		goto out;
	r = check_pod_source(eth, proto, nh.pos, data_end, ifc, ifindex);
	if (r != CHECK_OK)
		goto out;
	r = check_pod_l2_dest(eth, ifc);
	if (r != CHECK_OK)
		goto out;
	plan.l3off = ETH_HLEN;
	r = check_ip(proto, &nh, data_end, ctx->len, &plan);
	if (r != CHECK_OK)
		goto out;
	cfg = node_cfg_lookup(&key0);
	if (cfg && (cfg->flags & XDPCNI_NODE_F_CONNTRACK)) {
		r = check_conntrack(ctx, &plan);
		if (r != CHECK_OK)
			goto out;
	}
	dst_ep = endpoints_lookup(&plan.dst);
	if (!dst_ep || (dst_ep->flags & XDPCNI_EP_F_NODE)) /* the node itself: the FIB says local */
		return fib_forward(ctx, &plan, ifc->ep_id, bytes);
	if (dst_ep->flags & XDPCNI_EP_F_INGRESS_VIA_STACK) {
		r = REASON_PASS_POLICY;
		goto out;
	}
	if (ctx_check_mtu(ctx, dst_ep->ifindex, plan.ip_len)) {
		r = REASON_PASS_MTU;
		goto out;
	}
	if (ctx_rewrite(ctx, &plan, dst_ep->pod_mac, dst_ep->host_mac) < 0) {
		r = REASON_PASS_PADDING;
		goto out;
	}
	account(ctx, XDPCNI_HOOK_TC_POD, ifc->ep_id, REASON_FWD_POD_TO_POD, bytes);
	return bpf_redirect_peer(dst_ep->ifindex, 0);
out:
	account(ctx, XDPCNI_HOOK_TC_POD, ifc->ep_id, r, bytes);
	return reason_drops(r) ? TC_ACT_SHOT : TC_ACT_OK;
}
