"""The node agent: verbs run warm in it when it listens, in-process when it does not (dead
agent, stale socket), with identical results either way."""

import os

import pytest

from sim.agent import NodeAgent
from sim.cni_runtime import Runtime
from sim.packets import udp_exchange
from tests.harness.nodestate import pod_links, snapshot

pytestmark = pytest.mark.e2e


def test_agent_serves_verbs_and_plugin_falls_back_without_it(cluster, node, agent):
    rt = Runtime.single(node, "tc", agentSocket=agent.sock)
    pods = []
    for i in range(4):
        ns = rt.new_pod_netns(f"a{i}")
        inv = rt.add(f"agent{i}", ns)
        assert inv.ok, inv.stdout + inv.stderr
        pods.append((f"agent{i}", ns, rt.pod_from_result(f"a{i}", ns, inv.out)))
    assert [(verb, cid) for verb, cid, _, _ in agent.served()] == [("ADD", f"agent{i}") for i in range(4)]
    for cid, ns, pod in pods:
        assert rt.check(cid, ns).ok
        for ip in pod.ips:
            assert udp_exchange(cluster.wire, ns, ip, n=3) == 3
    # Errors come back as the spec's object through the agent too.
    inv = rt.call("ADD", rt.xdpcni_conf(cniVersion="9.9.9"), container_id="x", netns_path="/var/run/netns/x")
    assert inv.rc == 1 and inv.out["code"] == 1
    assert rt.delete(pods[0][0], pods[0][1]).ok
    n_served = len(agent.served())

    # SIGKILL: the socket file stays behind; the plugin notices and works in-process.
    agent.proc.kill()
    agent.proc.wait()
    assert os.path.exists(agent.sock)
    for cid, ns, _ in pods[1:]:
        inv = rt.delete(cid, ns)
        assert inv.ok, inv.stdout + inv.stderr
    ns = rt.new_pod_netns("late")
    inv = rt.add("late", ns)
    assert inv.ok, inv.stdout + inv.stderr
    assert len(agent.served()) == n_served  # nothing more reached the dead agent
    assert rt.delete("late", ns).ok
    state = snapshot(node)
    assert pod_links(node) == [] and state["endpoints"] == [] and state["leases"] == []


def test_agent_in_another_netns_is_not_used(cluster, node, agent):
    """A client in a different network namespace must not have its verbs run in the agent's."""
    other = cluster._make_node(1)  # a second node: its own netns
    rt = Runtime.single(other, "tc", agentSocket=agent.sock)
    ns = rt.new_pod_netns("x")
    inv = rt.add("other", ns)
    assert inv.ok, inv.stdout + inv.stderr
    assert agent.served() == []
    assert rt.delete("other", ns).ok


def test_agent_serves_metrics_and_health(cluster, node):
    """The agent (the DaemonSet's main process) serves /metrics with the datapath counters and
    the CNI verbs it ran (counts by verb and code, latency histograms), and /healthz: 503 until
    the datapath is loaded, 200 after."""
    from prometheus_client.parser import text_string_to_metric_families

    from sim.topology import run_in

    def get(path: str) -> tuple[int, str]:
        code = (
            "import urllib.request, urllib.error, sys\n"
            "try:\n r = urllib.request.urlopen(sys.argv[1], timeout=5); print(r.status); print(r.read().decode())\n"
            "except urllib.error.HTTPError as e:\n print(e.code); print(e.read().decode())\n"
        )
        out = run_in(node.ns, "python3", "-c", code, f"http://127.0.0.1:9477{path}").stdout
        status, _, body = out.partition("\n")
        return int(status), body

    agent = NodeAgent(node, metrics="127.0.0.1:9477")
    try:
        status, body = get("/healthz")
        assert status == 503 and "not loaded" in body
        rt = Runtime.single(node, "tc", agentSocket=agent.sock)
        ns = rt.new_pod_netns("m0")
        assert rt.add("metrics0", ns).ok
        assert get("/healthz")[0] == 200
        assert (
            udp_exchange(
                cluster.wire,
                ns,
                rt.pod_from_result("metrics0", ns, rt.cache["metrics0/eth0"]).ip4,
                n=5,
                port=40200,
            )
            == 5
        )
        status, text = get("/metrics")
        assert status == 200
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        adds = [
            s
            for s in fams["xdpcni_cni_requests"].samples
            if s.labels.get("verb") == "ADD" and s.name.endswith("_total")
        ]
        assert adds and adds[0].labels["code"] == "0" and adds[0].value >= 1, adds
        hist = [s for s in fams["xdpcni_cni_request_duration_seconds"].samples if s.name.endswith("_count")]
        assert any(s.labels["verb"] == "ADD" and s.value >= 1 for s in hist)
        pkts = [s for s in fams["xdpcni_packets"].samples if s.labels.get("reason") == "fwd_nic_to_pod"]
        assert pkts and sum(s.value for s in pkts) >= 5
    finally:
        agent.stop()
