"""Kubernetes netfilter scenarios with `netfilter: respect` (docs/design.md "Netfilter and
conntrack": the kernel decides, the fast path accelerates).

kube-proxy's and the portmap plugin's effect is reduced to nft rulesets in the node namespaces:
ClusterIP DNAT (backend on another node), hairpin (a pod reaching its own Service, with the
masquerade kube-proxy adds for it), NodePort with externalTrafficPolicy Local (DNAT) and Cluster
(DNAT + masquerade, backend on the same and on the other node), hostPort (DNAT in PREROUTING and
OUTPUT, from the wire, from pods and from the node itself) and pod masquerade to the outside.

Every scenario is real traffic through sockets, run twice on the same two-node cluster:
- with the datapath loaded (the module's NIC mode, netfilter: respect),
- on the kernel path: every NIC and pod program detached, which is what `xdpcnictl unload`
  detaches and what a node without xdpcni -- Debian's ptp plugin -- forwards with. Pins and the
  endpoint table stay (unload would remove them and a reload would not restore the pods), so the
  programs are attached again for the next test.
Both must give the known-right outcome: every datagram answered by the address the client sent
to, every byte of the TCP transfer in both directions, and the peer address the backend sees
(the client's, or the node's where a rule masquerades). Counters prove where packets went: the
packets of a translated flow on the pod's row as PASS_NAT, none redirected; the untranslated leg
of a flow (on the backend's node, or masquerade's unmasqueraded inbound flows) may take the fast
path. Where cheap, the same traffic with the gate off (netfilter: bypass) shows the breakage the
gate prevents.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from contextlib import contextmanager

import pytest
from pyroute2 import IPRoute

from datapath import attach, netfilter
from datapath import pod as pod_dp
from datapath.abi import Reason
from datapath.netns import entered
from datapath.stats import Stats
from sim.netfilter import TRACKING, nft, sysctl
from sim.topology import WIRE_HOST_V4, WIRE_HOST_V6, Cluster, run_in

pytestmark = pytest.mark.kernel

VIP = {4: "10.96.0.20", 6: "fd00:96::20"}
WIRE_HOST = {4: WIRE_HOST_V4, 6: WIRE_HOST_V6}
SVC_PORT, TARGET_PORT, NODE_PORT, HOST_PORT = 80, 8080, 30080, 30443
UDP_SVC_PORT, UDP_TARGET_PORT = 53, 5353
TABLE = "xdpcni_k8s"
TIMEOUT = 3.0  # only reached when something is broken
BROKEN_TIMEOUT = 0.6  # the bypass runs, expected to fail: below TCP's 1 s SYN retransmit
SMALL = 64 << 10  # service traffic: enough segments for established-flow packets in both directions
BULK = 4 << 20  # masquerade: a few MiB each way
FWD = (Reason.FWD_NIC_TO_POD, Reason.FWD_POD_TO_POD, Reason.FWD_POD_TO_NIC)

NFT_TRACKING = TRACKING


# --------------------------------------------------------------------------- environment


@pytest.fixture(scope="module")
def k8s(mode):
    """Two nodes in `mode` with netfilter: respect; node 0 has pods p2 (client) and p3 (backend),
    node 1 has p2 (remote backend). Conntrack tracks both node namespaces (forward chain with
    `ct state invalid drop`) with liberal TCP window tracking, as kube-proxy
    --conntrack-tcp-be-liberal sets, so untranslated established TCP may take the fast path."""
    cluster = Cluster(2)
    try:
        for node in cluster.nodes:
            node.load(mode, netfilter="respect")
            nft(node.ns, NFT_TRACKING)
            sysctl(node.ns, "net.netfilter.nf_conntrack_tcp_be_liberal", "1")
        cluster.nodes[0].add_pod()
        cluster.nodes[0].add_pod()
        cluster.nodes[1].add_pod()
        for node in cluster.nodes:  # no silent fallback to TC: kernel_path() re-attaches per mode
            with entered(node.ns), IPRoute() as ipr:
                assert (attach.xdp_prog_id(ipr, _nic_index(ipr, node)) != 0) == (mode == "xdp")
        yield cluster
    finally:
        cluster.teardown()


def ip(obj, family: int) -> str:
    """A pod's or node's address of `family`."""
    if hasattr(obj, "nic_ip4"):
        return obj.nic_ip4 if family == 4 else obj.nic_ip6
    return obj.ip4 if family == 4 else obj.ip6


def norm(addr: str | None) -> str | None:
    return None if addr is None else str(ipaddress.ip_address(addr.split("%")[0]))


def flush_conntrack(cluster) -> None:
    for node in cluster.nodes:
        run_in(node.ns, "conntrack", "-F", check=False)


def _l3(family: int) -> str:
    return "ip" if family == 4 else "ip6"


def _to(addr: str, port: int) -> str:
    return f"{addr}:{port}" if ":" not in addr else f"[{addr}]:{port}"


def nat_table(family: int, pre=(), out=(), post=()) -> str:
    """A kube-proxy-like nat table of `family` (ip / ip6) with the given chains' rules."""
    chains = []
    for hook, prio, rules in (("prerouting", -100, pre), ("output", -100, out), ("postrouting", 100, post)):
        if rules:
            body = "".join(f"    {r}\n" for r in rules)
            chains.append(
                f"  chain {hook} {{\n    type nat hook {hook} priority {prio}; policy accept;\n{body}  }}\n"
            )
    return f"table {_l3(family)} {TABLE} {{\n{''.join(chains)}}}\n"


@contextmanager
def rules(node, family: int, ruleset: str, blackhole: str | None = None):
    """Install `ruleset` (and a blackhole route for a VIP: nodes have no default route) on
    `node`; remove both and every conntrack entry afterwards."""
    prefix = None if blackhole is None else blackhole + ("/32" if family == 4 else "/128")
    nft(node.ns, ruleset)
    if prefix:
        run_in(node.ns, "ip", "route", "replace", "blackhole", prefix)
    try:
        yield
    finally:
        if prefix:
            run_in(node.ns, "ip", "route", "del", "blackhole", prefix, check=False)
        run_in(node.ns, "nft", "delete", "table", _l3(family), TABLE, check=False)
        flush_conntrack(node.cluster)


def _nic_index(ipr: IPRoute, node) -> int:
    return ipr.link_lookup(ifname=node.nic)[0]


@contextmanager
def kernel_path(cluster):
    """The kernel path: every NIC and pod program of every node detached, so the nodes' kernels
    route, NAT and forward everything (pins and maps stay; re-attached afterwards as the loader
    and the CNI attach them, also when the body fails). Pod eth0's XDP_PASS program stays: it
    only matters as a redirect target."""
    flush_conntrack(cluster)
    for node in cluster.nodes:
        with entered(node.ns), IPRoute() as ipr:
            idx = _nic_index(ipr, node)
            attach.detach_xdp(ipr, idx)
            attach.detach_tc_ingress(ipr, idx)
            for pod in node.pods:
                attach.detach_tc_ingress(ipr, pod.link.host_ifindex)
            assert attach.xdp_prog_id(ipr, idx) == 0 and not attach.tc_ingress_prog_names(ipr, idx)
            assert not any(attach.tc_ingress_prog_names(ipr, p.link.host_ifindex) for p in node.pods)
    try:
        yield
    finally:
        for node in cluster.nodes:
            with entered(node.ns), IPRoute() as ipr:
                pod_dp.attach_nic(ipr, node.pin_root, _nic_index(ipr, node), node.loaded_mode)
                for pod in node.pods:
                    pod_dp.attach_host_side(ipr, node.pin_root, pod.link.host_ifindex)
        flush_conntrack(cluster)


def _set_gate(node, on: bool) -> None:
    with entered(node.ns):
        netfilter.set_gate(node.pin_root, on)


@contextmanager
def gate_off(cluster):
    """netfilter: bypass on every node (the node_cfg bit, as `xdpcnictl load --netfilter
    bypass` writes it); respect again afterwards."""
    flush_conntrack(cluster)
    try:
        for node in cluster.nodes:
            _set_gate(node, False)
        yield
    finally:
        for node in cluster.nodes:
            _set_gate(node, True)
        flush_conntrack(cluster)


class Moved:
    """Packets counted per reason on one endpoint row since construction."""

    def __init__(self, node, pod):
        self.root, self.ep_id = node.pin_root, pod.ep.ep_id
        self.before = self._read()

    def _read(self) -> dict[Reason, int]:
        with Stats(self.root) as st:
            return {r: c.packets for r, c in st.endpoint(self.ep_id).items()}

    def __call__(self) -> dict[Reason, int]:
        after = self._read()
        return {r: n - self.before.get(r, 0) for r, n in after.items() if n != self.before.get(r, 0)}


def assert_all_via_stack(moved: dict[Reason, int], what: str) -> None:
    """A translated flow: its packets on this row went to the stack as PASS_NAT, none redirected."""
    assert moved.get(Reason.PASS_NAT, 0) > 0, f"{what}: no PASS_NAT counted: {moved}"
    assert not any(moved.get(r) for r in FWD), f"{what}: packets of a NATed flow redirected: {moved}"


# --------------------------------------------------------------------------- traffic


def udp_echo(client_ns, dst, dport, server_ns, port, n=5, timeout=TIMEOUT) -> tuple[int, str | None]:
    """n datagrams from a connected socket in client_ns to dst:dport; a socket on `port` in
    server_ns answers each. Returns (replies the client accepted -- a connected socket takes them
    only from dst:dport --, source address the server saw)."""
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with entered(server_ns):
        srv = socket.socket(fam, socket.SOCK_DGRAM)
        srv.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", port))
    with entered(client_ns):
        cli = socket.socket(fam, socket.SOCK_DGRAM)
    srv.settimeout(timeout)
    cli.settimeout(timeout)
    got, peer = 0, None
    try:
        cli.connect((dst, dport))
        for i in range(n):
            cli.send(b"q%d" % i)
            try:
                data, addr = srv.recvfrom(100)
            except TimeoutError:
                continue
            peer = norm(addr[0])
            srv.sendto(b"a" + data, addr)
            try:
                if cli.recv(100) == b"a" + data:
                    got += 1
            except TimeoutError:
                pass
    finally:
        srv.close()
        cli.close()
    return got, peer


def tcp_transfer(
    client_ns, dst, dport, server_ns, port, up=SMALL, down=SMALL, timeout=TIMEOUT
) -> tuple[int, int, str | None]:
    """A TCP connection from client_ns to dst:dport, accepted on `port` in server_ns: `up` bytes
    to the server, then (after the client's FIN) `down` bytes back and the server's close.
    Returns (bytes the server got, bytes the client got, source address the server saw)."""
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with entered(server_ns):
        srv = socket.socket(fam, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", port))
        srv.listen(1)
    srv.settimeout(timeout)
    res = {"up": 0, "peer": None}

    def serve():
        try:
            conn, addr = srv.accept()
        except OSError:
            return
        res["peer"] = norm(addr[0])
        with conn:
            conn.settimeout(timeout)
            try:
                while b := conn.recv(1 << 16):
                    res["up"] += len(b)
                conn.sendall(b"d" * down)
            except OSError:
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    with entered(client_ns):
        cli = socket.socket(fam, socket.SOCK_STREAM)
    cli.settimeout(timeout)
    got = 0
    try:
        cli.connect((dst, dport))
        cli.sendall(b"u" * up)
        cli.shutdown(socket.SHUT_WR)
        while b := cli.recv(1 << 16):
            got += len(b)
    except OSError:
        pass
    finally:
        cli.close()
        t.join(timeout + 2)
        srv.close()
    return res["up"], got, res["peer"]


def service_traffic(client_ns, dst, server_ns, family, udp=True, tcp_dport=SVC_PORT, timeout=TIMEOUT):
    """UDP dst:53 and TCP dst:tcp_dport, served on 5353 / 8080 in server_ns."""
    out = {}
    if udp:
        out["udp"] = udp_echo(client_ns, dst, UDP_SVC_PORT, server_ns, UDP_TARGET_PORT, timeout=timeout)
    out["tcp"] = tcp_transfer(client_ns, dst, tcp_dport, server_ns, TARGET_PORT, timeout=timeout)
    return out


def _all_counters(cluster) -> list[dict[Reason, int]]:
    out = []
    for node in cluster.nodes:
        with Stats(node.pin_root) as st:
            out.append(st.totals([0] + [p.ep.ep_id for p in node.pods]))
    return out


def on_kernel_path(cluster, traffic):
    """`traffic()` on the kernel path; no datapath counter may move meanwhile."""
    with kernel_path(cluster):
        before = _all_counters(cluster)
        out = traffic()
        assert _all_counters(cluster) == before, "a datapath program saw packets on the kernel path"
    return out


def on_respect(cluster, traffic):
    """`traffic()` with the datapath loaded (netfilter: respect): conntrack must have found no
    packet INVALID (it would if it missed segments the fast path took)."""
    inv = invalid_drops(cluster)
    out = traffic()
    assert invalid_drops(cluster) == inv, f"conntrack marked packets INVALID (outcome {out})"
    return out


def both_paths(cluster, traffic, node, pod):
    """Conntrack flushed, `traffic()` with the gate respecting netfilter (what it moved on `pod`'s
    row of `node` counted), then on the kernel path: (respect outcome, moved, kernel outcome)."""
    flush_conntrack(cluster)
    m = Moved(node, pod)
    respect = on_respect(cluster, traffic)
    moved = m()
    return respect, moved, on_kernel_path(cluster, traffic)


def invalid_drops(cluster) -> int:
    """Packets the `ct state invalid drop` rules dropped, all nodes."""
    n = 0
    for node in cluster.nodes:
        out = run_in(node.ns, "nft", "list", "chain", "inet", "xdpcni_test", "forward").stdout
        n += int(out.split("counter packets ")[1].split()[0])
    return n


def gate_off_outcome(cluster, traffic):
    with gate_off(cluster):
        return traffic()


# --------------------------------------------------------------------------- 1. ClusterIP


def cluster_ip(family: int, backend: str, post=()) -> str:
    d, vip = f"{_l3(family)} daddr", VIP[family]
    return nat_table(
        family,
        pre=[
            f"{d} {vip} udp dport {UDP_SVC_PORT} dnat to {_to(backend, UDP_TARGET_PORT)}",
            f"{d} {vip} tcp dport {SVC_PORT} dnat to {_to(backend, TARGET_PORT)}",
        ],
        post=post,
    )


@pytest.mark.parametrize("family", [4, 6])
def test_pod_to_cluster_ip_with_the_backend_on_another_node(k8s, family):
    """Client on node 0 -> VIP, DNAT on node 0 to the backend on node 1. The backend's replies
    come back to node 0 through its NIC program, addressed to the client pod: they must go to
    the stack (PASS_NAT on the client's row) so conntrack rewrites their source back to the VIP.
    On node 1 the flow is untranslated: its established TCP may take the fast path."""
    c = k8s
    n0, n1 = c.nodes
    client, remote = n0.pods[0], n1.pods[0]
    vip = VIP[family]
    want = {
        "udp": (5, ip(client, family)),
        "tcp": (SMALL, SMALL, ip(client, family)),
    }

    def traffic():
        return service_traffic(client.ns, vip, remote.ns, family)

    with rules(n0, family, cluster_ip(family, ip(remote, family)), blackhole=vip):
        flush_conntrack(c)
        m_client, m_remote = Moved(n0, client), Moved(n1, remote)
        respect = on_respect(c, traffic)
        moved_client, moved_remote = m_client(), m_remote()
        kernel = on_kernel_path(c, traffic)
        broken = None
        if family == 4:  # the old breakage: replies redirected into the client un-DNATed
            broken = gate_off_outcome(
                c,
                lambda: tcp_transfer(
                    client.ns, vip, SVC_PORT, remote.ns, TARGET_PORT, timeout=BROKEN_TIMEOUT
                ),
            )
    assert respect == want, f"respect: {respect}, kernel path: {kernel}"
    assert kernel == want
    assert_all_via_stack(moved_client, "client on node 0")
    assert moved_remote.get(Reason.PASS_NAT, 0) == 0, moved_remote
    assert moved_remote.get(Reason.FWD_NIC_TO_POD, 0) > 0, f"node 1 never accelerated: {moved_remote}"
    if broken is not None:
        assert broken != want["tcp"], "bypass delivered a DNAT flow correctly: the test proves nothing"


# --------------------------------------------------------------------------- 2. hairpin


@pytest.mark.parametrize("family", [4, 6])
def test_pod_reaching_its_own_service_hairpin(k8s, family):
    """Pod -> VIP, DNAT to the same pod, and kube-proxy's hairpin masquerade: the pod's server
    sees the node's address, the pod's client gets its answers from the VIP."""
    c = k8s
    n0 = c.nodes[0]
    pod = n0.pods[1]
    vip, pip = VIP[family], ip(pod, family)
    ruleset = cluster_ip(
        family, pip, post=[f"{_l3(family)} saddr {pip} {_l3(family)} daddr {pip} masquerade"]
    )
    want = {"udp": (5, ip(n0, family)), "tcp": (SMALL, SMALL, ip(n0, family))}

    def traffic():
        return service_traffic(pod.ns, vip, pod.ns, family)

    with rules(n0, family, ruleset, blackhole=vip):
        respect, moved, kernel = both_paths(c, traffic, n0, pod)
    assert respect == want, f"respect: {respect}, kernel path: {kernel}"
    assert kernel == want
    assert_all_via_stack(moved, "hairpin pod")


# --------------------------------------------------------------------------- 3. NodePort


def node_port(family: int, backend: str, masquerade: bool) -> str:
    """kube-proxy's NodePort: DNAT of <any local address>:30080 (fib daddr type local); eTP=Cluster
    also marks the packet and masquerades marked packets in POSTROUTING."""
    mark = "meta mark set 0x4000 " if masquerade else ""
    return nat_table(
        family,
        pre=[f"fib daddr type local tcp dport {NODE_PORT} {mark}dnat to {_to(backend, TARGET_PORT)}"],
        post=["meta mark 0x4000 masquerade"] if masquerade else (),
    )


@pytest.mark.parametrize("family", [4, 6])
def test_node_port_external_traffic_policy_local(k8s, family):
    """wire host -> nodeIP:30080, DNAT to the pod on this node: the pod sees the wire host's
    address, its replies must be un-DNATed (PASS_NAT on the backend's row) so the wire host
    gets them from nodeIP:30080. With the gate off they leave raw from pod:8080."""
    c = k8s
    n0 = c.nodes[0]
    backend = n0.pods[1]
    want = (SMALL, SMALL, WIRE_HOST[family])

    def traffic(timeout=TIMEOUT):
        return tcp_transfer(c.wire, ip(n0, family), NODE_PORT, backend.ns, TARGET_PORT, timeout=timeout)

    with rules(n0, family, node_port(family, ip(backend, family), masquerade=False)):
        respect, moved, kernel = both_paths(c, traffic, n0, backend)
        broken = gate_off_outcome(c, lambda: traffic(BROKEN_TIMEOUT)) if family == 4 else None
    assert respect == want, f"respect: {respect}, kernel path: {kernel}"
    assert kernel == want
    assert_all_via_stack(moved, "NodePort backend")
    if broken is not None:
        assert broken != want, "bypass delivered a DNAT flow correctly: the test proves nothing"


@pytest.mark.parametrize("where", ["same-node", "other-node"])
@pytest.mark.parametrize("family", [4, 6])
def test_node_port_external_traffic_policy_cluster(k8s, family, where):
    """wire host -> node 0's IP:30080, DNAT to a backend on node 0 or node 1, masqueraded to node
    0's address: the backend sees node 0's address, the wire host gets every byte back."""
    c = k8s
    n0, n1 = c.nodes
    backend, bnode = (n0.pods[1], n0) if where == "same-node" else (n1.pods[0], n1)
    want = (SMALL, SMALL, ip(n0, family))

    def traffic():
        return tcp_transfer(c.wire, ip(n0, family), NODE_PORT, backend.ns, TARGET_PORT)

    with rules(n0, family, node_port(family, ip(backend, family), masquerade=True)):
        respect, moved, kernel = both_paths(c, traffic, bnode, backend)
    assert respect == want, f"respect: {respect}, kernel path: {kernel}"
    assert kernel == want
    if where == "same-node":
        assert_all_via_stack(moved, "NodePort backend")
    else:  # node 1 sees an untranslated flow node0IP -> pod
        assert moved.get(Reason.PASS_NAT, 0) == 0, moved


# --------------------------------------------------------------------------- 4. hostPort


def host_port(family: int, backend: str) -> str:
    """The portmap plugin's effect: DNAT of <local address>:30443 in PREROUTING (from the wire and
    from pods) and OUTPUT (from the node itself)."""
    rule = f"fib daddr type local tcp dport {HOST_PORT} dnat to {_to(backend, TARGET_PORT)}"
    return nat_table(family, pre=[rule], out=[rule])


@pytest.mark.parametrize("source", ["wire-host", "pod-same-node", "pod-other-node", "node-itself"])
@pytest.mark.parametrize("family", [4, 6])
def test_host_port(k8s, family, source):
    """nodeIP:30443 -> backend pod on node 0 port 8080. The backend sees the client's own address
    (node 0's for the node itself); its replies are un-DNATed by the stack (PASS_NAT on its row).
    From a pod on the same node the gate is what keeps the reply from being redirected straight
    into the client pod un-DNATed (shown with the gate off)."""
    c = k8s
    n0, n1 = c.nodes
    backend = n0.pods[1]
    client_ns, client_ip = {
        "wire-host": (c.wire, WIRE_HOST[family]),
        "pod-same-node": (n0.pods[0].ns, ip(n0.pods[0], family)),
        "pod-other-node": (n1.pods[0].ns, ip(n1.pods[0], family)),
        "node-itself": (n0.ns, ip(n0, family)),
    }[source]
    want = (SMALL, SMALL, client_ip)

    def traffic(timeout=TIMEOUT):
        return tcp_transfer(client_ns, ip(n0, family), HOST_PORT, backend.ns, TARGET_PORT, timeout=timeout)

    with rules(n0, family, host_port(family, ip(backend, family))):
        respect, moved, kernel = both_paths(c, traffic, n0, backend)
        broken = None
        if source == "pod-same-node" and family == 4:
            broken = gate_off_outcome(c, lambda: traffic(BROKEN_TIMEOUT))
    assert respect == want, f"respect: {respect}, kernel path: {kernel}"
    assert kernel == want
    assert_all_via_stack(moved, "hostPort backend")
    if broken is not None:
        assert broken != want, "bypass delivered a DNAT flow correctly: the test proves nothing"


# --------------------------------------------------------------------------- 5. masquerade


def pod_masquerade(node, family: int) -> str:
    cidr = node.cidr4 if family == 4 else node.cidr6
    return nat_table(family, post=[f"{_l3(family)} saddr {cidr} {_l3(family)} daddr != {cidr} masquerade"])


@pytest.mark.parametrize("family", [4, 6])
def test_masquerade_pod_to_wire_host(k8s, family):
    """Pod -> wire host under `saddr <podCIDR> daddr != <podCIDR> masquerade`: the wire host sees
    node 0's address, a few MiB go both ways; the pod's packets go to the stack (PASS_NAT).
    With the gate off the SYN leaves unmasqueraded and the wire host sees the pod's address."""
    c = k8s
    n0 = c.nodes[0]
    pod = n0.pods[0]
    want = (BULK, BULK, ip(n0, family))

    def traffic():
        return tcp_transfer(pod.ns, WIRE_HOST[family], 47300, c.wire, 47300, up=BULK, down=BULK)

    with rules(n0, family, pod_masquerade(n0, family)):
        respect, moved, kernel = both_paths(c, traffic, n0, pod)
        broken = gate_off_outcome(c, traffic) if family == 4 else None
    assert respect == want, f"respect: {respect}, kernel path: {kernel}"
    assert kernel == want
    assert_all_via_stack(moved, "masqueraded pod")
    if broken is not None:
        assert broken[2] == ip(pod, family), f"bypass: the wire host saw {broken}"


@pytest.mark.parametrize("family", [4, 6])
def test_masquerade_wire_host_to_pod(k8s, family):
    """Wire host -> pod with the masquerade rule installed: inbound flows are not masqueraded and
    neither are their replies (the client's socket would not take them otherwise); the pod sees
    the wire host's address; a few MiB go both ways. The flow is untranslated, so once
    established it takes the fast path in both directions and nothing counts PASS_NAT."""
    c = k8s
    n0 = c.nodes[0]
    pod = n0.pods[0]
    want = (BULK, BULK, WIRE_HOST[family])

    def traffic():
        return tcp_transfer(c.wire, ip(pod, family), 47301, pod.ns, 47301, up=BULK, down=BULK)

    with rules(n0, family, pod_masquerade(n0, family)):
        respect, moved, kernel = both_paths(c, traffic, n0, pod)
    assert respect == want, f"respect: {respect}, kernel path: {kernel}"
    assert kernel == want
    assert moved.get(Reason.PASS_NAT, 0) == 0, moved
    assert moved.get(Reason.FWD_NIC_TO_POD, 0) > 0 and moved.get(Reason.FWD_POD_TO_NIC, 0) > 0, moved
