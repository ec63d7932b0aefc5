"""Typed endpoint table over the pinned maps: what the CNI writes on ADD and removes on DEL.

One endpoint = one pod interface: its host-side veth (ifindex, MAC), the pod's MAC and its IPs.
Written in an order that never exposes half an endpoint to the programs: the redirect target and
the anti-spoofing entry first, the addresses (what makes traffic flow) last; removal in reverse.
Must run in the node's network namespace: DEVMAP updates resolve ifindexes in the caller's netns.
"""

from __future__ import annotations

import array
import ctypes
import ipaddress
import mmap
import os
import struct
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

from . import abi, libbpf, locks
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


_SLOT = struct.Struct("=Q")  # an ep_slots value: the owner's ifindex (u64: array values are 8-aligned)
_FREE_SLOT = bytes(_SLOT.size)
assert ctypes.sizeof(abi.MAP_LAYOUT["ep_slots"][1]) == _SLOT.size


def iface_ep_ids(ifaces: PinnedMap) -> dict[int, int]:
    """ep_id -> host ifindex of every entry of the `ifaces` map (one batch read)."""
    n, keys, values = ifaces.items_raw()
    if not n:
        return {}
    ifindexes = struct.unpack(f"={n}I", keys)
    return {v[0]: ifindexes[i] for i, v in enumerate(struct.iter_unpack(_IFACE_EP_ID.format, values))}


class EndpointSlots:
    """The `ep_slots` map (abi.MAP_SPECS) mapped into this process: value i is the ifindex of the
    host veth that owns endpoint id i, 0 when the id is free. The reverse of `ifaces`, kept by
    EndpointTable under the endpoint map lock, so ADD finds a free id in one C-speed search of
    MAX_ENDPOINTS * 8 bytes (no syscall) instead of reading every endpoint (~0.5 ms at 1000).

    It may hold ids that are free (a process killed between its writes): never an id in use as
    free, as long as every writer goes through EndpointTable (an xdpcni of before ep_slots
    writing during a rolling upgrade does not: restore() re-syncs at every load and agent start).
    """

    def __init__(self, fd: int):
        """Map the ep_slots map `fd` (not closed here; the mapping outlives it)."""
        self._mm = mmap.mmap(fd, abi.MAX_ENDPOINTS * _SLOT.size)  # MAP_SHARED, read-write

    @classmethod
    def open(cls, layout: PinLayout) -> EndpointSlots:
        """The pinned map's slots; FileNotFoundError when a datapath of before ep_slots is loaded."""
        fd = libbpf.obj_get(layout.map("ep_slots"))
        try:
            return cls(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        self._mm.close()

    def owner(self, ep_id: int) -> int:
        return _SLOT.unpack_from(self._mm, ep_id * _SLOT.size)[0]

    def take(self, ep_id: int, ifindex: int) -> None:
        _SLOT.pack_into(self._mm, ep_id * _SLOT.size, ifindex)

    def release(self, ep_id: int, ifindex: int) -> None:
        """Free `ep_id` if `ifindex` still owns it."""
        if 0 < ep_id < abi.MAX_ENDPOINTS and self.owner(ep_id) == ifindex:
            self.take(ep_id, 0)

    def free_id(self) -> int | None:
        """The lowest free id >= 1 (0 is the node's counters row), or None when all are taken."""
        pos = _SLOT.size
        while True:
            pos = self._mm.find(_FREE_SLOT, pos)
            if pos < 0:
                return None
            if pos % _SLOT.size == 0:  # a run of zero bytes across two values is not a free one
                return pos // _SLOT.size
            pos += _SLOT.size - pos % _SLOT.size

    def fill(self, owners: dict[int, int]) -> None:
        """Make the slots exactly `owners` (ep_id -> ifindex), all others free."""
        values = array.array("Q", bytes(abi.MAX_ENDPOINTS * _SLOT.size))
        for ep_id, ifindex in owners.items():
            if 0 < ep_id < abi.MAX_ENDPOINTS:
                values[ep_id] = ifindex
        self._mm[:] = values.tobytes()


class EndpointTable:
    def __init__(self, root: str = DEFAULT_ROOT):
        self.layout = PinLayout(root)
        check_owned(self.layout.maps_dir)  # once for the maps of that directory
        self.endpoints = self.ifaces = self.tx_ports = self.counters = self.slots = None
        try:
            self.endpoints = PinnedMap(self.layout, "endpoints", owner_checked=True)
            self.ifaces = PinnedMap(self.layout, "ifaces", owner_checked=True)
            self.tx_ports = PinnedMap(self.layout, "tx_ports", owner_checked=True)
            self.counters = PerCpuArray(self.layout, "counters", owner_checked=True)
            try:
                self.slots = EndpointSlots.open(self.layout)
            except FileNotFoundError:  # a datapath loaded before ep_slots: ids found by a scan
                self.slots = None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for m in (self.endpoints, self.ifaces, self.tx_ports, self.counters, self.slots):
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
            if self.slots is not None:  # taken before `ifaces` says so: a crash leaks it, never doubles it
                self.slots.take(ep.ep_id, ep.ifindex)
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
                if self.slots is not None:  # after `ifaces` no longer has it (see add)
                    self.slots.release(iface.ep_id, ifindex)
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
        """A free endpoint id (1..MAX_ENDPOINTS-1), under the lock. From ep_slots; when they say
        none is free, they are re-synced from `ifaces` first (ids leaked by killed writers)."""
        if self.slots is not None:
            ep_id = self.slots.free_id()
            if ep_id is None:
                self.sync_slots(locked=True)
                ep_id = self.slots.free_id()
            if ep_id is not None:
                return ep_id
        else:
            used = iface_ep_ids(self.ifaces)  # ep_id -> owner
            ep_id = next((i for i in range(1, abi.MAX_ENDPOINTS) if i not in used), None)
            if ep_id is not None:
                return ep_id
        raise EndpointTableFull(f"all {abi.MAX_ENDPOINTS - 1} endpoint slots are in use")

    def sync_slots(self, locked: bool = False) -> None:
        """Make ep_slots match `ifaces` exactly (restore() at load and agent start; ADD when they
        say all ids are taken; `locked`: the caller holds the endpoint map lock). No-op on a
        datapath loaded before ep_slots."""
        if self.slots is None:
            return
        with nullcontext() if locked else self._locked():
            self.slots.fill(iface_ep_ids(self.ifaces))
