"""A container runtime in miniature: runs the installed `xdpcni` executable (and the reference
plugins) exactly as containerd/CRI-O do via libcni — a fresh process per call, a bare
environment of CNI_* variables, the network config on stdin, inside the node's network
namespace — and executes conflists with libcni's prevResult/runtimeConfig rules.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field

from pyroute2 import netns

from cni.client import write_launcher

from .topology import SIM_NETFILTER, VENV_BIN, Node, Pod, loopback_up

REFERENCE_PLUGINS = "/usr/lib/cni"  # Debian's containernetworking-plugins


@dataclass
class Invocation:
    rc: int
    out: dict | None
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0

    @property
    def code(self) -> int | None:
        return (self.out or {}).get("code") if self.rc != 0 else None


def cni_bin_dir() -> str:
    """A per-process CNI bin dir holding `xdpcni` (the lean client's launcher for the venv's
    python, cni/client.py), as /opt/cni/bin. Published only once complete: concurrent ADD
    threads must never see it half-made."""
    global _BIN_DIR
    with _BIN_DIR_LOCK:
        if _BIN_DIR is None:
            path = tempfile.mkdtemp(prefix="xdpcni-cnibin-")
            write_launcher(os.path.join(path, "xdpcni"), os.path.join(VENV_BIN, "python3"))
            # pyroute2 forks helper processes that run atexit handlers too: only the creator removes it.
            atexit.register(_remove_bin_dir, path, os.getpid())
            _BIN_DIR = path
    return _BIN_DIR


_BIN_DIR: str | None = None
_BIN_DIR_LOCK = threading.Lock()


def _remove_bin_dir(path: str, creator: int) -> None:
    if os.getpid() == creator:
        shutil.rmtree(path, ignore_errors=True)


def invoke(
    node_ns: str,
    plugin: str,
    command: str,
    conf: dict | bytes | None,
    *,
    container_id: str = "",
    netns_path: str = "",
    ifname: str = "eth0",
    args: str = "",
    extra_env: dict | None = None,
    timeout: float = 120,
) -> Invocation:
    """One plugin call: `env -i` so nothing from our environment leaks in, like a runtime."""
    cni_path = f"{cni_bin_dir()}:{REFERENCE_PLUGINS}"
    exe = shutil.which(plugin, path=cni_path)
    assert exe, f"plugin {plugin} not on {cni_path}"
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command, "CNI_PATH": cni_path}
    if container_id:
        env["CNI_CONTAINERID"] = container_id
    if netns_path or command in ("ADD", "CHECK", "DEL"):
        env["CNI_NETNS"] = netns_path
    if ifname and command in ("ADD", "CHECK", "DEL"):
        env["CNI_IFNAME"] = ifname
    if args:
        env["CNI_ARGS"] = args
    env.update(extra_env or {})
    stdin = conf if isinstance(conf, bytes) else json.dumps(conf or {}).encode()
    cmd = [
        "nsenter",
        f"--net=/var/run/netns/{node_ns}",
        "env",
        "-i",
        *[f"{k}={v}" for k, v in env.items()],
        exe,
    ]
    proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout, check=False)
    stdout = proc.stdout.decode(errors="replace")
    try:
        out = json.loads(stdout) if stdout.strip() else None
    except ValueError:
        out = None
    return Invocation(proc.returncode, out, stdout, proc.stderr.decode(errors="replace"))


def xdpcni_netconf(
    node: Node, mode: str = "tc", cni_version: str = "1.1.0", ipam: dict | None = None, **extra
) -> dict:
    """The network config a node of the simulated cluster uses (own pins, own data dir)."""
    return {
        "cniVersion": cni_version,
        "name": "xdpcni-test",
        "type": "xdpcni",
        "nic": node.nic,
        "mode": mode,
        "netfilter": SIM_NETFILTER,
        "bpffsRoot": node.pin_root,
        "dataDir": node.data_dir,
        "agentSocket": "",  # in-process unless a test starts an agent for this node
        "ipam": ipam
        or {"type": "xdpcni", "ranges": [[{"subnet": str(node.cidr4)}], [{"subnet": str(node.cidr6)}]]},
        **extra,
    }


@dataclass
class Runtime:
    """Runs a conflist for pods of one node; remembers each ADD result as libcni's cache does."""

    node: Node
    conflist: dict
    cache: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def single(cls, node: Node, mode: str = "tc", **kw) -> Runtime:
        conf = xdpcni_netconf(node, mode, **kw)
        plugin = {k: v for k, v in conf.items() if k not in ("cniVersion", "name")}
        return cls(node, {"cniVersion": conf["cniVersion"], "name": conf["name"], "plugins": [plugin]})

    def _conf(self, plugin: dict, prev: dict | None, runtime_config: dict | None) -> dict:
        conf = {**plugin, "cniVersion": self.conflist["cniVersion"], "name": self.conflist["name"]}
        caps = plugin.get("capabilities") or {}
        rc = {k: v for k, v in (runtime_config or {}).items() if caps.get(k)}
        if rc:
            conf["runtimeConfig"] = rc
        conf.pop("capabilities", None)
        if prev is not None:
            conf["prevResult"] = prev
        return conf

    def new_pod_netns(self, name: str) -> str:
        """A pod sandbox's network namespace as a runtime makes it: lo up, nothing else."""
        ns = f"{self.node.ns}-{name}"
        netns.create(ns)
        self.node.cluster.namespaces.append(ns)
        loopback_up(ns)
        return ns

    def add(
        self,
        container_id: str,
        ns: str,
        ifname: str = "eth0",
        runtime_config: dict | None = None,
        extra_env: dict | None = None,
    ) -> Invocation:
        prev = None
        inv = None
        for plugin in self.conflist["plugins"]:
            inv = invoke(
                self.node.ns,
                plugin["type"],
                "ADD",
                self._conf(plugin, prev, runtime_config),
                container_id=container_id,
                netns_path=f"/var/run/netns/{ns}",
                ifname=ifname,
                extra_env=extra_env if plugin["type"] == "xdpcni" else None,
            )
            if not inv.ok:
                return inv
            prev = inv.out
        self.cache[f"{container_id}/{ifname}"] = prev
        return inv

    def check(
        self, container_id: str, ns: str, ifname: str = "eth0", runtime_config: dict | None = None
    ) -> Invocation:
        prev = self.cache[f"{container_id}/{ifname}"]
        inv = None
        for plugin in self.conflist["plugins"]:
            inv = invoke(
                self.node.ns,
                plugin["type"],
                "CHECK",
                self._conf(plugin, prev, runtime_config),
                container_id=container_id,
                netns_path=f"/var/run/netns/{ns}",
                ifname=ifname,
            )
            if not inv.ok:
                return inv
        return inv

    def check_each(
        self, container_id: str, ns: str, ifname: str = "eth0", runtime_config: dict | None = None
    ) -> dict[str, Invocation]:
        """CHECK every plugin of the list (not stopping at the first failure): plugin -> result."""
        prev = self.cache[f"{container_id}/{ifname}"]
        return {
            plugin["type"]: invoke(
                self.node.ns,
                plugin["type"],
                "CHECK",
                self._conf(plugin, prev, runtime_config),
                container_id=container_id,
                netns_path=f"/var/run/netns/{ns}",
                ifname=ifname,
            )
            for plugin in self.conflist["plugins"]
        }

    def delete(
        self, container_id: str, ns: str | None, ifname: str = "eth0", runtime_config: dict | None = None
    ) -> Invocation:
        prev = self.cache.get(f"{container_id}/{ifname}")
        inv = None
        for plugin in reversed(self.conflist["plugins"]):
            inv = invoke(
                self.node.ns,
                plugin["type"],
                "DEL",
                self._conf(plugin, prev, runtime_config),
                container_id=container_id,
                netns_path=f"/var/run/netns/{ns}" if ns else "",
                ifname=ifname,
            )
            if not inv.ok:
                return inv
        self.cache.pop(f"{container_id}/{ifname}", None)
        return inv

    def xdpcni_conf(self, **overrides) -> dict:
        plugin = next(p for p in self.conflist["plugins"] if p["type"] == "xdpcni")
        return {**self._conf(plugin, None, None), **overrides}

    def call(self, command: str, conf: dict | bytes | None = None, **kw) -> Invocation:
        """A single xdpcni call (VERSION, STATUS, GC, or a hand-made config)."""
        return invoke(self.node.ns, "xdpcni", command, self.xdpcni_conf() if conf is None else conf, **kw)

    def pod_from_result(self, name: str, ns: str, result: dict) -> Pod:
        ips = [ip["address"].split("/")[0] for ip in result["ips"]]
        return Pod(name, ns, self.node, ips)
