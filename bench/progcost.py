"""Program cost: BPF_PROG_TEST_RUN durations and kernel bpf_stats (run_time_ns / run_cnt).

BPF_PROG_TEST_RUN with `repeat` runs the program again and again on the same buffer, so a program
that rewrites the frame would, from the second run on, see its own output (another MAC: the
not-for-us path). Each measurement therefore runs bench.c's prologue, which restores the frame
and tail-calls the program under test; the program's own cost is the difference between
prologue -> program and prologue -> empty program (same prologue, same tail call). The verdict
and output frame of one run are checked, so the figure is the fast path's (redirect), not a
pass.
"""

from __future__ import annotations

import statistics

from scapy.layers.inet import IP
from scapy.layers.l2 import Ether

from datapath import libbpf
from datapath.netns import entered

from .throughput import GEN_CPU, bench_frame, pinned_cpu
from .topo import BenchNode

XDP_REDIRECT = 4
TC_ACT_REDIRECT = 7


def _interleaved(
    progs, kind: str, frame: bytes, repeat: int, rounds: int, empty: int, target: int, ctx=None
) -> dict:
    """Rounds of (empty program, prologue -> empty, prologue -> target), interleaved so that drift on
    a noisy machine hits all three alike; the program's cost is the median of per-round differences."""
    prologue = progs.fd(f"{kind}_prologue")
    r_empty, r_base, r_full, diffs, ret = [], [], [], [], None
    for _ in range(rounds):
        r_empty.append(libbpf.prog_test_run(empty, frame, repeat=repeat, ctx=ctx)[2])
        progs.set_target(kind, empty)
        b = libbpf.prog_test_run(prologue, frame, repeat=repeat, ctx=ctx)[2]
        progs.set_target(kind, target)
        ret, _out, f = libbpf.prog_test_run(prologue, frame, repeat=repeat, ctx=ctx)
        r_base.append(b)
        r_full.append(f)
        diffs.append(f - b)
    return {
        "empty_program_ns": statistics.median(r_empty),
        "prologue_to_empty_ns": statistics.median(r_base),
        "prologue_to_target_ns": statistics.median(r_full),
        "target_ns": statistics.median(diffs),
        "verdict": ret,
        "rounds_ns": {
            "empty": r_empty,
            "prologue_to_empty": r_base,
            "prologue_to_target": r_full,
            "differences": diffs,
        },
    }


def test_run_costs(bn: BenchNode, repeat: int, rounds: int) -> dict:
    progs = bn.progs
    frame = bench_frame(bn)
    progs.set_template(frame)
    out: dict = {
        "method": f"BPF_PROG_TEST_RUN, repeat={repeat}, {rounds} interleaved rounds, medians, ns per run"
    }
    xdp_ctx = libbpf.XdpMd(data=0, data_end=len(frame), ingress_ifindex=bn.nic_ifindex)
    # On the datapath CPU, like every other figure (an unpinned thread may migrate between rounds).
    with entered(bn.node.ns), pinned_cpu(GEN_CPU):
        # One run through the real program: it must take the fast path (verdict and rewrite).
        progs.set_target("xdp", bn.fds["xdp_nic"])
        ret, outf, _ = libbpf.prog_test_run(progs.fd("xdp_prologue"), frame, ctx=xdp_ctx)
        f = Ether(outf)
        out["xdp_nic_check"] = {
            "verdict": ret,
            "ttl": f[IP].ttl,
            "dst_mac": f.dst,
            "fast_path": ret == XDP_REDIRECT and f[IP].ttl == 63 and f.dst == bn.pod.link.pod_mac,
        }
        x = _interleaved(
            progs, "xdp", frame, repeat, rounds, progs.fd("xdp_pass"), bn.fds["xdp_nic"], xdp_ctx
        )
        x["xdp_nic_ns"] = x.pop("target_ns")
        out["xdp"] = x
        progs.set_target("tc", bn.fds["tc_nic"])
        ret, outf, _ = libbpf.prog_test_run(progs.fd("tc_prologue"), frame)
        f = Ether(outf)
        out["tc_nic_check"] = {
            "verdict": ret,
            "ttl": f[IP].ttl,
            "dst_mac": f.dst,
            "fast_path": ret == TC_ACT_REDIRECT and f[IP].ttl == 63 and f.dst == bn.pod.link.pod_mac,
        }
        t = _interleaved(progs, "tc", frame, repeat, rounds, progs.fd("tc_pass"), bn.fds["tc_nic"])
        t["tc_nic_ns"] = t.pop("target_ns")
        out["tc"] = t
    return out


def stats_per_run(before: dict, after: dict) -> dict:
    out = {}
    for name in after:
        dt = after[name]["run_time_ns"] - before[name]["run_time_ns"]
        dc = after[name]["run_cnt"] - before[name]["run_cnt"]
        out[name] = {"runs": dc, "run_time_ns": dt, "ns_per_run": round(dt / dc, 1) if dc else None}
    return out


def prog_stats(fds: dict[str, int]) -> dict:
    res = {}
    for name, fd in fds.items():
        info = libbpf.prog_info(fd)
        res[name] = {"run_time_ns": info.run_time_ns, "run_cnt": info.run_cnt}
    return res
