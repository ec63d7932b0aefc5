"""Routes to the other nodes from the peers file (node/routes.py) on three simulated nodes.

No route between nodes is hand-written: the cluster writes a peers file and every node syncs from
it (`xdpcnictl routes --peers`, and `xdpcnictl agent --peers` where the test says so). Checked:
pod <-> pod across every ordered node pair over IPv4 and IPv6 on the fast path (per-endpoint
counters, kernel forwarding flat); a peer removed from the file loses its routes; a restart
(of the one-shot sync and of the agent) deletes and re-adds nothing; routes of another protocol
in the pod address space are left alone; a peer that is not on-link is reported and skipped.
"""

from __future__ import annotations

import itertools
import subprocess
import time

import pytest

from datapath.abi import Reason
from datapath.stats import Stats
from sim import processes
from sim.agent import NodeAgent
from sim.packets import forwarded, udp_exchange
from sim.topology import Cluster, run_in

pytestmark = pytest.mark.kernel
N = 20
RTPROT_XDPCNI = "201"


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(3, routes=False)
    try:
        for node in c.nodes:
            node.load("tc")
            node.add_pod()
        c.write_peers()
        first = c.sync_routes()
        assert all(len(r["added"]) == 4 and not r["problems"] for r in first.values()), first
        yield c
    finally:
        c.teardown()


@pytest.fixture
def restore(cluster):
    """Whatever a test does to the peers file, the shared cluster ends with every node routed."""
    yield
    cluster.write_peers()
    cluster.sync_routes()


def routes(node, family: int = 4, proto: str | None = None) -> list[str]:
    """`ip route` lines of the node's main table, with `proto`, or all."""
    out = run_in(node.ns, "ip", f"-{family}", "route", "show", "table", "main").stdout.splitlines()
    return [ln.strip() for ln in out if proto is None or f" proto {proto} " in ln + " "]


def ours(node) -> set[str]:
    """Our routes as `dst via gateway`."""
    return {" ".join(ln.split()[:3]) for f in (4, 6) for ln in routes(node, f, RTPROT_XDPCNI)}


def expected(cluster, node, without=()) -> set[str]:
    out = set()
    for other in cluster.nodes:
        if other is node or other.name in without:
            continue
        out |= {f"{other.cidr4} via {other.nic_ip4}", f"{other.cidr6} via {other.nic_ip6}"}
    return out


class RouteMonitor:
    """`ip monitor route` in a node's namespace: every RTM_NEWROUTE / RTM_DELROUTE while it runs."""

    def __init__(self, node):
        self.proc = subprocess.Popen(
            ["nsenter", f"--net=/var/run/netns/{node.ns}", "ip", "-o", "monitor", "route"],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.5)  # subscribed before anything happens

    def stop(self) -> list[str]:
        time.sleep(0.3)
        processes.stop(self.proc, grace=5)
        return [ln.strip() for ln in self.proc.stdout.read().splitlines() if ln.strip()]


def _count(node, reason) -> int:
    with Stats(node.pin_root) as st:
        return st.packets(node.pods[0].ep.ep_id, reason)


def test_every_node_routes_every_other_node_from_the_file_only(cluster):
    for node in cluster.nodes:
        assert ours(node) == expected(cluster, node)
        # no other route leads to a pod CIDR: nothing hand-written is left to carry traffic
        for other in cluster.nodes:
            for fam, cidr in ((4, other.cidr4), (6, other.cidr6)):
                foreign = [r for r in routes(node, fam) if r.startswith(f"{cidr} ") and "proto 201" not in r]
                assert foreign == [], foreign
        assert all(" dev nic0 " in r + " " for f in (4, 6) for r in routes(node, f, RTPROT_XDPCNI))


@pytest.mark.parametrize("family", [4, 6])
def test_pod_to_pod_across_every_node_pair_on_the_fast_path(cluster, family):
    for i, (a, b) in enumerate(itertools.permutations(cluster.nodes, 2)):
        src, dst = a.pods[0], b.pods[0]
        fwd_a, fwd_b = forwarded(a.ns), forwarded(b.ns)
        out_a, in_b = _count(a, Reason.FWD_POD_TO_NIC), _count(b, Reason.FWD_NIC_TO_POD)
        got = udp_exchange(src.ns, dst.ns, dst.ip4 if family == 4 else dst.ip6, n=N, port=41000 + i)
        assert got == N, f"{a.name} -> {b.name} IPv{family}: {got}/{N}"
        assert _count(a, Reason.FWD_POD_TO_NIC) - out_a >= N, f"{a.name}: pod egress left the fast path"
        assert _count(b, Reason.FWD_NIC_TO_POD) - in_b == N, f"{b.name}: NIC -> pod left the fast path"
        assert forwarded(a.ns) == fwd_a and forwarded(b.ns) == fwd_b, "the kernel forwarded pod traffic"


def test_a_peer_removed_from_the_file_loses_its_routes(cluster, restore):
    n0, n1, n2 = cluster.nodes
    cluster.write_peers([n0.peer_entry(), n1.peer_entry()])
    res = cluster.sync_routes([n0, n1])
    assert sorted(r["dst"] for r in res["n0"]["removed"]) == sorted([str(n2.cidr4), str(n2.cidr6)])
    assert len(res["n0"]["kept"]) == 2 and res["n0"]["added"] == [] and res["n0"]["changed"] == []
    assert ours(n0) == expected(cluster, n0, without={"n2"})
    assert ours(n1) == expected(cluster, n1, without={"n2"})
    assert udp_exchange(n0.pods[0].ns, n2.pods[0].ns, n2.pods[0].ip4, n=3, timeout=0.5) == 0
    assert udp_exchange(n0.pods[0].ns, n1.pods[0].ns, n1.pods[0].ip4, n=3) == 3


def test_a_restart_deletes_nothing(cluster):
    n0 = cluster.nodes[0]
    before = {f: routes(n0, f) for f in (4, 6)}
    mon = RouteMonitor(n0)
    try:
        res = [n0.sync_routes(), n0.sync_routes()]  # two fresh processes: two restarts
    finally:
        events = mon.stop()
    assert events == [], f"a resync touched routes: {events}"
    assert all(len(r["kept"]) == 4 and not (r["added"] or r["removed"] or r["changed"]) for r in res)
    assert {f: routes(n0, f) for f in (4, 6)} == before


def _start_agent(node, tag: str) -> NodeAgent:
    return NodeAgent(
        node, tag=tag, args=["--peers", node.cluster.peers_file, "--node-name", node.name], wait=False
    )


def test_the_agent_follows_the_file_and_its_restart_deletes_nothing(cluster, restore):
    n0, _, n2 = cluster.nodes
    mon = RouteMonitor(n0)
    agents = []
    try:
        for tag in ("first", "second"):  # start, stop, start again: a restart
            agent = _start_agent(n0, tag)
            agents.append(agent)
            agent.wait_log("routes: 0 added, 0 changed, 0 removed, 4 kept")
            agent.stop()
    finally:
        events = mon.stop()
        for agent in agents:
            agent.stop()
    assert events == [], f"starting the agent touched routes: {events}"

    agent = _start_agent(n0, "third")
    try:
        agent.wait_log("routes: 0 added, 0 changed, 0 removed, 4 kept")
        cluster.write_peers([n.peer_entry() for n in cluster.nodes if n is not n2])
        agent.wait_log("routes: 0 added, 0 changed, 2 removed, 2 kept")
        assert ours(n0) == expected(cluster, n0, without={"n2"})
        cluster.write_peers()
        agent.wait_log("routes: 2 added, 0 changed, 0 removed, 2 kept")
        assert ours(n0) == expected(cluster, n0)
        # a peer's new address is a replace in place, never a delete
        moved = [n.peer_entry() for n in cluster.nodes]
        moved[2]["addresses"] = ["198.18.0.99", moved[2]["addresses"][1]]
        mon = RouteMonitor(n0)
        try:
            cluster.write_peers(moved)
            agent.wait_log("routes: 0 added, 1 changed, 0 removed, 3 kept")
        finally:
            events = mon.stop()
        assert [e for e in events if e.startswith("Deleted")] == [] and len(events) == 1, events
        assert f"{n2.cidr4} via 198.18.0.99 dev nic0 proto 201" in events[0]
        # a half-written (empty) file changes nothing
        with open(cluster.peers_file, "w"):
            pass
        agent.wait_log("not applied, routes left as they are")
        assert f"{n2.cidr4} via 198.18.0.99" in ours(n0)
    finally:
        agent.stop()


def test_routes_of_another_protocol_are_left_alone(cluster, restore):
    n0, n1, _ = cluster.nodes
    foreign = [
        ("198.19.9.0/24", "198.18.0.12", 4),  # a peer's exact CIDR below, held by someone else
        ("198.19.1.128/25", "198.18.0.12", 4),  # inside n1's pod CIDR
        ("2001:db8:1:9::/64", "2001:db8::c", 6),
    ]
    for dst, gw, fam in foreign:
        run_in(n0.ns, "ip", f"-{fam}", "route", "add", dst, "via", gw, "proto", "static")
    try:
        extra = {
            "name": "n9",
            "addresses": ["198.18.0.99", "2001:db8::63"],
            "podCIDRs": ["198.19.9.0/24", "2001:db8:1:9::/64"],
        }
        path = cluster.write_peers([n.peer_entry() for n in cluster.nodes] + [extra])
        res = n0.sync_routes(path)
        assert res["added"] == [] and len(res["kept"]) == 4
        assert len(res["problems"]) == 2
        assert all("peer n9" in p and "not created by xdpcni" in p for p in res["problems"])
        # n1 goes from the file: its route goes, the /25 someone else put inside its CIDR stays
        cluster.write_peers([n.peer_entry() for n in cluster.nodes if n is not n1])
        res = n0.sync_routes()
        assert sorted(r["dst"] for r in res["removed"]) == sorted([str(n1.cidr4), str(n1.cidr6)])
        assert n0.ctl("routes", "--remove-all").stdout.startswith("removed 2 route(s)")
        assert ours(n0) == set()
        for dst, gw, fam in foreign:
            assert any(r.startswith(f"{dst} via {gw} ") and "proto static" in r for r in routes(n0, fam)), dst
    finally:
        for dst, _, fam in foreign:
            run_in(n0.ns, "ip", f"-{fam}", "route", "del", dst, "proto", "static", check=False)


def test_a_peer_not_on_link_is_reported_and_skipped(cluster, restore):
    n0 = cluster.nodes[0]
    bad = [
        {
            "name": "far",
            "addresses": ["10.255.0.1", "2001:db8:ff::1"],
            "podCIDRs": ["198.19.20.0/24", "2001:db8:1:20::/64"],
        },
        {"name": "greedy", "addresses": ["198.18.0.30"], "podCIDRs": ["198.19.0.0/16"]},
    ]
    path = cluster.write_peers([n.peer_entry() for n in cluster.nodes] + bad)
    res = n0.sync_routes(path)
    assert res["added"] == [] and res["removed"] == [] and len(res["kept"]) == 4
    far = [p for p in res["problems"] if p.startswith("peer far:")]
    assert len(far) == 2 and all("not on a directly connected subnet" in p for p in far), res["problems"]
    assert any(
        p.startswith("peer greedy:") and "overlaps this node's own pod CIDR" in p for p in res["problems"]
    )
    assert not any("198.19.20.0/24" in r or "2001:db8:1:20::" in r for r in routes(n0, 4) + routes(n0, 6))
    status = n0.ctl("status").stdout
    assert "routes to other nodes: 4 (5 node(s) listed, this one n0;" in status
    assert "routes: peer far: 10.255.0.1 not on a directly connected subnet" in status
    text = n0.ctl("routes").stdout
    assert "routes of proto 201 (xdpcni) in this namespace: 4" in text and "problem: peer far" in text
