"""DEL through the node agent answers before the kernel has deleted the pod's host veth: the map
entries, leases, claims and record are gone when DEL returns, the veth follows on an agent thread
that notes the owed deletion first (cni/pending.py, under /run/xdpcni/<pin root key>.pending-
deletes/) and holds the attachment's lock until the link is gone. A note whose owner died is
finished by the next in-process DEL and by an agent when it starts; notes of a live owner, and
notes that no longer name the link exactly (ifindex, name and mark), never delete anything.

Orphaned notes are made the way they happen: PendingDeletes.add() in a process that then exits
(or PendingDeletes.disown()); the tests only count notes and read their names' last part (the
ifindex), not their format."""

from __future__ import annotations

import ctypes
import json
import os
import struct
import subprocess
import sys

import pytest
from pyroute2 import IPRoute

from cni.claims import ClaimStore
from cni.pending import PendingDeletes
from cni.plumbing import owner_mark
from datapath.endpoints import EndpointTable
from sim.agent import NodeAgent
from sim.cni_runtime import Runtime
from sim.packets import udp_exchange
from sim.topology import VENV_BIN, run_in
from tests.harness.nodestate import pod_links, snapshot
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.e2e
NET = "xdpcni-test"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# -- helpers ----------------------------------------------------------------------------------


def notes_dir(node) -> str:
    return PendingDeletes(node.pin_root).dir


def notes(node) -> set[str]:
    """Names of the pending-deletes notes on disk (write_atomic's temporaries and the `keep`
    file some tests put there are not notes)."""
    try:
        names = os.listdir(notes_dir(node))
    except FileNotFoundError:
        return set()
    return {n for n in names if ".tmp" not in n and n != "keep"}


# A process that notes owed deletions as the agent does and exits without finishing them (an
# agent killed between DEL's answer and the veth's deletion): its notes' owner is dead.
NOTE_AND_DIE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from cni.pending import PendingDeletes
pending = PendingDeletes(sys.argv[2])
print(json.dumps([pending.add(*spec) for spec in json.load(sys.stdin)]))
"""


def orphan_notes(node, *specs: tuple[int, str, str]) -> list[str]:
    """Notes (ifindex, ifname, mark) written by a process that has exited; their paths."""
    out = subprocess.run(
        [sys.executable, "-c", NOTE_AND_DIE, ROOT, node.pin_root],
        input=json.dumps(specs),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    paths = json.loads(out.stdout)
    assert all(os.path.exists(p) for p in paths), paths
    return paths


def links(node) -> dict[str, tuple[int, str | None]]:
    """Links of the node's namespace: name -> (ifindex, ifalias)."""
    with IPRoute(netns=f"/var/run/netns/{node.ns}") as ipr:
        return {
            link.get_attr("IFLA_IFNAME"): (link["index"], link.get_attr("IFLA_IFALIAS"))
            for link in ipr.get_links()
        }


def host_veth(node, result: dict) -> tuple[str, int, str]:
    """(name, ifindex, ownership mark) of the host veth an ADD result names."""
    name = result["interfaces"][0]["name"]
    ifindex, alias = links(node)[name]
    return name, ifindex, alias


def endpoint_ifindexes(node) -> set[int]:
    with EndpointTable(node.pin_root) as table:
        return {e.ifindex for e in table.list()}


IN_CREATE, IN_MOVED_TO, IN_DELETE = 0x100, 0x80, 0x200


class DirWatch:
    """inotify on one directory: (event, name) for every file created/moved in or deleted, in
    order. Shows notes that live for a few tens of milliseconds without racing them."""

    def __init__(self, path: str):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0, os.strerror(ctypes.get_errno())
        wd = self.libc.inotify_add_watch(self.fd, path.encode(), IN_CREATE | IN_MOVED_TO | IN_DELETE)
        assert wd >= 0, os.strerror(ctypes.get_errno())
        self.seen: list[tuple[str, str]] = []

    def events(self) -> list[tuple[str, str]]:
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                return self.seen
            off = 0
            while off < len(buf):
                _, mask, _, size = struct.unpack_from("iIII", buf, off)
                name = buf[off + 16 : off + 16 + size].rstrip(b"\0").decode()
                off += 16 + size
                kind = "deleted" if mask & IN_DELETE else "created"
                self.seen.append((kind, name))

    def close(self) -> None:
        os.close(self.fd)


# -- a1 ---------------------------------------------------------------------------------------


def test_agent_del_answers_then_deletes_the_veth_from_a_note(cluster, node, agent):
    rt = Runtime.single(node, "tc", agentSocket=agent.sock)
    ns, other_ns = rt.new_pod_netns("d0"), rt.new_pod_netns("d1")
    inv = rt.add("del0", ns)
    assert inv.ok, inv.stdout + inv.stderr
    assert rt.add("del1", other_ns).ok
    name, ifindex, _ = host_veth(node, inv.out)
    other = host_veth(node, rt.cache["del1/eth0"])
    ips = [ip["address"].split("/")[0] for ip in inv.out["ips"]]
    before = snapshot(node)
    assert ifindex in endpoint_ifindexes(node) and len(before["leases"]) == 4 and len(before["records"]) == 2
    # Watch the notes directory through the DEL. A file of a name notes never have keeps the
    # directory from being removed as empty (the orphan sweep removes it when it is).
    os.makedirs(notes_dir(node), mode=0o700, exist_ok=True)
    with open(os.path.join(notes_dir(node), "keep"), "w"):
        pass
    watch = DirWatch(notes_dir(node))
    try:
        inv = rt.delete("del0", ns)
        assert inv.ok, inv.stdout + inv.stderr
        # Everything but the veth is gone by the time DEL answered.
        after = snapshot(node)
        assert after["records"] == [f"{other[0]}.json"], after
        assert len(after["leases"]) == 2 and not set(ips) & set(after["leases"]), after
        # No address steers to the pod any more; the veth's own entry stays while it exists (it
        # keeps the veth fenced: tc_pod drops what it still sends, tests/e2e/test_cni_deferred_safety.py).
        assert [e for e in after["endpoints"] if e[1] and (e[0] == ifindex or set(e[1]) & set(ips))] == [], (
            after
        )
        assert not set(ips) & set(ClaimStore(node.pin_root).all())
        # The veth follows, and the note that owed it is removed once it is gone.
        wait_for(lambda: name not in links(node), 10, f"{name} deleted", log=agent.text)
        assert ifindex not in {idx for idx, _ in links(node).values()}
        wait_for(lambda: ifindex not in endpoint_ifindexes(node), 10, "its own map entry removed after it")

        def note_events() -> list[tuple[str, str]]:
            return [(kind, n) for kind, n in watch.events() if ".tmp" not in n and n != "keep"]

        wait_for(
            lambda: any(kind == "deleted" for kind, _ in note_events()),
            10,
            "the note removed",
            log=lambda: f"{watch.seen}\n{agent.text()}",
        )
        events = note_events()
        note = events[0][1]
        assert events == [("created", note), ("deleted", note)], events
        assert note.split(".")[-1] == str(ifindex), note  # the note names the veth by its ifindex
        assert notes(node) == set()
    finally:
        watch.close()
    assert [(v, c) for v, c, _, _ in agent.served()] == [("ADD", "del0"), ("ADD", "del1"), ("DEL", "del0")]
    # The other pod is untouched.
    assert links(node)[other[0]] == other[1:] and other[1] in endpoint_ifindexes(node)
    assert rt.delete("del1", other_ns).ok
    wait_for(lambda: pod_links(node) == [], 10, "no pod veths", log=agent.text)
    wait_for(lambda: notes(node) == set(), 10, "no notes", log=agent.text)
    state = snapshot(node)
    assert state["endpoints"] == [] and state["leases"] == [] and state["records"] == []


# -- a2 ---------------------------------------------------------------------------------------

# DEL then ADD of one attachment through the agent, back to back in one process (no process
# start-up between them): the ADD arrives while the agent still deletes the old veth. Reports
# whether the old veth still existed when DEL had answered.
DEL_THEN_ADD = """
import json, socket, sys
sys.path.insert(0, sys.argv[1])
from cni.client import via_agent
env, old_name, old_index = json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4])
conf = sys.stdin.buffer.read()
out = {}
rc, stdout, stderr = via_agent({**env, "CNI_COMMAND": "DEL"}, conf)
try:
    out["old_veth_after_del"] = socket.if_nametoindex(old_name) == old_index
except OSError:
    out["old_veth_after_del"] = False
out["del"] = [rc, stdout, stderr]
out["add"] = list(via_agent({**env, "CNI_COMMAND": "ADD"}, conf))
print(json.dumps(out))
"""


def test_agent_del_then_add_of_the_same_attachment_at_once(cluster, node, agent):
    rt = Runtime.single(node, "tc", agentSocket=agent.sock)
    ns = rt.new_pod_netns("r")
    inv = rt.add("again", ns)
    assert inv.ok, inv.stdout + inv.stderr
    name, ifindex, mark = host_veth(node, inv.out)
    env = {
        "CNI_CONTAINERID": "again",
        "CNI_NETNS": f"/var/run/netns/{ns}",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/",
    }
    conf = json.dumps(rt.xdpcni_conf())
    seen_early, indexes = [], [ifindex]
    for i in range(4):
        out = run_in(
            node.ns,
            os.path.join(VENV_BIN, "python3"),
            "-c",
            DEL_THEN_ADD,
            ROOT,
            json.dumps(env),
            name,
            str(ifindex),
            input=conf,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        res = json.loads(out.stdout)
        assert res["del"][0] == 0, (i, res)
        assert res["add"][0] == 0, (i, res, agent.text()[-2000:])
        seen_early.append(res["old_veth_after_del"])
        result = json.loads(res["add"][1])
        ips = [ip["address"].split("/")[0] for ip in result["ips"]]
        now = links(node)
        assert name in now and now[name][1] == mark, (i, now)
        new_index = now[name][0]
        assert new_index not in indexes, (i, indexes, new_index)
        # The ADD ran only once the old veth's deletion was finished (the agent kept the
        # attachment's lock until then): the old veth and its note are gone already.
        assert ifindex not in {idx for idx, _ in now.values()}, (i, ifindex, now)
        assert notes(node) == set(), (i, notes(node))
        assert pod_links(node) == [name]
        state = snapshot(node)
        assert {e[0] for e in state["endpoints"]} == {new_index}, state
        assert sorted(state["endpoints"][0][1]) == sorted(ips)
        assert len(state["leases"]) == 2 and len(state["records"]) == 1
        assert udp_exchange(cluster.wire, ns, ips[0], n=3, port=40300 + i) == 3
        indexes.append(new_index)
        ifindex = new_index
    served = [(v, c, rc) for v, c, rc, _ in agent.served()]
    assert served == [("ADD", "again", 0)] + [("DEL", "again", 0), ("ADD", "again", 0)] * 4
    # DEL answers before the kernel has deleted the veth: seen at least once in four rounds
    # (the kernel's deletion takes tens of milliseconds, the client's next line microseconds).
    assert any(seen_early), seen_early
    assert rt.delete("again", ns).ok
    wait_for(lambda: pod_links(node) == [] and notes(node) == set(), 10, "pod veth and notes gone")
    state = snapshot(node)
    assert state["endpoints"] == [] and state["leases"] == [] and state["records"] == []


# -- a3 ---------------------------------------------------------------------------------------


def test_in_process_del_finishes_only_notes_of_dead_owners_naming_the_link_exactly(cluster, node):
    rt = Runtime.single(node, "tc")  # no agent: every verb in-process
    pods = {}
    for cid in ("orphan", "disowned", "live", "renamed"):
        ns = rt.new_pod_netns(cid)
        inv = rt.add(cid, ns)
        assert inv.ok, inv.stdout + inv.stderr
        pods[cid] = (ns, *host_veth(node, inv.out))
    # `renamed`'s veth is made anew under its name: a note for the first one names a stale ifindex.
    old_renamed = pods["renamed"][2]
    assert rt.delete("renamed", pods["renamed"][0]).ok
    inv = rt.add("renamed", pods["renamed"][0])
    assert inv.ok, inv.stdout + inv.stderr
    pods["renamed"] = (pods["renamed"][0], *host_veth(node, inv.out))
    assert pods["renamed"][2] != old_renamed
    nic_index = links(node)[node.nic][0]

    _, o_name, o_idx, o_mark = pods["orphan"]
    _, d_name, d_idx, d_mark = pods["disowned"]
    _, l_name, l_idx, l_mark = pods["live"]
    _, r_name, r_idx, r_mark = pods["renamed"]
    pending = PendingDeletes(node.pin_root)
    live = pending.add(l_idx, l_name, l_mark)  # owned by this process, alive
    PendingDeletes.disown(pending.add(d_idx, d_name, d_mark))  # given up by its owner
    # Notes of an owner that exited: one naming its veth exactly; three that do not (nothing may
    # be deleted for them); one unreadable (acts on nothing).
    garbled = orphan_notes(
        node,
        (o_idx, o_name, o_mark),
        (old_renamed, r_name, r_mark),  # the name's veth was made anew since
        (nic_index, r_name, r_mark),  # another link's ifindex (the NIC's)
        (r_idx, r_name, owner_mark(NET, "someone-else", "eth0")),  # not the veth's mark
        (4000000, "xcgarbled", "xdpcni:0"),
    )[-1]
    with open(garbled, "w") as fh:
        fh.write("{not json")
    with open(live) as fh:
        live_note = fh.read()
    assert len(notes(node)) == 7
    before = snapshot(node)

    inv = rt.delete("bystander", None)  # an unrelated container's DEL
    assert inv.ok, inv.stdout + inv.stderr

    now = links(node)
    assert o_name not in now and d_name not in now, sorted(now)
    assert o_idx not in {i for i, _ in now.values()} and d_idx not in {i for i, _ in now.values()}
    assert now[l_name] == (l_idx, l_mark) and now[r_name] == (r_idx, r_mark) and now[node.nic][0] == nic_index
    assert notes(node) == {os.path.basename(live)}
    with open(live) as fh:
        assert fh.read() == live_note
    # Only the orphans' links went, and with them their veths' own map entries (stale once the
    # link is gone); records, leases and the live pods' state are not this DEL's business.
    after = snapshot(node)
    assert after["records"] == before["records"] and after["leases"] == before["leases"]
    assert {e[0] for e in after["endpoints"]} == {e[0] for e in before["endpoints"]} - {o_idx, d_idx}
    assert udp_exchange(cluster.wire, pods["renamed"][0], json_ip(rt, "renamed"), n=3, port=40400) == 3

    # Once the live owner gives its note up, the next DEL finishes it too.
    PendingDeletes.disown(live)
    assert rt.delete("bystander2", None).ok
    assert l_name not in links(node) and notes(node) == set()


def json_ip(rt: Runtime, cid: str) -> str:
    return rt.cache[f"{cid}/eth0"]["ips"][0]["address"].split("/")[0]


# -- a4 ---------------------------------------------------------------------------------------


def test_agent_start_finishes_notes_of_dead_owners(cluster, node):
    rt = Runtime.single(node, "tc")
    veths = []
    for cid in ("owed", "kept"):
        inv = rt.add(cid, rt.new_pod_netns(cid))
        assert inv.ok, inv.stdout + inv.stderr
        veths.append(host_veth(node, inv.out))
    (o_name, o_idx, o_mark), (k_name, k_idx, k_mark) = veths
    orphan_notes(node, (o_idx, o_name, o_mark))  # as left by an agent killed mid-DEL
    kept = PendingDeletes(node.pin_root).add(k_idx, k_name, k_mark)  # this process's: alive
    agent = NodeAgent(node)
    try:
        wait_for(lambda: o_name not in links(node), 30, "the owed veth deleted", log=agent.text)
        agent.wait_log("deleted 1 pod veth(s) a previous agent still owed")
        assert notes(node) == {os.path.basename(kept)}
        assert links(node)[k_name] == (k_idx, k_mark)
        assert agent.served() == []
    finally:
        agent.stop()
