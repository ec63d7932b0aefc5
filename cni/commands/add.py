"""ADD: datapath loaded -> record -> addresses -> veth -> pod side -> host side -> programs ->
map entries -> result. Each step registers its undo on an ExitStack; any failure unwinds them
all, so a failed ADD leaves the node exactly as it found it. A SIGKILL cannot unwind, which is
why the record is written first: DEL or GC finds everything from it.
"""

from __future__ import annotations

import os
from contextlib import ExitStack

from datapath import abi
from datapath import pod as pod_dp
from datapath.endpoints import Endpoint, EndpointTable, EndpointTableFull
from datapath.rtnl import Rtnl

from .. import node, plumbing, testhook
from ..claims import describe
from ..env import CniEnv
from ..errors import (
    ADDRESS_IN_USE,
    ALREADY_EXISTS,
    DATAPATH,
    INVALID_NETCONF,
    PLUMBING,
    UNSUPPORTED_FIELD,
    CniError,
)
from ..ipam import builtin, delegate
from ..netconf import NetConf
from ..pending import PendingDeletes
from ..records import Record
from ..result import Interface, IPConfig, Result, Route
from . import common
from .common import attachment_locked, claim_store, forget_endpoint, lease_store, record_store, release_ipam


def _allocate(conf: NetConf, env: CniEnv, undo: ExitStack, table: EndpointTable | None) -> list[str]:
    """Addresses from the IPAM, each claimed node-wide (cni/claims.py) before anything uses it
    (and refused while `table`, the loaded datapath's, has a live endpoint on it). Registers the
    undo of every allocation and claim that succeeded, and only of those."""
    claims = claim_store(conf)
    owner = (conf.name, env.container_id, env.ifname)
    claimed: list[str] = []
    undo.callback(claims.release, claimed, owner)

    def claim(ip: str) -> str | None:
        """None when `ip` is now ours; else who has it."""
        if table is not None and table.endpoints.get(abi.EndpointKey.for_ip(ip)) is not None:
            return "a live endpoint of this node's datapath"
        current = claims.claim(ip, owner)
        if current is None:
            claimed.append(ip)
            return None
        return describe(current)

    if conf.ipam.builtin:
        ips = builtin.allocate(
            lease_store(conf),
            conf.ipam.range_sets,
            env.container_id,
            env.ifname,
            claim=lambda ip: claim(ip) is None,
            check_owner=False,  # no record (checked under the attachment lock): no leases
        )
        undo.callback(release_ipam, conf, env, env.container_id, env.ifname, conf.ipam.type)
        return ips
    result = delegate.call(conf.ipam.type, "ADD", {**conf.raw, "ipam": conf.ipam.raw}, env.raw, env.path)
    undo.callback(release_ipam, conf, env, env.container_id, env.ifname, conf.ipam.type)
    ips = delegate.addresses(result)
    for ip in ips:
        holder = claim(ip)
        if holder is not None:
            raise CniError(
                ADDRESS_IN_USE,
                f"IPAM plugin {conf.ipam.type} gave {ip}, which is in use on this node by {holder}",
                "an address bound to a live pod is never given twice: make the networks' ranges disjoint",
            )
    return ips


def _delete_created(created: list[int]) -> None:
    """Rollback: delete the veth this ADD created, by ifindex (never a same-named other link)."""
    if created:
        with Rtnl() as nl:
            plumbing.delete_link_index(nl, created[0])


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


def _check_families(ips: list[str]) -> None:
    versions = [abi.parse_ip(ip).version for ip in ips]
    if len(versions) != len(set(versions)):
        raise CniError(INVALID_NETCONF, f"IPAM gave {ips}: at most one IPv4 and one IPv6 address per pod")


def run(env: CniEnv, conf: NetConf) -> dict:
    if common.DEFER is None:  # in-process: a dead agent may still owe this name's veth deletion
        PendingDeletes(conf.root).finish_orphans()
    with attachment_locked(conf, env.container_id, env.ifname):
        return _add(env, conf)


def _add(env: CniEnv, conf: NetConf) -> dict:
    flags = stack_flags(conf)
    node_cfg = conf.node()
    root = conf.root
    node.ensure_loaded(node_cfg, root)
    node.sync_netfilter(root)
    testhook.step("datapath")

    records = record_store(conf)
    if records.get(env.container_id, env.ifname) is not None:
        raise CniError(ALREADY_EXISTS, f"{env.container_id}/{env.ifname} is already attached: DEL it first")
    rec = Record(
        env.container_id,
        env.ifname,
        network=conf.name,
        netns=env.netns,
        ipam_type=conf.ipam.type,
        pod_namespace=env.args.get("K8S_POD_NAMESPACE", ""),
        pod_name=env.args.get("K8S_POD_NAME", ""),
        pod_uid=env.args.get("K8S_POD_UID", ""),
    )

    with ExitStack() as undo:
        records.put(rec)
        undo.callback(records.remove, env.container_id, env.ifname)
        testhook.step("record")

        # One handle on the endpoint maps for the whole ADD (closed last: the stack unwinds it
        # after the rollbacks that use it).
        endpoints = EndpointTable(root)
        undo.callback(endpoints.close)
        ips = _allocate(conf, env, undo, endpoints)
        _check_families(ips)
        rec.ips = ips
        if not conf.ipam.builtin:
            # A delegated IPAM's addresses are known only from here; the built-in one's leases
            # name their owner, which is how DEL/GC find them after a crash (no write needed).
            records.put(rec)
        testhook.step("ipam")

        nsfd, own_fd = env.netns_fd, env.netns_fd is None  # the namespace the verb checked, if any
        if own_fd:
            try:
                nsfd = plumbing.open_netns(env.netns)
            except plumbing.PlumbingError as exc:
                raise CniError(PLUMBING, str(exc)) from exc
        try:
            with Rtnl() as nl, Rtnl(nsfd) as pod_nl:
                created: list[int] = []
                undo.callback(_delete_created, created)
                try:
                    link = plumbing.create_pod_link(
                        nl,
                        pod_nl,
                        nsfd,
                        env.netns,
                        rec.host_ifname,
                        env.ifname,
                        conf.pod_mtu,
                        mark=plumbing.owner_mark(conf.name, env.container_id, env.ifname, rec.pod),
                        created=created,
                    )
                except plumbing.PlumbingError as exc:
                    raise CniError(PLUMBING, str(exc)) from exc
                testhook.step("veth")

                plumbing.configure_pod(pod_nl, link, ips)
                testhook.step("pod-side")
                plumbing.configure_host(nl, link, ips, flush=False)  # sent with the TC attachment
                testhook.step("host-side")

                pod_dp.attach_pod_side_nl(pod_nl, link.pod_ifname)
                pod_dp.attach_host_side_nl(nl, root, link.host_ifindex)
                testhook.step("programs")

                try:
                    undo.callback(forget_endpoint, root, link.host_ifindex, ips)
                    for ip in ips:  # claims make this impossible; never overwrite another pod's entry
                        info = endpoints.endpoints.get(abi.EndpointKey.for_ip(ip))
                        if info is not None and info.ifindex != link.host_ifindex:
                            raise CniError(
                                ADDRESS_IN_USE, f"{ip} steers to another pod (ifindex {info.ifindex})"
                            )
                    endpoints.add(Endpoint(link.host_ifindex, link.pod_mac, link.host_mac, ips, flags=flags))
                except EndpointTableFull as exc:
                    raise CniError(DATAPATH, str(exc)) from exc
                testhook.step("maps")
        finally:
            if own_fd:
                os.close(nsfd)

        rec.complete = True
        records.put(rec, in_place=True)
        result = _result(conf, env, link, ips)
        testhook.step("result")
        undo.pop_all()  # success: keep everything
        endpoints.close()
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
        v4 = abi.parse_ip(ip).version == 4
        gw = plumbing.GATEWAY_V4 if v4 else plumbing.GATEWAY_V6
        res.ips.append(IPConfig(f"{ip}/{32 if v4 else 128}", gateway=gw, interface=1))
        res.routes.append(Route("0.0.0.0/0" if v4 else "::/0", gw))
    return res
