"""The datapath needs no process. Kill the loader: traffic flows. Load again
(upgrade) under traffic: endpoints stay and no packet is lost (counted in the pod's kernel)."""

import os
import signal
import subprocess
import threading
import time

import pytest

from datapath.endpoints import EndpointTable
from datapath.loader import NodeState
from sim.frames import wire_to
from sim.packets import packet_socket, send_frames, snmp
from sim.topology import VENV_BIN

pytestmark = pytest.mark.kernel


def _udp_noports(pod) -> int:
    return snmp(pod.ns)["UdpNoPorts"]


def _deliver(c, node, pod, n) -> int:
    before = _udp_noports(pod)
    send_frames(c.wire, "br0", [wire_to(c, node, pod.ip4)], count=n)
    deadline = time.monotonic() + 2
    while _udp_noports(pod) - before < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return _udp_noports(pod) - before


def test_killing_the_loader_does_not_stop_traffic(node_env, mode):
    c = node_env
    node = c.nodes[0]
    proc = subprocess.Popen(
        [
            "nsenter",
            f"--net=/var/run/netns/{node.ns}",
            os.path.join(VENV_BIN, "xdpcnictl"),
            "--root",
            node.pin_root,
            "load",
            "--nic",
            node.nic,
            "--mode",
            mode,
            "--wait",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line or line.strip() == "ready":
                break
            lines.append(line)
        assert proc.poll() is None, "".join(lines)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for pod in node.pods:
        assert _deliver(c, node, pod, 30) == 30


def test_reload_keeps_endpoints_and_loses_no_packet(node_env, mode):
    c = node_env
    node = c.nodes[0]
    pod = node.pods[0]
    with EndpointTable(node.pin_root) as t:
        before_eps = [e.as_dict() for e in t.list()]
    ids_before = NodeState.read(node.pin_root).prog_ids
    frame = bytes(wire_to(c, node, pod.ip4))
    sent = 0
    first = last = 0.0
    stop = threading.Event()
    sock = packet_socket(c.wire, "br0")

    def sender():
        nonlocal sent, first, last
        first = time.monotonic()
        while not stop.is_set():
            sock.send(frame)
            sent += 1
            last = time.monotonic()
            time.sleep(0.001)

    rx_before = _udp_noports(pod)
    th = threading.Thread(target=sender)
    th.start()
    try:
        time.sleep(0.3)
        t_load = time.monotonic()
        node.load(mode)  # full reload: compile, replace pins, atomically replace attachments
        t_loaded = time.monotonic()
        time.sleep(0.3)
    finally:
        stop.set()
        th.join()
        sock.close()
    deadline = time.monotonic() + 3
    while _udp_noports(pod) - rx_before < sent and time.monotonic() < deadline:
        time.sleep(0.05)
    received = _udp_noports(pod) - rx_before
    assert first < t_load and last > t_loaded and sent > 100, "traffic did not span the reload"
    assert received == sent, f"lost {sent - received} of {sent} packets across the reload"
    with EndpointTable(node.pin_root) as t:
        assert [e.as_dict() for e in t.list()] == before_eps
    ids_after = NodeState.read(node.pin_root).prog_ids
    assert all(ids_after[k] != ids_before[k] for k in ids_before), "programs were not replaced"
