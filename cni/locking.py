"""The CNI's locks (datapath/locks.py: flock with a deadline) and atomic file writes.

Every lock a verb takes waits at most the network config's `lockTimeout` (default
datapath.locks.DEFAULT_TIMEOUT) and then fails with code 11 naming the holder.
"""

from __future__ import annotations

import errno
import os
import threading
from contextlib import contextmanager, suppress

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
    """Write so a reader (or a crash) never sees half a file; a failed write (full disk) leaves
    nothing behind and raises code 5.

    A new file's content goes into an unnamed file (O_TMPFILE, from the spare pool when the
    process keeps one: keep_spares) that is then given its name with linkat(2): one directory
    operation, and a crash leaves nothing behind (the kernel frees an unnamed file with its last
    fd). exclusive=True fails with FileExistsError when `path` exists (linkat never overwrites);
    otherwise an existing `path` is replaced by naming that same unnamed file with a temporary
    name and renaming it over `path` (the rare case: a record rewritten with a delegated IPAM's
    addresses, a DEL's note; the data is written once). A filesystem without O_TMPFILE gets a
    named temporary and rename(2). A crash can leave such a temporary, which the readers skip
    (its name is none they take for theirs) and the IPAM lock holder sweeps from its directory
    when it lists it.

    No fsync unless `durable`: a killed process (SIGKILL at any step, tests/e2e/test_cni_crash.py)
    loses nothing that write() handed to the page cache, and the state that matters survives a
    reboot only partly anyway (pods, veths and pins are gone then); the verbs' hot path pays no
    disk flush.
    """
    raw = data.encode()
    try:
        if _link_unnamed(path, raw, durable, exclusive):
            return
    except FileExistsError:
        if exclusive:
            raise
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise write_failed(path, exc) from exc
    tmp = _temporary(path)
    try:
        try:
            with open(tmp, "wb") as fh:
                fh.write(raw)
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


# Unnamed files made ahead of need, by directory (keep_spares): making one is most of what
# creating a file costs (inode allocation: ~0.1-0.5 ms on this machine's ext4, more under load),
# so a long-running process (the node agent) makes them after it answered a verb, and the next
# verb's write only fills one in and names it.
SPARES_PER_DIR = 4
_SPARES: dict[str, list[int]] = {}
_SPARES_LOCK = threading.Lock()
_KEEP_SPARES = False
_ROOT_FD: int | None = None
_NO_TMPFILE = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL)


def keep_spares(on: bool = True) -> None:
    """Keep a few unnamed files ready in each directory write_atomic wrote to (refill_spares);
    for long-running processes. Off: every write makes its unnamed file when it needs it."""
    global _KEEP_SPARES
    _KEEP_SPARES = on
    if not on:
        with _SPARES_LOCK:
            fds = [fd for fds in _SPARES.values() for fd in fds]
            _SPARES.clear()
        for fd in fds:
            os.close(fd)


def refill_spares() -> None:
    """Top up the spare unnamed files of every directory written to since (errors ignored: a
    write makes its own when there is none)."""
    if not _KEEP_SPARES:
        return
    with _SPARES_LOCK:
        wanted = [(d, SPARES_PER_DIR - len(fds)) for d, fds in _SPARES.items() if len(fds) < SPARES_PER_DIR]
    for d, n in wanted:
        for _ in range(n):
            try:
                fd = os.open(d, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                if exc.errno == errno.ENOENT:  # the directory is gone (a removed network): forget it
                    with _SPARES_LOCK:
                        gone = _SPARES.pop(d, [])
                    for old in gone:
                        os.close(old)
                break
            with _SPARES_LOCK:
                keep = _KEEP_SPARES and len(_SPARES.setdefault(d, [])) < SPARES_PER_DIR
                if keep:
                    _SPARES[d].append(fd)
            if not keep:  # turned off meanwhile, or another refill got there first
                os.close(fd)


def _unnamed(directory: str) -> int:
    if _KEEP_SPARES:
        with _SPARES_LOCK:
            fds = _SPARES.setdefault(directory, [])
            if fds:
                return fds.pop()
    return os.open(directory, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o644)


def _temporary(path: str) -> str:
    return f"{path}.tmp{os.getpid()}-{threading.get_native_id()}"


def _link_unnamed(path: str, raw: bytes, durable: bool, exclusive: bool = True) -> bool:
    """Write `raw` to an unnamed file in `path`'s directory and name it `path` (not `exclusive`:
    an existing `path` is replaced, through a temporary name and rename(2)). False when that
    cannot be done here (no O_TMPFILE, or a link error other than a full disk or quota: `path`
    not made, use a named temporary); FileExistsError when `path` exists and `exclusive`,
    FileNotFoundError when its directory does not exist."""
    global _ROOT_FD
    try:
        fd = _unnamed(os.path.dirname(path) or ".")
    except OSError as exc:
        if exc.errno in _NO_TMPFILE:
            return False
        raise
    try:
        view = memoryview(raw)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
        if _ROOT_FD is None:
            _ROOT_FD = os.open("/", os.O_PATH | os.O_CLOEXEC)
        # linkat(AT_SYMLINK_FOLLOW) of /proc/self/fd/N: how an unnamed file gets a name without
        # CAP_DAC_READ_SEARCH (AT_EMPTY_PATH needs it). Python calls plain link(2) unless a dir
        # fd is given, and link(2) would not follow the /proc symlink.
        source = f"/proc/self/fd/{fd}"
        try:
            try:
                os.link(source, path, src_dir_fd=_ROOT_FD, follow_symlinks=True)
            except FileExistsError:
                if exclusive:
                    raise
                tmp = _temporary(path)
                os.link(source, tmp, src_dir_fd=_ROOT_FD, follow_symlinks=True)
                try:
                    os.replace(tmp, path)
                except BaseException:
                    with suppress(FileNotFoundError):
                        os.unlink(tmp)
                    raise
        except FileExistsError:
            raise
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise
            # Anything else (a spare of a directory since mounted over: EXDEV; no usable /proc;
            # a filesystem that refuses the link): the named temporary's way, which also tells a
            # missing directory (FileNotFoundError) from the rest.
            return False
        return True
    finally:
        os.close(fd)


def write_failed(path: str, exc: OSError) -> CniError:
    """Code 5 for a state file that could not be written, saying what to do."""
    return CniError(
        IO_FAILURE,
        f"cannot write {path}: {exc.strerror or exc}",
        "free space on that filesystem (or fix its permissions), then retry",
    )
