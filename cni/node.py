"""The CNI's view of the node datapath: make sure it is loaded, then only use its pins.

The plugin never compiles BPF itself: when the datapath is missing on ADD it runs the loader
(`python -m datapath.loader`, the same code as `xdpcnictl load`, given the resolved NodeConfig as
JSON on stdin) once, under a node-wide lock, so fifty concurrent ADDs on a fresh node trigger
exactly one compile.
"""

from __future__ import annotations

import os
import sys

from datapath import locks
from datapath.config import NodeConfig
from datapath.pins import PinLayout

from .errors import DATAPATH, CniError
from .locking import flocked

LOAD_TIMEOUT = 120.0


# Pin roots whose `netfilter: auto` gate a long-running process (the node agent) re-decides every
# second already: verbs it serves for them skip the per-verb re-decision (a netlink dump).
WATCHED_ROOTS: set[str] = set()


def sync_netfilter(root: str) -> None:
    """netfilter: auto is re-decided by every verb too (not only by the agent): cheap when the
    setting is respect or bypass (one small file read), one netlink dump when it is auto."""
    if root in WATCHED_ROOTS:
        return
    from datapath.config import NodeState

    state = NodeState.read(root)
    if state is not None and state.netfilter == "auto":
        from datapath import netfilter

        netfilter.sync(root, "auto")


def is_loaded(root: str) -> bool:
    return PinLayout(root).is_loaded()


def ensure_loaded(node: NodeConfig | None, root: str) -> bool:
    """Load the datapath unless it is there. Returns True when this call loaded it."""
    if is_loaded(root):
        return False
    if node is None:
        raise CniError(
            DATAPATH,
            f"datapath not loaded under {root} and no NIC configured to load it",
            'set "nic" (or "nodeConfig") in the network config, or run `xdpcnictl load`',
        )
    # The lock is a flock on the pin root's parent directory in bpffs (loads of sibling roots
    # take turns; loads are rare): nothing is left in /run when the datapath is unloaded.
    parent = os.path.dirname(root.rstrip("/"))
    os.makedirs(parent, mode=0o700, exist_ok=True)
    timeout = locks.configured_timeout() or LOAD_TIMEOUT
    with flocked(parent, f"datapath load lock for {root}", timeout, is_dir=True):
        if is_loaded(root):  # another ADD loaded it while we waited
            return False
        import subprocess  # here only: ~2 ms (with locale) of every in-process verb otherwise

        cmd = [sys.executable, "-m", "datapath.loader"]
        try:
            proc = subprocess.run(
                cmd, input=node.to_json(), capture_output=True, text=True, timeout=LOAD_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise CniError(DATAPATH, f"loading the datapath timed out after {LOAD_TIMEOUT:.0f}s") from exc
        if proc.returncode != 0 or not is_loaded(root):
            raise CniError(
                DATAPATH, "loading the node datapath failed", (proc.stderr or proc.stdout).strip()[-2000:]
            )
        print(proc.stdout.strip(), file=sys.stderr)  # loader log: stderr, never the result stream
    return True
