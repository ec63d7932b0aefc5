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
    def from_json(cls, data: dict, strict: bool = False) -> Result:
        """Reader for a prevResult of any supported version. strict=True raises ValueError naming
        the first malformed field (netconf turns it into code 7); otherwise malformed entries are
        skipped."""

        def bad(msg: str):
            if strict:
                raise ValueError(msg)

        def items(key: str) -> list:
            val = data.get(key)
            if val is None:
                return []
            if not isinstance(val, list):
                bad(f"{key} must be a list")
                return []
            out = []
            for i, item in enumerate(val):
                if isinstance(item, dict):
                    out.append(item)
                else:
                    bad(f"{key}[{i}] must be an object")
            return out

        def text(item: dict, key: str, where: str) -> str:
            val = item.get(key, "")
            if not isinstance(val, str):
                bad(f"{where}.{key} must be a string")
                return ""
            return val

        res = cls()
        for n, i in enumerate(items("interfaces")):
            w = f"interfaces[{n}]"
            mtu = i.get("mtu")
            if mtu is not None and (not isinstance(mtu, int) or isinstance(mtu, bool)):
                bad(f"{w}.mtu must be an integer")
                mtu = None
            res.interfaces.append(
                Interface(text(i, "name", w), text(i, "mac", w), text(i, "sandbox", w), mtu)
            )
        for n, ip in enumerate(items("ips")):
            w = f"ips[{n}]"
            addr = text(ip, "address", w)
            try:
                ipaddress.ip_interface(addr)
            except ValueError:
                bad(f"{w}.address {addr!r} is not an address in CIDR notation")
                continue
            iface = ip.get("interface")
            if iface is not None and (not isinstance(iface, int) or isinstance(iface, bool) or iface < 0):
                bad(f"{w}.interface must be a non-negative integer")
                iface = None
            res.ips.append(IPConfig(addr, text(ip, "gateway", w), iface))
        for n, r in enumerate(items("routes")):
            res.routes.append(Route(text(r, "dst", f"routes[{n}]"), text(r, "gw", f"routes[{n}]")))
        dns = data.get("dns")
        if dns is not None and not isinstance(dns, dict):
            bad("dns must be an object")
            dns = None
        res.dns = dict(dns or {})
        return res
