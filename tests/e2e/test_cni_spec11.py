"""VERSION, STATUS and GC as spec 1.1.0 defines them."""

import pytest

from datapath.pins import PinLayout
from sim.packets import udp_exchange
from tests.harness.nodestate import pod_links, snapshot

pytestmark = pytest.mark.e2e
ALL = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


@pytest.mark.parametrize("asked", ALL)
def test_version_lists_every_supported_version(cluster, node, runtime, asked):
    inv = runtime.call("VERSION", {"cniVersion": asked})
    assert inv.ok and inv.out == {"cniVersion": asked, "supportedVersions": ALL}


def test_version_without_config_and_for_unknown_version(cluster, node, runtime):
    assert runtime.call("VERSION", b"").out["supportedVersions"] == ALL
    assert runtime.call("VERSION", {"cniVersion": "7.0.0"}).out["cniVersion"] == "1.1.0"


@pytest.mark.parametrize("version", ALL)
def test_add_result_in_the_requested_version(cluster, node, runtime, version):
    ns = runtime.new_pod_netns("v")
    inv = runtime.call(
        "ADD", runtime.xdpcni_conf(cniVersion=version), container_id="ver", netns_path=f"/var/run/netns/{ns}"
    )
    assert inv.ok, inv.stdout + inv.stderr
    res = inv.out
    assert res["cniVersion"] == version
    has_version_field = all("version" in ip for ip in res["ips"])
    assert has_version_field == (version < "1.0.0")  # 1.0.0 dropped ips[].version
    assert all(("mtu" in i) == (version == "1.1.0") for i in res["interfaces"])  # 1.1.0 added mtu
    assert runtime.call(
        "DEL", runtime.xdpcni_conf(cniVersion=version), container_id="ver", netns_path=f"/var/run/netns/{ns}"
    ).ok


def test_status_ready_states(cluster, node, runtime):
    # Not loaded yet but loadable (NIC configured and present): ready, the first ADD loads it.
    assert not PinLayout(node.pin_root).is_loaded()
    inv = runtime.call("STATUS")
    assert inv.ok and inv.stdout == ""
    # Not loaded and the NIC is missing: not available (50).
    inv = runtime.call("STATUS", runtime.xdpcni_conf(nic="nic9"))
    assert inv.rc == 1 and inv.out["code"] == 50 and "nic9" in inv.out["msg"]
    # Loaded: ready.
    ns = runtime.new_pod_netns("s")
    assert runtime.add("st", ns).ok
    assert runtime.call("STATUS").ok
    # No address left in a range set: still ready: containerd would mark the
    # node NotReady and evict its pods; the full range fails only the ADD that needs an address.
    one = {
        "type": "xdpcni",
        "ranges": [
            [{"subnet": str(node.cidr4), "rangeStart": str(node.cidr4[1]), "rangeEnd": str(node.cidr4[1])}]
        ],
    }
    inv = runtime.call("STATUS", runtime.xdpcni_conf(ipam=one))
    assert inv.ok, inv.stdout
    # Loaded, but its NIC is gone: no ADD can work, not available (50).
    from sim.topology import run_in

    run_in(node.ns, "ip", "link", "set", node.nic, "name", "nicgone")
    try:
        inv = runtime.call("STATUS")
        assert inv.rc == 1 and inv.out["code"] == 50 and node.nic in inv.out["msg"], inv.stdout
    finally:
        run_in(node.ns, "ip", "link", "set", "nicgone", "name", node.nic)
    assert runtime.call("STATUS").ok
    # STATUS is a 1.1.0 verb.
    assert runtime.call("STATUS", runtime.xdpcni_conf(cniVersion="1.0.0")).out["code"] == 1


def test_gc_removes_only_invalid_attachments(cluster, node, runtime):
    pods = {}
    for name in ("keep", "gone1", "gone2"):
        ns = runtime.new_pod_netns(name)
        inv = runtime.add(name, ns)
        assert inv.ok, inv.stdout + inv.stderr
        pods[name] = runtime.pod_from_result(name, ns, inv.out)
    inv = runtime.call(
        "GC",
        runtime.xdpcni_conf(**{"cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]}),
    )
    assert inv.ok and inv.stdout == "", inv.stdout + inv.stderr
    state = snapshot(node)
    assert len(pod_links(node)) == 1
    assert [ips for _, ips in state["endpoints"]] == [tuple(pods["keep"].ips)]
    assert sorted(state["leases"]) == sorted(pods["keep"].ips)
    assert len(state["records"]) == 1
    for ip in pods["keep"].ips:
        assert udp_exchange(cluster.wire, pods["keep"].ns, ip, n=3) == 3
    assert runtime.check("keep", pods["keep"].ns).ok
    # GC without the list is an invalid config, not "delete everything".
    inv = runtime.call("GC", runtime.xdpcni_conf())
    assert inv.rc == 1 and inv.out["code"] == 7
    assert len(pod_links(node)) == 1
    # Empty list: everything of this network goes.
    assert runtime.call("GC", runtime.xdpcni_conf(**{"cni.dev/valid-attachments": []})).ok
    state = snapshot(node)
    assert pod_links(node) == [] and state["endpoints"] == [] and state["leases"] == []
