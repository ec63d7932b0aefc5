"""Turn a bpf/*.c program into the single text BCC compiles.

BCC rewrites map method calls (`map.lookup()`, `redirect_map()`) only in the main source file, not
in headers it includes, so our shared lib/*.h headers are inlined here (local quoted includes
only; each file once, as `#pragma once` says). System includes are left to clang.
"""

from __future__ import annotations

import re
from pathlib import Path

_LOCAL_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$')


def flatten(path: Path, seen: set[Path] | None = None) -> str:
    seen = set() if seen is None else seen
    path = path.resolve()
    if path in seen:
        return ""
    seen.add(path)
    out = [f'#line 1 "{path}"']
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        m = _LOCAL_INCLUDE.match(line)
        if m:
            out.append(flatten(path.parent / m.group(1), seen))
            out.append(f'#line {lineno + 1} "{path}"')
        elif line.strip() == "#pragma once":
            out.append("")
        else:
            out.append(line)
    return "\n".join(out)
