"""Typed endpoint table over the pinned maps: what the CNI writes on ADD and removes on DEL.

One endpoint = one pod interface: its host-side veth (ifindex, MAC), the pod's MAC and its IPs.
Written in an order that never exposes half an endpoint to the programs: the redirect target and
the anti-spoofing entry first, the addresses (what makes traffic flow) last; removal in reverse.
Must run in the node's network namespace: DEVMAP updates resolve ifindexes in the caller's netns.
"""

from __future__ import annotations

import ctypes
import ipaddress
import struct
from contextlib import contextmanager
from dataclasses import dataclass, field

from . import abi, locks
from .maps import PerCpuArray, PinnedMap
from .pins import DEFAULT_ROOT, PinLayout, check_owned


class EndpointTableFull(RuntimeError):
    pass


@dataclass
class Endpoint:
    ifindex: int  # host-side veth, node namespace
    pod_mac: str
    host_mac: str
    ips: list[str] = field(default_factory=list)
    ep_id: int = 0
    flags: int = 0  # abi.EP_F_*: directions that must go through the host stack

    def as_dict(self) -> dict:
        return {
            "ep_id": self.ep_id,
            "ifindex": self.ifindex,
            "pod_mac": self.pod_mac,
            "host_mac": self.host_mac,
            "ips": list(self.ips),
            "flags": self.flags,
        }


# The one field a scan needs at the start of each packed value (checked against abi at import).
_IFACE_EP_ID = struct.Struct(f"=I{ctypes.sizeof(abi.IfaceInfo) - 4}x")
_ENDPOINT_IFINDEX = struct.Struct(f"=I{ctypes.sizeof(abi.EndpointInfo) - 4}x")
assert abi.IfaceInfo.ep_id.offset == 0 and abi.EndpointInfo.ifindex.offset == 0


class EndpointTable:
    def __init__(self, root: str = DEFAULT_ROOT):
        self.layout = PinLayout(root)
        check_owned(self.layout.maps_dir)  # once for the four maps of that directory
        self.endpoints = self.ifaces = self.tx_ports = self.counters = None
        try:
            self.endpoints = PinnedMap(self.layout, "endpoints", owner_checked=True)
            self.ifaces = PinnedMap(self.layout, "ifaces", owner_checked=True)
            self.tx_ports = PinnedMap(self.layout, "tx_ports", owner_checked=True)
            self.counters = PerCpuArray(self.layout, "counters", owner_checked=True)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for m in (self.endpoints, self.ifaces, self.tx_ports, self.counters):
            if m is not None:
                m.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @contextmanager
    def _locked(self):
        """Serialise ep_id allocation between concurrent CNI processes (and agent threads) on this
        node. The lock is a flock on the pinned maps directory itself, so nothing is left behind
        when the datapath is unloaded; it has a deadline (locks.LockTimeout names the holder)."""
        with locks.flocked(self.layout.maps_dir, "endpoint map lock", is_dir=True):
            yield

    def add(self, ep: Endpoint) -> Endpoint:
        """Insert (or refresh) the endpoint; returns it with its ep_id assigned."""
        with self._locked():
            existing = self.ifaces.get(ep.ifindex)
            ep.ep_id = existing.ep_id if existing is not None else self._free_ep_id()
            if existing is None:
                self.counters.zero(ep.ep_id * abi.REASON_MAX, abi.REASON_MAX)
            pod_mac = abi.mac_to_bytes(ep.pod_mac)
            host_mac = abi.mac_to_bytes(ep.host_mac)
            self.tx_ports.put(ep.ifindex, ctypes.c_uint32(ep.ifindex))
            self.ifaces.put(ep.ifindex, abi.IfaceInfo(ep_id=ep.ep_id, pod_mac=pod_mac, host_mac=host_mac))
            info = abi.EndpointInfo(
                ifindex=ep.ifindex, ep_id=ep.ep_id, pod_mac=pod_mac, host_mac=host_mac, flags=ep.flags
            )
            for ip in ep.ips:
                self.endpoints.put(abi.EndpointKey.for_ip(ip), info)
        return ep

    def remove(self, ifindex: int, ips: list[str] | None = None, keep_iface: bool = False) -> bool:
        """Remove the endpoint on `ifindex` (and the given IPs wherever they point).

        keep_iface=True removes only the address entries and keeps the interface's own entries
        (ifaces, tx_ports): its veth still exists, and tc_pod then drops every packet from it with
        a routable source (no address of the veth's: REASON_DROP_SPOOF_IP) instead of passing
        an unknown interface's traffic to the stack. Returns False when nothing was there: DEL of
        something already gone is success.
        """
        found = False
        with self._locked():
            n, keys, values = self.endpoints.items_raw()
            ks = ctypes.sizeof(abi.EndpointKey)
            for i, (owner,) in enumerate(struct.iter_unpack(_ENDPOINT_IFINDEX.format, values) if n else ()):
                if owner == ifindex:  # EndpointInfo's first field, u32
                    found |= self.endpoints.delete(abi.EndpointKey.from_buffer_copy(keys, i * ks))
            for ip in ips or []:
                found |= self.endpoints.delete(abi.EndpointKey.for_ip(ip))
            if keep_iface:
                return found
            iface = self.ifaces.get(ifindex)
            if iface is not None:
                found |= self.ifaces.delete(ifindex)
                self.counters.zero(iface.ep_id * abi.REASON_MAX, abi.REASON_MAX)
            found |= self.tx_ports.delete(ifindex)
        return found

    def remove_ips(self, ips: list[str]) -> bool:
        """Remove address entries only (used when the veth is already gone and its ifindex unknown)."""
        found = False
        for ip in ips:
            key = abi.EndpointKey.for_ip(ip)
            info = self.endpoints.get(key)
            if info is not None:
                found |= self.remove(info.ifindex, ips)
        return found

    def get(self, ip: str) -> Endpoint | None:
        info = self.endpoints.get(abi.EndpointKey.for_ip(ip))
        if info is None:
            return None
        return next((e for e in self.list() if e.ifindex == info.ifindex), None)

    def list(self) -> list[Endpoint]:
        by_ifindex: dict[int, Endpoint] = {}
        for ifindex_key, iface in self.ifaces.items():
            ifindex = ifindex_key.value
            by_ifindex[ifindex] = Endpoint(
                ifindex=ifindex,
                pod_mac=abi.mac_to_str(iface.pod_mac),
                host_mac=abi.mac_to_str(iface.host_mac),
                ep_id=iface.ep_id,
            )
        for key, info in self.endpoints.items():
            if info.flags & abi.EP_F_NODE:  # the node's own addresses (datapath/nodeaddrs.py)
                continue
            ep = by_ifindex.get(info.ifindex)
            if ep is None:  # address entry without its interface entry: show it anyway
                ep = by_ifindex[info.ifindex] = Endpoint(
                    ifindex=info.ifindex,
                    pod_mac=abi.mac_to_str(info.pod_mac),
                    host_mac=abi.mac_to_str(info.host_mac),
                    ep_id=info.ep_id,
                )
            ep.ips.append(str(key.ip()))
            ep.flags |= info.flags
        for ep in by_ifindex.values():
            ep.ips.sort(key=lambda s: (ipaddress.ip_address(s).version, ipaddress.ip_address(s)))
        return sorted(by_ifindex.values(), key=lambda e: e.ep_id)

    def _free_ep_id(self) -> int:
        # ep_id is IfaceInfo's first field (u32): read it off the raw batch, no object per entry.
        n, _, values = self.ifaces.items_raw()
        used = {v[0] for v in struct.iter_unpack(_IFACE_EP_ID.format, values)} if n else set()
        for ep_id in range(1, abi.MAX_ENDPOINTS):
            if ep_id not in used:
                return ep_id
        raise EndpointTableFull(f"all {abi.MAX_ENDPOINTS - 1} endpoint slots are in use")
