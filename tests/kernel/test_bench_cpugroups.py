"""bench/cpugroups.py, on this machine's real cgroup hierarchy: the CNI benchmark's 100-at-once
phase puts the node agent in a CPU cgroup of its own and the runtime (this process and what it
spawns) in another, and leaves nothing behind. (Its fallback where cgroups refuse is in
tests/unit/test_bench_cni.py.)"""

from __future__ import annotations

import glob
import os
import secrets
import subprocess
import sys

import pytest

from bench import cpugroups

pytestmark = pytest.mark.kernel

# A process with a few threads, as the agent has: every one of them must move.
THREADED = "import threading, time\nfor _ in range(3): threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\nprint(flush=True); time.sleep(30)"


def _cpu_paths(pid: int) -> set[str]:
    """The cpu-hierarchy cgroup of every thread of `pid`, read here from /proc (not with the
    module's own parser): v2's "0::PATH" line, else v1's line naming the cpu controller."""
    paths = set()
    for f in glob.glob(f"/proc/{pid}/task/*/cgroup"):
        with open(f) as fh:
            lines = [ln.rstrip("\n").split(":", 2) for ln in fh]
        v1 = [p for _, c, p in lines if "cpu" in c.split(",")]
        v2 = [p for h, c, p in lines if h == "0" and c == ""]
        paths.add(v1[0] if v1 else v2[0])
    return paths


def _usable():
    mount, version = cpugroups._hierarchy()
    if mount is None:
        pytest.skip(f"no usable cpu cgroup hierarchy: {version}")
    return mount, version


def test_agent_and_runtime_get_groups_of_their_own_and_go_back():
    mount, version = _usable()
    name = f"xdpcni-test-{secrets.token_hex(3)}"
    agent = subprocess.Popen([sys.executable, "-c", THREADED], stdout=subprocess.PIPE)
    try:
        agent.stdout.readline()  # its threads run
        assert len(glob.glob(f"/proc/{agent.pid}/task/*")) == 4
        me_before, agent_before = _cpu_paths(os.getpid()), _cpu_paths(agent.pid)
        with cpugroups.separate(name) as groups:
            if groups.base is None:
                pytest.skip(f"cpu cgroups refused here: {groups.how}")
            groups.add_agent(agent.pid)
            assert {p.rsplit("/", 2)[-2:] == [name, "runtime"] for p in _cpu_paths(os.getpid())} == {True}
            assert {p.rsplit("/", 2)[-2:] == [name, "agent"] for p in _cpu_paths(agent.pid)} == {True}
            child = subprocess.run(["cat", "/proc/self/cgroup"], capture_output=True, text=True, check=True)
            assert f"/{name}/runtime\n" in child.stdout  # what the runtime spawns is in its group
            for group in ("runtime", "agent"):  # the cpu controller applies to both
                knob = "cpu.weight" if version == "v2" else "cpu.shares"
                assert os.path.exists(os.path.join(mount, name, group, knob)), (group, knob)
            assert name in groups.how
        assert groups.cleanup_errors == []
        assert _cpu_paths(os.getpid()) == me_before
        assert _cpu_paths(agent.pid) == agent_before
        assert not os.path.exists(os.path.join(mount, name))
    finally:
        agent.kill()
        agent.wait()


def test_an_agent_gone_before_the_end_does_not_stop_the_cleanup():
    mount, version = _usable()
    name = f"xdpcni-test-{secrets.token_hex(3)}"
    me_before = _cpu_paths(os.getpid())
    with cpugroups.separate(name) as groups:
        if groups.base is None:
            pytest.skip(f"cpu cgroups refused here: {groups.how}")
        agent = subprocess.Popen(["sleep", "30"])
        groups.add_agent(agent.pid)
        agent.kill()  # gone before the groups are removed: nothing to move back
        agent.wait()
    assert groups.cleanup_errors == []
    assert _cpu_paths(os.getpid()) == me_before
    assert not os.path.exists(os.path.join(mount, name))


def test_a_child_left_running_in_the_runtime_group_is_moved_out_and_the_groups_go():
    mount, version = _usable()
    name = f"xdpcni-test-{secrets.token_hex(3)}"
    with cpugroups.separate(name) as groups:
        if groups.base is None:
            pytest.skip(f"cpu cgroups refused here: {groups.how}")
        stray = subprocess.Popen(["sleep", "30"])  # spawned inside: in the runtime group
    try:
        assert not os.path.exists(os.path.join(mount, name)), groups.cleanup_errors
        assert groups.cleanup_errors == []
        assert name not in "".join(_cpu_paths(stray.pid))
    finally:
        stray.kill()
        stray.wait()
