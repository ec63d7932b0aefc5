"""GC (spec 1.1.0): tear down every attachment of this network that the runtime no longer
lists in cni.dev/valid-attachments: records (complete or left by a crashed ADD), built-in
leases without a valid owner, and endpoint map entries whose veth is gone."""

from __future__ import annotations

from pyroute2 import IPRoute

from datapath.endpoints import EndpointTable

from .. import node
from ..env import CniEnv
from ..errors import INVALID_NETCONF, CniError
from ..ipam import builtin
from ..netconf import NetConf
from .common import lease_store, record_store, teardown


def run(env: CniEnv, conf: NetConf) -> dict:
    if conf.valid_attachments is None:
        raise CniError(INVALID_NETCONF, 'GC needs "cni.dev/valid-attachments" in the network config')
    valid = set(conf.valid_attachments)
    removed = []
    for rec in record_store(conf).all():
        if (rec.container_id, rec.ifname) not in valid:
            teardown(conf, env, rec.container_id, rec.ifname)
            removed.append(rec.container_id)
    # Leases whose owner has no record (e.g. a record removed by hand): release them too.
    store = lease_store(conf)
    for owner in set(store.leases().values()) - valid:  # one release per owner, all its addresses
        builtin.release(store, *owner)
        removed.append(owner[0])
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
