"""Load clang-built BPF objects (bpf/*.c -> build/*.o) with libbpf through ctypes.

The objects are compiled once (`make -C bpf`, clang -O2 -g -target bpf; datapath/build.py) and carry BTF + CO-RE relocations, so one object runs on any kernel with BTF; libbpf
fixes struct offsets (nf_conn...) from /sys/kernel/btf/vmlinux at load and resolves the conntrack
kfuncs (__ksym externs) in vmlinux BTF or, if nf_conntrack is a module, in
/sys/kernel/btf/nf_conntrack (the module must be loaded first: `modprobe nf_conntrack`).

Maps: every map in bpf/lib/maps.h is LIBBPF_PIN_BY_NAME and the object is opened with
pin_root_path = <root>/maps, so libbpf reuses a pin that exists (BCC-made or ours; it checks
type/key/value/max_entries/flags and fails the load on a mismatch) and otherwise creates and pins
the map. Nothing else (DEVMAP_HASH included) needs special handling.

Why below BCC here: BCC 0.26 cannot call kfuncs (it never resolves ksym relocations), and the
conntrack gate (bpf/lib/conntrack.h) is made of kfunc calls. Everything used exists in libbpf 1.1
(Debian 12 libbpf1): bpf_object__open_file + open opts (pin_root_path, kconfig, kernel_log_*),
bpf_map__reuse_fd, bpf_object__load, bpf_object__find_program_by_name, bpf_program__fd,
bpf_object__close.
"""

from __future__ import annotations

import ctypes as ct
import os
from contextlib import contextmanager

from . import libbpf


class BpfObjectOpenOpts(ct.Structure):
    """struct bpf_object_open_opts, libbpf 1.1 layout (sz-versioned: newer libbpf accepts it)."""

    _fields_ = [
        ("sz", ct.c_size_t),
        ("object_name", ct.c_char_p),
        ("relaxed_maps", ct.c_bool),
        ("pin_root_path", ct.c_char_p),
        ("_attach_prog_fd_stub", ct.c_uint32),
        ("kconfig", ct.c_char_p),
        ("btf_custom_path", ct.c_char_p),
        ("kernel_log_buf", ct.c_char_p),
        ("kernel_log_size", ct.c_size_t),
        ("kernel_log_level", ct.c_uint32),
    ]


class LoadError(RuntimeError):
    pass


def _bind() -> ct.CDLL:
    lib = libbpf._lib()
    if getattr(lib, "_objload_bound", False):
        return lib
    vp = ct.c_void_p
    lib.bpf_object__open_file.argtypes = [ct.c_char_p, ct.POINTER(BpfObjectOpenOpts)]
    lib.bpf_object__open_file.restype = vp
    lib.bpf_object__load.argtypes = [vp]
    lib.bpf_object__close.argtypes = [vp]
    lib.bpf_object__close.restype = None
    lib.bpf_object__find_map_by_name.argtypes = [vp, ct.c_char_p]
    lib.bpf_object__find_map_by_name.restype = vp
    lib.bpf_object__find_program_by_name.argtypes = [vp, ct.c_char_p]
    lib.bpf_object__find_program_by_name.restype = vp
    lib.bpf_program__fd.argtypes = [vp]
    lib.bpf_map__fd.argtypes = [vp]
    lib.bpf_map__reuse_fd.argtypes = [vp, ct.c_int]
    lib.bpf_map__set_pin_path.argtypes = [vp, ct.c_char_p]
    lib.bpf_map__type.argtypes = [vp]
    lib.bpf_map__name.argtypes = [vp]
    lib.bpf_map__name.restype = ct.c_char_p
    lib.bpf_object__next_map.argtypes = [vp, vp]
    lib.bpf_object__next_map.restype = vp
    lib.libbpf_major_version.restype = ct.c_uint32
    lib.libbpf_minor_version.restype = ct.c_uint32
    lib._objload_bound = True
    return lib


def libbpf_version() -> tuple[int, int]:
    lib = _bind()
    return lib.libbpf_major_version(), lib.libbpf_minor_version()


class BpfObject:
    """One opened (then loaded) object file; close() releases fds (pins and attachments stay)."""

    def __init__(
        self, path: str, pin_root: str | None = None, kconfig: str | None = None, log_size: int = 1 << 20
    ):
        self.lib = _bind()
        self.path = path
        self._log = ct.create_string_buffer(log_size)
        self._keep = []
        opts = BpfObjectOpenOpts()
        opts.sz = ct.sizeof(opts)
        if pin_root:
            opts.pin_root_path = self._cstr(pin_root)
        if kconfig:  # e.g. "CONFIG_HZ=250" when the kernel has neither /proc/config.gz nor /boot/config-*
            opts.kconfig = self._cstr(kconfig)
        opts.kernel_log_buf = ct.cast(self._log, ct.c_char_p)
        opts.kernel_log_size = log_size
        opts.kernel_log_level = 0  # libbpf 1.1 only fills the buffer on failure at level 0
        self._opts = opts
        ct.set_errno(0)
        obj = self.lib.bpf_object__open_file(path.encode(), ct.byref(opts))
        if not obj:
            err = ct.get_errno()
            raise LoadError(f"bpf_object__open_file({path}): {os.strerror(err)}")
        self.obj = obj

    def _cstr(self, s: str):
        b = ct.c_char_p(s.encode())
        self._keep.append(b)
        return b

    def map(self, name: str):
        m = self.lib.bpf_object__find_map_by_name(self.obj, name.encode())
        if not m:
            raise LoadError(f"{self.path}: no map {name!r}")
        return m

    def map_names(self) -> list[str]:
        names, m = [], None
        while True:
            m = self.lib.bpf_object__next_map(self.obj, m)
            if not m:
                return names
            names.append(self.lib.bpf_map__name(m).decode())

    def reuse_map_fd(self, name: str, fd: int) -> None:
        """Alternative to pin_root_path: share an fd we already hold (libbpf checks compatibility)."""
        libbpf._check(self.lib.bpf_map__reuse_fd(self.map(name), fd), f"bpf_map__reuse_fd({name})")

    def set_pin_path(self, name: str, path: str) -> None:
        libbpf._check(self.lib.bpf_map__set_pin_path(self.map(name), path.encode()), f"set_pin_path({name})")

    def reuse_pinned_devmaps(self, maps_dir: str) -> None:
        """libbpf 1.1 cannot reuse a pinned DEVMAP/DEVMAP_HASH by name: the kernel adds
        BPF_F_RDONLY_PROG to every devmap's flags at creation (and refuses it as a create flag), so
        map_is_reuse_compat() sees 0x80 != 0 -> "parameter mismatch" on the second load (same bug as
        cilium/ebpf#925). bpf_map__reuse_fd() copies the kernel's flags into the definition first,
        after which the pin check passes."""
        for name in self.map_names():
            m = self.map(name)
            if self.lib.bpf_map__type(m) not in (libbpf.BPF_MAP_TYPE_DEVMAP, libbpf.BPF_MAP_TYPE_DEVMAP_HASH):
                continue
            path = os.path.join(maps_dir, name)
            if not os.path.exists(path):
                continue  # first load: libbpf creates and pins it
            fd = libbpf.obj_get(path)
            try:
                self.reuse_map_fd(name, fd)  # libbpf dup()s it
            finally:
                os.close(fd)

    def load(self) -> None:
        ret = self.lib.bpf_object__load(self.obj)
        if ret < 0:
            log = self._log.value.decode(errors="replace")
            tail = "\n".join(log.splitlines()[-25:])
            raise LoadError(f"bpf_object__load({self.path}): {os.strerror(-ret)}\n{tail}")

    def prog_fd(self, name: str) -> int:
        p = self.lib.bpf_object__find_program_by_name(self.obj, name.encode())
        if not p:
            raise LoadError(f"{self.path}: no program {name!r}")
        return libbpf._check(self.lib.bpf_program__fd(p), f"bpf_program__fd({name})")

    def map_fd(self, name: str) -> int:
        return libbpf._check(self.lib.bpf_map__fd(self.map(name)), f"bpf_map__fd({name})")

    def close(self) -> None:
        if self.obj:
            self.lib.bpf_object__close(self.obj)
            self.obj = None


@contextmanager
def loaded(path: str, pin_root: str | None = None, kconfig: str | None = None):
    """Open, load and (on exit) close one object; maps pinned under `pin_root` are shared."""
    obj = BpfObject(path, pin_root=pin_root, kconfig=kconfig)
    try:
        if pin_root:
            obj.reuse_pinned_devmaps(pin_root)
        obj.load()
        yield obj
    finally:
        obj.close()


def load_programs(
    obj_dir: str, maps_dir: str, names=("xdp_nic", "tc_nic", "tc_pod", "xdp_pod")
) -> dict[str, int]:
    """The loader's compile_programs() for clang objects: name -> prog fd (dup'ed, caller closes).

    Objects are closed before returning; the dup'ed fds keep the programs alive until the caller
    pinned/attached them (as the BCC path keeps its BPF objects until then).
    """
    fds = {}
    try:
        for name in names:
            with loaded(os.path.join(obj_dir, f"{name}.o"), pin_root=maps_dir) as obj:
                fds[name] = os.dup(obj.prog_fd(name))
    except Exception:
        for fd in fds.values():
            os.close(fd)
        raise
    return fds


# Maps a scratch copy (scratch_copy) shares with the running datapath: what the programs read.
# Everything else (counters, the monitor's maps, internal .rodata/.bss) is private to the copy.
SHARED_MAPS = ("endpoints", "ifaces", "node_cfg", "tx_ports")


def scratch_copy(path: str, maps_dir: str, shared=SHARED_MAPS) -> BpfObject:
    """Load another instance of a program object whose lookup maps are the node's pinned maps but
    whose counters and monitor maps are fresh, unpinned and private: running it with
    BPF_PROG_TEST_RUN (`xdpcnictl trace`) decides exactly as the attached program does and moves
    no counter of real traffic. The caller closes it.

    libbpf 1.1 gives every LIBBPF_PIN_BY_NAME map a pin path even without pin_root_path (the default
    /sys/fs/bpf), and would reuse or create pins there; so every map's pin path is cleared here and
    the shared ones are handed over as fds (bpf_map__reuse_fd: libbpf checks they are compatible)."""
    obj = BpfObject(path)
    try:
        for name in obj.map_names():
            libbpf._check(obj.lib.bpf_map__set_pin_path(obj.map(name), None), f"set_pin_path({name})")
        for name in shared:
            if name not in obj.map_names():
                continue  # tx_ports exists in the XDP object only
            fd = libbpf.obj_get(os.path.join(maps_dir, name))
            try:
                obj.reuse_map_fd(name, fd)  # libbpf dup()s it
            finally:
                os.close(fd)
        obj.load()
    except BaseException:
        obj.close()
        raise
    return obj
