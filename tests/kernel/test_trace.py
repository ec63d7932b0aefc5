"""`xdpcnictl trace` against a loaded node: each traced frame gets the verdict and reason the packet
table (tests/kernel/test_packet_table.py) expects when the same frame really arrives, the diff shows
the rewrite, --from POD runs the pod program, and no counter of real traffic moves."""

from __future__ import annotations

import json

import pytest
from pyroute2 import IPRoute

from cni.plumbing import NUD_PERMANENT
from datapath.netns import entered
from node import pods
from node import trace as tr
from sim.topology import WIRE_HOST_V4, WIRE_HOST_V6
from tests.harness.waiting import wait_stable
from tests.kernel.test_packet_table import CASES, Env

pytestmark = pytest.mark.kernel

# Packet-table rows traced here: deliver to a local pod, ARP, TTL 1, fragments, unknown destination,
# and a few more reasons.
TABLE_ROWS = (
    "v4-udp",
    "v6-tcp",
    "arp-unicast-to-nic",
    "v4-ttl-1",
    "v6-hlim-1",
    "v4-frag-mf",
    "v6-fragment-header",
    "v4-unknown-pod-ip",
    "v6-unknown-pod-ip",
    "v4-src-local-pod",
    "broadcast-mac-v4",
    "vlan-100-v4",
)
EXPECT_EXIT = {"deliver": tr.EXIT_FAST_PATH, "pass": tr.EXIT_STACK, "drop": tr.EXIT_DROP}


def _stats(node) -> list:
    return json.loads(node.ctl("stats", "--json").stdout)


def _quiet_stats(node, quiet_for: float = 1.0, limit: float = 15.0) -> list:
    """Wait until no counter moves (the new pods' IPv6 housekeeping settles)."""
    return wait_stable(lambda: _stats(node), quiet_for, limit, interval=0.25)


@pytest.fixture(scope="module")
def env(node_env, mode):
    c = node_env
    node = c.nodes[0]
    with IPRoute(netns=f"/var/run/netns/{node.ns}") as ipr:
        idx = ipr.link_lookup(ifname=node.nic)[0]
        for ip in (WIRE_HOST_V4, WIRE_HOST_V6):
            ipr.neigh("replace", dst=ip, lladdr=c.wire_mac, ifindex=idx, state=NUD_PERMANENT)
    with entered(c.wire):  # the wire host's own IPv6 housekeeping (RS, MLD) reaches the NIC
        for key in ("accept_ra", "router_solicitations"):
            with open(f"/proc/sys/net/ipv6/conf/br0/{key}", "w") as fh:
                fh.write("0")
    return Env(c, node, node.pods, c.wire_mac, mode)


def _veth(node, pod) -> str:
    with entered(node.ns):
        return pods.veth_name(pod.link.host_ifindex)


def _trace_cli(node, *args) -> tuple[int, dict]:
    res = node.ctl("trace", "--json", *args, check=False)
    assert res.returncode in (0, 3, 4), res.stderr
    out = json.loads(res.stdout)
    assert out["exit_status"] == res.returncode
    return res.returncode, out


@pytest.mark.parametrize("case_id", TABLE_ROWS)
def test_trace_matches_the_packet_table(env, case_id):
    case = next(c for c in CASES if c.id == case_id)
    raw = case.build(env)
    raw = raw if isinstance(raw, bytes) else bytes(raw)
    rc, out = _trace_cli(env.node, "--hex", raw.hex())
    assert out["program"] == ("xdp_nic" if env.mode == "xdp" else "tc_nic")
    assert out["same_code"] is True, "the scratch copy is not the attached program's code"
    assert rc == EXPECT_EXIT[case.outcome], out
    if case.outcome == "deliver":
        pod = env.pods[case.pod]
        assert out["reason"] == "fwd_nic_to_pod"
        assert out["verdict"] == ("XDP_REDIRECT" if env.mode == "xdp" else "TC_ACT_REDIRECT")
        assert out["target"]["ep_id"] == pod.ep.ep_id
        assert out["target"]["veth"] == _veth(env.node, pod)
        assert pod.ip4 in out["target"]["ips"]
    else:
        assert out["reason"] == case.reason.name.lower(), out
        assert out["verdict"] == ("XDP_PASS" if env.mode == "xdp" else "TC_ACT_OK")
        assert out["diff"] == []


def test_trace_local_pod_shows_the_rewrite(env):
    """A scapy expression with the NIC's MAC filled in: redirect into the right pod, TTL - 1, MACs
    rewritten to the pod's, checksum updated; human output names pod, veth and what happens next."""
    node, pod = env.node, env.pods[1]
    rc, out = _trace_cli(node, f"Ether()/IP(dst='{pod.ip4}', ttl=17)/UDP(dport=53)")
    assert rc == 0
    assert out["outcome"] == "fast-path" and out["reason"] == "fwd_nic_to_pod"
    assert out["target"]["ep_id"] == pod.ep.ep_id
    diff = {d["field"]: (d["before"], d["after"]) for d in out["diff"]}
    assert diff["ip.ttl"] == (17, 16)
    assert diff["eth.dst"] == (node.nic_mac, pod.link.pod_mac)
    assert diff["eth.src"][1] == pod.link.host_mac
    assert "ip.chksum" in diff
    text = node.ctl("trace", "--dst", pod.ip4, check=False)
    assert text.returncode == 0
    assert "fwd_nic_to_pod" in text.stdout and "ip.ttl" in text.stdout and "delivered into pod" in text.stdout
    assert out["target"]["pod"] in text.stdout


def test_trace_from_a_pod(env):
    """--from POD runs tc_pod with the pod's MACs and address: a spoofed source is a drop (exit 4),
    the pod's own source to the other pod is a redirect."""
    node, a, b = env.node, env.pods[0], env.pods[1]
    rc, out = _trace_cli(node, "--from", a.ip4, "IP(src='198.19.0.77', dst='198.18.0.1')/UDP(dport=9)")
    assert rc == tr.EXIT_DROP
    assert out["program"] == "tc_pod" and out["reason"] == "drop_spoof_ip"
    assert out["verdict"] == "TC_ACT_SHOT"
    assert out["counted_on"]["ep_id"] == a.ep.ep_id
    rc, out = _trace_cli(node, "--from", _veth(node, a), "--dst", b.ip6)
    assert rc == 0 and out["reason"] == "fwd_pod_to_pod"
    assert out["target"]["ep_id"] == b.ep.ep_id


def test_trace_moves_no_counter(env):
    """Real counters stay exactly as they were: the traced copy counts into a map of its own. (A
    counter moved by stray housekeeping traffic is told apart by repeating: trace would move it
    every time.)"""
    node = env.node
    for _attempt in range(3):
        before = _quiet_stats(node)
        with entered(node.ns):
            for case_id in TABLE_ROWS:
                case = next(c for c in CASES if c.id == case_id)
                tr.trace(node.pin_root, bytes(case.build(env)))
            tr.trace(node.pin_root, tr.parse_packet("IP(src='198.19.0.99')/UDP()"), from_pod=env.pods[0].ip4)
            tr.trace(
                node.pin_root, tr.parse_packet(f"IP(dst='{env.pods[1].ip4}')/UDP()"), from_pod=env.pods[0].ip4
            )
        after = _stats(node)
        if after == before:
            return
    assert after == before
