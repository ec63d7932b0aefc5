"""MTU: nothing larger than the target's MTU is redirected. It goes to the stack, which fragments
(IPv4 without DF) or tells the sender the MTU (IPv4 with DF: frag-needed; IPv6: packet-too-big),
as the kernel path does. Checked with counters and the senders' path-MTU cache (`ip route get`),
never by waiting out timeouts. Pod egress checks GSO skbs per segment, so TCP bulk with TSO stays
on the fast path. A NIC the XDP program cannot run on (jumbo veth) falls back to TC, saying why,
and a first load that fails leaves nothing pinned.
"""

from __future__ import annotations

import os
import re
import socket
import time

import pytest

from datapath.abi import Reason
from datapath.netns import entered
from datapath.stats import Stats
from sim.packets import capture, forwarded, snmp, tcp_bulk
from sim.topology import WIRE_HOST_V4, WIRE_HOST_V6, Cluster, run_in

pytestmark = pytest.mark.kernel

POD_MTU = 1400
IP_MTU_DISCOVER, IP_PMTUDISC_DONT, IP_PMTUDISC_DO = 10, 0, 2
IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO = 23, 2


@pytest.fixture(scope="module")
def mtu_env(mode):
    """One node in `mode` with pod 0 at MTU 1400 and pod 1 at 1500, NIC at 1500."""
    cluster = Cluster(1)
    try:
        node = cluster.nodes[0]
        node.load(mode)
        node.add_pod(mtu=POD_MTU)
        node.add_pod()
        yield cluster
    finally:
        cluster.teardown()


def _count(node, ep_id: int, reason: Reason) -> int:
    with Stats(node.pin_root) as st:
        return st.packets(ep_id, reason)


def _route_mtu(ns: str, dst: str) -> int | None:
    """The path MTU the kernel of `ns` has cached for `dst` (None: no exception cached)."""
    out = run_in(ns, "ip", "-6" if ":" in dst else "-4", "route", "get", dst).stdout
    m = re.search(r"\bmtu (\d+)", out)
    return int(m.group(1)) if m else None


def _flush_route_cache(ns: str) -> None:
    run_in(ns, "ip", "-4", "route", "flush", "cache", check=False)
    run_in(ns, "ip", "-6", "route", "flush", "cache", check=False)


def _set_mtu(ns: str, ifname: str, mtu: int) -> None:
    run_in(ns, "ip", "link", "set", "dev", ifname, "mtu", str(mtu))


def _udp_send(ns: str, dst: str, size: int, df: bool, port: int = 47000, n: int = 3) -> list[int]:
    """Send n datagrams of `size` payload bytes from `ns`; returns the errnos the sends hit."""
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    errs = []
    with entered(ns):
        s = socket.socket(fam, socket.SOCK_DGRAM)
    try:
        if fam == socket.AF_INET:
            s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO if df else IP_PMTUDISC_DONT)
        else:
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO)
        for _ in range(n):
            try:
                s.sendto(b"m" * size, (dst, port))
            except OSError as exc:
                errs.append(exc.errno)
            time.sleep(0.05)
    finally:
        s.close()
    return errs


def _wait(pred, timeout: float = 2.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def _receive(ns: str, ip: str, port: int):
    fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with entered(ns):
        rx = socket.socket(fam, socket.SOCK_DGRAM)
        rx.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", port))
    rx.settimeout(1.5)
    return rx


@pytest.mark.parametrize("family", [4, 6])
def test_too_big_for_the_pod_with_df_tells_the_sender_the_pod_mtu(mtu_env, family):
    c = mtu_env
    node = c.nodes[0]
    pod = node.pods[0]
    dst = pod.ip4 if family == 4 else pod.ip6
    _flush_route_cache(c.wire)
    passed0 = _count(node, pod.ep.ep_id, Reason.PASS_MTU)
    fast0 = _count(node, pod.ep.ep_id, Reason.FWD_NIC_TO_POD)
    with capture(pod.ns, "eth0") as cap:
        _udp_send(c.wire, dst, 1500 - (28 if family == 4 else 48), df=True)
        assert _wait(lambda: _route_mtu(c.wire, dst) == POD_MTU), (
            f"sender's path MTU for {dst}: {_route_mtu(c.wire, dst)}, want {POD_MTU}"
        )
        cap.read(timeout=0.2)
        assert max((len(f) for f in cap.frames), default=0) <= POD_MTU + 14, "oversize frame reached the pod"
    assert _count(node, pod.ep.ep_id, Reason.PASS_MTU) > passed0, "counted on the pod's row"
    assert _count(node, pod.ep.ep_id, Reason.FWD_NIC_TO_POD) == fast0, (
        "an oversize frame was counted as delivered"
    )


def test_too_big_for_the_pod_without_df_arrives_fragmented(mtu_env):
    c = mtu_env
    node = c.nodes[0]
    pod = node.pods[0]
    rx = _receive(pod.ns, pod.ip4, 47001)
    try:
        frags0 = snmp(node.ns)["IpFragCreates"]
        with capture(pod.ns, "eth0") as cap:
            _udp_send(c.wire, pod.ip4, 1472, df=False, port=47001, n=1)
            data = rx.recv(4096)
            cap.read(timeout=0.2)
        assert len(data) == 1472
        assert max(len(f) for f in cap.frames) <= POD_MTU + 14
        assert snmp(node.ns)["IpFragCreates"] - frags0 >= 2, "the node's stack made the fragments"
    finally:
        rx.close()


def test_fitting_packets_still_take_the_fast_path(mtu_env):
    c = mtu_env
    node = c.nodes[0]
    pod = node.pods[0]
    rx = _receive(pod.ns, pod.ip4, 47002)
    try:
        fwd0, fast0 = forwarded(node.ns), _count(node, pod.ep.ep_id, Reason.FWD_NIC_TO_POD)
        _udp_send(c.wire, pod.ip4, POD_MTU - 28, df=True, port=47002, n=3)
        assert len(rx.recv(4096)) == POD_MTU - 28
    finally:
        rx.close()
    assert _count(node, pod.ep.ep_id, Reason.FWD_NIC_TO_POD) - fast0 == 3
    assert forwarded(node.ns) == fwd0


@pytest.mark.parametrize("family", [4, 6])
def test_pod_egress_too_big_for_the_nic_tells_the_pod(mtu_env, family):
    """Pod at 1500 behind a NIC lowered to 1400: the FIB check (GSO-aware) sends the oversize
    packet to the stack, which answers the pod with frag-needed / packet-too-big."""
    c = mtu_env
    node = c.nodes[0]
    pod = node.pods[1]
    dst = WIRE_HOST_V4 if family == 4 else WIRE_HOST_V6
    _flush_route_cache(pod.ns)
    _set_mtu(node.ns, node.nic, 1400)
    try:
        before = _count(node, pod.ep.ep_id, Reason.PASS_MTU)
        _udp_send(pod.ns, dst, 1500 - (28 if family == 4 else 48), df=True, n=2)
        assert _wait(lambda: _route_mtu(pod.ns, dst) == 1400), f"pod's path MTU: {_route_mtu(pod.ns, dst)}"
        assert _count(node, pod.ep.ep_id, Reason.PASS_MTU) > before
    finally:
        _set_mtu(node.ns, node.nic, 1500)


def test_tcp_bulk_egress_with_tso_stays_on_the_fast_path(mtu_env):
    c = mtu_env
    node = c.nodes[0]
    pod = node.pods[1]
    tso = run_in(pod.ns, "ethtool", "-k", "eth0").stdout
    assert "tcp-segmentation-offload: on" in tso, "the pod's veth should do TSO (GSO skbs)"
    ep = pod.ep.ep_id
    fast0, mtu0, fib0 = (
        _count(node, ep, r) for r in (Reason.FWD_POD_TO_NIC, Reason.PASS_MTU, Reason.PASS_FIB)
    )
    fwd0 = forwarded(node.ns)
    assert tcp_bulk(pod.ns, c.wire, WIRE_HOST_V4, 8 << 20, 47010) == 8 << 20
    fast = _count(node, ep, Reason.FWD_POD_TO_NIC) - fast0
    assert _count(node, ep, Reason.PASS_MTU) == mtu0, "GSO skbs were judged too big"
    assert _count(node, ep, Reason.PASS_FIB) == fib0
    assert fast > 0
    # The kernel forwards only what the fast path is not given (nothing here): every pod->wire
    # skb, GSO or not, is one FWD_POD_TO_NIC count.
    assert forwarded(node.ns) - fwd0 <= 2


def test_jumbo_nic_in_tc_mode_never_delivers_oversize_into_a_pod():
    """NIC and wire at 9000, pod at 1500: frames above the pod MTU go to the stack (frag-needed),
    the rest are delivered on the fast path. (A 9000-MTU veth NIC cannot run native XDP: it falls
    back to TC, next test.)"""
    cluster = Cluster(1)
    try:
        node = cluster.nodes[0]
        for ns, ifname in ((cluster.wire, "br0"), (cluster.wire, node.wire_port), (node.ns, node.nic)):
            _set_mtu(ns, ifname, 9000)
        node.load("tc")
        pod = node.add_pod()
        _flush_route_cache(cluster.wire)
        with capture(pod.ns, "eth0") as cap:
            _udp_send(cluster.wire, pod.ip4, 2000, df=True, n=2)
            assert _wait(lambda: _route_mtu(cluster.wire, pod.ip4) == 1500)
            cap.read(timeout=0.2)
            assert max((len(f) for f in cap.frames), default=0) <= 1514
        assert _count(node, pod.ep.ep_id, Reason.PASS_MTU) >= 1
    finally:
        cluster.teardown()


def test_xdp_on_a_jumbo_veth_nic_falls_back_to_tc_naming_the_mtu():
    cluster = Cluster(1)
    try:
        node = cluster.nodes[0]
        for ns, ifname in ((cluster.wire, "br0"), (cluster.wire, node.wire_port), (node.ns, node.nic)):
            _set_mtu(ns, ifname, 9000)
        res = node.load("xdp")
        assert "MTU 9000" in res.stdout and "using TC" in res.stdout, res.stdout
        status = node.ctl("status").stdout
        assert "mode tc" in status and "fallback" in status and "MTU 9000" in status
        pod = node.add_pod()
        fast0 = _count(node, pod.ep.ep_id, Reason.FWD_NIC_TO_POD)
        rx = _receive(pod.ns, pod.ip4, 47003)
        try:
            _udp_send(cluster.wire, pod.ip4, 1000, df=True, port=47003, n=2)
            assert len(rx.recv(4096)) == 1000
        finally:
            rx.close()
        assert _count(node, pod.ep.ep_id, Reason.FWD_NIC_TO_POD) - fast0 == 2
    finally:
        cluster.teardown()


def test_a_failed_first_load_leaves_nothing_pinned():
    cluster = Cluster(1)
    try:
        node = cluster.nodes[0]
        res = node.ctl("load", "--nic", "nosuchnic0", "--mode", "tc", check=False)
        assert res.returncode != 0 and "nosuchnic0" in (res.stderr + res.stdout)
        assert not os.path.exists(node.pin_root), os.listdir(node.pin_root)
    finally:
        cluster.teardown()
