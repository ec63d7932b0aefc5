"""Unit tests of the observability tools that need no kernel: the trace packet parser (only layer
calls, no builtins), what it fills in, the header diff, the monitor's event decoding and the
metrics' labels; the monitor constants against bpf/lib/consts.h."""

from __future__ import annotations

import ctypes as ct
import re
import socket
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Ether

from datapath import abi
from datapath.endpoints import Endpoint
from node import metrics, monitor, trace

CONSTS = (Path(__file__).resolve().parents[2] / "bpf" / "lib" / "consts.h").read_text()


def _define(name: str) -> int:
    m = re.search(rf"#define {name}\s+\(?(\d+)(?:\s*\*\s*(\d+))?\)?", CONSTS)
    return int(m.group(1)) * int(m.group(2) or 1)


def test_monitor_constants_match_c():
    assert _define("XDPCNI_HOOK_XDP_NIC") == abi.HOOK_XDP_NIC
    assert _define("XDPCNI_HOOK_TC_NIC") == abi.HOOK_TC_NIC
    assert _define("XDPCNI_HOOK_TC_POD") == abi.HOOK_TC_POD
    assert _define("XDPCNI_HOOK_MAX") == abi.HOOK_MAX
    assert _define("XDPCNI_MONITOR_RING_BYTES") == abi.MONITOR_RING_BYTES
    assert abi.MAP_SPECS["monitor_seq"][1] == abi.HOOK_MAX


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('true')",
        "IP().__class__",
        "(lambda: 1)()",
        "open('/etc/passwd')",
        "IP(dst=x)",
        "[c for c in 'ab']",
        "IP(**{'dst': '1.2.3.4'})",
    ],
)
def test_packet_parser_refuses_anything_but_layers(expr):
    with pytest.raises(trace.TraceError):
        trace.parse_packet(expr)


def test_packet_parser_builds_scapy_layers():
    pkt = trace.parse_packet("Ether()/IP(dst='10.244.1.5', ttl=3)/UDP(dport=53)/Raw(b'x' * 4)")
    assert pkt[IP].dst == "10.244.1.5" and pkt[IP].ttl == 3 and pkt[UDP].dport == 53
    assert bytes(pkt).endswith(b"xxxx")


POD = Endpoint(
    ifindex=7, pod_mac="02:00:00:00:00:aa", host_mac="02:00:00:00:00:bb", ips=["10.1.0.5", "fd00::5"]
)


def test_complete_fills_what_the_sender_would():
    nic = "02:00:00:00:00:01"
    p = trace.complete(trace.parse_packet("IP(dst='10.1.0.9')/UDP()"), nic_mac="02:00:00:00:00:0e", pod=POD)
    assert (p[Ether].src, p[Ether].dst, p[IP].src) == (POD.pod_mac, POD.host_mac, "10.1.0.5")
    p = trace.complete(trace.parse_packet("IP(src='1.1.1.1', dst='10.1.0.9')/UDP()"), nic_mac=nic, pod=None)
    assert (p[Ether].dst, p[IP].src) == (nic, "1.1.1.1")  # what the operator wrote stays
    p = trace.complete(
        trace.parse_packet("Ether(dst='ff:ff:ff:ff:ff:ff')/ARP(pdst='10.0.0.1')"), nic_mac=nic, pod=None
    )
    assert p[Ether].dst == "ff:ff:ff:ff:ff:ff" and p[ARP].psrc == trace.WIRE_SRC_V4
    p6 = trace.complete(trace.packet_from_flags("fd00::9", None, "tcp", None, 80, 5), nic_mac=nic, pod=POD)
    assert bytes(p6)  # IPv6 source is the pod's own
    assert "fd00::5" in p6.summary()


def test_header_diff_names_the_rewrite():
    a = (
        Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        / IP(src="1.1.1.1", dst="10.0.0.1", ttl=64)
        / UDP()
    )
    b = a.copy()
    b[Ether].dst, b[IP].ttl, b[IP].chksum = "02:00:00:00:00:03", 63, None
    diff = {d["field"]: (d["before"], d["after"]) for d in trace.header_diff(bytes(a), bytes(b))}
    assert diff["eth.dst"] == ("02:00:00:00:00:02", "02:00:00:00:00:03")
    assert diff["ip.ttl"] == (64, 63) and "ip.chksum" in diff
    assert "eth.src" not in diff


def test_monitor_decodes_an_event(monkeypatch):
    ev = abi.MonitorEvent(
        ts_ns=5,
        ifindex=1,
        ep_id=0,
        len=60,
        hook=abi.HOOK_TC_POD,
        reason=int(abi.Reason.DROP_SPOOF_IP),
        family=4,
    )
    ev.l4proto, ev.sport, ev.dport = 17, socket.htons(9), socket.htons(53)
    ct.memmove(ev.src, bytes([10, 0, 0, 7]), 4)
    ct.memmove(ev.dst, bytes([10, 0, 0, 8]), 4)
    mon = monitor.Monitor.__new__(monitor.Monitor)
    mon._names, mon._boot_offset, mon.root = {}, 0.0, "/nonexistent"
    e = mon.decode(bytes(ev))
    assert (e["hook"], e["direction"], e["verdict"], e["reason"]) == (
        "tc_pod",
        "from-pod",
        "drop",
        "drop_spoof_ip",
    )
    assert (e["src"], e["dst"], e["sport"], e["dport"], e["proto"], e["pod"]) == (
        "10.0.0.7",
        "10.0.0.8",
        9,
        53,
        "udp",
        "node",
    )
    assert "drop_spoof_ip" in monitor.format_event(e)


def test_metrics_labels():
    assert metrics.direction(0, "PASS_TTL") == "from-wire"
    assert metrics.direction(3, "FWD_NIC_TO_POD") == "to-pod"
    assert metrics.direction(3, "DROP_SPOOF_IP") == "from-pod"
    assert metrics.direction(3, "PASS_MTU") == "either"
    assert metrics.verdict("DROP_XDP_LOST") == "drop"
    assert metrics.parse_listen("[::1]:9465") == ("::1", 9465)
    assert metrics.parse_listen("0.0.0.0:80") == ("0.0.0.0", 80)
    with pytest.raises(ValueError):
        metrics.parse_listen("9465")
