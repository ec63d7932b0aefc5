"""GC (spec 1.1.0): tear down every attachment of this network that the runtime no longer
lists in cni.dev/valid-attachments: records (complete or left by a crashed ADD), built-in
leases and node-wide address claims without a valid owner, and endpoint map entries whose veth
is gone.

State that cannot be read (a corrupt record, a lease whose owner line cannot be parsed) is
reported on stderr and left alone: nothing is freed on a guess. A lease whose owner still has a
record file (readable or not) is freed only with that attachment's teardown.
"""

from __future__ import annotations

from pyroute2 import IPRoute

from datapath.endpoints import EndpointTable

from .. import node
from ..env import CniEnv
from ..errors import INVALID_NETCONF, CniError
from ..ipam import builtin
from ..netconf import NetConf
from .common import attachment_locked, claim_store, lease_store, record_store, teardown_locked, warn


def run(env: CniEnv, conf: NetConf) -> dict:
    if conf.valid_attachments is None:
        raise CniError(INVALID_NETCONF, 'GC needs "cni.dev/valid-attachments" in the network config')
    valid = set(conf.valid_attachments)
    removed = []
    records = record_store(conf)
    readable, unreadable = records.all()
    for bad in unreadable:
        warn(f"GC: {bad.msg}: left alone ({bad.details})")
    for rec in readable:
        if (rec.container_id, rec.ifname) not in valid:
            teardown_locked(conf, env, rec.container_id, rec.ifname)  # in the agent: as DEL's
            removed.append(rec.container_id)
    # Leases whose owner has no record (e.g. a record removed by hand): release them too.
    store = lease_store(conf)
    leases = store.leases()
    for path in store.unreadable():
        warn(f"GC: lease {path} has an owner that cannot be read: left alone, inspect it")
    owners = {owner for owner in leases.values() if owner is not None}
    for owner in owners - valid:  # one release per owner, all its addresses
        with attachment_locked(conf, *owner):
            if records.exists(*owner):
                warn(f"GC: lease of {owner[0]}/{owner[1]} kept: its record exists but cannot be used")
                continue
            builtin.release(store, *owner)
        removed.append(owner[0])
    claims = claim_store(conf)
    for ip, owner in claims.all().items():
        if owner is False or owner[0] != conf.name or (owner[1], owner[2]) in valid:
            continue
        if not records.exists(owner[1], owner[2]) and ip not in leases:
            claims.release([ip], owner)
    _sweep_stale_endpoints(conf.root)
    return {"removed": sorted(set(removed))}


def _sweep_stale_endpoints(root: str) -> None:
    """Map entries whose host veth no longer exists can only be leftovers."""
    if not node.is_loaded(root):
        return
    with IPRoute() as ipr, EndpointTable(root) as table:
        present = {link["index"] for link in ipr.get_links()}
        for ep in table.list():
            if ep.ifindex not in present:
                table.remove(ep.ifindex, ep.ips)
