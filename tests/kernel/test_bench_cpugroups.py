"""bench/cpugroups.py, on this machine's real cgroup hierarchy: the CNI benchmark's 100-at-once
phase puts the node agent in a CPU cgroup of its own and the runtime (this process and what it
spawns) in another, as a node does, and leaves nothing behind."""

from __future__ import annotations

import os
import secrets
import subprocess

import pytest

from bench import cpugroups

pytestmark = pytest.mark.kernel


def _cpu_group(pid: int, version: str) -> str:
    return cpugroups._current(pid, version)


def test_agent_and_runtime_get_groups_of_their_own_and_go_back():
    mount, version = cpugroups._hierarchy()
    if mount is None:
        pytest.skip(f"no usable cpu cgroup hierarchy: {version}")
    name = f"xdpcni-test-{secrets.token_hex(3)}"
    agent = subprocess.Popen(["sleep", "30"])
    try:
        me_before, agent_before = _cpu_group(os.getpid(), version), _cpu_group(agent.pid, version)
        with cpugroups.separate(name) as groups:
            if groups.base is None:
                pytest.skip(f"cpu cgroups refused here: {groups.how}")
            groups.add_agent(agent.pid)
            assert _cpu_group(os.getpid(), version).endswith(f"/{name}/runtime")
            assert _cpu_group(agent.pid, version).endswith(f"/{name}/agent")
            child = subprocess.run(["cat", "/proc/self/cgroup"], capture_output=True, text=True, check=True)
            assert f"/{name}/runtime" in child.stdout  # what the runtime spawns is in its group
            assert name in groups.how
        assert _cpu_group(os.getpid(), version) == me_before
        assert _cpu_group(agent.pid, version) == agent_before
        assert not os.path.exists(os.path.join(mount, name))
    finally:
        agent.kill()
        agent.wait()


def test_an_agent_that_exited_meanwhile_does_not_stop_the_cleanup():
    mount, version = cpugroups._hierarchy()
    if mount is None:
        pytest.skip(f"no usable cpu cgroup hierarchy: {version}")
    name = f"xdpcni-test-{secrets.token_hex(3)}"
    me_before = _cpu_group(os.getpid(), version)
    with cpugroups.separate(name) as groups:
        if groups.base is None:
            pytest.skip(f"cpu cgroups refused here: {groups.how}")
        agent = subprocess.Popen(["sleep", "30"])
        groups.add_agent(agent.pid)
        agent.kill()  # gone before the groups are removed: nothing to move back
        agent.wait()
    assert _cpu_group(os.getpid(), version) == me_before
    assert not os.path.exists(os.path.join(mount, name))
