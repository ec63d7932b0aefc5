"""DEL: idempotent. Missing netns, link, lease, map entry or record are all success, because a
runtime retries DEL until it succeeds and may call it for an ADD that never finished."""

from __future__ import annotations

from ..env import CniEnv
from ..netconf import NetConf
from ..pending import PendingDeletes
from . import common
from .common import teardown_locked


def run(env: CniEnv, conf: NetConf) -> None:
    """In the node agent (common.DEFER set) DEL answers once the map entries, addresses, claims
    and record are gone; the veth's deletion follows on an agent thread that keeps the
    attachment's lock until it is done (an ADD or DEL of the same attachment waits for it).
    An in-process DEL first finishes deletions a dead agent still owed (cni/pending.py; the
    agent does that when it starts)."""
    if common.DEFER is None:  # an agent sweeps when it starts; its own notes are its to finish
        PendingDeletes(conf.root).finish_orphans()
    teardown_locked(conf, env, env.container_id, env.ifname)
