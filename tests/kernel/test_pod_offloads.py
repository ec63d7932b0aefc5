"""The pod link keeps its offloads: after ADD the host veth has TSO on (the stack's segments go into
the pod unsplit) and the pod's eth0 has GRO on and no XDP program. GRO (veth NAPI) is what lets
the XDP-mode NIC's devmap redirect into the host veth be accepted; an XDP program on the pod's
eth0 would do it too but makes the kernel clear TSO/GSO on the host veth."""

from __future__ import annotations

import json
import subprocess

import pytest

from sim.cni_runtime import Runtime
from sim.topology import Cluster

pytestmark = pytest.mark.kernel


def _features(ns: str, ifname: str) -> dict[str, bool]:
    out = subprocess.run(
        ["ip", "netns", "exec", ns, "ethtool", "-k", ifname], capture_output=True, text=True, check=True
    ).stdout
    feats = {}
    for line in out.splitlines()[1:]:
        name, _, rest = line.strip().partition(": ")
        feats[name] = rest.startswith("on")
    return feats


def _link(ns: str, ifname: str | None = None, index: int | None = None) -> dict:
    links = json.loads(
        subprocess.run(
            ["ip", "-n", ns, "-j", "-d", "link", "show"], capture_output=True, text=True, check=True
        ).stdout
    )
    return next(x for x in links if x["ifname"] == ifname or x["ifindex"] == index)


def _assert_offloads(node_ns: str, pod_ns: str) -> None:
    eth0 = _link(pod_ns, "eth0")
    host = _link(node_ns, index=eth0["link_index"])
    assert "xdp" not in eth0, f"an XDP program on the pod's eth0: {eth0['xdp']}"
    assert _features(pod_ns, "eth0")["generic-receive-offload"], "GRO off on the pod's eth0"
    hf = _features(node_ns, host["ifname"])
    assert hf["tx-tcp-segmentation"] and hf["tx-tcp6-segmentation"], f"TSO off on {host['ifname']}"


@pytest.mark.parametrize("mode", ["tc", "xdp"])
def test_add_keeps_tso_on_the_host_veth_and_gro_on_the_pod(mode):
    cluster = Cluster(1)
    try:
        node = cluster.nodes[0]
        rt = Runtime.single(node, mode)
        ns = rt.new_pod_netns("off")
        assert rt.add("off", ns).ok
        _assert_offloads(node.ns, ns)
        assert rt.check("off", ns).ok
    finally:
        cluster.teardown()


def test_simulated_pods_match_add(node_env):
    node = node_env.nodes[0]
    for pod in node.pods:
        _assert_offloads(node.ns, pod.ns)
