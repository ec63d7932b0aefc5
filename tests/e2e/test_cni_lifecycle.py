"""The installed executable, invoked as a runtime does, for 20 pods:
ADD (first one loads the datapath), CHECK, traffic to every pod IP over the fast path, DEL leaves
nothing behind, DEL twice succeeds."""

import ipaddress
import json

import pytest
from scapy.layers.l2 import Ether

from datapath.abi import Reason
from datapath.endpoints import EndpointTable
from datapath.stats import Stats
from sim.cni_runtime import Runtime
from sim.frames import is_udp_to, wire_to
from sim.packets import capture, forwarded, send_frames
from tests.harness.nodestate import pod_links, snapshot

pytestmark = pytest.mark.e2e
PODS = 20


@pytest.mark.parametrize("mode", ["tc", "xdp"])
def test_twenty_pods_add_check_traffic_del(cluster, node, mode):
    rt = Runtime.single(node, mode)
    before = snapshot(node)
    pods = []
    for i in range(PODS):
        ns = rt.new_pod_netns(f"p{i}")
        inv = rt.add(f"pod{i:02d}", ns)
        assert inv.ok, inv.stdout + inv.stderr
        res = inv.out
        assert res["cniVersion"] == "1.1.0"
        assert [i["name"] for i in res["interfaces"]][1] == "eth0"
        assert res["interfaces"][1]["sandbox"] == f"/var/run/netns/{ns}"
        assert {ipaddress.ip_interface(ip["address"]).network.prefixlen for ip in res["ips"]} == {32, 128}
        pods.append((f"pod{i:02d}", ns, rt.pod_from_result(f"p{i}", ns, res)))
    ips = [ip for _, _, p in pods for ip in p.ips]
    assert len(set(ips)) == 2 * PODS

    for cid, ns, _ in pods:
        inv = rt.check(cid, ns)
        assert inv.ok, inv.stdout + inv.stderr

    # Every pod address is served by the fast path: delivered, counted, host forwarding flat.
    with EndpointTable(node.pin_root) as table:
        eps = {ip: table.get(ip) for ip in ips}
    fwd_before = forwarded(node.ns)
    for _, ns, pod in pods:
        for dst in pod.ips:
            with Stats(node.pin_root) as st:
                n0 = st.packets(eps[dst].ep_id, Reason.FWD_NIC_TO_POD)
            with capture(ns, "eth0") as cap:
                send_frames(cluster.wire, "br0", [wire_to(cluster, node, dst)], count=3)
                got = [f for f in map(Ether, cap.read(timeout=1.5, want=3)) if is_udp_to(f, dst)]
            assert len(got) == 3, f"{dst}: {len(got)}/3 delivered"
            with Stats(node.pin_root) as st:
                assert st.packets(eps[dst].ep_id, Reason.FWD_NIC_TO_POD) - n0 == 3
    assert forwarded(node.ns) == fwd_before

    for cid, ns, _ in pods:
        inv = rt.delete(cid, ns)
        assert inv.ok, inv.stdout + inv.stderr
    after = snapshot(node)
    assert pod_links(node) == []
    assert after["endpoints"] == [] and after["leases"] == [] and after["records"] == []
    assert [link for link in after["links"] if link not in before["links"]] == []

    for cid, ns, _ in pods[:3]:  # DEL again: already gone is success
        inv = rt.delete(cid, ns)
        assert inv.ok, inv.stdout + inv.stderr
    inv = rt.delete("pod00", None)  # and with the netns gone/unknown
    assert inv.ok, inv.stdout + inv.stderr


def test_pods_are_known_by_their_kubernetes_name(cluster, node, runtime):
    """kubelet's K8S_POD_NAMESPACE / K8S_POD_NAME (CNI_ARGS) are kept in the attachment record and
    the host veth's ownership mark, so `xdpcnictl endpoints` (and trace, monitor, stats, metrics,
    all through node/pods.py) show the pod as NAMESPACE/NAME."""
    ns = runtime.new_pod_netns("named")
    args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-7d9f;K8S_POD_UID=0f3e"
    inv = runtime.add("named", ns, extra_env={"CNI_ARGS": args})
    assert inv.ok, inv.stdout
    rows = json.loads(node.ctl("endpoints", "--json").stdout)
    assert [r["pod"] for r in rows] == ["shop/cart-7d9f"], rows
    assert "shop/cart-7d9f" in node.ctl("endpoints").stdout
    assert runtime.delete("named", ns).ok
