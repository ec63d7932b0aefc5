"""ctypes mirror of bpf/lib/structs.h and bpf/lib/consts.h, field for field.

tests/unit/test_abi_header.py compiles the C header and compares every field's offset and every
struct's size with this mirror, and the reason enum and constants with the header;
tests/kernel/test_abi_and_cleanup.py compares sizes with what the kernel reports for the loaded
maps. So the two cannot drift apart.
"""

from __future__ import annotations

import ctypes as ct
import enum
import functools
import ipaddress

ABI_VERSION = 2  # XDPCNI_ABI_VERSION
MAX_ENDPOINTS = 4096
REASON_MAX = 24
FAMILY_IPV4 = 4
FAMILY_IPV6 = 6

# monitor_event.hook (bpf/lib/consts.h XDPCNI_HOOK_*): the program that reported a packet
HOOK_XDP_NIC = 1
HOOK_TC_NIC = 2
HOOK_TC_POD = 3
HOOK_MAX = 4
HOOK_NAMES = {HOOK_XDP_NIC: "xdp_nic", HOOK_TC_NIC: "tc_nic", HOOK_TC_POD: "tc_pod"}
MONITOR_RING_BYTES = 256 * 1024  # XDPCNI_MONITOR_RING_BYTES


class Reason(enum.IntEnum):
    FWD_NIC_TO_POD = 0
    FWD_POD_TO_POD = 1
    FWD_POD_TO_NIC = 2
    PASS_NOT_IP = 3
    PASS_L2_DEST = 4
    PASS_VLAN = 5
    PASS_BAD_HEADER = 6
    PASS_IP_OPTIONS = 7
    PASS_FRAGMENT = 8
    PASS_EXT_HEADER = 9
    PASS_MARTIAN = 10
    PASS_TTL = 11
    PASS_NO_ENDPOINT = 12
    PASS_FIB = 13
    PASS_PADDING = 14
    DROP_SPOOF_MAC = 15
    DROP_SPOOF_IP = 16
    DROP_REDIRECT = 17
    PASS_POLICY = 18
    PASS_MTU = 19
    PASS_CONNTRACK = 20
    PASS_NAT = 21
    PASS_PROTO = 22
    DROP_VLAN = 23

    @property
    def verdict(self) -> str:
        return self.name.split("_", 1)[0].lower()


Mac = ct.c_uint8 * 6


@functools.lru_cache(maxsize=4096)
def parse_ip(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """ipaddress.ip_address(ip), cached: a verb parses its pod's few addresses many times over
    (~10 us each, in the IPAM, the plumbing, the maps and the result); the objects are immutable.
    ValueError as ipaddress for anything that is not an address."""
    return ipaddress.ip_address(ip)


class EndpointKey(ct.Structure):
    _fields_ = [("addr", ct.c_uint8 * 16), ("family", ct.c_uint8), ("pad", ct.c_uint8 * 3)]

    @classmethod
    def for_ip(cls, ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> EndpointKey:
        addr = parse_ip(ip)
        key = cls()
        raw = addr.packed
        ct.memmove(key.addr, raw, len(raw))
        key.family = FAMILY_IPV4 if addr.version == 4 else FAMILY_IPV6
        return key

    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        raw = bytes(self.addr)
        return ipaddress.IPv4Address(raw[:4]) if self.family == FAMILY_IPV4 else ipaddress.IPv6Address(raw)


# node_config.flags (bpf/lib/consts.h XDPCNI_NODE_F_*)
NODE_F_CONNTRACK = 1 << 0

# endpoint_info.flags (bpf/lib/consts.h XDPCNI_EP_F_*)
EP_F_INGRESS_VIA_STACK = 1 << 0
EP_F_EGRESS_VIA_STACK = 1 << 1
EP_F_NODE = 1 << 2  # an entry for one of the node's own addresses, not a pod


class EndpointInfo(ct.Structure):
    _fields_ = [
        ("ifindex", ct.c_uint32),
        ("ep_id", ct.c_uint32),
        ("pod_mac", Mac),
        ("host_mac", Mac),
        ("flags", ct.c_uint32),
    ]


class IfaceInfo(ct.Structure):
    _fields_ = [("ep_id", ct.c_uint32), ("pod_mac", Mac), ("host_mac", Mac)]


class NodeConfig(ct.Structure):
    _fields_ = [
        ("nic_ifindex", ct.c_uint32),
        ("nic_mac", Mac),
        ("vlan_id", ct.c_uint16),
        ("flags", ct.c_uint32),
        ("abi_version", ct.c_uint32),
    ]


class Counter(ct.Structure):
    _fields_ = [("packets", ct.c_uint64), ("bytes", ct.c_uint64)]


class MonitorConfig(ct.Structure):
    _fields_ = [("active", ct.c_uint32), ("sample_n", ct.c_uint32)]


class MonitorEvent(ct.Structure):
    _fields_ = [
        ("ts_ns", ct.c_uint64),
        ("ifindex", ct.c_uint32),
        ("ep_id", ct.c_uint32),
        ("len", ct.c_uint32),
        ("hook", ct.c_uint8),
        ("reason", ct.c_uint8),
        ("family", ct.c_uint8),
        ("l4proto", ct.c_uint8),
        ("ethertype", ct.c_uint16),
        ("sport", ct.c_uint16),  # network order
        ("dport", ct.c_uint16),  # network order
        ("vlan", ct.c_uint16),
        ("src", ct.c_uint8 * 16),
        ("dst", ct.c_uint8 * 16),
        ("cpu", ct.c_uint32),
        ("smac", Mac),
        ("dmac", Mac),
    ]


class NoData(ct.Structure):
    """Key and value of a map that has neither (BPF_MAP_TYPE_RINGBUF: both sizes are 0)."""

    _fields_ = []


def mac_to_bytes(mac: str) -> Mac:
    return Mac(*bytes.fromhex(mac.replace(":", "")))


def mac_to_str(mac) -> str:
    return ":".join(f"{b:02x}" for b in bytes(mac))


# map name -> (key type, value type): the contract checked against the loaded maps.
MAP_LAYOUT = {
    "endpoints": (EndpointKey, EndpointInfo),
    "ifaces": (ct.c_uint32, IfaceInfo),
    "node_cfg": (ct.c_uint32, NodeConfig),
    "counters": (ct.c_uint32, Counter),
    "tx_ports": (ct.c_uint32, ct.c_uint32),
    "monitor_cfg": (ct.c_uint32, MonitorConfig),
    "monitor_seq": (ct.c_uint32, ct.c_uint64),
    "monitor_events": (NoData, NoData),
    "ep_slots": (ct.c_uint32, ct.c_uint64),
}

# map name -> (BPF map type, max_entries) as bpf/lib/maps.h declares them. With MAP_LAYOUT this
# is a map's whole layout: the loader compares it with pins left by another version and migrates
# those that differ (datapath/loader.py _set_aside_other_layouts).
MAP_SPECS = {
    "endpoints": (1, 2 * MAX_ENDPOINTS),  # BPF_MAP_TYPE_HASH
    "ifaces": (1, MAX_ENDPOINTS),
    "node_cfg": (2, 1),  # BPF_MAP_TYPE_ARRAY
    "counters": (6, MAX_ENDPOINTS * REASON_MAX),  # BPF_MAP_TYPE_PERCPU_ARRAY
    "tx_ports": (25, MAX_ENDPOINTS),  # BPF_MAP_TYPE_DEVMAP_HASH
    "monitor_cfg": (2, 1),
    "monitor_seq": (6, HOOK_MAX),
    "monitor_events": (27, MONITOR_RING_BYTES),  # BPF_MAP_TYPE_RINGBUF
    # Userspace only (no program reads it; the loader makes it, not the C): endpoint id -> the
    # host veth's ifindex owning it, 0 when free. The reverse of `ifaces`, so that ADD finds a
    # free id without reading every endpoint (datapath/endpoints.py EndpointSlots).
    "ep_slots": (2, MAX_ENDPOINTS),
}

# map name -> map_flags it must be created with (others: whatever their build gives them).
MAP_FLAGS = {"ep_slots": 1 << 10}  # BPF_F_MMAPABLE: ADD reads and writes it in place


# C struct name (bpf/lib/structs.h) -> its mirror, for the field-by-field layout test.
C_STRUCTS = {
    "endpoint_key": EndpointKey,
    "endpoint_info": EndpointInfo,
    "iface_info": IfaceInfo,
    "node_config": NodeConfig,
    "counter": Counter,
    "monitor_config": MonitorConfig,
    "monitor_event": MonitorEvent,
}
