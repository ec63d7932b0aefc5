"""datapath/rtnl.py's wire format: the bytes every request type puts on the socket, pinned.

The expected hex was captured from the hand-rolled struct codec before datapath/rtnl.py moved onto
pyroute2's message classes; the port must produce the same requests. Where pyroute2 cannot encode
a message identically (only IFLA_XDP: pyroute2 marks the nest NLA_F_NESTED, the old codec did not;
the kernel takes either) both are decoded with pyroute2 and the decoded fields compared. Since
then the veth creation asks for the kernel's echo (NLM_F_ECHO: flags 0x060d, was 0x0605), and in
a batch only the last request asks for an ack (the others' NLM_F_ACK bit is clear; a checker
confirmed nothing else changed).
A fake socket records what is sent and answers every request with an ack, so nothing here needs a
namespace or privileges.
"""

from __future__ import annotations

import errno
import functools
import socket
import string
import struct
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from datapath import rtnl

_HDR = struct.Struct("=IHHII")
_NLA_F_NESTED = 0x8000


class FakeSock:
    """Records each sendall(); answers as the kernel does (netlink_rcv_skb): an NLMSG_ERROR
    carrying `errors[type]` (default 0) for a request that asked for an ack (NLM_F_ACK) or
    failed, after `replies[type]`'s messages (bodies) for a dump-like get."""

    def __init__(self, replies: dict[int, list[bytes]] | None = None, errors: dict[int, int] | None = None):
        self.sent: list[bytes] = []
        self.pending = b""
        self.replies = replies or {}
        self.errors = errors or {}

    def sendall(self, data) -> None:
        data = bytes(data)
        self.sent.append(data)
        off = 0
        while off + 16 <= len(data):
            n, kind, flags, seq, pid = _HDR.unpack_from(data, off)
            for body in self.replies.get(kind, []):
                self.pending += _HDR.pack(16 + len(body), rtnl.RTM_NEWLINK, 0, seq, 0) + body
            code = self.errors.get(kind, 0)
            if flags & rtnl.NLM_F_ACK or code:
                err = struct.pack("=i", -code) + data[off : off + 16]
                self.pending += _HDR.pack(16 + len(err), rtnl.NLMSG_ERROR, 0, seq, 0) + err
            off += (n + 3) & ~3

    send = sendall

    def recv(self, bufsize: int) -> bytes:
        out, self.pending = self.pending[:bufsize], self.pending[bufsize:]
        return out

    def recv_into(self, buf) -> int:
        out = self.recv(len(buf))
        buf[: len(out)] = out
        return len(out)

    def close(self) -> None:
        pass


def _rtnl(sock: FakeSock | None = None) -> rtnl.Rtnl:
    return rtnl.Rtnl(sock=sock or FakeSock())


HOST_MAC, PEER_MAC = "02:11:22:33:44:55", "0a:66:77:88:99:aa"


def _veth(nl: rtnl.Rtnl) -> None:
    nl.create_veth("xdp1a2b3c4d5e6f", HOST_MAC, "eth0", PEER_MAC, 7, 1450, alias="xdpcni:pod-abc")
    nl.flush()


def _veth_plain(nl: rtnl.Rtnl) -> None:
    nl.create_veth("veth0", HOST_MAC, "eth1", PEER_MAC, 12, 9000, up=False)
    nl.flush()


def _set_up(nl: rtnl.Rtnl) -> None:
    nl.set_up(1)
    nl.set_up(42)
    nl.flush()


def _set_xdp(nl: rtnl.Rtnl) -> None:
    nl.set_xdp(42, 9, 4)
    nl.set_xdp(43, -1, 2)
    nl.flush()


def _delete(nl: rtnl.Rtnl) -> None:
    assert nl.delete_link(42) is True


def _addrs(nl: rtnl.Rtnl) -> None:
    nl.add_addr(42, "10.244.1.7", 32)
    nl.add_addr(42, "fd00:10:244::7", 128, flags=0x02)  # IFA_F_NODAD: fits the header byte
    nl.add_addr(42, "fd00:10:244::8", 64, flags=0x200 | 0x02)  # NOPREFIXROUTE: IFA_FLAGS too
    nl.add_addr(42, "192.168.9.1", 24, flags=0x100)
    nl.flush()


def _routes(nl: rtnl.Rtnl) -> None:
    nl.replace_route("169.254.1.1", 32, 42, scope=rtnl.RT_SCOPE_LINK)
    nl.replace_route("0.0.0.0", 0, 42, gateway="169.254.1.1")
    nl.replace_route("::", 0, 42, gateway="fe80::1")
    nl.replace_route("fd00:10:244::7", 128, 42, scope=rtnl.RT_SCOPE_LINK)
    nl.replace_route("10.244.1.0", 24, 42, gateway="10.0.0.2")
    nl.flush()


def _neighs(nl: rtnl.Rtnl) -> None:
    nl.replace_neigh(42, "169.254.1.1", HOST_MAC)
    nl.replace_neigh(42, "fe80::1", HOST_MAC)
    nl.replace_neigh(43, "10.244.1.7", PEER_MAC, state=0x02)
    nl.flush()


def _tc(nl: rtnl.Rtnl) -> None:
    nl.add_clsact(42)
    nl.replace_bpf_filter(42, 11, "xdpcni_tc_pod", handle=1, prio=1)
    nl.replace_bpf_filter(43, 12, "x", handle=0x10, prio=3)
    nl.flush()


def _get_by_name(nl: rtnl.Rtnl) -> None:
    assert nl.get_link("eth0") is None  # an ack with no link message: None


def _get_by_index(nl: rtnl.Rtnl) -> None:
    assert nl.get_link(index=42) is None


CASES = {
    "create_veth": _veth,
    "create_veth_plain": _veth_plain,
    "set_up": _set_up,
    "set_xdp": _set_xdp,
    "delete_link": _delete,
    "add_addr": _addrs,
    "replace_route": _routes,
    "replace_neigh": _neighs,
    "tc": _tc,
    "get_link_name": _get_by_name,
    "get_link_index": _get_by_index,
}


def capture(name: str) -> list[str]:
    nl = _rtnl()
    CASES[name](nl)
    return [b.hex() for b in nl.sock.sent]


# fmt: off
EXPECTED: dict[str, list[str]] = {
    "add_addr": [
        "28000000140001060100000000000000022000002a000000080002000af40107080001000af40107400000001400010602000000000000000a8002002a00000014000200fd00001002440000000000000000000714000100fd000010024400000000000000000007480000001400010603000000000000000a4002002a00000014000200fd00001002440000000000000000000814000100fd000010024400000000000000000008080008000202000030000000140005060400000000000000021800002a00000008000200c0a8090108000100c0a809010800080000010000",
    ],
    "create_veth": [
        "9800000010000d06010000000000000000000000000000000100000001000000140003007864703161326233633464356536660008000400aa0500000a000100021122334455000050001200090001007665746800000000400002003c0001000000000000000000000000000000000009000300657468300000000008000400aa0500000a0001000a66778899aa000008001c0007000000",
        "4800000013000500020000000000000000000000000000000000000000000000140003007864703161326233633464356536660013001400786470636e693a706f642d6162630000",
    ],
    "create_veth_plain": [
        "9000000010000d060100000000000000000000000000000000000000000000000a000300766574683000000008000400282300000a000100021122334455000050001200090001007665746800000000400002003c0001000000000000000000000000000000000009000300657468310000000008000400282300000a0001000a66778899aa000008001c000c000000",
    ],
    "delete_link": [
        "20000000110005000100000000000000000000002a0000000000000000000000",
    ],
    "get_link_index": [
        "28000000120005000100000000000000000000002a000000000000000000000008001d0008000000",
    ],
    "get_link_name": [
        "340000001200050001000000000000000000000000000000000000000000000008001d0008000000090003006574683000000000",
    ],
    "replace_neigh": [
        "300000001c0001050100000000000000020000002a0000008000000008000100a9fe01010a00020002112233445500003c0000001c00010502000000000000000a0000002a0000008000000014000100fe8000000000000000000000000000010a0002000211223344550000300000001c0005050300000000000000020000002b00000002000000080001000af401070a0002000a66778899aa0000",
    ],
    "replace_route": [
        "2c00000018000105010000000000000002200000fe04fd010000000008000100a9fe0101080004002a0000002c00000018000105020000000000000002000000fe04000100000000080004002a00000008000500a9fe0101380000001800010503000000000000000a000000fe04000100000000080004002a00000014000500fe800000000000000000000000000001380000001800010504000000000000000a800000fe04fd010000000014000100fd000010024400000000000000000007080004002a0000003400000018000505050000000000000002180000fe04000100000000080001000af40100080004002a000000080005000a000002",
    ],
    "set_up": [
        "200000001000010001000000000000000000000001000000010000000100000020000000100005000200000000000000000000002a0000000100000001000000",
    ],
    "set_xdp": [
        "34000000130001000100000000000000000000002a000000000000000000000014002b800800010009000000080003000400000034000000130005000200000000000000000000002b000000000000000000000014002b8008000100ffffffff0800030002000000",
    ],
    "tc": [
        "30000000240001060100000000000000000000002a0000000000fffff1ffffff000000000b000100636c7361637400005c0000002c0001050200000000000000000000002a00000001000000f2ffffff00030100080001006270660030000200080006000b00000012000700786470636e695f74635f706f6400000008000800010000000800030001000000500000002c0005050300000000000000000000002b00000010000000f2ffffff00030300080001006270660024000200080006000c000000060007007800000008000800010000000800030001000000",
    ],
}
# fmt: on

# Requests whose bytes pyroute2 cannot reproduce exactly: compared decoded (see the docstring).
DECODED_ONLY = {"set_xdp"}


def _messages(raw: bytes) -> list[bytes]:
    out, off = [], 0
    while off + 16 <= len(raw):
        n = _HDR.unpack_from(raw, off)[0]
        out.append(raw[off : off + n])
        off += (n + 3) & ~3
    return out


def _decoded(raw: bytes) -> list:
    out = []
    for m in _messages(raw):
        msg = ifinfmsg(m)
        msg.decode()
        xdp = msg.get_attr("IFLA_XDP")
        out.append(
            (
                tuple(msg["header"][k] for k in ("length", "type", "flags", "sequence_number", "pid")),
                tuple(msg[k] for k in ("family", "ifi_type", "index", "flags", "change")),
                [a[0] for a in msg["attrs"]],
                [(a[0], a[1]) for a in xdp["attrs"]] if xdp else None,
            )
        )
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_request_bytes(name):
    got = capture(name)
    want = EXPECTED[name]
    if name in DECODED_ONLY:
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert _decoded(bytes.fromhex(g)) == _decoded(bytes.fromhex(w))
    else:
        assert got == want


def test_set_xdp_nest_type():
    """IFLA_XDP's nest carries IFLA_XDP_FD (s32) then IFLA_XDP_FLAGS (u32), whatever its flag bit."""
    raw = bytes.fromhex(capture("set_xdp")[0])
    first = _messages(raw)[0]
    n, kind = struct.unpack_from("=HH", first, 32)
    assert kind & ~_NLA_F_NESTED == rtnl.IFLA_XDP
    assert first[36:52] == struct.pack("=HHiHHI", 8, rtnl.IFLA_XDP_FD, 9, 8, rtnl.IFLA_XDP_FLAGS, 4)


def _newlink_reply(index: int, flags: int, attrs: list) -> bytes:
    msg = ifinfmsg()
    msg["family"] = socket.AF_UNSPEC
    msg["index"] = index
    msg["flags"] = flags
    msg["change"] = 0
    msg["attrs"] = attrs
    msg["header"]["type"] = rtnl.RTM_NEWLINK
    msg.encode()
    return bytes(msg.data[16 : msg["header"]["length"]])


def test_get_link_decodes_the_reply():
    body = _newlink_reply(
        42,
        rtnl.IFF_UP | 0x1000,
        [
            ("IFLA_IFNAME", "xdp1a2b3c4d5e6f"),
            ("IFLA_MTU", 1450),
            ("IFLA_ADDRESS", HOST_MAC),
            ("IFLA_IFALIAS", "xdpcni:pod-abc"),
            ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "veth")]}),
        ],
    )
    nl = _rtnl(FakeSock(replies={rtnl.RTM_GETLINK: [body]}))
    link = nl.get_link("xdp1a2b3c4d5e6f")
    assert isinstance(link, rtnl.Link)
    assert (link.index, link.ifname, link.mac, link.alias, link.kind, link.flags) == (
        42,
        "xdp1a2b3c4d5e6f",
        HOST_MAC,
        "xdpcni:pod-abc",
        "veth",
        rtnl.IFF_UP | 0x1000,
    )


def test_get_link_decodes_a_bare_reply():
    """No alias, no link info (as lo): empty alias, kind None."""
    body = _newlink_reply(1, rtnl.IFF_UP, [("IFLA_IFNAME", "lo"), ("IFLA_ADDRESS", "00:00:00:00:00:00")])
    nl = _rtnl(FakeSock(replies={rtnl.RTM_GETLINK: [body]}))
    link = nl.get_link(index=1)
    assert (link.index, link.ifname, link.mac, link.alias, link.kind, link.flags) == (
        1,
        "lo",
        "00:00:00:00:00:00",
        "",
        None,
        rtnl.IFF_UP,
    )


def test_get_link_missing_is_none():
    nl = _rtnl(FakeSock(errors={rtnl.RTM_GETLINK: errno.ENODEV}))
    assert nl.get_link("nope") is None


def test_refusals_raise_in_order_after_all_acks():
    sock = FakeSock(errors={rtnl.RTM_NEWROUTE: errno.ENETUNREACH, rtnl.RTM_NEWQDISC: errno.EEXIST})
    nl = _rtnl(sock)
    nl.add_clsact(42)  # EEXIST is fine for clsact
    nl.replace_neigh(42, "169.254.1.1", HOST_MAC)
    nl.replace_route("0.0.0.0", 0, 42, gateway="169.254.1.1")
    with pytest.raises(rtnl.NetlinkError) as exc:
        nl.flush()
    assert exc.value.code == errno.ENETUNREACH
    assert len(sock.sent) == 1 and sock.pending == b""  # one send, every ack read


def test_delete_link_gone_is_false():
    nl = _rtnl(FakeSock(errors={rtnl.RTM_DELLINK: errno.ENODEV}))
    assert nl.delete_link(42) is False


def test_refusal_of_an_unacked_request_in_the_middle_raises():
    """Only the last request of a batch asks for an ack: a refusal earlier in the batch still
    arrives (the kernel answers failures unasked) and is raised once the batch is done."""
    sock = FakeSock(errors={rtnl.RTM_NEWNEIGH: errno.EINVAL})
    nl = _rtnl(sock)
    nl.add_clsact(42)
    nl.replace_neigh(42, "169.254.1.1", HOST_MAC)
    nl.replace_route("0.0.0.0", 0, 42, gateway="169.254.1.1")
    with pytest.raises(rtnl.NetlinkError) as exc:
        nl.flush()
    assert exc.value.code == errno.EINVAL
    flags = [struct.unpack_from("=H", m, 6)[0] for m in _messages(sock.sent[0])]
    assert [bool(f & rtnl.NLM_F_ACK) for f in flags] == [False, False, True]
    assert sock.pending == b""


def test_repeated_requests_reuse_pyroute2s_bytes_with_their_own_sequence_number(monkeypatch):
    """lo/eth0 up and the pod's routes are the same in every ADD: after pyroute2 encoded one (here
    under sequence numbers from 1001 on), the same request is sent from those bytes with the new
    request's sequence number, byte-identical to a fresh encode (the pinned bytes), without
    building a message at all."""
    rtnl._ENCODED.clear()
    primer = _rtnl()
    primer.seq = 1000
    for name in ("set_up", "replace_route"):
        CASES[name](primer)
    assert not any(key[2][0] == "route" for key in rtnl._ENCODED)  # routes only when they repeat
    with monkeypatch.context() as m:
        m.setattr(rtnl.Rtnl, "replace_route", functools.partialmethod(rtnl.Rtnl.replace_route, repeats=True))
        CASES["replace_route"](primer)
    assert any(key[2][0] == "route" for key in rtnl._ENCODED)
    assert primer.sock.sent[0][8:12] == (1001).to_bytes(4, sys.byteorder)

    def no_building(*args, **kwargs):
        raise AssertionError("built a message that was encoded before")

    monkeypatch.setattr(rtnl, "_ifinfo", no_building)
    monkeypatch.setattr(rtnl.Rtnl, "_route", staticmethod(no_building))
    monkeypatch.setattr(
        rtnl.Rtnl, "replace_route", functools.partialmethod(rtnl.Rtnl.replace_route, repeats=True)
    )
    assert capture("set_up") == EXPECTED["set_up"]
    assert capture("replace_route") == EXPECTED["replace_route"]


def test_the_encoded_cache_is_bounded(monkeypatch):
    rtnl._ENCODED.clear()
    monkeypatch.setattr(rtnl, "_ENCODED_MAX", 3)
    nl = _rtnl()
    for i in range(10):
        nl.set_up(100 + i)
    nl.flush()
    assert 0 < len(rtnl._ENCODED) <= 3


# -- templates (use_templates: the node agent) ------------------------------------------------------
def _per_pod_requests(nl: rtnl.Rtnl, v: dict) -> None:
    """Every request ADD/DEL sends with per-pod values, those values taken from `v`."""
    nl.create_veth(v["host"], v["mac1"], v["pod"], v["mac2"], v["fd"], v["mtu"], alias=v["alias"])
    nl.add_addr(v["index"], v["ip4"], 32)
    nl.add_addr(v["index"], v["ip6"], 128, flags=0x02)
    nl.replace_route(v["ip4"], 32, v["index"], scope=rtnl.RT_SCOPE_LINK)
    nl.replace_route(v["ip6"], 128, v["index"], scope=rtnl.RT_SCOPE_LINK)
    nl.replace_route(v["ip4"], 24, v["index"], gateway=v["gw4"])
    nl.replace_neigh(v["index"], v["ip4"], v["mac1"])
    nl.replace_neigh(v["index"], v["ip6"], v["mac2"])
    nl.add_clsact(v["index"])
    nl.replace_bpf_filter(v["index"], v["fd"], "xdpcni_tc_pod")
    nl.flush()
    nl.delete_link(v["index"])
    nl.get_link(v["pod"])
    nl.get_link(index=v["index"])


def _sent(v: dict, templates: bool) -> list[bytes]:
    rtnl.use_templates(templates)
    try:
        nl = _rtnl()
        _per_pod_requests(nl, v)
        return nl.sock.sent
    finally:
        rtnl.use_templates(False)


_FIRST = {
    "host": "xc0123456789a", "pod": "eth0", "alias": "xdpcni:0123 net/cid/eth0 pod=default/web-0",
    "mac1": HOST_MAC, "mac2": PEER_MAC, "fd": 7, "mtu": 1450, "index": 42,
    "ip4": "10.244.1.7", "ip6": "fd00:10:244::7", "gw4": "10.244.1.1",
}  # fmt: skip


def test_templates_are_made_for_every_per_pod_request():
    rtnl._ENCODED.clear()
    assert _sent(_FIRST, True) == _sent(_FIRST, False)
    shapes = {key[2][0] for key, got in rtnl._ENCODED.items() if isinstance(got, rtnl._Template)}
    assert shapes == {"veth", "alias", "addr", "route-to", "neigh", "clsact", "bpf-filter", "del"} | {
        "link-by-name",
        "link-by-index",
    }


_names = st.text(alphabet=string.ascii_letters + string.digits + "-_.", min_size=1, max_size=15)
_macs = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))


@settings(max_examples=60, deadline=None)
@given(
    host=_names,
    pod=_names,
    alias=st.text(alphabet=string.printable, min_size=1, max_size=200),
    mac1=_macs,
    mac2=_macs,
    fd=st.integers(0, 2**31 - 1),
    mtu=st.integers(68, 65535),
    index=st.integers(1, 2**31 - 1),
    ip4=st.ip_addresses(v=4).map(str),
    ip6=st.ip_addresses(v=6).map(str),
    gw4=st.ip_addresses(v=4).map(str),
)
def test_template_bytes_equal_pyroute2s_encoding(**v):
    """Templates made from other values of the same lengths (the example's values each moved to
    another of its kind, _other), then filled with the example's values, give byte for byte what
    pyroute2 encodes for them, sequence numbers included."""
    kinds = {"host": "name", "pod": "name", "alias": "name", "mac1": "mac", "mac2": "mac", "fd": "u32"}
    kinds |= {"mtu": "u32", "index": "u32", "ip4": "ip", "ip6": "ip", "gw4": "ip"}
    rtnl._ENCODED.clear()
    _sent({k: rtnl._other(kinds[k], x, 1) for k, x in v.items()}, True)
    assert all(got is not None for got in rtnl._ENCODED.values())  # every shape templated
    assert _sent(v, True) == _sent(v, False)


def test_a_template_hit_builds_no_message(monkeypatch):
    rtnl._ENCODED.clear()
    _sent(_FIRST, True)
    for name in ("_ifinfo", "_veth_msg", "_link_query", "_index_query"):
        monkeypatch.setattr(
            rtnl, name, lambda *a, **k: pytest.fail("built a message for a templated request")
        )
    for name in ("_addr", "_route", "_neigh", "_tcmsg", "_bpf_filter"):
        monkeypatch.setattr(
            rtnl.Rtnl,
            name,
            staticmethod(lambda *a, **k: pytest.fail("built a message for a templated request")),
        )
    other = dict(_FIRST, host="xcfedcba98765", mac1="02:aa:bb:cc:dd:ee", fd=9, index=77, ip4="10.244.3.9")
    assert len(_sent(other, True)) == 5  # veth, the batch, delete, two lookups


def test_a_value_without_a_fixed_length_form_is_encoded_by_pyroute2():
    """Non-ASCII names have no template (their encoding is pyroute2's business): encoded fresh,
    and the same bytes as without templates."""
    rtnl._ENCODED.clear()
    v = dict(_FIRST, alias="xdpcni:0123 net/cid/eth0 pod=default/wéb-0")
    assert _sent(v, True) == _sent(v, False)
    assert not any(key[2][0] == "alias" for key in rtnl._ENCODED)


def test_a_shape_pyroute2_does_not_encode_in_place_gets_no_template():
    """_template keeps a template only when writing a value in place reproduces pyroute2's bytes:
    a builder whose output is not a fixed-length function of the field (here the length changes
    with the value) is refused and encoded fresh each time."""
    built = []

    def build(index):
        built.append(index)
        return rtnl._ifinfo(index, attrs=[("IFLA_IFNAME", "x" * (index % 7 + 1))])

    assert rtnl._template(rtnl.RTM_SETLINK, 0, build, (("u32", 5),)) is None
    rtnl.use_templates(True)
    try:
        nl = _rtnl()
        nl.queue(rtnl.RTM_SETLINK, 0, build, key=("odd",), fields=(("u32", 5),))
        nl.flush()  # tries the template once, refused
        del built[:]
        nl.queue(rtnl.RTM_SETLINK, 0, build, key=("odd",), fields=(("u32", 6),))
        nl.flush()
    finally:
        rtnl.use_templates(False)
    assert built == [6]  # no second try: the refusal is remembered
    assert nl.sock.sent[1] == rtnl._encode(rtnl.RTM_SETLINK, rtnl.NLM_F_ACK, build(6), 2)


@pytest.mark.parametrize(
    "attrs",
    [
        [
            ("IFLA_IFNAME", "xc0123456789a"),
            ("IFLA_MTU", 1450),
            ("IFLA_LINK", 2),
            ("IFLA_ADDRESS", HOST_MAC),
            ("IFLA_IFALIAS", "xdpcni:pod-abc net/cid/eth0"),
            ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "veth")]}),
        ],
        [("IFLA_IFNAME", "lo"), ("IFLA_ADDRESS", "00:00:00:00:00:00")],
        [("IFLA_IFNAME", "dummy0")],
    ],
)
def test_link_from_raw_reads_what_pyroute2_decodes(attrs):
    """Link.from_raw (the veth creation's echo) gives the Link pyroute2's decoding gives."""
    raw = _HDR.pack(16, rtnl.RTM_NEWLINK, 0, 1, 0) + _newlink_reply(7, rtnl.IFF_UP, attrs)
    raw = struct.pack("=I", len(raw)) + raw[4:]
    msg = ifinfmsg(raw)
    msg.decode()
    want, got = rtnl.Link.from_msg(msg), rtnl.Link.from_raw(raw)
    assert [getattr(got, k) for k in rtnl.Link.__slots__] == [getattr(want, k) for k in rtnl.Link.__slots__]


@pytest.mark.parametrize(
    "call",
    [
        lambda nl: nl.get_link(index=2**31 + 5),  # ifinfmsg's index is signed: pyroute2 refuses
        lambda nl: nl.replace_neigh(42, "10.0.0.1", "2:0:0:0:0:1") or nl.flush(),  # short MAC form
        lambda nl: nl.replace_neigh(42, "10.0.0.1", "020000000001") or nl.flush(),  # no colons
        lambda nl: nl.get_link(b"eth0"),  # not a str
    ],
)
def test_values_outside_the_templates_behave_as_without_them(call):
    """A value a template does not cover (out of range, another spelling, another type) takes
    pyroute2's own encoding: the same bytes, or the same refusal, as with templates off."""

    def outcome(templates: bool):
        rtnl.use_templates(templates)
        try:
            _sent(_FIRST, templates)  # templates of every shape exist
            rtnl.use_templates(templates)
            nl = _rtnl()
            try:
                call(nl)
            except Exception as exc:  # noqa: BLE001 - the refusal is what is compared
                return type(exc)
            return nl.sock.sent
        finally:
            rtnl.use_templates(False)

    assert outcome(True) == outcome(False)


def test_reads_reuse_one_buffer_per_thread_and_return_copies():
    """Rtnl._recv reads into a buffer its thread keeps (no 1 MiB allocation per read); what it
    returns is the datagram's own bytes, which later reads (this thread's or another's) never
    change."""
    import threading

    def read_two(results: list) -> None:
        sock = FakeSock()
        nl = _rtnl(sock)
        sock.pending = b"A" * 100
        first = nl._recv()
        buf = rtnl._RECV.buf
        sock.pending = b"B" * 50
        second = nl._recv()
        results.append((first, second, buf is rtnl._RECV.buf, id(buf.obj)))

    here: list = []
    read_two(here)
    read_two(here)
    other: list = []
    t = threading.Thread(target=read_two, args=(other,))
    t.start()
    t.join()
    for first, second, same, _ in here + other:
        assert (first, second, same) == (b"A" * 100, b"B" * 50, True)
        assert isinstance(first, bytes)
    assert here[0][3] == here[1][3] != other[0][3]  # one buffer per thread, kept between sockets


def test_primed_templates_leave_the_first_pod_none_to_make(monkeypatch):
    """cni/plumbing.py prime_templates (the node agent runs it at start, over dry sockets that
    reach no kernel) makes the template of every request ADD and DEL send for a pod with its
    veth name, eth0 and an IPv4 and an IPv6 address: the first pod's requests make none (only an
    ifalias, whose length is the pod's, is left to first use)."""
    from cni import plumbing
    from datapath import pod as pod_dp

    rtnl._ENCODED.clear()
    rtnl.use_templates(True)
    try:
        plumbing.prime_templates()
        primed = {k[2][0] for k, got in rtnl._ENCODED.items() if isinstance(got, rtnl._Template)}
        made: list = []
        real = rtnl._template
        monkeypatch.setattr(rtnl, "_template", lambda *a: made.append(a[:2]) or real(*a))
        nl, pod_nl = _rtnl(), _rtnl()
        host = plumbing.host_ifname_for("a-pod", "eth0", "a-network")
        nl.create_veth(host, HOST_MAC, "eth0", PEER_MAC, 9, 1450)
        link = plumbing.PodLink(host, 77, HOST_MAC, "eth0", 2, PEER_MAC)
        ips = ["10.244.3.9", "fd00:10:244::9"]
        plumbing.configure_pod(pod_nl, link, ips)
        plumbing.configure_host(nl, link, ips, flush=False)
        pod_dp.queue_host_side(nl, 11, link.host_ifindex)
        nl.flush()
        nl.get_link(host)
        nl.get_link(index=link.host_ifindex)
        nl.delete_link(link.host_ifindex)
    finally:
        rtnl.use_templates(False)
    assert made == []
    assert primed >= {"veth", "addr", "route-to", "neigh", "clsact", "bpf-filter", "del", "link-by-name"}
    assert len(nl.sock.sent) == 5 and len(pod_nl.sock.sent) == 1  # veth, batch, 2 lookups, delete; pod batch
