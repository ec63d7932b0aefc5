"""flock(2) with a deadline: the kernel drops the lock when its holder dies (even by SIGKILL),
so a crashed plugin never wedges the node; a holder that is merely slow yields code 11."""

from __future__ import annotations

import errno
import fcntl
import os
import time
from contextlib import contextmanager

from .errors import TRY_AGAIN_LATER, CniError


@contextmanager
def flocked(path: str, timeout: float = 60.0, what: str = "lock"):
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
            if time.monotonic() >= deadline:
                raise CniError(
                    TRY_AGAIN_LATER, f"timed out after {timeout:.0f}s waiting for the {what}", path
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def write_atomic(path: str, data: str, exclusive: bool = False) -> None:
    """Write via a temporary file so a reader (or a crash) never sees half a file.

    exclusive=True fails with FileExistsError when `path` exists (link(2) never overwrites).
    """
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
            tmp = ""
    finally:
        if tmp:
            os.unlink(tmp)
