"""Frame builders and checks (scapy) for packets between the wire host, nodes and pods."""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from .topology import WIRE_HOST_V4, WIRE_HOST_V6

UDP_DPORT = 5678


def l3(dst: str, src: str | None = None, ttl: int = 64, **kw):
    if ":" in dst:
        return IPv6(src=src or WIRE_HOST_V6, dst=dst, hlim=ttl, **kw)
    return IP(src=src or WIRE_HOST_V4, dst=dst, ttl=ttl, **kw)


def wire_to(
    cluster,
    node,
    dst: str,
    ttl: int = 64,
    payload: bytes = b"x" * 32,
    sport: int = 1234,
    eth_dst: str | None = None,
    **kw,
):
    """A UDP frame from the wire host to `dst`, addressed (L2) to the node's NIC."""
    return (
        Ether(src=cluster.wire_mac, dst=eth_dst or node.nic_mac)
        / l3(dst, ttl=ttl, **kw)
        / UDP(sport=sport, dport=UDP_DPORT)
        / Raw(payload)
    )


def ip_layer(frame: Ether):
    return frame[IP] if IP in frame else (frame[IPv6] if IPv6 in frame else None)  # noqa: SIM401 (scapy)


def hop_limit(frame: Ether) -> int:
    ip = ip_layer(frame)
    return ip.ttl if isinstance(ip, IP) else ip.hlim


def is_udp_to(frame: Ether, dst: str, dport: int = UDP_DPORT) -> bool:
    ip = ip_layer(frame)
    return ip is not None and ip.dst == dst and UDP in frame and frame[UDP].dport == dport


def checksums_valid(frame: Ether) -> bool:
    """Recompute IPv4 header and UDP/ICMP checksums with scapy and compare with what arrived."""
    ip = ip_layer(frame)
    fresh = Ether(bytes(frame))
    if isinstance(ip, IP):
        c = fresh[IP].copy()
        del c.chksum
        if UDP in c:
            del c[UDP].chksum
        if ICMP in c:
            del c[ICMP].chksum
        rebuilt = IP(bytes(c))
        if rebuilt.chksum != fresh[IP].chksum:
            return False
        return not (UDP in fresh and fresh[UDP].chksum not in (0, rebuilt[UDP].chksum))
    c = fresh[IPv6].copy()
    if UDP in c:
        del c[UDP].chksum
        return IPv6(bytes(c))[UDP].chksum == fresh[UDP].chksum
    return True
