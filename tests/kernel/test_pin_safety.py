"""Pins and node state belong to root alone: a pin root a local user could have made first is
refused with a clear error (never loaded into, never read by the CNI), bpffs is mounted 0700, and
two pin roots never share a state or lock file."""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile

import pytest
from pyroute2 import IPRoute

from datapath.maps import PinnedMap
from datapath.netns import entered
from datapath.pins import PinLayout, UnsafePath, ensure_bpffs
from sim.topology import Cluster

pytestmark = pytest.mark.kernel
NOBODY = 65534


@pytest.fixture
def node():
    cluster = Cluster(1)
    try:
        yield cluster.nodes[0]
    finally:
        cluster.teardown()


def _nic_has_programs(node) -> bool:
    with entered(node.ns), IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=node.nic)[0]
        xdp = ipr.get_links(idx)[0].get_attr("IFLA_XDP")
        attached = xdp is not None and (xdp.get_attr("IFLA_XDP_ATTACHED") or 0) != 0
        try:
            filters = ipr.get_filters(index=idx, parent=0xFFFFFFF2)  # clsact ingress
        except Exception:
            filters = []
    return attached or bool(filters)


@pytest.mark.parametrize("how", ["other-owner", "group-writable", "parent-other-owner"])
def test_a_squatted_pin_root_is_refused_and_left_alone(node, how):
    target = node.pin_root if how != "parent-other-owner" else os.path.dirname(node.pin_root)
    os.makedirs(node.pin_root, mode=0o700, exist_ok=True)
    if how == "group-writable":
        os.chmod(target, 0o770)
    else:
        os.chown(target, NOBODY, NOBODY)
    try:
        res = node.ctl("load", "--nic", node.nic, "--mode", "tc", check=False)
        assert res.returncode != 0
        assert f"{target} is owned by uid" in res.stderr and "mode=0700" in res.stderr, res.stderr
        assert not _nic_has_programs(node), "something was attached despite the refusal"
        assert os.path.isdir(node.pin_root) and os.listdir(node.pin_root) == []
    finally:
        os.chown(target, 0, 0)
        os.chmod(target, 0o700)


def test_the_cni_side_refuses_maps_in_a_squatted_root(node):
    node.load("tc")
    maps_dir = PinLayout(node.pin_root).maps_dir
    os.chown(maps_dir, NOBODY, NOBODY)
    try:
        with pytest.raises(UnsafePath, match="owned by uid 65534"):
            PinnedMap(PinLayout(node.pin_root), "endpoints")
    finally:
        os.chown(maps_dir, 0, 0)


def test_bpffs_is_mounted_0700():
    mnt = tempfile.mkdtemp(prefix="xdpcni-bpffs-")
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        assert ensure_bpffs(mnt) is True
        assert os.stat(mnt).st_mode & 0o777 == 0o700  # (bpffs keeps the sticky bit)
    finally:
        libc.umount2(mnt.encode(), 0)
        os.rmdir(mnt)


def test_pin_roots_that_differ_by_slash_and_underscore_keep_their_own_state():
    """/X/c/d and /X/c_d once shared one state file: unloading the first made unloading the second
    leave its NIC program attached. Each root now has its own state (and lock, claims) files."""
    cluster = Cluster(2)
    base = os.path.dirname(cluster.nodes[0].pin_root)
    try:
        a, b = cluster.nodes
        a.pin_root = f"{base}/{cluster.prefix}x/c/d"
        b.pin_root = f"{base}/{cluster.prefix}x/c_d"
        a.load("tc")
        b.load("tc")
        a.unload()
        assert _nic_has_programs(b), "unloading the other root touched this one"
        b.unload()
        assert not _nic_has_programs(b), "unload left the NIC program attached"
    finally:
        cluster.teardown()
        shutil.rmtree(f"{base}/{cluster.prefix}x", ignore_errors=True)
