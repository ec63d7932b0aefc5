"""Restore: make the pinned maps and the pod programs match the pods that live on this node.

After `unload` + `load`, or when the pins are gone (bpffs remounted, pin root removed) while the
pods and their veths remain, the maps are empty: without this the pods would never return to the
fast path and their egress would have no anti-spoofing. Cilium restores its endpoints when its
agent starts; xdpcni does it on every load and when the node agent starts.

The source of truth is the kernel's own state, which the CNI plugin left for exactly this:
- host veths carrying the CNI's ownership mark as ifalias (`xdpcni:<digest> <network>/<id>/<if>`,
  cni/plumbing.owner_mark), and
- on each, the permanent neighbour entries ADD wrote for the pod's addresses (address -> pod MAC).
Each is checked against the live link; map entries whose veth is gone are dropped. What cannot be
known from the kernel: the stack flags chained plugins asked for (portmap, bandwidth) on an
endpoint whose map entry was lost; an entry that survived keeps its flags.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from pyroute2 import IPRoute

from . import pod as pod_dp
from .endpoints import Endpoint, EndpointTable

MARK_PREFIX = "xdpcni:"
NUD_PERMANENT = 0x80


@dataclass
class RestoreReport:
    restored: list[str] = field(default_factory=list)  # endpoints written back into the maps
    kept: list[str] = field(default_factory=list)  # already right
    dropped: list[str] = field(default_factory=list)  # map entries whose veth is gone
    problems: list[str] = field(default_factory=list)  # marked veths that could not be restored

    def summary(self) -> str:
        s = f"restored {len(self.restored)}, kept {len(self.kept)}, dropped {len(self.dropped)} endpoint(s)"
        return s + (f"; {len(self.problems)} problem(s): {'; '.join(self.problems)}" if self.problems else "")


def _live_pods(ipr: IPRoute) -> tuple[dict[int, tuple[str, str, str, list[str]]], list[str], set[int]]:
    """host ifindex -> (ifname, host MAC, pod MAC, pod IPs) for every marked host veth; problems;
    every ifindex present."""
    pods, problems, present = {}, [], set()
    for link in ipr.get_links():
        present.add(link["index"])
        alias = link.get_attr("IFLA_IFALIAS") or ""
        if not alias.startswith(MARK_PREFIX):
            continue
        name = link.get_attr("IFLA_IFNAME")
        neighs = [
            n
            for n in ipr.get_neighbours(ifindex=link["index"])
            if n["state"] & NUD_PERMANENT and n.get_attr("NDA_LLADDR")
        ]
        ips = sorted(
            {str(ipaddress.ip_address(n.get_attr("NDA_DST"))) for n in neighs},
            key=lambda s: (ipaddress.ip_address(s).version, s),
        )
        macs = {n.get_attr("NDA_LLADDR") for n in neighs}
        if not ips or len(macs) != 1:
            problems.append(f"{name}: no single pod MAC in its permanent neighbours ({sorted(macs)})")
            continue
        pods[link["index"]] = (name, link.get_attr("IFLA_ADDRESS"), macs.pop(), ips)
    return pods, problems, present


def restore(root: str, log=print) -> RestoreReport:
    """Rebuild endpoints, ifaces and devmap entries and re-attach the pod program on every marked
    host veth in this network namespace (run it in the node's namespace). Idempotent."""
    report = RestoreReport()
    with IPRoute() as ipr, EndpointTable(root) as table:
        table.sync_slots()  # ids an older xdpcni's writes left out of ep_slots (rolling upgrade)
        pods, report.problems, present = _live_pods(ipr)
        current = {ep.ifindex: ep for ep in table.list()}
        for ifindex, ep in current.items():
            if ifindex not in present:
                table.remove(ifindex, ep.ips)
                report.dropped.append(f"ifindex {ifindex} ({' '.join(ep.ips)})")
        for ifindex, (name, host_mac, pod_mac, ips) in pods.items():
            have = current.get(ifindex)
            same = (
                have is not None
                and sorted(have.ips) == sorted(ips)
                and have.pod_mac == pod_mac
                and have.host_mac == host_mac
            )
            if same:  # the loader re-attached the new pod program on every ifaces entry already
                report.kept.append(f"{name} ({' '.join(ips)})")
                continue
            table.add(Endpoint(ifindex, pod_mac, host_mac, ips, flags=have.flags if have else 0))
            pod_dp.attach_host_side(ipr, root, ifindex)
            report.restored.append(f"{name} ({' '.join(ips)})")
    if report.restored or report.dropped or report.problems:
        log(f"  restore: {report.summary()}")
    return report
