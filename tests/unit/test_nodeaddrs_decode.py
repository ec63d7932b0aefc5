"""datapath/nodeaddrs.py reads an RTM_NEWADDR message's own address from its attributes in place
(the node agent reads every global address of the node every second, under the interpreter lock
its verbs need): the same answer as pyroute2's full decode, whatever the attributes' order."""

from __future__ import annotations

import ipaddress
import socket

from hypothesis import given, settings
from hypothesis import strategies as st
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

from datapath import nodeaddrs


def _raw(family: int, attrs: list[tuple[str, object]]) -> bytes:
    msg = ifaddrmsg()
    msg["header"]["type"] = 20  # RTM_NEWADDR
    msg["family"] = family
    msg["prefixlen"] = 24 if family == socket.AF_INET else 64
    msg["index"] = 3
    msg["attrs"] = attrs
    msg.encode()
    return bytes(msg.data)


def _pyroute2(raw: bytes) -> bytes | None:
    msg = ifaddrmsg(raw)
    msg.decode()
    addr = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
    return ipaddress.ip_address(addr).packed if addr else None


v4 = st.ip_addresses(v=4).map(str)
v6 = st.ip_addresses(v=6).map(str)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.tuples(st.just(socket.AF_INET), v4, st.one_of(st.none(), v4)),
        st.tuples(st.just(socket.AF_INET6), v6, st.one_of(st.none(), v6)),
    ),
    st.booleans(),
    st.booleans(),
)
def test_own_address_as_pyroute2_decodes_it(addrs, local_first, label):
    family, address, local = addrs
    attrs: list[tuple[str, object]] = [("IFA_ADDRESS", address)]
    if local is not None:
        attrs.insert(0 if local_first else 1, ("IFA_LOCAL", local))
    if label:
        attrs.append(("IFA_LABEL", "na0"))
    attrs.append(("IFA_FLAGS", 0x80))
    raw = _raw(family, attrs)
    want = _pyroute2(raw)
    assert nodeaddrs._local_address(raw) == want
    assert want == ipaddress.ip_address(local if local is not None else address).packed


def test_truncated_or_foreign_messages_give_nothing():
    raw = _raw(socket.AF_INET, [("IFA_ADDRESS", "10.0.0.1")])
    assert nodeaddrs._local_address(raw) == ipaddress.ip_address("10.0.0.1").packed
    assert nodeaddrs._local_address(raw[:-4]) is None  # the attribute cut off
    other = bytearray(raw)
    other[16] = 17  # AF_PACKET: not an address family we read
    assert nodeaddrs._local_address(bytes(other)) is None
