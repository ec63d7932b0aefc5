"""STATUS (spec 1.1.0): exit 0 when the plugin can serve ADDs; otherwise code 50 with the reason.

Code 50 only when *no* ADD can succeed: the datapath is not loaded and cannot be (no NIC
configured, NIC missing, no bpffs), or it is loaded but its NIC is gone. A full address range is
not that: containerd polls STATUS and marks the node's network NotReady on failure, which
taints the node and evicts every pod. A full range fails only the ADD that needs an address
(code 103) and shows in `xdpcnictl status` (address_use() below).

A datapath that is not loaded yet is fine when ADD can load it (a NIC is configured and
present), otherwise a fresh node would never report ready and never get its first pod.
"""

from __future__ import annotations

import os

from pyroute2 import IPRoute

from .. import node
from ..env import CniEnv
from ..errors import NOT_AVAILABLE, CniError
from ..ipam import builtin
from ..netconf import NetConf
from .common import lease_store


def run(env: CniEnv, conf: NetConf) -> None:
    root = conf.root
    if not node.is_loaded(root):
        node_cfg = conf.node()
        if node_cfg is None:
            raise CniError(
                NOT_AVAILABLE,
                f"datapath not loaded under {root} and no NIC configured to load it",
                'set "nic" (or "nodeConfig") in the network config, or run `xdpcnictl load`',
            )
        with IPRoute() as ipr:
            if not ipr.link_lookup(ifname=node_cfg.nic):
                raise CniError(NOT_AVAILABLE, f"datapath not loaded and NIC {node_cfg.nic} is missing")
        if not os.path.isdir("/sys/fs/bpf"):
            raise CniError(NOT_AVAILABLE, "bpffs is not available on this node")
        return
    from datapath.loader import NodeState

    state = NodeState.read(root)
    if state is not None:
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=state.nic)
        if not found or found[0] != state.nic_ifindex:
            raise CniError(
                NOT_AVAILABLE,
                f"the datapath under {root} serves NIC {state.nic} (ifindex {state.nic_ifindex}), which is gone",
                "bring the NIC back, then `xdpcnictl load` again",
            )


def address_use(conf: NetConf) -> list[dict]:
    """Per range set: size, used, free (for operators and metrics; never a STATUS failure)."""
    if conf.ipam is None or not conf.ipam.builtin:
        return []
    free = builtin.free_addresses(lease_store(conf), conf.ipam.range_sets)
    return [
        {"range_set": i, "ranges": rs.to_json(), "size": rs.size, "free": f, "used": rs.size - f}
        for i, (rs, f) in enumerate(zip(conf.ipam.range_sets, free))
    ]
