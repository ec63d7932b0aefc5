/* SPDX-License-Identifier: GPL-2.0 */
/* Every map key and value, defined once. Python mirror: datapath/abi.py (ctypes); a kernel test
 * checks each mirror's size against the key/value size the kernel reports for the loaded map.
 * All fields are naturally aligned and padding is explicit, so no compiler can disagree. */
#pragma once

/* endpoints map key: one key for both families (IPv4 uses addr[0..3], rest zero). */
struct endpoint_key {
	__u8 addr[16]; /* destination address, network byte order */
	__u8 family;   /* XDPCNI_FAMILY_IPV4 or XDPCNI_FAMILY_IPV6 */
	__u8 pad[3];   /* must be zero */
};

/* endpoints map value: everything needed to deliver to the pod without the host stack. */
struct endpoint_info {
	__u32 ifindex;    /* host-side veth, node namespace: redirect (peer) target, devmap key */
	__u32 ep_id;      /* endpoint slot 1..XDPCNI_MAX_ENDPOINTS-1: counters row */
	__u8 pod_mac[6];  /* pod's eth0 MAC: destination MAC after rewrite */
	__u8 host_mac[6]; /* host-side veth MAC: source MAC after rewrite */
	__u32 flags;      /* XDPCNI_EP_F_*: directions that must take the host stack */
};

/* ifaces map value, keyed by host-side veth ifindex: who may send from that veth. */
struct iface_info {
	__u32 ep_id;      /* endpoint slot owning this veth */
	__u8 pod_mac[6];  /* the only source MAC accepted from the pod */
	__u8 host_mac[6]; /* the host veth's MAC: frames must be addressed to it */
};

/* node_cfg map value (single entry, key 0): the node's NIC as the programs see it. */
struct node_config {
	__u32 nic_ifindex; /* the NIC the node programs are attached to */
	__u8 nic_mac[6];   /* only unicast frames to this MAC take the fast path */
	__u16 vlan_id;     /* 802.1Q VLAN carried on the NIC for pods, 0 = none */
	__u32 flags;       /* XDPCNI_NODE_F_*, written by the loader and the netfilter sync */
	__u32 abi_version; /* XDPCNI_ABI_VERSION of the loader that wrote the pinned maps */
};

/* counters map value (per CPU), index ep_id * XDPCNI_REASON_MAX + reason. */
struct counter {
	__u64 packets;
	__u64 bytes;
};

/* monitor_cfg map value (single entry, key 0): what the programs report to `xdpcnictl monitor`
 * (node/monitor.py). All zero (nobody listens): the programs do one array lookup and nothing else. */
struct monitor_config {
	__u32 active;   /* non-zero while a monitor listens: every drop is reported */
	__u32 sample_n; /* while active, also every Nth forwarded/passed packet per CPU and hook; 0 = none */
};

/* monitor_events ring buffer record: one packet and the verdict it got. */
struct monitor_event {
	__u64 ts_ns;     /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) */
	__u32 ifindex;   /* device the packet came in on (node namespace) */
	__u32 ep_id;     /* counters row it was counted on (0: node-level) */
	__u32 len;       /* bytes as counted */
	__u8 hook;       /* XDPCNI_HOOK_* */
	__u8 reason;     /* enum xdpcni_reason */
	__u8 family;     /* XDPCNI_FAMILY_IPV4 / _IPV6, 0 when not IP */
	__u8 l4proto;    /* IP protocol / IPv6 next header, 0 when not IP */
	__u16 ethertype; /* host order, inside one VLAN tag */
	__u16 sport;     /* TCP/UDP ports, network order; 0 for other protocols and fragments */
	__u16 dport;
	__u16 vlan;   /* VLAN id of the tag in the frame, 0 = none */
	__u8 src[16]; /* IP addresses, network order (IPv4: first 4 bytes) */
	__u8 dst[16];
	__u32 cpu;    /* bpf_get_smp_processor_id() */
	__u8 smac[6]; /* MACs as the frame carries them when reported (after a rewrite) */
	__u8 dmac[6];
};
