"""Where the datapath lives in bpffs: one root per node (configurable so simulated nodes coexist)."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_ROOT = "/sys/fs/bpf/xdpcni"
RUN_DIR = "/run/xdpcni"  # node state next to the pins (bpffs holds only BPF objects)
LOCK_DIR = os.path.join(RUN_DIR, "locks")
BPFFS_MAGIC = 0xCAFE4A11

PROGRAMS = ("xdp_nic", "tc_nic", "tc_pod", "xdp_pod")
MAPS = ("endpoints", "ifaces", "node_cfg", "counters", "tx_ports")


@dataclass(frozen=True)
class PinLayout:
    root: str = DEFAULT_ROOT

    @property
    def maps_dir(self) -> str:
        return os.path.join(self.root, "maps")

    @property
    def progs_dir(self) -> str:
        return os.path.join(self.root, "progs")

    def map(self, name: str) -> str:
        return os.path.join(self.maps_dir, name)

    def prog(self, name: str) -> str:
        return os.path.join(self.progs_dir, name)

    @property
    def key(self) -> str:
        """The pin root as one file name, for state and lock files in /run."""
        return self.root.strip("/").replace("/", "_")

    @property
    def state_file(self) -> str:
        """Node state (NIC, mode) written by the loader."""
        return os.path.join(RUN_DIR, self.key + ".json")

    def lock_file(self, suffix: str = "") -> str:
        """Lock file for this datapath instance: "" for the endpoint maps, ".load" for loading."""
        return os.path.join(LOCK_DIR, f"{self.key}{suffix}.lock")

    def is_loaded(self) -> bool:
        return all(os.path.exists(self.prog(p)) for p in PROGRAMS) and all(
            os.path.exists(self.map(m)) for m in MAPS
        )


def is_bpffs(path: str) -> bool:
    try:
        return os.statvfs(path).f_fsid is not None and _fs_magic(path) == BPFFS_MAGIC
    except OSError:
        return False


def _fs_magic(path: str) -> int:
    import ctypes as ct

    class StatFs(ct.Structure):
        _fields_ = [("f_type", ct.c_long), ("_rest", ct.c_long * 15)]

    libc = ct.CDLL(None, use_errno=True)
    buf = StatFs()
    if libc.statfs(path.encode(), ct.byref(buf)) != 0:
        raise OSError(ct.get_errno(), f"statfs({path})")
    return buf.f_type & 0xFFFFFFFF


def ensure_bpffs(mountpoint: str = "/sys/fs/bpf") -> bool:
    """Mount bpffs if needed; returns True when this call mounted it."""
    if os.path.isdir(mountpoint) and _fs_magic(mountpoint) == BPFFS_MAGIC:
        return False
    import ctypes as ct

    libc = ct.CDLL(None, use_errno=True)
    # No library wraps mount(2) for bpffs; the raw call saves a dependency on util-linux's mount.
    if libc.mount(b"bpf", mountpoint.encode(), b"bpf", 0, None) != 0:
        err = ct.get_errno()
        raise OSError(err, f"cannot mount bpffs on {mountpoint}: {os.strerror(err)} (run as root)")
    return True
