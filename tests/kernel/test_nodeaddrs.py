"""datapath/nodeaddrs.py: the node's own addresses as EP_F_NODE entries of the endpoints map, kept
in step with the namespace's addresses (the node agent runs sync() every second; it now reads
the addresses with one RTM_GETADDR dump over datapath/rtnl.py and the map with one batch read).
Checked in a namespace of the test's own, on an endpoints map pinned under a per-test root."""

from __future__ import annotations

import ctypes as ct
import os
import shutil
import subprocess
import uuid

import pytest

from datapath import abi, libbpf, nodeaddrs
from datapath.maps import PinnedMap
from datapath.netns import entered
from datapath.pins import PinLayout

pytestmark = pytest.mark.kernel


def _ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True)


@pytest.fixture
def node():
    """(namespace with a veth carrying 10.9.9.9/24, fd00:9::9/64 and 10.7.0.1 peer 10.7.0.2, pin
    root with an endpoints map)."""
    ns = f"xct-na-{uuid.uuid4().hex[:8]}"
    root = f"/sys/fs/bpf/xdpcni-test-na-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    fd = -1
    try:
        _ip(ns, "link", "set", "lo", "up")
        _ip(ns, "link", "add", "na0", "type", "veth", "peer", "name", "na1")
        _ip(ns, "link", "set", "na0", "up")
        _ip(ns, "addr", "add", "10.9.9.9/24", "dev", "na0")
        _ip(ns, "addr", "add", "fd00:9::9/64", "dev", "na0", "nodad")
        _ip(ns, "addr", "add", "10.7.0.1", "peer", "10.7.0.2", "dev", "na0")  # point-to-point
        layout = PinLayout(root)
        os.makedirs(layout.maps_dir, mode=0o700)
        kind, entries = abi.MAP_SPECS["endpoints"]
        fd = libbpf.map_create(
            kind, "endpoints", ct.sizeof(abi.EndpointKey), ct.sizeof(abi.EndpointInfo), entries
        )
        libbpf.obj_pin(fd, layout.map("endpoints"))
        yield ns, root
    finally:
        if fd >= 0:
            os.close(fd)
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run(["ip", "netns", "del", ns], check=False)


def _entries(root: str) -> dict[str, tuple[int, int]]:
    with PinnedMap(PinLayout(root), "endpoints") as eps:
        return {str(k.ip()): (v.ifindex, v.flags) for k, v in eps.items()}


def test_sync_keeps_the_node_entries_equal_to_the_namespaces_addresses(node):
    ns, root = node
    with PinnedMap(PinLayout(root), "endpoints") as eps:
        eps.put(abi.EndpointKey.for_ip("10.1.1.1"), abi.EndpointInfo(flags=abi.EP_F_NODE))  # stale
        eps.put(abi.EndpointKey.for_ip("10.9.9.10"), abi.EndpointInfo(ifindex=5))  # a pod's
    with entered(ns):
        # No lo, no link-local; the point-to-point address's own end, not its peer.
        assert nodeaddrs.node_addresses() == {"10.9.9.9", "fd00:9::9", "10.7.0.1"}
        assert nodeaddrs.sync(root) == (3, 1)
        assert _entries(root) == {
            "10.9.9.9": (0, abi.EP_F_NODE),
            "fd00:9::9": (0, abi.EP_F_NODE),
            "10.7.0.1": (0, abi.EP_F_NODE),
            "10.9.9.10": (5, 0),
        }
        assert nodeaddrs.sync(root) == (0, 0)  # in step: nothing written
        _ip(ns, "addr", "add", "10.9.9.10/32", "dev", "na0")  # a pod's address on the node too
        _ip(ns, "addr", "del", "10.9.9.9/24", "dev", "na0")
        assert nodeaddrs.sync(root) == (0, 1)
        assert _entries(root) == {  # the pod's entry never shadowed
            "fd00:9::9": (0, abi.EP_F_NODE),
            "10.7.0.1": (0, abi.EP_F_NODE),
            "10.9.9.10": (5, 0),
        }
