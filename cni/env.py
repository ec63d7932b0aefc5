"""The CNI_* environment a runtime sets, checked per verb (missing/invalid -> code 4).

Each verb reads and validates exactly the variables the spec (1.1.0, "Parameters") gives it;
any other CNI_* variable is ignored. libcni validates a plugin by running VERSION with
CNI_NETNS=dummy CNI_IFNAME=dummy CNI_PATH=dummy, which must succeed.

  verb     required                                      optional
  ADD      COMMAND, CONTAINERID, NETNS, IFNAME            ARGS, PATH
  CHECK    COMMAND, CONTAINERID, NETNS, IFNAME            ARGS, PATH
  DEL      COMMAND, CONTAINERID, IFNAME                   NETNS, ARGS, PATH
  GC       COMMAND, PATH                                  -
  STATUS   COMMAND                                        PATH
  VERSION  COMMAND                                        -
"""

from __future__ import annotations

import fcntl
import functools
import ipaddress
import os
import re
from dataclasses import dataclass, field

from .errors import INVALID_ENV, CniError

VERBS = ("ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS")
# Spec 1.1.0: starts with an alphanumeric, then alphanumerics, '_', '.', '-' (fullmatch: a `$`
# would accept a trailing newline).
CONTAINER_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
IFNAMSIZ = 16
# The spec's "whitespace" for interface names is Go's unicode.IsSpace (libcni's check): the
# Unicode White_Space property. (Python's str.isspace() also counts U+001C..U+001F.)
WHITESPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)

REQUIRED = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
    "GC": ("CNI_PATH",),
    "STATUS": (),
    "VERSION": (),
}
USED = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH"),
    "GC": ("CNI_PATH",),
    "STATUS": ("CNI_PATH",),
    "VERSION": (),
}
NS_GET_NSTYPE = 0xB703  # ioctl on a namespace file: its CLONE_NEW* type
CLONE_NEWNET = 0x40000000


@dataclass
class CniEnv:
    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    path: list[str] = field(default_factory=list)
    args: dict[str, str] = field(default_factory=dict)
    raw: dict[str, str] = field(default_factory=dict)  # CNI_* as given, passed on to delegates
    # ADD/CHECK: the fd of CNI_NETNS as check_netns checked it, open while the verb runs
    # (cni/main.py _dispatch closes it); None where no one opened it (a verb run directly).
    netns_fd: int | None = field(default=None, compare=False, repr=False)


def is_ip(s: str) -> bool:
    """True when `s` is an IPv4 or IPv6 address (no prefix length)."""
    try:
        ipaddress.ip_address(s)
        return True
    except ValueError:
        return False


def validate_ifname(name: str, what: str = "CNI_IFNAME") -> None:
    """Spec: 1..15 characters, not "." or "..", no "/", ":" or whitespace; and the kernel's limit
    is 15 *bytes* (IFNAMSIZ with the NUL), so a longer UTF-8 encoding is refused too."""
    problem = ""
    if not name:
        problem = "must not be empty"
    elif name in (".", ".."):
        problem = 'must not be "." or ".."'
    elif len(name) >= IFNAMSIZ:
        problem = f"is {len(name)} characters long (at most {IFNAMSIZ - 1})"
    elif len(name.encode("utf-8", "surrogateescape")) >= IFNAMSIZ:
        problem = f"is {len(name.encode('utf-8', 'surrogateescape'))} bytes long (the kernel allows 15)"
    elif "\0" in name:
        problem = "contains a NUL character"
    elif any(c in "/:" or c in WHITESPACE for c in name):
        problem = 'contains "/", ":" or whitespace'
    if problem:
        raise CniError(INVALID_ENV, f"{what} {name!r} {problem}", "use a Linux interface name such as eth0")


def validate_container_id(cid: str) -> None:
    if not CONTAINER_ID_RE.fullmatch(cid):
        raise CniError(
            INVALID_ENV,
            f"CNI_CONTAINERID {cid!r} is not a valid container id",
            "it must start with a letter or digit, followed by letters, digits, '_', '.' or '-'",
        )


def parse_args(value: str) -> dict[str, str]:
    """CNI_ARGS is 'K1=V1;K2=V2'; unknown keys are ignored (they are the runtime's business)."""
    out: dict[str, str] = {}
    for pair in filter(None, value.split(";")):
        key, sep, val = pair.partition("=")
        if not sep or not key:
            raise CniError(INVALID_ENV, f"CNI_ARGS: {pair!r} is not KEY=VALUE")
        out[key] = val
    return out


def _valid_path(var: str, value: str) -> None:
    if "\0" in value:
        raise CniError(INVALID_ENV, f"{var} {value!r} contains a NUL character")
    if not value.startswith("/"):
        raise CniError(INVALID_ENV, f"{var} {value!r} must be an absolute path")


def from_environ(environ: dict[str, str] | None = None) -> CniEnv:
    environ = dict(os.environ if environ is None else environ)
    command = environ.get("CNI_COMMAND", "")
    if command not in VERBS:
        raise CniError(INVALID_ENV, f"CNI_COMMAND {command!r} is not one of {', '.join(VERBS)}")
    for var in REQUIRED[command]:
        if not environ.get(var):
            raise CniError(INVALID_ENV, f"{var} is required for {command}")
    used = {var: environ.get(var, "") for var in USED[command]}
    for var, val in used.items():
        if not isinstance(val, str):
            raise CniError(INVALID_ENV, f"{var} must be a string")
    env = CniEnv(
        command=command,
        container_id=used.get("CNI_CONTAINERID", ""),
        netns=used.get("CNI_NETNS", ""),
        ifname=used.get("CNI_IFNAME", ""),
        path=[p for p in used.get("CNI_PATH", "").split(":") if p],
        args=parse_args(used.get("CNI_ARGS", "")),
        raw={k: v for k, v in environ.items() if k.startswith("CNI_") and isinstance(v, str)},
    )
    if "CNI_CONTAINERID" in used:
        validate_container_id(env.container_id)
    if "CNI_IFNAME" in used:
        validate_ifname(env.ifname)
    if env.netns:
        _valid_path("CNI_NETNS", env.netns)
    for d in env.path:
        if "\0" in d:
            raise CniError(INVALID_ENV, f"CNI_PATH entry {d!r} contains a NUL character")
    return env


def _ns_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


@functools.lru_cache(maxsize=1)
def _host_ns_id() -> tuple[int, int] | None:
    """PID 1's network namespace (the host's). It is stat'ed once per process: PID 1 of a PID
    namespace never moves to another network namespace, and a node agent checks every ADD."""
    return _ns_id("/proc/1/ns/net")


def check_netns(path: str) -> int:
    """ADD/CHECK: CNI_NETNS must name an existing network namespace that is not the one this
    process (plugin or node agent) runs in, nor the host's (PID 1's): plumbing a pod there
    would replace the node's own routes. Opened read-only; never created. CniError (code 4).
    Returns the fd of the namespace it checked (the caller closes it): ADD plumbs that very
    namespace, whatever the path names a moment later, and opens it once (an nsfs open through
    /var/run/netns is ~40 us here)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CniError(
            INVALID_ENV, f"CNI_NETNS {path} does not exist", "the container's network namespace is gone"
        ) from None
    except OSError as exc:
        raise CniError(INVALID_ENV, f"CNI_NETNS {path} cannot be opened: {exc.strerror}") from None
    try:
        try:
            nstype = fcntl.ioctl(fd, NS_GET_NSTYPE)
        except OSError:
            nstype = None
        if nstype != CLONE_NEWNET:
            raise CniError(
                INVALID_ENV,
                f"CNI_NETNS {path} is not a network namespace",
                "pass a network namespace file such as /var/run/netns/<name> or /proc/<pid>/ns/net",
            )
        st = os.fstat(fd)
        target = (st.st_dev, st.st_ino)
        for own, what in (
            (_ns_id("/proc/thread-self/ns/net"), "this plugin's own"),
            (_host_ns_id(), "the host's"),
        ):
            if own == target:
                raise CniError(
                    INVALID_ENV,
                    f"CNI_NETNS {path} is {what} network namespace, not a container's",
                    "refusing to plumb a pod interface into the node itself",
                )
    except BaseException:
        os.close(fd)
        raise
    return fd
