"""CPU cgroups for the CNI benchmark's 100-at-once phase: the node agent in one, the "runtime"
(this process and the plugin processes it spawns) in another, closer to a Kubernetes node.

There the agent is the main process of a DaemonSet pod (conf/kubernetes/30-daemonset.yaml), in a
pod cgroup of its own under kubepods; the CNI plugin processes are children of containerd or
CRI-O, in that service's cgroup under system.slice. The kernel's CPU scheduler shares the CPU
between groups first and only then between the processes inside each, so 100 plugin processes
starting at once do not get the agent's share. In one group, as the benchmark ran before, the
agent is one of ~101 runnable processes; in two A/B pairs of standalone runs it then used
36-69 % more CPU for the same 100 ADDs. Both groups here get the default weight (cgroup v2
cpu.weight 100, v1 cpu.shares 1024). A node is not exactly that: kubepods.slice's weight
follows the allocatable CPUs (79 for two, against system.slice's 100), and the agent's pod
(requests cpu: 100m, Burstable) shares kubepods with whatever other pods are busy. A plugin
without an agent (bridge, ptp) runs all its work in the runtime group, as on a node.

Works with cgroup v2 (a "cpu" controller the root can hand down) or v1's "cpu" hierarchy; where
neither can be used (no hierarchy, a read-only mount, no permission), `separate()` yields a
CpuGroups whose `base` is None and whose `how` says why, and moves nothing. On exit every
process moved is moved back (to its old group, or the nearest ancestor still there), the groups
made are removed, and a cpu controller enabled at the root for this is disabled again; cleanup
problems are reported in `cleanup_errors`, never raised over the benchmark's own outcome.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time

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
    """The cgroup path (relative to the hierarchy's root) of `pid` in the cpu hierarchy
    (/proc/PID/cgroup: "0::PATH" for v2, "N:...,cpu,...:PATH" for v1)."""
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
        self.mount, self.version, self.name = mount, version, name
        self.base = os.path.join(mount, name) if mount else None
        self.made: list[str] = []  # directories created, in creation order
        self.moved: list[tuple[int, str]] = []  # (pid, its cgroup before), to move back
        self.root_cpu_enabled = False  # "+cpu" written to the root's subtree_control by us
        self.cleanup_errors: list[str] = []
        self.how = version if mount is None else f"cgroup {version}: {name}/runtime and {name}/agent"

    def _move(self, pid: int, group: str) -> None:
        before = _current(pid, self.version)
        with open(os.path.join(self.base, group, "cgroup.procs"), "w") as fh:
            fh.write(str(pid))  # the whole process, every thread (v1 and v2 alike)
        self.moved.append((pid, before))

    def add_agent(self, pid: int) -> None:
        if self.base:
            self._move(pid, "agent")

    def _mkdir(self, path: str) -> None:
        os.mkdir(path)
        self.made.append(path)

    def _setup(self) -> None:
        if self.version == "v2":  # the "no internal processes" rule: controllers below, processes in leaves
            with open(os.path.join(self.mount, "cgroup.subtree_control")) as fh:
                enabled = "cpu" in fh.read().split()
            if not enabled:
                with open(os.path.join(self.mount, "cgroup.subtree_control"), "w") as fh:
                    fh.write("+cpu")
                self.root_cpu_enabled = True
        self._mkdir(self.base)
        if self.version == "v2":
            with open(os.path.join(self.base, "cgroup.subtree_control"), "w") as fh:
                fh.write("+cpu")
        for group in ("runtime", "agent"):
            self._mkdir(os.path.join(self.base, group))
        self._move(os.getpid(), "runtime")

    def _move_back(self, pid: int, before: str) -> None:
        path = before
        while True:  # its old group, else the nearest ancestor still there (a systemd scope
            # left empty by our move may have been removed meanwhile)
            procs = os.path.join(self.mount, path.lstrip("/"), "cgroup.procs")
            if os.path.exists(procs) or path in ("", "/"):
                break
            path = os.path.dirname(path.rstrip("/"))
        try:
            with open(procs, "w") as fh:
                fh.write(str(pid))
        except ProcessLookupError:  # exited meanwhile (an agent stopped): nothing to move
            pass
        except OSError as exc:
            self.cleanup_errors.append(f"moving {pid} back to {path}: {exc}")

    def _teardown(self) -> None:
        for pid, before in reversed(self.moved):
            self._move_back(pid, before)
        for path in reversed(self.made):
            for _ in range(50):  # bounded: ~0.5 s
                try:
                    os.rmdir(path)
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY:  # gone already, read-only, ...: report, go on
                        if exc.errno != errno.ENOENT:
                            self.cleanup_errors.append(f"removing {path}: {exc}")
                        break
                    try:  # a process still in it (a child the benchmark started and left
                        # running): to the hierarchy's root, which always takes processes
                        with open(os.path.join(path, "cgroup.procs")) as fh:
                            strays = [int(line) for line in fh if line.strip()]
                    except OSError:
                        strays = []
                    for pid in strays:
                        self._move_back(pid, "/")
                    time.sleep(0.01)
            else:
                self.cleanup_errors.append(f"removing {path}: still busy")
        if self.root_cpu_enabled:
            try:
                with open(os.path.join(self.mount, "cgroup.subtree_control"), "w") as fh:
                    fh.write("-cpu")
            except OSError as exc:  # another user of it appeared meanwhile: leave it on
                self.cleanup_errors.append(f"disabling the root's cpu controller: {exc}")


@contextlib.contextmanager
def separate(name: str):
    """A CpuGroups named `name` (one directory in the cpu hierarchy), this process in its runtime
    group for the duration. With no usable hierarchy, or one that refuses (a read-only mount, no
    permission), a CpuGroups with `base` None that moves nothing and says why in `how`."""
    mount, version = _hierarchy()
    groups = CpuGroups(mount, version, name)
    if mount is not None:
        try:
            groups._setup()
        except BaseException as exc:
            groups._teardown()
            if not isinstance(exc, OSError):
                raise
            groups = CpuGroups(None, f"not used: {exc}", name)
    try:
        yield groups
    finally:
        if groups.base:
            groups._teardown()
