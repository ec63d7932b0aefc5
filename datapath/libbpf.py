"""Thin ctypes binding to the system libbpf (libbpf.so.1, shipped with iproute2).

Why libbpf and not BCC here: pod-level work (every CNI ADD/DEL) only opens pinned maps and
programs. Importing BCC loads LLVM (hundreds of ms) and BCC 0.26 has no map-create for
DEVMAP_HASH and no live-frames test run; libbpf has all of these as stable, documented calls.
Only the few functions we use are bound; every call raises OSError with the kernel's errno.
"""

from __future__ import annotations

import ctypes as ct
import errno
import os
import threading
from functools import lru_cache

BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_DEVMAP = 14
BPF_MAP_TYPE_DEVMAP_HASH = 25

BPF_F_MMAPABLE = 1 << 10  # map_flags: an array map userspace can mmap (kernel >= 5.5)

BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2

BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1


class BpfMapInfo(ct.Structure):
    """Leading fields of the kernel's struct bpf_map_info (uapi/linux/bpf.h)."""

    _fields_ = [
        ("type", ct.c_uint32),
        ("id", ct.c_uint32),
        ("key_size", ct.c_uint32),
        ("value_size", ct.c_uint32),
        ("max_entries", ct.c_uint32),
        ("map_flags", ct.c_uint32),
        ("name", ct.c_char * 16),
        ("_rest", ct.c_uint8 * 64),
    ]


class BpfProgInfo(ct.Structure):
    """struct bpf_prog_info up to run_time_ns/run_cnt (uapi/linux/bpf.h, kernel >= 5.1)."""

    _fields_ = [
        ("type", ct.c_uint32),
        ("id", ct.c_uint32),
        ("tag", ct.c_uint8 * 8),
        ("jited_prog_len", ct.c_uint32),
        ("xlated_prog_len", ct.c_uint32),
        ("jited_prog_insns", ct.c_uint64),
        ("xlated_prog_insns", ct.c_uint64),
        ("load_time", ct.c_uint64),
        ("created_by_uid", ct.c_uint32),
        ("nr_map_ids", ct.c_uint32),
        ("map_ids", ct.c_uint64),
        ("name", ct.c_char * 16),
        ("ifindex", ct.c_uint32),
        ("gpl_compatible_etc", ct.c_uint32),
        ("netns_dev", ct.c_uint64),
        ("netns_ino", ct.c_uint64),
        ("nr_jited_ksyms", ct.c_uint32),
        ("nr_jited_func_lens", ct.c_uint32),
        ("jited_ksyms", ct.c_uint64),
        ("jited_func_lens", ct.c_uint64),
        ("btf_id", ct.c_uint32),
        ("func_info_rec_size", ct.c_uint32),
        ("func_info", ct.c_uint64),
        ("nr_func_info", ct.c_uint32),
        ("nr_line_info", ct.c_uint32),
        ("line_info", ct.c_uint64),
        ("jited_line_info", ct.c_uint64),
        ("nr_jited_line_info", ct.c_uint32),
        ("line_info_rec_size", ct.c_uint32),
        ("jited_line_info_rec_size", ct.c_uint32),
        ("nr_prog_tags", ct.c_uint32),
        ("prog_tags", ct.c_uint64),
        ("run_time_ns", ct.c_uint64),
        ("run_cnt", ct.c_uint64),
        ("_rest", ct.c_uint8 * 128),
    ]


class BpfTestRunOpts(ct.Structure):
    """libbpf's struct bpf_test_run_opts (libbpf >= 1.0 layout, sz-versioned)."""

    _fields_ = [
        ("sz", ct.c_size_t),
        ("data_in", ct.c_void_p),
        ("data_out", ct.c_void_p),
        ("data_size_in", ct.c_uint32),
        ("data_size_out", ct.c_uint32),
        ("ctx_in", ct.c_void_p),
        ("ctx_out", ct.c_void_p),
        ("ctx_size_in", ct.c_uint32),
        ("ctx_size_out", ct.c_uint32),
        ("retval", ct.c_uint32),
        ("repeat", ct.c_int),
        ("duration", ct.c_uint32),
        ("flags", ct.c_uint32),
        ("cpu", ct.c_uint32),
        ("batch_size", ct.c_uint32),
    ]


class XdpMd(ct.Structure):
    """struct xdp_md, the XDP context passed to BPF_PROG_TEST_RUN."""

    _fields_ = [
        ("data", ct.c_uint32),
        ("data_end", ct.c_uint32),
        ("data_meta", ct.c_uint32),
        ("ingress_ifindex", ct.c_uint32),
        ("rx_queue_index", ct.c_uint32),
        ("egress_ifindex", ct.c_uint32),
    ]


class LibbpfMissing(RuntimeError):
    pass


@lru_cache(maxsize=1)
def _lib() -> ct.CDLL:
    try:
        lib = ct.CDLL("libbpf.so.1", use_errno=True)
    except OSError as exc:  # pragma: no cover - depends on the machine
        raise LibbpfMissing("libbpf.so.1 not found: apt-get install libbpf1 (or run `make setup`)") from exc
    lib.bpf_obj_get.argtypes = [ct.c_char_p]
    lib.bpf_obj_pin.argtypes = [ct.c_int, ct.c_char_p]
    lib.bpf_map_create.argtypes = [ct.c_int, ct.c_char_p, ct.c_uint32, ct.c_uint32, ct.c_uint32, ct.c_void_p]
    for name in ("bpf_map_update_elem",):
        getattr(lib, name).argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p, ct.c_uint64]
    lib.bpf_map_lookup_elem.argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p]
    lib.bpf_map_delete_elem.argtypes = [ct.c_int, ct.c_void_p]
    lib.bpf_map_get_next_key.argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p]
    lib.bpf_map_lookup_batch.argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p, ct.c_void_p, ct.c_void_p]
    lib.bpf_map_lookup_batch.argtypes += [ct.POINTER(ct.c_uint32), ct.c_void_p]
    lib.bpf_map_update_batch.argtypes = [
        ct.c_int,
        ct.c_void_p,
        ct.c_void_p,
        ct.POINTER(ct.c_uint32),
        ct.c_void_p,
    ]
    lib.bpf_obj_get_info_by_fd.argtypes = [ct.c_int, ct.c_void_p, ct.POINTER(ct.c_uint32)]
    lib.bpf_prog_test_run_opts.argtypes = [ct.c_int, ct.POINTER(BpfTestRunOpts)]
    lib.bpf_enable_stats.argtypes = [ct.c_int]
    return lib


def _check(ret: int, what: str) -> int:
    # libbpf 1.x returns -errno directly and also sets errno.
    if ret < 0:
        err = ct.get_errno() or -ret
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def obj_get(path: str) -> int:
    """Open a pinned map or program; the caller owns (and closes) the fd."""
    return _check(_lib().bpf_obj_get(path.encode()), f"bpf_obj_get({path})")


def obj_pin(fd: int, path: str) -> None:
    _check(_lib().bpf_obj_pin(fd, path.encode()), f"bpf_obj_pin({path})")


class BpfMapCreateOpts(ct.Structure):
    """Leading fields of libbpf's struct bpf_map_create_opts (bpf.h, libbpf >= 0.7); `sz` tells
    libbpf how much of it we pass."""

    _fields_ = [
        ("sz", ct.c_size_t),
        ("btf_fd", ct.c_uint32),
        ("btf_key_type_id", ct.c_uint32),
        ("btf_value_type_id", ct.c_uint32),
        ("btf_vmlinux_value_type_id", ct.c_uint32),
        ("inner_map_fd", ct.c_uint32),
        ("map_flags", ct.c_uint32),
    ]


def map_create(
    map_type: int, name: str, key_size: int, value_size: int, max_entries: int, map_flags: int = 0
) -> int:
    """A new map's fd (bpf_map_create); `map_flags` e.g. BPF_F_MMAPABLE."""
    opts = BpfMapCreateOpts(sz=ct.sizeof(BpfMapCreateOpts), map_flags=map_flags) if map_flags else None
    return _check(
        _lib().bpf_map_create(
            map_type, name.encode()[:15], key_size, value_size, max_entries, ct.byref(opts) if opts else None
        ),
        f"bpf_map_create({name})",
    )


def map_update(fd: int, key: ct.Structure | ct._SimpleCData, value, flags: int = BPF_ANY) -> None:
    _check(_lib().bpf_map_update_elem(fd, ct.byref(key), ct.byref(value), flags), "bpf_map_update_elem")


def map_lookup(fd: int, key, value) -> bool:
    """Fill `value` and return True, or return False when the key is absent."""
    ret = _lib().bpf_map_lookup_elem(fd, ct.byref(key), ct.byref(value))
    if ret < 0 and (ct.get_errno() or -ret) == errno.ENOENT:
        return False
    _check(ret, "bpf_map_lookup_elem")
    return True


def map_delete(fd: int, key) -> bool:
    """Delete `key`; False when it was already gone (callers treat that as success)."""
    ret = _lib().bpf_map_delete_elem(fd, ct.byref(key))
    if ret < 0 and (ct.get_errno() or -ret) == errno.ENOENT:
        return False
    _check(ret, "bpf_map_delete_elem")
    return True


def map_keys(fd: int, key_type):
    """Yield copies of every key (snapshot semantics of BPF_MAP_GET_NEXT_KEY)."""
    lib = _lib()
    cur = None
    while True:
        nxt = key_type()
        ret = lib.bpf_map_get_next_key(fd, ct.byref(cur) if cur is not None else None, ct.byref(nxt))
        if ret < 0:
            if (ct.get_errno() or -ret) == errno.ENOENT:
                return
            _check(ret, "bpf_map_get_next_key")
        yield nxt
        cur = nxt


def map_items_batch_raw(fd: int, key_type, value_type, max_entries: int) -> tuple[int, bytes, bytes]:
    """Every entry of a hash map in one BPF_MAP_LOOKUP_BATCH call (kernel >= 5.6) instead of two
    syscalls per entry: (count, keys, values), the keys and values packed back to back (sizeof
    key_type / value_type each), for scans that need one field (struct.iter_unpack) and not a
    ctypes object per entry (~1 us each: a thousand-endpoint map on every ADD)."""
    shape = (key_type, value_type, max_entries)
    with _BATCH_LOCK:  # buffers reused across calls: a map's worth of zeroed ones costs ~0.1 ms
        bufs = _BATCH_BUFS.get(shape)
        if bufs is None:
            bufs = _BATCH_BUFS[shape] = ((key_type * max_entries)(), (value_type * max_entries)())
        keys, values = bufs
        token = (ct.c_uint8 * 64)()  # opaque batch position (a u32 bucket for hash maps)
        count = ct.c_uint32(max_entries)
        ret = _lib().bpf_map_lookup_batch(fd, None, ct.byref(token), keys, values, ct.byref(count), None)
        if ret < 0 and (ct.get_errno() or -ret) != errno.ENOENT:  # ENOENT: the whole map was read
            _check(ret, "bpf_map_lookup_batch")
        n = count.value
        return (
            n,
            ct.string_at(ct.addressof(keys), n * ct.sizeof(key_type)),
            ct.string_at(ct.addressof(values), n * ct.sizeof(value_type)),
        )


_BATCH_LOCK = threading.Lock()
_BATCH_BUFS: dict[tuple, tuple] = {}


def map_update_batch(fd: int, keys, values, count: int) -> None:
    """Write `count` entries in one BPF_MAP_UPDATE_BATCH call (kernel >= 5.6; hash and array maps,
    per-CPU ones included) instead of one syscall each: `keys` and `values` are buffers holding
    them back to back, a per-CPU value being one slot per possible CPU, each rounded up to 8 bytes
    (as for one update). All or an error: the kernel stops at the first failure and says how
    many it wrote; that is raised as OSError."""
    n = ct.c_uint32(count)
    ret = _lib().bpf_map_update_batch(fd, keys, values, ct.byref(n), None)
    if ret < 0:
        _check(ret, f"bpf_map_update_batch ({n.value} of {count} written)")


def map_items_batch(fd: int, key_type, value_type, max_entries: int) -> list:
    """Every (key, value) of a hash map as ctypes objects (map_items_batch_raw)."""
    n, kb, vb = map_items_batch_raw(fd, key_type, value_type, max_entries)
    ks, vs = ct.sizeof(key_type), ct.sizeof(value_type)
    return [
        (key_type.from_buffer_copy(kb, i * ks), value_type.from_buffer_copy(vb, i * vs)) for i in range(n)
    ]


def map_info(fd: int) -> BpfMapInfo:
    info = BpfMapInfo()
    size = ct.c_uint32(ct.sizeof(info))
    _check(_lib().bpf_obj_get_info_by_fd(fd, ct.byref(info), ct.byref(size)), "bpf_obj_get_info_by_fd")
    return info


def prog_info(fd: int) -> BpfProgInfo:
    info = BpfProgInfo()
    size = ct.c_uint32(ct.sizeof(info))
    _check(_lib().bpf_obj_get_info_by_fd(fd, ct.byref(info), ct.byref(size)), "bpf_obj_get_info_by_fd")
    return info


def num_possible_cpus() -> int:
    return _check(_lib().libbpf_num_possible_cpus(), "libbpf_num_possible_cpus")


def enable_stats() -> int:
    """Turn on run_time_ns/run_cnt accounting while the returned fd is open (BPF_STATS_RUN_TIME)."""
    return _check(_lib().bpf_enable_stats(0), "bpf_enable_stats")


def prog_test_run(
    prog_fd: int,
    data: bytes,
    *,
    repeat: int = 1,
    flags: int = 0,
    batch_size: int = 0,
    ctx: ct.Structure | None = None,
    want_output: bool = True,
) -> tuple[int, bytes, int]:
    """BPF_PROG_TEST_RUN: returns (program return value, output packet, mean duration ns).

    Live-frames mode (flags=BPF_F_TEST_XDP_LIVE_FRAMES) requires no output buffer.
    """
    buf_in = ct.create_string_buffer(data, len(data))
    out_len = len(data) + 256
    buf_out = ct.create_string_buffer(out_len) if want_output else None
    opts = BpfTestRunOpts()
    opts.sz = ct.sizeof(opts)
    opts.data_in = ct.cast(buf_in, ct.c_void_p)
    opts.data_size_in = len(data)
    if buf_out is not None:
        opts.data_out = ct.cast(buf_out, ct.c_void_p)
        opts.data_size_out = out_len
    if ctx is not None:
        opts.ctx_in = ct.cast(ct.byref(ctx), ct.c_void_p)
        opts.ctx_size_in = ct.sizeof(ctx)
    opts.repeat = repeat
    opts.flags = flags
    opts.batch_size = batch_size
    _check(_lib().bpf_prog_test_run_opts(prog_fd, ct.byref(opts)), "bpf_prog_test_run")
    out = buf_out.raw[: opts.data_size_out] if buf_out is not None else b""
    return opts.retval, out, opts.duration
