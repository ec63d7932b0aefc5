"""Honest counters in XDP mode: a redirect the NIC program counted as fwd_nic_to_pod can still be
lost inside the veth afterwards (here: the pod's eth0 without an XDP program or GRO, so veth has no
NAPI to take the frame). The kernel counts those on the host veth, and `xdpcnictl stats`
reconciles them as drop_xdp_lost (here on the node's row: the NIC's receive path drops them)."""

from __future__ import annotations

import json
import os

import pytest

from datapath import pod as pod_dp
from datapath.rtnl import Rtnl
from sim.frames import wire_to
from sim.packets import send_frames
from sim.topology import Cluster

pytestmark = pytest.mark.kernel


def test_redirects_lost_in_the_veth_are_reconciled_in_stats():
    cluster = Cluster(1)
    try:
        node = cluster.nodes[0]
        node.load("xdp")
        pod = node.add_pod()
        nsfd = os.open(f"/var/run/netns/{pod.ns}", os.O_RDONLY)
        try:
            with Rtnl(nsfd) as pod_nl:
                pod_dp.set_gro(pod_nl.sock, "eth0", False)  # ADD turned it on; no XDP program there
        finally:
            os.close(nsfd)
        frames = [wire_to(cluster, node, pod.ip4)]
        send_frames(cluster.wire, "br0", frames, count=7)
        rows = json.loads(node.ctl("stats", "--json").stdout)
        by = {(r["ep_id"], r["reason"]): r["packets"] for r in rows}
        assert by.get((pod.ep.ep_id, "FWD_NIC_TO_POD")) == 7, rows
        assert by.get((0, "DROP_XDP_LOST")) == 7, rows
        assert "drop_xdp_lost" in node.ctl("stats").stdout
    finally:
        cluster.teardown()
