"""Differential test: the kernel's forwarding is the reference (docs/design.md "Forwarding rules").

Each packet is sent from the wire twice: with the NIC program attached (fast path) and with it
detached (the node's kernel forwards: pods have host routes and permanent neighbours, forwarding
is on per device). The pod must receive the same bytes, Ethernet header included. Which path
carried each copy is proven by the counters: fast path -> the endpoint's FWD_NIC_TO_POD grew and
the node's Ip ForwDatagrams / Ip6 OutForwDatagrams stayed flat; kernel path -> the reverse.

"Off" detaches only the NIC program (what `xdpcnictl unload` removes first) and re-attaches the
pinned program afterwards, exactly as the loader attaches it, so every case runs on one node.
"""

from __future__ import annotations

import ipaddress
import time
from contextlib import contextmanager

import pytest
from pyroute2 import IPRoute
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from datapath import attach
from datapath import pod as pod_dp
from datapath.abi import Reason
from datapath.netns import entered
from datapath.stats import Stats
from sim.packets import capture, forwarded, send_frames
from sim.topology import WIRE_HOST_V4, WIRE_HOST_V6

pytestmark = pytest.mark.kernel

N = 2  # copies per path
TIMEOUT = 1.0
PAYLOAD = b"xdpcni-diff-" + bytes(range(40))


def _eth(c, node):
    return Ether(src=c.wire_mac, dst=node.nic_mac)


def _v4(pod, **kw):
    return IP(src=WIRE_HOST_V4, dst=pod.ip4, ttl=kw.pop("ttl", 64), **kw)


def _v6(pod, **kw):
    return IPv6(src=WIRE_HOST_V6, dst=pod.ip6, hlim=kw.pop("hlim", 64), **kw)


def _udp():
    return UDP(sport=3333, dport=5678) / Raw(PAYLOAD)


def _tcp():
    return TCP(sport=3334, dport=8080, flags="S", seq=12345, options=[("MSS", 1460), ("SAckOK", b"")])


# (id, pod index, builder(cluster, node, pod) -> bytes)
CASES = [
    ("v4-udp", 0, lambda c, n, p: bytes(_eth(c, n) / _v4(p) / _udp())),
    ("v4-tcp-syn", 1, lambda c, n, p: bytes(_eth(c, n) / _v4(p) / _tcp())),
    (
        "v4-icmp-echo",
        0,
        lambda c, n, p: bytes(_eth(c, n) / _v4(p) / ICMP(type=8, id=9, seq=3) / Raw(PAYLOAD)),
    ),
    ("v6-udp", 1, lambda c, n, p: bytes(_eth(c, n) / _v6(p) / _udp())),
    ("v6-tcp-syn", 0, lambda c, n, p: bytes(_eth(c, n) / _v6(p) / _tcp())),
    (
        "v6-icmp-echo",
        1,
        lambda c, n, p: bytes(_eth(c, n) / _v6(p) / ICMPv6EchoRequest(id=9, seq=3, data=PAYLOAD)),
    ),
    # Ethernet padding: a 44-byte frame padded to the 60-byte minimum; the kernel trims it
    (
        "v4-short-padded-to-60",
        0,
        lambda c, n, p: bytes(_eth(c, n) / _v4(p) / UDP(sport=1, dport=5678) / Raw(b"hi")).ljust(60, b"\0"),
    ),
    ("v6-trailing-bytes", 0, lambda c, n, p: bytes(_eth(c, n) / _v6(p) / _udp()) + b"\xa5" * 10),
    (
        "v4-large-df-tos",
        1,
        lambda c, n, p: bytes(
            _eth(c, n)
            / _v4(p, flags="DF", tos=0x2E, id=4321)
            / UDP(sport=5, dport=5678)
            / Raw(bytes(range(256)) * 5)
        ),
    ),
    (
        "v6-large-tclass-flowlabel",
        0,
        lambda c, n, p: bytes(
            _eth(c, n) / _v6(p, tc=0x2E, fl=0x12345) / UDP(sport=5, dport=5678) / Raw(bytes(range(256)) * 5)
        ),
    ),
    (
        "v4-udp-checksum-0",
        1,
        lambda c, n, p: bytes(_eth(c, n) / _v4(p) / UDP(sport=6, dport=5678, chksum=0) / Raw(PAYLOAD)),
    ),
    ("v4-ttl-2", 0, lambda c, n, p: bytes(_eth(c, n) / _v4(p, ttl=2) / _udp())),
    ("v6-hlim-2", 1, lambda c, n, p: bytes(_eth(c, n) / _v6(p, hlim=2) / _udp())),
    ("v6-payload-length-0", 0, lambda c, n, p: bytes(_eth(c, n) / _v6(p, plen=0, nh=17) / _udp())),
]


def _nic_index(ipr: IPRoute, node) -> int:
    return ipr.link_lookup(ifname=node.nic)[0]


def _nic_program_attached(node) -> bool:
    with entered(node.ns), IPRoute() as ipr:
        idx = _nic_index(ipr, node)
        if node.loaded_mode == "xdp":
            return attach.xdp_prog_id(ipr, idx) != 0
        return attach.TC_NIC_FILTER in attach.tc_ingress_prog_names(ipr, idx)


@contextmanager
def fast_path_off(node):
    """Detach the NIC program; re-attach the pinned one afterwards (also when the body fails)."""
    assert _nic_program_attached(node), "the NIC program is not attached before the off phase"
    with entered(node.ns), IPRoute() as ipr:
        idx = _nic_index(ipr, node)
        if node.loaded_mode == "xdp":
            attach.detach_xdp(ipr, idx)
        else:
            attach.detach_tc_ingress(ipr, idx)
    try:
        assert not _nic_program_attached(node), "the NIC program is still attached"
        yield
    finally:
        with entered(node.ns), IPRoute() as ipr:
            pod_dp.attach_nic(ipr, node.pin_root, _nic_index(ipr, node), node.loaded_mode)
        assert _nic_program_attached(node)


def _from_wire_to(pod):
    """IPv4/IPv6 frames from the wire host to this pod (not the host veth's own MLD/RS)."""
    v4, v6 = ipaddress.ip_address(WIRE_HOST_V4).packed, ipaddress.ip_address(WIRE_HOST_V6).packed
    d4, d6 = ipaddress.ip_address(pod.ip4).packed, ipaddress.ip_address(pod.ip6).packed

    def match(raw: bytes) -> bool:
        et = raw[12:14]
        if et == b"\x08\x00":
            return raw[26:30] == v4 and raw[30:34] == d4
        if et == b"\x86\xdd":
            return raw[22:38] == v6 and raw[38:54] == d6
        return False

    return match


def _receive(c, pod, raw: bytes) -> list[bytes]:
    match = _from_wire_to(pod)
    with capture(pod.ns, "eth0") as cap:
        send_frames(c.wire, "br0", [raw], count=N)
        deadline = time.monotonic() + TIMEOUT
        while True:
            got = [f for f in cap.frames if match(f)]
            left = deadline - time.monotonic()
            if len(got) >= N or left <= 0:
                break
            cap.read(timeout=left, want=len(cap.frames) + 1)
        cap.read(timeout=0.05)  # anything beyond N would show up here
        return [f for f in cap.frames if match(f)]


def _fast(node, pod) -> int:
    with Stats(node.pin_root) as st:
        return st.packets(pod.ep.ep_id, Reason.FWD_NIC_TO_POD)


@pytest.mark.parametrize("case_id,pod_index,build", CASES, ids=[c[0] for c in CASES])
def test_fast_path_and_kernel_deliver_identical_bytes(node_env, case_id, pod_index, build):
    c = node_env
    node = c.nodes[0]
    pod = node.pods[pod_index]
    raw = build(c, node, pod)

    fast0, fwd0 = _fast(node, pod), forwarded(node.ns)
    on = _receive(c, pod, raw)
    assert len(on) == N, f"fast path: {len(on)}/{N} delivered"
    assert _fast(node, pod) - fast0 == N, "fast path: FWD_NIC_TO_POD did not count every frame"
    assert forwarded(node.ns) == fwd0, "fast path: the node's kernel forwarded the frames"

    with fast_path_off(node):
        fast1, fwd1 = _fast(node, pod), forwarded(node.ns)
        off = _receive(c, pod, raw)
        assert len(off) == N, f"kernel path: {len(off)}/{N} delivered"
        assert forwarded(node.ns) - fwd1 == N, "kernel path: ForwDatagrams did not count every frame"
        assert _fast(node, pod) == fast1, "kernel path: the detached program still counted"

    reference = off[0]
    assert all(f == reference for f in off), "the kernel delivered differing copies"
    for f in on:
        assert f == reference, (
            f"fast path and kernel differ ({len(f)} vs {len(reference)} bytes)\n"
            f" fast   {f.hex()}\n kernel {reference.hex()}"
        )
    # Both must have trimmed padding and decremented TTL once (not vacuously equal, e.g. both raw).
    assert reference[:6] == bytes.fromhex(pod.link.pod_mac.replace(":", ""))
    assert reference[6:12] == bytes.fromhex(pod.link.host_mac.replace(":", ""))
    assert len(reference) <= len(raw)
