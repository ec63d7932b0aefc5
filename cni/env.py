"""The CNI_* environment a runtime sets, checked per verb (missing/invalid -> code 4)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from .errors import INVALID_ENV, CniError

VERBS = ("ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS")
# Spec 1.1.0: starts with an alphanumeric, then alphanumerics, '_', '.', '-'.
CONTAINER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
IFNAMSIZ = 16

# Which variables each verb needs (CNI_NETNS is optional on DEL: some runtimes send it empty).
REQUIRED = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
    "GC": (),
    "STATUS": (),
    "VERSION": (),
}


@dataclass
class CniEnv:
    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    path: list[str] = field(default_factory=list)
    args: dict[str, str] = field(default_factory=dict)
    raw: dict[str, str] = field(default_factory=dict)  # CNI_* as given, passed on to delegates


def validate_ifname(name: str) -> None:
    if not name or len(name) >= IFNAMSIZ or name in (".", "..") or any(c in name for c in "/: \t\n"):
        raise CniError(INVALID_ENV, f"CNI_IFNAME {name!r} is not a valid interface name")


def parse_args(value: str) -> dict[str, str]:
    """CNI_ARGS is 'K1=V1;K2=V2'; unknown keys are ignored (they are the runtime's business)."""
    out: dict[str, str] = {}
    for pair in filter(None, value.split(";")):
        key, sep, val = pair.partition("=")
        if not sep or not key:
            raise CniError(INVALID_ENV, f"CNI_ARGS: {pair!r} is not KEY=VALUE")
        out[key] = val
    return out


def from_environ(environ: dict[str, str] | None = None) -> CniEnv:
    environ = dict(os.environ if environ is None else environ)
    command = environ.get("CNI_COMMAND", "")
    if command not in VERBS:
        raise CniError(INVALID_ENV, f"CNI_COMMAND {command!r} is not one of {', '.join(VERBS)}")
    for var in REQUIRED[command]:
        if not environ.get(var):
            raise CniError(INVALID_ENV, f"{var} is required for {command}")
    env = CniEnv(
        command=command,
        container_id=environ.get("CNI_CONTAINERID", ""),
        netns=environ.get("CNI_NETNS", ""),
        ifname=environ.get("CNI_IFNAME", ""),
        path=[p for p in environ.get("CNI_PATH", "").split(":") if p],
        args=parse_args(environ.get("CNI_ARGS", "")),
        raw={k: v for k, v in environ.items() if k.startswith("CNI_")},
    )
    if command in ("ADD", "CHECK", "DEL"):
        if not CONTAINER_ID_RE.match(env.container_id):
            raise CniError(INVALID_ENV, f"CNI_CONTAINERID {env.container_id!r} is not a valid container id")
        validate_ifname(env.ifname)
    if env.netns and not env.netns.startswith("/"):
        raise CniError(INVALID_ENV, f"CNI_NETNS {env.netns!r} must be an absolute path")
    return env
