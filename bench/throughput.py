"""Throughput into a pod, counted in the pod, normalised per CPU-second.

Two models of the node's NIC:
- veth model: trafgen (one worker, pinned to CPU 0 by trafgen itself) sends from the wire
  namespace straight out of the bridge port `n0`, i.e. into the node's NIC `nic0` (a veth). Every
  step up to the pod's socket runs in softirq on CPU 0.
- native-XDP model: BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES, from this process pinned
  to CPU 0 inside the node namespace, with ingress_ifindex = nic0: the kernel runs the NIC program
  on each frame as a native-XDP driver would, and performs its verdict for real (XDP_REDIRECT
  through the devmap into the pod's veth, XDP_PASS up the node's stack, XDP_DROP). Pages are
  recycled without copying the frame again, so every run goes through bench.c's prologue, which
  restores the frame and tail-calls the program under test; all three programs compared
  (xdp_nic, XDP_PASS, XDP_DROP) pay the same prologue.

Where the pod counts: "door" = the pod's first hook drops and counts (bench.c door_xdp/door_tc);
"socket" = Udp InDatagrams in the pod's namespace, with bench.sink draining the socket from CPU 1.
CPU time: /proc/stat busy time of CPU 0 (generator + datapath + pod stack) plus the sink's own
utime+stime; the all-CPU busy time is recorded too (it also contains whatever else the machine
did). Steal time is recorded so a noisy window can be recognised.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from datapath import libbpf
from datapath.abi import Reason
from datapath.netns import entered
from datapath.stats import Stats
from sim import processes
from sim.frames import UDP_DPORT, wire_to

from .bpfhelpers import HIT_DOOR_TC, HIT_DOOR_XDP, HIT_FALLTHROUGH
from .sysmon import cpu_delta, cpu_sample, forwarded, proc_cpu_s, udp_counters
from .topo import BenchNode, door_kind

REPO = Path(__file__).resolve().parent.parent
GEN_CPU = 0
SINK_CPU = 1
FRAME_PAYLOAD = b"x" * 18  # 14 + 20 + 8 + 18 = 60 bytes: a minimum-size Ethernet frame (no FCS)


def bench_frame(bn: BenchNode) -> bytes:
    frame = bytes(wire_to(bn.cluster, bn.node, bn.pod.ip4, payload=FRAME_PAYLOAD))
    assert len(frame) == 60, len(frame)
    return frame


def trafgen_config(frame: bytes) -> str:
    return "{ " + ", ".join(f"0x{b:02x}" for b in frame) + " }\n"


@contextmanager
def udp_sink(bn: BenchNode, seconds: float):
    """bench.sink in the pod namespace pinned to SINK_CPU; stopped by PID (SIGTERM) on exit."""
    cmd = [
        "nsenter",
        f"--net=/var/run/netns/{bn.pod.ns}",
        "taskset",
        "-c",
        str(SINK_CPU),
        sys.executable,
        "-m",
        "bench.sink",
        "--port",
        str(UDP_DPORT),
        "--seconds",
        str(seconds),
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"bench.sink did not start: {line!r} {proc.stderr.read()[-500:]}")
        yield proc
    finally:
        processes.stop(proc, grace=5)


@contextmanager
def trafgen(bn: BenchNode, frame: bytes, seconds: float):
    """trafgen in the wire namespace out of port n0 (into nic0); bounded by `timeout`."""
    with tempfile.TemporaryDirectory(prefix="xdpcni-bench-") as tmp:
        cfg = os.path.join(tmp, "frame.cfg")
        with open(cfg, "w") as fh:
            fh.write(trafgen_config(frame))
        cmd = [
            "nsenter",
            f"--net=/var/run/netns/{bn.wire}",
            "timeout",
            "-s",
            "TERM",
            "-k",
            "3",
            f"{seconds:.1f}",
            "trafgen",
            "-i",
            cfg,
            "-o",
            bn.node.wire_port,
            "-P",
            "1",
            "--no-sock-mem",
            "-Q",
            "-C",
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(0.3)
            if proc.poll() is not None:
                raise RuntimeError(f"trafgen exited early: {proc.stderr.read()[-500:]}")
            yield proc
        finally:
            processes.stop(proc, grace=8)  # `timeout` forwards SIGTERM to trafgen


class Counters:
    """Everything sampled at both ends of a window."""

    def __init__(self, bn: BenchNode, prog_fds: dict[str, int] | None = None):
        self.bn = bn
        self.prog_fds = prog_fds or {}

    def sample(self) -> dict:
        bn = self.bn
        out = {
            "door_xdp": bn.progs.hits(HIT_DOOR_XDP),
            "door_tc": bn.progs.hits(HIT_DOOR_TC),
            "fallthrough": bn.progs.hits(HIT_FALLTHROUGH),
            "pod_udp": udp_counters(bn.pod.ns),
            "node_forwarded": forwarded(bn.node.ns),
            "nic0": bn.link_stats(bn.node.ns, bn.node.nic),
            "host_veth": bn.link_stats(bn.node.ns, bn.pod.link.host_ifname),
            "pod_eth0": bn.link_stats(bn.pod.ns, "eth0"),
            "wire_port": bn.link_stats(bn.wire, bn.node.wire_port),
        }
        with Stats(bn.node.pin_root) as st:
            out["xdpcni_fwd"] = st.packets(bn.pod.ep.ep_id, Reason.FWD_NIC_TO_POD)
            out["xdpcni_node_pass"] = sum(st.totals([0]).values())
        out["progs"] = {}
        for name, fd in self.prog_fds.items():
            info = libbpf.prog_info(fd)
            out["progs"][name] = {"run_time_ns": info.run_time_ns, "run_cnt": info.run_cnt}
        out["t"] = time.monotonic()
        return out


def _diff(a, b):
    if isinstance(a, dict):
        return {k: _diff(a[k], b[k]) for k in a}
    return b - a


def summarise(where: str, d: dict, cpu: dict, sink_cpu_s: float, offered: int | None) -> dict:
    """Delivered count, rates and per-CPU-second figures from a window's deltas."""
    wall = cpu["wall_s"]
    if where in ("door", "nic"):
        delivered = d["door_xdp"] + d["door_tc"]
    else:
        delivered = d["pod_udp"]["in"]
    cpu0 = cpu["busy_s"].get(GEN_CPU, 0.0)
    cpu_s = cpu0 + sink_cpu_s
    all_cpu = sum(cpu["busy_s"].values())
    res = {
        "delivered": delivered,
        "wall_s": round(wall, 3),
        "pps": round(delivered / wall),
        "cpu_s": round(cpu_s, 3),
        "cpu0_busy_s": cpu0,
        "sink_cpu_s": round(sink_cpu_s, 3),
        "all_cpu_busy_s": round(all_cpu, 3),
        "steal_s": cpu["steal_s"],
        "per_cpu_s": round(delivered / cpu_s) if cpu_s > 0 else None,
        "per_all_cpu_s": round(delivered / all_cpu) if all_cpu > 0 else None,
        "per_cpu0_s": round(delivered / cpu0) if cpu0 > 0 else None,
        "pod_socket_drops": d["pod_udp"]["rcvbuf_errors"],
        "pod_udp_errors": d["pod_udp"]["in_errors"] + d["pod_udp"]["csum_errors"],
        "node_forwarded": d["node_forwarded"],
        "xdpcni_fast_path": d["xdpcni_fwd"],
        "xdpcni_node_pass": d["xdpcni_node_pass"],
        "prologue_fallthrough": d["fallthrough"],
        "pod_eth0_rx_dropped": d["pod_eth0"]["rx_dropped"],
        "host_veth_tx_dropped": d["host_veth"]["tx_dropped"],
        "nic_rx_dropped": d["nic0"]["rx_dropped"],
    }
    if offered is not None:
        res["offered"] = offered
        res["lost"] = max(offered - delivered, 0)
        res["loss_pct"] = round(100.0 * res["lost"] / offered, 3) if offered else 0.0
    if d.get("progs"):
        res["bpf_stats"] = {
            n: {**v, "ns_per_run": round(v["run_time_ns"] / v["run_cnt"], 1) if v["run_cnt"] else None}
            for n, v in d["progs"].items()
        }
    return res


def veth_run(
    bn: BenchNode, mode: str, where: str, window: float, warmup: float, prog_fds: dict[str, int] | None = None
) -> dict:
    """One trafgen window in configuration `mode` (kernel, tc, xdp), counted at `where`."""
    bn.configure(mode, door=(where == "door"))  # where "nic": mode "nic-drop" counts at the NIC
    frame = bench_frame(bn)
    ctr = Counters(bn, prog_fds)
    sink_ctx = udp_sink(bn, warmup + window + 10) if where == "socket" else _null()
    with sink_ctx as sink, trafgen(bn, frame, warmup + window + 5):
        time.sleep(warmup)
        s0, c0 = ctr.sample(), cpu_sample()
        k0 = proc_cpu_s(sink.pid) if sink else 0.0
        time.sleep(window)
        s1, c1 = ctr.sample(), cpu_sample()
        k1 = proc_cpu_s(sink.pid) if sink else 0.0
    d = _diff(s0, s1)
    offered = d["wire_port"]["tx_packets"] + d["wire_port"]["tx_dropped"]
    res = summarise(where, d, cpu_delta(c0, c1), k1 - k0, offered)
    res.update(model="veth", mode=mode, where=where, door_hook=door_kind(mode) if where == "door" else None)
    return res


@contextmanager
def _null():
    yield None


@contextmanager
def pinned_cpu(cpu: int):
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


class LiveFrames:
    """Runs the prologue (and the program under test behind it) on live frames from CPU 0."""

    def __init__(self, bn: BenchNode):
        self.bn = bn
        self.frame = bench_frame(bn)
        bn.progs.set_template(self.frame)
        self.ctx = libbpf.XdpMd(data=0, data_end=len(self.frame), ingress_ifindex=bn.nic_ifindex)
        self.prologue = bn.progs.fd("xdp_prologue")

    def target(self, program: str) -> None:
        fd = self.bn.fds["xdp_nic"] if program == "xdp_nic" else self.bn.progs.fd(program)
        self.bn.progs.set_target("xdp", fd)

    def blast(self, seconds: float, batch: int, chunk: int) -> tuple[int, float]:
        """Run frames through the program for `seconds` (whole calls of `chunk` frames); the caller is
        on CPU 0 in the node namespace. Returns (frames, kernel-measured mean ns per frame)."""
        sent, ns_total = 0, 0.0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            _ret, _out, dur = libbpf.prog_test_run(
                self.prologue,
                self.frame,
                repeat=chunk,
                flags=libbpf.BPF_F_TEST_XDP_LIVE_FRAMES,
                batch_size=batch,
                ctx=self.ctx,
                want_output=False,
            )
            sent += chunk
            ns_total += dur * chunk
        return sent, (ns_total / sent if sent else 0.0)

    def calibrate(self, batch: int, seconds: float) -> int:
        """Frames per call so that one call lasts ~0.25 s (each call sets up a page pool: ~20 ms)."""
        probe = 50_000
        t0 = time.monotonic()
        n, _ = self.blast(max(seconds, 0.05), batch, probe)
        fps = n / max(time.monotonic() - t0, 1e-3)
        return int(min(max(fps * 0.25, 20_000), 5_000_000))

    def run(
        self,
        config: str,
        program: str,
        where: str,
        window: float,
        warmup: float,
        batch: int,
        prog_fds: dict[str, int] | None = None,
    ) -> dict:
        bn = self.bn
        bn.configure(config, door=(where == "door"))
        self.target(program)
        ctr = Counters(bn, prog_fds)
        sink_ctx = udp_sink(bn, warmup + window + 10) if where == "socket" else _null()
        with sink_ctx as sink, pinned_cpu(GEN_CPU), entered(bn.node.ns):
            chunk = self.calibrate(batch, warmup)
            time.sleep(0.05)
            s0, c0 = ctr.sample(), cpu_sample()
            k0 = proc_cpu_s(sink.pid) if sink else 0.0
            sent, ns_per_frame = self.blast(window, batch, chunk)
            time.sleep(0.02)  # let the last batch's softirq work finish
            s1, c1 = ctr.sample(), cpu_sample()
            k1 = proc_cpu_s(sink.pid) if sink else 0.0
        d = _diff(s0, s1)
        res = summarise(where, d, cpu_delta(c0, c1), k1 - k0, None if where == "nic" else sent)
        if where == "nic":  # the ceiling: XDP_DROP on the NIC, nothing reaches the pod
            res["delivered"] = sent
            res["pps"] = round(sent / res["wall_s"])
            res["per_cpu_s"] = round(sent / res["cpu_s"]) if res["cpu_s"] else None
            res["per_all_cpu_s"] = round(sent / res["all_cpu_busy_s"]) if res["all_cpu_busy_s"] else None
        res.update(
            model="native",
            mode=config,
            program=program,
            where=where,
            batch=batch,
            frames_run=sent,
            frames_per_call=chunk,
            test_run_ns_per_frame=round(ns_per_frame, 1),
            door_hook=door_kind(config) if where == "door" else None,
        )
        return res
