"""The clang build of bpf/ (objects with BTF and CO-RE relocations, loaded by datapath/objload.py).

`make -C bpf` does the work and decides what is stale; this module runs it under a lock (simulated
nodes load concurrently) and says whether usable objects exist. Without clang or libbpf's headers
the loader falls back to BCC, which compiles at load time but cannot run the conntrack gate.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

BPF_DIR = Path(os.environ.get("XDPCNI_BPF_DIR", Path(__file__).resolve().parent.parent / "bpf"))
OBJ_DIR = Path(os.environ.get("XDPCNI_OBJ_DIR", BPF_DIR / "build"))
PROGRAMS = ("xdp_nic", "tc_nic", "tc_pod", "xdp_pod")
HELPERS_H = "/usr/include/bpf/bpf_helpers.h"  # libbpf-dev
BUILD_TIMEOUT = 180.0


class BuildError(RuntimeError):
    pass


def can_build() -> str | None:
    """None when clang objects can be built here, else what is missing."""
    if shutil.which("clang") is None:
        return "clang is not installed"
    if not os.path.exists(HELPERS_H):
        return f"{HELPERS_H} is missing (apt-get install libbpf-dev)"
    return None


def objects() -> dict[str, Path]:
    return {name: OBJ_DIR / f"{name}.o" for name in PROGRAMS}


def ensure_objects() -> dict[str, Path] | None:
    """Build (or refresh) the objects; returns them, or None when this machine cannot build them
    and none exist. Raises BuildError when clang fails: a compile error is a bug, not a fallback."""
    missing = can_build()
    if missing is None:
        OBJ_DIR.mkdir(parents=True, exist_ok=True)
        with open(OBJ_DIR / ".build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            proc = subprocess.run(
                ["make", "-s", "-C", str(BPF_DIR), f"OUT={OBJ_DIR}"],
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT,
                check=False,
            )
        if proc.returncode != 0:
            raise BuildError(f"clang build of {BPF_DIR} failed:\n{(proc.stderr or proc.stdout)[-3000:]}")
    objs = objects()
    return objs if all(p.exists() for p in objs.values()) else None
