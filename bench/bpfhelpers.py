"""The benchmark's own BPF programs (bench/bpf/bench.c), compiled with BCC in this process.

They live only as long as this process: nothing is pinned, and BenchPrograms.close() (also run
from the benchmark's finally blocks) releases them. Attachments made with their fds are removed by
bench.topo before close().
"""

from __future__ import annotations

import ctypes as ct
from pathlib import Path

from datapath.probes import require_bcc

SRC = Path(__file__).resolve().parent / "bpf" / "bench.c"
TMPL_LEN = 60  # bench.c TMPL_LEN

HIT_DOOR_XDP = 0
HIT_DOOR_TC = 1
HIT_FALLTHROUGH = 2


class BenchPrograms:
    def __init__(self):
        bcc = require_bcc()
        self._bcc = bcc
        self.b = bcc.BPF(src_file=str(SRC), cflags=["-Wno-unused-function"])
        xdp, cls = bcc.BPF.XDP, bcc.BPF.SCHED_CLS
        self.fn = {
            name: self.b.load_func(name, kind)
            for name, kind in (
                ("xdp_prologue", xdp),
                ("xdp_pass", xdp),
                ("xdp_drop", xdp),
                ("door_xdp", xdp),
                ("tc_prologue", cls),
                ("tc_pass", cls),
                ("door_tc", cls),
            )
        }

    def fd(self, name: str) -> int:
        return self.fn[name].fd

    def set_template(self, frame: bytes) -> None:
        if len(frame) < TMPL_LEN:
            raise ValueError(f"frame of {len(frame)} bytes: the prologue restores {TMPL_LEN}")
        t = self.b["tmpl"]
        leaf = t.Leaf()
        ct.memmove(ct.byref(leaf), frame[:TMPL_LEN], TMPL_LEN)
        t[ct.c_int(0)] = leaf

    def set_target(self, kind: str, prog_fd: int) -> None:
        """kind 'xdp' or 'tc': the program the prologue tail-calls."""
        self.b[f"{kind}_jmp"][ct.c_int(0)] = ct.c_int(prog_fd)

    def hits(self, idx: int) -> int:
        return sum(self.b["hits"][ct.c_int(idx)])

    def close(self) -> None:
        if self.b is not None:
            self.b.cleanup()
            self.b = None
