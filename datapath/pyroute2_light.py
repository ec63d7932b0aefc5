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
"""

from __future__ import annotations

import importlib
import importlib.util
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


def complete() -> bool:
    """True when pyroute2's own __init__ has run in this process (for tests)."""
    module = sys.modules.get("pyroute2")
    return module is not None and "__getattr__" not in module.__dict__
