"""Test hooks (used by tests/e2e only; inert unless the variable is set in the plugin's env).

  XDPCNI_TEST_KILL_AT=<step>   SIGKILL ourselves right after ADD step <step> completed: proves
                               DEL/GC clean up whatever a crashed ADD left behind.
  XDPCNI_TEST_FAIL_AT=<step>   raise an error after <step>: proves ADD's rollback undoes it all.

Steps of ADD, in order: datapath, record, ipam, veth, pod-side, host-side, programs, maps, result.
"""

from __future__ import annotations

import os
import signal

from .errors import INTERNAL, CniError

KILL_ENV = "XDPCNI_TEST_KILL_AT"
FAIL_ENV = "XDPCNI_TEST_FAIL_AT"
ADD_STEPS = ("datapath", "record", "ipam", "veth", "pod-side", "host-side", "programs", "maps", "result")


def step(name: str) -> None:
    if os.environ.get(KILL_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get(FAIL_ENV) == name:
        raise CniError(INTERNAL, f"test hook: injected failure after step {name!r}")
