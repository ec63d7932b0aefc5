"""Hostile and unlucky input through the installed executable on a simulated node: real runtimes' calls, CHECK
that checks, no stolen addresses across networks, per-network ownership, serialised verbs,
unreadable state left alone, locks with deadlines, a robust concurrent agent, STATUS that does
not empty a node. (Malformed single inputs are rows of test_cni_errors.py's table.)"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from pyroute2 import IPRoute

from cni.claims import ClaimStore
from cni.commands.common import ATTACHMENT_LOCKS
from cni.ipam.store import LeaseStore
from cni.plumbing import host_ifname_for
from cni.records import RecordStore
from cni.testhook import FAIL_ENV
from datapath.endpoints import EndpointTable
from datapath.pins import LOCK_DIR, PinLayout
from sim.agent import NodeAgent
from sim.cni_runtime import Runtime
from sim.packets import udp_exchange
from sim.topology import run_in
from tests.harness.nodestate import pod_links, snapshot

pytestmark = pytest.mark.e2e
NET = "xdpcni-test"
HOLDER = """
import fcntl, os, sys, time
p = sys.argv[1]
fd = os.open(p, (os.O_RDONLY | os.O_DIRECTORY) if os.path.isdir(p) else (os.O_RDWR | os.O_CREAT))
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(120)
"""


def hold(path: str) -> subprocess.Popen:
    """A stalled process holding a flock on `path`."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, path], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def state(node, *networks: str) -> dict:
    """The node snapshot for every network, plus node-wide claims."""
    out = {net: snapshot(node, net) for net in (networks or (NET,))}
    out["claims"] = sorted(ClaimStore(node.pin_root).all())
    return out


def one_address(node, n: int = 10) -> dict:
    ip = str(node.cidr4[n])
    return {"type": "xdpcni", "ranges": [[{"subnet": str(node.cidr4), "rangeStart": ip, "rangeEnd": ip}]]}


def host_ifname(inv) -> str:
    return inv.out["interfaces"][0]["name"]


# -- case 1 ---------------------------------------------------------------------------------


def test_version_as_libcni_validates_a_plugin(cluster, node, runtime):
    env = {"CNI_NETNS": "dummy", "CNI_IFNAME": "dummy", "CNI_PATH": "dummy", "CNI_CONTAINERID": "dummy"}
    inv = runtime.call("VERSION", {"cniVersion": "1.0.0"}, extra_env=env)
    assert inv.ok and inv.out["cniVersion"] == "1.0.0" and "1.1.0" in inv.out["supportedVersions"], inv.stdout


# -- cases 2 and 3 -----------------------------------------------------------------------------


def test_check_notices_what_add_created_going_missing(cluster, node, runtime):
    ns = runtime.new_pod_netns("chk")
    inv = runtime.add("chk", ns)
    assert inv.ok, inv.stdout + inv.stderr
    assert runtime.check("chk", ns).ok
    veth = host_ifname(inv)
    breakages = [
        (
            "default route",
            ["ip", "route", "del", "default"],
            ns,
            ["ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0"],
        ),
        (
            "IPv6 default route",
            ["ip", "-6", "route", "del", "default"],
            ns,
            ["ip", "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0"],
        ),
        ("TC program", ["tc", "filter", "del", "dev", veth, "ingress"], node.ns, None),
        ("host route", ["ip", "route", "del", inv.out["ips"][0]["address"], "dev", veth], node.ns, None),
        ("IPv4 forwarding", ["sysctl", "-w", f"net.ipv4.conf.{veth}.forwarding=0"], node.ns, None),
        ("permanent neighbour 169.254.1.1", ["ip", "neigh", "del", "169.254.1.1", "dev", "eth0"], ns, None),
    ]
    for what, cmd, where, repair in breakages:
        run_in(where, *cmd)
        bad = runtime.check("chk", ns)
        assert bad.rc == 1 and bad.code == 106 and what in bad.out["msg"], (what, bad.stdout)
        if repair:
            run_in(where, *repair)
            assert runtime.check("chk", ns).ok, what
    assert runtime.delete("chk", ns).ok
    assert state(node)[NET]["leases"] == []


def test_check_never_creates_a_missing_netns(cluster, node, runtime):
    ns = runtime.new_pod_netns("c3")
    inv = runtime.add("c3", ns)
    assert inv.ok
    gone = f"/var/run/netns/{cluster.prefix}-never-created"
    conf = runtime.xdpcni_conf(prevResult=inv.out)
    bad = runtime.call("CHECK", conf, container_id="c3", netns_path=gone)
    assert bad.rc == 1 and bad.code == 4 and "does not exist" in bad.out["msg"], bad.stdout
    assert not os.path.exists(gone)
    assert runtime.delete("c3", ns).ok


# -- cases 5 and 6 ---------------------------------------------------------------------------------


def test_overlapping_networks_never_hand_out_a_live_address(cluster, node):
    a = Runtime.single(node, "tc", ipam=one_address(node))
    b = Runtime.single(node, "tc", name="renamed-net", ipam=one_address(node))
    ns_a = a.new_pod_netns("a")
    inv = a.add("pod-a", ns_a)
    assert inv.ok, inv.stdout + inv.stderr
    pod_a = a.pod_from_result("a", ns_a, inv.out)
    before = state(node, NET, "renamed-net")
    bad = b.add("pod-b", b.new_pod_netns("b"))
    assert bad.rc == 1 and bad.code == 103 and "in use on this node by other networks" in bad.out["msg"], (
        bad.stdout
    )
    assert state(node, NET, "renamed-net") == before
    assert a.check("pod-a", ns_a).ok
    assert udp_exchange(cluster.wire, ns_a, pod_a.ip4, n=3) == 3

    # A second conflist whose delegated IPAM (host-local) hands out the same address: refused, rolled back.
    hl_dir = os.path.join(node.data_dir, "host-local")
    c = Runtime.single(
        node,
        "tc",
        name="second-conflist",
        ipam={**one_address(node), "type": "host-local", "dataDir": hl_dir},
    )
    bad = c.add("pod-c", c.new_pod_netns("c"))
    assert bad.rc == 1 and bad.code == 107 and pod_a.ip4 in bad.out["msg"], bad.stdout
    assert not any(f[0].isdigit() for f in os.listdir(os.path.join(hl_dir, "second-conflist")))
    assert state(node, NET, "renamed-net") == before
    assert a.check("pod-a", ns_a).ok and udp_exchange(cluster.wire, ns_a, pod_a.ip4, n=3) == 3
    # A wider range on the other network: it gets another address.
    wide = Runtime.single(node, "tc", name="renamed-net")
    ns_w = wide.new_pod_netns("w")
    inv = wide.add("pod-w", ns_w)
    assert inv.ok and pod_a.ip4 not in json.dumps(inv.out["ips"])
    assert wide.delete("pod-w", ns_w).ok and a.delete("pod-a", ns_a).ok
    assert state(node, NET, "renamed-net")["claims"] == []


def test_same_container_and_ifname_on_two_networks(cluster, node, runtime):
    other = Runtime.single(
        node,
        "tc",
        name="net-b",
        ipam={
            "type": "xdpcni",
            "ranges": [[{"subnet": str(node.cidr4), "rangeStart": str(node.cidr4[200])}]],
        },
    )
    ns_a, ns_b, ns_c = (runtime.new_pod_netns(n) for n in ("sa", "sb", "sc"))
    inv_a = runtime.add("same", ns_a)
    assert inv_a.ok, inv_a.stdout + inv_a.stderr
    pod = runtime.pod_from_result("sa", ns_a, inv_a.out)
    inv_b = other.add("same", ns_b)
    assert inv_b.ok, inv_b.stdout + inv_b.stderr
    assert host_ifname(inv_a) != host_ifname(inv_b)
    assert other.delete("same", ns_b).ok
    assert runtime.check("same", ns_a).ok and udp_exchange(cluster.wire, ns_a, pod.ip4, n=3) == 3
    for step in ("record", "ipam", "veth", "host-side", "maps"):
        bad = other.add("same", ns_c, extra_env={FAIL_ENV: step})
        assert bad.rc == 1 and bad.code == 100, (step, bad.stdout)
        assert runtime.check("same", ns_a).ok, step
    assert udp_exchange(cluster.wire, ns_a, pod.ip4, n=3) == 3
    assert runtime.delete("same", ns_a).ok


# -- case 7 --------------------------------------------------------------------------------------


def test_odd_but_valid_ifname_round_trips_and_unreadable_leases_stay(cluster, node, runtime):
    ns = runtime.new_pod_netns("odd")
    inv = runtime.add("odd", ns, ifname="e\x1c0")
    assert inv.ok, inv.stdout + inv.stderr
    assert runtime.check("odd", ns, ifname="e\x1c0").ok
    assert runtime.delete("odd", ns, ifname="e\x1c0").ok
    after = state(node)
    assert after[NET]["leases"] == [] and after[NET]["records"] == [] and pod_links(node) == []

    # A lease whose owner cannot be parsed is never freed by GC, and blocks nothing else.
    ipam_dir = os.path.join(node.data_dir, NET, "ipam")
    os.makedirs(ipam_dir, exist_ok=True)
    junk = os.path.join(ipam_dir, str(node.cidr4[7]))
    with open(junk, "wb") as fh:
        fh.write(b"\xff\xfe not an owner\n")
    gc = runtime.call("GC", runtime.xdpcni_conf(**{"cni.dev/valid-attachments": []}))
    assert gc.ok and "cannot be read" in gc.stderr, gc.stderr
    assert os.path.exists(junk)
    ns2 = runtime.new_pod_netns("odd2")
    assert runtime.add("after-junk", ns2).ok
    assert runtime.delete("after-junk", ns2).ok
    assert os.path.exists(junk)


# -- case 8 --------------------------------------------------------------------------------------


def test_add_and_del_of_one_container_are_serialised(cluster, node, runtime):
    assert runtime.add("warm", runtime.new_pod_netns("warm")).ok
    pairs = 20
    namespaces = [runtime.new_pod_netns(f"r{i}") for i in range(pairs)]

    def race(i):
        conf = runtime.xdpcni_conf()
        nsp = f"/var/run/netns/{namespaces[i]}"
        with ThreadPoolExecutor(2) as pool:
            add = pool.submit(runtime.call, "ADD", conf, container_id=f"race{i}", netns_path=nsp)
            dele = pool.submit(runtime.call, "DEL", conf, container_id=f"race{i}", netns_path=nsp)
            return add.result(), dele.result()

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(race, range(pairs)))
    assert all(d.ok for _, d in results), [d.stdout for _, d in results if not d.ok]
    leases = LeaseStore(os.path.join(node.data_dir, NET, "ipam"))
    records = RecordStore(os.path.join(node.data_dir, NET), NET)
    with EndpointTable(node.pin_root) as table:
        mapped = {ip: ep.ifindex for ep in table.list() for ip in ep.ips}
    survivors = 0
    with IPRoute(netns=f"/var/run/netns/{node.ns}", flags=0) as ipr:
        for i, (add, _) in enumerate(results):
            cid = f"race{i}"
            owned = leases.owned_by(cid, "eth0")
            link = ipr.link_lookup(ifname=host_ifname_for(cid, "eth0", NET))
            reported = [ip["address"].split("/")[0] for ip in add.out["ips"]] if add.ok else []
            if records.exists(cid, "eth0"):
                # ADD won the race after DEL: whole, with exactly the addresses it reported.
                survivors += 1
                assert add.ok and sorted(owned) == sorted(reported) and link, (i, owned, reported)
                assert all(mapped.get(ip) == link[0] for ip in reported), i
            else:
                # DEL came last: nothing of it is left, none of its addresses leased or mapped.
                assert owned == [] and link == [], (i, owned, link)
                assert not any(ip in mapped for ip in reported), i
    assert len(state(node)[NET]["leases"]) == 2 * (survivors + 1)  # + warm; one v4 and one v6 each


# -- case 10 -------------------------------------------------------------------------------------


def test_unreadable_or_edited_records_are_never_acted_on_blindly(cluster, node, runtime):
    ns_live, ns_other = runtime.new_pod_netns("live"), runtime.new_pod_netns("oth")
    live = runtime.add("live", ns_live)
    other = runtime.add("other", ns_other)
    assert live.ok and other.ok
    other_pod = runtime.pod_from_result("oth", ns_other, other.out)
    rec_dir = os.path.join(node.data_dir, NET, "attachments")
    rec_path = os.path.join(rec_dir, host_ifname(live) + ".json")
    with open(rec_path, "rb") as fh:
        good = fh.read()
    with open(rec_path, "wb") as fh:
        fh.write(b"\x00{corrupt")
    before = state(node)
    retried = runtime.call(
        "ADD", runtime.xdpcni_conf(), container_id="live", netns_path=f"/var/run/netns/{ns_live}"
    )
    assert retried.rc == 1 and retried.code == 5 and "unreadable" in retried.out["msg"], retried.stdout
    gc = runtime.call(
        "GC",
        runtime.xdpcni_conf(**{"cni.dev/valid-attachments": [{"containerID": "other", "ifname": "eth0"}]}),
    )
    assert gc.ok and "unreadable" in gc.stderr, gc.stdout + gc.stderr
    assert state(node) == before  # lease, veth, map entry of the live pod all kept

    # An edited record naming the node's NIC and another pod's address: DEL touches neither.
    rec = json.loads(good)
    rec.update(host_ifname=node.nic, ips=other_pod.ips)
    with open(rec_path, "w") as fh:
        json.dump(rec, fh)
    assert runtime.delete("live", ns_live).ok
    with IPRoute(netns=f"/var/run/netns/{node.ns}", flags=0) as ipr:
        assert ipr.link_lookup(ifname=node.nic)
    assert runtime.check("other", ns_other).ok
    assert udp_exchange(cluster.wire, ns_other, other_pod.ip4, n=3) == 3
    assert runtime.delete("other", ns_other).ok
    assert state(node)[NET]["leases"] == [] and pod_links(node) == []


# -- case 11 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["endpoint map", "IPAM lease"])
def test_a_stalled_lock_holder_gets_code_11_in_time(cluster, node, runtime, which):
    assert runtime.add("warm", runtime.new_pod_netns("warm")).ok
    path = (
        PinLayout(node.pin_root).maps_dir
        if which == "endpoint map"
        else os.path.join(node.data_dir, NET, "ipam", "lock")
    )
    before = state(node)
    holder = hold(path)
    try:
        t0 = time.monotonic()
        inv = runtime.call(
            "ADD",
            runtime.xdpcni_conf(lockTimeout=0.5),
            container_id="late",
            netns_path=f"/var/run/netns/{runtime.new_pod_netns('late')}",
        )
        took = time.monotonic() - t0
    finally:
        holder.kill()
        holder.wait()
    assert inv.rc == 1 and inv.code == 11, inv.stdout
    assert f"pid {holder.pid}" in inv.out["msg"] and which in inv.out["msg"] and "0.5s" in inv.out["msg"], (
        inv.out
    )
    assert took < 6, took  # one deadline (the rollback does not wait again), plus process start-up
    assert state(node) == before


# -- case 12 -------------------------------------------------------------------------------------


def test_agent_survives_malformed_and_idle_connections(cluster, node):
    agent = NodeAgent(node)
    try:
        rt = Runtime.single(node, "tc", agentSocket=agent.sock)
        assert rt.add("warm", rt.new_pod_netns("warm")).ok
        idle = socket.socket(socket.AF_UNIX)
        idle.connect(agent.sock)  # sends nothing
        for garbage in (b"\x00\x00\x00\x05hello", struct.pack(">I", 1 << 31), b"\x00\x00\x00\x02[]", b"\x00"):
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(10)
            s.connect(agent.sock)
            s.sendall(garbage)
            s.shutdown(socket.SHUT_WR)
            s.recv(65536)  # an error object or a closed connection, never a dead agent
            s.close()
        t0 = time.monotonic()
        ns = rt.new_pod_netns("p")
        inv = rt.add("while-idle", ns)
        assert inv.ok, inv.stdout + inv.stderr
        assert time.monotonic() - t0 < 10
        assert agent.proc.poll() is None
        assert ("ADD", "while-idle", 0) in [(v, c, rc) for v, c, rc, _ in agent.served()]
        idle.close()
        assert rt.delete("while-idle", ns).ok and rt.delete("warm", None).ok
    finally:
        agent.stop()


# -- case 13 -------------------------------------------------------------------------------------


def test_full_range_fails_add_not_status(cluster, node):
    rt = Runtime.single(node, "tc", ipam=one_address(node))
    assert rt.add("only", rt.new_pod_netns("only")).ok
    status = rt.call("STATUS")
    assert status.ok, status.stdout
    bad = rt.add("one-too-many", rt.new_pod_netns("more"))
    assert bad.rc == 1 and bad.code == 103 and "widen the range" in bad.out.get("details", ""), bad.stdout
    # ... and the full range shows where an operator looks: `xdpcnictl status` and the metrics
    conf_dir = os.path.join(node.data_dir, "net.d")
    os.makedirs(conf_dir, exist_ok=True)
    with open(os.path.join(conf_dir, "10-xdpcni.conflist"), "w") as fh:
        json.dump(rt.conflist, fh)
    out = json.loads(node.ctl("status", "--json", "--cni-conf-dir", conf_dir).stdout)
    use = [u for u in out["address_use"] if u["network"] == rt.conflist["name"]]
    assert use and all(u["free"] == 0 and u["used"] == u["size"] for u in use), out["address_use"]
    assert any("is full" in p and "code 103" in p for p in out["problems"]), out["problems"]
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from datapath.netns import entered
    from node.metrics import registry

    os.environ["XDPCNI_CNI_CONF_DIR"] = conf_dir
    try:
        with entered(node.ns):
            text = generate_latest(registry(node.pin_root)).decode()
    finally:
        del os.environ["XDPCNI_CNI_CONF_DIR"]
    free = [
        s.value
        for fam in text_string_to_metric_families(text)
        if fam.name == "xdpcni_ipam_addresses"
        for s in fam.samples
        if s.labels["state"] == "free"
    ]
    assert free and all(v == 0 for v in free), text


# -- case 14 -------------------------------------------------------------------------------------


def test_no_lock_or_claim_files_left_behind(cluster, node, runtime):
    key = PinLayout(node.pin_root).key
    ns = runtime.new_pod_netns("l")
    assert runtime.add("l", ns).ok
    assert runtime.delete("l", ns).ok
    node.unload()
    left = [f for f in os.listdir(LOCK_DIR) if f.startswith(key)] if os.path.isdir(LOCK_DIR) else []
    assert left == []
    assert not os.path.exists(ClaimStore(node.pin_root).dir)
    # Attachment locks: a fixed set of empty files per network (cni/commands/common.py
    # attachment_lock_path), nothing named after an attachment, so nothing piles up.
    locks_dir = os.path.join(node.data_dir, NET, "locks")
    fixed = {f"attachments-{i:02d}.lock" for i in range(ATTACHMENT_LOCKS)}
    assert set(os.listdir(locks_dir)) <= fixed
    assert all(os.path.getsize(os.path.join(locks_dir, f)) == 0 for f in os.listdir(locks_dir))
