"""What is not the fast path's still works through the normal stack:
ARP/ND and ping to the node itself, ICMP time exceeded for TTL 1, unknown destinations."""

import os

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, ICMPv6TimeExceeded, IPv6
from scapy.layers.l2 import ARP, Ether

from datapath.abi import Reason
from datapath.endpoints import EndpointTable
from datapath.stats import NODE_EP_ID, Stats
from sim.frames import hop_limit, is_udp_to, l3, wire_to
from sim.packets import capture, forwarded, send_frames
from sim.topology import WIRE_HOST_V4, WIRE_HOST_V6

pytestmark = pytest.mark.kernel


def _node_counter(node, reason):
    with Stats(node.pin_root) as st:
        return st.packets(NODE_EP_ID, reason)


def test_arp_for_the_node_is_answered(node_env):
    c = node_env
    node = c.nodes[0]
    req = Ether(src=c.wire_mac, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=c.wire_mac, psrc=WIRE_HOST_V4, pdst=node.nic_ip4
    )
    with capture(c.wire, "br0") as cap:
        send_frames(c.wire, "br0", [req])
        replies = [f for f in map(Ether, cap.read(1.0)) if ARP in f and f[ARP].op == 2]
    assert any(r[ARP].psrc == node.nic_ip4 and r[ARP].hwsrc == node.nic_mac for r in replies)


@pytest.mark.parametrize("family", [4, 6])
def test_ping_the_node_itself(node_env, family):
    c = node_env
    node = c.nodes[0]
    dst = node.nic_ip4 if family == 4 else node.nic_ip6
    echo = ICMP(type=8, id=7, seq=1) if family == 4 else ICMPv6EchoRequest(id=7, seq=1)
    frame = Ether(src=c.wire_mac, dst=node.nic_mac) / l3(dst) / echo
    before = _node_counter(node, Reason.PASS_NO_ENDPOINT)
    with capture(c.wire, "br0") as cap:
        send_frames(c.wire, "br0", [frame])
        frames = list(map(Ether, cap.read(1.5)))
    if family == 4:
        ok = [f for f in frames if ICMP in f and f[ICMP].type == 0 and f[IP].src == dst]
    else:
        ok = [f for f in frames if ICMPv6EchoReply in f and f[IPv6].src == dst]
    assert ok, "no echo reply from the node"
    assert _node_counter(node, Reason.PASS_NO_ENDPOINT) > before


@pytest.mark.parametrize("family", [4, 6])
def test_ttl_1_gets_time_exceeded_from_the_node(node_env, family):
    c = node_env
    node = c.nodes[0]
    pod = node.pods[0]
    if family == 6 and not os.path.exists("/proc/sys/net/ipv6/conf/all/force_forwarding"):
        pytest.skip("kernel < 6.17 has no per-device IPv6 force_forwarding: needs global forwarding")
    dst = pod.ip4 if family == 4 else pod.ip6
    before = _node_counter(node, Reason.PASS_TTL)
    with capture(c.wire, "br0") as cap, capture(pod.ns, "eth0") as pod_cap:
        send_frames(c.wire, "br0", [wire_to(c, node, dst, ttl=1)])
        frames = list(map(Ether, cap.read(1.5)))
        leaked = [f for f in map(Ether, pod_cap.read(0.3)) if is_udp_to(f, dst)]
    if family == 4:
        te = [f for f in frames if ICMP in f and f[ICMP].type == 11 and f[IP].dst == WIRE_HOST_V4]
    else:
        te = [f for f in frames if ICMPv6TimeExceeded in f and f[IPv6].dst == WIRE_HOST_V6]
    assert te, "no ICMP time exceeded"
    assert not leaked, "a TTL 1 packet reached the pod"
    assert _node_counter(node, Reason.PASS_TTL) == before + 1


@pytest.mark.parametrize("family", [4, 6])
def test_unknown_destination_goes_through_the_kernel(node_env, family):
    """A pod whose endpoint is not in the table is reached by kernel forwarding (and counted so)."""
    c = node_env
    node = c.nodes[0]
    legacy = next((p for p in node.pods if p.name == "legacy"), None)
    if legacy is None:
        legacy = node.add_pod("legacy", n=50)
        with EndpointTable(node.pin_root) as t:
            assert t.remove(legacy.link.host_ifindex, legacy.ips)
    dst = legacy.ip4 if family == 4 else legacy.ip6
    fwd_before = forwarded(node.ns)
    pass_before = _node_counter(node, Reason.PASS_NO_ENDPOINT)
    with capture(legacy.ns, "eth0") as cap:
        send_frames(c.wire, "br0", [wire_to(c, node, dst)], count=5)
        got = [f for f in map(Ether, cap.read(1.5, want=5)) if is_udp_to(f, dst)]
    assert len(got) == 5 and all(hop_limit(f) == 63 for f in got)
    assert forwarded(node.ns) - fwd_before >= 5
    assert _node_counter(node, Reason.PASS_NO_ENDPOINT) - pass_before >= 5
