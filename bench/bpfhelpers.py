"""The benchmark's own BPF programs (bench/bpf/bench.c), built with clang (bench/bpf/Makefile) and
loaded through libbpf (datapath.objload.BpfObject), like the datapath itself.

Why not BCC any more: a prologue tail-calls the datapath's xdp_nic/tc_nic, and the kernel lets a
PROG_ARRAY hold only programs of the owner's type *and* expected_attach_type. libbpf's SEC("xdp")
sets BPF_XDP, BCC sets 0, so a BCC prologue cannot tail-call the clang-built xdp_nic (the insert
fails with EINVAL). When the datapath itself was loaded by BCC (XDPCNI_TOOLCHAIN=bcc), the XDP
helpers are loaded with expected_attach_type 0 to match it (`xdp_attach_type`).

They live only as long as this process: nothing is pinned, and BenchPrograms.close() (also run
from the benchmark's finally blocks) releases them. Attachments made with their fds are removed by
bench.topo before close(). The object stays open while the programs are in use: a PROG_ARRAY is
emptied when its last user reference goes.
"""

from __future__ import annotations

import ctypes as ct
import fcntl
import subprocess
from pathlib import Path

from datapath import libbpf, objload

BPF_DIR = Path(__file__).resolve().parent / "bpf"
SRC = BPF_DIR / "bench.c"
OBJ = BPF_DIR / "build" / "bench.o"
TMPL_LEN = 60  # bench.c TMPL_LEN
BPF_XDP = 37  # enum bpf_attach_type: what libbpf's SEC("xdp") sets

HIT_DOOR_XDP = 0
HIT_DOOR_TC = 1
HIT_FALLTHROUGH = 2

PROGRAMS = ("xdp_prologue", "xdp_pass", "xdp_drop", "door_xdp", "tc_prologue", "tc_pass", "door_tc")
XDP_PROGRAMS = ("xdp_prologue", "xdp_pass", "xdp_drop", "door_xdp")


def xdp_attach_type_for(toolchain: str) -> int:
    """The expected_attach_type of the datapath's XDP programs: BPF_XDP (clang/libbpf) or 0 (BCC)."""
    return 0 if toolchain == "bcc" else BPF_XDP


class BuildError(RuntimeError):
    pass


def build() -> Path:
    """make -C bench/bpf (make decides whether bench.o is stale), serialised by a lock file."""
    OBJ.parent.mkdir(parents=True, exist_ok=True)
    with open(OBJ.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.run(
            ["make", "-s", "-C", str(BPF_DIR)], capture_output=True, text=True, timeout=120, check=False
        )
    if proc.returncode != 0 or not OBJ.exists():
        raise BuildError(f"clang build of {SRC} failed:\n{(proc.stderr or proc.stdout)[-3000:]}")
    return OBJ


class BenchPrograms:
    def __init__(self, xdp_attach_type: int = BPF_XDP):
        """xdp_attach_type: the datapath's XDP expected_attach_type (BPF_XDP for its clang build, 0
        for BCC), which every XDP program in a tail-call chain must share."""
        self.obj = objload.BpfObject(str(build()))
        try:
            lib = self.obj.lib
            lib.bpf_program__set_expected_attach_type.argtypes = [ct.c_void_p, ct.c_int]
            if xdp_attach_type != BPF_XDP:
                for name in XDP_PROGRAMS:
                    p = lib.bpf_object__find_program_by_name(self.obj.obj, name.encode())
                    libbpf._check(
                        lib.bpf_program__set_expected_attach_type(p, xdp_attach_type),
                        f"set_expected_attach_type({name})",
                    )
            self.obj.load()
            self.fn = {name: self.obj.prog_fd(name) for name in PROGRAMS}
            self.maps = {name: self.obj.map_fd(name) for name in ("tmpl", "xdp_jmp", "tc_jmp", "hits")}
            self.ncpu = libbpf.num_possible_cpus()
        except BaseException:
            self.obj.close()
            raise

    def fd(self, name: str) -> int:
        return self.fn[name]

    def set_template(self, frame: bytes) -> None:
        if len(frame) < TMPL_LEN:
            raise ValueError(f"frame of {len(frame)} bytes: the prologue restores {TMPL_LEN}")
        leaf = (ct.c_uint8 * TMPL_LEN).from_buffer_copy(frame[:TMPL_LEN])
        libbpf.map_update(self.maps["tmpl"], ct.c_uint32(0), leaf)

    def set_target(self, kind: str, prog_fd: int) -> None:
        """kind 'xdp' or 'tc': the program the prologue tail-calls."""
        libbpf.map_update(self.maps[f"{kind}_jmp"], ct.c_uint32(0), ct.c_uint32(prog_fd))

    def hits(self, idx: int) -> int:
        vals = (ct.c_uint64 * self.ncpu)()
        libbpf.map_lookup(self.maps["hits"], ct.c_uint32(idx), vals)
        return sum(vals)

    def close(self) -> None:
        if self.obj is not None:
            self.obj.close()
            self.obj = None
