"""Wire -> pod over the fast path, in both modes and both families.

Proof of the bypass: the pod receives every frame with TTL/hop limit - 1, rewritten MACs and valid
checksums; the node's kernel forwarded nothing (Ip ForwDatagrams / Ip6 OutForwDatagrams flat);
the endpoint's fast-path counter grew by exactly the number sent.
"""

import pytest
from scapy.layers.l2 import Ether

from datapath.abi import Reason
from datapath.stats import Stats
from sim.frames import checksums_valid, hop_limit, is_udp_to, wire_to
from sim.packets import capture, forwarded, send_frames

pytestmark = pytest.mark.kernel
N = 25


@pytest.mark.parametrize("family", [4, 6])
def test_wire_to_each_pod_takes_the_fast_path(node_env, family):
    cluster = node_env
    node = cluster.nodes[0]
    assert len(node.pods) == 2
    for pod in node.pods:
        dst = pod.ip4 if family == 4 else pod.ip6
        with Stats(node.pin_root) as st:
            fast_before = st.packets(pod.ep.ep_id, Reason.FWD_NIC_TO_POD)
        fwd_before = forwarded(node.ns)
        with capture(pod.ns, "eth0") as cap:
            send_frames(cluster.wire, "br0", [wire_to(cluster, node, dst, ttl=64)], count=N)
            frames = [Ether(f) for f in cap.read(timeout=2.0, want=N)]
        got = [f for f in frames if is_udp_to(f, dst)]
        assert len(got) == N, f"{dst}: {len(got)}/{N} delivered"
        for f in got:
            assert hop_limit(f) == 63
            assert f.dst == pod.link.pod_mac and f.src == pod.link.host_mac
            assert checksums_valid(f)
        assert forwarded(node.ns) == fwd_before, "the node's kernel forwarded fast-path traffic"
        with Stats(node.pin_root) as st:
            assert st.packets(pod.ep.ep_id, Reason.FWD_NIC_TO_POD) - fast_before == N


@pytest.mark.parametrize("family", [4, 6])
def test_frames_go_to_the_right_pod_only(node_env, family):
    cluster = node_env
    node = cluster.nodes[0]
    a, b = node.pods
    dst = a.ip4 if family == 4 else a.ip6
    with capture(a.ns, "eth0") as cap_a, capture(b.ns, "eth0") as cap_b:
        send_frames(cluster.wire, "br0", [wire_to(cluster, node, dst)], count=5)
        got_a = [f for f in map(Ether, cap_a.read(1.5, want=5)) if is_udp_to(f, dst)]
        got_b = [f for f in map(Ether, cap_b.read(0.3)) if is_udp_to(f, dst)]
    assert len(got_a) == 5 and got_b == []
