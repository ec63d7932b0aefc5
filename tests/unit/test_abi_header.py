"""The ctypes mirror in datapath/abi.py against the C headers it mirrors (parsed, not copied)."""

import ctypes as ct
import re
from pathlib import Path

from datapath import abi

BPF = Path(__file__).resolve().parents[2] / "bpf" / "lib"


def _c_enum() -> dict[str, int]:
    text = (BPF / "consts.h").read_text()
    body = re.search(r"enum xdpcni_reason \{(.*?)\};", text, re.S).group(1)
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"REASON_(\w+)\s*=\s*(\d+)", body)}


def _c_define(name: str) -> int:
    m = re.search(rf"#define {name}\s+\(?(\d+)u?(?:\s*<<\s*(\d+))?\)?", (BPF / "consts.h").read_text())
    return int(m.group(1)) << int(m.group(2) or 0)


def test_reason_enum_matches_c():
    c = _c_enum()
    count = c.pop("COUNT")  # __REASON_COUNT
    assert {r.name: r.value for r in abi.Reason} == c
    assert count == len(abi.Reason) and count <= abi.REASON_MAX


def test_constants_match_c():
    assert _c_define("XDPCNI_MAX_ENDPOINTS") == abi.MAX_ENDPOINTS
    assert _c_define("XDPCNI_REASON_MAX") == abi.REASON_MAX
    assert _c_define("XDPCNI_EP_F_INGRESS_VIA_STACK") == abi.EP_F_INGRESS_VIA_STACK
    assert _c_define("XDPCNI_EP_F_EGRESS_VIA_STACK") == abi.EP_F_EGRESS_VIA_STACK


def test_struct_sizes_match_the_header_layout():
    assert ct.sizeof(abi.EndpointKey) == 20
    assert ct.sizeof(abi.EndpointInfo) == 24
    assert ct.sizeof(abi.IfaceInfo) == 16
    assert ct.sizeof(abi.NodeConfig) == 20
    assert ct.sizeof(abi.Counter) == 16


def test_endpoint_key_roundtrip():
    for ip in ("198.19.0.7", "2001:db8:1::7"):
        assert str(abi.EndpointKey.for_ip(ip).ip()) == ip
    k = abi.EndpointKey.for_ip("10.0.0.1")
    assert bytes(k.addr)[4:] == b"\0" * 12 and k.family == abi.FAMILY_IPV4
