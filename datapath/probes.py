"""Feature probes: each failure says what is missing and what to install or run."""

from __future__ import annotations

import os
import platform


class ProbeError(RuntimeError):
    """A missing prerequisite; str() is the message an operator should read."""


MIN_KERNEL = (5, 10)  # bpf_redirect_peer
LIVE_FRAMES_KERNEL = (5, 18)  # BPF_F_TEST_XDP_LIVE_FRAMES


def kernel_version() -> tuple[int, int]:
    major, minor = platform.release().split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def require_root() -> None:
    if os.geteuid() != 0:
        raise ProbeError("xdpcni needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN): run it with sudo")


def require_kernel(minimum: tuple[int, int] = MIN_KERNEL, what: str = "bpf_redirect_peer") -> None:
    have = kernel_version()
    if have < minimum:
        raise ProbeError(f"kernel {platform.release()} is too old: {what} needs >= {minimum[0]}.{minimum[1]}")


def require_bcc():
    try:
        import bcc  # noqa: F401  (Debian's python3-bpfcc; the PyPI "bcc" is unrelated)
    except ImportError as exc:
        raise ProbeError(
            "BCC is not importable: apt-get install python3-bpfcc, and use a venv created with "
            "`/usr/bin/python3 -m venv --system-site-packages` (or run `make setup`)"
        ) from exc
    return bcc


def require_kernel_headers() -> None:
    build = f"/lib/modules/{platform.release()}/build/include"
    if not os.path.isdir(build):
        raise ProbeError(
            f"kernel headers missing ({build}): apt-get install linux-headers-amd64 and link "
            f"/lib/modules/{platform.release()} to the installed headers' /lib/modules dir "
            "(`make setup` does both)"
        )


def require_bpffs(mountpoint: str = "/sys/fs/bpf") -> None:
    from .pins import ensure_bpffs

    try:
        ensure_bpffs(mountpoint)
    except OSError as exc:
        raise ProbeError(f"{exc}; or mount it yourself: mount -t bpf bpf {mountpoint}") from exc


def require_loader() -> None:
    """What loading the node datapath needs with either toolchain (BCC's own needs, kernel headers
    and the bcc module, are checked when it is the one used: datapath/loader.compile_programs)."""
    require_root()
    require_kernel()
    require_bpffs()
