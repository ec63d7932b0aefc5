"""The conntrack gate (bpf/lib/conntrack.h): with `netfilter: respect`, a packet takes the fast path
only when conntrack has an assured, established, untranslated entry for its flow; everything else
goes to the stack, which then does what the kernel path does.

Two kinds of test:
- the eligibility matrix, fast: entries made with `conntrack -I`, then the loaded NIC program run
  on a crafted frame with BPF_PROG_TEST_RUN from inside the node's namespace (the kfunc looks up
  the namespace of the packet's device); verdict and the reason counted on the pod's row;
- live flows through real sockets, compared with what the kernel path delivers: a ClusterIP-style
  DNAT to a pod on the same node, `ct state new drop`, and TCP bulk with `ct state invalid drop`
  running on the fast path once established (liberal window tracking, see conntrack.h).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from datapath import libbpf, netfilter
from datapath.abi import Reason
from datapath.netns import entered
from datapath.pins import PinLayout
from datapath.stats import Stats
from sim.netfilter import TRACKING, conntrack, invalid_drops, nft, sysctl
from sim.packets import forwarded, tcp_bulk
from sim.topology import WIRE_HOST_V4, WIRE_HOST_V6, Cluster, run_in

pytestmark = pytest.mark.kernel

TC_ACT_OK, TC_ACT_REDIRECT = 0, 7
XDP_PASS, XDP_REDIRECT = 2, 4
REMOTE_V4, VIP_V4 = "198.19.9.9", "10.96.0.10"
REMOTE_V6, VIP_V6 = "2001:db8:1:9::9", "fd00:96::10"
FAST = "fast"

NFT_TRACKING = TRACKING


@pytest.fixture(scope="module")
def gate_env(mode):
    """One node in `mode` with netfilter: respect (gate on), two pods, conntrack tracking the
    node's namespace (an nft forward chain with `ct state invalid drop`, as kube-proxy has)."""
    cluster = Cluster(1)
    try:
        node = cluster.nodes[0]
        node.load(mode, netfilter="respect")
        node.add_pod()
        node.add_pod()
        nft(node.ns, NFT_TRACKING)
        yield cluster
    finally:
        cluster.teardown()


# --------------------------------------------------------------------------- the matrix


@dataclass(frozen=True)
class Case:
    id: str
    entry: tuple  # conntrack -I arguments ({pod}, {pod6} substituted), or () for none
    frame: dict  # proto, src, dst, sport, dport, flags, v6
    want: str | Reason  # FAST or the PASS_* reason counted on the pod's row


def tcp_est(src, dst, sport=40000, dport=80, state="ESTABLISHED", status="SEEN_REPLY,ASSURED", extra=()):
    args = ["-p", "tcp", "-s", src, "-d", dst, "--sport", str(sport), "--dport", str(dport), "--state", state]
    args += ["-t", "120", *(["-u", status] if status else []), *extra]
    return tuple(args)


def udp_entry(src, dst, sport=5000, dport=53, status="SEEN_REPLY,ASSURED", extra=(), timeout=30):
    args = [
        "-p",
        "udp",
        "-s",
        src,
        "-d",
        dst,
        "--sport",
        str(sport),
        "--dport",
        str(dport),
        "-t",
        str(timeout),
    ]
    return tuple(args + (["-u", status] if status else []) + list(extra))


def f(src, dst, sport=40000, dport=80, proto="tcp", flags="A", v6=False):
    return {"src": src, "dst": dst, "sport": sport, "dport": dport, "proto": proto, "flags": flags, "v6": v6}


# What the NIC programs can count on a pod's row. The pod's own egress (IPv6 router solicitations
# and MLD to multicast MACs, counted pass_l2_dest by tc_pod) may land there during a case.
NIC_REASONS = {
    Reason.FWD_NIC_TO_POD,
    Reason.DROP_REDIRECT,
    Reason.PASS_POLICY,
    Reason.PASS_MTU,
    Reason.PASS_CONNTRACK,
    Reason.PASS_NAT,
    Reason.PASS_PROTO,
}

W, P, R, V = WIRE_HOST_V4, "{pod}", REMOTE_V4, VIP_V4
W6, P6 = WIRE_HOST_V6, "{pod6}"

CASES = [
    Case("no-entry", (), f(W, P), Reason.PASS_CONNTRACK),
    Case("tcp-established-assured", tcp_est(W, P), f(W, P), FAST),
    Case("tcp-assured-reply-direction", tcp_est(P, W, 80, 40000), f(W, P), FAST),
    Case("tcp-not-assured", tcp_est(W, P, status="SEEN_REPLY"), f(W, P), Reason.PASS_CONNTRACK),
    Case("tcp-no-status", tcp_est(W, P, status=None), f(W, P), Reason.PASS_CONNTRACK),
    *[
        Case(f"tcp-{st.lower()}", tcp_est(W, P, state=st), f(W, P), Reason.PASS_CONNTRACK)
        for st in ("SYN_SENT", "SYN_RECV", "FIN_WAIT", "CLOSE_WAIT", "TIME_WAIT", "CLOSE")
    ],
    *[
        Case(f"tcp-flags-{fl}", tcp_est(W, P), f(W, P, flags=fl), Reason.PASS_PROTO)
        for fl in ("S", "FA", "R")
    ],
    # pod -> ClusterIP with the backend on another node: its reply enters through the NIC
    Case(
        "dnat-reply-from-remote-backend",
        tcp_est(P, V, 40000, 80, extra=("--dst-nat", R)),
        f(R, P, 80, 40000),
        Reason.PASS_NAT,
    ),
    Case("snat-bit", tcp_est(W, P, extra=("--src-nat", "198.18.0.99")), f(W, P), Reason.PASS_NAT),
    # IPVS rewrites the reply tuple without setting any NAT bit
    Case(
        "ipvs-style-reply-tuple",
        tcp_est(
            P, V, 40000, 80, extra=("-r", R, "-q", P, "--reply-port-src", "8080", "--reply-port-dst", "40000")
        ),
        f(R, P, 8080, 40000),
        Reason.PASS_NAT,
    ),
    Case(
        "port-only-translation",
        tcp_est(W, P, extra=("-r", P, "-q", W, "--reply-port-src", "8080", "--reply-port-dst", "40000")),
        f(W, P),
        Reason.PASS_NAT,
    ),
    Case("other-zone", tcp_est(W, P, extra=("-w", "5")), f(W, P), Reason.PASS_CONNTRACK),
    Case("udp-assured", udp_entry(W, P), f(W, P, 5000, 53, "udp"), FAST),
    Case("udp-assured-reply-direction", udp_entry(P, W, 53, 5000), f(W, P, 5000, 53, "udp"), FAST),
    Case("udp-unreplied", udp_entry(W, P, status=None), f(W, P, 5000, 53, "udp"), Reason.PASS_CONNTRACK),
    Case(
        "udp-dnat-reply",
        udp_entry(P, V, 5000, 53, extra=("--dst-nat", R)),
        f(R, P, 53, 5000, "udp"),
        Reason.PASS_NAT,
    ),
    Case("icmp", (), f(W, P, proto="icmp"), Reason.PASS_PROTO),
    Case("v6-tcp-assured", tcp_est(W6, P6), f(W6, P6, v6=True), FAST),
    Case("v6-tcp-syn-sent", tcp_est(W6, P6, state="SYN_SENT"), f(W6, P6, v6=True), Reason.PASS_CONNTRACK),
    Case(
        "v6-dnat-reply",
        tcp_est(P6, VIP_V6, 40000, 80, extra=("--dst-nat", REMOTE_V6)),
        f(REMOTE_V6, P6, 80, 40000, v6=True),
        Reason.PASS_NAT,
    ),
]


def _frame(node, wire_mac: str, spec: dict) -> bytes:
    l3 = (
        IPv6(src=spec["src"], dst=spec["dst"], hlim=64)
        if spec["v6"]
        else IP(src=spec["src"], dst=spec["dst"], ttl=64)
    )
    if spec["proto"] == "tcp":
        l4 = TCP(sport=spec["sport"], dport=spec["dport"], flags=spec["flags"], seq=1000, ack=2000)
    elif spec["proto"] == "udp":
        l4 = UDP(sport=spec["sport"], dport=spec["dport"])
    else:
        l4 = ICMP()
    return bytes(Ether(dst=node.nic_mac, src=wire_mac) / l3 / l4 / Raw(b"x" * 32))


def _subst(val: str, pod) -> str:
    return val.replace("{pod6}", pod.ip6).replace("{pod}", pod.ip4)


def run_nic_program(node, mode: str, frame: bytes) -> int:
    """Run the loaded NIC program on `frame` as if the NIC had received it; returns its verdict."""
    prog = "xdp_nic" if mode == "xdp" else "tc_nic"
    with entered(node.ns):
        fd = libbpf.obj_get(PinLayout(node.pin_root).prog(prog))
        try:
            ctx = None
            if mode == "xdp":
                nic_ifindex = socket.if_nametoindex(node.nic)
                ctx = libbpf.XdpMd(data=0, data_end=len(frame), ingress_ifindex=nic_ifindex)
            retval, _, _ = libbpf.prog_test_run(fd, frame, ctx=ctx)
        finally:
            os.close(fd)
    return retval


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_eligibility(gate_env, mode, case):
    c = gate_env
    node = c.nodes[0]
    pod = node.pods[0]
    conntrack(node.ns, "-F", check=False)
    if case.entry:
        conntrack(node.ns, "-I", *[_subst(a, pod) for a in case.entry])
    spec = {k: _subst(v, pod) if isinstance(v, str) else v for k, v in case.frame.items()}
    frame = _frame(node, c.wire_mac, spec)
    with Stats(node.pin_root) as st:
        before = st.endpoint(pod.ep.ep_id)
    verdict = run_nic_program(node, mode, frame)
    with Stats(node.pin_root) as st:
        after = st.endpoint(pod.ep.ep_id)
    moved = {
        r: after[r].packets - before.get(r, type(after[r])()).packets
        for r in after
        if after[r] != before.get(r) and r in NIC_REASONS  # not the pod's own multicast chatter
    }
    if case.want == FAST:
        assert verdict == (XDP_REDIRECT if mode == "xdp" else TC_ACT_REDIRECT), moved
        assert moved == {Reason.FWD_NIC_TO_POD: 1}
    else:
        assert verdict == (XDP_PASS if mode == "xdp" else TC_ACT_OK), moved
        assert moved == {case.want: 1}


def test_gate_off_means_no_lookup(gate_env, mode):
    """netfilter: bypass clears the node_cfg bit: the same frame without any entry is delivered."""
    c = gate_env
    node = c.nodes[0]
    pod = node.pods[0]
    conntrack(node.ns, "-F", check=False)
    with entered(node.ns):
        netfilter.set_gate(node.pin_root, False)
    try:
        frame = _frame(node, c.wire_mac, f(WIRE_HOST_V4, pod.ip4))
        assert run_nic_program(node, mode, frame) == (XDP_REDIRECT if mode == "xdp" else TC_ACT_REDIRECT)
    finally:
        with entered(node.ns):
            netfilter.set_gate(node.pin_root, True)


# --------------------------------------------------------------------------- live flows


def _udp_service_roundtrip(client_ns: str, vip: str, backend_ns: str, backend_ip: str, n: int = 5) -> int:
    """Client sends n datagrams to vip:53 (DNAT to backend:5353), the backend echoes; returns how
    many replies the client's connected socket accepted (they must come from the VIP)."""
    fam = socket.AF_INET6 if ":" in vip else socket.AF_INET
    with entered(backend_ns):
        srv = socket.socket(fam, socket.SOCK_DGRAM)
        srv.bind((backend_ip, 5353))
    with entered(client_ns):
        cli = socket.socket(fam, socket.SOCK_DGRAM)
    srv.settimeout(1.0)
    cli.settimeout(1.0)
    got = 0
    try:
        cli.connect((vip, 53))
        for i in range(n):
            cli.send(b"q%d" % i)
            try:
                data, peer = srv.recvfrom(100)
                srv.sendto(b"a" + data, peer)
                if cli.recv(100) == b"a" + data:
                    got += 1
            except TimeoutError:
                pass
    finally:
        srv.close()
        cli.close()
    return got


def _tcp_service_roundtrip(client_ns: str, vip: str, backend_ns: str, backend_ip: str, n: int = 5) -> int:
    fam = socket.AF_INET6 if ":" in vip else socket.AF_INET
    with entered(backend_ns):
        srv = socket.socket(fam, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((backend_ip, 8080))
        srv.listen(1)
    srv.settimeout(3)

    def echo():
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(3)
            while data := conn.recv(100):
                conn.sendall(data)

    t = threading.Thread(target=echo, daemon=True)
    t.start()
    with entered(client_ns):
        cli = socket.socket(fam, socket.SOCK_STREAM)
    cli.settimeout(3)
    got = 0
    try:
        cli.connect((vip, 80))
        for i in range(n):
            cli.sendall(b"r%03d" % i)
            if cli.recv(100) == b"r%03d" % i:
                got += 1
    except OSError:
        pass
    finally:
        cli.close()
        t.join(5)
        srv.close()
    return got


CLUSTER_IP = """
table ip xdpcni_svc {{
  chain prerouting {{
    type nat hook prerouting priority -100; policy accept;
    ip daddr {vip} udp dport 53 dnat to {backend}:5353
    ip daddr {vip} tcp dport 80 dnat to {backend}:8080
  }}
}}
"""
CLUSTER_IP6 = """
table ip6 xdpcni_svc6 {{
  chain prerouting {{
    type nat hook prerouting priority -100; policy accept;
    ip6 daddr {vip} udp dport 53 dnat to [{backend}]:5353
    ip6 daddr {vip} tcp dport 80 dnat to [{backend}]:8080
  }}
}}
"""


@pytest.mark.parametrize("family", [4, 6])
def test_pod_to_cluster_ip_with_the_backend_on_the_same_node(gate_env, family):
    """kube-proxy's ClusterIP DNAT reduced to its effect: the backend's replies must be un-NATed by
    conntrack (the client's connected socket accepts only the VIP), so they may not be redirected
    straight into the client pod. The kernel path delivers 5/5; so must the gated fast path."""
    c = gate_env
    node = c.nodes[0]
    client, backend = node.pods
    vip, bip = (VIP_V4, backend.ip4) if family == 4 else (VIP_V6, backend.ip6)
    table = "xdpcni_svc" if family == 4 else "xdpcni_svc6"
    nft(node.ns, (CLUSTER_IP if family == 4 else CLUSTER_IP6).format(vip=vip, backend=bip))
    # the client pods route everything via the node; the node needs a route to the VIP's range
    run_in(node.ns, "ip", "route", "replace", "blackhole", vip if family == 4 else vip + "/128")
    try:
        with Stats(node.pin_root) as st:
            nat0 = st.packets(backend.ep.ep_id, Reason.PASS_NAT)
        assert _udp_service_roundtrip(client.ns, vip, backend.ns, bip) == 5
        assert _tcp_service_roundtrip(client.ns, vip, backend.ns, bip) == 5
        with Stats(node.pin_root) as st:
            assert st.packets(backend.ep.ep_id, Reason.PASS_NAT) > nat0, (
                "replies of the DNAT flow went to the stack"
            )
    finally:
        run_in(node.ns, "ip", "route", "del", "blackhole", vip if family == 4 else vip + "/128", check=False)
        run_in(node.ns, "nft", "delete", "table", "ip" if family == 4 else "ip6", table, check=False)


NFT_NEW_DROP = """
table inet xdpcni_new {
  chain forward {
    type filter hook forward priority -5; policy accept;
    ct state new drop
  }
}
"""


def test_ct_state_new_drop_blocks_new_flows_completely(gate_env):
    c = gate_env
    node = c.nodes[0]
    pod = node.pods[0]
    nft(node.ns, NFT_NEW_DROP)
    try:
        fwd_fast = []
        with Stats(node.pin_root) as st:
            fwd_fast.append(st.packets(pod.ep.ep_id, Reason.FWD_POD_TO_NIC))
            fwd_fast.append(st.packets(pod.ep.ep_id, Reason.FWD_NIC_TO_POD))
        assert _tcp_connect(pod.ns, WIRE_HOST_V4, c.wire, 47100) is False
        assert _tcp_connect(c.wire, pod.ip4, pod.ns, 47101) is False
        with Stats(node.pin_root) as st:
            assert st.packets(pod.ep.ep_id, Reason.FWD_POD_TO_NIC) == fwd_fast[0]
            assert st.packets(pod.ep.ep_id, Reason.FWD_NIC_TO_POD) == fwd_fast[1]
    finally:
        run_in(node.ns, "nft", "delete", "table", "inet", "xdpcni_new", check=False)


def _tcp_connect(src_ns: str, dst: str, dst_ns: str, port: int) -> bool:
    with entered(dst_ns):
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("0.0.0.0", port))
        srv.listen(1)
    with entered(src_ns):
        cli = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    cli.settimeout(1.0)
    try:
        cli.connect((dst, port))
        return True
    except OSError:
        return False
    finally:
        cli.close()
        srv.close()


@pytest.mark.parametrize("direction", ["pod-to-wire", "wire-to-pod"])
def test_established_tcp_bulk_takes_the_fast_path_and_closes_cleanly(gate_env, direction):
    """16 MB with `ct state invalid drop` in FORWARD and liberal window tracking: the transfer
    completes and closes, no packet is INVALID, the entry reaches TIME_WAIT/CLOSE, and after the
    handshake the fast path carries the segments (a GSO skb counts once) while the node's kernel
    forwards only the handshake and the close."""
    c = gate_env
    node = c.nodes[0]
    pod = node.pods[0]
    sysctl(node.ns, "net.netfilter.nf_conntrack_tcp_be_liberal", "1")
    conntrack(node.ns, "-F", check=False)
    port = 47200 if direction == "pod-to-wire" else 47201
    reason = Reason.FWD_POD_TO_NIC if direction == "pod-to-wire" else Reason.FWD_NIC_TO_POD
    try:
        inv0, fwd0 = invalid_drops(node.ns), forwarded(node.ns)
        with Stats(node.pin_root) as st:
            fast0 = st.packets(pod.ep.ep_id, reason)
        if direction == "pod-to-wire":
            assert tcp_bulk(pod.ns, c.wire, WIRE_HOST_V4, 16 << 20, port) == 16 << 20
        else:
            assert tcp_bulk(c.wire, pod.ns, pod.ip4, 16 << 20, port) == 16 << 20
        with Stats(node.pin_root) as st:
            fast = st.packets(pod.ep.ep_id, reason) - fast0
        kernel = forwarded(node.ns) - fwd0
        assert invalid_drops(node.ns) == inv0, "conntrack marked packets INVALID"
        assert fast > 0 and kernel <= 12, f"fast path {fast}, kernel forwarded {kernel}"
        assert fast / (fast + kernel) >= 0.95
        time.sleep(0.2)
        entries = conntrack(node.ns, "-L", "-p", "tcp", "--dport", str(port), check=False).stdout
        assert "TIME_WAIT" in entries or "CLOSE" in entries, entries
    finally:
        sysctl(node.ns, "net.netfilter.nf_conntrack_tcp_be_liberal", "0")


def _read(path: str) -> str:
    with open(path) as fh:
        return fh.read()


def test_the_agent_marks_established_flows_liberal_so_tcp_takes_the_fast_path(gate_env):
    """The node-wide sysctl stays 0: the node agent marks the flow liberal through ctnetlink as it
    becomes established, the gate then lets it through, and the close is still clean."""
    from datapath import ctliberal
    from sim.agent import NodeAgent

    c = gate_env
    node = c.nodes[0]
    pod = node.pods[0]
    sysctl(node.ns, "net.netfilter.nf_conntrack_tcp_be_liberal", "0")
    conntrack(node.ns, "-F", check=False)
    agent = NodeAgent(node)
    try:
        deadline = time.monotonic() + 10
        while "liberal marker" not in _read(agent.log_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        inv0 = invalid_drops(node.ns)
        with Stats(node.pin_root) as st:
            fast0 = st.packets(pod.ep.ep_id, Reason.FWD_POD_TO_NIC)

        def flows():
            with entered(node.ns), ctliberal.CTConn() as conn:
                return [
                    e
                    for e in ctliberal.dump_tcp(conn, socket.AF_INET, assured_only=False)
                    if ctliberal.entry_tuple(e).dport == 47203
                ]

        def marked() -> None:
            # The agent reacts to conntrack's event for the established flow; under a loaded
            # machine that can take longer than a whole bulk transfer, so the bulk waits for it.
            deadline = time.monotonic() + 10
            while not (flows() and all(ctliberal.is_liberal(e) for e in flows())):
                assert time.monotonic() < deadline, "the agent never marked the established flow liberal"
                time.sleep(0.02)

        # The sockets' timeout outlasts marked()'s deadline: a slow marking fails there, by name.
        got = tcp_bulk(pod.ns, c.wire, WIRE_HOST_V4, 16 << 20, 47203, timeout=30, established=marked)
        assert got == 16 << 20
        with Stats(node.pin_root) as st:
            fast = st.packets(pod.ep.ep_id, Reason.FWD_POD_TO_NIC) - fast0
        assert fast > 0, "the flow never took the fast path"
        assert invalid_drops(node.ns) == inv0, "conntrack marked packets INVALID"
        assert flows() and all(ctliberal.is_liberal(e) for e in flows())
    finally:
        agent.stop()
    assert "conntrack liberal marker:" in _read(agent.log_path)


def test_without_liberal_window_tracking_tcp_stays_on_the_stack(gate_env):
    """Window tracking on and nobody marking flows liberal: conntrack would see a FIN that ACKs
    data it never saw and call it INVALID, so established TCP is left to the stack: the transfer
    completes, closes, and nothing is INVALID."""
    c = gate_env
    node = c.nodes[0]
    pod = node.pods[0]
    sysctl(node.ns, "net.netfilter.nf_conntrack_tcp_be_liberal", "0")
    inv0 = invalid_drops(node.ns)
    with Stats(node.pin_root) as st:
        fast0 = st.packets(pod.ep.ep_id, Reason.FWD_POD_TO_NIC)
    assert tcp_bulk(pod.ns, c.wire, WIRE_HOST_V4, 1 << 20, 47202) == 1 << 20
    with Stats(node.pin_root) as st:
        assert st.packets(pod.ep.ep_id, Reason.FWD_POD_TO_NIC) == fast0
    assert invalid_drops(node.ns) == inv0


def test_idle_udp_flow_outlives_a_short_timeout(gate_env):
    """Bypassed packets refresh no timeout by themselves: the gate moves it forward. With the
    netns' UDP stream timeout at 3 s, an assured UDP flow on the fast path keeps its entry for 6 s
    of traffic (and keeps taking the fast path)."""
    c = gate_env
    node = c.nodes[0]
    pod = node.pods[0]
    sysctl(node.ns, "net.netfilter.nf_conntrack_udp_timeout_stream", "3")
    conntrack(node.ns, "-F", check=False)
    conntrack(node.ns, "-I", *udp_entry(WIRE_HOST_V4, pod.ip4, 5001, 5301, timeout=3))
    try:
        with entered(pod.ns):
            rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rx.bind((pod.ip4, 5301))
        with entered(c.wire):
            tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tx.bind((WIRE_HOST_V4, 5001))
        rx.settimeout(1)
        with Stats(node.pin_root) as st:
            fast0 = st.packets(pod.ep.ep_id, Reason.FWD_NIC_TO_POD)
        for i in range(12):  # 6 s, twice the timeout
            tx.sendto(b"u%d" % i, (pod.ip4, 5301))
            assert rx.recv(100) == b"u%d" % i
            time.sleep(0.5)
        rx.close()
        tx.close()
        with Stats(node.pin_root) as st:
            assert st.packets(pod.ep.ep_id, Reason.FWD_NIC_TO_POD) - fast0 == 12
        out = conntrack(node.ns, "-L", "-p", "udp", "--dport", "5301", check=False).stdout
        assert "ASSURED" in out, f"the entry expired: {out!r}"
    finally:
        sysctl(node.ns, "net.netfilter.nf_conntrack_udp_timeout_stream", "120")


def test_established_tcp_outlives_a_short_timeout_on_the_fast_path(gate_env):
    """TCP too: established timeout at 3 s, a connection sending every 0.5 s for 6 s takes the
    fast path after the handshake and its entry is still ESTABLISHED at the end."""
    c = gate_env
    node = c.nodes[0]
    pod = node.pods[0]
    sysctl(node.ns, "net.netfilter.nf_conntrack_tcp_be_liberal", "1")
    sysctl(node.ns, "net.netfilter.nf_conntrack_tcp_timeout_established", "3")
    conntrack(node.ns, "-F", check=False)
    with entered(pod.ns):
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((pod.ip4, 47300))
        srv.listen(1)
    with entered(c.wire):
        cli = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.settimeout(3)
    cli.settimeout(3)
    try:
        cli.connect((pod.ip4, 47300))
        conn, _ = srv.accept()
        conn.settimeout(3)
        time.sleep(0.1)  # the handshake's last ACK made the entry ESTABLISHED + ASSURED
        with Stats(node.pin_root) as st:
            fast0 = st.packets(pod.ep.ep_id, Reason.FWD_NIC_TO_POD)
        for i in range(12):
            cli.sendall(b"t%02d" % i)
            assert conn.recv(16) == b"t%02d" % i
            time.sleep(0.5)
        with Stats(node.pin_root) as st:
            assert st.packets(pod.ep.ep_id, Reason.FWD_NIC_TO_POD) - fast0 == 12
        out = conntrack(node.ns, "-L", "-p", "tcp", "--dport", "47300", check=False).stdout
        assert "ESTABLISHED" in out, f"the entry expired: {out!r}"
        conn.close()
    finally:
        cli.close()
        srv.close()
        sysctl(node.ns, "net.netfilter.nf_conntrack_tcp_timeout_established", "432000")
        sysctl(node.ns, "net.netfilter.nf_conntrack_tcp_be_liberal", "0")
