"""The network configuration on stdin: decode (code 6), check (code 7), and resolve the node's
datapath settings (netconf fields override the optional node config YAML).

Field by field documentation lives in conf/10-xdpcni.conflist; this module is the one place that
reads them.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

from datapath import config as node_config
from datapath.config import MODES, NETFILTER_MODES, ConfigError, NodeConfig
from datapath.pins import DEFAULT_ROOT

from .env import validate_ifname
from .errors import DECODE_FAILURE, INVALID_NETCONF, CniError
from .ipam.ranges import RangeSet, parse_range_sets
from .result import Result

DEFAULT_DATA_DIR = "/var/lib/cni/xdpcni"
BUILTIN_IPAM = "xdpcni"
# Spec: starts with an alphanumeric, then alphanumerics, '_', '.', '-'; fullmatch, because `$`
# accepts a trailing newline. The name is a directory name under dataDir: at most 255 bytes.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
NAME_MAX = 255
PATH_MAX = 1024  # our own limit for configured paths (dataDir, nodeConfig, bpffsRoot)
LOCK_TIMEOUT_MAX = 3600.0
VALID_ATTACHMENTS = "cni.dev/valid-attachments"


@dataclass
class IpamConf:
    type: str
    raw: dict  # passed verbatim to a delegated plugin
    range_sets: list[RangeSet] = field(default_factory=list)  # built-in IPAM only

    @property
    def builtin(self) -> bool:
        return self.type == BUILTIN_IPAM


@dataclass
class NetConf:
    cni_version: str
    name: str
    type: str
    ipam: IpamConf | None
    raw: dict
    nic: str | None = None
    mode: str | None = None
    bpffs_root: str | None = None
    node_config: str | None = None
    vlan: int | None = None
    mtu: int | None = None
    netfilter: str | None = None
    data_dir: str = DEFAULT_DATA_DIR
    dns: dict = field(default_factory=dict)
    prev_result: dict | None = None
    valid_attachments: list[tuple[str, str]] | None = None
    lock_timeout: float | None = None  # seconds every lock of a verb waits (datapath/locks.py)

    def node(self, require_nic: bool = False) -> NodeConfig | None:
        """Datapath settings: the node config YAML (`nodeConfig`, else the installed default)
        overridden by this network config's fields, resolved once (datapath.config.resolve).

        Returns None when no NIC is known (enough to use a loaded datapath, not to load one).
        """
        if not hasattr(self, "_node"):
            try:
                self._node = node_config.resolve(
                    self.node_config,
                    nic=self.nic,
                    mode=self.mode,
                    bpffs_root=self.bpffs_root,
                    vlan=self.vlan,
                    mtu=self.mtu,
                    netfilter=self.netfilter,
                )
            except ConfigError as exc:
                raise CniError(INVALID_NETCONF, f"nodeConfig: {exc}") from exc
        if self._node is None and require_nic:
            raise CniError(INVALID_NETCONF, 'no NIC configured: set "nic" or "nodeConfig"')
        return self._node

    @property
    def root(self) -> str:
        if self.bpffs_root:
            return self.bpffs_root
        node = self.node()
        return node.bpffs_root if node else DEFAULT_ROOT

    @property
    def pod_mtu(self) -> int:
        if self.mtu is not None:
            return self.mtu
        node = self.node()
        return node.mtu if node else 1500


def decode(stdin: bytes) -> dict:
    try:
        data = json.loads(stdin)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CniError(DECODE_FAILURE, "network configuration is not valid JSON", str(exc)) from exc
    except RecursionError:
        raise CniError(DECODE_FAILURE, "network configuration is nested too deeply to decode") from None
    if not isinstance(data, dict):
        raise CniError(DECODE_FAILURE, "network configuration must be a JSON object")
    return data


def _opt(data: dict, key: str, typ, what: str):
    val = data.get(key)
    if val is None:
        return None
    if not isinstance(val, typ) or (typ is int and isinstance(val, bool)):
        raise CniError(INVALID_NETCONF, f"{key}: must be {what}, got {val!r}")
    return val


def _path(data: dict, key: str, what: str = "an absolute path") -> str | None:
    """A configured path: absolute, normalised (no "." or ".." components), no NUL."""
    val = _opt(data, key, str, what)
    if val is None:
        return None
    if "\0" in val:
        raise CniError(INVALID_NETCONF, f"{key}: {val!r} contains a NUL character")
    if not val.startswith("/") or os.path.normpath(val) != val.rstrip("/") or val.startswith("//"):
        raise CniError(INVALID_NETCONF, f"{key}: {val!r} must be a normalised absolute path (no . or ..)")
    if len(val) > PATH_MAX or any(len(p.encode(errors="surrogateescape")) > NAME_MAX for p in val.split("/")):
        raise CniError(INVALID_NETCONF, f"{key}: {val[:80]!r}... is too long")
    return val


def _ifname(data: dict, key: str) -> str | None:
    val = _opt(data, key, str, "an interface name")
    if val is not None:
        try:
            validate_ifname(val, key)
        except CniError as exc:
            raise CniError(INVALID_NETCONF, exc.msg, exc.details) from None
    return val


def _runtime_config(data: dict) -> None:
    rc = _opt(data, "runtimeConfig", dict, "an object")
    if rc is None:
        return
    pm = rc.get("portMappings")
    if pm is not None and not isinstance(pm, list):
        raise CniError(INVALID_NETCONF, f"runtimeConfig.portMappings: must be a list, got {pm!r}")
    bw = rc.get("bandwidth")
    if bw is not None and not isinstance(bw, dict):
        raise CniError(INVALID_NETCONF, f"runtimeConfig.bandwidth: must be an object, got {bw!r}")


def _prev_result(data: dict, needed: bool) -> dict | None:
    prev = _opt(data, "prevResult", dict, "an object")
    if prev is None or not needed:
        return prev
    try:
        Result.from_json(prev, strict=True)
    except ValueError as exc:
        raise CniError(
            INVALID_NETCONF, f"prevResult: {exc}", "pass the previous plugin's result unchanged"
        ) from None
    return prev


def _ipam(data: dict, needed: bool) -> IpamConf | None:
    ipam = data.get("ipam")
    if ipam is None:
        if needed:
            raise CniError(INVALID_NETCONF, 'ipam: required (type "xdpcni" or an IPAM plugin on CNI_PATH)')
        return None
    if not isinstance(ipam, dict) or not isinstance(ipam.get("type"), str) or not ipam["type"]:
        raise CniError(INVALID_NETCONF, 'ipam: must be an object with a "type"')
    conf = IpamConf(type=ipam["type"], raw=ipam)
    if conf.builtin:
        conf.range_sets = parse_range_sets(ipam.get("ranges"))
    return conf


def _valid_attachments(data: dict) -> list[tuple[str, str]] | None:
    val = data.get(VALID_ATTACHMENTS)
    if val is None:
        return None
    if not isinstance(val, list):
        raise CniError(INVALID_NETCONF, f"{VALID_ATTACHMENTS}: must be a list")
    out = []
    for item in val:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("containerID"), str)
            or not isinstance(item.get("ifname"), str)
        ):
            raise CniError(INVALID_NETCONF, f"{VALID_ATTACHMENTS}: {item!r} lacks containerID/ifname")
        out.append((item["containerID"], item["ifname"]))
    return out


def parse(data: dict, verb: str) -> NetConf:
    """Check every field this plugin reads; IPAM is needed for the verbs that touch addresses."""
    for key in ("cniVersion", "name", "type"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise CniError(INVALID_NETCONF, f"{key}: required string field is missing")
    if not NAME_RE.fullmatch(data["name"]) or len(data["name"].encode(errors="surrogateescape")) > NAME_MAX:
        raise CniError(
            INVALID_NETCONF,
            f"name: {data['name'][:80]!r} is not a valid network name",
            f"1..{NAME_MAX} characters: a letter or digit, then letters, digits, '_', '.' or '-'",
        )
    mode = _opt(data, "mode", str, "a string")
    if mode is not None and mode not in MODES:
        raise CniError(INVALID_NETCONF, f"mode: {mode!r} is not one of {', '.join(MODES)}")
    netfilter = _opt(data, "netfilter", str, "a string")
    if netfilter is not None and netfilter not in NETFILTER_MODES:
        raise CniError(
            INVALID_NETCONF, f"netfilter: {netfilter!r} is not one of {', '.join(NETFILTER_MODES)}"
        )
    mtu = _opt(data, "mtu", int, "an integer")
    if mtu is not None and not 576 <= mtu <= 3506:
        raise CniError(INVALID_NETCONF, f"mtu: {mtu} must be 576..3506 (veth native XDP limit)")
    vlan = _opt(data, "vlan", int, "an integer")
    if vlan is not None and not 0 <= vlan <= 4094:
        raise CniError(INVALID_NETCONF, f"vlan: {vlan} must be 0..4094")
    root = _path(data, "bpffsRoot")
    if root is not None and not root.startswith("/sys/fs/bpf/"):
        raise CniError(INVALID_NETCONF, f"bpffsRoot: {root!r} must be under /sys/fs/bpf/")
    data_dir = _path(data, "dataDir") or DEFAULT_DATA_DIR
    node_conf = _path(data, "nodeConfig")
    prev = _prev_result(data, needed=verb in ("ADD", "CHECK"))
    sock = _opt(data, "agentSocket", str, 'a path ("" disables the agent)')
    if sock and (
        "\0" in sock or not sock.startswith("/") or len(sock.encode(errors="surrogateescape")) > 107
    ):
        raise CniError(
            INVALID_NETCONF, f"agentSocket: {sock[:80]!r} must be an absolute path of <= 107 bytes"
        )
    _runtime_config(data)
    lock_timeout = _opt(data, "lockTimeout", (int, float), "a number of seconds")
    if lock_timeout is not None and (
        isinstance(lock_timeout, bool) or not 0 < lock_timeout <= LOCK_TIMEOUT_MAX
    ):
        raise CniError(
            INVALID_NETCONF, f"lockTimeout: {lock_timeout!r} must be > 0 and <= {LOCK_TIMEOUT_MAX:.0f}"
        )
    return NetConf(
        cni_version=data["cniVersion"],
        name=data["name"],
        type=data["type"],
        ipam=_ipam(data, needed=verb in ("ADD", "CHECK")),
        raw=data,
        nic=_ifname(data, "nic"),
        mode=mode,
        bpffs_root=root,
        node_config=node_conf,
        vlan=vlan,
        mtu=mtu,
        netfilter=netfilter,
        data_dir=data_dir,
        dns=_opt(data, "dns", dict, "an object") or {},
        prev_result=prev,
        valid_attachments=_valid_attachments(data),
        lock_timeout=float(lock_timeout) if lock_timeout is not None else None,
    )
