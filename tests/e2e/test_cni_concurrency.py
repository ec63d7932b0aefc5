"""50 ADDs at once (as a kubelet starting a node full of pods) get 50
distinct addresses, all reachable; 50 DELs at once leave nothing."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from datapath.endpoints import EndpointTable
from sim.packets import udp_exchange
from tests.harness.nodestate import pod_links, snapshot

pytestmark = pytest.mark.e2e
N = 50


def test_fifty_concurrent_adds_then_dels(cluster, node, runtime):
    namespaces = [runtime.new_pod_netns(f"c{i}") for i in range(N)]
    # Every process starts on a node whose datapath is not loaded yet: exactly one loads it.
    with ThreadPoolExecutor(max_workers=N) as pool:
        invs = list(pool.map(lambda i: runtime.add(f"conc{i:02d}", namespaces[i]), range(N)))
    failed = [inv.stdout + inv.stderr for inv in invs if not inv.ok]
    assert not failed, failed[:3]
    loaders = [inv for inv in invs if "loaded: nic0" in inv.stderr]  # the loader's report line
    assert len(loaders) == 1, f"{len(loaders)} ADDs loaded the datapath"
    pods = [runtime.pod_from_result(f"c{i}", namespaces[i], inv.out) for i, inv in enumerate(invs)]
    v4 = [p.ip4 for p in pods]
    v6 = [p.ip6 for p in pods]
    assert len(set(v4)) == N and len(set(v6)) == N

    with EndpointTable(node.pin_root) as table:
        eps = table.list()
    assert len(eps) == N and sorted(ip for e in eps for ip in e.ips) == sorted(v4 + v6)
    assert len({e.ep_id for e in eps}) == N

    unreachable = [ip for p in pods for ip in p.ips if udp_exchange(cluster.wire, p.ns, ip, n=2) != 2]
    assert unreachable == []

    with ThreadPoolExecutor(max_workers=N) as pool:
        dels = list(pool.map(lambda i: runtime.delete(f"conc{i:02d}", namespaces[i]), range(N)))
    assert all(d.ok for d in dels), [d.stdout for d in dels if not d.ok][:3]
    after = snapshot(node)
    assert pod_links(node) == []
    assert after["endpoints"] == [] and after["leases"] == [] and after["records"] == []
