"""Enter a network namespace (net only) for the duration of a block.

Only the net namespace changes, never the mount namespace: `ip netns exec` remounts /sys, which
hides /sys/fs/bpf pins. pyroute2's pushns() would create a missing namespace (O_CREAT), so this
uses setns() with flags=0: a missing namespace is an error, not a new empty one.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

from pyroute2 import netns as pr_netns


def ns_path(name: str) -> str:
    return name if name.startswith("/") else os.path.join("/var/run/netns", name)


@contextmanager
def entered(name: str | None):
    if not name:
        yield
        return
    path = ns_path(name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"network namespace {name!r} not found ({path})")
    orig = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        pr_netns.setns(path, flags=0)
        try:
            yield
        finally:
            pr_netns.setns(orig, flags=0)
    finally:
        os.close(orig)
