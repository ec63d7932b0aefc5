"""The node's own addresses in the endpoints map (flag EP_F_NODE), for source validation.

The kernel drops a packet from the wire whose source is one of the node's own addresses ("martian
source") or, with rp_filter, a local pod's address; the NIC programs must not deliver such a
packet into a pod on the fast path. They look the source up in the endpoints map: pods are there
already, and this module keeps the node's addresses there too (ifindex 0, no MACs, flag
EP_F_NODE; a destination lookup that finds one treats it as "not a pod"). The loader writes them
at load and the node agent keeps them in step every second (addresses rarely change on a node).
Loopback, link-local and multicast addresses are martians for the programs anyway.

Both halves are cheap enough for a once-a-second check in the agent, which shares its interpreter
lock with the CNI verbs it serves: one RTM_GETADDR dump over datapath/rtnl.py (pyroute2's
ifaddrmsg; pyroute2's IPRoute runs an asyncio loop per request, ~10 ms of the agent's CPU a
second) and one batch read of the endpoints map (no ctypes object per pod entry).
"""

from __future__ import annotations

import ctypes
import ipaddress
import struct

from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

from . import abi, rtnl
from .maps import PinnedMap
from .pins import PinLayout

RTM_GETADDR = 22
_FLAGS = struct.Struct(f"={abi.EndpointInfo.flags.offset}xI")  # EndpointInfo.flags, u32


def node_addresses() -> set[str]:
    """Unicast, non-loopback, non-link-local addresses of every interface in the caller's
    network namespace."""
    req = ifaddrmsg()
    req["family"] = 0  # AF_UNSPEC: both families
    with rtnl.Rtnl() as nl:
        msgs = nl.get(RTM_GETADDR, req, "addresses", ifaddrmsg, rtnl.NLM_F_DUMP)
    out = set()
    for msg in msgs:
        raw = msg.get_attr("IFA_ADDRESS") or msg.get_attr("IFA_LOCAL")
        if raw is None:
            continue
        ip = ipaddress.ip_address(raw)
        if not (ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified):
            out.add(str(ip))
    return out


def sync(root: str) -> tuple[int, int]:
    """Make the map's node entries equal the caller's namespace's addresses; returns (added,
    removed)."""
    want = node_addresses()
    added = removed = 0
    with PinnedMap(PinLayout(root), "endpoints") as eps:
        n, keys, values = eps.items_raw()
        ks, vs = ctypes.sizeof(abi.EndpointKey), ctypes.sizeof(abi.EndpointInfo)
        have = {
            str(abi.EndpointKey.from_buffer_copy(keys, i * ks).ip())
            for i in range(n)
            if _FLAGS.unpack_from(values, i * vs)[0] & abi.EP_F_NODE
        }
        for ip in want - have:
            key = abi.EndpointKey.for_ip(ip)
            if eps.get(key) is None:  # never shadow a pod (an address cannot be both)
                eps.put(key, abi.EndpointInfo(flags=abi.EP_F_NODE))
                added += 1
        for ip in have - want:
            removed += eps.delete(abi.EndpointKey.for_ip(ip))
    return added, removed
