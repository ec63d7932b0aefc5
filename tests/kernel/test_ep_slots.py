"""Endpoint ids from the `ep_slots` map (datapath/endpoints.py EndpointSlots): ADD takes a free id
without reading every endpoint (issue 12: ADD at 1000 endpoints as fast as at 10), ids are reused
and never given twice, ids leaked by a killed writer come back, and a datapath loaded before
ep_slots gets them, filled from its live endpoints, at the next load."""

from __future__ import annotations

import ctypes as ct
import os

import pytest
from pyroute2 import IPRoute

from datapath import abi, libbpf
from datapath.endpoints import Endpoint, EndpointSlots, EndpointTable, iface_ep_ids
from datapath.netns import entered
from datapath.pins import PinLayout
from sim.topology import Cluster

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def node():
    """One node (TC mode: ids do not depend on the NIC mode) with one pod, torn down even on failure."""
    cluster = Cluster(1)
    try:
        n = cluster.nodes[0]
        n.load("tc")
        n.add_pod()
        yield n
    finally:
        cluster.teardown()


@pytest.fixture
def links(node):
    """Veth pairs in the node's namespace to hang fake endpoints on (a DEVMAP entry needs a real
    device); made(k) makes k more and returns their host ifindexes. Removed, with their map
    entries, at the end."""
    made: list[int] = []

    def make(k: int) -> list[int]:
        out = []
        with entered(node.ns), IPRoute() as ipr:
            for _ in range(k):
                i = len(made)
                ipr.link(
                    "add",
                    ifname=f"xs{os.getpid() % 10000}h{i}",
                    kind="veth",
                    peer=f"xs{os.getpid() % 10000}p{i}",
                )
                idx = ipr.link_lookup(ifname=f"xs{os.getpid() % 10000}h{i}")[0]
                made.append(idx)
                out.append(idx)
        return out

    yield make
    with entered(node.ns):
        with EndpointTable(node.pin_root) as t:
            for idx in made:
                t.remove(idx, [_ip(idx)])
        with IPRoute() as ipr:
            for idx in made:
                try:
                    ipr.link("del", index=idx)
                except Exception:
                    pass


def _ip(ifindex: int) -> str:
    return f"198.18.{(ifindex >> 8) & 0xFF}.{ifindex & 0xFF}"


def _add(node, table: EndpointTable, ifindex: int) -> int:
    return table.add(Endpoint(ifindex, "02:00:00:00:00:01", "02:00:00:00:00:02", [_ip(ifindex)])).ep_id


def _slots_match_ifaces(table: EndpointTable) -> None:
    owners = iface_ep_ids(table.ifaces)
    assert owners, "the pod's endpoint should be there"
    for ep_id in range(1, abi.MAX_ENDPOINTS):
        assert table.slots.owner(ep_id) == owners.get(ep_id, 0), ep_id


def test_add_takes_an_id_without_reading_every_endpoint(node, links, monkeypatch):
    """The old ADD read the whole ifaces map (one batch) for a free id: O(endpoints) per ADD."""
    (idx,) = links(1)

    def no_scan(*a, **k):
        raise AssertionError("ADD read every endpoint to find a free id")

    with entered(node.ns), EndpointTable(node.pin_root) as t:
        monkeypatch.setattr(libbpf, "map_items_batch_raw", no_scan)
        ep_id = _add(node, t, idx)
        monkeypatch.undo()
        assert t.ifaces.get(idx).ep_id == ep_id
        assert t.slots.owner(ep_id) == idx
        _slots_match_ifaces(t)


def test_ids_are_reused_and_never_given_twice(node, links):
    a, b, c, d = links(4)
    with entered(node.ns), EndpointTable(node.pin_root) as t:
        ids = [_add(node, t, i) for i in (a, b, c)]
        assert len(set(ids)) == 3
        assert _add(node, t, b) == ids[1]  # a refresh keeps its id
        t.remove(b, [_ip(b)])
        assert t.slots.owner(ids[1]) == 0
        lowest_free = min(set(range(1, abi.MAX_ENDPOINTS)) - set(iface_ep_ids(t.ifaces)))
        assert lowest_free <= ids[1]
        assert _add(node, t, d) == lowest_free
        _slots_match_ifaces(t)
        live = iface_ep_ids(t.ifaces)
        assert len(live) == len(set(live)) == len(live.values())


def test_slots_leaked_by_a_killed_writer_come_back(node, links):
    """A process killed between taking a slot and writing `ifaces` (or between deleting from
    `ifaces` and freeing the slot) leaves a slot taken by nobody: when the slots say every id is
    taken, ADD re-syncs them from `ifaces` and gets one."""
    (idx,) = links(1)
    with entered(node.ns), EndpointTable(node.pin_root) as t:
        live = iface_ep_ids(t.ifaces)
        for ep_id in range(1, abi.MAX_ENDPOINTS):
            if ep_id not in live:
                t.slots.take(ep_id, 0xDEAD)  # leaked, owner long gone
        assert t.slots.free_id() is None
        ep_id = _add(node, t, idx)
        assert ep_id not in live
        _slots_match_ifaces(t)


def test_free_id_is_a_whole_free_slot_not_zero_bytes_across_two(node):
    """Values are 8 bytes; an owner like 0x01000000 (bytes 00 00 00 01) after one like 1 (01 00 ...)
    makes a run of zero bytes that is no free slot."""
    fd = libbpf.map_create(
        libbpf.BPF_MAP_TYPE_ARRAY, "ep_slots_test", 4, 8, abi.MAX_ENDPOINTS, libbpf.BPF_F_MMAPABLE
    )
    try:
        slots = EndpointSlots(fd)
        try:
            slots.take(1, 1)
            slots.take(2, 0x01000000)
            slots.take(3, 0x100)
            assert slots.free_id() == 4
            slots.take(2, 0)
            assert slots.free_id() == 2
            v = ct.c_uint64()
            assert libbpf.map_lookup(fd, ct.c_uint32(3), v) and v.value == 0x100  # the kernel's view
            slots.fill({5: 7, 0: 9, abi.MAX_ENDPOINTS: 1})  # id 0 and out-of-range ids are not slots
            assert slots.owner(5) == 7 and slots.owner(1) == 0 and slots.free_id() == 1
        finally:
            slots.close()
    finally:
        os.close(fd)


def test_a_datapath_loaded_before_ep_slots_gets_them_filled_at_load(node, links):
    """An xdpcni of before ep_slots left no such pin: its datapath does not count as loaded, ids
    are found by a scan meanwhile, and the next load makes the slots from the live endpoints; one
    made without BPF_F_MMAPABLE is replaced the same way."""
    layout = PinLayout(node.pin_root)
    (idx,) = links(1)
    with entered(node.ns), EndpointTable(node.pin_root) as t:
        pod_ids = iface_ep_ids(t.ifaces)
    os.unlink(layout.map("ep_slots"))
    assert not layout.is_loaded()
    with entered(node.ns), EndpointTable(node.pin_root) as t:
        assert t.slots is None
        ep_id = _add(node, t, idx)
        assert ep_id not in pod_ids
    node.load("tc")
    assert layout.is_loaded()
    with entered(node.ns), EndpointTable(node.pin_root) as t:
        assert t.slots.owner(ep_id) == idx
        _slots_match_ifaces(t)

    os.unlink(layout.map("ep_slots"))  # not mmapable: set aside and made again at load
    fd = libbpf.map_create(libbpf.BPF_MAP_TYPE_ARRAY, "ep_slots", 4, 8, abi.MAX_ENDPOINTS)
    try:
        libbpf.obj_pin(fd, layout.map("ep_slots"))
    finally:
        os.close(fd)
    node.load("tc")
    fd = libbpf.obj_get(layout.map("ep_slots"))
    try:
        assert libbpf.map_info(fd).map_flags & libbpf.BPF_F_MMAPABLE
    finally:
        os.close(fd)
    with entered(node.ns), EndpointTable(node.pin_root) as t:
        _slots_match_ifaces(t)
