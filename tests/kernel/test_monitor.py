"""`xdpcnictl monitor` and `xdpcnictl metrics` against a loaded node with real traffic.

Monitor: with sampling 1 in 10 a spoofed frame from a pod and 100 frames from the wire to a pod
give the drop (with the pod's identity and reason) and exactly 10 forwards (the sender is pinned to
one CPU, and the sampling sequence is per CPU and hook); with sampling 0 only the drop. Metrics:
a scrape over HTTP parses as Prometheus exposition and equals `xdpcnictl stats --json`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from contextlib import contextmanager

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pyroute2 import IPRoute
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from cni.plumbing import NUD_PERMANENT
from datapath import abi
from datapath.maps import PinnedMap
from datapath.netns import entered
from datapath.pins import PinLayout
from node import pods
from sim.frames import wire_to
from sim.packets import send_frames
from sim.topology import VENV_BIN, WIRE_HOST_V4, WIRE_HOST_V6

pytestmark = pytest.mark.kernel

SPOOF_SRC = "198.19.0.77"
METRICS_PORT = 19465


@pytest.fixture(scope="module")
def env(node_env):
    """The node_env cluster with a quiet wire: permanent neighbours (no ARP/ND into the NIC) and
    no IPv6 housekeeping from the wire host, so the NIC programs see only the test's frames."""
    c = node_env
    node = c.nodes[0]
    with IPRoute(netns=f"/var/run/netns/{node.ns}") as ipr:
        idx = ipr.link_lookup(ifname=node.nic)[0]
        for ip in (WIRE_HOST_V4, WIRE_HOST_V6):
            ipr.neigh("replace", dst=ip, lladdr=c.wire_mac, ifindex=idx, state=NUD_PERMANENT)
    with entered(c.wire):
        for key in ("accept_ra", "router_solicitations"):
            with open(f"/proc/sys/net/ipv6/conf/br0/{key}", "w") as fh:
                fh.write("0")
    return c


@contextmanager
def _pinned_to_one_cpu():
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(old)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


def _ctl_popen(node, *args) -> subprocess.Popen:
    return subprocess.Popen(
        [
            "nsenter",
            f"--net=/var/run/netns/{node.ns}",
            os.path.join(VENV_BIN, "xdpcnictl"),
            "--root",
            node.pin_root,
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(proc: subprocess.Popen) -> tuple[str, str]:
    """SIGTERM (clean stop) and collect; kill only if it does not stop."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail("did not stop on SIGTERM")
    return out, err


def _monitor_run(c, sample: int) -> tuple[list[dict], int]:
    node = c.nodes[0]
    a = node.pods[0]
    args = ["monitor", "--json"] + (["--sample", str(sample)] if sample else [])
    proc = _ctl_popen(node, *args)
    try:
        ready = proc.stderr.readline()
        assert "listening" in ready, ready + proc.stderr.read()
        spoof = (
            Ether(src=a.link.pod_mac, dst=a.link.host_mac)
            / IP(src=SPOOF_SRC, dst=WIRE_HOST_V4, ttl=64)
            / UDP(sport=9, dport=40009)
            / Raw(b"spoof")
        )
        with _pinned_to_one_cpu():
            send_frames(a.ns, "eth0", [spoof])
            send_frames(c.wire, "br0", [wire_to(c, node, a.ip4, sport=4321)], count=100)
        time.sleep(0.5)
    finally:
        out, err = _stop(proc)
    assert proc.returncode == 0, err
    with PinnedMap(PinLayout(node.pin_root), "monitor_cfg") as m:
        assert m.get(0).active == 0, "the monitor left the programs reporting"
    return [json.loads(line) for line in out.splitlines()], a


def _forwards(events, pod):
    return [
        e
        for e in events
        if e["hook"] in ("xdp_nic", "tc_nic") and e["reason"] == "fwd_nic_to_pod" and e["dst"] == pod.ip4
    ]


def _the_drop(events, node, pod):
    drops = [e for e in events if e["verdict"] == "drop"]
    assert len(drops) == 1, drops
    d = drops[0]
    with entered(node.ns):
        name = pods.display_name(next(e for e in _endpoints(node) if e.ep_id == pod.ep.ep_id))
    assert d["reason"] == "drop_spoof_ip"
    assert d["hook"] == "tc_pod" and d["direction"] == "from-pod"
    assert d["ep_id"] == pod.ep.ep_id and d["pod"] == name == f"sim/{pod.name}" and pod.ip4 in d["pod_ips"]
    assert (d["src"], d["dst"], d["proto"], d["dport"]) == (SPOOF_SRC, WIRE_HOST_V4, "udp", 40009)
    assert d["smac"] == pod.link.pod_mac
    return d


def _endpoints(node):
    from datapath.endpoints import EndpointTable

    with EndpointTable(node.pin_root) as t:
        return t.list()


def test_monitor_sees_the_drop_and_every_tenth_forward(env):
    node = env.nodes[0]
    events, pod = _monitor_run(env, sample=10)
    _the_drop(events, node, pod)
    fwd = _forwards(events, pod)
    assert len(fwd) == 10, [(e["reason"], e["cpu"]) for e in events]
    assert all(e["sport"] == 4321 and e["pod"] == fwd[0]["pod"] for e in fwd)
    nic_other = [e for e in events if e["hook"] != "tc_pod" and e not in fwd]
    assert nic_other == [], "other NIC events than the sampled forwards"


def test_monitor_without_sampling_sees_only_the_drop(env):
    node = env.nodes[0]
    events, pod = _monitor_run(env, sample=0)
    _the_drop(events, node, pod)
    assert len(events) == 1, events


def test_monitor_filters_by_pod_and_reason(env):
    node = env.nodes[0]
    a, b = node.pods[:2]
    proc = _ctl_popen(node, "monitor", "--json", "--pod", b.ip4, "--drops", "--count", "1")
    try:
        assert "listening" in proc.stderr.readline()
        for p in (a, b):
            frame = (
                Ether(src=p.link.pod_mac, dst=p.link.host_mac) / IP(src=SPOOF_SRC, dst=WIRE_HOST_V4) / UDP()
            )
            send_frames(p.ns, "eth0", [frame])
        out, err = proc.communicate(timeout=10)  # --count 1: stops by itself
    finally:
        if proc.poll() is None:
            _stop(proc)
    events = [json.loads(line) for line in out.splitlines()]
    assert len(events) == 1 and events[0]["ep_id"] == b.ep.ep_id, events


def _scrape(node) -> str:
    with entered(node.ns):
        return urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10).read().decode()


def _metric_rows(text: str) -> tuple[dict, dict, dict]:
    packets, nbytes, other = {}, {}, {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "xdpcni_packets_total":
                packets[(s.labels["pod"], s.labels["reason"])] = s.value
            elif s.name == "xdpcni_bytes_total":
                nbytes[(s.labels["pod"], s.labels["reason"])] = s.value
            else:
                other[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return packets, nbytes, other


def test_metrics_equal_stats(env):
    c = env
    node = c.nodes[0]
    a, b = node.pods[:2]
    send_frames(c.wire, "br0", [wire_to(c, node, a.ip4), wire_to(c, node, b.ip6)], count=20)
    send_frames(
        a.ns, "eth0", [Ether(src=a.link.pod_mac, dst=a.link.host_mac) / IP(src=SPOOF_SRC, dst=b.ip4) / UDP()]
    )
    proc = _ctl_popen(node, "metrics", "--listen", f"127.0.0.1:{METRICS_PORT}")
    try:
        assert "serving" in proc.stderr.readline()
        with entered(node.ns):
            names = {e.ep_id: pods.display_name(e) for e in _endpoints(node)}
        for _attempt in range(5):  # pods' own housekeeping may move a counter between the two reads
            first = _scrape(node)
            stats = json.loads(node.ctl("stats", "--json").stdout)
            if _scrape(node) == first:
                break
        packets, nbytes, other = _metric_rows(first)
    finally:
        out, err = _stop(proc)
    assert proc.returncode == 0, err
    want_p = {(names.get(r["ep_id"], "node"), r["reason"].lower()): r["packets"] for r in stats}
    want_b = {
        (names.get(r["ep_id"], "node"), r["reason"].lower()): r["bytes"]
        for r in stats
        if r["bytes"] is not None
    }
    assert packets == want_p
    assert nbytes == want_b
    assert packets[(names[a.ep.ep_id], "fwd_nic_to_pod")] >= 20
    assert packets[(names[a.ep.ep_id], "drop_spoof_ip")] >= 1
    assert other[("xdpcni_endpoints", ())] == 2
    assert other[("xdpcni_datapath_loaded", ())] == 1
    assert other[("xdpcni_map_capacity", (("map", "endpoints"),))] == 2 * abi.MAX_ENDPOINTS
    assert other[("xdpcni_map_entries", (("map", "ifaces"),))] == 2
    mode = node.loaded_mode
    assert any(k[0] == "xdpcni_datapath_info" and ("mode", mode) in k[1] for k in other)
