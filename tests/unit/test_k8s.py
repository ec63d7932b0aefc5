"""The Kubernetes mode's pure parts (Node → peer, podCIDRs order, condition patch, MTU clamp,
RBAC rules) and its Node informer driven through the official client against the fake API
server (tests/harness/fakeapi.py, 127.0.0.1 in this namespace: no root needed): one list, then
a watch with bookmarks; events update the cache without a relist; a broken watch, 410 Gone (as
an ERROR event and as an HTTP status) and a missed change each end in a relist that catches up."""

from __future__ import annotations

import threading
import time

import pytest

from node import k8s
from node.routes import Peer
from tests.harness.fakeapi import FakeApiServer, make_node, merge_patch, strategic_merge_patch
from tests.harness.waiting import wait_for as _wait_for


def wait_for(cond, timeout: float = 10.0, what: str = "condition"):
    return _wait_for(cond, timeout, what, interval=0.02)


# ---- pure parts ----


def test_node_view_takes_internal_ips_and_pod_cidrs_in_order():
    node = make_node("a", ["10.0.0.1", "fd00::1"], ["fd00:10:244:1::/64", "10.244.1.0/24"])
    node["status"]["addresses"].insert(0, {"type": "ExternalIP", "address": "203.0.113.9"})
    v = k8s.node_view(node)
    assert v.peer == Peer("a", ("10.0.0.1", "fd00::1"), ("fd00:10:244:1::/64", "10.244.1.0/24"))
    assert v.condition is None


def test_pod_cidrs_fall_back_to_the_single_podcidr_and_to_none():
    assert k8s.pod_cidrs_of({"spec": {"podCIDR": "10.244.3.0/24"}}) == ("10.244.3.0/24",)
    assert k8s.pod_cidrs_of({"spec": {}}) == ()
    assert k8s.pod_cidrs_of({}) == ()


def test_condition_of_reads_network_unavailable():
    node = make_node(
        "a", conditions=[{"type": "NetworkUnavailable", "status": "True", "reason": "NoRouteCreated"}]
    )
    assert k8s.condition_of(node) == ("True", "NoRouteCreated")


def test_condition_patch_is_a_strategic_merge_of_one_condition():
    body = k8s.condition_patch("up", now=0)
    (cond,) = body["status"]["conditions"]
    assert (
        cond["type"] == "NetworkUnavailable" and cond["status"] == "False" and cond["reason"] == "XdpcniIsUp"
    )
    assert cond["lastTransitionTime"] == "1970-01-01T00:00:00Z"
    # Merged by type it keeps kubelet's Ready; a JSON merge patch would have replaced the list.
    node = make_node("a")
    merged = strategic_merge_patch(node, body)
    assert [c["type"] for c in merged["status"]["conditions"]] == ["Ready", "NetworkUnavailable"]
    assert [c["type"] for c in merge_patch(node, body)["status"]["conditions"]] == ["NetworkUnavailable"]


@pytest.mark.parametrize(
    "link, pod", [(1500, 1500), (1460, 1460), (9001, 3506), (65535, 3506), (500, 576), (3506, 3506)]
)
def test_pod_mtu_is_the_link_mtu_within_the_node_config_limits(link, pod):
    assert k8s.clamp_mtu(link) == pod


def test_pod_mtu_limits_are_the_node_configs():
    from datapath.config import ConfigError, NodeConfig

    NodeConfig(nic="x", mtu=k8s.MTU_MIN)
    NodeConfig(nic="x", mtu=k8s.MTU_MAX)
    for bad in (k8s.MTU_MIN - 1, k8s.MTU_MAX + 1):
        with pytest.raises(ConfigError):
            NodeConfig(nic="x", mtu=bad)


def test_rbac_rules_are_least_privilege():
    assert k8s.RBAC_RULES == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]},
    ]


def test_api_client_needs_a_kubeconfig_or_a_pod(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(RuntimeError, match="KUBERNETES_SERVICE_HOST"):
        k8s.api_client(None)


# ---- the informer through the official client ----


@pytest.fixture
def informer(tmp_path):
    api = FakeApiServer(bookmark_interval=0.2)
    port = api.listen()
    client = k8s.api_client(api.kubeconfig(str(tmp_path / "kubeconfig"), port))
    changes = []
    logs = []
    inf = k8s.NodeInformer(client, lambda: changes.append(1), logs.append, backoff=(0.05, 0.2))
    t = threading.Thread(target=inf.run, daemon=True)
    api.add_node(make_node("a", ["10.0.0.1"], ["10.244.0.0/24"]))
    t.start()
    try:
        assert inf.synced.wait(10), logs
        yield api, inf, changes, logs
    finally:
        inf.stop()
        t.join(5)
        api.close()
    assert not t.is_alive(), "informer thread did not stop"


def _watches(api):
    return api.log("GET", watch=True)


def test_one_list_then_events_without_relisting(informer):
    api, inf, changes, logs = informer
    assert sorted(inf.snapshot()) == ["a"]
    wait_for(lambda: _watches(api), what="a watch")
    (lst,) = api.log("GET", watch=False)
    assert lst[1] == "/api/v1/nodes" and lst[2].get("resourceVersion") == "0"
    w = _watches(api)[0][2]
    assert w["allowWatchBookmarks"] == "true" and w["resourceVersion"] == "101"
    api.add_node(make_node("b", ["10.0.0.2"], ["10.244.1.0/24"]))
    api.modify_node("b", lambda n: n["spec"].update(podCIDRs=["10.244.9.0/24"]))
    wait_for(lambda: inf.snapshot().get("b") and inf.snapshot()["b"].peer.pod_cidrs == ("10.244.9.0/24",))
    api.delete_node("a")
    wait_for(lambda: "a" not in inf.snapshot(), what="a deleted")
    assert inf.lists == 1 and len(api.log("GET", watch=False)) == 1


def test_heartbeats_change_nothing_and_bookmarks_advance_the_version(informer):
    api, inf, changes, logs = informer
    wait_for(lambda: _watches(api))
    before = len(changes)
    api.modify_node(
        "a", lambda n: n["status"]["conditions"][0].update(lastHeartbeatTime="2030-01-01T00:00:00Z")
    )
    rv = str(api.rv)
    wait_for(lambda: inf.resource_version == rv, what="the heartbeat's resourceVersion")
    assert len(changes) == before  # same view: no work
    api.rv += 5  # other resources' writes move the global version; bookmarks carry it
    wait_for(lambda: inf.resource_version == str(api.rv), what="a bookmark")


def test_a_broken_watch_relists_and_catches_up(informer):
    api, inf, changes, logs = informer
    wait_for(lambda: _watches(api))
    api.pause()
    api.add_node(make_node("c", ["10.0.0.3"], ["10.244.3.0/24"]))
    time.sleep(0.3)
    assert "c" not in inf.snapshot()
    api.break_watches()
    api.pause(False)
    wait_for(lambda: inf.lists == 2, what="a relist")
    wait_for(lambda: "c" in inf.snapshot())


@pytest.mark.parametrize("as_http", [False, True], ids=["error-event", "http-410"])
def test_410_gone_relists_with_a_consistent_read(informer, as_http):
    api, inf, changes, logs = informer
    wait_for(lambda: _watches(api))
    api.gone_as_http = as_http
    api.pause()
    api.delete_node("a")
    api.add_node(make_node("d", ["10.0.0.4"], ["10.244.4.0/24"]))
    api.expire()
    api.end_watches()
    api.pause(False)
    wait_for(lambda: inf.lists == 2, what="a relist after 410")
    assert sorted(inf.snapshot()) == ["d"]
    assert any("410" in m or "too old" in m for m in logs), logs
    relist = api.log("GET", watch=False)[-1]
    assert "resourceVersion" not in relist[2]  # after 410: a consistent read, not the cache's "0"
    # and it watches again from the new list's version, not from the expired one
    wait_for(lambda: _watches(api)[-1][2]["resourceVersion"] == str(api.rv))


def test_a_clean_end_of_the_watch_resumes_without_relisting(informer):
    api, inf, changes, logs = informer
    wait_for(lambda: _watches(api))
    api.end_watches()
    wait_for(lambda: len(_watches(api)) == 2, what="a second watch")
    api.add_node(make_node("e", ["10.0.0.5"], ["10.244.5.0/24"]))
    wait_for(lambda: "e" in inf.snapshot())
    assert inf.lists == 1


def test_unauthorized_is_logged_and_retried_with_backoff(tmp_path):
    api = FakeApiServer()
    port = api.listen()
    api.kubeconfig(str(tmp_path / "kc"), port)
    api.token = "rotated"  # our kubeconfig's token is no longer accepted
    client = k8s.api_client(str(tmp_path / "kc"))
    logs = []
    inf = k8s.NodeInformer(client, lambda: None, logs.append, backoff=(0.05, 0.1))
    t = threading.Thread(target=inf.run, daemon=True)
    t.start()
    try:
        wait_for(lambda: len(api.log("GET")) >= 3, what="retries")
        assert not inf.synced.is_set()
        assert any("401" in m or "Unauthorized" in m for m in logs), logs
    finally:
        inf.stop()
        t.join(5)
        api.close()


def test_a_consistent_relist_comes_in_pages_of_one_snapshot(informer, monkeypatch):
    api, inf, changes, logs = informer
    monkeypatch.setattr(k8s, "LIST_PAGE", 2)
    for i in range(4):
        api.add_node(make_node(f"p{i}", [f"10.0.1.{i + 1}"], [f"10.245.{i}.0/24"]))
    wait_for(lambda: len(inf.snapshot()) == 5)
    pages = api.pages
    api.expire()
    api.end_watches()
    wait_for(lambda: inf.lists == 2, what="a relist after 410")
    assert api.pages - pages == 3  # 5 nodes, 2 per page, continue tokens
    tail = api.log("GET", watch=False)[-3:]
    assert [q.get("limit") for _, _, q, _, _ in tail] == ["2", "2", "2"]
    assert "continue" not in tail[0][2] and all("continue" in q for _, _, q, _, _ in tail[1:])
    assert sorted(inf.snapshot()) == ["a", "p0", "p1", "p2", "p3"]


def test_five_thousand_nodes_cost_one_list_and_heartbeats_cost_nothing(tmp_path):
    api = FakeApiServer(bookmark_interval=5)
    for i in range(5000):
        api.add_node(
            make_node(
                f"node-{i:04d}", [f"10.{i // 250}.{i % 250}.1"], [f"10.{100 + i // 256}.{i % 256}.0/24"]
            )
        )
    port = api.listen()
    client = k8s.api_client(api.kubeconfig(str(tmp_path / "kc"), port))
    changes = []
    inf = k8s.NodeInformer(client, lambda: changes.append(1), lambda m: None)
    t = threading.Thread(target=inf.run, daemon=True)
    t0 = time.monotonic()
    t.start()
    try:
        assert inf.synced.wait(30)
        listed = time.monotonic() - t0
        assert len(inf.snapshot()) == 5000 and changes == [1]
        wait_for(lambda: api.watching == 1, what="the watch")
        for i in range(0, 5000, 10):  # kubelet heartbeats on 500 nodes: nothing we use changed
            api.modify_node(f"node-{i:04d}", lambda n: n["metadata"].update(annotations={"beat": "1"}))
        wait_for(lambda: inf.resource_version == str(api.rv), what="the heartbeats")
        assert changes == [1] and inf.lists == 1 and len(api.log("GET", watch=False)) == 1
        assert listed < 20, f"listing 5000 nodes took {listed:.1f}s"
    finally:
        inf.stop()
        t.join(5)
        api.close()


class FakeRoutes:
    """Stands in for node.routes.RouteController: records each sync's peers."""

    def __init__(self):
        self.syncs: list[tuple] = []

    def sync(self, peers):
        from node.routes import SyncResult

        self.syncs.append(tuple(peers))
        return SyncResult()


def test_the_reconciler_syncs_routes_only_when_peers_change(tmp_path):
    api = FakeApiServer(bookmark_interval=0.2)
    port = api.listen()
    client = k8s.api_client(api.kubeconfig(str(tmp_path / "kc"), port))
    api.add_node(make_node("self", ["10.0.0.1"], ["10.244.0.0/24"]))
    api.add_node(make_node("b", ["10.0.0.2"], ["10.244.1.0/24"]))
    logs = []
    mode = k8s.KubernetesMode(
        "self", "/sys/fs/bpf/xdpcni-unit", api=client, log=logs.append, load_datapath=False
    )
    mode.routes = FakeRoutes()
    runs = []
    real = mode.reconcile
    mode.reconcile = lambda: runs.append(1) or real()
    mode.start()
    try:
        wait_for(lambda: mode.routes.syncs, what="the first sync")
        assert [p.name for p in mode.routes.syncs[0]] == ["b", "self"]
        n = len(runs)
        # another node's condition changes (it came up): a reconcile, but no route sync
        api.modify_node(
            "b", lambda x: x["status"]["conditions"].append({"type": "NetworkUnavailable", "status": "False"})
        )
        wait_for(lambda: len(runs) > n, what="a reconcile")
        assert len(mode.routes.syncs) == 1
        api.modify_node("b", lambda x: x["spec"].update(podCIDRs=["10.244.2.0/24"]))
        wait_for(lambda: len(mode.routes.syncs) == 2, what="a sync for the new podCIDR")
        assert mode.routes.syncs[1][0].pod_cidrs == ("10.244.2.0/24",)
        assert any("datapath not loaded" in m for m in logs)  # not ready: nothing installed, no patch
        assert api.log("PATCH") == []
    finally:
        mode.stop()
        api.close()
    assert not any(t.is_alive() for t in threading.enumerate() if t.name.startswith("k8s-"))
