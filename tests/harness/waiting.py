"""Polling with a deadline, for tests that wait on the kernel, an agent or a container."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(
    cond: Callable[[], object],
    timeout: float = 30.0,
    what: str = "condition",
    interval: float = 0.05,
    log: Callable[[], str] = lambda: "",
):
    """`cond()`'s first truthy value; AssertionError naming `what` (and `log()`) after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{log()}".rstrip())


def wait_stable(read: Callable[[], object], quiet_for: float, limit: float, interval: float = 0.1):
    """`read()`'s value once it has not changed for `quiet_for` s (or its last value after
    `limit` s): for counters that background housekeeping (MLD, RS, DAD) still moves."""
    end = time.monotonic() + limit
    last, since = read(), time.monotonic()
    while time.monotonic() < end:
        time.sleep(interval)
        cur = read()
        if cur != last:
            last, since = cur, time.monotonic()
        elif time.monotonic() - since >= quiet_for:
            break
    return last
