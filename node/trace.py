"""`xdpcnictl trace`: what the loaded datapath does with one packet, without sending it.

The packet is built with scapy (an expression such as "Ether()/IP(dst='10.244.1.5')/UDP(dport=53)",
or plain flags), the fields left open are filled in from the node (the NIC's MAC from the wire; the
pod's MACs and address from a pod), and it runs through the program with BPF_PROG_TEST_RUN, from
inside the node's network namespace.

The program that runs is a scratch copy of the attached one (datapath/objload.scratch_copy): the
same object, reading the node's pinned endpoints/ifaces/node_cfg/tx_ports, but counting into a
private counters map with monitor maps of its own. So the real counters and any running monitor
see nothing, and the copy's counters name the reason in the counters' words. The copy's program
tag is compared with the attached program's: equal tags mean the same instructions.

Not simulated: in TC mode the kernel moves a frame's outer VLAN tag into skb metadata before TC
ingress; a test run keeps it in the frame, so a tagged frame is traced as PASS_VLAN even when the
node config names the VLAN (the XDP program sees tags in the frame either way).
"""

from __future__ import annotations

import ast
import ctypes as ct
import ipaddress
import os
from dataclasses import dataclass, field

from datapath import abi, libbpf, objload
from datapath.abi import Reason
from datapath.build import OBJ_DIR
from datapath.endpoints import Endpoint, EndpointTable
from datapath.maps import PinnedMap
from datapath.pins import PinLayout

from . import pods

# Exit status by verdict, so scripts can branch on it (1 and 2 stay errors, as for every command).
EXIT_FAST_PATH = 0
EXIT_STACK = 3
EXIT_DROP = 4

# Defaults for a frame "from the wire": a locally administered peer MAC and documentation-range
# sources (never a pod's, never martian).
WIRE_PEER_MAC = "02:00:00:00:00:01"
WIRE_SRC_V4 = "192.0.2.1"
WIRE_SRC_V6 = "2001:db8:ffff::1"

XDP_ACTIONS = {0: "XDP_ABORTED", 1: "XDP_DROP", 2: "XDP_PASS", 3: "XDP_TX", 4: "XDP_REDIRECT"}
TC_ACTIONS = {0: "TC_ACT_OK", 2: "TC_ACT_SHOT", 7: "TC_ACT_REDIRECT", 0xFFFFFFFF: "TC_ACT_UNSPEC"}

# The counters' words (bpf/lib/consts.h enum xdpcni_reason), as `xdpcnictl stats` names them.
REASON_WORDS = {
    Reason.FWD_NIC_TO_POD: "NIC ingress delivered to a local pod",
    Reason.FWD_POD_TO_POD: "pod egress delivered to another local pod",
    Reason.FWD_POD_TO_NIC: "pod egress sent out through the FIB's device",
    Reason.PASS_NOT_IP: "ARP and other ethertypes",
    Reason.PASS_L2_DEST: "broadcast, multicast or another host's MAC",
    Reason.PASS_VLAN: "802.1Q/802.1ad tag (also priority tag) not named in the node config",
    Reason.PASS_BAD_HEADER: "truncated, bad version/IHL/checksum/length: the kernel drops it",
    Reason.PASS_IP_OPTIONS: "IPv4 options: the kernel router must process them",
    Reason.PASS_FRAGMENT: "IPv4 fragment",
    Reason.PASS_EXT_HEADER: "IPv6 hop-by-hop, routing, fragment or destination options",
    Reason.PASS_MARTIAN: "martian address (loopback, multicast, link-local...) or a local source from the wire",
    Reason.PASS_TTL: "TTL/hop limit <= 1: the kernel answers ICMP time exceeded",
    Reason.PASS_NO_ENDPOINT: "destination is not a local pod (the node itself, unknown)",
    Reason.PASS_FIB: "FIB lookup did not give a forwardable next hop",
    Reason.PASS_PADDING: "frame longer than the IP packet and could not be trimmed",
    Reason.DROP_SPOOF_MAC: "pod sent with a source MAC that is not its own",
    Reason.DROP_SPOOF_IP: "pod sent with a source IP that is not its own",
    Reason.DROP_REDIRECT: "redirect target missing (map out of step)",
    Reason.PASS_POLICY: "the endpoint's flags send this direction through the stack",
    Reason.PASS_MTU: "larger than the target's MTU: the stack fragments or sends ICMP",
    Reason.PASS_CONNTRACK: "no assured, established conntrack entry for the flow (yet)",
    Reason.PASS_NAT: "conntrack translates the flow (DNAT, SNAT, IPVS): the stack must",
    Reason.PASS_PROTO: "not TCP/UDP, or TCP SYN/FIN/RST: conntrack must see it",
    Reason.DROP_VLAN: "pod sent an 802.1Q/802.1ad-tagged frame (VLAN hopping)",
}


class TraceError(RuntimeError):
    pass


class SkbCtx(ct.Structure):
    """Leading fields of struct __sk_buff: the ones BPF_PROG_TEST_RUN takes for a TC program (the
    kernel requires the others to be zero and accepts a shorter context)."""

    _fields_ = [
        (n, ct.c_uint32)
        for n in (
            "len",
            "pkt_type",
            "mark",
            "queue_mapping",
            "protocol",
            "vlan_present",
            "vlan_tci",
            "vlan_proto",
            "priority",
            "ingress_ifindex",
            "ifindex",
        )
    ]


# --------------------------------------------------------------------------- building the packet

_SCAPY_NAMES = (
    "Ether",
    "Dot1Q",
    "Dot1AD",
    "ARP",
    "IP",
    "IPv6",
    "UDP",
    "TCP",
    "ICMP",
    "ICMPv6EchoRequest",
    "ICMPv6EchoReply",
    "IPv6ExtHdrFragment",
    "IPv6ExtHdrHopByHop",
    "IPv6ExtHdrRouting",
    "IPv6ExtHdrDestOpt",
    "IPOption_RR",
    "Raw",
    "Padding",
)


def _scapy_namespace() -> dict:
    from scapy import packet
    from scapy.layers import inet, inet6, l2

    ns = {}
    for mod in (l2, inet, inet6, packet):
        for name in _SCAPY_NAMES:
            if hasattr(mod, name):
                ns[name] = getattr(mod, name)
    return ns


_ALLOWED_NODES = (
    ast.Expression,
    ast.BinOp,
    ast.Div,
    ast.Call,
    ast.Name,
    ast.Load,
    ast.keyword,
    ast.Constant,
    ast.List,
    ast.Tuple,
    ast.UnaryOp,
    ast.USub,
    ast.Mult,
    ast.Add,
)


def parse_packet(expr: str):
    """A scapy expression made only of layer calls, `/`, literals (and `*`/`+` for payload bytes):
    checked node by node before it is evaluated, with no builtins. Raises TraceError."""
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as exc:
        raise TraceError(f"packet {expr!r}: {exc.msg}") from exc
    names = _scapy_namespace()
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            raise TraceError(
                f"packet {expr!r}: {type(node).__name__} is not allowed (layers, / and literals)"
            )
        if isinstance(node, ast.Name) and node.id not in names:
            raise TraceError(
                f"packet {expr!r}: unknown layer {node.id!r} (known: {', '.join(sorted(names))})"
            )
        if isinstance(node, ast.Call) and not isinstance(node.func, ast.Name):
            raise TraceError(f"packet {expr!r}: only layer calls such as IP(dst='...') are allowed")
    try:
        return eval(compile(tree, "<packet>", "eval"), {"__builtins__": {}}, names)  # noqa: S307 (checked above)
    except Exception as exc:
        raise TraceError(f"packet {expr!r}: {exc}") from exc


def packet_from_flags(dst: str, src: str | None, proto: str, sport: int | None, dport: int | None, ttl: int):
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
    from scapy.packet import Raw

    v6 = ipaddress.ip_address(dst).version == 6
    l3 = IPv6(dst=dst, hlim=ttl) if v6 else IP(dst=dst, ttl=ttl)
    if src:
        l3.src = src
    if proto == "udp":
        l4 = UDP(sport=sport or 40000, dport=dport or 53)
    elif proto == "tcp":
        l4 = TCP(sport=sport or 40000, dport=dport or 80, flags="A", seq=1, ack=1)
    elif proto == "icmp":
        l4 = ICMPv6EchoRequest(id=1, seq=1) if v6 else ICMP(type=8, id=1, seq=1)
    else:
        raise TraceError(f"--proto {proto!r}: use udp, tcp or icmp")
    return l3 / l4 / Raw(b"xdpcni-trace")


def complete(pkt, *, nic_mac: str, pod: Endpoint | None):
    """Fill in what the sender would: an Ethernet header when there is none, its MACs (from the
    wire: peer -> NIC; from a pod: pod -> its host veth), the IP source (the pod's own address of
    that family; from the wire a documentation address)."""
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import ARP, Ether

    if not isinstance(pkt, Ether):
        pkt = Ether() / pkt
    eth = pkt[Ether]
    src_mac = pod.pod_mac if pod else WIRE_PEER_MAC
    dst_mac = pod.host_mac if pod else nic_mac
    if "dst" not in eth.fields:
        eth.dst = dst_mac
    if "src" not in eth.fields:
        eth.src = src_mac
    for layer, fam in ((IP, 4), (IPv6, 6)):
        if layer in pkt and "src" not in pkt[layer].fields:
            own = [a for a in (pod.ips if pod else []) if ipaddress.ip_address(a).version == fam]
            pkt[layer].src = own[0] if own else (WIRE_SRC_V4 if fam == 4 else WIRE_SRC_V6)
    if ARP in pkt:
        arp = pkt[ARP]
        if "hwsrc" not in arp.fields:
            arp.hwsrc = src_mac
        if "psrc" not in arp.fields:
            own4 = [a for a in (pod.ips if pod else []) if ipaddress.ip_address(a).version == 4]
            arp.psrc = own4[0] if own4 else WIRE_SRC_V4
    return pkt


# --------------------------------------------------------------------------- the header diff


def header_fields(raw: bytes) -> dict:
    """The fields a forwarding decision may change, by name (absent when the frame has none)."""
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Dot1AD, Dot1Q, Ether

    out: dict = {"frame.len": len(raw)}
    try:
        pkt = Ether(raw)
    except Exception:
        return out
    out["eth.dst"], out["eth.src"] = pkt.dst, pkt.src
    tag = pkt.getlayer(Dot1Q) or pkt.getlayer(Dot1AD)
    out["vlan"] = tag.vlan if tag is not None else None
    if IP in pkt:
        ip = pkt[IP]
        out.update({"ip.src": ip.src, "ip.dst": ip.dst, "ip.ttl": ip.ttl, "ip.chksum": f"{ip.chksum:#06x}"})
        out["ip.len"] = ip.len
    elif IPv6 in pkt:
        ip6 = pkt[IPv6]
        out.update({"ip6.src": ip6.src, "ip6.dst": ip6.dst, "ip6.hlim": ip6.hlim, "ip6.plen": ip6.plen})
    return out


def header_diff(before: bytes, after: bytes) -> list[dict]:
    a, b = header_fields(before), header_fields(after)
    return [
        {"field": k, "before": a.get(k), "after": b.get(k)}
        for k in dict.fromkeys([*a, *b])
        if a.get(k) != b.get(k)
    ]


# --------------------------------------------------------------------------- running it


@dataclass
class TraceResult:
    program: str
    mode: str
    attached_mode: str | None
    prog_id: int | None
    same_code: bool | None  # the scratch copy's tag equals the attached program's
    retval: int
    verdict: str  # XDP_/TC_ action name
    outcome: str  # fast-path | stack | drop
    reason: str | None  # counters' name, lowercase
    reason_words: str | None
    counted_on: dict  # identity of the counters row
    target: dict | None  # where a forwarded packet goes
    next: str
    diff: list = field(default_factory=list)
    frame_in: str = ""
    frame_out: str = ""
    summary: str = ""

    @property
    def exit_status(self) -> int:
        return {"fast-path": EXIT_FAST_PATH, "stack": EXIT_STACK, "drop": EXIT_DROP}[self.outcome]

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["exit_status"] = self.exit_status
        return d


def _scratch_counts(obj, ep_ids) -> list[tuple[int, Reason, int, int]]:
    fd = obj.map_fd("counters")
    ncpu = libbpf.num_possible_cpus()
    stride = (ct.sizeof(abi.Counter) + 7) & ~7
    out = []
    for ep_id in sorted(set(ep_ids)):
        for reason in Reason:
            buf = (ct.c_uint8 * (stride * ncpu))()
            if not libbpf.map_lookup(fd, ct.c_uint32(ep_id * abi.REASON_MAX + int(reason)), buf):
                continue
            raw = bytes(buf)
            cs = [abi.Counter.from_buffer_copy(raw, i * stride) for i in range(ncpu)]
            pk = sum(c.packets for c in cs)
            if pk:
                out.append((ep_id, reason, pk, sum(c.bytes for c in cs)))
    return out


def _route_oif(dst: str) -> str | None:
    from pyroute2 import IPRoute

    try:
        with IPRoute() as ipr:
            routes = ipr.route("get", dst=dst)
            oif = routes[0].get_attr("RTA_OIF") if routes else None
        return pods.veth_name(oif) if oif else None
    except Exception:
        return None


def trace(
    root: str,
    pkt,
    *,
    from_pod: str | None = None,
    mode: str | None = None,
    obj_dir: str | None = None,
    exact: bool = False,
) -> TraceResult:
    """Run `pkt` (scapy packet, or bytes; completed here unless exact) through the loaded program;
    nothing is sent."""
    from datapath.loader import NodeState

    layout = PinLayout(root)
    if not layout.is_loaded():
        raise TraceError(f"nothing loaded under {root}: run `xdpcnictl load` first")
    state = NodeState.read(root)
    with EndpointTable(root) as table:
        eps = table.list()
        with PinnedMap(layout, "node_cfg") as m:
            cfg = m.get(0)
        ep_rows = {info.ep_id for _, info in table.endpoints.items()} | {ep.ep_id for ep in eps} | {0}
    nic_mac = abi.mac_to_str(cfg.nic_mac)
    pod = pods.find_endpoint(from_pod, eps) if from_pod else None
    exact = exact or isinstance(pkt, bytes | bytearray)
    frame = bytes(pkt) if exact else bytes(complete(pkt, nic_mac=nic_mac, pod=pod))
    pkt = _dissect(frame)

    attached_mode = state.mode if state else None
    if pod is not None:
        program = "tc_pod"
        mode = "tc"
        ctx = SkbCtx(ingress_ifindex=pod.ifindex, ifindex=pod.ifindex)
    else:
        mode = mode or attached_mode or "tc"
        program = "xdp_nic" if mode == "xdp" else "tc_nic"
        nic_ifindex = cfg.nic_ifindex
        if mode == "xdp":
            ctx = libbpf.XdpMd(data=0, data_end=len(frame), ingress_ifindex=nic_ifindex)
        else:
            ctx = SkbCtx(ingress_ifindex=nic_ifindex, ifindex=nic_ifindex)

    obj_path = os.path.join(obj_dir or str(OBJ_DIR), f"{program}.o")
    if not os.path.exists(obj_path):
        raise TraceError(f"{obj_path} is missing: trace runs the clang build (make -C bpf)")
    obj = objload.scratch_copy(obj_path, layout.maps_dir)
    try:
        fd = obj.prog_fd(program)
        prog_id = same = None
        try:
            pfd = libbpf.obj_get(layout.prog(program))
            try:
                attached = libbpf.prog_info(pfd)
                prog_id = attached.id
                same = bytes(attached.tag) == bytes(libbpf.prog_info(fd).tag)
            finally:
                os.close(pfd)
        except OSError:
            pass
        retval, out, _ = libbpf.prog_test_run(fd, frame, ctx=ctx)
        counted = _scratch_counts(obj, ep_rows)
    finally:
        obj.close()

    verdict = (XDP_ACTIONS if program.startswith("xdp") else TC_ACTIONS).get(retval, f"action {retval}")
    reason = counted[0][1] if len(counted) == 1 else None
    row_ep = counted[0][0] if len(counted) == 1 else None
    if reason is not None:
        outcome = {"fwd": "fast-path", "pass": "stack", "drop": "drop"}[reason.verdict]
    elif verdict.endswith("REDIRECT"):  # returned before counting (no node config): the action decides
        outcome = "fast-path"
    elif verdict in ("XDP_ABORTED", "XDP_DROP", "TC_ACT_SHOT"):
        outcome = "drop"
    else:
        outcome = "stack"
    by_id = {e.ep_id: e for e in eps}
    counted_on = pods.identity(by_id.get(row_ep)) if row_ep else pods.identity(None)
    if row_ep and row_ep not in by_id:
        counted_on = {
            "pod": f"ep {row_ep} (not in the endpoint table)",
            "veth": None,
            "ips": [],
            "ep_id": row_ep,
        }

    target, nxt = None, ""
    dst_ip = _dst_ip(pkt)
    if reason in (Reason.FWD_NIC_TO_POD, Reason.FWD_POD_TO_POD):
        dst_ep = next((e for e in eps if dst_ip and dst_ip in e.ips), None)
        target = pods.identity(dst_ep) if dst_ep else None
        how = "XDP devmap redirect" if program == "xdp_nic" else "bpf_redirect_peer"
        nxt = f"delivered into pod {pods.describe(dst_ep)} (its eth0), through {how}: no host stack"
    elif reason == Reason.FWD_POD_TO_NIC:
        oif = _route_oif(dst_ip) if dst_ip else None
        target = {"device": oif}
        how = "bpf_fib_lookup + bpf_redirect"
        if out and out[:12] == bytes(12):  # BPF_FIB_LKUP_RET_NO_NEIGH: MACs come from the neighbour table
            how = "bpf_fib_lookup + bpf_redirect_neigh: the kernel resolves the next hop and writes the MACs"
        nxt = f"sent out of {oif or 'the FIB device'} ({how}): no host stack"
    elif outcome == "stack":
        nxt = "handed to the node's kernel stack, which decides as without xdpcni (route, netfilter, ICMP)"
    else:
        nxt = "dropped here" + (f", counted {reason.name.lower()}" if reason is not None else "")

    return TraceResult(
        program=program,
        mode=mode,
        attached_mode=attached_mode,
        prog_id=prog_id,
        same_code=same,
        retval=retval,
        verdict=verdict,
        outcome=outcome,
        reason=reason.name.lower() if reason is not None else None,
        reason_words=REASON_WORDS.get(reason) if reason is not None else None,
        counted_on=counted_on,
        target=target,
        next=nxt,
        diff=header_diff(frame, out) if out else [],
        frame_in=frame.hex(),
        frame_out=out.hex(),
        summary=pkt.summary(),
    )


def _dissect(frame: bytes):
    import scapy.layers.inet  # noqa: F401 (binds IP to Ether: dissection needs the bindings)
    import scapy.layers.inet6  # noqa: F401
    from scapy.layers.l2 import Ether

    return Ether(frame)


def _dst_ip(pkt) -> str | None:
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6

    if IP in pkt:
        return pkt[IP].dst
    if IPv6 in pkt:
        return str(ipaddress.ip_address(pkt[IPv6].dst))
    return None


def render(r: TraceResult) -> str:
    lines = [f"packet   {r.summary}"]
    attached = (
        f"attached prog id {r.prog_id}, {'same code' if r.same_code else 'DIFFERENT code from the clang build'}"
        if r.prog_id
        else "not attached"
    )
    note = (
        ""
        if r.attached_mode in (None, r.mode) or r.program == "tc_pod"
        else f" (the NIC runs {r.attached_mode})"
    )
    lines.append(f"program  {r.program} ({r.mode} hook{note}; {attached})")
    lines.append(f"verdict  {r.verdict} (return value {r.retval}): {r.outcome}")
    if r.reason:
        lines.append(f"reason   {r.reason}: {r.reason_words}")
    lines.append(f"counted  on {r.counted_on['pod']}'s row (ep {r.counted_on['ep_id']})")
    if r.target:
        if "pod" in r.target:
            lines.append(
                f"target   pod {r.target['pod']} veth {r.target['veth']} ({' '.join(r.target['ips'])})"
            )
        else:
            lines.append(f"target   device {r.target.get('device')}")
    if r.diff:
        lines.append("rewritten headers:")
        for d in r.diff:
            lines.append(f"  {d['field']:<10} {d['before']!s:>20}  ->  {d['after']!s}")
    else:
        lines.append("rewritten headers: none (the frame left the program unchanged)")
    lines.append(f"next     {r.next}")
    return "\n".join(lines)
