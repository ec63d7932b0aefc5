"""CPU cgroups for the CNI benchmark's 100-at-once phase: the node agent in one, the "runtime"
(this process and the plugin processes it spawns) in another, as on a Kubernetes node.

There the agent is the main process of a DaemonSet pod (conf/30-daemonset.yaml), in a pod cgroup
of its own under kubepods; the CNI plugin processes are children of containerd or CRI-O, in that
service's cgroup under system.slice. The kernel's CPU scheduler shares the CPU between the two
groups first and only then between the processes inside each: 100 plugin processes starting at
once do not push the agent down to 1/101 of the CPU. In one group, as the benchmark ran before,
they do: the agent's own time per ADD (turn-wait excluded) reached 55-193 ms at p99 and its CPU
per ADD nearly doubled. Both groups get the default weight (cgroup v2 cpu.weight 100, v1
cpu.shares 1024; on a node kubepods.slice's weight follows the allocatable CPUs, e.g. 79 for two,
against system.slice's 100). A plugin without an agent (bridge, ptp) runs all its work in the
runtime group, as on a node.

Works with cgroup v2 (a "cpu" controller the root can hand down) or v1's "cpu" hierarchy; where
neither can be used, `separate()` yields a CpuGroups whose `how` says why and moves nothing. Every
group made is removed on exit, after the processes moved into it are moved back where they were.
"""

from __future__ import annotations

import contextlib
import os

CGROUP_ROOT = "/sys/fs/cgroup"


def _hierarchy() -> tuple[str, str] | tuple[None, str]:
    """(mount point of a hierarchy with the cpu controller, "v2" or "v1"), or (None, why not)."""
    try:
        with open(os.path.join(CGROUP_ROOT, "cgroup.controllers")) as fh:
            if "cpu" in fh.read().split():
                return CGROUP_ROOT, "v2"
            return None, "cgroup v2 without the cpu controller"
    except FileNotFoundError:
        pass
    v1 = os.path.join(CGROUP_ROOT, "cpu")
    if os.path.isfile(os.path.join(v1, "cpu.shares")):
        return v1, "v1"
    return None, f"no cpu cgroup hierarchy under {CGROUP_ROOT}"


def _current(pid: int, version: str) -> str:
    """The cgroup path (relative to the hierarchy's root) of `pid` in the cpu hierarchy."""
    with open(f"/proc/{pid}/cgroup") as fh:
        for line in fh:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if (version == "v2" and controllers == "") or (
                version == "v1" and "cpu" in controllers.split(",")
            ):
                return path
    return "/"


class CpuGroups:
    """What separate() made: `how` for the results, `add_agent(pid)` to move an agent in."""

    def __init__(self, mount: str | None, version: str, name: str):
        self.mount, self.version = mount, version
        self.base = os.path.join(mount, name) if mount else None
        self.moved: list[tuple[int, str]] = []  # (pid, its cgroup before), to move back
        self.how = version if mount is None else f"cgroup {version}: {name}/runtime and {name}/agent"

    def _move(self, pid: int, group: str) -> None:
        before = _current(pid, self.version)
        with open(os.path.join(self.base, group, "cgroup.procs"), "w") as fh:
            fh.write(str(pid))  # the whole process, every thread (v1 and v2 alike)
        self.moved.append((pid, before))

    def add_agent(self, pid: int) -> None:
        if self.base:
            self._move(pid, "agent")

    def _setup(self) -> None:
        os.mkdir(self.base)
        if self.version == "v2":  # the "no internal processes" rule: controllers below, processes in leaves
            with open(os.path.join(self.mount, "cgroup.subtree_control"), "w") as fh:
                fh.write("+cpu")
            with open(os.path.join(self.base, "cgroup.subtree_control"), "w") as fh:
                fh.write("+cpu")
        for group in ("runtime", "agent"):
            os.mkdir(os.path.join(self.base, group))
        self._move(os.getpid(), "runtime")

    def _teardown(self) -> None:
        for pid, before in reversed(self.moved):
            try:
                with open(os.path.join(self.mount, before.lstrip("/"), "cgroup.procs"), "w") as fh:
                    fh.write(str(pid))
            except OSError:  # exited (an agent stopped meanwhile) or its group is gone
                pass
        for group in ("runtime", "agent", ""):
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(os.path.join(self.base, group) if group else self.base)


@contextlib.contextmanager
def separate(name: str):
    """A CpuGroups named `name` (one directory in the cpu hierarchy), this process in its runtime
    group for the duration; with no usable hierarchy, or one that refuses (a container without
    write access), a CpuGroups that moves nothing and says why in `how`."""
    mount, version = _hierarchy()
    groups = CpuGroups(mount, version, name)
    if mount is not None:
        try:
            groups._setup()
        except OSError as exc:
            groups._teardown()
            groups = CpuGroups(None, f"not used: {exc}", name)
    try:
        yield groups
    finally:
        if groups.base:
            groups._teardown()
