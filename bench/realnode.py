"""The Kubernetes-safe fast path on a realistic node (docs/bench.md "Realistic node").

Two parts:
- gate_costs(): what the conntrack gate (bpf/lib/conntrack.h, node_cfg bit XDPCNI_NODE_F_CONNTRACK)
  costs per packet in xdp_nic and tc_nic, by BPF_PROG_TEST_RUN as in bench/progcost.py (prologue ->
  program minus prologue -> empty program), gate off vs on, on a hit (an assured, established
  `conntrack -I` entry for the frame's flow; such entries are per-flow liberal) and on a miss (no
  entry), for a UDP and a TCP (ACK) frame. Runs inside the node's namespace: the kfunc looks up the
  namespace of the packet's device, which for test runs is the calling thread's.
- The realistic node: the node namespace gets a kube-proxy-like ruleset (KubeProxyRules: nat
  KUBE-SERVICES with 1000 `ip daddr <vip> tcp dport <p> dnat` rules matching none of the benchmark's
  traffic, KUBE-POSTROUTING masquerade by mark, filter FORWARD with `ct state invalid drop`), so
  conntrack tracks every packet the kernel sees, and nf_conntrack_tcp_be_liberal=1 (kube-proxy's
  --conntrack-tcp-be-liberal; without it, or the node agent's per-flow liberal marker, the gate sends
  all TCP to the stack). Measured: the kernel path (xdpcni's programs detached) against the TC fast
  path with netfilter: respect (gate on), for TCP bulk (iperf3, wire host -> pod and pod -> wire
  host: Gbit/s and CPU seconds per GB) and the 64-byte UDP flood of bench/throughput.py. A one-way
  UDP flood never becomes ASSURED (that needs a reply), so under respect it goes to the stack.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from contextlib import contextmanager

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from datapath import abi, libbpf, netfilter
from datapath.maps import PinnedMap
from datapath.netns import entered
from datapath.pins import PinLayout
from datapath.stats import Stats
from sim import processes
from sim.frames import UDP_DPORT, wire_to
from sim.topology import WIRE_HOST_V4, run_in

from .sysmon import cpu_delta, cpu_sample, forwarded
from .throughput import FRAME_PAYLOAD, GEN_CPU, pinned_cpu
from .topo import BenchNode

XDP_PASS, XDP_REDIRECT = 2, 4
TC_ACT_OK, TC_ACT_REDIRECT = 0, 7
TCP_SPORT, TCP_DPORT = 40000, 80
UDP_SPORT = 1234  # sim.frames.wire_to's default
MISS_OFFSET = 1  # the miss frames use source port + 1: no entry
N_SERVICES = 1000
IPERF_PORT = 5201
IPERF_SERVER_CPU = 1
IPERF_CLIENT_CPU = 0


# -- the gate bit --------------------------------------------------------------------------------------
def gate(bn: BenchNode) -> bool:
    return netfilter.gate(bn.node.pin_root)


def set_gate(bn: BenchNode, on: bool) -> None:
    """As `netfilter: respect` (on) or `bypass` (off) leaves it (datapath.netfilter.set_gate)."""
    netfilter.set_gate(bn.node.pin_root, on)


# -- frames and conntrack entries ----------------------------------------------------------------------
def udp_frame(bn: BenchNode, sport: int = UDP_SPORT) -> bytes:
    f = bytes(wire_to(bn.cluster, bn.node, bn.pod.ip4, payload=FRAME_PAYLOAD, sport=sport))
    assert len(f) == 60, len(f)
    return f


def tcp_frame(bn: BenchNode, sport: int = TCP_SPORT) -> bytes:
    """A 60-byte TCP ACK segment (no SYN/FIN/RST: the gate looks it up) from the wire host."""
    f = bytes(
        Ether(src=bn.cluster.wire_mac, dst=bn.node.nic_mac)
        / IP(src=WIRE_HOST_V4, dst=bn.pod.ip4, ttl=64)
        / TCP(sport=sport, dport=TCP_DPORT, flags="A", seq=1000, ack=2000)
        / Raw(b"x" * 6)
    )
    assert len(f) == 60, len(f)
    return f


def conntrack(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_in(ns, "conntrack", *args, check=check, timeout=30)


def insert_entries(bn: BenchNode) -> None:
    """Assured entries for the hit frames. Timeouts at (or above) the namespace's configured ones,
    so the gate's refresh (less than half left) never fires during the runs."""
    w, p = WIRE_HOST_V4, bn.pod.ip4
    common = ["-s", w, "-d", p, "-u", "SEEN_REPLY,ASSURED"]
    conntrack(
        bn.node.ns,
        "-I",
        "-p",
        "udp",
        *common,
        "--sport",
        str(UDP_SPORT),
        "--dport",
        str(UDP_DPORT),
        "-t",
        "3600",
    )
    conntrack(
        bn.node.ns,
        "-I",
        "-p",
        "tcp",
        *common,
        "--sport",
        str(TCP_SPORT),
        "--dport",
        str(TCP_DPORT),
        "--state",
        "ESTABLISHED",
        "-t",
        "432000",
    )


# -- part 1: program cost of the gate ----------------------------------------------------------------
CASES = [  # (name, gate on, proto, hit)
    ("off", False, "udp", True),
    ("on_hit", True, "udp", True),
    ("on_miss", True, "udp", False),
    ("off", False, "tcp", True),
    ("on_hit", True, "tcp", True),
    ("on_miss", True, "tcp", False),
]


def gate_costs(bn: BenchNode, repeat: int, rounds: int) -> dict:
    progs = bn.progs
    frames = {
        ("udp", True): udp_frame(bn),
        ("udp", False): udp_frame(bn, UDP_SPORT + MISS_OFFSET),
        ("tcp", True): tcp_frame(bn),
        ("tcp", False): tcp_frame(bn, TCP_SPORT + MISS_OFFSET),
    }
    was_on = gate(bn)
    conntrack(bn.node.ns, "-F", check=False)
    insert_entries(bn)
    out: dict = {
        "method": f"BPF_PROG_TEST_RUN from CPU 0 in the node namespace, repeat={repeat}, {rounds} rounds; "
        "each round runs every case as prologue -> empty program and prologue -> program; cost = median "
        "of the per-round differences. hit: `conntrack -I ... -u SEEN_REPLY,ASSURED` entry for the "
        "frame's flow (TCP: ESTABLISHED; -I entries are per-flow liberal); miss: no entry (source port +1)",
        "entries": conntrack(bn.node.ns, "-L", check=False).stdout.strip().splitlines(),
    }
    xdp_ctx = libbpf.XdpMd(data=0, data_end=60, ingress_ifindex=bn.nic_ifindex)
    try:
        with entered(bn.node.ns), pinned_cpu(GEN_CPU):
            for hook, prog, empty, ctx, fast, slow in (
                ("xdp", "xdp_nic", "xdp_pass", xdp_ctx, XDP_REDIRECT, XDP_PASS),
                ("tc", "tc_nic", "tc_pass", None, TC_ACT_REDIRECT, TC_ACT_OK),
            ):
                prologue, target, empty_fd = progs.fd(f"{hook}_prologue"), bn.fds[prog], progs.fd(empty)
                res = {f"{proto}_{name}": {"base": [], "full": [], "diff": []} for name, _, proto, _ in CASES}
                # Verdicts first (also warms every path): off and hits must take the fast path,
                # misses must go to the stack.
                checks = {}
                progs.set_target(hook, target)
                for name, on, proto, hit in CASES:
                    set_gate(bn, on)
                    progs.set_template(frames[(proto, hit)])
                    ret = libbpf.prog_test_run(prologue, frames[(proto, hit)], ctx=ctx)[0]
                    want = fast if (not on or hit) else slow
                    checks[f"{proto}_{name}"] = {"verdict": ret, "expected": want, "ok": ret == want}
                for _ in range(rounds):
                    for name, on, proto, hit in CASES:
                        key = f"{proto}_{name}"
                        set_gate(bn, on)
                        progs.set_template(frames[(proto, hit)])
                        progs.set_target(hook, empty_fd)
                        b = libbpf.prog_test_run(prologue, frames[(proto, hit)], repeat=repeat, ctx=ctx)[2]
                        progs.set_target(hook, target)
                        f = libbpf.prog_test_run(prologue, frames[(proto, hit)], repeat=repeat, ctx=ctx)[2]
                        res[key]["base"].append(b)
                        res[key]["full"].append(f)
                        res[key]["diff"].append(f - b)
                h = {"program": prog, "checks": checks, "rounds_ns": res}
                for key, r in res.items():
                    h[f"{key}_ns"] = statistics.median(r["diff"])
                for proto in ("udp", "tcp"):
                    off = h[f"{proto}_off_ns"]
                    h[f"{proto}_check_hit_ns"] = round(h[f"{proto}_on_hit_ns"] - off, 1)
                    h[f"{proto}_check_miss_ns"] = round(h[f"{proto}_on_miss_ns"] - off, 1)
                out[hook] = h
    finally:
        set_gate(bn, was_on)
        progs.set_template(udp_frame(bn))
        conntrack(bn.node.ns, "-F", check=False)
    return out


# -- part 2: the realistic node ---------------------------------------------------------------------
def kube_proxy_ruleset(n_services: int = N_SERVICES) -> str:
    """iptables-nft-style tables as kube-proxy (iptables mode) leaves them, abridged: every Service
    is one linear `ip daddr <ClusterIP> tcp dport <port> dnat` rule in KUBE-SERVICES (kube-proxy
    jumps through KUBE-SVC-/KUBE-SEP- chains to the same effect). ClusterIPs are 10.96.0.0/16,
    backends 10.244.0.0/16: nothing the benchmark sends matches."""
    svc = []
    for i in range(n_services):
        vip = f"10.96.{i // 250}.{i % 250 + 1}"
        backend = f"10.244.{i // 250}.{i % 250 + 1}"
        port = 80 + (i % 7) * 1000
        svc.append(f"    ip daddr {vip} tcp dport {port} counter dnat to {backend}:8080")
    services = "\n".join(svc)
    return f"""
table ip nat {{
  chain PREROUTING {{
    type nat hook prerouting priority dstnat; policy accept;
    counter jump KUBE-SERVICES
  }}
  chain OUTPUT {{
    type nat hook output priority -100; policy accept;
    counter jump KUBE-SERVICES
  }}
  chain POSTROUTING {{
    type nat hook postrouting priority srcnat; policy accept;
    counter jump KUBE-POSTROUTING
  }}
  chain KUBE-SERVICES {{
{services}
    fib daddr type local counter jump KUBE-NODEPORTS
  }}
  chain KUBE-NODEPORTS {{
  }}
  chain KUBE-POSTROUTING {{
    meta mark & 0x00004000 != 0x00004000 return
    meta mark set meta mark ^ 0x00004000
    counter masquerade
  }}
}}
table ip filter {{
  chain INPUT {{
    type filter hook input priority filter; policy accept;
    ct state new counter jump KUBE-PROXY-FIREWALL
    counter jump KUBE-FIREWALL
  }}
  chain FORWARD {{
    type filter hook forward priority filter; policy accept;
    ct state new counter jump KUBE-PROXY-FIREWALL
    counter jump KUBE-FORWARD
    ct state new counter jump KUBE-SERVICES
  }}
  chain KUBE-PROXY-FIREWALL {{
  }}
  chain KUBE-SERVICES {{
  }}
  chain KUBE-FIREWALL {{
    ip saddr != 127.0.0.0/8 ip daddr 127.0.0.0/8 ct status dnat counter drop
  }}
  chain KUBE-FORWARD {{
    ct state invalid counter drop
    meta mark & 0x00004000 == 0x00004000 counter accept
    ct state related,established counter accept
  }}
}}
"""


def _sysctl(ns: str, key: str, value: str | None = None) -> str:
    path = "/proc/sys/" + key.replace(".", "/")
    with entered(ns):
        with open(path) as fh:
            old = fh.read().strip()
        if value is not None:
            with open(path, "w") as fh:
                fh.write(value)
    return old


@contextmanager
def kube_proxy_node(bn: BenchNode, n_services: int = N_SERVICES):
    """The node namespace with the ruleset and liberal TCP window tracking; everything is taken out
    again on exit (tables, entries, sysctl, the gate bit), also after a failure."""
    ns = bn.node.ns
    was_on = gate(bn)
    old_liberal = _sysctl(ns, "net.netfilter.nf_conntrack_tcp_be_liberal")
    t0 = time.monotonic()
    try:
        run_in(ns, "nft", "-f", "-", input=kube_proxy_ruleset(n_services), timeout=60)
        _sysctl(ns, "net.netfilter.nf_conntrack_tcp_be_liberal", "1")
        rules = run_in(ns, "nft", "-a", "list", "ruleset", timeout=60).stdout.count("# handle")
        yield {"nft_rules_with_handle": rules, "setup_s": round(time.monotonic() - t0, 2)}
    finally:
        run_in(ns, "nft", "delete", "table", "ip", "nat", check=False)
        run_in(ns, "nft", "delete", "table", "ip", "filter", check=False)
        _sysctl(ns, "net.netfilter.nf_conntrack_tcp_be_liberal", old_liberal)
        conntrack(ns, "-F", check=False)
        set_gate(bn, was_on)


def _xdpcni_counts(bn: BenchNode) -> dict:
    with Stats(bn.node.pin_root) as st:
        ep = st.endpoint(bn.pod.ep.ep_id)
        node = st.endpoint(0)
    out = {r.name.lower(): c.packets for r, c in ep.items()}
    out["node_row_total"] = sum(c.packets for c in node.values())
    return out


def _nft_counter(ns: str, family: str, table: str, chain: str, needle: str) -> int:
    out = run_in(ns, "nft", "list", "chain", family, table, chain, check=False).stdout
    for line in out.splitlines():
        if needle in line and "counter packets " in line:
            return int(line.split("counter packets ")[1].split()[0])
    return 0


@contextmanager
def iperf3_server(bn: BenchNode):
    cmd = [
        "nsenter",
        f"--net=/var/run/netns/{bn.pod.ns}",
        "taskset",
        "-c",
        str(IPERF_SERVER_CPU),
        "iperf3",
        "-s",
        "-p",
        str(IPERF_PORT),
        "-B",
        bn.pod.ip4,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)
        if proc.poll() is not None:
            raise RuntimeError(f"iperf3 server exited early: {proc.stderr.read()[-500:]}")
        yield proc
    finally:
        processes.stop(proc, grace=5)


def tcp_run(bn: BenchNode, config: str, direction: str, seconds: float) -> dict:
    """One iperf3 TCP transfer (client in the wire namespace on CPU 0, server in the pod on CPU 1;
    pod-to-wire = iperf3 -R). config: kernel (programs detached), respect (TC fast path, gate on),
    bypass (TC fast path, gate off). CPU: /proc/stat busy time of all CPUs over the client's life."""
    if config == "kernel":
        bn.configure("kernel")
    else:
        bn.configure("tc")
        set_gate(bn, config == "respect")
    ns = bn.node.ns
    cmd = [
        "nsenter",
        f"--net=/var/run/netns/{bn.wire}",
        "taskset",
        "-c",
        str(IPERF_CLIENT_CPU),
        "iperf3",
        "-c",
        bn.pod.ip4,
        "-p",
        str(IPERF_PORT),
        "-t",
        f"{seconds:g}",
        "-J",
        *(["-R"] if direction == "pod-to-wire" else []),
    ]
    x0, f0 = _xdpcni_counts(bn), forwarded(ns)
    nic0 = bn.link_stats(ns, bn.node.nic)
    inv0 = _nft_counter(ns, "ip", "filter", "KUBE-FORWARD", "ct state invalid")
    c0 = cpu_sample()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=False)
    c1 = cpu_sample()
    x1, f1 = _xdpcni_counts(bn), forwarded(ns)
    nic1 = bn.link_stats(ns, bn.node.nic)
    inv1 = _nft_counter(ns, "ip", "filter", "KUBE-FORWARD", "ct state invalid")
    try:
        j = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise RuntimeError(
            f"iperf3 failed (rc {proc.returncode}): {proc.stdout[-500:]} {proc.stderr[-500:]}"
        ) from exc
    if "error" in j:
        raise RuntimeError(f"iperf3: {j['error']}")
    end = j["end"]
    rcv = end["sum_received"]
    cpu = cpu_delta(c0, c1)
    busy = sum(cpu["busy_s"].values())
    gbytes = rcv["bytes"] / 1e9
    dx = {k: x1.get(k, 0) - x0.get(k, 0) for k in set(x0) | set(x1)}
    fast = dx.get("fwd_nic_to_pod", 0) if direction == "wire-to-pod" else dx.get("fwd_pod_to_nic", 0)
    nic_pk = (
        (nic1["rx_packets"] - nic0["rx_packets"])
        if direction == "wire-to-pod"
        else (nic1["tx_packets"] - nic0["tx_packets"])
    )
    return {
        "config": config,
        "direction": direction,
        "seconds": seconds,
        "gbit_s": round(rcv["bits_per_second"] / 1e9, 3),
        "bytes": rcv["bytes"],
        "retransmits": end.get("sum_sent", {}).get("retransmits"),
        "wall_s": round(cpu["wall_s"], 3),
        "all_cpu_busy_s": round(busy, 3),
        "busy_s": cpu["busy_s"],
        "steal_s": cpu["steal_s"],
        "cpu_s_per_gb": round(busy / gbytes, 3) if gbytes else None,
        "iperf3_cpu_pct": end.get("cpu_utilization_percent"),
        "nic_packets": nic_pk,
        "avg_nic_packet_bytes": round(rcv["bytes"] / nic_pk) if nic_pk else None,
        "node_kernel_forwarded": f1 - f0,
        "xdpcni_fast_path": fast,
        "xdpcni_reasons": {k: v for k, v in dx.items() if v},
        "ct_invalid_drops": inv1 - inv0,
    }


def udp_rows(bn: BenchNode, window: float, warmup: float) -> list[dict]:
    """bench/throughput.py's 64-byte UDP flood (trafgen, veth NIC) on the realistic node: kernel path
    vs TC with the gate on. A one-way flood never becomes ASSURED: under respect it goes to the stack
    (counted pass_conntrack on the pod's row)."""
    from .throughput import veth_run

    out = []
    for where in ("door", "socket"):
        for config in ("kernel", "respect"):
            if config == "respect":
                set_gate(bn, True)
            x0 = _xdpcni_counts(bn)
            r = veth_run(bn, "kernel" if config == "kernel" else "tc", where, window, warmup)
            x1 = _xdpcni_counts(bn)
            r["config"] = config
            r["xdpcni_reasons"] = {k: x1.get(k, 0) - x0.get(k, 0) for k in x1 if x1.get(k, 0) - x0.get(k, 0)}
            out.append(r)
    return out


def realistic_node(
    bn: BenchNode,
    tcp_seconds: float,
    tcp_reps: int,
    bypass_reps: int,
    udp_window: float,
    udp_warmup: float,
    log=print,
) -> dict:
    res: dict = {
        "how": "node namespace with a kube-proxy-like nftables ruleset (nat KUBE-SERVICES: "
        f"{N_SERVICES} ClusterIP dnat rules, none matching; filter FORWARD -> KUBE-FORWARD with "
        "`ct state invalid drop`), conntrack tracking every packet the kernel sees, "
        "nf_conntrack_tcp_be_liberal=1. kernel = xdpcni programs detached; respect = TC fast path "
        "with the conntrack gate on; bypass = TC fast path, gate off (reference). TCP: iperf3 -t "
        f"{tcp_seconds:g}, client in the wire namespace (CPU 0), server in the pod (CPU 1), "
        "pod-to-wire with -R; CPU = /proc/stat busy time of all CPUs over the client's run.",
        "tcp": [],
    }
    with kube_proxy_node(bn) as info:
        res["ruleset"] = info
        log(f"  kube-proxy-like ruleset: {info['nft_rules_with_handle']} nft objects, {info['setup_s']} s")
        with iperf3_server(bn):
            for rep in range(tcp_reps):
                configs = ("kernel", "respect", "bypass") if rep < bypass_reps else ("kernel", "respect")
                for direction in ("wire-to-pod", "pod-to-wire"):
                    for config in configs:
                        r = tcp_run(bn, config, direction, tcp_seconds)
                        r["rep"] = rep
                        res["tcp"].append(r)
                        log(
                            f"  tcp {direction:11} {config:8} {r['gbit_s']:6.2f} Gbit/s  "
                            f"{r['cpu_s_per_gb']} CPU-s/GB  fast {r['xdpcni_fast_path']} "
                            f"kernel-fwd {r['node_kernel_forwarded']}  avg pkt {r['avg_nic_packet_bytes']} B  "
                            f"invalid {r['ct_invalid_drops']}"
                        )
        res["conntrack_entries_after_tcp"] = conntrack(bn.node.ns, "-C", check=False).stdout.strip()
        res["udp"] = udp_rows(bn, udp_window, udp_warmup)
        for r in res["udp"]:
            log(
                f"  udp {r['where']:6} {r['config']:8} {r['per_cpu_s'] / 1e3:8.0f} k/CPU-s  "
                f"reasons {r['xdpcni_reasons']}"
            )
        res["conntrack_entries_after_udp"] = conntrack(bn.node.ns, "-L", check=False).stdout.strip()
        # The ruleset was on the path: new flows went through KUBE-SERVICES, established ones were
        # accepted in KUBE-FORWARD, nothing was INVALID.
        ns = bn.node.ns
        res["nft_counters"] = {
            "nat PREROUTING -> KUBE-SERVICES (new flows)": _nft_counter(
                ns, "ip", "nat", "PREROUTING", "jump"
            ),
            "filter FORWARD -> KUBE-FORWARD": _nft_counter(
                ns, "ip", "filter", "FORWARD", "jump KUBE-FORWARD"
            ),
            "KUBE-FORWARD ct state invalid drop": _nft_counter(ns, "ip", "filter", "KUBE-FORWARD", "invalid"),
            "KUBE-FORWARD ct state related,established accept": _nft_counter(
                ns, "ip", "filter", "KUBE-FORWARD", "established"
            ),
        }
        log(f"  nft counters: {res['nft_counters']}")
    bn.configure("tc")
    return res


# -- the monitor's cost (issue: "never slows the fast path measurably when nobody listens") -------------

MONITOR_SETTINGS = (("monitor_off", 0, 0), ("monitor_on_1_in_100", 1, 100))


def monitor_costs(bn: BenchNode, repeat: int, rounds: int) -> dict:
    """xdp_nic and tc_nic on the fast path (gate off, a UDP frame for the pod) with the monitor
    off and on at 1-in-100 sampling, BPF_PROG_TEST_RUN through the frame-restoring prologue, cost =
    median per-round difference to the prologue -> empty program. Nobody reads the ring buffer
    during the runs: once it is full, the sampled outputs fail (a reserve attempt is still paid)."""
    progs = bn.progs
    frame = udp_frame(bn)
    was_on = gate(bn)
    xdp_ctx = libbpf.XdpMd(data=0, data_end=len(frame), ingress_ifindex=bn.nic_ifindex)
    out: dict = {
        "method": f"BPF_PROG_TEST_RUN from CPU 0 in the node namespace, repeat={repeat}, {rounds} rounds, "
        "prologue -> program minus prologue -> empty, gate off, UDP frame for the pod; monitor_cfg set directly"
    }
    layout = PinLayout(bn.node.pin_root)
    try:
        with entered(bn.node.ns), pinned_cpu(GEN_CPU), PinnedMap(layout, "monitor_cfg") as cfg:
            set_gate(bn, False)
            progs.set_template(frame)
            for hook, prog, empty, ctx in (
                ("xdp", "xdp_nic", "xdp_pass", xdp_ctx),
                ("tc", "tc_nic", "tc_pass", None),
            ):
                prologue, target, empty_fd = progs.fd(f"{hook}_prologue"), bn.fds[prog], progs.fd(empty)
                diffs = {name: [] for name, _, _ in MONITOR_SETTINGS}
                for _ in range(rounds):
                    for name, active, sample in MONITOR_SETTINGS:
                        cfg.put(0, abi.MonitorConfig(active=active, sample_n=sample))
                        progs.set_target(hook, empty_fd)
                        b = libbpf.prog_test_run(prologue, frame, repeat=repeat, ctx=ctx)[2]
                        progs.set_target(hook, target)
                        f = libbpf.prog_test_run(prologue, frame, repeat=repeat, ctx=ctx)[2]
                        diffs[name].append(f - b)
                out[hook] = {"program": prog, **{f"{k}_ns": statistics.median(v) for k, v in diffs.items()}}
                out[hook]["rounds_ns"] = diffs
            cfg.put(0, abi.MonitorConfig(active=0, sample_n=0))
    finally:
        set_gate(bn, was_on)
    return out
