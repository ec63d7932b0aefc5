"""Restore: after `unload` + `load`, or after the whole pin root is gone (bpffs remounted) while
the pods live on, every pod is back on the fast path with anti-spoofing, from the live veths the
CNI marked (datapath/restore.py); stale entries are dropped and the load reports both."""

from __future__ import annotations

import shutil

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from datapath.abi import Reason
from datapath.endpoints import EndpointTable
from datapath.netns import entered
from datapath.stats import Stats
from sim.frames import wire_to
from sim.packets import capture, forwarded, send_frames
from sim.topology import WIRE_HOST_V4, Cluster

pytestmark = pytest.mark.kernel
N = 10


@pytest.fixture
def node(mode):
    cluster = Cluster(1)
    try:
        n = cluster.nodes[0]
        n.load(mode)
        n.add_pod()
        n.add_pod()
        yield n
    finally:
        cluster.teardown()


def _fast_and_safe(node) -> None:
    """Every pod: N frames from the wire delivered on the fast path (the node's kernel forwards
    nothing), and N spoofed frames from the pod dropped and counted, none on the wire."""
    cluster = node.cluster
    for pod in node.pods:
        fwd0 = forwarded(node.ns)
        with Stats(node.pin_root) as st:
            fast0 = st.packets(pod.ep.ep_id, Reason.FWD_NIC_TO_POD)
            spoof0 = st.packets(pod.ep.ep_id, Reason.DROP_SPOOF_IP)
        send_frames(cluster.wire, "br0", [wire_to(cluster, node, pod.ip4)], count=N)
        spoofed = (
            Ether(src=pod.link.pod_mac, dst=pod.link.host_mac)
            / IP(src="198.19.0.250", dst=WIRE_HOST_V4)
            / UDP(sport=9, dport=40077)
            / Raw(b"spoof")
        )
        with capture(cluster.wire, "br0") as cap:
            send_frames(pod.ns, "eth0", [spoofed], count=N)
            leaked = [f for f in map(Ether, cap.read(0.5)) if UDP in f and f[UDP].dport == 40077]
        with Stats(node.pin_root) as st:
            assert st.packets(pod.ep.ep_id, Reason.FWD_NIC_TO_POD) - fast0 == N, (
                f"{pod.name} not on the fast path"
            )
            assert st.packets(pod.ep.ep_id, Reason.DROP_SPOOF_IP) - spoof0 == N
        assert leaked == [], f"{len(leaked)} spoofed frames left the node"
        assert forwarded(node.ns) == fwd0


def _refresh_endpoint_ids(node) -> None:
    with entered(node.ns), EndpointTable(node.pin_root) as table:
        by_ifindex = {e.ifindex: e for e in table.list()}
    for pod in node.pods:
        pod.ep = by_ifindex[pod.link.host_ifindex]


def test_unload_then_load_restores_every_pod(node, mode):
    _fast_and_safe(node)
    node.unload()
    res = node.load(mode)
    assert "restore: restored 2" in res.stdout, res.stdout
    assert "restored 2" in node.ctl("status").stdout
    _refresh_endpoint_ids(node)
    _fast_and_safe(node)


def test_a_lost_pin_root_is_rebuilt_from_the_live_pods(node, mode):
    _fast_and_safe(node)
    shutil.rmtree(node.pin_root)  # as after a bpffs remount: programs stay attached, maps are gone
    res = node.load(mode)
    assert "restore: restored 2" in res.stdout, res.stdout
    _refresh_endpoint_ids(node)
    _fast_and_safe(node)


def test_entries_whose_veth_is_gone_are_dropped(node, mode):
    gone = node.pods.pop()
    with entered(node.ns):
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            ipr.link("del", index=gone.link.host_ifindex)
    res = node.load(mode)  # reload: the maps survived, one veth did not
    assert "dropped 1" in res.stdout, res.stdout
    with entered(node.ns), EndpointTable(node.pin_root) as table:
        assert [e.ifindex for e in table.list()] == [node.pods[0].link.host_ifindex]
