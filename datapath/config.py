"""Node configuration (conf/xdpcni.yaml): which NIC, which mode, where the pins live.

One typed object, resolved once by `resolve()` (the YAML, then the caller's overrides: the CNI
network config's fields or `xdpcnictl load` flags) and handed whole to the loader, which takes it
as JSON on stdin when it runs as a child process (`python -m datapath.loader`).
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import asdict, dataclass, field

from .netfilter import DEFAULT_MODE as DEFAULT_NETFILTER
from .netfilter import MODES as NETFILTER_MODES
from .pins import DEFAULT_ROOT, PinLayout, check_owned

MODES = ("auto", "xdp", "tc")
DEFAULT_CONFIG_PATH = "/etc/xdpcni/xdpcni.yaml"


class ConfigError(ValueError):
    pass


@dataclass
class NodeConfig:
    nic: str
    mode: str = "auto"
    bpffs_root: str = DEFAULT_ROOT
    vlan: int = 0
    pod_cidrs: list[str] = field(default_factory=list)
    mtu: int = 1500
    netfilter: str = DEFAULT_NETFILTER

    def __post_init__(self) -> None:
        if not self.nic or not isinstance(self.nic, str):
            raise ConfigError("nic: the node's uplink interface name is required (e.g. eth0)")
        if self.mode not in MODES:
            raise ConfigError(f"mode: {self.mode!r} is not one of {', '.join(MODES)}")
        if not isinstance(self.vlan, int) or not 0 <= self.vlan <= 4094:
            raise ConfigError(f"vlan: {self.vlan!r} is not a VLAN id 0..4094 (0 = untagged)")
        if not str(self.bpffs_root).startswith("/sys/fs/bpf/"):
            raise ConfigError(f"bpffs_root: {self.bpffs_root!r} must be under /sys/fs/bpf/")
        if self.netfilter not in NETFILTER_MODES:
            raise ConfigError(f"netfilter: {self.netfilter!r} is not one of {', '.join(NETFILTER_MODES)}")
        if not isinstance(self.mtu, int) or not 576 <= self.mtu <= 3506:
            raise ConfigError(f"mtu: {self.mtu!r} must be 576..3506 (veth native XDP limit)")
        for cidr in self.pod_cidrs:
            try:
                ipaddress.ip_network(cidr)
            except ValueError as exc:
                raise ConfigError(f"pod_cidrs: {cidr!r}: {exc}") from exc

    @classmethod
    def from_dict(cls, data: dict) -> NodeConfig:
        if not isinstance(data, dict):
            raise ConfigError("node config must be a YAML mapping")
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown node config field(s): {', '.join(sorted(unknown))}")
        if "nic" not in data:
            raise ConfigError("nic: the node's uplink interface name is required (e.g. eth0)")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> NodeConfig:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"node config is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    @classmethod
    def from_yaml(cls, path: str) -> NodeConfig:
        import yaml  # here: a CNI call that reads no YAML should not import it (~10 ms)

        try:
            with open(path) as fh:
                data = yaml.safe_load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read node config {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
        return cls.from_dict(data or {})


def resolve(path: str | None = None, **overrides) -> NodeConfig | None:
    """The node's datapath settings: the YAML at `path` (default: DEFAULT_CONFIG_PATH when it
    exists, which is what `make install` writes), then every override that is not None.

    Overrides use NodeConfig field names (nic, mode, bpffs_root, vlan, mtu, netfilter). Returns None when no
    NIC is known (enough to use a loaded datapath, not to load one). Raises ConfigError.
    """
    data: dict = {}
    if path is None and os.path.exists(DEFAULT_CONFIG_PATH):
        path = DEFAULT_CONFIG_PATH
    if path:
        data = asdict(NodeConfig.from_yaml(path))
    data.update({k: v for k, v in overrides.items() if v is not None})
    if not data.get("nic"):
        return None
    return NodeConfig.from_dict(data)


@dataclass
class NodeState:
    """What the loader did, kept in /run so status/unload/CNI know the NIC and mode."""

    root: str
    nic: str
    nic_ifindex: int
    mode: str
    requested_mode: str
    vlan: int
    loaded_at: float
    prog_ids: dict
    netfilter: str = DEFAULT_NETFILTER  # the node setting (respect | bypass | auto)
    toolchain: str = "bcc"  # clang (conntrack gate with kfuncs) | bcc (gate = stack only)
    conntrack_check: bool = True  # the gate's bit as the load left it (auto re-decides it)
    fallback: str | None = None  # why the NIC runs another mode than asked, if it does
    restore: str = ""  # what the load restored from the live pods (datapath/restore.py)

    def save(self, layout: PinLayout) -> None:
        check_owned(os.path.dirname(layout.state_file), stop_at="/run")
        os.makedirs(os.path.dirname(layout.state_file), mode=0o700, exist_ok=True)
        tmp = layout.state_file + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(asdict(self), fh, indent=2)
        os.replace(tmp, layout.state_file)

    @classmethod
    def read(cls, root: str) -> NodeState | None:
        try:
            with open(PinLayout(root).state_file) as fh:
                return cls(**json.load(fh))
        except FileNotFoundError:
            return None
