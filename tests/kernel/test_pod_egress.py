"""Pod egress skips the host stack (to the wire and to a local pod), and
spoofed sources are dropped with their reason counted."""

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
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


def _pod_frame(a, l3, dport: int, vlans=()):
    eth = Ether(src=a.link.pod_mac, dst=a.link.host_mac)
    for vid in vlans:
        eth = eth / Dot1Q(vlan=vid)
    return eth / l3 / UDP(sport=9, dport=dport) / Raw(b"forged")


# Every source a pod could forge: other pods' and the node's addresses (both families), addresses
# IPv6 carries IPv4 in (mapped, compatible), loopback, multicast, and a routable address of nobody.
FORGED_SOURCES = {
    "v6-mapped-other-pod": lambda c, a, b: IPv6(src=f"::ffff:{b.ip4}", dst=WIRE_HOST_V6),
    "v6-mapped-node-ip": lambda c, a, b: IPv6(src=f"::ffff:{c.nodes[0].nic_ip4}", dst=WIRE_HOST_V6),
    "v6-mapped-own-ipv4": lambda c, a, b: IPv6(src=f"::ffff:{a.ip4}", dst=WIRE_HOST_V6),
    "v6-compatible-other-pod": lambda c, a, b: IPv6(src=f"::{b.ip4}", dst=WIRE_HOST_V6),
    "v6-loopback": lambda c, a, b: IPv6(src="::1", dst=WIRE_HOST_V6),
    "v6-multicast": lambda c, a, b: IPv6(src="ff02::1", dst=WIRE_HOST_V6),
    "v6-other-pod": lambda c, a, b: IPv6(src=b.ip6, dst=WIRE_HOST_V6),
    "v6-node-ip": lambda c, a, b: IPv6(src=c.nodes[0].nic_ip6, dst=WIRE_HOST_V6),
    "v4-node-ip": lambda c, a, b: IP(src=c.nodes[0].nic_ip4, dst=WIRE_HOST_V4),
    "v4-loopback": lambda c, a, b: IP(src="127.0.0.1", dst=WIRE_HOST_V4),
    "v4-link-local": lambda c, a, b: IP(src="169.254.1.1", dst=WIRE_HOST_V4),
}


@pytest.mark.parametrize("name", sorted(FORGED_SOURCES))
def test_every_forged_source_is_dropped_and_counted(node_env, name):
    """Only the pod's own addresses (and its link-local / :: for neighbour discovery) may leave it;
    the rest is dropped with DROP_SPOOF_IP and reaches neither the wire nor another pod."""
    c = node_env
    node = c.nodes[0]
    a, b = node.pods[:2]
    frame = _pod_frame(a, FORGED_SOURCES[name](c, a, b), 40005)
    before = _count(node, a, Reason.DROP_SPOOF_IP)
    with capture(c.wire, "br0") as wire, capture(b.ns, "eth0") as other:
        send_frames(a.ns, "eth0", [frame], count=5)
        leaked = [
            f for f in map(Ether, wire.read(0.5) + other.read(0.1)) if UDP in f and f[UDP].dport == 40005
        ]
    assert leaked == []
    assert _count(node, a, Reason.DROP_SPOOF_IP) - before == 5


@pytest.mark.parametrize(
    "vlans", [(42,), (100,), (4001,), (0,), (100, 200)], ids=lambda v: "-".join(map(str, v))
)
def test_tagged_frames_from_a_pod_are_dropped(node_env, vlans):
    """VLAN hopping: a pod's 802.1Q-tagged frames (also priority tags and QinQ) never leave the
    node, to the wire or to another pod; the kernel path drops them too."""
    c = node_env
    node = c.nodes[0]
    a, b = node.pods[:2]
    frames = [
        _pod_frame(a, IP(src=a.ip4, dst=WIRE_HOST_V4, ttl=64), 40006, vlans),
        _pod_frame(a, IP(src=a.ip4, dst=b.ip4, ttl=64), 40006, vlans),
    ]
    before = _count(node, a, Reason.DROP_VLAN)
    with capture(c.wire, "br0") as wire, capture(b.ns, "eth0") as other:
        send_frames(a.ns, "eth0", frames, count=3)
        got = wire.read(0.5) + other.read(0.1)
    leaked = [f for f in map(Ether, got) if UDP in f and f[UDP].dport == 40006]
    assert leaked == []
    assert _count(node, a, Reason.DROP_VLAN) - before == 6
