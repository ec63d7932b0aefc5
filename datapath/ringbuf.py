"""BPF ring buffer consumer (BPF_MAP_TYPE_RINGBUF) through libbpf's ring_buffer__new/__poll/__free.

The callback gets each record's bytes; it runs on the thread that calls poll(). poll() returns the
number of records consumed, 0 on timeout and also when a signal interrupted the wait (EINTR), so a
Python signal handler runs between two polls.
"""

from __future__ import annotations

import ctypes as ct
import errno
import os
from collections.abc import Callable

from . import libbpf

SampleFn = ct.CFUNCTYPE(ct.c_int, ct.c_void_p, ct.c_void_p, ct.c_size_t)


def _bind() -> ct.CDLL:
    lib = libbpf._lib()
    if getattr(lib, "_ringbuf_bound", False):
        return lib
    lib.ring_buffer__new.argtypes = [ct.c_int, SampleFn, ct.c_void_p, ct.c_void_p]
    lib.ring_buffer__new.restype = ct.c_void_p
    lib.ring_buffer__poll.argtypes = [ct.c_void_p, ct.c_int]
    lib.ring_buffer__poll.restype = ct.c_int
    lib.ring_buffer__free.argtypes = [ct.c_void_p]
    lib.ring_buffer__free.restype = None
    lib._ringbuf_bound = True
    return lib


class RingBuffer:
    def __init__(self, map_fd: int, callback: Callable[[bytes], None]):
        self.lib = _bind()
        self._user = callback
        self._cb = SampleFn(self._sample)  # kept referenced: libbpf calls it
        ct.set_errno(0)
        self.rb = self.lib.ring_buffer__new(map_fd, self._cb, None, None)
        if not self.rb:
            err = ct.get_errno() or errno.EINVAL
            raise OSError(err, f"ring_buffer__new: {os.strerror(err)}")

    def _sample(self, _ctx, data, size) -> int:
        try:
            self._user(ct.string_at(data, size))
        except Exception:  # an exception must not unwind through C
            return 0
        return 0

    def poll(self, timeout_ms: int = 100) -> int:
        ret = self.lib.ring_buffer__poll(self.rb, timeout_ms)
        if ret == -errno.EINTR:
            return 0
        return libbpf._check(ret, "ring_buffer__poll")

    def close(self) -> None:
        if self.rb:
            self.lib.ring_buffer__free(self.rb)
            self.rb = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
