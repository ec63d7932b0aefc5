"""e2e fixtures: a simulated node whose pods are made by running the installed `xdpcni`
executable the way a container runtime does (sim/cni_runtime.py)."""

from __future__ import annotations

import pytest

from sim.agent import NodeAgent
from sim.cni_runtime import Runtime
from sim.topology import Cluster


@pytest.fixture
def cluster():
    c = Cluster(1)
    try:
        yield c
    finally:
        c.teardown()


@pytest.fixture
def node(cluster):
    return cluster.nodes[0]


@pytest.fixture
def runtime(node):
    """xdpcni alone as the conflist; the datapath is loaded by the first ADD (TC mode)."""
    return Runtime.single(node, "tc")


@pytest.fixture
def agent(node):
    """`xdpcnictl agent` for the node (sim/agent.py), stopped by PID afterwards."""
    a = NodeAgent(node)
    try:
        yield a
    finally:
        a.stop()
