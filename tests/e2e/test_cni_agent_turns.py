"""Verbs run in turns in the node agent (node/agent.py RunSlots, `--max-running N`), and a verb
that waits for a lock gives its turn up (datapath/locks.py WAIT_HOOK): with one turn, an ADD
stuck on its attachment's lock never holds up an ADD of another attachment."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from types import SimpleNamespace

import pytest

from cni.commands import common
from cni.plumbing import host_ifname_for
from datapath.endpoints import EndpointTable
from sim.agent import NodeAgent
from sim.cni_runtime import Runtime
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.e2e
NET = "xdpcni-test"


def attachment_lock_path(node, container_id: str, ifname: str = "eth0") -> str:
    """The attachment's lock file (cni/commands/common.py attachment_locked)."""
    return common.attachment_lock_path(
        SimpleNamespace(name=NET, data_dir=node.data_dir), container_id, ifname
    )


def has_open(pid: int, fd: int) -> bool:
    """Whether process `pid` has the file behind our `fd` open (it is waiting for its lock)."""
    st = os.fstat(fd)
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            other = os.stat(f"/proc/{pid}/fd/{name}")
            if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                return True
    return False


def test_a_verb_waiting_for_a_lock_gives_its_turn_up(cluster, node):
    agent = NodeAgent(node, args=["--max-running", "1"])
    held = None
    threads = []
    try:
        # lockTimeout well past the deadlines below: X must still be waiting when Y is checked.
        rt = Runtime.single(node, "tc", agentSocket=agent.sock, lockTimeout=300)
        assert rt.add("warm", rt.new_pod_netns("w")).ok  # loads the datapath
        ns_x, ns_y = rt.new_pod_netns("x"), rt.new_pod_netns("y")
        path = attachment_lock_path(node, "turn-x")
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        held = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(held, fcntl.LOCK_EX)
        results: dict[str, object] = {}

        def add(cid: str, ns: str) -> None:
            results[cid] = rt.add(cid, ns)

        x = threading.Thread(target=add, args=("turn-x", ns_x), daemon=True)
        threads.append(x)
        x.start()
        # X has its turn and is inside its lock wait once the agent has the lock file open.
        wait_for(
            lambda: has_open(agent.proc.pid, held), 30, "ADD turn-x waiting for its lock", log=agent.text
        )
        y = threading.Thread(target=add, args=("turn-y", ns_y), daemon=True)
        threads.append(y)
        y.start()
        wait_for(lambda: "turn-y" in results, 20, "ADD turn-y while turn-x waits for a lock", log=agent.text)
        assert results["turn-y"].ok, results["turn-y"].stdout + results["turn-y"].stderr
        assert x.is_alive() and "turn-x" not in results
        assert [(v, c) for v, c, _, _ in agent.served()] == [("ADD", "warm"), ("ADD", "turn-y")]

        os.close(held)  # X takes the lock now
        held = None
        x.join(60)
        assert "turn-x" in results, agent.text()
        assert results["turn-x"].ok, results["turn-x"].stdout + results["turn-x"].stderr
        assert [(v, c, rc) for v, c, rc, _ in agent.served()][1:] == [
            ("ADD", "turn-y", 0),
            ("ADD", "turn-x", 0),
        ]
        ifnames = [rt.cache[f"{cid}/eth0"]["interfaces"][0]["name"] for cid in ("turn-x", "turn-y")]
        with EndpointTable(node.pin_root) as table:
            assert len({e.ifindex for e in table.list()}) == 3
        assert ifnames == [host_ifname_for(cid, "eth0", NET) for cid in ("turn-x", "turn-y")]
    finally:
        if held is not None:
            os.close(held)  # never leave X (and the agent) waiting on our lock
        for t in threads:
            t.join(60)
        agent.stop()
