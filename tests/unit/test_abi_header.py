"""The ctypes mirror in datapath/abi.py against the C headers it mirrors (parsed and compiled,
not copied)."""

import ctypes as ct
import re
import shutil
import subprocess
from pathlib import Path

import pytest

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
    assert _c_define("XDPCNI_ABI_VERSION") == abi.ABI_VERSION
    assert _c_define("XDPCNI_MAX_ENDPOINTS") == abi.MAX_ENDPOINTS
    assert _c_define("XDPCNI_REASON_MAX") == abi.REASON_MAX
    assert _c_define("XDPCNI_EP_F_INGRESS_VIA_STACK") == abi.EP_F_INGRESS_VIA_STACK
    assert _c_define("XDPCNI_EP_F_EGRESS_VIA_STACK") == abi.EP_F_EGRESS_VIA_STACK
    assert _c_define("XDPCNI_NODE_F_CONNTRACK") == abi.NODE_F_CONNTRACK
    assert _c_define("XDPCNI_EP_F_NODE") == abi.EP_F_NODE


def _c_struct_fields() -> dict[str, list[str]]:
    """struct name -> member names in order, parsed from bpf/lib/structs.h."""
    text = re.sub(r"/\*.*?\*/", "", (BPF / "structs.h").read_text(), flags=re.S)
    out = {}
    for m in re.finditer(r"struct (\w+) \{(.*?)\};", text, re.S):
        out[m.group(1)] = [
            re.search(r"(\w+)\s*(\[[^]]*\])?\s*$", decl.strip()).group(1)
            for decl in m.group(2).split(";")
            if decl.strip()
        ]
    return out


def test_every_c_struct_has_a_mirror_with_the_same_fields():
    c = _c_struct_fields()
    assert set(c) == set(abi.C_STRUCTS)
    for name, mirror in abi.C_STRUCTS.items():
        assert [f[0] for f in mirror._fields_] == c[name], name


def _compiled_layout(tmp_path) -> dict[tuple[str, str], int]:
    """(struct, field) -> offset and (struct, "sizeof") -> size, as a C compiler lays them out."""
    cc = shutil.which("cc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler (run make setup: it installs clang)")
    lines = []
    for name, mirror in abi.C_STRUCTS.items():
        lines.append(f'printf("{name} sizeof %zu\\n", sizeof(struct {name}));')
        for field, *_ in mirror._fields_:
            lines.append(f'printf("{name} {field} %zu\\n", offsetof(struct {name}, {field}));')
    src = tmp_path / "layout.c"
    src.write_text(
        "#include <stddef.h>\n#include <stdio.h>\n#include <linux/types.h>\n"
        f'#include "{BPF / "structs.h"}"\nint main(void) {{\n' + "\n".join(lines) + "\nreturn 0;\n}\n"
    )
    exe = tmp_path / "layout"
    subprocess.run([cc, "-o", str(exe), str(src)], check=True, capture_output=True, text=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {(s, f): int(v) for s, f, v in (line.split() for line in out.splitlines())}


def test_every_field_offset_and_size_matches_the_compiled_header(tmp_path):
    layout = _compiled_layout(tmp_path)
    for name, mirror in abi.C_STRUCTS.items():
        assert layout[(name, "sizeof")] == ct.sizeof(mirror), name
        for field, *_ in mirror._fields_:
            assert layout[(name, field)] == getattr(mirror, field).offset, f"{name}.{field}"


def test_endpoint_key_roundtrip():
    for ip in ("198.19.0.7", "2001:db8:1::7"):
        assert str(abi.EndpointKey.for_ip(ip).ip()) == ip
    k = abi.EndpointKey.for_ip("10.0.0.1")
    assert bytes(k.addr)[4:] == b"\0" * 12 and k.family == abi.FAMILY_IPV4
