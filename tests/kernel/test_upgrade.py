"""Upgrades: pinned maps carry their layout (type, key and value size, entries) and an ABI
version (node_cfg.abi_version). A load that finds pins of another layout or version sets them
aside, loads the new programs with maps of their own layout, refills them from the live pods and
removes the old pins once the new programs are attached: traffic keeps flowing throughout (the
stack carries it for the moment the new maps are empty) and ends on the fast path."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from datapath import abi, libbpf
from datapath.abi import Reason
from datapath.endpoints import EndpointTable
from datapath.maps import PinnedMap
from datapath.netns import entered
from datapath.pins import PinLayout
from datapath.stats import Stats
from sim.topology import Cluster

pytestmark = pytest.mark.kernel


@pytest.fixture
def node(mode):
    cluster = Cluster(1)
    try:
        n = cluster.nodes[0]
        n.load(mode)
        n.add_pod()
        yield n
    finally:
        cluster.teardown()


class Flow:
    """UDP from the wire host to the pod every 5 ms while it runs; counts what arrives."""

    def __init__(self, node, port: int):
        pod = node.pods[0]
        with entered(pod.ns):
            self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.rx.bind((pod.ip4, port))
        with entered(node.cluster.wire):
            self.tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.settimeout(0.05)
        self.dst, self.sent, self.got, self.stop = (pod.ip4, port), 0, 0, threading.Event()
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._send, self._recv)]
        for t in self.threads:
            t.start()

    def _send(self):
        while not self.stop.is_set():
            self.tx.sendto(b"u", self.dst)
            self.sent += 1
            time.sleep(0.005)

    def _recv(self):
        while not self.stop.is_set() or self.got < self.sent:
            try:
                self.rx.recv(16)
                self.got += 1
            except TimeoutError:
                if self.stop.is_set():
                    return

    def finish(self) -> tuple[int, int]:
        self.stop.set()
        for t in self.threads:
            t.join(5)
        self.rx.close()
        self.tx.close()
        return self.sent, self.got


def _on_fast_path(node) -> bool:
    pod = node.pods[0]
    with entered(node.ns), EndpointTable(node.pin_root) as table:
        pod.ep = next(e for e in table.list() if e.ifindex == pod.link.host_ifindex)
    with Stats(node.pin_root) as st:
        before = st.packets(pod.ep.ep_id, Reason.FWD_NIC_TO_POD)
    flow = Flow(node, 47400)
    time.sleep(0.3)
    sent, got = flow.finish()
    with Stats(node.pin_root) as st:
        fast = st.packets(pod.ep.ep_id, Reason.FWD_NIC_TO_POD) - before
    return got == sent and fast == sent


def _pin_old_layout_map(node, name: str, map_type: int, key: int, value: int, entries: int) -> None:
    path = PinLayout(node.pin_root).map(name)
    with entered(node.ns):
        os.unlink(path)  # the running programs keep their maps; the pin now names an "old" one
        fd = libbpf.map_create(map_type, name, key, value, entries)
        try:
            libbpf.obj_pin(fd, path)
        finally:
            os.close(fd)


def _load_under_traffic(node, mode: str):
    flow = Flow(node, 47401)
    time.sleep(0.1)
    res = node.load(mode)
    time.sleep(0.1)
    sent, got = flow.finish()
    assert got == sent, f"{sent - got} of {sent} datagrams lost during the upgrade"
    return res


def test_pins_of_an_older_abi_version_are_migrated_under_traffic(node, mode):
    assert _on_fast_path(node)
    layout = PinLayout(node.pin_root)
    with entered(node.ns), PinnedMap(layout, "node_cfg") as m:
        cfg = m.get(0)
        assert cfg.abi_version == abi.ABI_VERSION
        cfg.abi_version = 0  # what every loader before versioning wrote
        m.put(0, cfg)
    res = _load_under_traffic(node, mode)
    assert "ABI version 0" in res.stdout and "migrating" in res.stdout and "restored 1" in res.stdout, (
        res.stdout
    )
    assert not [f for f in os.listdir(layout.maps_dir) if f.endswith("_old")]
    assert _on_fast_path(node)


def test_maps_of_another_layout_are_migrated_under_traffic(node, mode):
    assert _on_fast_path(node)
    # as an older xdpcni would have left them: a smaller endpoint value, fewer reasons per endpoint
    _pin_old_layout_map(node, "endpoints", libbpf.BPF_MAP_TYPE_HASH, 20, 20, 2 * abi.MAX_ENDPOINTS)
    _pin_old_layout_map(node, "counters", libbpf.BPF_MAP_TYPE_PERCPU_ARRAY, 4, 16, abi.MAX_ENDPOINTS * 16)
    res = _load_under_traffic(node, mode)
    assert res.stdout.count("has another layout") == 2, res.stdout
    layout = PinLayout(node.pin_root)
    assert not [f for f in os.listdir(layout.maps_dir) if f.endswith("_old")]
    with entered(node.ns):
        fd = libbpf.obj_get(layout.map("endpoints"))
        try:
            assert libbpf.map_info(fd).value_size == 24
        finally:
            os.close(fd)
    assert _on_fast_path(node)
