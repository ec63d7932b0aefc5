"""Shared fixtures. Kernel and e2e tests need root and a kernel with BPF; without them they are
reported as skipped with the reason, never as passed."""

from __future__ import annotations

import os
import shutil

import pytest


def kernel_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, BPF)"
    if not os.path.exists("/sys/kernel/btf/vmlinux") and not os.path.exists(
        "/proc/sys/net/core/bpf_jit_enable"
    ):
        return "kernel without BPF support"
    if shutil.which("nsenter") is None:
        return "nsenter (util-linux) missing: run make setup"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "BCC not importable: run make setup"
    return None


def pytest_collection_modifyitems(config, items):
    reason = kernel_skip_reason()
    if reason is None:
        return
    for item in items:
        if "kernel" in item.keywords or "e2e" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(params=["xdp", "tc"], scope="module")
def mode(request):
    """Every datapath behaviour is checked in both NIC modes."""
    return request.param


@pytest.fixture(scope="module")
def node_env(mode):
    """One simulated node (datapath loaded in `mode`) with two pods, torn down even on failure."""
    from sim.topology import Cluster

    cluster = Cluster(1)
    try:
        node = cluster.nodes[0]
        node.load(mode)
        node.add_pod()
        node.add_pod()
        yield cluster
    finally:
        cluster.teardown()
