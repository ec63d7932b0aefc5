"""The TCP benchmarks users compare CNIs by: `python -m bench.tcp [--quick] [--out] [--plot]` (root).

TCP_STREAM (iperf3, one stream, 1 and 2 CPUs), TCP_RR (sockperf TCP ping-pong) and TCP_CRR (wrk,
`Connection: close`: a new connection per request) over the paths of a cluster: pod <-> pod on one
node, pod <-> pod across nodes, pod -> its node, wire host -> pod, pod -> Service ClusterIP with the
backend on the same node and on the other node. Four clusters side by side in one run, the runs
interleaved so each row's figures come from the same minutes:
  tc      xdpcni, mode tc, netfilter: respect (conntrack gate on)
  xdp     xdpcni, mode xdp, netfilter: respect
  ptp     Debian's containernetworking-plugins `ptp` + host-local (the reference for every ratio)
  bridge  Debian's `bridge` + host-local (cni0, isGateway, bridge-nf-call-iptables=1 as kube-proxy needs)
Every cluster is the project's netns simulator (sim/topology.Cluster(2): a wire namespace with the
switch and the wire host, two node namespaces). Every node carries the kube-proxy-like ruleset of
bench/realnode.py (nat KUBE-SERVICES with 1000 non-matching ClusterIP rules, filter FORWARD with
`ct state invalid drop`, nf_conntrack_tcp_be_liberal=1) plus the two Services measured here, so
conntrack tracks every flow the kernel sees, as on a Kubernetes node.

CPU: the benchmark's own tasks over the client's run (client, server, ksoftirqd; scheduler-exact, so
other processes on this shared machine are not counted; /proc/stat busy time is kept too). "Node
side" per GB is that minus the same two endpoints' figure with no node between them, measured next
to the row in the same repetition (ptp cluster: hosts on the wire's bridge, a veth pair; see
bench/tcp_report.BASELINE and docs/bench.md "TCP matrix"). TCP_RR and TCP_CRR run their client and
server SCHED_FIFO (chrt -f 10): on this shared 2-vCPU VM other processes' time slices otherwise put
2-5 ms into every p99.

Safety as bench/run.py: namespaces only (prefix "xb" + 6 hex digits per cluster), the machine-wide
heavy lock, an alarm, and cleanup in finally blocks also on SIGTERM/SIGINT/the alarm.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field

from pyroute2 import IPRoute, netns

from sim import processes
from sim.cni_runtime import invoke
from sim.topology import Cluster, Pod, run_in, sysctl

from . import tcp_parse
from .realnode import kube_proxy_ruleset
from .sysmon import cpu_delta, cpu_sample, forwarded
from .tcp_report import BASELINE
from .topo import BENCH_PIN_BASE, bench_prefix

KINDS = ("tc", "xdp", "ptp", "bridge")
REFERENCE = "ptp"
IPERF_PORT, RR_PORT, CRR_PORT = 5201, 11111, 8080
# Services send CRR to their backends' second responder (targetPort 8081): the backend's TIME_WAIT
# sockets from the direct pod -> pod CRR run (same client port, same backend) would otherwise meet the
# Service's SYNs, whose DNATed ISN and timestamps the kernel rejects -> 1 s SYN retransmits (seen: 0.5k
# instead of 4.5k connections/s when the Service run followed the direct one within a minute).
SVC_CRR_PORT = 8081
CLIENT_CPU, SERVER_CPU = 0, 1
SERVICE_VIPS = {"svc-same": "10.96.250.1", "svc-cross": "10.96.250.2"}  # -> pod b (node 0), pod c (node 1)
# (key, label, client, server): client "wire" or a pod name; server a pod name, "node0" or a Service.
PATHS = (
    ("pod-pod-same", "pod -> pod, same node", "a", "b"),
    ("pod-pod-cross", "pod -> pod, other node", "a", "c"),
    ("pod-node", "pod -> its node", "a", "node0"),
    ("wire-pod", "wire host -> pod", "wire", "b"),
    ("svc-same", "pod -> ClusterIP, backend same node", "a", "svc-same"),
    ("svc-cross", "pod -> ClusterIP, backend other node", "a", "svc-cross"),
)
# The node-side baselines (bench/tcp_report.BASELINE), TCP_STREAM in the ptp cluster only: the same
# endpoints with no node between them. Hosts w2, w3 hang off the wire's bridge like nodes (a veth each,
# tx checksumming off on the bridge port); e1, e2 are two namespaces joined by one veth pair.
BASELINE_PATHS = {
    "wire-wire": ("wire-wire", "wire host -> host on the wire (no node)", "wire", "w2"),
    "hosts-wire": ("hosts-wire", "host -> host, across the wire (no node)", "w2", "w3"),
    "veth-pair": ("veth-pair", "netns -> netns over one veth pair (no node)", "e1", "e2"),
}
WIRE_HOSTS = {"w2": "198.18.0.200", "w3": "198.18.0.201"}
VETH_PAIR = {"e1": "198.18.251.1", "e2": "198.18.251.2"}
SERVICE_BACKEND = {"svc-same": "b", "svc-cross": "c"}


@dataclass
class Params:
    quick: bool
    reps: int
    stream_s: float
    rr_s: float
    crr_s: float
    crr_conns: int = 1
    extra: bool = (
        True  # one more repetition of TCP_RR, TCP_CRR, TCP_STREAM 1 CPU (in that order) as the budget allows
    )
    profile_s: float = 2.0
    budget_s: int = 595  # the alarm; `make bench-tcp` must stay within 10 minutes
    kinds: list[str] = field(default_factory=lambda: list(KINDS))

    @classmethod
    def full(cls) -> Params:
        return cls(quick=False, reps=2, stream_s=2.0, rr_s=2.0, crr_s=1.0)

    @classmethod
    def quick_run(cls) -> Params:
        return cls(quick=True, reps=1, stream_s=1.0, rr_s=1.0, crr_s=1.0, profile_s=1.0, budget_s=300)


RT_PRIO = "10"  # SCHED_FIFO priority of the TCP_RR client and server (see rr())


def _spawn(ns: str, cpu: int, *cmd: str) -> subprocess.Popen:
    """A server in namespace `ns` (network only, so pins stay visible), pinned to `cpu`. nsenter and
    taskset exec, so the PID is the server's own (re-pinned later with sched_setaffinity)."""
    return subprocess.Popen(
        ["nsenter", f"--net=/var/run/netns/{ns}", "taskset", "-c", str(cpu), *cmd],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


class Servers:
    """iperf3, sockperf (TCP) and the CRR HTTP responder on one host, for the whole run."""

    def __init__(self, ns: str, addr: str, log):
        self.ns, self.addr = ns, addr
        fifo = ("chrt", "-f", RT_PRIO)  # TCP_RR and TCP_CRR servers: see rr()
        httpd = (sys.executable, "-m", "bench.tcp_httpd", addr)
        self.procs = {
            "iperf3": _spawn(ns, SERVER_CPU, "iperf3", "-s", "-p", str(IPERF_PORT), "-B", addr),
            "sockperf": _spawn(
                ns, SERVER_CPU, *fifo, "sockperf", "server", "--tcp", "-i", addr, "-p", str(RR_PORT)
            ),
            # the direct CRR port and the Services' targetPort (SVC_CRR_PORT)
            "httpd": _spawn(ns, SERVER_CPU, *fifo, *httpd, str(CRR_PORT)),
            "httpd-svc": _spawn(ns, SERVER_CPU, *fifo, *httpd, str(SVC_CRR_PORT)),
        }

    def check(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"{name} server in {self.ns} exited: {p.stderr.read()[-400:]}")

    def pin(self, name: str, cpu: int) -> None:
        os.sched_setaffinity(self.procs[name].pid, {cpu})

    def stop(self) -> None:
        for p in self.procs.values():
            processes.stop(p, grace=3)


class TcpCluster:
    """One CNI's 2-node cluster: pods a, b on node 0, c on node 1; Services; servers on b, c, node 0."""

    def __init__(self, kind: str, log):
        self.kind, self.log = kind, log
        self.cluster = Cluster(2, prefix=bench_prefix())
        self.servers: dict[str, Servers] = {}
        self.pods: dict[str, Pod] = {}
        self.hosts: dict[str, str] = {}  # baseline hosts: name -> namespace
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        t0 = time.monotonic()
        for node in self.cluster.nodes:
            node.pin_root = f"{BENCH_PIN_BASE}/{node.ns}"
            if self.kind in ("tc", "xdp"):
                node.load(self.kind, netfilter="respect")
        for name, node_i in (("a", 0), ("b", 0), ("c", 1)):
            node = self.cluster.nodes[node_i]
            self.pods[name] = node.add_pod(name) if self.kind in ("tc", "xdp") else self._cni_pod(node, name)
        b, c = self.pods["b"].ip4, self.pods["c"].ip4
        for node in self.cluster.nodes:
            # kube-proxy's rules on every node; the measured Services after the 1000 others (the walk
            # a new flow pays), each VIP DNATed to one backend, as a one-endpoint Service.
            mine = "".join(
                f"    ip daddr {vip} tcp dport {{ {IPERF_PORT}, {RR_PORT} }} counter dnat to {ip}\n"
                f"    ip daddr {vip} tcp dport {CRR_PORT} counter dnat to {ip}:{SVC_CRR_PORT}\n"
                for vip, ip in ((SERVICE_VIPS["svc-same"], b), (SERVICE_VIPS["svc-cross"], c))
            )
            ruleset = kube_proxy_ruleset().replace(
                "    fib daddr type local", mine + "    fib daddr type local", 1
            )
            run_in(node.ns, "nft", "-f", "-", input=ruleset, timeout=60)
            sysctl(node.ns, "net.netfilter.nf_conntrack_tcp_be_liberal", "1")
        node0 = self.cluster.nodes[0]
        self.servers = {
            "b": Servers(self.pods["b"].ns, b, self.log),
            "c": Servers(self.pods["c"].ns, c, self.log),
            "node0": Servers(node0.ns, node0.nic_ip4, self.log),
        }
        if self.kind == REFERENCE:
            self._baseline_hosts()
        self.setup_s = round(time.monotonic() - t0, 1)

    def _ns(self, name: str) -> str:
        ns = f"{self.cluster.prefix}-{name}"
        self.cluster.namespaces.append(ns)  # first: torn down with the cluster whatever happens next
        netns.create(ns)
        self.hosts[name] = ns
        return ns

    def _baseline_hosts(self) -> None:
        """w2, w3 on the wire's bridge, e1-e2 over one veth pair; a server on w2, w3 and e2."""
        wire = f"/var/run/netns/{self.cluster.wire}"
        for name, addr in WIRE_HOSTS.items():
            ns = self._ns(name)
            fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
            try:
                with IPRoute(netns=wire) as w:
                    w.link("add", ifname=f"p{name}", kind="veth", peer={"ifname": "eth0", "net_ns_fd": fd})
                    w.link(
                        "set",
                        index=w.link_lookup(ifname=f"p{name}")[0],
                        master=w.link_lookup(ifname="br0")[0],
                        state="up",
                    )
            finally:
                os.close(fd)
            # finished checksums on the bridge port, as on the nodes' ports (sim/topology.py)
            run_in(self.cluster.wire, "ethtool", "-K", f"p{name}", "tx", "off", check=False)
            self._addr(ns, addr)
        e1, e2 = self._ns("e1"), self._ns("e2")
        fd = os.open(f"/var/run/netns/{e2}", os.O_RDONLY)
        try:
            with IPRoute(netns=f"/var/run/netns/{e1}") as ipr:
                ipr.link("add", ifname="eth0", kind="veth", peer={"ifname": "eth0", "net_ns_fd": fd})
        finally:
            os.close(fd)
        for name, addr in VETH_PAIR.items():
            self._addr(self.hosts[name], addr)
        for name, addr in (*WIRE_HOSTS.items(), ("e2", VETH_PAIR["e2"])):
            self.servers[name] = Servers(self.hosts[name], addr, self.log)

    @staticmethod
    def _addr(ns: str, addr: str) -> None:
        with IPRoute(netns=f"/var/run/netns/{ns}") as ipr:
            for ifname in ("lo", "eth0"):
                ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], state="up")
            ipr.addr("add", index=ipr.link_lookup(ifname="eth0")[0], address=addr, prefixlen=24)

    def _cni_pod(self, node, name: str) -> Pod:
        """A pod made by Debian's ptp or bridge plugin, called as a runtime calls it."""
        ns = f"{node.ns}-{name}"
        self.cluster.namespaces.append(ns)
        netns.create(ns)
        ipam = {
            "type": "host-local",
            "ranges": [
                [
                    {
                        "subnet": str(node.cidr4),
                        "rangeStart": str(node.cidr4[100]),
                        "rangeEnd": str(node.cidr4[200]),
                    }
                ]
            ],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": os.path.join(node.data_dir, "host-local"),
        }
        conf = {
            "cniVersion": "1.0.0",
            "name": f"bench-{self.kind}",
            "type": self.kind,
            "ipMasq": False,
            "ipam": ipam,
        }
        if self.kind == "bridge":
            conf.update(bridge="cni0", isGateway=True, hairpinMode=True)
            # kube-proxy needs bridged traffic to see iptables (same-node Service replies are bridged).
            sysctl(node.ns, "net.bridge.bridge-nf-call-iptables", "1")
        inv = invoke(
            node.ns, self.kind, "ADD", conf, container_id=f"tcp-{name}", netns_path=f"/var/run/netns/{ns}"
        )
        if not inv.ok:
            raise RuntimeError(f"{self.kind} ADD {name}: rc {inv.rc} {inv.stdout[-400:]} {inv.stderr[-400:]}")
        ips = [ip["address"].split("/")[0] for ip in inv.out["ips"]]
        pod = Pod(name, ns, node, ips)
        node.pods.append(pod)
        return pod

    def endpoints(self, path: tuple) -> tuple[str, str, Servers]:
        """(client namespace, server address, server host) of a path."""
        _, _, client, server = path
        if client == "wire":
            cns = self.cluster.wire
        elif client in self.hosts:
            cns = self.hosts[client]
        else:
            cns = self.pods[client].ns
        if server in SERVICE_VIPS:
            return cns, SERVICE_VIPS[server], self.servers[SERVICE_BACKEND[server]]
        host = self.servers[server]
        return cns, host.addr, host

    def forwarded(self) -> list[int]:
        return [forwarded(n.ns) for n in self.cluster.nodes]

    def flush_conntrack(self) -> None:
        for n in self.cluster.nodes:
            run_in(n.ns, "conntrack", "-F", check=False, timeout=30)

    def gate_on(self) -> bool | None:
        if self.kind not in ("tc", "xdp"):
            return None
        from datapath import netfilter

        return all(netfilter.gate(n.pin_root) for n in self.cluster.nodes)

    def close(self) -> None:
        for s in self.servers.values():
            s.stop()
        self.servers = {}
        self.cluster.teardown()
        # namespaces a signal left unregistered (between create and bookkeeping): the prefix is ours
        prefix = f"{self.cluster.prefix}-"
        for name in [n for n in os.listdir("/var/run/netns") if n.startswith(prefix)]:
            with contextlib.suppress(OSError):
                netns.remove(name)
        with contextlib.suppress(OSError):
            os.rmdir(BENCH_PIN_BASE)


# -- one measurement each ------------------------------------------------------------------------------
def _ksoftirqd_pids() -> list[int]:
    out = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/comm") as fh:
                if fh.read().startswith("ksoftirqd/"):
                    out.append(int(pid))
        except (OSError, ValueError):
            continue
    return out


KSOFTIRQD = _ksoftirqd_pids()


def _runtime_ns(pids: list[int]) -> int:
    """Time on CPU, scheduler-exact (/proc/PID/schedstat): without IRQ time accounting (this kernel)
    a softirq runs on the clock of the task it interrupted, so a task's figure includes the packet
    processing done in its context."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/schedstat") as fh:
                total += int(fh.read().split()[0])
        except (OSError, ValueError):
            pass
    return total


def _children_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _client(ns: str, srv_pid: int, used: set[int], *cmd: str, timeout: float):
    """Run a client on CPU 0 in namespace `ns`; CPU over its life two ways:
    task_cpu_s = the client (reaped child: rusage, scaled to the scheduler's runtime), the server and
    ksoftirqd (schedstat): the benchmark's own work, wherever it ran, other tenants excluded;
    busy_s = /proc/stat busy time of the CPUs in `used` (everything, other tenants included)."""
    c0, k0, ch0 = cpu_sample(), _runtime_ns([srv_pid, *KSOFTIRQD]), _children_s()
    proc = subprocess.run(
        ["nsenter", f"--net=/var/run/netns/{ns}", "taskset", "-c", str(CLIENT_CPU), *cmd],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    c1, k1, ch1 = cpu_sample(), _runtime_ns([srv_pid, *KSOFTIRQD]), _children_s()
    d = cpu_delta(c0, c1)
    acct = {
        "task_cpu_s": round((k1 - k0) / 1e9 + (ch1 - ch0), 4),
        "busy_s": round(sum(d["busy_s"][c] for c in used), 3),
        "steal_s": round(sum(d["steal_s"][c] for c in used), 3),
        "wall_s": round(d["wall_s"], 3),
    }
    return proc, acct


def stream(cns: str, addr: str, srv: Servers, cpus: int, seconds: float) -> dict:
    """TCP_STREAM: one iperf3 stream client -> server. cpus=1: both on CPU 0 (all the work on one CPU);
    cpus=2: client CPU 0, server CPU 1. CPU-s/GB from the benchmark's own tasks (see _client)."""
    srv.pin("iperf3", CLIENT_CPU if cpus == 1 else SERVER_CPU)
    used = {CLIENT_CPU} if cpus == 1 else {CLIENT_CPU, SERVER_CPU}
    proc, acct = _client(
        cns, srv.procs["iperf3"].pid, used, "iperf3", "-c", addr, "-p", str(IPERF_PORT), "-t", f"{seconds:g}", "-J",
        timeout=seconds + 30,
    )  # fmt: skip
    try:
        r = tcp_parse.iperf3(proc.stdout)
    except ValueError as exc:
        raise RuntimeError(f"iperf3 rc {proc.returncode}: {proc.stdout[-300:]} {proc.stderr[-300:]}") from exc
    r.update(
        cpus=cpus,
        **acct,
        cpu_s_per_gb=tcp_parse.per_gb(acct["task_cpu_s"], r["bytes"]),
        busy_cpu_s_per_gb=tcp_parse.per_gb(acct["busy_s"], r["bytes"]),
    )
    return r


def rr(cns: str, addr: str, srv: Servers, seconds: float) -> dict:
    """TCP_RR: sockperf ping-pong over one TCP connection, 64-byte messages, full round trips,
    blocking sockets; client CPU 0, server CPU 1, both SCHED_FIFO."""
    srv.pin("sockperf", SERVER_CPU)
    proc, acct = _client(
        cns, srv.procs["sockperf"].pid, {CLIENT_CPU, SERVER_CPU}, "chrt", "-f", RT_PRIO, "sockperf", "ping-pong",
        "--tcp", "-i", addr, "-p", str(RR_PORT), "-t", str(int(max(1, seconds))), "-m", "64", "--full-rtt",
        timeout=seconds + 30,
    )  # fmt: skip
    r = tcp_parse.sockperf(proc.stdout + proc.stderr)
    total = r["round_trips_total"] or 0  # the CPU figure covers the warm-up too
    r.update(**acct, cpu_us_per_tx=tcp_parse.per_tx_us(acct["task_cpu_s"], total))
    return r


def crr(cns: str, addr: str, srv: Servers, seconds: float, conns: int, server: str = "httpd") -> dict:
    """TCP_CRR: wrk, one thread, `conns` connections, `Connection: close` (connect, request, response,
    close per transaction); client CPU 0, the responder CPU 1, both SCHED_FIFO."""
    srv.pin(server, SERVER_CPU)
    proc, acct = _client(
        cns, srv.procs[server].pid, {CLIENT_CPU, SERVER_CPU}, "chrt", "-f", RT_PRIO, "wrk", "-t1", f"-c{conns}",
        f"-d{seconds:g}s", "-H", "Connection: close", "--latency", f"http://{addr}:{CRR_PORT}/",
        timeout=seconds + 30,
    )  # fmt: skip
    r = tcp_parse.wrk(proc.stdout + proc.stderr)
    r.update(conns=conns, **acct, cpu_us_per_tx=tcp_parse.per_tx_us(acct["task_cpu_s"], r["requests"]))
    return r


def measure(tcl: TcpCluster, path: tuple, test: str, p: Params) -> dict:
    cns, addr, srv = tcl.endpoints(path)
    f0 = tcl.forwarded()
    if test == "stream1":
        r = stream(cns, addr, srv, 1, p.stream_s)
    elif test == "stream2":
        r = stream(cns, addr, srv, 2, p.stream_s)
    elif test == "rr":
        r = rr(cns, addr, srv, p.rr_s)
    else:
        r = crr(cns, addr, srv, p.crr_s, p.crr_conns, "httpd-svc" if path[3] in SERVICE_VIPS else "httpd")
        tcl.flush_conntrack()  # thousands of TIME_WAIT entries per run
    r["kernel_forwarded"] = [b - a for a, b in zip(f0, tcl.forwarded())]
    return r


TESTS = ("stream1", "stream2", "rr", "crr")


def _summary(test: str, r: dict) -> str:
    if test.startswith("stream"):
        return f"{r['gbit_s']:6.2f} Gbit/s {r['cpu_s_per_gb']:.3f} CPU-s/GB fwd {r['kernel_forwarded']}"
    if test == "rr":
        return f"{r['tx_s']:8.0f} tx/s p50 {r['p50_us']:.1f} p99 {r['p99_us']:.1f} us fwd {r['kernel_forwarded']}"
    return f"{r['tx_s']:8.0f} tx/s {r['cpu_us_per_tx']} CPU-us/tx errors {r['socket_errors']} fwd {r['kernel_forwarded']}"


# -- profile: where the time goes on the fast path -------------------------------------------------
def profile(clusters: dict[str, TcpCluster], p: Params, log) -> dict:
    """bpf_stats (run_time_ns/run_cnt) of the node programs over one wire -> pod TCP_STREAM (1 CPU) per
    xdpcni mode, and `perf record -a` over the same run for tc and ptp (top kernel symbols)."""
    from datapath import libbpf
    from datapath.loader import open_program

    from .progcost import prog_stats, stats_per_run

    path = next(x for x in PATHS if x[0] == "wire-pod")
    out: dict = {"path": path[1], "test": "TCP_STREAM, 1 CPU", "bpf_stats": {}, "perf": {}}
    for kind in ("tc", "xdp"):
        tcl = clusters.get(kind)
        if not tcl:
            continue
        root = tcl.cluster.nodes[0].pin_root
        fds = {n: open_program(root, n) for n in ("xdp_nic", "tc_nic", "tc_pod", "xdp_pod")}
        stats_fd = libbpf.enable_stats()
        try:
            before = prog_stats(fds)
            cns, addr, srv = tcl.endpoints(path)
            r = stream(cns, addr, srv, 1, p.profile_s)
            st = {k: v for k, v in stats_per_run(before, prog_stats(fds)).items() if v["runs"]}
        finally:
            os.close(stats_fd)
            for fd in fds.values():
                os.close(fd)
        prog_s = sum(v["run_time_ns"] for v in st.values()) / 1e9
        out["bpf_stats"][kind] = {
            "programs": st,
            "gbit_s": r["gbit_s"],
            "cpu_s_per_gb": r["cpu_s_per_gb"],
            "program_cpu_s_per_gb": tcp_parse.per_gb(prog_s, r["bytes"]),
        }
        log(f"  bpf_stats {kind}: {st}; programs {out['bpf_stats'][kind]['program_cpu_s_per_gb']} CPU-s/GB")
    if not _have("perf"):
        out["perf"] = {"skipped": "perf not installed"}
        return out
    crr_path = next(x for x in PATHS if x[0] == "pod-pod-same")
    for kind, where, test in (
        ("ptp", path, "stream1"),
        ("tc", path, "stream1"),
        ("ptp", crr_path, "crr"),
        ("tc", crr_path, "crr"),
    ):
        tcl = clusters.get(kind)
        if tcl:
            key = f"{kind} {where[0]} {test}"
            out["perf"][key] = _perf(tcl, where, test, p)
            log(f"  perf {key}: " + " | ".join(out["perf"][key][:6]))
    return out


IDLE_SYMBOLS = ("pv_native_safe_halt", "default_idle", "cpuidle", "acpi_idle", "poll_idle")


def _perf(tcl: TcpCluster, path: tuple, test: str, p: Params) -> list[str]:
    """`perf record -a` on the CPUs the test uses while it runs; the top kernel and user symbols,
    idle excluded (the percentages are of all samples, idle included)."""
    cpus = str(CLIENT_CPU) if test == "stream1" else f"{CLIENT_CPU},{SERVER_CPU}"
    seconds = p.profile_s if test == "stream1" else p.crr_s
    data = f"/tmp/xdpcni-bench-perf-{os.getpid()}.data"
    rec = subprocess.Popen(
        ["perf", "record", "-a", "-C", cpus, "-F", "999", "-o", data, "--", "sleep", f"{seconds + 0.5:g}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.2)  # perf's own start-up outside the window
        measure(tcl, path, test, p)
        rec.wait(seconds + 20)
        rep = subprocess.run(
            [
                "perf",
                "report",
                "-i",
                data,
                "--stdio",
                "--no-children",
                "--sort",
                "comm,sym",
                "--percent-limit",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        ).stdout
    finally:
        processes.stop(rec, grace=5)
        for f in (data, data + ".old"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f)
    lines = [ln.strip() for ln in rep.splitlines() if ln.strip() and not ln.startswith("#")]
    return [ln for ln in lines if not any(s in ln for s in IDLE_SYMBOLS)][:25]


def _have(tool: str) -> bool:
    from shutil import which

    return which(tool) is not None


# -- the run -------------------------------------------------------------------------------------------
def plan(tests: tuple, kinds: list[str]) -> list[tuple]:
    """One repetition: test by test, path by path, the CNIs one after the other; a TCP_STREAM row's
    no-node baseline (ptp cluster) right before the first row that uses it."""
    out, done = [], set()
    for test in tests:
        for path in PATHS:
            base = BASELINE.get(path[0])
            if test.startswith("stream") and base and REFERENCE in kinds and (test, base) not in done:
                out.append((BASELINE_PATHS[base], test, REFERENCE))
                done.add((test, base))
            out += [(path, test, kind) for kind in kinds]
    return out


EXTRA_ORDER = ("rr", "crr", "stream1")
PROFILE_RESERVE_S = 30  # the profile (~15 s) and the teardown after the matrix


def measure_block(clusters: dict, tests: tuple, rep: int, p: Params, res: dict, log) -> None:
    for path, test, kind in plan(tests, list(clusters)):
        try:
            r = measure(clusters[kind], path, test, p)
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
            res["errors"].append(
                {"kind": kind, "path": path[0], "test": test, "rep": rep, "error": str(exc)[-600:]}
            )
            log(f"  {path[0]:13} {test:7} {kind:6} FAILED: {str(exc)[-200:]}")
            continue
        r.update(kind=kind, path=path[0], test=test, rep=rep)
        res["runs"].append(r)
        log(f"  {path[0]:13} {test:7} {kind:6} {_summary(test, r)}")


def run(p: Params, log, res: dict) -> dict:
    """Fill `res` as the measurements come in: a run stopped by a signal or the alarm keeps what it
    measured."""
    t_begin = time.monotonic()
    res.update(runs=[], errors=[], clusters={})
    clusters: dict[str, TcpCluster] = {}
    try:
        for kind in p.kinds:
            log(f"[{time.strftime('%H:%M:%S')}] cluster: {kind}")
            tcl = clusters[kind] = TcpCluster(kind, log)
            res["clusters"][kind] = {
                "prefix": tcl.cluster.prefix,
                "pods": {n: pod.ip4 for n, pod in tcl.pods.items()},
                "setup_s": tcl.setup_s,
                "conntrack_gate_on": tcl.gate_on(),
            }
            log(
                f"  pods {res['clusters'][kind]['pods']} gate {res['clusters'][kind]['conntrack_gate_on']}, {tcl.setup_s} s"
            )
        time.sleep(0.5)
        for tcl in clusters.values():
            for s in tcl.servers.values():
                s.check()
        block: dict[str, float] = {}  # seconds each test's block took in the first repetition
        for rep in range(p.reps + 1):
            tests = TESTS
            if rep == p.reps:  # the extra repetition: the noisiest figures first, as far as the budget allows
                left = p.budget_s - (time.monotonic() - t_begin) - PROFILE_RESERVE_S
                tests = []
                for test in EXTRA_ORDER if p.extra else ():
                    if 1.15 * block.get(test, p.budget_s) <= left:
                        tests.append(test)
                        left -= 1.15 * block[test]
                if not tests:
                    break
            log(f"[{time.strftime('%H:%M:%S')}] repetition {rep + 1} ({', '.join(tests)})")
            for test in tests:
                t_test = time.monotonic()
                measure_block(clusters, tuple([test]), rep, p, res, log)
                block.setdefault(test, time.monotonic() - t_test)
        log(f"[{time.strftime('%H:%M:%S')}] profile")
        try:
            res["profile"] = profile(clusters, p, log)
        except Exception as exc:  # the matrix must not be lost for a profile
            res["profile"] = {
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()[-1500:],
            }
            log(f"  profile FAILED: {exc}")
    finally:
        for tcl in clusters.values():
            try:
                tcl.close()
            except Exception as exc:
                log(f"cleanup {tcl.kind}: {exc}")
    return res


def save(path: str, tcp: dict) -> None:
    """Read-modify-write: only the "tcp" key changes; `make bench`'s keys stay as they are."""
    try:
        with open(path) as fh:
            doc = json.load(fh)
    except (FileNotFoundError, ValueError):
        doc = {}
    doc["tcp"] = tcp
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(doc, fh, indent=1, default=str)
    os.replace(tmp, path)


def main(argv=None) -> int:
    from .run import REPO, Aborted, _git_commit, _on_signal, heavy_lock, machine
    from .tcp_report import build, plot, table

    ap = argparse.ArgumentParser(prog="python -m bench.tcp", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short smoke run (about 2 minutes)")
    ap.add_argument(
        "--out", default=str(REPO / "bench" / "results.json"), help="results JSON (key 'tcp' is replaced)"
    )
    ap.add_argument("--plot", default=str(REPO / "docs" / "bench-tcp.png"), help="plot path ('' for none)")
    ap.add_argument("--kinds", default=",".join(KINDS), help="clusters to compare (default: all four)")
    args = ap.parse_args(argv)
    p = Params.quick_run() if args.quick else Params.full()
    p.kinds = [k for k in args.kinds.split(",") if k]

    def log(msg: str) -> None:
        print(msg, flush=True)

    if os.geteuid() != 0:
        log("bench.tcp: needs root (network namespaces, BPF)")
        return 2
    os.chdir(REPO)  # the CRR responder starts as `python -m bench.tcp_httpd`
    lock_fd = heavy_lock(log)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    signal.alarm(p.budget_s)
    t0 = time.monotonic()
    meta = {
        **machine(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "params": asdict(p),
        "git_commit": _git_commit(),
    }
    status = 0
    tcp: dict = {}
    try:
        run(p, log, tcp)
    except Aborted as exc:
        log(f"bench.tcp: aborted: {exc} (keeping the {len(tcp.get('runs', []))} runs measured)")
        tcp["aborted"] = str(exc)
        status = 1
    finally:
        signal.alarm(0)
    meta["run_seconds"] = round(time.monotonic() - t0, 1)
    tcp["meta"] = meta
    tcp["rows"], tcp["targets"] = build(tcp)
    print()
    print(table(tcp["rows"], tcp["targets"]))
    save(args.out, tcp)
    print(f"\nresults: {args.out} (key 'tcp')")
    if args.plot:
        try:
            plot(tcp, args.plot)
            print(f"plot: {args.plot}")
        except Exception as exc:
            print(f"plot failed: {exc}")
    print(f"run time: {meta['run_seconds']} s")
    if tcp["errors"]:
        print(f"{len(tcp['errors'])} measurement(s) failed (see 'errors' in the JSON)")
        status = status or 1
    if lock_fd is not None:
        os.close(lock_fd)
    return status


if __name__ == "__main__":
    sys.exit(main())
