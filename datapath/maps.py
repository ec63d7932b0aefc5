"""Open the node's pinned maps by name, typed by the abi mirror (no compiling, no BCC)."""

from __future__ import annotations

import ctypes as ct
import os

from . import abi, libbpf
from .pins import PinLayout, check_owned


class DatapathNotLoaded(RuntimeError):
    """The pinned maps are not there: the node datapath has not been loaded."""


BPF_MAP_TYPE_HASH = 1


class PinnedMap:
    def __init__(self, layout: PinLayout, name: str, owner_checked: bool = False):
        """owner_checked: the caller has just run check_owned(layout.maps_dir) itself (a table
        opening several maps of one directory checks it once)."""
        self.name = name
        self.path = layout.map(name)
        self.key_type, self.value_type = abi.MAP_LAYOUT[name]
        self.fd = -1
        if not owner_checked:
            check_owned(layout.maps_dir)  # never act on pins someone else could have made
        try:
            self.fd = libbpf.obj_get(self.path)
        except FileNotFoundError as exc:
            raise DatapathNotLoaded(
                f"map {self.path} is not pinned: load the node datapath first (xdpcnictl load)"
            ) from exc

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):  # fds must not leak from long-lived processes (agent, tests)
        try:
            self.close()
        except Exception:
            pass

    def get(self, key):
        value = self.value_type()
        return value if libbpf.map_lookup(self.fd, self._key(key), value) else None

    def put(self, key, value, flags: int = libbpf.BPF_ANY) -> None:
        libbpf.map_update(self.fd, self._key(key), value, flags)

    def delete(self, key) -> bool:
        return libbpf.map_delete(self.fd, self._key(key))

    def keys(self):
        return list(libbpf.map_keys(self.fd, self.key_type))

    def __iter__(self):
        return iter(self.keys())

    def items(self):
        spec = abi.MAP_SPECS.get(self.name)
        if spec is not None and spec[0] == BPF_MAP_TYPE_HASH:  # one syscall, not two per entry
            return libbpf.map_items_batch(self.fd, self.key_type, self.value_type, spec[1])
        out = []
        for k in self.keys():
            v = self.get(k)
            if v is not None:
                out.append((k, v))
        return out

    def items_raw(self) -> tuple[int, bytes, bytes]:
        """(count, keys, values) packed back to back, one syscall (hash maps only)."""
        spec = abi.MAP_SPECS[self.name]
        if spec[0] != BPF_MAP_TYPE_HASH:
            raise TypeError(f"map {self.name} is not a hash map")
        return libbpf.map_items_batch_raw(self.fd, self.key_type, self.value_type, spec[1])

    def info(self) -> libbpf.BpfMapInfo:
        return libbpf.map_info(self.fd)

    def _key(self, key):
        if isinstance(key, int):
            return self.key_type(key)
        return key


_ZEROS: dict[int, ct.Array] = {}


class PerCpuArray(PinnedMap):
    """A per-CPU array: one value per possible CPU, each padded to 8 bytes."""

    def __init__(self, layout: PinLayout, name: str, owner_checked: bool = False):
        super().__init__(layout, name, owner_checked)
        self.ncpu = libbpf.num_possible_cpus()
        self.stride = (ct.sizeof(self.value_type) + 7) & ~7

    def get_all_cpus(self, index: int) -> list:
        buf = (ct.c_uint8 * (self.stride * self.ncpu))()
        if not libbpf.map_lookup(self.fd, ct.c_uint32(index), buf):
            return []
        raw = bytes(buf)
        return [self.value_type.from_buffer_copy(raw, i * self.stride) for i in range(self.ncpu)]

    def zero(self, index: int, count: int = 1) -> None:
        """Zero `count` consecutive indexes from `index` on every CPU (one batch update)."""
        keys = (ct.c_uint32 * count)(*range(index, index + count))
        size = self.stride * self.ncpu * count
        values = _ZEROS.get(size)
        if values is None:  # only ever read by the kernel: one zeroed buffer per size, shared
            values = _ZEROS[size] = (ct.c_uint8 * size)()
        libbpf.map_update_batch(self.fd, keys, values, count)
