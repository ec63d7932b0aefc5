"""STATUS (spec 1.1.0): exit 0 when ADD would succeed now; otherwise code 50 with the reason.

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
                NOT_AVAILABLE, f"datapath not loaded under {root} and no NIC configured to load it"
            )
        with IPRoute() as ipr:
            if not ipr.link_lookup(ifname=node_cfg.nic):
                raise CniError(NOT_AVAILABLE, f"datapath not loaded and NIC {node_cfg.nic} is missing")
        if not os.path.isdir("/sys/fs/bpf"):
            raise CniError(NOT_AVAILABLE, "bpffs is not available on this node")
    if conf.ipam is not None and conf.ipam.builtin:
        free = builtin.free_addresses(lease_store(conf), conf.ipam.range_sets)
        for idx, n in enumerate(free):
            if n <= 0:
                raise CniError(NOT_AVAILABLE, f"IPAM range set {idx} has no free address left")
