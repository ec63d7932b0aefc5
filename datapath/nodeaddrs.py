"""The node's own addresses in the endpoints map (flag EP_F_NODE), for source validation.

The kernel drops a packet from the wire whose source is one of the node's own addresses ("martian
source") or, with rp_filter, a local pod's address; the NIC programs must not deliver such a
packet into a pod on the fast path. They look the source up in the endpoints map: pods are there
already, and this module keeps the node's addresses there too (ifindex 0, no MACs, flag
EP_F_NODE; a destination lookup that finds one treats it as "not a pod"). The loader writes them
at load and the node agent keeps them in step every second (addresses rarely change on a node).
Loopback, link-local and multicast addresses are martians for the programs anyway.
"""

from __future__ import annotations

import ipaddress

from pyroute2 import IPRoute

from . import abi
from .maps import PinnedMap
from .pins import PinLayout


def node_addresses(ipr: IPRoute) -> set[str]:
    """Unicast, non-loopback, non-link-local addresses of every interface in this namespace."""
    out = set()
    for msg in ipr.get_addr():
        ip = ipaddress.ip_address(msg.get_attr("IFA_ADDRESS") or msg.get_attr("IFA_LOCAL"))
        if not (ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified):
            out.add(str(ip))
    return out


def sync(root: str, ipr: IPRoute | None = None) -> tuple[int, int]:
    """Make the map's node entries equal this namespace's addresses; returns (added, removed)."""
    own = ipr is None
    ipr = ipr or IPRoute()
    try:
        want = node_addresses(ipr)
    finally:
        if own:
            ipr.close()
    added = removed = 0
    with PinnedMap(PinLayout(root), "endpoints") as eps:
        have = {str(k.ip()) for k, v in eps.items() if v.flags & abi.EP_F_NODE}
        for ip in want - have:
            key = abi.EndpointKey.for_ip(ip)
            if eps.get(key) is None:  # never shadow a pod (an address cannot be both)
                eps.put(key, abi.EndpointInfo(flags=abi.EP_F_NODE))
                added += 1
        for ip in have - want:
            removed += eps.delete(abi.EndpointKey.for_ip(ip))
    return added, removed
