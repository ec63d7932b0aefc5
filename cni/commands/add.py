"""ADD: datapath loaded -> record -> addresses -> veth -> pod side -> host side -> programs ->
map entries -> result. Each step registers its undo on an ExitStack; any failure unwinds them
all, so a failed ADD leaves the node exactly as it found it. A SIGKILL cannot unwind, which is
why the record is written first: DEL or GC finds everything from it.
"""

from __future__ import annotations

import ipaddress
import os
from contextlib import ExitStack

from pyroute2 import IPRoute

from datapath import abi
from datapath import pod as pod_dp
from datapath.endpoints import Endpoint, EndpointTable, EndpointTableFull

from .. import node, plumbing, testhook
from ..env import CniEnv
from ..errors import (
    ALREADY_EXISTS,
    DATAPATH,
    INVALID_ENV,
    INVALID_NETCONF,
    PLUMBING,
    UNSUPPORTED_FIELD,
    CniError,
)
from ..ipam import builtin, delegate
from ..netconf import NetConf
from ..records import Record
from ..result import Interface, IPConfig, Result, Route
from .common import forget_endpoint, lease_store, record_store, release_ipam


def _allocate(conf: NetConf, env: CniEnv) -> list[str]:
    if conf.ipam.builtin:
        return builtin.allocate(lease_store(conf), conf.ipam.range_sets, env.container_id, env.ifname)
    result = delegate.call(conf.ipam.type, "ADD", {**conf.raw, "ipam": conf.ipam.raw}, env.raw, env.path)
    return delegate.addresses(result)


def stack_flags(conf: NetConf) -> int:
    """Directions of this pod's traffic that must go through the host stack because a chained
    plugin works there: portmap's hostPort DNAT is reversed by conntrack on the pod's replies,
    bandwidth shapes with qdiscs on the host veth. Known from the runtimeConfig capabilities
    the runtime passes us (declare them in the conflist, see conf/10-xdpcni.conflist)."""
    rc = conf.raw.get("runtimeConfig") or {}
    flags = 0
    if rc.get("portMappings"):
        flags |= abi.EP_F_EGRESS_VIA_STACK
    bw = rc.get("bandwidth") or {}
    if bw.get("ingressRate"):
        flags |= abi.EP_F_INGRESS_VIA_STACK
    if bw.get("egressRate"):
        # The reference bandwidth plugin shapes pod egress with an `ingress` qdisc on the host
        # veth, whose hook our anti-spoofing program holds (clsact): refuse before creating
        # anything rather than leave the runtime a half-built chain.
        raise CniError(
            UNSUPPORTED_FIELD,
            "bandwidth egressRate is not supported by xdpcni",
            "xdpcni's pod program owns the host veth's ingress hook (anti-spoofing); "
            "ingressRate works (traffic to the pod then takes the host stack)",
        )
    return flags


def _delete_link(name: str) -> None:
    with IPRoute() as ipr:
        plumbing.delete_host_link(ipr, name)


def _check_families(ips: list[str]) -> None:
    versions = [ipaddress.ip_address(ip).version for ip in ips]
    if len(versions) != len(set(versions)):
        raise CniError(INVALID_NETCONF, f"IPAM gave {ips}: at most one IPv4 and one IPv6 address per pod")


def run(env: CniEnv, conf: NetConf) -> dict:
    if not os.path.exists(env.netns):
        raise CniError(INVALID_ENV, f"CNI_NETNS {env.netns} does not exist")
    flags = stack_flags(conf)
    node_cfg = conf.node()
    root = conf.root
    node.ensure_loaded(node_cfg, root)
    node.sync_netfilter(root)
    testhook.step("datapath")

    records = record_store(conf)
    if records.get(env.container_id, env.ifname) is not None:
        raise CniError(ALREADY_EXISTS, f"{env.container_id}/{env.ifname} is already attached: DEL it first")
    rec = Record(env.container_id, env.ifname, netns=env.netns, ipam_type=conf.ipam.type)

    with ExitStack() as undo:
        records.put(rec)
        undo.callback(records.remove, env.container_id, env.ifname)
        testhook.step("record")

        undo.callback(release_ipam, conf, env, env.container_id, env.ifname, conf.ipam.type)
        ips = _allocate(conf, env)
        _check_families(ips)
        rec.ips = ips
        records.put(rec)
        testhook.step("ipam")

        with IPRoute() as ipr:
            # The name derives from (container id, ifname), which no other record holds.
            undo.callback(_delete_link, rec.host_ifname)
            try:
                link = plumbing.create_veth(ipr, env.netns, rec.host_ifname, env.ifname, conf.pod_mtu)
            except plumbing.PlumbingError as exc:
                raise CniError(PLUMBING, str(exc)) from exc
            testhook.step("veth")

            plumbing.configure_pod_side(env.netns, link, ips)
            testhook.step("pod-side")
            plumbing.configure_host_side(ipr, link, ips)
            testhook.step("host-side")

            with IPRoute(netns=env.netns) as pod_ipr:
                pod_dp.attach_pod_side(pod_ipr, root, link.pod_ifindex)
            pod_dp.attach_host_side(ipr, root, link.host_ifindex)
            testhook.step("programs")

            try:
                with EndpointTable(root) as table:
                    undo.callback(forget_endpoint, root, link.host_ifindex, ips)
                    table.add(Endpoint(link.host_ifindex, link.pod_mac, link.host_mac, ips, flags=flags))
            except EndpointTableFull as exc:
                raise CniError(DATAPATH, str(exc)) from exc
            testhook.step("maps")

        rec.complete = True
        records.put(rec)
        result = _result(conf, env, link, ips)
        testhook.step("result")
        undo.pop_all()  # success: keep everything
    return result.to_json(conf.cni_version)


def _result(conf: NetConf, env: CniEnv, link: plumbing.PodLink, ips: list[str]) -> Result:
    res = Result(
        interfaces=[
            Interface(link.host_ifname, link.host_mac, mtu=conf.pod_mtu),
            Interface(env.ifname, link.pod_mac, sandbox=env.netns, mtu=conf.pod_mtu),
        ],
        dns=dict(conf.dns),
    )
    for ip in ips:
        v4 = ipaddress.ip_address(ip).version == 4
        gw = plumbing.GATEWAY_V4 if v4 else plumbing.GATEWAY_V6
        res.ips.append(IPConfig(f"{ip}/{32 if v4 else 128}", gateway=gw, interface=1))
        res.routes.append(Route("0.0.0.0/0" if v4 else "::/0", gw))
    return res
