"""Python side of the xdpcni datapath: load/pin/attach the eBPF programs, endpoint tables, stats.

Importing the package makes `pyroute2` importable without its package __init__ (which imports
every netlink family and asyncio, ~130 ms): the CNI's per-call modules import only pyroute2's
message classes, and anyone asking the package for more (`from pyroute2 import IPRoute`) gets all
of it then (datapath/pyroute2_light.py). No-op where pyroute2 is already imported.
"""

from . import pyroute2_light

pyroute2_light.install()
