"""The BCC fallback build (XDPCNI_TOOLCHAIN=bcc: what the loader uses where clang objects cannot
be built) still forwards, shares the same pinned maps, and cannot ask conntrack, so under
`netfilter: respect` it sends every pod packet to the stack (counted pass_conntrack): slower,
never wrong. A reload switches toolchains in place."""

from __future__ import annotations

import os

import pytest

from datapath.abi import Reason
from datapath.loader import NodeState
from datapath.netns import entered
from datapath.stats import Stats
from sim.packets import forwarded, udp_exchange
from sim.topology import VENV_BIN, WIRE_HOST_V4, Cluster, run_in

pytestmark = pytest.mark.kernel


def _load(node, toolchain: str, netfilter: str, mode: str = "tc"):
    env = {**os.environ, "XDPCNI_TOOLCHAIN": toolchain}
    return run_in(
        node.ns,
        os.path.join(VENV_BIN, "xdpcnictl"),
        "--root",
        node.pin_root,
        "load",
        "--nic",
        node.nic,
        "--mode",
        mode,
        "--netfilter",
        netfilter,
        env=env,
        timeout=180,
    )


def _counts(node, pod):
    with Stats(node.pin_root) as st:
        return st.packets(pod.ep.ep_id, Reason.FWD_POD_TO_NIC), st.packets(
            pod.ep.ep_id, Reason.PASS_CONNTRACK
        )


def test_bcc_build_forwards_and_its_gate_is_stack_only():
    cluster = Cluster(1)
    try:
        node = cluster.nodes[0]
        _load(node, "bcc", "bypass")
        with entered(node.ns):
            assert NodeState.read(node.pin_root).toolchain == "bcc"
        pod = node.add_pod()
        fast0, ct0 = _counts(node, pod)
        fwd0 = forwarded(node.ns)
        assert udp_exchange(pod.ns, cluster.wire, WIRE_HOST_V4, n=10, port=47500) == 10
        fast1, ct1 = _counts(node, pod)
        assert fast1 - fast0 == 10 and forwarded(node.ns) == fwd0

        _load(node, "bcc", "respect")  # reload in place: same maps, gate on
        assert udp_exchange(pod.ns, cluster.wire, WIRE_HOST_V4, n=10, port=47501) == 10
        fast2, ct2 = _counts(node, pod)
        assert fast2 == fast1 and ct2 - ct1 == 10, "the BCC gate must send everything to the stack"
        assert forwarded(node.ns) - fwd0 == 10

        res = _load(node, "clang", "bypass")  # and back to the clang build, in place
        assert "clang/libbpf objects" in res.stdout
        with entered(node.ns):
            assert NodeState.read(node.pin_root).toolchain == "clang"
        assert udp_exchange(pod.ns, cluster.wire, WIRE_HOST_V4, n=10, port=47502) == 10
        assert _counts(node, pod)[0] - fast2 == 10
    finally:
        cluster.teardown()
