"""The CNI's locks (datapath/locks.py: flock with a deadline) and atomic file writes.

Every lock a verb takes waits at most the network config's `lockTimeout` (default
datapath.locks.DEFAULT_TIMEOUT) and then fails with code 11 naming the holder.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager

from datapath import locks

from .errors import IO_FAILURE, TRY_AGAIN_LATER, CniError


def lock_error(exc: locks.LockTimeout) -> CniError:
    return CniError(TRY_AGAIN_LATER, str(exc), f"lock: {exc.path}; holder: {exc.holder}")


@contextmanager
def flocked(path: str, what: str = "lock", timeout: float | None = None, remove: bool = False, is_dir=False):
    try:
        with locks.flocked(path, what, timeout, remove=remove, is_dir=is_dir):
            yield
    except locks.LockTimeout as exc:
        raise lock_error(exc) from None


def write_atomic(path: str, data: str, exclusive: bool = False, durable: bool = False) -> None:
    """Write via a temporary file so a reader (or a crash) never sees half a file; a failed write
    (full disk) leaves no temporary behind and raises code 5.

    exclusive=True fails with FileExistsError when `path` exists (link(2) never overwrites).
    No fsync unless `durable`: a killed process (SIGKILL at any step, tests/e2e/test_cni_crash.py)
    loses nothing that write() handed to the page cache, and the state that matters survives a
    reboot only partly anyway (pods, veths and pins are gone then); the verbs' hot path pays no
    disk flush.
    """
    tmp = f"{path}.tmp{os.getpid()}-{threading.get_native_id()}"
    try:
        try:
            with open(tmp, "w") as fh:
                fh.write(data)
                if durable:
                    fh.flush()
                    os.fsync(fh.fileno())
            if exclusive:
                os.link(tmp, path)
            else:
                os.replace(tmp, path)
                tmp = ""
        finally:
            if tmp:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
    except (FileExistsError, FileNotFoundError):
        raise
    except OSError as exc:
        raise write_failed(path, exc) from exc


def write_failed(path: str, exc: OSError) -> CniError:
    """Code 5 for a state file that could not be written, saying what to do."""
    return CniError(
        IO_FAILURE,
        f"cannot write {path}: {exc.strerror or exc}",
        "free space on that filesystem (or fix its permissions), then retry",
    )
