"""pyroute2's message classes without its package `__init__`: what the per-call CNI path imports.

`import pyroute2.netlink.rtnl.ifinfmsg` first runs `pyroute2/__init__.py`, which eagerly imports
every family pyroute2 supports (IPRoute and its asyncio core, NDB, IPDB, conntrack, ipset, ipvs,
nl80211, devlink, ...): ~130 ms on this machine, paid by every CNI call that runs in-process (no
node agent). ADD and DEL need only the rtnetlink message classes (datapath/rtnl.py), ~35 ms.

install() registers `pyroute2` in sys.modules as the real package (same spec, same __path__)
whose `__init__` has not run yet, so `import pyroute2.netlink...` loads just those submodules.
A submodule asked for by name (`from pyroute2 import config`, as pyroute2's own modules do) is
imported alone; the first other attribute anyone asks of the package (`from pyroute2 import
IPRoute`, `pyroute2.NDB`) runs the real `__init__` in that same module object (PEP 562 module
__getattr__), so every other user of pyroute2 in the process sees the complete package.
Nothing changes when pyroute2 is already imported (the agent and the tools import it whole).

install() also registers tcmsg's qdisc and classifier modules other than clsact and bpf (the two
kinds we encode) as _Deferred: their code runs at the first lookup of one of their attributes,
e.g. when a dump of another kind is decoded (~15 ms less for an in-process verb).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
import threading
import types

_LOCK = threading.RLock()


def install() -> None:
    """Make `pyroute2` importable without its __init__ (idempotent; no-op once it is imported)."""
    with _LOCK:
        if "pyroute2" in sys.modules:
            return
        spec = importlib.util.find_spec("pyroute2")
        if spec is None or spec.loader is None or not spec.submodule_search_locations:
            return  # not installed as a regular package: the plain import reports it
        module = types.ModuleType("pyroute2")
        module.__spec__ = spec
        module.__file__ = spec.origin
        module.__path__ = list(spec.submodule_search_locations)
        module.__package__ = "pyroute2"
        module.__loader__ = spec.loader
        state = {"loading": None}  # the thread running the real __init__, while it runs

        def __getattr__(name: str):
            # Dunder lookups (copy, pickle, inspect probing the module) must not trigger the load.
            if name.startswith("__") and name.endswith("__"):
                raise AttributeError(name)
            # `from pyroute2 import config` inside pyroute2 names a submodule: import just that.
            if importlib.util.find_spec(f"pyroute2.{name}") is not None:
                return importlib.import_module(f"pyroute2.{name}")
            with _LOCK:  # other threads wait here until the real __init__ has run
                if "__getattr__" in module.__dict__ and state["loading"] != threading.get_ident():
                    state["loading"] = threading.get_ident()
                    try:
                        spec.loader.exec_module(module)
                    finally:
                        state["loading"] = None
                    # Only once it ran: a failed __init__ is run again (and raises again) on the
                    # next lookup instead of leaving a half-made package behind.
                    module.__dict__.pop("__getattr__", None)
            try:
                return module.__dict__[name]
            except KeyError:
                raise AttributeError(f"module 'pyroute2' has no attribute {name!r}") from None

        module.__getattr__ = __getattr__
        sys.modules["pyroute2"] = module
        tc_dir = [os.path.join(module.__path__[0], "netlink", "rtnl", "tcmsg")]
        for name in _DEFERRED_TC_PLUGINS:
            _defer(f"pyroute2.netlink.rtnl.tcmsg.{name}", tc_dir)


# tcmsg's package imports a module per qdisc and classifier it knows and keeps them in its
# `plugins` table, used only when a message of that kind is encoded or decoded. We encode two
# (clsact, bpf); cls_basic alone pulls in rt_files, dataclasses and pathlib (~14 ms of the
# in-process call's ~21 ms for tcmsg). These run at their first use instead.
_DEFERRED_TC_PLUGINS = (
    "cls_basic",
    "cls_flow",
    "cls_fw",
    "cls_matchall",
    "cls_u32",
    "sched_cake",
    "sched_choke",
    "sched_codel",
    "sched_drr",
    "sched_fq_codel",
    "sched_hfsc",
    "sched_htb",
    "sched_ingress",
    "sched_netem",
    "sched_pfifo",
    "sched_pfifo_fast",
    "sched_plug",
    "sched_sfq",
    "sched_tbf",
    "sched_template",
)


class _Deferred(types.ModuleType):
    """A module registered under its name whose code runs at the first lookup of an attribute it
    does not have yet (under _LOCK: a thread asking meanwhile waits for the whole module; a
    failed run is retried at the next lookup). Dunder lookups never run it."""

    def __getattr__(self, name: str):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        d = self.__dict__
        with _LOCK:
            if d.get("_xdpcni_deferred"):
                d["_xdpcni_deferred"] = False  # a lookup from the module's own code: plain miss
                try:
                    self.__spec__.loader.exec_module(self)
                except BaseException:
                    d["_xdpcni_deferred"] = True
                    raise
                del d["_xdpcni_deferred"]
                self.__class__ = types.ModuleType
        try:
            return d[name]
        except KeyError:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}") from None


def _defer(fullname: str, path: list[str]) -> None:
    """Register `fullname`, found in `path` (its package's directory: the package itself is not
    imported), as a _Deferred module."""
    if fullname in sys.modules:
        return
    spec = importlib.machinery.PathFinder.find_spec(fullname, path)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    module.__class__ = _Deferred
    module.__dict__["_xdpcni_deferred"] = True
    sys.modules[fullname] = module


def complete() -> bool:
    """True when pyroute2's own __init__ has run in this process (for tests)."""
    module = sys.modules.get("pyroute2")
    return module is not None and "__getattr__" not in module.__dict__
