"""What DEL and GC share: undoing one attachment, each step tolerant of "already gone"."""

from __future__ import annotations

import os

from pyroute2 import IPRoute

from datapath.endpoints import EndpointTable
from datapath.maps import DatapathNotLoaded

from .. import node, plumbing
from ..env import CniEnv
from ..ipam import builtin, delegate
from ..ipam.store import LeaseStore
from ..netconf import NetConf
from ..records import Record, RecordStore


def network_dir(conf: NetConf) -> str:
    return os.path.join(conf.data_dir, conf.name)


def lease_store(conf: NetConf) -> LeaseStore:
    return LeaseStore(os.path.join(network_dir(conf), "ipam"))


def record_store(conf: NetConf) -> RecordStore:
    return RecordStore(network_dir(conf))


def forget_endpoint(root: str, host_ifindex: int | None, ips: list[str]) -> None:
    """Remove the endpoint's map entries (by veth and by address); a missing datapath is fine."""
    if not node.is_loaded(root):
        return
    try:
        with EndpointTable(root) as table:
            if host_ifindex is not None:
                table.remove(host_ifindex, ips)
            else:
                table.remove_ips(ips)
    except DatapathNotLoaded:
        pass


def release_ipam(conf: NetConf, env: CniEnv, container_id: str, ifname: str, ipam_type: str) -> list[str]:
    """Give the addresses back: built-in leases, or the delegated plugin's DEL."""
    kind = ipam_type or (conf.ipam.type if conf.ipam else "")
    if not kind or kind == "xdpcni":
        return builtin.release(lease_store(conf), container_id, ifname)
    deleg_env = {
        **env.raw,
        "CNI_CONTAINERID": container_id,
        "CNI_IFNAME": ifname,
        "CNI_NETNS": env.netns if container_id == env.container_id else "",
    }
    ipam_raw = conf.ipam.raw if conf.ipam and conf.ipam.type == kind else {"type": kind}
    delegate.call(kind, "DEL", {**conf.raw, "ipam": ipam_raw}, deleg_env, env.path)
    return []


def teardown(conf: NetConf, env: CniEnv, container_id: str, ifname: str) -> None:
    """Undo an attachment in reverse ADD order: map entries, veth (takes routes/neighbours/TC
    filters and the pod end with it), addresses, record."""
    records = record_store(conf)
    rec = records.get(container_id, ifname) or Record(container_id, ifname)
    ips = sorted(set(rec.ips) | set(lease_store(conf).owned_by(container_id, ifname)))
    with IPRoute() as ipr:
        host_ifindex = plumbing.find_host_link(ipr, rec.host_ifname)
        forget_endpoint(conf.root, host_ifindex, ips)
        plumbing.delete_host_link(ipr, rec.host_ifname)  # the peer goes too, wherever it is
    release_ipam(conf, env, container_id, ifname, rec.ipam_type)
    records.remove(container_id, ifname)
