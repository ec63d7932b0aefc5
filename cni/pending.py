"""Veth deletions a node agent still owes: DEL answers before the kernel has deleted the pod's veth
(which waits out RCU grace periods, ~35-40 ms here), so the agent notes each owed deletion here
first and removes the note once the link is gone.

If the agent dies in between, the note names the link exactly (ifindex, name and ownership mark:
ifindexes are allocated cyclically, so a same-named veth made later for the same attachment has
another ifindex and is never touched) and whoever comes next finishes it: the agent when it
starts, and every in-process DEL. In Kubernetes the runtime also removes the pod's network
namespace right after DEL, which takes the pair with it anyway.

Layout: /run/xdpcni/<pin root key>.pending-deletes/<pid>.<started>.<ifindex>  (JSON {"ifname",
"mark"}). The owner is in the name (`started`: its start time in clock ticks since boot,
/proc/PID/stat field 22, so a recycled pid is not taken for the owner): a sweep reads only the
notes of owners that are gone.
"""

from __future__ import annotations

import contextlib
import json
import os

from datapath.pins import RUN_DIR, PinLayout
from datapath.rtnl import Rtnl

from . import plumbing
from .locking import write_atomic


def _started(pid: int) -> int | None:
    """The process's start time (clock ticks after boot), None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces: split after its end
    fields = stat[stat.rfind(b")") + 2 :].split()
    return int(fields[19])  # field 22 of the whole line


_ME: list = [0, None]  # this process: [pid, start time]


class PendingDeletes:
    def __init__(self, root: str):
        self.root = root
        self.dir = os.path.join(RUN_DIR, PinLayout(root).key + ".pending-deletes")

    def add(self, ifindex: int, ifname: str, mark: str) -> str:
        """Note that this process will delete link `ifindex`; returns the note's path."""
        me = os.getpid()
        if _ME[0] != me:
            _ME[:] = [me, _started(me) or 0]
        path = os.path.join(self.dir, f"{me}.{_ME[1]}.{ifindex}")
        note = json.dumps({"ifname": ifname, "mark": mark})
        for _ in range(5):
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            try:
                write_atomic(path, note)
                return path
            except FileNotFoundError:
                continue  # the directory was removed as empty meanwhile (finish_orphans)
        write_atomic(path, note)
        return path

    @staticmethod
    def done(path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    @staticmethod
    def disown(path: str) -> str:
        """Make a note an orphan (its owner failed to finish it; pid 0 is nobody): the next DEL
        or agent start finishes it. Returns its new path."""
        d, name = os.path.split(path)
        new = os.path.join(d, "0.0." + name.rsplit(".", 1)[-1])
        with contextlib.suppress(OSError):
            os.rename(path, new)
        return new

    @staticmethod
    def delete(ifindex: int, ifname: str, mark: str) -> bool:
        """Delete the link if it is still the one noted (index, name and mark); False if gone."""
        with Rtnl() as nl:
            if plumbing.find_host_link(nl, ifname, mark) != ifindex:
                return False
            return plumbing.delete_link_index(nl, ifindex)

    def _forget_iface(self, ifindex: int) -> None:
        """The veth's own map entries (kept while its deletion was pending), once no link has
        that ifindex."""
        from datapath.endpoints import EndpointTable
        from datapath.maps import DatapathNotLoaded

        if not PinLayout(self.root).is_loaded():
            return
        with Rtnl() as nl:
            if nl.get_link(index=ifindex) is not None:
                return
        with contextlib.suppress(DatapathNotLoaded), EndpointTable(self.root) as table:
            table.remove(ifindex)

    def orphans(self) -> list[tuple[str, int, str, str]]:
        """Notes whose owner is gone: (path, ifindex, ifname, mark). Notes of live owners are not
        read; unreadable notes are removed (they name nothing this code would act on)."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        alive: dict[tuple[int, int], bool] = {}
        out = []
        for name in names:
            parts = name.split(".")
            if len(parts) != 3 or not all(p.isdigit() for p in parts):
                continue  # a temporary of write_atomic
            pid, started, ifindex = (int(p) for p in parts)
            if (pid, started) not in alive:
                alive[(pid, started)] = pid > 0 and _started(pid) == started
            if alive[(pid, started)]:
                continue  # its owner will finish it
            path = os.path.join(self.dir, name)
            try:
                with open(path, "rb") as fh:
                    note = json.loads(fh.read(4096))
                ifname, mark = note["ifname"], note["mark"]
                if not (isinstance(ifname, str) and isinstance(mark, str)):
                    raise ValueError(name)
            except FileNotFoundError:
                continue
            except (OSError, ValueError, KeyError, TypeError, RecursionError):
                self.done(path)
                continue
            out.append((path, ifindex, ifname, mark))
        return out

    def finish_orphans(self) -> int:
        """Delete the links of notes whose owner died; returns how many were still there."""
        n = 0
        for path, ifindex, ifname, mark in self.orphans():
            n += self.delete(ifindex, ifname, mark)
            self._forget_iface(ifindex)
            self.done(path)
        with contextlib.suppress(OSError):
            os.rmdir(self.dir)  # only when empty
        return n
