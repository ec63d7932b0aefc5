"""DEL: idempotent. Missing netns, link, lease, map entry or record are all success, because a
runtime retries DEL until it succeeds and may call it for an ADD that never finished."""

from __future__ import annotations

from ..env import CniEnv
from ..netconf import NetConf
from .common import attachment_locked, teardown


def run(env: CniEnv, conf: NetConf) -> None:
    with attachment_locked(conf, env.container_id, env.ifname):
        teardown(conf, env, env.container_id, env.ifname)
