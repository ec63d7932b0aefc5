/* SPDX-License-Identifier: GPL-2.0 */
/* Every map, declared once and pinned under PIN_ROOT "/maps/" so that a reload reuses them and
 * the datapath keeps forwarding without any userspace process. PIN_ROOT comes from cflags. */
#pragma once
#include "consts.h"
#include "structs.h"

#ifndef PIN_ROOT
#error "PIN_ROOT must be defined (datapath/loader.py passes -DPIN_ROOT)"
#endif

/* Local pods by address; written by the CNI (datapath/endpoints.py), read by all programs. */
BPF_TABLE_PINNED("hash", struct endpoint_key, struct endpoint_info, endpoints, 2 * XDPCNI_MAX_ENDPOINTS,
		 PIN_ROOT "/maps/endpoints");

/* Host-side veths by ifindex; written by the CNI, read by the pod egress program (anti-spoofing). */
BPF_TABLE_PINNED("hash", __u32, struct iface_info, ifaces, XDPCNI_MAX_ENDPOINTS, PIN_ROOT "/maps/ifaces");

/* The node's NIC; written by the loader, read by the NIC programs. */
BPF_TABLE_PINNED("array", __u32, struct node_config, node_cfg, 1, PIN_ROOT "/maps/node_cfg");

/* Packet/byte counters per endpoint and reason, per CPU; written by all programs. */
BPF_TABLE_PINNED("percpu_array", __u32, struct counter, counters, (XDPCNI_MAX_ENDPOINTS * XDPCNI_REASON_MAX),
		 PIN_ROOT "/maps/counters");

#ifdef XDPCNI_XDP
/* XDP redirect targets: DEVMAP_HASH keyed by host-veth ifindex, value the same ifindex.
 * BCC 0.26 cannot create a DEVMAP_HASH, so the loader creates and pins it with libbpf and this
 * declaration opens the pin (BPF_XDP_REDIRECT_MAP gives us the redirect_map() method). */
BPF_XDP_REDIRECT_MAP("devmap:" PIN_ROOT "/maps/tx_ports", __u32, tx_ports, XDPCNI_MAX_ENDPOINTS);
#endif

static __always_inline void count(__u32 ep_id, __u32 reason, __u32 bytes)
{
	__u32 idx = ep_id * XDPCNI_REASON_MAX + reason;
	struct counter *c = counters.lookup(&idx);

	if (c) {
		c->packets += 1;
		c->bytes += bytes;
	}
}
