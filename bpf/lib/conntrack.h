/* SPDX-License-Identifier: GPL-2.0 */
/* The conntrack gate (docs/design.md "Netfilter and conntrack"): with XDPCNI_NODE_F_CONNTRACK set
 * in node_cfg (node setting netfilter: respect, or auto on a node with netfilter state), a packet
 * takes the fast path only when the kernel's conntrack already accepted its flow, unchanged:
 *  - TCP or UDP (the only protocols with lookup kfuncs; ICMP, ICMP errors about a flow included,
 *    need conntrack to see them); for TCP no SYN/FIN/RST in this packet;
 *  - an entry for the packet's own tuple (either direction), CONFIRMED and ASSURED, not DYING, no
 *    SEQ_ADJUST, no helper, not a template/untracked/offloaded entry; TCP state ESTABLISHED;
 *  - no IPS_SRC_NAT/IPS_DST_NAT and a reply tuple that is exactly the inverse of the original
 *    (catches IPVS, which rewrites the reply tuple without NAT bits, and any other translation);
 *  - TCP window tracking off for the flow (netns nf_conntrack_tcp_be_liberal=1, or the per-flow
 *    liberal flag in both directions that the node agent sets, as the kernel's flowtable does):
 *    conntrack never sees bypassed segments, so with window tracking on the FIN that ACKs them is
 *    INVALID ("ACK over the upper bound") and a `ct state invalid drop` rule blackholes the close.
 * Bypassed packets refresh no timeout: when less than half of the netns' configured timeout is
 * left (read live from struct net: kube-proxy changes it), the gate moves it forward with
 * bpf_ct_change_timeout() (at most one write per flow per half timeout; never 0, which deletes).
 *
 * Two builds, one convention (CHECK_OK or the deciding reason):
 *  - clang/libbpf: the real gate. Kernel types are local CO-RE definitions (preserve_access_index,
 *    ___xdpcni flavour suffix) of only the fields read; libbpf relocates them against the running
 *    kernel's BTF, so no offset comes from the (older) uapi headers. vmlinux.h cannot be used: it
 *    redefines every uapi header these sources include. Kfuncs need kernel >= 6.0
 *    (bpf_ct_change_timeout) and nf_conntrack's BTF (built in, or the module loaded first).
 *  - BCC 0.26 cannot call kfuncs (no ksym resolution): it cannot ask conntrack, so the gate sends
 *    every packet it sees to the stack, where conntrack, NAT and every rule decide. */
#pragma once
#include "fwd.h"

#ifdef XDPCNI_BCC
static __always_inline int check_conntrack(struct ctx_buff *ctx, struct fwd_plan *plan)
{
	return REASON_PASS_CONNTRACK;
}
#else

/* Tick rate for ms <-> jiffies; libbpf reads it from /proc/config.gz or /boot/config-$(uname -r)
 * (or bpf_object_open_opts.kconfig). 0 (unknown) switches the timeout refresh off. */
extern unsigned int CONFIG_HZ __kconfig __weak;

#ifndef IPPROTO_TCP
#define IPPROTO_TCP 6
#endif
#ifndef IPPROTO_UDP
#define IPPROTO_UDP 17
#endif
#define BPF_F_CURRENT_NETNS_CT (-1)

/* enum ip_conntrack_status bits: uapi, stable. */
#define CT_IPS_ASSURED (1UL << 2)
#define CT_IPS_CONFIRMED (1UL << 3)
#define CT_IPS_SRC_NAT (1UL << 4)
#define CT_IPS_DST_NAT (1UL << 5)
#define CT_IPS_SEQ_ADJUST (1UL << 6)
#define CT_IPS_DYING (1UL << 9)
#define CT_IPS_FIXED_TIMEOUT (1UL << 10)
#define CT_IPS_TEMPLATE (1UL << 11)
#define CT_IPS_UNTRACKED (1UL << 12)
#define CT_IPS_HELPER (1UL << 13)
#define CT_IPS_OFFLOAD (1UL << 14)
#define CT_IPS_NEED (CT_IPS_CONFIRMED | CT_IPS_ASSURED)
#define CT_IPS_REFUSE                                                                            \
	(CT_IPS_DYING | CT_IPS_SEQ_ADJUST | CT_IPS_TEMPLATE | CT_IPS_UNTRACKED | CT_IPS_HELPER | \
	 CT_IPS_OFFLOAD)
#define CT_IPS_NAT (CT_IPS_SRC_NAT | CT_IPS_DST_NAT)

/* ---- kernel types, CO-RE (only the fields used) ---- */
struct bpf_ct_opts___xdpcni {
	__s32 netns_id;
	__s32 error;
	__u8 l4proto;
	__u8 dir;
	__u16 ct_zone_id; /* 16-byte layout (kernel >= 6.12); older kernels take the first 12 */
	__u8 ct_zone_dir;
	__u8 reserved[3];
} __attribute__((preserve_access_index));

union nf_inet_addr___xdpcni {
	__u32 all[4];
} __attribute__((preserve_access_index));

struct nf_conntrack_man___xdpcni {
	union nf_inet_addr___xdpcni u3;
	union {
		__be16 all;
	} u;
	__u16 l3num;
} __attribute__((preserve_access_index));

struct nf_conntrack_tuple___xdpcni {
	struct nf_conntrack_man___xdpcni src;
	struct {
		union nf_inet_addr___xdpcni u3;
		union {
			__be16 all;
		} u;
		__u8 protonum;
		__u8 dir;
	} dst;
} __attribute__((preserve_access_index));

struct nf_conntrack_tuple_hash___xdpcni {
	struct nf_conntrack_tuple___xdpcni tuple;
} __attribute__((preserve_access_index));

struct ip_ct_tcp_state___xdpcni {
	__u8 flags;
} __attribute__((preserve_access_index));

struct ip_ct_tcp___xdpcni {
	struct ip_ct_tcp_state___xdpcni seen[2];
	__u8 state;
} __attribute__((preserve_access_index));

union nf_conntrack_proto___xdpcni {
	struct ip_ct_tcp___xdpcni tcp;
} __attribute__((preserve_access_index));

struct nf_ct_ext___xdpcni {
	__u8 offset[9];
} __attribute__((preserve_access_index));

struct nf_tcp_net___xdpcni {
	unsigned int timeouts[14];
	__u8 tcp_be_liberal;
} __attribute__((preserve_access_index));

struct nf_udp_net___xdpcni {
	unsigned int timeouts[2];
} __attribute__((preserve_access_index));

struct nf_ip_net___xdpcni {
	struct nf_tcp_net___xdpcni tcp;
	struct nf_udp_net___xdpcni udp;
} __attribute__((preserve_access_index));

struct netns_ct___xdpcni {
	struct nf_ip_net___xdpcni nf_ct_proto;
} __attribute__((preserve_access_index));

struct net___xdpcni {
	struct netns_ct___xdpcni ct;
} __attribute__((preserve_access_index));

typedef struct {
	struct net___xdpcni *net;
} possible_net_t___xdpcni;

struct nf_conn___xdpcni {
	__u32 timeout;
	struct nf_conntrack_tuple_hash___xdpcni tuplehash[2];
	unsigned long status;
	possible_net_t___xdpcni ct_net;
	struct nf_ct_ext___xdpcni *ext;
	union nf_conntrack_proto___xdpcni proto;
} __attribute__((preserve_access_index));

enum nf_ct_ext_id___xdpcni { NF_CT_EXT_HELPER___xdpcni = 0 };
enum tcp_conntrack___xdpcni { TCP_CONNTRACK_ESTABLISHED___xdpcni = 3 };
enum udp_conntrack___xdpcni { UDP_CT_REPLIED___xdpcni = 1 };

/* ---- kfuncs (vmlinux BTF when nf_conntrack is built in, module BTF when it is a module) ---- */
extern struct nf_conn___xdpcni *bpf_skb_ct_lookup(struct __sk_buff *skb, struct bpf_sock_tuple *tuple,
						  __u32 tuple__sz, struct bpf_ct_opts___xdpcni *opts,
						  __u32 opts__sz) __ksym;
extern struct nf_conn___xdpcni *bpf_xdp_ct_lookup(struct xdp_md *ctx, struct bpf_sock_tuple *tuple,
						  __u32 tuple__sz, struct bpf_ct_opts___xdpcni *opts,
						  __u32 opts__sz) __ksym;
extern void bpf_ct_release(struct nf_conn___xdpcni *ct) __ksym;
extern int bpf_ct_change_timeout(struct nf_conn___xdpcni *ct, __u32 timeout) __ksym;

#ifdef XDPCNI_XDP
#define ct_lookup bpf_xdp_ct_lookup
#else
#define ct_lookup bpf_skb_ct_lookup
#endif

#define CT_TCP_FLAG_BE_LIBERAL 0x08 /* uapi nf_conntrack_tcp.h IP_CT_TCP_FLAG_BE_LIBERAL */
#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04

/* The reply tuple is the exact inverse of the original: nobody translated anything. */
static __always_inline bool ct_tuples_inverse(struct nf_conn___xdpcni *ct)
{
	struct nf_conntrack_tuple___xdpcni *o = &ct->tuplehash[0].tuple;
	struct nf_conntrack_tuple___xdpcni *r = &ct->tuplehash[1].tuple;
	__u32 diff = 0;

#pragma unroll
	for (int i = 0; i < 4; i++) {
		diff |= o->src.u3.all[i] ^ r->dst.u3.all[i];
		diff |= o->dst.u3.all[i] ^ r->src.u3.all[i];
	}
	diff |= o->src.u.all ^ r->dst.u.all;
	diff |= o->dst.u.all ^ r->src.u.all;
	return diff == 0;
}

/* The netns' configured timeout (jiffies) for an established TCP / assured UDP entry, read live from
 * struct net so a later sysctl change (kube-proxy sets 86400 s at start) is followed. */
static __always_inline __u32 ct_configured_timeout(struct nf_conn___xdpcni *ct, __u8 l4proto)
{
	struct net___xdpcni *net = ct->ct_net.net;

	if (!net)
		return 0;
	if (l4proto == IPPROTO_TCP)
		return net->ct.nf_ct_proto.tcp.timeouts[bpf_core_enum_value(
			enum tcp_conntrack___xdpcni, TCP_CONNTRACK_ESTABLISHED___xdpcni)];
	return net->ct.nf_ct_proto.udp
		.timeouts[bpf_core_enum_value(enum udp_conntrack___xdpcni, UDP_CT_REPLIED___xdpcni)];
}

/* Conntrack's TCP window tracking never sees bypassed segments, so the first packet it sees again
 * (the FIN) ACKs data it never saw: "ACK is over the upper bound" -> INVALID, and a `ct state invalid
 * drop` rule (kube-proxy installs one unless --conntrack-tcp-be-liberal) blackholes the close. Measured:
 * 20 x 1 kB echo bypassed, then the FIN exchange was dropped 7 times and never completed. So TCP
 * takes the fast path only when the window checks are off: netns-wide nf_conntrack_tcp_be_liberal=1,
 * or per flow (both directions carry IP_CT_TCP_FLAG_BE_LIBERAL, as nft flow offload sets; ctnetlink
 * can set it too). */
static __always_inline bool ct_tcp_liberal(struct nf_conn___xdpcni *ct)
{
	struct net___xdpcni *net = ct->ct_net.net;

	if (net && net->ct.nf_ct_proto.tcp.tcp_be_liberal)
		return true;
	return (ct->proto.tcp.seen[0].flags & ct->proto.tcp.seen[1].flags & CT_TCP_FLAG_BE_LIBERAL) != 0;
}

/* The packet (accepted by check_ip(): no IPv4 options, no IPv6 extension headers, so L4 starts
 * right after the fixed IP header). TC: may pull the skb (pointers taken before are stale). */
static __always_inline int check_conntrack(struct ctx_buff *ctx, struct fwd_plan *plan)
{
	struct bpf_ct_opts___xdpcni opts = {};
	struct bpf_sock_tuple tup = {};
	struct nf_conn___xdpcni *ct;
	unsigned long status;
	__u32 l4off, tup_sz, need, cfg, remaining;
	__u8 l4proto = plan->l4proto;
	void *data, *data_end;
	__be16 *ports;
	int reason = CHECK_OK;

	if (l4proto != IPPROTO_TCP && l4proto != IPPROTO_UDP)
		return REASON_PASS_PROTO;
	l4off = plan->l3off +
		(plan->family == XDPCNI_FAMILY_IPV4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr));
	need = l4off + (l4proto == IPPROTO_TCP ? 14 : 4); /* TCP: ports .. flags; UDP: ports */
	if (plan->l3off + plan->ip_len < need || l4off > ETH_HLEN + 4 + sizeof(struct ipv6hdr))
		return REASON_PASS_BAD_HEADER;
#ifndef XDPCNI_XDP
	if (ctx_data(ctx) + need > ctx_data_end(ctx))
		ctx_pull(ctx, need); /* non-linear skb (see ctx.h) */
#endif
	data = ctx_data(ctx);
	data_end = ctx_data_end(ctx);
	ports = data + l4off;
	if ((void *)(ports + 2) > data_end)
		return REASON_PASS_BAD_HEADER;
	if (l4proto == IPPROTO_TCP) {
		__u8 *flags = (__u8 *)ports + 13;

		if ((void *)(flags + 1) > data_end)
			return REASON_PASS_BAD_HEADER;
		if (*flags & (TCP_FLAG_SYN | TCP_FLAG_FIN | TCP_FLAG_RST))
			return REASON_PASS_PROTO; /* state changes are conntrack's to see */
	}
	if (plan->family == XDPCNI_FAMILY_IPV4) {
		__builtin_memcpy(&tup.ipv4.saddr, plan->src.addr, 4);
		__builtin_memcpy(&tup.ipv4.daddr, plan->dst.addr, 4);
		tup.ipv4.sport = ports[0];
		tup.ipv4.dport = ports[1];
		tup_sz = sizeof(tup.ipv4);
	} else {
		__builtin_memcpy(tup.ipv6.saddr, plan->src.addr, 16);
		__builtin_memcpy(tup.ipv6.daddr, plan->dst.addr, 16);
		tup.ipv6.sport = ports[0];
		tup.ipv6.dport = ports[1];
		tup_sz = sizeof(tup.ipv6);
	}
	opts.netns_id = BPF_F_CURRENT_NETNS_CT; /* the netns of the device the packet is on */
	opts.l4proto = l4proto;
	ct = ct_lookup(ctx, &tup, tup_sz, &opts, bpf_core_type_size(struct bpf_ct_opts___xdpcni));
	if (!ct)
		return REASON_PASS_CONNTRACK;

	status = ct->status;
	if ((status & CT_IPS_NEED) != CT_IPS_NEED || (status & CT_IPS_REFUSE)) {
		reason = REASON_PASS_CONNTRACK;
		goto out;
	}
	if ((status & CT_IPS_NAT) || !ct_tuples_inverse(ct)) {
		reason = REASON_PASS_NAT;
		goto out;
	}
	if (l4proto == IPPROTO_TCP &&
	    (ct->proto.tcp.state !=
		     bpf_core_enum_value(enum tcp_conntrack___xdpcni, TCP_CONNTRACK_ESTABLISHED___xdpcni) ||
	     !ct_tcp_liberal(ct))) {
		reason = REASON_PASS_CONNTRACK;
		goto out;
	}
	{
		/* A helper (ftp, sip...) must see the payload. ext is NULL without extensions. */
		struct nf_ct_ext___xdpcni *ext = ct->ext;

		if (ext &&
		    ext->offset[bpf_core_enum_value(enum nf_ct_ext_id___xdpcni, NF_CT_EXT_HELPER___xdpcni)]) {
			reason = REASON_PASS_CONNTRACK;
			goto out;
		}
	}
	/* FIXED_TIMEOUT entries are the user's: leave them. */
	if (CONFIG_HZ && !(status & CT_IPS_FIXED_TIMEOUT)) {
		cfg = ct_configured_timeout(ct, l4proto);
		remaining = ct->timeout - (__u32)bpf_jiffies64();
		if (cfg && (__s32)remaining < (__s32)(cfg / 2))
			bpf_ct_change_timeout(ct, (__u32)((__u64)cfg * 1000 / CONFIG_HZ));
	}
out:
	bpf_ct_release(ct);
	return reason;
}
#endif
