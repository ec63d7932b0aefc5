"""How ADD and DEL reach the kernel (issue 12): the pod's veth end is created in the pod's namespace
(no create-then-move), no helper process is forked, and the node agent serves verbs concurrently
(one waiting for its attachment lock holds up no other)."""

import json
import os
import select
import socket
import threading
import time

import pytest

from cni.commands.common import attachment_lock_path
from cni.main import execute
from cni.netconf import parse
from datapath import rtnl
from datapath.locks import flocked
from datapath.netns import entered
from sim.agent import NodeAgent
from sim.cni_runtime import Runtime
from tests.harness.nodestate import pod_links, snapshot

pytestmark = pytest.mark.e2e
RTNLGRP_LINK = 1


def _link_events(sock: socket.socket) -> list[tuple[int, str]]:
    """(message type, ifname) of every link message queued on a monitor socket."""
    out = []
    while select.select([sock], [], [], 0.2)[0]:
        data = sock.recv(1 << 20)
        off = 0
        while off + 16 <= len(data):
            n, kind = rtnl._NLHDR.unpack_from(data, off)[:2]
            if kind in (rtnl.RTM_NEWLINK, rtnl.RTM_DELLINK):
                attrs = rtnl.parse_attrs(data, off + 16 + rtnl._IFINFO.size, off + n)
                out.append((kind, attrs.get(rtnl.IFLA_IFNAME, b"").rstrip(b"\0").decode()))
            off += (n + 3) & ~3
    return out


def test_pod_end_is_created_in_the_pod_namespace(node, runtime):
    """The pod's namespace sees one interface appear, already named eth0: never a temporary
    name moved in and renamed (each move costs the kernel a namespace change)."""
    assert runtime.add("warm", runtime.new_pod_netns("w")).ok
    ns = runtime.new_pod_netns("mon")
    fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    try:
        mon = rtnl.socket_in_netns(fd)
    finally:
        os.close(fd)
    with mon:
        mon.bind((0, 1 << (RTNLGRP_LINK - 1)))
        inv = runtime.add("mon", ns)
        assert inv.ok, inv.stdout + inv.stderr
        events = _link_events(mon)
    names = {name for kind, name in events if kind == rtnl.RTM_NEWLINK}
    assert names and names <= {"eth0", "lo"}, events
    assert runtime.delete("mon", ns).ok and runtime.delete("warm", None).ok


def test_the_veth_echo_read_raw_equals_pyroute2s_decoding(node, runtime):
    """create_veth reads the kernel's 1.5 KB echo for five attributes (Link.from_raw): the same
    link as a lookup decoded by pyroute2 (Link.from_msg) reports."""
    ns = runtime.new_pod_netns("echo")
    fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    try:
        with entered(node.ns), rtnl.Rtnl() as nl:
            link = nl.create_veth("xcechotest01", rtnl.random_mac(), "eth7", rtnl.random_mac(), fd, 1400)
            try:
                looked = nl.get_link("xcechotest01")
                fields = ("index", "ifname", "mac", "alias", "kind", "link")
                assert link is not None and looked is not None
                assert [getattr(link, k) for k in fields] == [getattr(looked, k) for k in fields]
                assert link.kind == "veth" and link.link
            finally:
                nl.delete_link(link.index if link else looked.index)
    finally:
        os.close(fd)


def test_add_and_del_fork_no_helper_process(node, runtime):
    """ADD and DEL in this very process (as the agent runs them), with every os.fork recorded."""
    assert runtime.add("warm", runtime.new_pod_netns("w")).ok  # loads the datapath (a subprocess)
    forks: list[str] = []
    armed: list[bool] = []
    os.register_at_fork(before=lambda: armed and forks.append("fork"))
    conf = runtime.xdpcni_conf()
    stdin = json.dumps(conf).encode()
    ns = runtime.new_pod_netns("nf")
    env = {
        "CNI_CONTAINERID": "nofork",
        "CNI_NETNS": f"/var/run/netns/{ns}",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/usr/lib/cni",
    }
    with entered(node.ns):
        armed.append(True)
        try:
            add = execute({**env, "CNI_COMMAND": "ADD"}, stdin)
            dele = execute({**env, "CNI_COMMAND": "DEL"}, stdin)
        finally:
            armed.clear()
    assert add[0] == 0 and dele[0] == 0, (add, dele)
    assert forks == []
    assert runtime.delete("warm", None).ok
    assert pod_links(node) == [] and snapshot(node)["leases"] == []


def test_agent_serves_verbs_concurrently(node):
    """An ADD held up on its attachment lock inside the agent does not hold up another pod's."""
    agent = NodeAgent(node)
    try:
        rt = Runtime.single(node, "tc", agentSocket=agent.sock)
        assert rt.add("warm", rt.new_pod_netns("w")).ok
        conf = parse(rt.xdpcni_conf(), "ADD")
        lock = attachment_lock_path(conf, "slow", "eth0")
        assert lock != attachment_lock_path(conf, "fast", "eth0")  # the fast pod's lock is another file
        ns_slow, ns_fast = rt.new_pod_netns("slow"), rt.new_pod_netns("fast")
        done: dict = {}
        with flocked(lock, "test holds the slow pod's attachment lock"):
            slow = threading.Thread(target=lambda: done.setdefault("slow", rt.add("slow", ns_slow)))
            slow.start()
            time.sleep(1.0)  # the slow ADD reaches the agent and waits there for the lock
            fast = rt.add("fast", ns_fast)
            assert fast.ok, fast.stdout + fast.stderr
            assert slow.is_alive() and "slow" not in done  # still waiting for the lock we hold
        slow.join(60)
        assert done["slow"].ok, done["slow"].stdout + done["slow"].stderr
        served = [(verb, cid) for verb, cid, _, _ in agent.served()]
        assert served.index(("ADD", "fast")) < served.index(("ADD", "slow"))
        for cid, ns in (("slow", ns_slow), ("fast", ns_fast), ("warm", None)):
            assert rt.delete(cid, ns).ok
    finally:
        agent.stop()
    assert pod_links(node) == []


def _sysctl(node, key: str) -> str:
    with entered(node.ns), open(f"/proc/sys/net/{key}") as fh:
        return fh.read().strip()


@pytest.mark.parametrize("families", [(4,), (6,), (4, 6)], ids=["ipv4", "ipv6", "dual-stack"])
def test_the_host_veth_forwards_the_pods_families_only(node, families):
    """ADD turns forwarding on for the families of the pod's addresses only (four procfs writes
    were the host side's biggest cost) and router advertisements off always (a pod must never
    configure the node); CHECK holds the pod to the same."""
    ranges = [[{"subnet": str(node.cidr4 if f == 4 else node.cidr6)}] for f in families]
    rt = Runtime.single(node, "tc", ipam={"type": "xdpcni", "ranges": ranges})
    ns = rt.new_pod_netns(f"fw{''.join(map(str, families))}")
    cid = f"fw{''.join(map(str, families))}"
    add = rt.add(cid, ns)
    assert add.ok, add.stdout + add.stderr
    try:
        veth = add.out["interfaces"][0]["name"]
        assert _sysctl(node, f"ipv4/conf/{veth}/forwarding") == ("1" if 4 in families else "0")
        assert _sysctl(node, f"ipv6/conf/{veth}/forwarding") == ("1" if 6 in families else "0")
        assert _sysctl(node, f"ipv6/conf/{veth}/accept_ra") == "0"
        chk = rt.check(cid, ns)
        assert chk.ok, chk.stdout + chk.stderr
    finally:
        assert rt.delete(cid, ns).ok


def test_add_leaves_the_pods_loopback_to_the_runtime(node, runtime):
    """lo is the runtime's (containerd runs the loopback plugin; CRI-O and podman bring it up
    themselves), as for the reference plugins: ADD configures eth0 and leaves lo as it found
    it (bringing it up cost ~0.1 ms of every ADD)."""
    from pyroute2 import netns

    ns = f"{node.ns}-rawlo"
    netns.create(ns)  # as unshare(2) makes it: lo down
    node.cluster.namespaces.append(ns)
    inv = runtime.add("rawlo", ns)
    assert inv.ok, inv.stdout + inv.stderr
    fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    try:
        with rtnl.Rtnl(fd) as nl:
            lo, eth0 = nl.get_link("lo"), nl.get_link("eth0")
    finally:
        os.close(fd)
    assert eth0 is not None and eth0.flags & rtnl.IFF_UP
    assert not lo.flags & rtnl.IFF_UP
    assert runtime.delete("rawlo", ns).ok


def test_add_plumbs_the_namespace_it_checked(node, runtime, monkeypatch):
    """CNI_NETNS is checked (a network namespace, not the node's) and that very namespace is
    plumbed: a path that names another namespace by the time the veth is made does not redirect
    the pod's interface there (one open: the checked fd is the one used)."""
    import subprocess

    from cni import testhook

    assert runtime.add("warm2", runtime.new_pod_netns("w2")).ok  # loads the datapath
    checked, other = runtime.new_pod_netns("chk"), runtime.new_pod_netns("oth")
    path, other_path = f"/var/run/netns/{checked}", f"/var/run/netns/{other}"
    real_step = testhook.step
    stacked: list[bool] = []

    def swap(name: str) -> None:  # after the check, before the veth: the path now names `other`
        if name == "ipam":
            subprocess.run(["mount", "--bind", other_path, path], check=True)
            stacked.append(True)
        real_step(name)

    def has_eth0(ns_path: str) -> bool:
        fd = os.open(ns_path, os.O_RDONLY)
        try:
            with rtnl.Rtnl(fd) as nl:
                return nl.get_link("eth0") is not None
        finally:
            os.close(fd)

    monkeypatch.setattr(testhook, "step", swap)
    env = {"CNI_CONTAINERID": "toctou", "CNI_NETNS": path, "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni"}
    stdin = json.dumps(runtime.xdpcni_conf()).encode()
    try:
        with entered(node.ns):
            rc, out = execute({**env, "CNI_COMMAND": "ADD"}, stdin)
        assert rc == 0, out
        assert stacked and not has_eth0(path) and not has_eth0(other_path)  # `other` untouched
    finally:
        monkeypatch.setattr(testhook, "step", real_step)
        if stacked:
            subprocess.run(["umount", path], check=True)  # the path names `checked` again
    assert has_eth0(path)
    with entered(node.ns):
        assert execute({**env, "CNI_COMMAND": "DEL"}, stdin)[0] == 0
    assert runtime.delete("warm2", None).ok
