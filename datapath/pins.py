"""Where the datapath lives in bpffs: one root per node (configurable so simulated nodes coexist)."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass

DEFAULT_ROOT = "/sys/fs/bpf/xdpcni"
RUN_DIR = "/run/xdpcni"  # node state next to the pins (bpffs holds only BPF objects)
LOCK_DIR = os.path.join(RUN_DIR, "locks")
BPFFS_MAGIC = 0xCAFE4A11

PROGRAMS = ("xdp_nic", "tc_nic", "tc_pod", "xdp_pod")
MAPS = (
    "endpoints",
    "ifaces",
    "node_cfg",
    "counters",
    "tx_ports",
    "monitor_cfg",
    "monitor_seq",
    "monitor_events",
    "ep_slots",
)
_PROGRAM_SET, _MAP_SET = frozenset(PROGRAMS), frozenset(MAPS)


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
        """The pin root as one file name, for state and lock files in /run: readable, and with a
        digest of the exact path so /a/b/c and /a/b_c never share a state or lock file."""
        digest = hashlib.sha256(os.path.normpath(self.root).encode()).hexdigest()[:12]
        return f"{self.root.strip('/').replace('/', '_')}-{digest}"

    @property
    def claims_dir(self) -> str:
        """The CNI's node-wide address claims (cni/claims.py); removed, when empty, by unload."""
        return os.path.join(RUN_DIR, self.key + ".claims")

    @property
    def state_file(self) -> str:
        """Node state (NIC, mode) written by the loader."""
        return os.path.join(RUN_DIR, self.key + ".json")

    def is_loaded(self) -> bool:
        """Whether every program and map of the datapath is pinned here. Two directory reads,
        not a stat per pin: every CNI verb asks (~15 us against ~100 us for twelve stats)."""
        try:
            return _PROGRAM_SET.issubset(os.listdir(self.progs_dir)) and _MAP_SET.issubset(
                os.listdir(self.maps_dir)
            )
        except OSError:  # no such directory (not loaded), or not one
            return False


class UnsafePath(RuntimeError):
    """A directory the datapath would trust is not root's alone; str() says what to do."""


def check_owned(path: str, stop_at: str = "/sys/fs/bpf") -> None:
    """`path` and every existing directory between it and `stop_at` must belong to root and be
    writable by nobody else: otherwise a local user could have created it first (e.g. right after
    a reboot, on a world-writable bpffs) and could replace pins or lock files the datapath and the
    CNI plugin act on. Missing directories are fine (they will be created 0700). Raises UnsafePath."""
    path = os.path.normpath(path)
    stop_at = os.path.normpath(stop_at)
    cur = path
    while True:
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            st = None
        if st is not None:
            if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
                raise UnsafePath(f"{cur} is not a plain directory: remove it, then load again")
            if st.st_uid != 0 or st.st_mode & 0o022:
                raise UnsafePath(
                    f"{cur} is owned by uid {st.st_uid} with mode {stat.S_IMODE(st.st_mode):04o}: the "
                    "datapath only trusts root-owned directories nobody else can write. Remove it "
                    f"(rm -r {cur}) and mount bpffs with mode=0700 (as systemd does; `make setup` does)"
                )
        if cur == stop_at or cur == "/" or not cur.startswith(stop_at + "/"):
            return
        cur = os.path.dirname(cur)


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
    # mode=0700 as systemd mounts it: a world-writable bpffs lets any user squat pin roots.
    if libc.mount(b"bpf", mountpoint.encode(), b"bpf", 0, b"mode=0700") != 0:
        err = ct.get_errno()
        raise OSError(err, f"cannot mount bpffs on {mountpoint}: {os.strerror(err)} (run as root)")
    return True


class LoadError(RuntimeError):
    """The node datapath could not be loaded, or a pinned program it needs is not there."""


def open_program(root: str, name: str) -> int:
    """fd of a pinned program (the CNI attaches pod programs from these); the caller closes it.
    Here rather than in datapath/loader.py so that ADD does not import the loader (BCC glue,
    YAML, pyroute2's IPRoute) to attach one program. Raises LoadError when it is not pinned."""
    from . import libbpf

    path = PinLayout(root).prog(name)
    try:
        return libbpf.obj_get(path)
    except FileNotFoundError as exc:
        raise LoadError(f"program {path} is not pinned: load the node datapath first") from exc
