/* SPDX-License-Identifier: GPL-2.0 */
/* Every map, declared once and pinned under <root>/maps/<name> so that a reload reuses them and the
 * datapath keeps forwarding without any userspace process.
 *  - clang/libbpf (the default build, datapath/objload.py): LIBBPF_PIN_BY_NAME with the object's
 *    pin_root_path set to <root>/maps, so libbpf reuses an existing pin (after checking type, key,
 *    value, max_entries and flags) or creates and pins the map.
 *  - BCC (fallback when clang objects cannot be built): BPF_TABLE_PINNED with PIN_ROOT from cflags.
 * Both toolchains therefore share the same pinned maps. Programs use the typed accessors below,
 * never map methods or &map directly (lib/compat.h says why). */
#pragma once
#include "compat.h"
#include "consts.h"
#include "structs.h"

#ifdef XDPCNI_BCC
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

static __always_inline struct endpoint_info *endpoints_lookup(struct endpoint_key *k)
{
	return endpoints.lookup(k);
}
static __always_inline struct iface_info *ifaces_lookup(__u32 *k)
{
	return ifaces.lookup(k);
}
static __always_inline struct node_config *node_cfg_lookup(__u32 *k)
{
	return node_cfg.lookup(k);
}
static __always_inline struct counter *counters_lookup(__u32 *k)
{
	return counters.lookup(k);
}
#ifdef XDPCNI_XDP
static __always_inline int tx_ports_redirect(__u32 ifindex, __u64 flags)
{
	return tx_ports.redirect_map(ifindex, flags);
}
#endif

#else /* XDPCNI_LIBBPF */

#define XDPCNI_MAP(_type, _key, _value, _max) \
	__uint(type, _type);                  \
	__type(key, _key);                    \
	__type(value, _value);                \
	__uint(max_entries, _max);            \
	__uint(pinning, LIBBPF_PIN_BY_NAME)

/* Local pods by address; written by the CNI (datapath/endpoints.py), read by all programs. */
struct {
	XDPCNI_MAP(BPF_MAP_TYPE_HASH, struct endpoint_key, struct endpoint_info, 2 * XDPCNI_MAX_ENDPOINTS);
} endpoints SEC(".maps");

/* Host-side veths by ifindex; written by the CNI, read by the pod egress program (anti-spoofing). */
struct {
	XDPCNI_MAP(BPF_MAP_TYPE_HASH, __u32, struct iface_info, XDPCNI_MAX_ENDPOINTS);
} ifaces SEC(".maps");

/* The node's NIC; written by the loader, read by the NIC programs. */
struct {
	XDPCNI_MAP(BPF_MAP_TYPE_ARRAY, __u32, struct node_config, 1);
} node_cfg SEC(".maps");

/* Packet/byte counters per endpoint and reason, per CPU; written by all programs. */
struct {
	XDPCNI_MAP(BPF_MAP_TYPE_PERCPU_ARRAY, __u32, struct counter,
		   (XDPCNI_MAX_ENDPOINTS * XDPCNI_REASON_MAX));
} counters SEC(".maps");

/* `xdpcnictl monitor` (bpf/lib/monitor.h): its switch, the per-CPU sampling sequence per hook, and
 * the ring buffer of events. The BCC build declares none of them (its monitor reports nothing); the
 * loader creates and pins them for it so every build leaves the same pins. */
struct {
	XDPCNI_MAP(BPF_MAP_TYPE_ARRAY, __u32, struct monitor_config, 1);
} monitor_cfg SEC(".maps");

struct {
	XDPCNI_MAP(BPF_MAP_TYPE_PERCPU_ARRAY, __u32, __u64, XDPCNI_HOOK_MAX);
} monitor_seq SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, XDPCNI_MONITOR_RING_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} monitor_events SEC(".maps");

#ifdef XDPCNI_XDP
/* XDP redirect targets: DEVMAP_HASH keyed by host-veth ifindex, value the same ifindex. */
struct {
	XDPCNI_MAP(BPF_MAP_TYPE_DEVMAP_HASH, __u32, __u32, XDPCNI_MAX_ENDPOINTS);
} tx_ports SEC(".maps");
#endif

static __always_inline struct endpoint_info *endpoints_lookup(struct endpoint_key *k)
{
	return bpf_map_lookup_elem(&endpoints, k);
}
static __always_inline struct iface_info *ifaces_lookup(__u32 *k)
{
	return bpf_map_lookup_elem(&ifaces, k);
}
static __always_inline struct node_config *node_cfg_lookup(__u32 *k)
{
	return bpf_map_lookup_elem(&node_cfg, k);
}
static __always_inline struct counter *counters_lookup(__u32 *k)
{
	return bpf_map_lookup_elem(&counters, k);
}
static __always_inline struct monitor_config *monitor_cfg_lookup(__u32 *k)
{
	return bpf_map_lookup_elem(&monitor_cfg, k);
}
static __always_inline __u64 *monitor_seq_lookup(__u32 *k)
{
	return bpf_map_lookup_elem(&monitor_seq, k);
}
#ifdef XDPCNI_XDP
static __always_inline int tx_ports_redirect(__u32 ifindex, __u64 flags)
{
	return bpf_redirect_map(&tx_ports, ifindex, flags);
}
#endif
#endif

static __always_inline void count(__u32 ep_id, __u32 reason, __u32 bytes)
{
	__u32 idx = ep_id * XDPCNI_REASON_MAX + reason;
	struct counter *c = counters_lookup(&idx);

	if (c) {
		c->packets += 1;
		c->bytes += bytes;
	}
}
