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


# Read once, at import: they are set in the environment a plugin process (or the node agent)
# starts with, and each os.environ lookup costs a few microseconds at every step of every ADD.
_KILL_AT = os.environ.get(KILL_ENV)
_FAIL_AT = os.environ.get(FAIL_ENV)


def step(name: str) -> None:
    if name == _KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)
    if name == _FAIL_AT:
        raise CniError(INTERNAL, f"test hook: injected failure after step {name!r}")
