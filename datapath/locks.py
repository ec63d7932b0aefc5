"""flock(2) with a deadline, used by every lock of the datapath and the CNI.

- The kernel drops a flock when its holder dies (even by SIGKILL), so a crashed process never
  wedges the node; a holder that is merely slow (or stopped) makes waiters give up at the
  deadline with LockTimeout, which names the holder (pid and command line, from /proc/locks).
- flock locks belong to the open file description: two threads of one process (the node agent
  serves connections concurrently) exclude each other like two processes do.
- The lock target may be a directory (e.g. the pinned maps directory in bpffs): nothing is left
  behind when the directory goes away. A lock *file* can be removed by its holder
  (`remove=True`): waiters re-check after acquiring that the path still names the file they
  locked, so removal never lets two holders in at once.
- Deadlines: an explicit timeout wins; otherwise the one set for this thread/context with
  `deadline(seconds)` (the CNI sets the network config's `lockTimeout` for a verb's duration),
  otherwise DEFAULT_TIMEOUT.
"""

from __future__ import annotations

import contextvars
import errno
import fcntl
import os
import threading
import time
from contextlib import contextmanager

DEFAULT_TIMEOUT = 60.0
_TIMEOUT: contextvars.ContextVar[float | None] = contextvars.ContextVar("xdpcni_lock_timeout", default=None)


class LockTimeout(RuntimeError):
    def __init__(self, what: str, path: str, waited: float, holder: str):
        self.what, self.path, self.waited, self.holder = what, path, waited, holder
        super().__init__(
            f"timed out after {waited:.1f}s waiting for the {what} ({path}), held by {holder}: "
            "retry later; if the holder is stuck, stop it"
        )


def configured_timeout() -> float | None:
    """The deadline set with deadline() for this context, None when none was set."""
    return _TIMEOUT.get()


def current_timeout() -> float:
    val = _TIMEOUT.get()
    return DEFAULT_TIMEOUT if val is None else val


@contextmanager
def deadline(seconds: float | None):
    """Locks taken in this block (this thread / context) wait at most `seconds` by default."""
    token = _TIMEOUT.set(seconds)
    try:
        yield
    finally:
        _TIMEOUT.reset(token)


def holder_of(fd: int) -> str:
    """Who holds a flock on the file behind `fd`, from /proc/locks ("unknown" if not found)."""
    st = os.fstat(fd)
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return "an unknown process"
    for line in lines:
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 440 00:27:1 0 EOF" (blocked waiters are marked "->")
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == want:
            pid = parts[4]
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    cmd = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                cmd = "?"
            return f"pid {pid} ({cmd[:200]})"
    return "an unknown process (in another pid namespace, or it just let go)"


def _same_file(fd: int, path: str) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    fst = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)


@contextmanager
def flocked(
    path: str, what: str = "lock", timeout: float | None = None, remove: bool = False, is_dir: bool = False
):
    """Hold an exclusive flock on `path`: a file (created if missing) or, with is_dir=True, an
    existing directory (FileNotFoundError if it is missing: never created).

    Raises LockTimeout at the deadline. With remove=True the lock file is unlinked on exit."""
    timeout = current_timeout() if timeout is None else timeout
    start = time.monotonic()
    with _threads_in_turn(path, what, timeout), _flocked(path, what, timeout, start, remove, is_dir):
        yield


# Threads of one process (the node agent serves verbs concurrently) first queue on an in-process
# lock per path: a release wakes the next thread at once instead of leaving it to poll flock with
# a growing sleep (up to 50 ms: a hundred ADDs at once waited mostly on those sleeps). The flock
# below still excludes other processes (and stays the correctness guarantee).
_REGISTRY = threading.Lock()
_THREAD_LOCKS: dict[str, list] = {}  # path -> [threading.Lock, users]


# A server that limits how many verbs run at once (the node agent) sets this to a context manager
# factory entered while a thread *waits* for a lock: it gives up its run slot meanwhile, so a
# verb blocked on a lock never holds up the others (and a slot holder never waits on a lock
# holder that waits for a slot).
WAIT_HOOK = None


@contextmanager
def waiting():
    """Entered around anything that blocks for long without holding the CPU (a lock wait, a
    subprocess): the WAIT_HOOK's server lets other verbs run meanwhile."""
    hook = WAIT_HOOK
    if hook is None:
        yield
    else:
        with hook():
            yield


@contextmanager
def _threads_in_turn(path: str, what: str, timeout: float):
    with _REGISTRY:
        entry = _THREAD_LOCKS.setdefault(path, [threading.Lock(), 0])
        entry[1] += 1
    try:
        if not entry[0].acquire(blocking=False):
            with waiting():
                acquired = entry[0].acquire(timeout=max(timeout, 0))
            if not acquired:
                raise LockTimeout(what, path, timeout, f"another thread of this process (pid {os.getpid()})")
        try:
            yield
        finally:
            entry[0].release()
    finally:
        with _REGISTRY:
            entry[1] -= 1
            if entry[1] == 0 and _THREAD_LOCKS.get(path) is entry:
                del _THREAD_LOCKS[path]


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise
        return False


@contextmanager
def _flocked(path: str, what: str, timeout: float, start: float, remove: bool, is_dir: bool):
    delay = 0.002
    while True:
        if is_dir:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        else:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:  # its directory, created only when missing (mode 0700)
                os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if not _try_flock(fd):
                with waiting():
                    while not _try_flock(fd):
                        waited = time.monotonic() - start
                        if waited >= timeout:
                            raise LockTimeout(what, path, waited, holder_of(fd))
                        time.sleep(min(delay, max(0.0, timeout - waited)))
                        delay = min(delay * 2, 0.05)
        except BaseException:
            os.close(fd)
            raise
        if is_dir or _same_file(fd, path):
            break
        os.close(fd)  # the previous holder removed (or replaced) it: lock the new one
    try:
        yield
    finally:
        try:
            if remove and not is_dir:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
        finally:
            os.close(fd)  # closing releases the lock
