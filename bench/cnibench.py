"""CNI ADD/DEL latency: the installed `xdpcni` executable vs Debian's reference `bridge` and `ptp`
plugins (host-local IPAM), each called as a container runtime calls it
(sim/cni_runtime.invoke: a fresh process per call, `env -i`, config on stdin, in the
node's network namespace). Timed: the whole call, from spawn to exit (what kubelet waits for);
the nsenter/env wrapper costs every plugin the same few ms. Pod network namespaces are created
outside the timed part, as a runtime does before calling CNI.

All plugins get IPv4-only IPAM (the reference plugins wait for IPv6 DAD when given IPv6, which
would measure DAD, not the plugin). xdpcni runs twice: in-process (no agent: every call pays the
Python start-up and imports) and through its node agent (`xdpcnictl agent`: the executable is a
lean client handing the verb to a warm process).
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import shutil
import statistics
import subprocess
import threading
import time

from pyroute2 import IPRoute, netns

from datapath.endpoints import Endpoint, EndpointTable
from datapath.netns import entered
from sim.agent import NodeAgent
from sim.cni_runtime import cni_bin_dir, invoke, xdpcni_netconf
from sim.topology import VENV_BIN, Node, loopback_up

from . import cpugroups

CNI_VERSION = "1.0.0"
# xdpcni in-process and through the agent share one network (lease store): separate ranges.
XDPCNI_RANGE = {"subnet": "198.19.0.0/24", "rangeStart": "198.19.0.16", "rangeEnd": "198.19.0.127"}
XDPCNI_AGENT_RANGE = {"subnet": "198.19.0.0/24", "rangeStart": "198.19.0.128", "rangeEnd": "198.19.0.254"}
BRIDGE_SUBNET = "198.19.100.0/24"
PTP_SUBNET = "198.19.101.0/24"
FAKE_V4 = ipaddress.ip_network("198.19.192.0/20")  # map entries only, never on an interface
FAKE_V6 = ipaddress.ip_network("2001:db8:1:ff00::/64")


def pct(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100) of a sample, ms: the smallest value with at least p %
    of the sample at or below it, i.e. the ceil(p/100 * n)-th smallest (p99 of 100 calls is the
    99th, not the maximum; p50 of 84 is the 42nd)."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(round(p / 100.0 * len(s), 9)) - 1))
    return round(s[k], 2)


def summary(values: list[float]) -> dict:
    return {
        "n": len(values),
        "p50_ms": pct(values, 50),
        "p99_ms": pct(values, 99),
        "mean_ms": round(statistics.fmean(values), 2) if values else None,
        "min_ms": round(min(values), 2) if values else None,
        "max_ms": round(max(values), 2) if values else None,
    }


class Plugins:
    """Network configs of the plugins under test for one node."""

    def __init__(self, node: Node, agent_socket: str | None):
        self.node = node
        hl_dir = os.path.join(node.data_dir, "host-local")
        self.confs = {
            "xdpcni": xdpcni_netconf(
                node,
                "tc",
                cni_version=CNI_VERSION,
                ipam={"type": "xdpcni", "ranges": [[XDPCNI_RANGE]]},
                agentSocket="",
            ),
            "bridge": {
                "cniVersion": CNI_VERSION,
                "name": "bench-bridge",
                "type": "bridge",
                "bridge": "xbbr0",
                "isGateway": True,
                "ipMasq": False,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": BRIDGE_SUBNET}]], "dataDir": hl_dir},
            },
            "ptp": {
                "cniVersion": CNI_VERSION,
                "name": "bench-ptp",
                "type": "ptp",
                "ipMasq": False,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": PTP_SUBNET}]], "dataDir": hl_dir},
            },
        }
        if agent_socket:
            self.confs["xdpcni-agent"] = {
                **self.confs["xdpcni"],
                "agentSocket": agent_socket,
                "ipam": {"type": "xdpcni", "ranges": [[XDPCNI_AGENT_RANGE]]},
            }

    def call(self, plugin: str, command: str, cid: str, ns: str) -> float:
        conf = self.confs[plugin]
        t0 = time.perf_counter()
        inv = invoke(
            self.node.ns,
            conf["type"],
            command,
            conf,
            container_id=cid,
            netns_path=f"/var/run/netns/{ns}",
            ifname="eth0",
            timeout=60,
        )
        dt = (time.perf_counter() - t0) * 1000.0
        if not inv.ok:
            raise RuntimeError(
                f"{plugin} {command} {cid}: rc={inv.rc} {inv.stdout[-400:]} {inv.stderr[-400:]}"
            )
        return dt


def process_overheads(node: Node, n: int = 10) -> dict:
    """What every call pays before the plugin does any work: the runtime-like wrapper (nsenter +
    env -i), a bare start of the venv's Python, and xdpcni's executable doing nothing (--version)."""

    def timed(cmd: list[str]) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            subprocess.run(
                [
                    "nsenter",
                    f"--net=/var/run/netns/{node.ns}",
                    "env",
                    "-i",
                    "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                    *cmd,
                ],
                capture_output=True,
                timeout=30,
            )
            out.append((time.perf_counter() - t0) * 1000.0)
        return out

    return {
        "wrapper_true_ms": summary(timed(["/bin/true"])),
        "python_bare_ms": summary(timed([os.path.join(VENV_BIN, "python3"), "-c", "pass"])),
        "python_no_site_ms": summary(timed([os.path.join(VENV_BIN, "python3"), "-S", "-c", "pass"])),
        "xdpcni_version_ms": summary(
            timed(["sh", "-c", f"echo '{{}}' | CNI_COMMAND=VERSION {os.path.join(cni_bin_dir(), 'xdpcni')}"])
        ),
        "python_isolated_no_site_ms": summary(
            timed([os.path.join(VENV_BIN, "python3"), "-I", "-S", "-c", "pass"])
        ),
        "bridge_version_ms": summary(
            timed(["sh", "-c", 'echo \'{"cniVersion":"1.0.0"}\' | CNI_COMMAND=VERSION /usr/lib/cni/bridge'])
        ),
    }


class PodNamespaces:
    """Pod network namespaces made (and removed) outside the timed calls."""

    def __init__(self, node: Node):
        self.node = node
        self.made: list[str] = []

    def new(self, name: str) -> str:
        ns = f"{self.node.ns}-{name}"
        self.made.append(ns)  # first: a signal during create() must not leave it unknown
        netns.create(ns)
        loopback_up(ns)  # as the runtime does before calling a plugin, untimed (sim/topology.py)
        return ns

    def remove(self, ns: str) -> None:
        try:
            netns.remove(ns)
        except OSError:
            pass
        if ns in self.made:
            self.made.remove(ns)

    def remove_all(self) -> None:
        for ns in list(self.made):
            self.remove(ns)


def endpoint_count(node: Node) -> int:
    with EndpointTable(node.pin_root) as t:
        return len(t.ifaces.keys())


def settled_endpoint_count(node: Node, timeout: float = 5.0) -> int:
    """endpoint_count once it stops moving (two reads 0.2 s apart agree; at most `timeout` s):
    the agent finishes a DEL's veth removal after answering (node/agent.py), so right after a
    phase of DELs the table can still shrink."""
    deadline = time.monotonic() + timeout
    last = endpoint_count(node)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = endpoint_count(node)
        if now == last:
            return now
        last = now
    return last


def add_fake_endpoints(node: Node, n: int, graveyard: str, log, lease_dir: str | None = None) -> dict:
    """n endpoints that look like pods to the datapath and to the node: a veth pair each (host end in
    the node namespace, other end in `graveyard`) and their entries in the endpoint table (an IPv4
    and an IPv6 address each), inserted directly with datapath.endpoints.EndpointTable instead of
    n CNI ADDs. With `lease_dir` (a network's lease directory, cni/ipam/store.py) each also gets
    the lease a pod of that network would hold, so that ADD's IPAM sees n leases; there are no
    attachment records or claims for them."""
    t0 = time.monotonic()
    netns.create(graveyard)
    gfd = os.open(f"/var/run/netns/{graveyard}", os.O_RDONLY)
    links = []
    try:
        with entered(node.ns), IPRoute() as ipr:
            for i in range(n):
                host, peer = f"xbf{i:05d}", f"xbg{i:05d}"
                ipr.link("add", ifname=host, kind="veth", peer={"ifname": peer, "net_ns_fd": gfd})
                idx = ipr.link_lookup(ifname=host)[0]
                mac = ipr.get_links(idx)[0].get_attr("IFLA_ADDRESS")
                links.append((idx, mac))
    finally:
        os.close(gfd)
    t_links = time.monotonic() - t0
    with entered(node.ns), EndpointTable(node.pin_root) as table:
        for i, (idx, mac) in enumerate(links):
            table.add(
                Endpoint(
                    idx,
                    f"02:00:00:00:{i >> 8:02x}:{i & 0xFF:02x}",
                    mac,
                    [str(FAKE_V4[i + 1]), str(FAKE_V6[i + 1])],
                )
            )
    if lease_dir:
        os.makedirs(lease_dir, mode=0o700, exist_ok=True)
        for i in range(n):
            with open(os.path.join(lease_dir, str(FAKE_V4[i + 1])), "w") as fh:
                fh.write(f"bench-fake-{i}\neth0\n")
    t_entries = time.monotonic() - t0 - t_links
    log(
        f"    {n} veth pairs in {t_links:.1f}s, {n} endpoint-table entries"
        f"{' and leases' if lease_dir else ''} in {t_entries:.1f}s"
    )
    return {
        "n": n,
        "veth_pairs_s": round(t_links, 2),
        "table_entries_s": round(time.monotonic() - t0 - t_links, 2),
    }


def remove_fake_endpoints(graveyard: str, n: int = 0, lease_dir: str | None = None) -> None:
    """Remove the graveyard namespace: the veth pairs go with it. Their table entries stay until
    the node's datapath is unloaded (removing them one by one would cost O(n^2) map walks); their
    leases (add_fake_endpoints' lease_dir) are removed."""
    try:
        netns.remove(graveyard)
    except OSError:
        pass
    for i in range(n if lease_dir else 0):
        try:
            os.unlink(os.path.join(lease_dir, str(FAKE_V4[i + 1])))
        except FileNotFoundError:
            pass


def _populate(node: Node, st: dict, log) -> dict:
    """Bring `node` to st["n"] endpoints: real pods through the executable (st["plugins"],
    st["pods"]) up to 50, endpoints inserted directly above (add_fake_endpoints, in
    st["graveyard"] with leases in st["lease_dir"]). What it makes is noted in `st` as it is
    made ("real": the pods to delete, "fake_n": the fake endpoints), for _unpopulate."""
    plugins, pods, n_exist = st["plugins"], st["pods"], st["n"]
    res: dict = {}
    base = settled_endpoint_count(node)
    st["real"] = real = []
    if n_exist <= 50:  # real pods through the executable
        for i in range(max(0, n_exist - base)):
            ns = pods.new(f"ke{i}")
            real.append((f"bench-exist-{i}", ns))
            plugins.call("xdpcni-agent", "ADD", f"bench-exist-{i}", ns)
        res["how"] = f"{len(real)} pods added with xdpcni ADD (+{base} already there)"
    else:
        st["fake_n"] = n_exist - base
        res["fake"] = add_fake_endpoints(node, n_exist - base, st["graveyard"], log, st["lease_dir"])
        res["how"] = (
            f"{n_exist - base} endpoints inserted directly with datapath.endpoints."
            f"EndpointTable (a real veth pair and a lease each in xdpcni's network, no "
            f"records or claims) +{base} real"
        )
    res["endpoints_present"] = endpoint_count(node)
    return res


def interleaved(n_nodes: int, cycles: int) -> list[tuple[int, str, int]]:
    """The order of endpoint_counts' calls: (cycle, plugin, node index) triples. Every cycle has
    an in-process then an agent ADD+DEL on each node; the nodes' order is reversed every other
    cycle, so that no node is always the first after a plugin switch."""
    order = []
    for c in range(cycles):
        nodes = range(n_nodes) if c % 2 == 0 else range(n_nodes - 1, -1, -1)
        order += [(c, p, k) for p in ("xdpcni", "xdpcni-agent") for k in nodes]
    return order


def endpoint_counts(existing: list[int], cycles: int, log=print) -> dict:
    """xdpcni ADD/DEL (in-process and through the agent) with each of `existing` endpoints on the
    node: {str(n): {"how", "endpoints_present", "xdpcni": {"add", "del"}, "xdpcni-agent": ...,
    "agent_side": that node's agent's own times}}.

    Side by side, as the bridge comparison is: a fresh node per count (bench.topo.BenchNode, TC
    mode, its own agent; the same history for every count), all loaded and populated first, then
    `cycles` cycles, each an ADD and a DEL on every node in turn (in-process, then through the
    agent; the nodes' order reversed every other cycle: interleaved()). Measured one count after
    the other on one node, a slow or fast stretch of the VM (seconds long, as each count's
    cycles were) moved one count's p50 by up to 35 %: the 1000 vs 10 endpoints ratio then said
    more about the moment than about xdpcni. Every node, agent, pod and fake endpoint made here
    is removed on the way out, whatever fails."""
    from .topo import BenchNode

    sets: list[dict] = []
    with contextlib.ExitStack() as stack:
        for n_exist in existing:
            bn = BenchNode(None, log=log)
            stack.callback(bn.close)  # last: the node's namespaces and pins go with it
            bn.configure("tc")
            n_node = bn.node
            n_pods = PodNamespaces(n_node)
            stack.callback(n_pods.remove_all)
            n_agent = NodeAgent(n_node)
            stack.callback(n_agent.stop)
            n_plugins = Plugins(n_node, n_agent.sock)
            conf = n_plugins.confs["xdpcni"]
            st = {
                "n": n_exist,
                "agent": n_agent,
                "plugins": n_plugins,
                "pods": n_pods,
                "graveyard": f"{n_node.ns}-gy",
                # the network's lease directory, as cni/commands/common.lease_store names it
                "lease_dir": os.path.join(conf["dataDir"], conf["name"], "ipam"),
                "add": {"xdpcni": [], "xdpcni-agent": []},
                "del": {"xdpcni": [], "xdpcni-agent": []},
            }
            stack.callback(_unpopulate, st, log)  # before the agent stops: its pods' DELs
            sets.append(st)
            st["res"] = _populate(n_node, st, log)
        for c, p, k in interleaved(len(sets), cycles):
            st = sets[k]
            ns = st["pods"].new(f"ky{p[-1]}{c}")
            st["add"][p].append(st["plugins"].call(p, "ADD", f"bench-cyc-{p}-{c}", ns))
            st["del"][p].append(st["plugins"].call(p, "DEL", f"bench-cyc-{p}-{c}", ns))
            st["pods"].remove(ns)
        out: dict = {}
        for st in sets:
            res = st["res"]
            for p in ("xdpcni", "xdpcni-agent"):
                res[p] = {"add": summary(st["add"][p]), "del": summary(st["del"][p])}
            res["agent_side"] = _agent_side(st["agent"].served())
            out[str(st["n"])] = res
            log(
                f"    ADD with {res['endpoints_present']} endpoints: "
                f"in-process p50 {res['xdpcni']['add']['p50_ms']} ms, "
                f"agent p50 {res['xdpcni-agent']['add']['p50_ms']} ms"
            )
        return out


def _unpopulate(st: dict, log) -> None:
    """Undo _populate for one node (its real pods through DEL, its fake endpoints and leases);
    a failed DEL is logged, not raised: the node's own teardown follows either way."""
    for cid, ns in st.pop("real", []):
        try:
            st["plugins"].call("xdpcni-agent", "DEL", cid, ns)
        except Exception as exc:
            log(f"    cleanup: {exc}")
        st["pods"].remove(ns)
    if "fake_n" in st:
        remove_fake_endpoints(st["graveyard"], st.pop("fake_n"), st["lease_dir"])


def _at_once(plugins: Plugins, plugin: str, verb: str, made: list[tuple[str, str]]) -> dict:
    times: list[float] = []
    errors: list[str] = []
    gate = threading.Barrier(len(made) + 1)

    def one(cid: str, ns: str) -> None:
        gate.wait()
        try:
            times.append(plugins.call(plugin, verb, cid, ns))
        except Exception as exc:
            errors.append(str(exc)[:300])

    threads = [threading.Thread(target=one, args=m) for m in made]
    for t in threads:
        t.start()
    gate.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = (time.perf_counter() - t0) * 1000.0
    if errors:
        raise RuntimeError(f"{plugin} {verb} x{len(made)} at once: {len(errors)} failed, first: {errors[0]}")
    return {"wall_ms": round(wall, 1), **summary(times)}


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, s (/proc/PID/stat fields 14-15)."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        fields = fh.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def node_busy_seconds() -> float:
    """CPU time all CPUs have spent busy (not idle or iowait) since boot, s (/proc/stat)."""
    with open("/proc/stat") as fh:
        f = [int(x) for x in fh.readline().split()[1:]]
    return (sum(f[:8]) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")


def concurrent(
    plugins: Plugins, pods: PodNamespaces, plugin: str, n: int, tag: str, agent_pid: int | None = None
) -> dict:
    """n ADDs launched at once (as a node does when a Job starts n pods), then n DELs at once:
    wall time from the first launch to the last exit, and each call's own time; with agent_pid,
    also the CPU time the agent used for each batch."""
    made = [
        (f"bench-{tag}-{plugin}-{i}", pods.new(f"q{tag}{plugin[0]}{'a' if 'agent' in plugin else ''}{i}"))
        for i in range(n)
    ]
    out: dict = {"n": n}
    for verb in ("ADD", "DEL"):
        cpu0 = cpu_seconds(agent_pid) if agent_pid else 0.0
        busy0 = node_busy_seconds()
        out[verb.lower()] = _at_once(plugins, plugin, verb, made)
        out[verb.lower()]["machine_cpu_ms"] = round((node_busy_seconds() - busy0) * 1000.0, 1)
        if agent_pid:
            out[verb.lower()]["agent_cpu_ms"] = round((cpu_seconds(agent_pid) - cpu0) * 1000.0, 1)
    for _, ns in made:
        pods.remove(ns)
    return out


def run(
    node: Node,
    n_pods: int,
    existing: list[int],
    cycles: int,
    log=print,
    n_concurrent: int = 100,
    rounds: int = 2,
    cpu_groups: bool = True,
) -> dict:
    agent = NodeAgent(node)
    pods = PodNamespaces(node)
    plugins = Plugins(node, agent.sock)
    names = list(plugins.confs)  # xdpcni, bridge, ptp, xdpcni-agent
    out: dict = {
        "plugins": names,
        "n_pods": n_pods,
        "ipam": "IPv4 only",
        "cni_version": CNI_VERSION,
        "cycles": cycles,
        "timing": "wall time of the whole plugin process (spawn to exit)",
    }
    try:
        out["process_overheads"] = process_overheads(node)
        # 1. n_pods ADDs then n_pods DELs, plugins interleaved pod by pod (same moment, same load).
        add_ms = {p: [] for p in names}
        del_ms = {p: [] for p in names}
        made: list[tuple[str, str, str]] = []
        t0 = time.monotonic()
        for i in range(n_pods):
            for p in names:
                cid = f"bench-{p}-{i}"
                ns = pods.new(f"k{p[0]}{'a' if p.endswith('agent') else ''}{i}")
                add_ms[p].append(plugins.call(p, "ADD", cid, ns))
                made.append((p, cid, ns))
        for p, cid, ns in made:
            del_ms[p].append(plugins.call(p, "DEL", cid, ns))
            pods.remove(ns)
        log(f"    {n_pods} pods x {len(names)} plugins ADD+DEL in {time.monotonic() - t0:.1f}s")
        out["add"] = {p: summary(v) for p, v in add_ms.items()}
        out["del"] = {p: summary(v) for p, v in del_ms.items()}
        served_before = len(agent.served())
        out["agent_side_sequential"] = _agent_side(agent.served())
        out["raw_ms"] = {
            "add": {p: [round(x, 2) for x in v] for p, v in add_ms.items()},
            "del": {p: [round(x, 2) for x in v] for p, v in del_ms.items()},
        }

        # 2. n_concurrent ADDs launched at once, then as many DELs, bridge and xdpcni (agent)
        # alternating over `rounds` rounds; the best round of each is reported, all are kept.
        # The agent in a CPU cgroup of its own, the runtime's processes in another, closer to how
        # a node runs them (bench/cpugroups.py).
        conc: dict = {"n": n_concurrent, "rounds": {"bridge": [], "xdpcni-agent": []}}
        with (
            cpugroups.separate(f"xdpcni-bench-{node.ns}")
            if cpu_groups
            else contextlib.nullcontext() as groups
        ):
            if groups is not None:
                groups.add_agent(agent.proc.pid)
            conc["cpu_groups"] = groups.how if groups is not None else "one group (--same-cgroup)"
            log(f"    CPU groups: {conc['cpu_groups']}")
            for r in range(rounds):
                for p in ("bridge", "xdpcni-agent") if r % 2 == 0 else ("xdpcni-agent", "bridge"):
                    res = concurrent(
                        plugins,
                        pods,
                        p,
                        n_concurrent,
                        f"{r}",
                        agent.proc.pid if p == "xdpcni-agent" else None,
                    )
                    conc["rounds"][p].append(res)
                    cpu = f"; CPU used, all processes: {res['add']['machine_cpu_ms']:.0f} / {res['del']['machine_cpu_ms']:.0f} ms"
                    if "agent_cpu_ms" in res["add"]:
                        cpu += f", the agent: {res['add']['agent_cpu_ms']:.0f} / {res['del']['agent_cpu_ms']:.0f} ms"
                    log(
                        f"    {n_concurrent} ADDs at once, {p:13}: wall {res['add']['wall_ms']:.0f} ms, "
                        f"p50 {res['add']['p50_ms']} p99 {res['add']['p99_ms']} ms; "
                        f"DELs wall {res['del']['wall_ms']:.0f} ms{cpu} (ADDs / DELs)"
                    )
        if groups is not None and groups.cleanup_errors:
            conc["cpu_groups_cleanup"] = groups.cleanup_errors
            log(f"    CPU groups, cleanup: {'; '.join(groups.cleanup_errors)}")
        conc["best"] = {p: min(v, key=lambda x: x["add"]["wall_ms"]) for p, v in conc["rounds"].items() if v}
        conc["agent_side"] = _agent_side(agent.served()[served_before:])  # run time, turn-wait excluded
        out["concurrent"] = conc

        # 3. xdpcni ADD with N endpoints already on the node: a fresh node per N, side by side.
        # This node's agent would only idle beside theirs (its watcher wakes every second).
        agent.stop()
        out["add_with_existing"] = endpoint_counts(existing, cycles, log)
    finally:
        agent.stop()
        out["agent_side"] = _agent_side(agent.served())
        pods.remove_all()
        shutil.rmtree(os.path.join(node.data_dir, "host-local"), ignore_errors=True)
    return out


def _agent_side(served: list[tuple[str, str, int, float]]) -> dict:
    """Time inside the agent (execute() of each verb, ms) of the successful ADDs and DELs."""
    by_verb: dict[str, list[float]] = {}
    for verb, _, rc, ms in served:
        if rc == 0 and verb in ("ADD", "DEL"):
            by_verb.setdefault(verb, []).append(ms)
    return {verb: summary(v) for verb, v in by_verb.items()}


def table(c: dict) -> str:
    """The README's CNI rows from a run's results."""
    rows = [
        "| CNI | ADD p50 | ADD p99 | DEL p50 | DEL p99 | ADD p50 vs bridge |",
        "|---|---|---|---|---|---|",
    ]
    names = {
        "bridge": "Debian `bridge` + `host-local`",
        "ptp": "Debian `ptp` + `host-local`",
        "xdpcni": "xdpcni, in-process (no agent)",
        "xdpcni-agent": "xdpcni, via the node agent",
    }
    ref = c["add"]["bridge"]["p50_ms"]
    for p in ("bridge", "ptp", "xdpcni", "xdpcni-agent"):
        a, d = c["add"][p], c["del"][p]
        rows.append(
            f"| {names[p]} | {a['p50_ms']:.1f} ms | {a['p99_ms']:.1f} ms | {d['p50_ms']:.1f} ms | "
            f"{d['p99_ms']:.1f} ms | {a['p50_ms'] / ref:.2f}× |"
        )
    conc = c.get("concurrent")
    if conc and conc["n"] and len(conc.get("best", {})) == 2:  # not with --concurrent 0 / --rounds 0
        rows += [
            "",
            f"| {conc['n']} ADDs launched at once (best of {len(conc['rounds']['bridge'])} rounds) "
            "| wall | per call p50 | per call p99 | DELs at once: wall |",
            "|---|---|---|---|---|",
        ]
        for p in ("bridge", "xdpcni-agent"):
            b = conc["best"][p]
            rows.append(
                f"| {names[p]} | {b['add']['wall_ms']:.0f} ms | {b['add']['p50_ms']:.1f} ms | "
                f"{b['add']['p99_ms']:.1f} ms | {b['del']['wall_ms']:.0f} ms |"
            )
    return "\n".join(rows)


def main(argv=None) -> int:
    """`flock /tmp/xdpcni-heavy.lock python -m bench.cnibench`: the CNI phase of `make bench` on its
    own (same node set-up, same code), results to bench/results-cni.json and a table on stdout."""
    import argparse
    import json
    import platform

    from .topo import BenchNode

    ap = argparse.ArgumentParser(prog="python -m bench.cnibench", description=main.__doc__)
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--concurrent", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--existing", default="10,1000")
    ap.add_argument("--cycles", type=int, default=40)
    ap.add_argument(
        "--same-cgroup",
        action="store_true",
        help="100 at once with the agent in the runtime's CPU cgroup (default: one of its own, as on a node)",
    )
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results-cni.json"))
    args = ap.parse_args(argv)
    log = lambda m: print(m, flush=True)  # noqa: E731
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    bn = BenchNode(None, log=log)
    try:
        bn.configure("tc")
        res = run(
            bn.node,
            args.pods,
            [int(x) for x in args.existing.split(",") if x],
            args.cycles,
            log=log,
            n_concurrent=args.concurrent,
            rounds=args.rounds,
            cpu_groups=not args.same_cgroup,
        )
    finally:
        bn.close()
    res["meta"] = {"date": started, "kernel": platform.release(), "cpus": os.cpu_count(), "argv": argv or []}
    with open(args.out, "w") as fh:
        json.dump(res, fh, indent=1)
    print(table(res))
    for n, r in res.get("add_with_existing", {}).items():
        print(
            f"ADD p50 with {r['endpoints_present']} endpoints ({n} asked): in-process "
            f"{r['xdpcni']['add']['p50_ms']} ms, agent {r['xdpcni-agent']['add']['p50_ms']} ms"
        )
    print(f"process overheads: {json.dumps(res['process_overheads'])}")
    print(f"agent side, sequential phase: {json.dumps(res.get('agent_side_sequential'))}")
    print(f"agent side, at-once phase: {json.dumps(res.get('concurrent', {}).get('agent_side'))}")
    print(f"agent side, phases 1 and 2 (phase 3 has its own per count): {json.dumps(res.get('agent_side'))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
