"""DEL: idempotent. Missing netns, link, lease, map entry or record are all success, because a
runtime retries DEL until it succeeds and may call it for an ADD that never finished."""

from __future__ import annotations

from contextlib import ExitStack

from ..env import CniEnv
from ..netconf import NetConf
from ..pending import PendingDeletes
from . import common
from .common import attachment_locked, teardown


def run(env: CniEnv, conf: NetConf) -> None:
    """In the node agent (common.DEFER set) DEL answers once the map entries, addresses, claims
    and record are gone; the veth's deletion follows on an agent thread that keeps the
    attachment's lock until it is done (an ADD or DEL of the same attachment waits for it).
    An in-process DEL first finishes deletions a dead agent still owed (cni/pending.py; the
    agent does that when it starts)."""
    defer = common.DEFER
    if defer is None:  # an agent sweeps when it starts; its own notes are its to finish
        PendingDeletes(conf.root).finish_orphans()
    with ExitStack() as held:
        held.enter_context(attachment_locked(conf, env.container_id, env.ifname))
        finish = teardown(conf, env, env.container_id, env.ifname, deferrable=defer is not None)
        if finish is not None and defer is not None:
            defer(finish, held.pop_all())
