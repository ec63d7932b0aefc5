"""Read the per-CPU counters: per endpoint, per reason, summed over CPUs."""

from __future__ import annotations

from dataclasses import dataclass

from . import abi
from .maps import PerCpuArray
from .pins import DEFAULT_ROOT, PinLayout

NODE_EP_ID = 0  # row for traffic that belongs to no endpoint (passed to the stack at the NIC)


@dataclass(frozen=True)
class Count:
    packets: int = 0
    bytes: int = 0


def _ethtool(ifindex: int) -> list[tuple[str, int]]:
    import socket

    from pyroute2.ethtool.ioctl import IoctlEthtool

    try:
        eth = IoctlEthtool(socket.if_indextoname(ifindex))
    except OSError:
        return []
    try:
        return list(eth.get_statistics())
    except Exception:
        return []
    finally:
        eth.close()


def xdp_lost(ifindex: int, where: str) -> int:
    """Frames an XDP program redirected (and counted as forwarded) that the kernel lost afterwards,
    from the veth's ethtool counters: where="nic" sums the NIC's rx_queue_<n>_drops (a failed
    devmap redirect is dropped in the NIC's receive path: measured, e.g. a pod eth0 without an
    XDP program or GRO; other receive drops of the NIC land there too), where="veth" sums a host
    veth's tx_queue_<n>_xdp_xmit_errors. Kernel counters since the device came up; 0 when the
    device is gone or has no such counters (physical NICs name theirs differently)."""
    suffix = ("rx_queue_", "_drops") if where == "nic" else ("tx_queue_", "_xdp_xmit_errors")
    return sum(v for k, v in _ethtool(ifindex) if k.startswith(suffix[0]) and k.endswith(suffix[1]))


class Stats:
    def __init__(self, root: str = DEFAULT_ROOT):
        self.counters = PerCpuArray(PinLayout(root), "counters")

    def close(self) -> None:
        self.counters.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def endpoint(self, ep_id: int) -> dict[abi.Reason, Count]:
        """Non-zero counters of one endpoint (ep_id 0: node-level)."""
        out = {}
        for reason in abi.Reason:
            per_cpu = self.counters.get_all_cpus(ep_id * abi.REASON_MAX + int(reason))
            pk = sum(c.packets for c in per_cpu)
            if pk:
                out[reason] = Count(pk, sum(c.bytes for c in per_cpu))
        return out

    def packets(self, ep_id: int, reason: abi.Reason) -> int:
        return sum(c.packets for c in self.counters.get_all_cpus(ep_id * abi.REASON_MAX + int(reason)))

    def totals(self, ep_ids) -> dict[abi.Reason, int]:
        out: dict[abi.Reason, int] = {}
        for ep_id in ep_ids:
            for reason, c in self.endpoint(ep_id).items():
                out[reason] = out.get(reason, 0) + c.packets
        return out
