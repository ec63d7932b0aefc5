"""CHECK: everything ADD created is still there and still as ADD made it, else code 106 with a
message naming each thing that is missing or wrong:

  pod side   the interface (up), its addresses, the link-local gateway's permanent neighbour
             (the host veth's MAC), the gateway route and the default routes, GRO on the interface
             (or, on pods made before GRO replaced it, the xdp_pod XDP program);
  host side  the veth carrying this attachment's ownership mark (up), per-device forwarding,
             the /32 and /128 routes and permanent neighbours to the pod, the TC program;
  datapath   loaded; an endpoint entry per address steering to this veth with both MACs, the
             veth's interface and redirect entries.

The pod's namespace is opened read-only: a missing one is an error (code 4), never created.
"""

from __future__ import annotations

import ipaddress
import os

from pyroute2 import IPRoute

from datapath import abi
from datapath import attach as nl
from datapath import pod as pod_dp
from datapath.endpoints import EndpointTable
from datapath.rtnl import Rtnl

from .. import node, plumbing
from ..env import CniEnv
from ..errors import CHECK_FAILED, INVALID_NETCONF, CniError
from ..netconf import NetConf
from ..result import Result
from .common import attachment_locked, record_store

IFF_UP = 0x1


def _fail(msg: str) -> CniError:
    return CniError(CHECK_FAILED, msg, "DEL and ADD the attachment again to repair it")


def run(env: CniEnv, conf: NetConf) -> None:
    with attachment_locked(conf, env.container_id, env.ifname):
        _check(env, conf)


def _norm(ip: str) -> str:
    return str(ipaddress.ip_address(ip))


def _check(env: CniEnv, conf: NetConf) -> None:
    if conf.prev_result is None:
        raise CniError(INVALID_NETCONF, "CHECK needs prevResult")
    prev = Result.from_json(conf.prev_result)
    ours = [
        i
        for i in prev.ips
        if i.interface is None
        or (0 <= i.interface < len(prev.interfaces) and prev.interfaces[i.interface].name == env.ifname)
    ]
    want = sorted(_norm(ip.ip) for ip in ours)
    rec = record_store(conf).get(env.container_id, env.ifname)
    if rec is None or not rec.complete:
        raise _fail(f"no completed attachment for {env.container_id}/{env.ifname} on network {conf.name}")
    if sorted(_norm(ip) for ip in rec.ips) != want:
        raise _fail(f"prevResult addresses {want} differ from the attachment's {sorted(rec.ips)}")
    v4 = [ip for ip in want if ipaddress.ip_address(ip).version == 4]
    v6 = [ip for ip in want if ipaddress.ip_address(ip).version == 6]
    missing: list[str] = []

    with Rtnl() as rt:
        host_idx = plumbing.find_host_link(rt, rec.host_ifname, rec.mark)
    with IPRoute() as ipr:
        if host_idx is None:
            raise _fail(f"host veth {rec.host_ifname} (with this attachment's mark) is missing")
        host = ipr.get_links(host_idx)[0]
        host_mac = host.get_attr("IFLA_ADDRESS")
        if not host["flags"] & IFF_UP:
            missing.append(f"host veth {rec.host_ifname} is down")
        pod_mac = _check_pod(env, host_mac, want, v4, v6, missing)
        _check_host(ipr, rec.host_ifname, host_idx, pod_mac, want, missing, bool(v4), bool(v6))

    if not node.is_loaded(conf.root):
        missing.append(f"datapath is not loaded under {conf.root}")
    else:
        with EndpointTable(conf.root) as table:
            for ip in want:
                info = table.endpoints.get(abi.EndpointKey.for_ip(ip))
                if info is None:
                    missing.append(f"endpoint map entry for {ip}")
                elif info.ifindex != host_idx:
                    missing.append(
                        f"endpoint map entry for {ip} steers to ifindex {info.ifindex}, not {host_idx}"
                    )
                elif abi.mac_to_str(info.host_mac) != host_mac or (
                    pod_mac and abi.mac_to_str(info.pod_mac) != pod_mac
                ):
                    missing.append(f"endpoint map entry for {ip} has stale MACs")
            if table.ifaces.get(host_idx) is None:
                missing.append(f"ifaces map entry for {rec.host_ifname}")
            if table.tx_ports.get(host_idx) is None:
                missing.append(f"tx_ports map entry for {rec.host_ifname}")
    if missing:
        raise _fail(f"{env.container_id}/{env.ifname}: " + "; ".join(missing))


def _check_pod(env: CniEnv, host_mac: str, want, v4, v6, missing: list[str]) -> str | None:
    with plumbing.pod_netns(env.netns) as pod:
        found = pod.link_lookup(ifname=env.ifname)
        if not found:
            raise _fail(f"{env.ifname} is missing in {env.netns}")
        idx = found[0]
        link = pod.get_links(idx)[0]
        pod_mac = link.get_attr("IFLA_ADDRESS")
        if not link["flags"] & IFF_UP:
            missing.append(f"{env.ifname} is down in the pod")
        have = sorted(
            _norm(a.get_attr("IFA_ADDRESS"))
            for a in pod.get_addr(index=idx)
            if a["scope"] == 0 and a["prefixlen"] in (32, 128)
        )
        if have != want:
            missing.append(f"{env.ifname} has addresses {have}, prevResult says {want}")
        neighs = {
            (n.get_attr("NDA_DST"), n.get_attr("NDA_LLADDR"), n["state"] & plumbing.NUD_PERMANENT != 0)
            for n in pod.get_neighbours(ifindex=idx)
        }
        routes = {
            (
                r.get_attr("RTA_DST") or "default",
                r["dst_len"],
                r.get_attr("RTA_GATEWAY"),
                r.get_attr("RTA_OIF"),
            )
            for fam in (2, 10)
            for r in pod.get_routes(family=fam, table=254)
        }
        if v4:
            if (plumbing.GATEWAY_V4, host_mac, True) not in neighs:
                missing.append(f"pod's permanent neighbour {plumbing.GATEWAY_V4} -> {host_mac}")
            if (plumbing.GATEWAY_V4, 32, None, idx) not in routes:
                missing.append(f"pod's route to the gateway {plumbing.GATEWAY_V4}/32")
            if ("default", 0, plumbing.GATEWAY_V4, idx) not in routes:
                missing.append(f"pod's default route via {plumbing.GATEWAY_V4}")
        if v6:
            if (plumbing.GATEWAY_V6, host_mac, True) not in neighs:
                missing.append(f"pod's permanent neighbour {plumbing.GATEWAY_V6} -> {host_mac}")
            if ("default", 0, plumbing.GATEWAY_V6, idx) not in routes:
                missing.append(f"pod's IPv6 default route via {plumbing.GATEWAY_V6}")
        if not _pod_gro(env.netns, env.ifname) and nl.xdp_prog_id(pod, idx) == 0:
            missing.append(f"GRO on the pod's {env.ifname}")
    return pod_mac


def _pod_gro(netns_path: str, ifname: str) -> bool:
    """GRO (veth NAPI: XDP-redirected frames accepted) on the pod's interface, asked through a
    socket made in the pod's namespace."""
    fd = plumbing.open_netns(netns_path)
    try:
        with Rtnl(fd) as pod_nl:
            return pod_dp.gro_on(pod_nl.sock, ifname)
    finally:
        os.close(fd)


def _sysctl(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


def _check_host(
    ipr: IPRoute, name: str, idx: int, pod_mac: str | None, want, missing: list[str], v4: bool, v6: bool
) -> None:
    """Forwarding for the pod's families (ADD turns on only those), routes, neighbours."""
    if v4 and _sysctl(f"/proc/sys/net/ipv4/conf/{name}/forwarding") != "1":
        missing.append(f"IPv4 forwarding on {name}")
    if v6 and _sysctl(f"/proc/sys/net/ipv6/conf/{name}/forwarding") not in ("1", None):
        missing.append(f"IPv6 forwarding on {name}")
    routes = {
        (r.get_attr("RTA_DST"), r["dst_len"])
        for fam in (2, 10)
        for r in ipr.get_routes(family=fam, oif=idx, table=254)
        if r.get_attr("RTA_OIF") == idx
    }
    neighs = {
        (n.get_attr("NDA_DST"), n.get_attr("NDA_LLADDR"))
        for n in ipr.get_neighbours(ifindex=idx)
        if n["state"] & plumbing.NUD_PERMANENT
    }
    for ip in want:
        plen = 32 if ipaddress.ip_address(ip).version == 4 else 128
        if (ip, plen) not in routes:
            missing.append(f"host route {ip}/{plen} via {name}")
        if pod_mac and (ip, pod_mac) not in neighs:
            missing.append(f"host's permanent neighbour {ip} -> {pod_mac}")
    if nl.TC_POD_FILTER not in nl.tc_ingress_prog_names(ipr, idx):
        missing.append(f"TC program on {name}'s ingress")
