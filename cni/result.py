"""The ADD result, and its JSON in each spec version (also read back from prevResult for CHECK).

0.3.x/0.4.0 carry "version" on every IP; 1.0.0 dropped it; 1.1.0 adds an interface "mtu".
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from .version import at_least


@dataclass
class Interface:
    name: str
    mac: str = ""
    sandbox: str = ""
    mtu: int | None = None


@dataclass
class IPConfig:
    address: str  # CIDR notation, e.g. 198.19.0.5/32
    gateway: str = ""
    interface: int | None = None

    @property
    def ip(self) -> str:
        return self.address.split("/")[0]

    @property
    def version(self) -> int:
        return ipaddress.ip_interface(self.address).version


@dataclass
class Route:
    dst: str
    gw: str = ""


@dataclass
class Result:
    interfaces: list[Interface] = field(default_factory=list)
    ips: list[IPConfig] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    dns: dict = field(default_factory=dict)

    def to_json(self, cni_version: str) -> dict:
        interfaces = []
        for i in self.interfaces:
            d = {"name": i.name}
            if i.mac:
                d["mac"] = i.mac
            if i.sandbox:
                d["sandbox"] = i.sandbox
            if i.mtu and at_least(cni_version, "1.1.0"):
                d["mtu"] = i.mtu
            interfaces.append(d)
        ips = []
        for ip in self.ips:
            d = {}
            if not at_least(cni_version, "1.0.0"):
                d["version"] = str(ip.version)
            d["address"] = ip.address
            if ip.gateway:
                d["gateway"] = ip.gateway
            if ip.interface is not None:
                d["interface"] = ip.interface
            ips.append(d)
        routes = [{"dst": r.dst, **({"gw": r.gw} if r.gw else {})} for r in self.routes]
        return {
            "cniVersion": cni_version,
            "interfaces": interfaces,
            "ips": ips,
            "routes": routes,
            "dns": dict(self.dns),
        }

    @classmethod
    def from_json(cls, data: dict) -> Result:
        """Tolerant reader for a prevResult of any supported version."""
        res = cls()
        for i in data.get("interfaces") or []:
            res.interfaces.append(
                Interface(i.get("name", ""), i.get("mac", ""), i.get("sandbox", ""), i.get("mtu"))
            )
        for ip in data.get("ips") or []:
            res.ips.append(IPConfig(ip.get("address", ""), ip.get("gateway", ""), ip.get("interface")))
        for r in data.get("routes") or []:
            res.routes.append(Route(r.get("dst", ""), r.get("gw", "")))
        res.dns = dict(data.get("dns") or {})
        return res
