"""CHECK: the attachment still matches prevResult and the node: pod interface with the
addresses, host veth up, and map entries steering each address to that veth."""

from __future__ import annotations

import ipaddress

from pyroute2 import IPRoute

from datapath import abi
from datapath.endpoints import EndpointTable

from .. import node, plumbing
from ..env import CniEnv
from ..errors import CHECK_FAILED, INVALID_NETCONF, CniError
from ..netconf import NetConf
from ..result import Result
from .common import record_store


def _fail(msg: str) -> CniError:
    return CniError(CHECK_FAILED, msg)


def run(env: CniEnv, conf: NetConf) -> None:
    if conf.prev_result is None:
        raise CniError(INVALID_NETCONF, "CHECK needs prevResult")
    prev = Result.from_json(conf.prev_result)
    ours = [
        i
        for i in prev.ips
        if i.interface is None
        or (0 <= i.interface < len(prev.interfaces) and prev.interfaces[i.interface].name == env.ifname)
    ]
    want = sorted(ip.ip for ip in ours)
    rec = record_store(conf).get(env.container_id, env.ifname)
    if rec is None or not rec.complete:
        raise _fail(f"no completed attachment for {env.container_id}/{env.ifname}")
    if sorted(rec.ips) != want:
        raise _fail(f"prevResult addresses {want} differ from the attachment's {sorted(rec.ips)}")

    with IPRoute(netns=env.netns) as pod:
        found = pod.link_lookup(ifname=env.ifname)
        if not found:
            raise _fail(f"{env.ifname} is missing in {env.netns}")
        have = sorted(a.get_attr("IFA_ADDRESS") for a in pod.get_addr(index=found[0]) if a["scope"] == 0)
        have = sorted(str(ipaddress.ip_address(a)) for a in have)
        if have != want:
            raise _fail(f"{env.ifname} has addresses {have}, prevResult says {want}")

    with IPRoute() as ipr:
        host_ifindex = plumbing.find_host_link(ipr, rec.host_ifname)
        if host_ifindex is None:
            raise _fail(f"host veth {rec.host_ifname} is missing")
        if ipr.get_links(host_ifindex)[0].get_attr("IFLA_OPERSTATE") != "UP":
            raise _fail(f"host veth {rec.host_ifname} is not up")
    if not node.is_loaded(conf.root):
        raise _fail(f"datapath is not loaded under {conf.root}")
    with EndpointTable(conf.root) as table:
        for ip in want:
            info = table.endpoints.get(abi.EndpointKey.for_ip(ip))
            if info is None or info.ifindex != host_ifindex:
                raise _fail(f"map entry for {ip} is missing or points elsewhere")
