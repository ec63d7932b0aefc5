"""The agent's Kubernetes mode on three simulated nodes, against the fake API server.

Each simulated node runs `xdpcnictl agent --kubernetes` in its own network namespace, with its
own node name and a kubeconfig pointing at a listener of the fake API server on that
namespace's 127.0.0.1 (tests/harness/fakeapi.py: real list/watch protocol, the official client
on the other end). The node config says `nic: auto`, so the agent finds the NIC from its Node's
InternalIP and loads the datapath itself. No route between nodes is hand-written.

Checked: three Nodes → routes on every node (kernel routes, proto 201), the conflist written
only once the Node has podCIDRs (in spec.podCIDRs order, named to sort first, pod MTU from the
link to the peers, clamped), a warning naming other conflists, NetworkUnavailable=False patched
by strategic merge (kubelet's Ready kept); a Node deleted → its routes go; a Node off the L2
segment reported and not routed; an agent restart, a broken watch and 410 Gone (event and HTTP)
each resync without a route deleted or re-added; the installed client runs under the host's
`/usr/bin/python3 -I -S`, answers VERSION alone, code 11 without an agent, and an ADD through
the agent gives pods that reach each other across nodes over IPv4 and IPv6; the API calls made
are exactly node.k8s.RBAC_RULES.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest
import yaml
from pyroute2 import netns

from datapath.pins import PinLayout
from node.k8s import RBAC_RULES
from sim import processes
from sim.agent import NodeAgent
from sim.packets import udp_exchange
from sim.topology import Cluster, _no_dad, loopback_up, run_in
from tests.harness.fakeapi import FakeApiServer, make_node
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.kernel
HOST_PYTHON = "/usr/bin/python3"
NIC_MTU = {"n0": 1500, "n1": 9001, "n2": 1460}  # AWS-like jumbo → 3506; GCP-like 1460 stays
POD_MTU = {"n0": 1500, "n1": 3506, "n2": 1460}
FAR = make_node("far", ["203.0.113.7"], ["198.19.77.0/24"])  # not on any node's L2 segment


class Agent(NodeAgent):
    """`xdpcnictl agent --kubernetes` for one simulated node, stopped by PID."""

    def __init__(self, env, node, tag: str):
        super().__init__(
            node,
            tag=f"k8s-{tag}",
            socket=env.socket(node),
            wait=False,
            global_args=["--config", env.config[node.name]],
            args=[
                "--kubernetes",
                "--kubeconfig",
                env.kubeconfig[node.name],
                "--node-name",
                node.name,
                "--cni-bin-dir",
                env.bin_dir(node),
                "--cni-conf-dir",
                env.conf_dir(node),
            ],
        )

    def wait_log(self, text: str, timeout: float = 60.0) -> str:
        return super().wait_log(text, timeout=timeout)


class Env:
    def __init__(self, cluster: Cluster, api: FakeApiServer):
        self.cluster = cluster
        self.api = api
        self.port: dict[str, int] = {}
        self.kubeconfig: dict[str, str] = {}
        self.config: dict[str, str] = {}
        self.agents: dict[str, Agent] = {}

    def socket(self, node) -> str:
        return os.path.join(node.data_dir, "agent.sock")

    def bin_dir(self, node) -> str:
        return os.path.join(node.data_dir, "host", "opt", "cni", "bin")

    def conf_dir(self, node) -> str:
        return os.path.join(node.data_dir, "host", "etc", "cni", "net.d")

    def conflist(self, node) -> str:
        return os.path.join(self.conf_dir(node), "00-xdpcni.conflist")

    def start(self, node, tag: str) -> Agent:
        self.agents[node.name] = Agent(self, node, tag)
        return self.agents[node.name]

    def stop(self, node) -> None:
        agent = self.agents.pop(node.name, None)
        if agent is not None:
            agent.stop()


def ours(node) -> set[str]:
    """Our routes (proto 201) as `dst via gateway dev`."""
    out = set()
    for fam in ("-4", "-6"):
        for ln in run_in(node.ns, "ip", fam, "route", "show", "proto", "201").stdout.splitlines():
            out.add(" ".join(ln.split()[:5]))
    return out


def expected(cluster, node, nodes=None) -> set[str]:
    return {
        r
        for o in (nodes or cluster.nodes)
        if o is not node
        for r in (f"{o.cidr4} via {o.nic_ip4} dev nic0", f"{o.cidr6} via {o.nic_ip6} dev nic0")
    }


def all_routes(cluster) -> dict[str, list[str]]:
    return {
        n.name: sorted(run_in(n.ns, "ip", fam, "route", "show").stdout for fam in ("-4", "-6"))
        for n in cluster.nodes
    }


class RouteMonitors:
    """`ip monitor route` in every node: every RTM_NEWROUTE / RTM_DELROUTE while it runs."""

    def __init__(self, cluster):
        self.procs = {
            n.name: subprocess.Popen(
                ["nsenter", f"--net=/var/run/netns/{n.ns}", "ip", "-o", "monitor", "route"],
                stdout=subprocess.PIPE,
                text=True,
            )
            for n in cluster.nodes
        }
        time.sleep(0.5)  # subscribed before anything happens

    def stop(self) -> dict[str, list[str]]:
        time.sleep(0.3)
        out = {}
        for name, proc in self.procs.items():
            processes.stop(proc, grace=5)
            out[name] = [ln.strip() for ln in proc.stdout.read().splitlines() if ln.strip()]
        return out


@pytest.fixture(scope="module")
def env():
    cluster = Cluster(3, routes=False)
    api = FakeApiServer(bookmark_interval=0.5)
    e = Env(cluster, api)
    try:
        for node in cluster.nodes:
            run_in(node.ns, "ip", "link", "set", "nic0", "mtu", str(NIC_MTU[node.name]))
            e.port[node.name] = api.listen(node.ns)
            os.makedirs(node.data_dir, exist_ok=True)
            e.kubeconfig[node.name] = api.kubeconfig(
                os.path.join(node.data_dir, "kubeconfig"), e.port[node.name]
            )
            e.config[node.name] = os.path.join(node.data_dir, "xdpcni.yaml")
            with open(e.config[node.name], "w") as fh:
                yaml.safe_dump(
                    {"nic": "auto", "mode": "tc", "netfilter": "auto", "bpffs_root": node.pin_root}, fh
                )
            os.makedirs(e.conf_dir(node))
        # A conflist another CNI left behind on n0: warned about, sorts after ours.
        with open(os.path.join(e.conf_dir(cluster.nodes[0]), "10-flannel.conflist"), "w") as fh:
            json.dump({"cniVersion": "1.0.0", "name": "cbr0", "plugins": [{"type": "flannel"}]}, fh)
        yield e
    finally:
        for name in list(e.agents):
            e.agents.pop(name).stop()
        api.close()
        cluster.teardown()


def _pod_cidrs(node) -> list[str]:
    # n1 is an IPv6-primary dual-stack node: its podCIDRs list IPv6 first
    c = [str(node.cidr4), str(node.cidr6)]
    return c[::-1] if node.name == "n1" else c


def test_three_nodes_get_routes_to_each_other(env):
    cluster, api = env.cluster, env.api
    n0, n1, n2 = cluster.nodes
    for node in (n0, n1):
        api.add_node(make_node(node.name, [node.nic_ip4, node.nic_ip6], _pod_cidrs(node)))
    api.add_node(make_node(n2.name, [n2.nic_ip4, n2.nic_ip6], []))  # no podCIDR allocated yet
    for node in cluster.nodes:
        env.start(node, "first")
    for node in (n0, n1):
        env.agents[node.name].wait_log("kubernetes: ready")
    agent2 = env.agents[n2.name]
    agent2.wait_log("has no spec.podCIDRs yet: CNI config not written")
    # n2 without podCIDRs: datapath loaded (its /healthz is green), but no conflist, no
    # condition, nothing routed to it
    assert PinLayout(n2.pin_root).is_loaded()
    assert not os.path.exists(env.conflist(n2))
    assert api.node("n2")["status"]["conditions"][0]["type"] == "Ready"
    assert len(api.node("n2")["status"]["conditions"]) == 1
    wait_for(lambda: ours(n0) == expected(cluster, n0, [n0, n1]), what="n0 -> n1 routes")
    assert ours(n2) == expected(cluster, n2, [n0, n1, n2])  # n2 routes to the others already

    api.modify_node("n2", lambda n: n["spec"].update(podCIDR=_pod_cidrs(n2)[0], podCIDRs=_pod_cidrs(n2)))
    agent2.wait_log("kubernetes: ready")
    for node in cluster.nodes:
        wait_for(lambda node=node: ours(node) == expected(cluster, node), what=f"{node.name}'s routes")


def test_conflist_from_the_nodes_pod_cidrs_in_order(env):
    for node in env.cluster.nodes:
        with open(env.conflist(node)) as fh:
            conf = json.load(fh)
        (plugin,) = conf["plugins"]  # no portmap in this bin dir: not chained
        assert plugin["type"] == "xdpcni" and conf["name"] == "xdpcni"
        assert [rs[0]["subnet"] for rs in plugin["ipam"]["ranges"]] == _pod_cidrs(node)
        assert plugin["mtu"] == POD_MTU[node.name], node.name
        assert plugin["nic"] == "nic0"  # found from the Node's InternalIP (node config: nic: auto)
        assert plugin["bpffsRoot"] == node.pin_root and plugin["agentSocket"] == env.socket(node)
        assert sorted(os.listdir(env.conf_dir(node)))[0] == "00-xdpcni.conflist"
        exe = os.path.join(env.bin_dir(node), "xdpcni")
        assert os.stat(exe).st_mode & 0o777 == 0o755
        # the executable went in first, the conflist last
        assert os.stat(exe).st_mtime_ns <= os.stat(env.conflist(node)).st_mtime_ns
        assert not [f for f in os.listdir(env.conf_dir(node)) if f.startswith(".")]  # no temporaries
    log = env.agents["n0"].text()
    assert "warning: other CNI configs in" in log and "10-flannel.conflist" in log
    assert "sorts first" not in log  # ours does
    assert "pod MTU 3506 from nic0 (route to" in env.agents["n1"].text()
    assert "clamped" in env.agents["n1"].text()


def test_network_unavailable_false_by_strategic_merge(env):
    for node in env.cluster.nodes:
        conds = wait_for(
            lambda node=node: (
                len(env.api.node(node.name)["status"]["conditions"]) == 2
                and env.api.node(node.name)["status"]["conditions"]
            ),
            what="the condition",
        )
        assert [c["type"] for c in conds] == ["Ready", "NetworkUnavailable"]  # kubelet's Ready kept
        cond = conds[1]
        assert (cond["status"], cond["reason"]) == ("False", "XdpcniIsUp")
        assert "datapath loaded" in cond["message"]
    patches = env.api.log("PATCH")
    assert {p[3] for p in patches} == {"application/strategic-merge-patch+json"}
    assert sorted(p[1] for p in patches) == [f"/api/v1/nodes/n{i}/status" for i in range(3)]  # once each


def test_a_deleted_node_loses_its_routes_and_a_far_node_is_reported(env):
    cluster, api = env.cluster, env.api
    ghost = make_node("n9", ["198.18.0.99", "2001:db8::99"], ["198.19.9.0/24", "2001:db8:1:9::/64"])
    api.add_node(ghost)
    api.add_node(FAR)
    for node in cluster.nodes:
        want = expected(cluster, node) | {
            "198.19.9.0/24 via 198.18.0.99 dev nic0",
            "2001:db8:1:9::/64 via 2001:db8::99 dev nic0",
        }
        wait_for(lambda node=node, want=want: ours(node) == want, what=f"{node.name} routes to n9")
    for node in cluster.nodes:
        env.agents[node.name].wait_log("peer far: 203.0.113.7 not on a directly connected subnet")
    api.delete_node("n9")
    api.delete_node("far")
    for node in cluster.nodes:
        wait_for(lambda node=node: ours(node) == expected(cluster, node), what=f"{node.name} without n9")


def test_agent_restart_flaps_no_route(env):
    cluster = env.cluster
    n0 = cluster.nodes[0]
    before = all_routes(cluster)
    conf_mtime = os.stat(env.conflist(n0)).st_mtime_ns
    mon = RouteMonitors(cluster)
    try:
        env.stop(n0)
        assert ours(n0) == expected(cluster, n0)  # routes stay while no agent runs
        agent = env.start(n0, "second")
        agent.wait_log("kubernetes: ready")
        agent.wait_log("routes: 0 added, 0 changed, 0 removed, 4 kept")
    finally:
        events = mon.stop()
    assert events == {n.name: [] for n in cluster.nodes}, events
    assert all_routes(cluster) == before
    assert os.stat(env.conflist(n0)).st_mtime_ns == conf_mtime  # same content: not rewritten


def _lists(env, node) -> int:
    return len(env.api.log("GET", watch=False, port=env.port[node.name]))


@pytest.mark.parametrize("how", ["broken", "gone-event", "gone-http"])
def test_watch_failures_resync_without_flaps(env, how):
    """A change made while the watches are deaf (partition) is caught by the relist that a broken
    watch or a 410 Gone forces, and nothing else moves."""
    cluster, api = env.cluster, env.api
    lists = {n.name: _lists(env, n) for n in cluster.nodes}
    extra = make_node("n8", ["198.18.0.98", "2001:db8::98"], ["198.19.8.0/24", "2001:db8:1:8::/64"])
    mon = RouteMonitors(cluster)
    try:
        api.pause()
        api.add_node(extra)
        if how == "broken":
            api.break_watches()
        else:
            api.gone_as_http = how == "gone-http"
            api.expire()
            api.end_watches()
        api.pause(False)
        for node in cluster.nodes:
            wait_for(lambda node=node: _lists(env, node) > lists[node.name], what=f"{node.name} relists")
            wait_for(
                lambda node=node: "198.19.8.0/24 via 198.18.0.98 dev nic0" in ours(node), what="n8 route"
            )
    finally:
        events = mon.stop()
        api.gone_as_http = False
    for name, evs in events.items():
        assert [e for e in evs if e.startswith("Deleted")] == [], (name, evs)
        assert len(evs) == 2 and all("198.19.8.0/24" in e or "2001:db8:1:8::/64" in e for e in evs), (
            name,
            evs,
        )
    if how != "broken":
        for node in cluster.nodes:
            assert "relisting" in env.agents[node.name].text()
    api.delete_node("n8")
    for node in cluster.nodes:
        wait_for(lambda node=node: ours(node) == expected(cluster, node), what="n8 gone")


def _client(env, node, command: str, stdin: bytes, extra: dict | None = None, in_node: bool = True):
    exe = os.path.join(env.bin_dir(node), "xdpcni")
    cmd = [HOST_PYTHON, "-I", "-S", exe]
    if in_node:
        cmd = ["nsenter", f"--net=/var/run/netns/{node.ns}", *cmd]
    e = {"CNI_COMMAND": command, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **(extra or {})}
    res = subprocess.run(
        ["env", "-i", *(f"{k}={v}" for k, v in e.items()), *cmd], input=stdin, capture_output=True, timeout=60
    )
    out = json.loads(res.stdout) if res.stdout.strip() else None
    return res.returncode, out, res.stderr.decode()


def test_installed_client_runs_on_the_hosts_python_alone(env):
    n0 = env.cluster.nodes[0]
    rc, out, err = _client(env, n0, "VERSION", b'{"cniVersion": "1.0.0"}', in_node=False)
    assert (rc, out["cniVersion"]) == (0, "1.0.0") and "1.1.0" in out["supportedVersions"], err
    with open(env.conflist(n0), "rb") as fh:
        conf = json.load(fh)
    net = {"cniVersion": conf["cniVersion"], "name": conf["name"], **conf["plugins"][0]}
    net["agentSocket"] = os.path.join(n0.data_dir, "nobody-listens.sock")
    rc, out, err = _client(
        env,
        n0,
        "ADD",
        json.dumps(net).encode(),
        {"CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "CNI_NETNS": "/var/run/netns/x"},
    )
    assert rc == 1 and out["code"] == 11 and "not reachable" in out["msg"], (out, err)
    rc, out, err = _client(env, n0, "STATUS", json.dumps(net).encode())
    assert rc == 1 and out["code"] == 50, out
    # what it imports, as the interpreter reports it (-v): the standard library and the client
    # module installed beside the launcher, nothing else
    exe = os.path.join(env.bin_dir(n0), "xdpcni")
    with open(exe) as fh:
        assert fh.readline() == "#!/usr/bin/python3 -IS\n"
    res = subprocess.run(
        ["env", "-i", "CNI_COMMAND=ADD", HOST_PYTHON, "-I", "-S", "-v", exe],
        input=json.dumps(net).encode(),
        capture_output=True,
        timeout=60,
    )
    imported = set(re.findall(r"^import '([\w.]+)'", res.stderr.decode(), re.M))
    assert json.loads(res.stdout)["code"] == 11 and imported
    # The client module: imported by a first run, later run from the bytecode that import cached
    # (cni/client.py LOAD_CLIENT), which -v does not list.
    pycache = os.path.join(env.bin_dir(n0), ".xdpcni", "__pycache__")
    assert "xdpcni_client" in imported or any(f.startswith("xdpcni_client.") for f in os.listdir(pycache))
    assert {m.split(".")[0] for m in imported} <= set(sys.stdlib_module_names) | {"xdpcni_client"}, imported


def test_add_through_the_installed_client_and_pods_reach_each_other(env):
    cluster = env.cluster
    pods = []
    try:
        for node in cluster.nodes[:2]:
            pod_ns = f"{node.ns}-k8spod"
            netns.create(pod_ns)
            cluster.namespaces.append(pod_ns)
            _no_dad(pod_ns)
            loopback_up(pod_ns)  # the runtime's part of the sandbox, as containerd's loopback plugin
            with open(env.conflist(node), "rb") as fh:
                conf = json.load(fh)
            net = {"cniVersion": conf["cniVersion"], "name": conf["name"], **conf["plugins"][0]}
            net["dataDir"] = os.path.join(node.data_dir, "cni")  # not the machine's /var/lib/cni
            extra = {
                "CNI_CONTAINERID": f"k8s-{node.name}",
                "CNI_IFNAME": "eth0",
                "CNI_NETNS": f"/var/run/netns/{pod_ns}",
                "CNI_PATH": env.bin_dir(node),
            }
            rc, out, err = _client(env, node, "ADD", json.dumps(net).encode(), extra)
            assert rc == 0, (out, err)
            ips = [ip["address"].split("/")[0] for ip in out["ips"]]
            pods.append((node, pod_ns, ips, net, extra))
        (n0, ns0, ips0, _, _), (n1, ns1, ips1, _, _) = pods
        assert ":" in ips1[0] and ":" not in ips0[0]  # n1's podCIDRs list IPv6 first: its pod's primary is v6
        assert "ADD k8s-n0 rc=0" in env.agents["n0"].text()  # served by the agent, not in-process
        for dst in ips1:
            assert udp_exchange(ns0, ns1, dst, n=5) == 5, dst
        for dst in ips0:
            assert udp_exchange(ns1, ns0, dst, n=5) == 5, dst
    finally:
        for node, _, _, net, extra in pods:
            rc, out, err = _client(env, node, "DEL", json.dumps(net).encode(), extra)
            assert rc == 0, (out, err)
            shutil.rmtree(net["dataDir"], ignore_errors=True)


def test_api_calls_are_exactly_the_rbac_rules(env):
    made = set()
    for method, path, query, _, _ in env.api.log():
        parts = path.strip("/").split("/")  # api v1 nodes [name [status]]
        resource = "nodes/status" if parts[-1] == "status" else "nodes"
        if method == "PATCH":
            verb = "patch"
        elif len(parts) == 4:
            verb = "get"
        else:
            verb = "watch" if query.get("watch") == "true" else "list"
        made.add((resource, verb))
    allowed = {(r, v) for rule in RBAC_RULES for r in rule["resources"] for v in rule["verbs"]}
    assert made == allowed
