"""A snapshot of everything the CNI may create on a node, to prove that a call left nothing
behind (or changed nothing): links in the node namespace, endpoint map entries, leases and
attachment records on disk."""

from __future__ import annotations

import os

from pyroute2 import IPRoute

from datapath.endpoints import EndpointTable
from datapath.pins import PinLayout
from sim.topology import Node


def snapshot(node: Node, network: str = "xdpcni-test") -> dict:
    with IPRoute(netns=f"/var/run/netns/{node.ns}") as ipr:
        links = sorted(link.get_attr("IFLA_IFNAME") for link in ipr.get_links())
    endpoints: list = []
    if PinLayout(node.pin_root).is_loaded():
        with EndpointTable(node.pin_root) as table:
            endpoints = sorted((e.ifindex, tuple(e.ips)) for e in table.list())
    net_dir = os.path.join(node.data_dir, network)
    leases = sorted(f for f in _ls(os.path.join(net_dir, "ipam")) if f[0].isdigit() or ":" in f)
    records = sorted(_ls(os.path.join(net_dir, "attachments")))
    return {"links": links, "endpoints": endpoints, "leases": leases, "records": records}


def pod_links(node: Node) -> list[str]:
    """Host-side pod veths (named xc + hash) in the node namespace."""
    return [name for name in snapshot(node)["links"] if name.startswith(("xc", "xt"))]


def _ls(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []
