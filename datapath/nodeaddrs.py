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
IPRoute runs an asyncio loop per request, ~10 ms of the agent's CPU a second), its global-scope
messages' attributes read in place, and one batch read of the endpoints map (no ctypes object
per pod entry). A verb that arrives while it runs waits for the interpreter lock.
"""

from __future__ import annotations

import ctypes
import ipaddress
import struct

from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

from . import abi, locks, rtnl
from .maps import PinnedMap
from .pins import PinLayout

RTM_GETADDR = 22
RT_SCOPE_UNIVERSE = 0
_IFADDR_SCOPE = 16 + 3  # ifaddrmsg's scope byte, after the netlink header (family, prefixlen, flags)
_IFADDR_ATTRS = 16 + 8  # the first rtattr: after the netlink header and struct ifaddrmsg
IFA_ADDRESS, IFA_LOCAL = 1, 2
_ADDR_LEN = {2: 4, 10: 16}  # AF_INET, AF_INET6: bytes of an address


def _local_address(raw: bytes) -> bytes | None:
    """An RTM_NEWADDR message's own address (IFA_LOCAL, else IFA_ADDRESS), packed; its rtattrs
    read in place (rtnl.parse_attrs): pyroute2's decode of a whole message cost ~15 us, and a
    node whose host veths carry addresses (ptp-style gateways) has hundreds to read every
    second. An attribute of another length than the family's address (cut off) is none."""
    size = _ADDR_LEN.get(raw[16])
    if size is None:
        return None
    attrs = rtnl.parse_attrs(raw, _IFADDR_ATTRS)
    for kind in (IFA_LOCAL, IFA_ADDRESS):
        addr = attrs.get(kind)
        if addr is not None and len(addr) == size:
            return addr
    return None


_FLAGS = struct.Struct(f"={abi.EndpointInfo.flags.offset}xI")  # EndpointInfo.flags, u32


def node_addresses() -> set[str]:
    """Unicast, non-loopback, non-link-local addresses of every interface in the caller's
    network namespace: each address's own end (IFA_LOCAL; IFA_ADDRESS is the peer of a
    point-to-point address). Only global-scope addresses are read (_local_address): the
    link-local address of every pod's host veth is skipped on its header's scope byte, so a
    node with thousands of pods costs what one with none does."""
    req = ifaddrmsg()
    req["family"] = 0  # AF_UNSPEC: both families
    with rtnl.Rtnl() as nl:
        raws = nl.get(RTM_GETADDR, req, "addresses", None, rtnl.NLM_F_DUMP)
    out = set()
    for raw in raws:
        if len(raw) < _IFADDR_ATTRS or raw[_IFADDR_SCOPE] != RT_SCOPE_UNIVERSE:
            continue
        addr = _local_address(raw)
        if addr is None:
            continue
        ip = ipaddress.ip_address(addr)
        if not (ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified):
            out.add(str(ip))
    return out


def sync(root: str) -> tuple[int, int]:
    """Make the map's node entries equal the caller's namespace's addresses; returns (added,
    removed). Under the endpoint map's lock (datapath/endpoints.py), as ADD and DEL write it:
    an address moving between the node and a pod is never written over or deleted from under a
    verb."""
    want = node_addresses()
    added = removed = 0
    layout = PinLayout(root)
    with (
        PinnedMap(layout, "endpoints") as eps,
        locks.flocked(layout.maps_dir, "endpoint map lock", is_dir=True),
    ):
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
            key = abi.EndpointKey.for_ip(ip)
            info = eps.get(key)
            if info is not None and info.flags & abi.EP_F_NODE:  # still the node's entry
                removed += eps.delete(key)
    return added, removed
