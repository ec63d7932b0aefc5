/* SPDX-License-Identifier: GPL-2.0 */
/* Constants shared by every xdpcni program. Mirrored in datapath/abi.py (a test compares them). */
#pragma once

/* Version of the pinned maps' layout and meaning (bump it with any change to structs.h, this
 * file's sizes or the reason numbering); node_cfg carries it, and a loader that finds another
 * version migrates the maps (datapath/loader.py). 0: written before versions existed. */
#define XDPCNI_ABI_VERSION 2
#define XDPCNI_MAX_ENDPOINTS 4096 /* endpoint ids 1..4095; id 0 counts node-level traffic */
#define XDPCNI_REASON_MAX 24      /* counters per endpoint; >= number of enum entries below */

/* endpoint_info.flags: features that live in the host stack and that the fast path would skip.
 * The CNI sets them when a chained plugin needs the kernel path for this pod. */
#define XDPCNI_EP_F_INGRESS_VIA_STACK (1u << 0) /* to the pod: e.g. bandwidth's tbf on the host veth */
#define XDPCNI_EP_F_NODE (1u << 2) /* not a pod: one of the node's own addresses (source validation) */
#define XDPCNI_EP_F_EGRESS_VIA_STACK (1u << 1) /* from the pod: e.g. portmap's DNAT (conntrack reverses it) */

/* node_config.flags */
#define XDPCNI_NODE_F_CONNTRACK (1u << 0) /* conntrack decides per flow (netfilter: respect/auto) */

/* monitor_event.hook: the program that reported the packet (also the monitor_seq index). */
#define XDPCNI_HOOK_XDP_NIC 1 /* xdp_nic: NIC ingress, XDP */
#define XDPCNI_HOOK_TC_NIC 2  /* tc_nic: NIC ingress, TC */
#define XDPCNI_HOOK_TC_POD 3  /* tc_pod: pod egress (host veth ingress) */
#define XDPCNI_HOOK_MAX 4
#define XDPCNI_MONITOR_RING_BYTES (256 * 1024) /* monitor_events ring buffer size (power of 2 pages) */

/* endpoint_key.family */
#define XDPCNI_FAMILY_IPV4 4
#define XDPCNI_FAMILY_IPV6 6

/* Why a packet got its verdict. FWD_* took the fast path, PASS_* went to the kernel stack
 * (which then decides, exactly as without xdpcni), DROP_* were dropped by us. */
enum xdpcni_reason {
	REASON_FWD_NIC_TO_POD = 0,    /* NIC ingress delivered to a local pod (counted on the pod) */
	REASON_FWD_POD_TO_POD = 1,    /* pod egress delivered to another local pod (on the sender) */
	REASON_FWD_POD_TO_NIC = 2,    /* pod egress sent out through the FIB's device (on the sender) */
	REASON_PASS_NOT_IP = 3,       /* ARP and other ethertypes */
	REASON_PASS_L2_DEST = 4,      /* broadcast, multicast or another host's MAC */
	REASON_PASS_VLAN = 5,         /* 802.1Q/802.1ad tag (also priority tag) not named in node config */
	REASON_PASS_BAD_HEADER = 6,   /* truncated, bad version/IHL/checksum/length: the kernel drops it */
	REASON_PASS_IP_OPTIONS = 7,   /* IPv4 options: the kernel router must process them */
	REASON_PASS_FRAGMENT = 8,     /* IPv4 fragment */
	REASON_PASS_EXT_HEADER = 9,   /* IPv6 hop-by-hop, routing, fragment or destination options */
	REASON_PASS_MARTIAN = 10,     /* loopback, multicast, broadcast, link-local, unspecified */
	REASON_PASS_TTL = 11,         /* TTL/hop limit <= 1: the kernel answers ICMP time exceeded */
	REASON_PASS_NO_ENDPOINT = 12, /* destination is not a local pod (node itself, unknown) */
	REASON_PASS_FIB = 13,         /* FIB lookup did not give a forwardable next hop */
	REASON_PASS_PADDING = 14,     /* frame longer than the IP packet and could not be trimmed */
	REASON_DROP_SPOOF_MAC = 15,   /* pod sent with a source MAC that is not its own */
	REASON_DROP_SPOOF_IP = 16,    /* pod sent with a source IP that is not its own */
	REASON_DROP_REDIRECT = 17,    /* redirect target missing (map out of step) */
	REASON_PASS_POLICY = 18,      /* the endpoint's flags send this direction through the stack */
	REASON_PASS_MTU = 19,         /* larger than the target's MTU: the stack fragments or sends ICMP */
	REASON_PASS_CONNTRACK = 20,   /* no assured, established conntrack entry for the flow (yet) */
	REASON_PASS_NAT = 21,         /* conntrack translates the flow (DNAT, SNAT, IPVS): the stack must */
	REASON_PASS_PROTO = 22,       /* not TCP/UDP, or TCP SYN/FIN/RST: conntrack must see it */
	REASON_DROP_VLAN = 23,        /* pod sent an 802.1Q/802.1ad-tagged frame (VLAN hopping) */
	__REASON_COUNT = 24,
};

/* Every check_*() returns CHECK_OK when the packet may go on towards the fast path, otherwise the
 * reason that decides it: a REASON_PASS_* sends it to the stack, a REASON_DROP_* drops it. */
#define CHECK_OK (-1)
