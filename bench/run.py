"""xdpcni benchmarks, side by side in one run: `python -m bench.run [--quick] [--out PATH]`.

  1. throughput into a pod, counted in the pod ("to the pod's door" and "into the pod's socket"),
     per CPU-second, in a veth-NIC model (trafgen) and a native-XDP-NIC model (live frames), with
     the kernel path and the XDP_DROP ceiling measured in the same run (bench/throughput.py);
  2. UDP latency, sockperf ping-pong, kernel path vs xdpcni (bench/latency.py);
  3. program cost: BPF_PROG_TEST_RUN durations and bpf_stats during runs (bench/progcost.py), and
     the conntrack gate's cost in xdp_nic and tc_nic, off vs on, hit vs miss (bench/realnode.py);
  4. a realistic node: kube-proxy-like nftables rules with conntrack on, kernel path vs the fast path
     with netfilter: respect, TCP bulk (iperf3) both ways and the UDP flood (bench/realnode.py);
  5. CNI ADD/DEL latency, xdpcni vs the reference bridge and ptp plugins (bench/cnibench.py);
  6. a printed table, results JSON (raw figures and ratios) and docs/bench.png (bench/report.py).

Safety: every host is a network namespace made here (prefix "xb" + 6 hex digits); nothing is
attached to, addressed or routed through the root namespace; every phase is bounded in time and
the whole run by an alarm; namespaces, links, attachments and pins are removed in finally blocks,
also on SIGTERM/SIGINT and on the alarm. Heavy runs are serialised machine-wide with
flock(/tmp/xdpcni-heavy.lock); when a parent `flock` already holds it, the run uses that.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import signal
import socket
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOCK_PATH = "/tmp/xdpcni-heavy.lock"
# What the full CNI phase (100 pods, 10 and 1000 endpoints, 40 cycles each) may take on a slow day:
# 72.7 s measured for 84 pods and 15 cycles at 2026-11-30 15:21 UTC (agent ADD ~20 ms, in-process
# ~150 ms); the 230 s of the 333-ms in-process days cut every run since to 84 pods.
CNI_FULL_S = 140


@dataclass
class Params:
    quick: bool
    reps: int  # repetitions of every live-frames and latency figure (interleaved)
    veth_reps: int  # repetitions of the trafgen figures (the noisiest)
    window: float  # seconds counted per throughput run
    warmup: float  # seconds sent before counting
    batches: list[int]  # live-frames batch sizes tried for the pod-side overflow check
    sweep_window: float
    lat_seconds: float
    tr_repeat: int  # BPF_PROG_TEST_RUN repeat
    tr_rounds: int
    stats_window: float
    cni_pods: int
    existing: list[int] = field(default_factory=list)
    cycles: int = 40  # ADD+DEL cycles per endpoint count (the 1000-vs-10 ratio is of their p50s)
    gate_rounds: int = 5  # conntrack gate cost: rounds of every case (tr_repeat runs each)
    rn_tcp_seconds: float = 3.0  # realistic node: iperf3 -t
    rn_tcp_reps: int = 2  # realistic node: kernel and respect, each direction
    rn_bypass_reps: int = 1  # realistic node: TC fast path with the gate off, for reference
    budget_s: int = 570  # hard stop for the whole run (alarm), cleanup included after it

    @classmethod
    def full(cls) -> Params:
        return cls(
            quick=False,
            reps=3,
            veth_reps=3,
            window=3.0,
            warmup=0.7,
            batches=[16, 32, 64, 128, 256],
            sweep_window=1.5,
            lat_seconds=3,
            tr_repeat=1_000_000,
            tr_rounds=7,
            stats_window=2.0,
            cni_pods=100,
            existing=[10, 1000],
            cycles=40,
            gate_rounds=4,
            rn_tcp_seconds=2.0,
        )

    @classmethod
    def quick_run(cls) -> Params:
        return cls(
            quick=True,
            reps=1,
            veth_reps=1,
            window=1.0,
            warmup=0.4,
            batches=[64, 256],
            sweep_window=0.8,
            lat_seconds=1,
            tr_repeat=200_000,
            tr_rounds=3,
            stats_window=1.0,
            cni_pods=8,
            existing=[10, 100],
            cycles=3,
            gate_rounds=3,
            rn_tcp_seconds=1.0,
            rn_tcp_reps=1,
            rn_bypass_reps=0,
            budget_s=300,
        )


class Aborted(Exception):
    pass


MAIN_PID = os.getpid()


def _on_signal(signum, frame):
    # pyroute2 forks helper processes (netns sockets) and stops them with SIGTERM: a forked copy of
    # this process must just exit, never unwind into our cleanup code.
    if os.getpid() != MAIN_PID:
        os._exit(128 + signum)
    raise Aborted(f"stopped by {signal.Signals(signum).name}")


def heavy_lock(log) -> int | None:
    """Hold the machine-wide lock for heavy runs; None when a parent `flock` already holds it."""
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == LOCK_PATH:
                return None  # inherited from `flock LOCK_PATH ...`
        except OSError:
            continue
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log(f"waiting for {LOCK_PATH} (another heavy run is going on)")
        fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def machine() -> dict:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as fh:
            mem = fh.readline().split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        import bcc

        bcc_version = getattr(bcc, "__version__", "?")
    except Exception:
        bcc_version = None
    try:
        from datapath.objload import libbpf_version

        libbpf_v = ".".join(map(str, libbpf_version()))
    except Exception:
        libbpf_v = None
    try:
        import subprocess

        clang = subprocess.run(["clang", "--version"], capture_output=True, text=True, timeout=10).stdout
        clang = clang.splitlines()[0] if clang else None
    except Exception:
        clang = None
    return {
        "hostname": socket.gethostname(),
        "kernel": platform.release(),
        "os": _os_release(),
        "cpu_model": cpu,
        "cpus": os.cpu_count(),
        "memory": mem,
        "python": platform.python_version(),
        "bcc": bcc_version,
        "clang": clang,
        "libbpf": libbpf_v,
    }


def _os_release() -> str:
    try:
        with open("/etc/os-release") as fh:
            for ln in fh:
                if ln.startswith("PRETTY_NAME="):
                    return ln.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return ""


class Bench:
    def __init__(self, params: Params, log):
        self.p = params
        self.log = log
        self.results: dict = {"throughput": {}, "errors": []}
        self.progs = None
        self.bn = None

    def phase(self, name: str, fn) -> None:
        t0 = time.monotonic()
        self.log(f"[{time.strftime('%H:%M:%S')}] {name}")
        try:
            fn()
        except Aborted:
            raise
        except Exception as exc:
            self.log(f"  {name} FAILED: {exc}")
            self.results["errors"].append(
                {
                    "phase": name,
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc()[-3000:],
                }
            )
        self.results.setdefault("phase_seconds", {})[name] = round(time.monotonic() - t0, 1)

    # -- phases --------------------------------------------------------------------------------------
    def setup(self) -> None:
        from .bpfhelpers import BenchPrograms, xdp_attach_type_for
        from .topo import BenchNode

        # The datapath first: the helpers' XDP programs must match its toolchain (bench/bpfhelpers.py).
        self.bn = BenchNode(None, log=self.log)
        self.progs = self.bn.progs = BenchPrograms(xdp_attach_type_for(self.bn.toolchain))
        self.results["topology"] = {
            "prefix": self.bn.cluster.prefix,
            "node_ns": self.bn.node.ns,
            "pod_ns": self.bn.pod.ns,
            "pod_ip": self.bn.pod.ip4,
            "nic": self.bn.node.nic,
            "frame": "64-byte UDP/IPv4 (60 bytes + FCS), wire host 198.18.0.1 -> pod",
            "toolchain": self.bn.toolchain,
        }

    def veth_throughput(self) -> None:
        from .throughput import veth_run

        runs = []
        self.results["throughput"]["veth"] = {
            "how": "trafgen (1 worker, CPU 0) in the wire namespace out of the bridge port into nic0 (veth); "
            "CPU = CPU 0 busy (/proc/stat) + the pod's sink process",
            "runs": runs,
        }
        plan = [(m, w) for m in ("kernel", "tc", "xdp") for w in ("door", "socket")] + [("nic-drop", "nic")]
        for rep in range(self.p.veth_reps):
            for mode, where in plan:
                r = veth_run(self.bn, mode, where, self.p.window, self.p.warmup)
                r["rep"] = rep
                runs.append(r)
                self.log(
                    f"  veth  {mode:8} {where:6} {r['pps'] / 1e3:8.0f} kpps  "
                    f"{r['per_cpu_s'] / 1e3:8.0f} k/CPU-s  loss {r.get('loss_pct')}%"
                )

    def native_throughput(self) -> None:
        from .throughput import LiveFrames

        lf = LiveFrames(self.bn)
        nat = self.results["throughput"]["native"] = {
            "how": "BPF_PROG_TEST_RUN + BPF_F_TEST_XDP_LIVE_FRAMES from CPU 0 in the node namespace, "
            "ingress_ifindex=nic0; a prologue restores the frame and tail-calls the program under test",
            "sweep": [],
            "runs": [],
        }
        # Batch size: the largest at which the pod side loses nothing (veth ring of 256 frames).
        for batch in self.p.batches:
            for where in ("door", "socket"):
                r = lf.run("live-xdp", "xdp_nic", where, self.p.sweep_window, 0.2, batch)
                nat["sweep"].append(r)
                self.log(
                    f"  sweep batch {batch:3} {where:6} {r['per_cpu_s'] / 1e3:8.0f} k/CPU-s  "
                    f"loss {r['loss_pct']}%"
                )
        ok = [b for b in self.p.batches if all(r["loss_pct"] <= 0.1 for r in nat["sweep"] if r["batch"] == b)]
        if ok:
            batch = max(ok)
        else:
            batch = min(
                self.p.batches, key=lambda b: max(r["loss_pct"] for r in nat["sweep"] if r["batch"] == b)
            )
        nat["batch"] = batch
        nat["batch_rule"] = "largest batch whose sweep runs lost <= 0.1% of frames on the pod side"
        self.log(f"  batch size {batch}")
        plan = [
            ("live-kernel", "xdp_pass", "door"),
            ("live-xdp", "xdp_nic", "door"),
            ("live-kernel", "xdp_pass", "socket"),
            ("live-xdp", "xdp_nic", "socket"),
            ("live-kernel", "xdp_drop", "nic"),
        ]
        for rep in range(self.p.reps):
            for cfg, prog, where in plan:
                r = lf.run(cfg, prog, where, self.p.window, self.p.warmup, batch)
                r["rep"] = rep
                nat["runs"].append(r)
                self.log(
                    f"  live  {prog:8} {where:6} {r['per_cpu_s'] / 1e3:8.0f} k/CPU-s  "
                    f"({r['pps'] / 1e3:.0f} kpps wall)  loss {r.get('loss_pct')}%"
                )

    def latency(self) -> None:
        from .latency import sockperf_run

        runs = []
        self.results["latency"] = {
            "how": "sockperf ping-pong UDP 64 B, --full-rtt, client CPU 0 in the wire "
            "namespace, server CPU 1 in the pod; blocking and --nonblocked "
            "(busy-polling) sockets",
            "runs": runs,
        }
        for rep in range(self.p.reps):
            for busy in (False, True):
                for mode in ("kernel", "tc", "xdp"):
                    r = sockperf_run(self.bn, mode, self.p.lat_seconds, busy=busy)
                    r["rep"] = rep
                    runs.append(r)
                    self.log(
                        f"  {r['sockets']:12} {mode:6} p50 {r['p50_us']:7.1f} us  p99 {r['p99_us']:7.1f} us"
                    )

    def program_cost(self) -> None:
        from datapath import libbpf

        from .latency import sockperf_run
        from .progcost import prog_stats, stats_per_run, test_run_costs
        from .throughput import LiveFrames, veth_run

        pc = self.results["program_cost"] = {}
        pc["test_run"] = test_run_costs(self.bn, self.p.tr_repeat, self.p.tr_rounds)
        self.log(
            f"  test run: xdp_nic {pc['test_run']['xdp']['xdp_nic_ns']} ns, "
            f"tc_nic {pc['test_run']['tc']['tc_nic_ns']} ns (each minus an empty program)"
        )
        bn, progs = self.bn, self.progs
        fds = {
            **{n: bn.fds[n] for n in ("xdp_nic", "tc_nic", "tc_pod", "xdp_pod")},
            "xdp_prologue": progs.fd("xdp_prologue"),
            "door_xdp": progs.fd("door_xdp"),
            "door_tc": progs.fd("door_tc"),
        }
        raw = pc["bpf_stats_raw"] = {}
        stats_fd = libbpf.enable_stats()
        try:
            raw["tc_veth_door"] = veth_run(bn, "tc", "door", self.p.stats_window, 0.3, prog_fds=fds)[
                "bpf_stats"
            ]
            raw["xdp_veth_door"] = veth_run(bn, "xdp", "door", self.p.stats_window, 0.3, prog_fds=fds)[
                "bpf_stats"
            ]
            lf = LiveFrames(bn)
            batch = self.results["throughput"].get("native", {}).get("batch", 64)
            raw["live_xdp_nic_door"] = lf.run(
                "live-xdp", "xdp_nic", "door", self.p.stats_window, 0.2, batch, prog_fds=fds
            )["bpf_stats"]
            raw["live_xdp_drop"] = lf.run(
                "live-kernel", "xdp_drop", "nic", self.p.stats_window, 0.2, batch, prog_fds=fds
            )["bpf_stats"]
            before = prog_stats(fds)
            sockperf_run(bn, "tc", max(1, self.p.lat_seconds / 2))
            raw["tc_sockperf"] = stats_per_run(before, prog_stats(fds))
        finally:
            os.close(stats_fd)

        def nspr(run, prog):
            return raw.get(run, {}).get(prog, {}).get("ns_per_run")

        live_nic = nspr("live_xdp_nic_door", "xdp_prologue")
        live_drop = nspr("live_xdp_drop", "xdp_prologue")
        pc["bpf_stats"] = {
            "note": "kernel run_time_ns/run_cnt while BPF_STATS_RUN_TIME was on (only during these extra "
            "runs, so the throughput runs above paid no accounting); includes the accounting's own "
            "clock reads",
            "xdp_nic_on_veth": nspr("xdp_veth_door", "xdp_nic"),
            "tc_nic_on_veth": nspr("tc_veth_door", "tc_nic"),
            "tc_pod_latency": nspr("tc_sockperf", "tc_pod"),
            "tc_nic_latency": nspr("tc_sockperf", "tc_nic"),
            "live_prologue_xdp_nic": live_nic,
            "live_prologue_xdp_drop": live_drop,
            "live_xdp_nic_minus_drop": round(live_nic - live_drop, 1) if live_nic and live_drop else None,
            "door_xdp": nspr("xdp_veth_door", "door_xdp"),
            "door_tc": nspr("tc_veth_door", "door_tc"),
        }
        b = pc["bpf_stats"]
        # A counting drop program's bpf_stats figure is mostly the accounting's own cost (two clock
        # reads): subtracting it estimates the program's own time on real traffic.
        if b["xdp_nic_on_veth"] and b["door_xdp"]:
            b["xdp_nic_on_veth_minus_door"] = round(b["xdp_nic_on_veth"] - b["door_xdp"], 1)
        if b["tc_nic_on_veth"] and b["door_tc"]:
            b["tc_nic_on_veth_minus_door"] = round(b["tc_nic_on_veth"] - b["door_tc"], 1)
        self.log(
            "  bpf_stats: " + ", ".join(f"{k} {v} ns" for k, v in pc["bpf_stats"].items() if k != "note")
        )

    def conntrack_gate_cost(self) -> None:
        from .realnode import gate_costs

        g = self.results.setdefault("program_cost", {})["conntrack_gate"] = gate_costs(
            self.bn, self.p.tr_repeat, self.p.gate_rounds
        )
        for hook in ("xdp", "tc"):
            h = g[hook]
            bad = [k for k, c in h["checks"].items() if not c["ok"]]
            self.log(
                f"  {h['program']}: "
                + ", ".join(f"{k} {h[k + '_ns']}" for k in ("udp_off", "udp_on_hit", "udp_on_miss"))
                + "; "
                + ", ".join(f"{k} {h[k + '_ns']}" for k in ("tcp_off", "tcp_on_hit", "tcp_on_miss"))
                + " ns"
                + (f"  WRONG VERDICT: {bad}" if bad else "")
            )
            if bad:
                raise RuntimeError(f"{h['program']}: unexpected verdicts {bad}: {h['checks']}")

    def monitor_cost(self) -> None:
        from .realnode import monitor_costs

        m = self.results.setdefault("program_cost", {})["monitor"] = monitor_costs(
            self.bn, self.p.tr_repeat, self.p.gate_rounds
        )
        for hook in ("xdp", "tc"):
            h = m[hook]
            self.log(
                f"  {h['program']}: monitor off {h['monitor_off_ns']} ns, "
                f"on at 1/100 sampling {h['monitor_on_1_in_100_ns']} ns"
            )

    def realistic_node(self) -> None:
        from .realnode import realistic_node

        self.results["realistic_node"] = realistic_node(
            self.bn,
            tcp_seconds=self.p.rn_tcp_seconds,
            tcp_reps=self.p.rn_tcp_reps,
            bypass_reps=self.p.rn_bypass_reps,
            udp_window=self.p.window,
            udp_warmup=self.p.warmup,
            log=self.log,
        )

    def cni(self) -> None:
        from . import cnibench

        self.bn.configure("tc")
        self.results["cni"] = cnibench.run(
            self.bn.node, self.p.cni_pods, self.p.existing, self.p.cycles, log=self.log
        )
        c = self.results["cni"]
        for p in c["plugins"]:
            self.log(
                f"  {p:13} ADD p50 {c['add'][p]['p50_ms']:7.1f} p99 {c['add'][p]['p99_ms']:7.1f}   "
                f"DEL p50 {c['del'][p]['p50_ms']:7.1f} p99 {c['del'][p]['p99_ms']:7.1f} ms"
            )

    def close(self) -> None:
        if self.bn is not None:
            try:
                self.bn.close()
            except Exception as exc:
                self.log(f"cleanup: {exc}")
            self.bn = None
        if self.progs is not None:
            self.progs.close()
            self.progs = None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short smoke run (about 1.5 minutes)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results.json"), help="results JSON path")
    ap.add_argument("--plot", default=str(REPO / "docs" / "bench.png"), help="plot path ('' for none)")
    args = ap.parse_args(argv)
    params = Params.quick_run() if args.quick else Params.full()

    def log(msg: str) -> None:
        print(msg, flush=True)

    if os.geteuid() != 0:
        log("bench: needs root (network namespaces, BPF)")
        return 2
    os.chdir(REPO)  # helper processes are started as `python -m bench.*`
    lock_fd = heavy_lock(log)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    signal.alarm(params.budget_s)
    t0 = time.monotonic()
    bench = Bench(params, log)
    bench.results["meta"] = {
        **machine(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": params.quick,
        "params": asdict(params),
        "git_commit": _git_commit(),
    }
    status = 0
    try:
        bench.phase("setup: cluster, datapath, pod, bench programs", bench.setup)
        if bench.bn is None:
            raise RuntimeError("setup failed: " + bench.results["errors"][-1]["error"])
        bench.phase("throughput, veth NIC model (trafgen)", bench.veth_throughput)
        bench.phase("throughput, native-XDP model (live frames)", bench.native_throughput)
        bench.phase("latency (sockperf)", bench.latency)
        bench.phase("program cost (test run, bpf_stats)", bench.program_cost)
        bench.phase("conntrack gate cost (test run, gate off / on hit / on miss)", bench.conntrack_gate_cost)
        bench.phase("monitor cost (test run, monitor off / on at 1-in-100)", bench.monitor_cost)
        bench.phase("realistic node (kube-proxy-like rules, conntrack; TCP and UDP)", bench.realistic_node)
        # The CNI phase needs about 2.5 minutes for 100 pods; on a slow day the alarm would cut it
        # short, so it does fewer pods (recorded) rather than none.
        left = params.budget_s - (time.monotonic() - t0)
        if not params.quick and left < CNI_FULL_S:
            params.cni_pods = max(20, int(params.cni_pods * left / CNI_FULL_S) - 10)
            bench.results["cni_pods_reduced"] = {"seconds_left": round(left), "pods": params.cni_pods}
            log(f"  {left:.0f} s left: CNI phase with {params.cni_pods} pods")
        bench.phase("CNI ADD/DEL", bench.cni)
    except (Aborted, RuntimeError) as exc:
        log(f"bench: aborted: {exc}")
        bench.results["aborted"] = str(exc)
        status = 1
    finally:
        signal.alarm(0)
        try:
            bench.close()
        finally:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
    bench.results["meta"]["run_seconds"] = round(time.monotonic() - t0, 1)

    from .report import breakdown, breakdown_text, build, plot, table

    rows, targets = build(bench.results)
    bench.results["figures"] = rows
    bench.results["targets"] = targets
    try:
        bench.results["breakdown"] = breakdown(bench.results)
    except Exception as exc:  # a missing figure must not lose the run's results
        bench.results["breakdown"] = {"error": str(exc)}
    print()
    print(table(rows, targets))
    if "error" not in bench.results["breakdown"]:
        print()
        print(breakdown_text(bench.results["breakdown"]))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    try:  # `make bench-tcp` keeps its results under "tcp" in the same file (bench/tcp.py): keep them
        with open(args.out) as fh:
            bench.results["tcp"] = json.load(fh)["tcp"]
    except (OSError, ValueError, KeyError):
        pass
    with open(args.out, "w") as fh:
        json.dump(bench.results, fh, indent=1, default=str)
    print(f"\nresults: {args.out}")
    if args.plot:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)
            plot(bench.results, rows, args.plot)
            print(f"plot: {args.plot}")
        except Exception as exc:
            print(f"plot failed: {exc}")
    print(f"run time: {bench.results['meta']['run_seconds']} s")
    if bench.results["errors"]:
        print(
            f"{len(bench.results['errors'])} phase(s) failed: "
            + "; ".join(f"{e['phase']}: {e['error']}" for e in bench.results["errors"])
        )
        status = status or 1
    if lock_fd is not None:
        os.close(lock_fd)
    return status


def _git_commit() -> str | None:
    try:
        head = (REPO / ".git" / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            return (REPO / ".git" / head[5:]).read_text().strip()
        return head
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main())
