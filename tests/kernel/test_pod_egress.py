"""Pod egress skips the host stack (to the wire and to a local pod), and
spoofed sources are dropped with their reason counted."""

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from datapath.abi import Reason
from datapath.stats import Stats
from sim.packets import capture, forwarded, send_frames, udp_exchange
from sim.topology import WIRE_HOST_V4, WIRE_HOST_V6

pytestmark = pytest.mark.kernel
N = 20


def _count(node, pod, reason):
    with Stats(node.pin_root) as st:
        return st.packets(pod.ep.ep_id, reason)


@pytest.mark.parametrize("family", [4, 6])
def test_pod_reaches_the_wire_host_bypassing_the_stack(node_env, family):
    c = node_env
    node = c.nodes[0]
    pod = node.pods[0]
    fwd, fast = forwarded(node.ns), _count(node, pod, Reason.FWD_POD_TO_NIC)
    got = udp_exchange(pod.ns, c.wire, WIRE_HOST_V4 if family == 4 else WIRE_HOST_V6, n=N, port=40001)
    assert got == N
    assert forwarded(node.ns) == fwd
    assert _count(node, pod, Reason.FWD_POD_TO_NIC) - fast >= N


@pytest.mark.parametrize("family", [4, 6])
def test_pod_reaches_the_other_local_pod_bypassing_the_stack(node_env, family):
    c = node_env
    node = c.nodes[0]
    a, b = node.pods[:2]
    fwd, fast = forwarded(node.ns), _count(node, a, Reason.FWD_POD_TO_POD)
    got = udp_exchange(a.ns, b.ns, b.ip4 if family == 4 else b.ip6, n=N, port=40002)
    assert got == N
    assert forwarded(node.ns) == fwd
    assert _count(node, a, Reason.FWD_POD_TO_POD) - fast == N


@pytest.mark.parametrize(
    "spoof, reason",
    [("ip", Reason.DROP_SPOOF_IP), ("mac", Reason.DROP_SPOOF_MAC), ("other-pod-ip", Reason.DROP_SPOOF_IP)],
)
def test_spoofed_sources_are_dropped_and_counted(node_env, spoof, reason):
    c = node_env
    node = c.nodes[0]
    a, b = node.pods[:2]
    src_ip = {"ip": "198.19.0.77", "mac": a.ip4, "other-pod-ip": b.ip4}[spoof]
    src_mac = "02:00:00:00:00:99" if spoof == "mac" else a.link.pod_mac
    frame = (
        Ether(src=src_mac, dst=a.link.host_mac)
        / IP(src=src_ip, dst=WIRE_HOST_V4, ttl=64)
        / UDP(sport=9, dport=40003)
        / Raw(b"spoof")
    )
    before = _count(node, a, reason)
    with capture(c.wire, "br0") as cap:
        send_frames(a.ns, "eth0", [frame], count=5)
        leaked = [f for f in map(Ether, cap.read(0.8)) if UDP in f and f[UDP].dport == 40003]
    assert leaked == []
    assert _count(node, a, reason) - before == 5
