"""Delegated IPAM: run the plugin named by ipam.type from CNI_PATH, as libcni's delegate calls
do: same CNI_* environment, the whole network config on stdin, its result or error on stdout.

A delegate that does not speak our config's version (Debian's host-local stops at 1.0.0) is
called again with the highest version both sides support; its error objects are passed on
unchanged so the runtime sees the IPAM plugin's own code.
"""

from __future__ import annotations

import json
import os

from datapath import locks

from ..errors import INCOMPATIBLE_VERSION, INVALID_NETCONF, IPAM_DELEGATE, CniError
from ..version import SUPPORTED_VERSIONS, parse

TIMEOUT = 60.0


def find_plugin(name: str, cni_path: list[str]) -> str:
    if "/" in name or name in (".", ".."):
        raise CniError(INVALID_NETCONF, f"ipam.type {name!r} is not a plugin name")
    for d in cni_path:
        exe = os.path.join(d, name)
        if os.path.isfile(exe) and os.access(exe, os.X_OK):
            return exe
    raise CniError(INVALID_NETCONF, f"IPAM plugin {name!r} not found on CNI_PATH", ":".join(cni_path))


def _run(exe: str, verb: str, conf: dict, cni_env: dict[str, str]) -> tuple[int, str]:
    import subprocess  # here only: with `locale`, ~2 ms of every in-process verb that has no delegate

    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), **cni_env, "CNI_COMMAND": verb}
    try:
        with locks.waiting():  # in the node agent: other verbs run meanwhile (RunSlots)
            proc = subprocess.run(
                [exe],
                input=json.dumps(conf).encode(),
                env=env,
                capture_output=True,
                timeout=TIMEOUT,
                check=False,
            )
    except subprocess.TimeoutExpired as exc:
        raise CniError(IPAM_DELEGATE, f"IPAM plugin {exe} {verb} timed out after {TIMEOUT:.0f}s") from exc
    return proc.returncode, proc.stdout.decode(errors="replace").strip() or proc.stderr.decode(
        errors="replace"
    )


def _error(exe: str, verb: str, out: str) -> CniError:
    try:
        obj = json.loads(out)
        return CniError(
            int(obj["code"]),
            f"IPAM plugin {os.path.basename(exe)} {verb}: {obj.get('msg', '')}",
            str(obj.get("details", "")),
        )
    except (ValueError, KeyError, TypeError):
        return CniError(IPAM_DELEGATE, f"IPAM plugin {os.path.basename(exe)} {verb} failed", out[-2000:])


def _supported(exe: str, cni_env: dict[str, str]) -> list[str]:
    rc, out = _run(exe, "VERSION", {"cniVersion": "0.3.0"}, cni_env)
    try:
        return list(json.loads(out)["supportedVersions"]) if rc == 0 else []
    except (ValueError, KeyError, TypeError):
        return []


def call(name: str, verb: str, netconf: dict, cni_env: dict[str, str], cni_path: list[str]) -> dict | None:
    """Run `verb` on the IPAM plugin; returns its parsed result (ADD) or None."""
    exe = find_plugin(name, cni_path)
    rc, out = _run(exe, verb, netconf, cni_env)
    if rc != 0:
        err = _error(exe, verb, out)
        if err.code != INCOMPATIBLE_VERSION:
            raise err
        common = [v for v in _supported(exe, cni_env) if v in SUPPORTED_VERSIONS]
        if not common:
            raise err
        netconf = {**netconf, "cniVersion": max(common, key=parse)}
        rc, out = _run(exe, verb, netconf, cni_env)
        if rc != 0:
            raise _error(exe, verb, out)
    if verb != "ADD":
        return None
    try:
        result = json.loads(out)
    except ValueError as exc:
        raise CniError(IPAM_DELEGATE, f"IPAM plugin {name} returned no JSON result", out[-2000:]) from exc
    if not isinstance(result, dict):
        raise CniError(IPAM_DELEGATE, f"IPAM plugin {name} returned a non-object result")
    return result


def addresses(result: dict) -> list[str]:
    """Bare addresses from an IPAM result of any version (we assign /32 and /128 ourselves)."""
    out = []
    for ip in result.get("ips") or []:
        addr = (ip or {}).get("address", "")
        out.append(addr.split("/")[0])
    if not out:
        raise CniError(IPAM_DELEGATE, "IPAM plugin returned no addresses")
    return out
