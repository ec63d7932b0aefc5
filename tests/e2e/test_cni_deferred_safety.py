"""What DEL's deferred veth deletion (the node agent answers before the kernel has deleted the
veth) must not cost (review of issue 12's change):

- the old veth stays fenced until it is gone: its address entries leave at once, its own entries
  (ifaces, tx_ports) stay, so tc_pod drops its packets with a routable source instead of passing
  an unknown interface's traffic to the stack;
- the agent retries a deletion it gave up (a disowned note) while it runs, not only at its next
  start, and an in-process ADD first finishes a dead agent's note for its own veth name;
- a verb blocked in a delegated IPAM plugin gives its turn up, like one waiting for a lock;
- the thread that makes pod-namespace sockets does not keep the last pod's namespace alive.
"""

from __future__ import annotations

import json
import os
import threading

import pytest

from cni.commands import common
from cni.main import execute
from cni.pending import PendingDeletes
from cni.plumbing import host_ifname_for, owner_mark
from datapath import abi
from datapath.endpoints import EndpointTable
from datapath.netns import entered
from sim.agent import NodeAgent
from sim.cni_runtime import REFERENCE_PLUGINS, Runtime, cni_bin_dir, invoke
from sim.packets import udp_exchange
from sim.topology import WIRE_HOST_V4
from tests.harness.nodestate import pod_links
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.e2e
NET = "xdpcni-test"


def _env(cid: str, ns: str) -> dict:
    return {
        "CNI_CONTAINERID": cid,
        "CNI_NETNS": f"/var/run/netns/{ns}",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/usr/lib/cni",
    }


def _ifindex(node, cid: str) -> int | None:
    from pyroute2 import IPRoute

    with IPRoute(netns=f"/var/run/netns/{node.ns}", flags=0) as ipr:
        idx = ipr.link_lookup(ifname=host_ifname_for(cid, "eth0", NET))
    return idx[0] if idx else None


@pytest.fixture
def deferred():
    """DEL in this process as the agent runs it: the veth deletion is handed to us, not run."""
    owed: list = []
    old, common.DEFER = common.DEFER, lambda finish, held: owed.append((finish, held))
    try:
        yield owed
    finally:
        common.DEFER = old
        for finish, held in owed:
            try:
                finish()
            finally:
                held.close()


def test_a_veth_whose_deletion_is_pending_stays_fenced(cluster, node, runtime, deferred):
    ns = runtime.new_pod_netns("f0")
    inv = runtime.add("fence", ns)
    assert inv.ok, inv.stdout + inv.stderr
    pod = runtime.pod_from_result("f0", ns, inv.out)
    assert udp_exchange(ns, cluster.wire, WIRE_HOST_V4, n=3, port=47600) == 3
    ifindex = _ifindex(node, "fence")
    stdin = json.dumps(runtime.xdpcni_conf()).encode()
    with entered(node.ns):
        rc, out = execute({**_env("fence", ns), "CNI_COMMAND": "DEL"}, stdin)
    assert rc == 0, out
    assert len(deferred) == 1 and _ifindex(node, "fence") == ifindex  # answered, veth still there
    with EndpointTable(node.pin_root) as table:
        assert all(table.endpoints.get(abi.EndpointKey.for_ip(ip)) is None for ip in pod.ips)
        assert table.ifaces.get(ifindex) is not None  # the veth's own entry: tc_pod keeps checking it
    # The pod's packets carry an address its veth no longer has: dropped by tc_pod, not passed
    # to the stack (which would still route them out).
    assert udp_exchange(ns, cluster.wire, WIRE_HOST_V4, n=3, port=47601) == 0
    finish, held = deferred.pop()
    try:
        finish()
    finally:
        held.close()
    assert _ifindex(node, "fence") is None
    with EndpointTable(node.pin_root) as table:
        assert table.ifaces.get(ifindex) is None
    assert (
        not os.path.isdir(PendingDeletes(node.pin_root).dir)
        or os.listdir(PendingDeletes(node.pin_root).dir) == []
    )


def test_an_in_process_add_first_finishes_a_dead_agents_note_for_its_name(cluster, node, runtime, deferred):
    ns = runtime.new_pod_netns("o0")
    assert runtime.add("again", ns).ok
    stdin = json.dumps(runtime.xdpcni_conf()).encode()
    with entered(node.ns):
        rc, out = execute({**_env("again", ns), "CNI_COMMAND": "DEL"}, stdin)
    assert rc == 0, out
    finish, held = deferred.pop()
    held.close()  # the agent "died" after answering: its note stays, the veth too
    (note,) = os.listdir(PendingDeletes(node.pin_root).dir)
    PendingDeletes.disown(os.path.join(PendingDeletes(node.pin_root).dir, note))
    common.DEFER = None
    inv = runtime.add("again", ns)  # same container, same veth name
    assert inv.ok, inv.stdout + inv.stderr
    assert _ifindex(node, "again") is not None and runtime.delete("again", ns).ok
    assert pod_links(node) == []


def test_the_agent_retries_a_deletion_it_gave_up_while_running(cluster, node):
    agent = NodeAgent(node)
    try:
        rt = Runtime.single(node, "tc")  # pods made in-process; the agent only watches
        ns = rt.new_pod_netns("g0")
        assert rt.add("given-up", ns).ok
        ifindex = _ifindex(node, "given-up")
        name = host_ifname_for("given-up", "eth0", NET)
        pending = PendingDeletes(node.pin_root)
        PendingDeletes.disown(pending.add(ifindex, name, owner_mark(NET, "given-up", "eth0")))
        wait_for(lambda: _ifindex(node, "given-up") is None, timeout=10, what="the given-up veth deleted")
        wait_for(
            lambda: not os.path.isdir(pending.dir) or os.listdir(pending.dir) == [],
            timeout=5,
            what="note gone",
        )
        assert rt.delete("given-up", ns).ok
    finally:
        agent.stop()


SLOW_IPAM = """#!/bin/sh
# A delegated IPAM plugin that blocks until the test lets it answer (at most 30 s).
dir=$(dirname "$0")
if [ "$CNI_COMMAND" = ADD ]; then
  touch "$dir/started"
  i=0
  while [ ! -e "$dir/release" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done
  echo '{"cniVersion": "1.0.0", "ips": [{"address": "198.19.250.5/32"}]}'
fi
exit 0
"""


def test_a_verb_in_a_delegated_ipam_call_gives_its_turn_up(cluster, node, tmp_path):
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "slowipam").write_text(SLOW_IPAM)
    (plugin_dir / "slowipam").chmod(0o755)
    agent = NodeAgent(node, args=["--max-running", "1"])
    slow: dict = {}
    t = None
    try:
        rt = Runtime.single(node, "tc", agentSocket=agent.sock)
        assert rt.add("warm", rt.new_pod_netns("w")).ok
        ns_slow, ns_fast = rt.new_pod_netns("s"), rt.new_pod_netns("q")
        conf = rt.xdpcni_conf(ipam={"type": "slowipam"})
        path = f"{plugin_dir}:{cni_bin_dir()}:{REFERENCE_PLUGINS}"

        def add_slow() -> None:
            slow["inv"] = invoke(
                node.ns,
                "xdpcni",
                "ADD",
                conf,
                container_id="slow",
                netns_path=f"/var/run/netns/{ns_slow}",
                extra_env={"CNI_PATH": path},
                timeout=60,
            )

        t = threading.Thread(target=add_slow, daemon=True)
        t.start()
        wait_for(lambda: (plugin_dir / "started").exists(), timeout=20, what="the slow IPAM plugin running")
        fast = invoke(
            node.ns,
            "xdpcni",
            "ADD",
            rt.xdpcni_conf(),
            container_id="fast",
            netns_path=f"/var/run/netns/{ns_fast}",
            timeout=10,
        )
        assert fast.ok, fast.stdout + fast.stderr
        assert t.is_alive()  # the slow one is still inside its IPAM plugin
    finally:
        (plugin_dir / "release").touch()
        if t is not None:
            t.join(60)
        agent.stop()
    assert slow["inv"].ok, slow["inv"].stdout + slow["inv"].stderr


def test_no_thread_stays_in_a_pods_namespace(cluster, node, runtime):
    """The pod's netlink socket is made with the verb's thread inside the pod's namespace for the
    socket() call alone (datapath/rtnl.py socket_in_netns): after ADD no thread of this process
    is left there (a thread in a namespace would also keep a deleted pod's namespace alive)."""
    assert runtime.add("warm", runtime.new_pod_netns("w")).ok
    ns = runtime.new_pod_netns("h0")
    stdin = json.dumps(runtime.xdpcni_conf()).encode()
    pod_ns = f"net:[{os.stat(f'/var/run/netns/{ns}').st_ino}]"
    with entered(node.ns):
        node_ns = os.readlink("/proc/thread-self/ns/net")
        rc, out = execute({**_env("helper", ns), "CNI_COMMAND": "ADD"}, stdin)
        assert os.readlink("/proc/thread-self/ns/net") == node_ns  # the verb's thread came back
        where = {os.readlink(f"/proc/self/task/{tid}/ns/net") for tid in os.listdir("/proc/self/task")}
    assert rc == 0, out
    assert where and pod_ns not in where
    with entered(node.ns):
        assert execute({**_env("helper", ns), "CNI_COMMAND": "DEL"}, stdin)[0] == 0
