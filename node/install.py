"""install-cni: put the CNI executable and the conflist on the host, the way kubelet's runtime
finds them, without a moment where it could see a half-installed plugin.

- The executable (`<cni-bin-dir>/xdpcni`) is the lean client, standard library only, run by the
  host's `/usr/bin/python3 -I -S` (no venv, no site-packages on the host): a short launcher
  that runs the client module `<cni-bin-dir>/.xdpcni/xdpcni_client.py` from its cached bytecode
  (a script is compiled on every run, ~1.5 ms per verb here; the first run imports the module,
  which writes the bytecode to its `__pycache__`, and later runs read that bytecode without the
  import machinery, ~0.5 ms less: cni/client.py LOAD_CLIENT). The module is generated from cni/client.py's source plus a small
  main: VERSION is answered locally; every other verb is handed to the node agent over its unix
  socket; with no agent answering it says code 11 (try again later; STATUS: 50, not
  available), so the runtime retries instead of failing the pod. Hosts: any with a python3 >=
  3.8 at /usr/bin/python3 (Debian, Ubuntu, RHEL and derivatives, Amazon Linux 2023); not
  Container-Optimized OS, Flatcar, Bottlerocket or Talos, which ship no Python.
- The conflist (`<cni-conf-dir>/00-xdpcni.conflist` by default) sorts first: containerd and
  CRI-O use the lexically first config in the directory. Its ipam ranges are this Node's
  spec.podCIDRs in their order (the first family is the primary one in the CNI result), its mtu
  the pod MTU the agent detected.
- Order and atomicity: the client module, then the executable, the conflist last, each written to a dot-named
  temporary in the same directory (no .conf/.conflist/.json suffix, so a runtime never reads
  it), fsynced, chmodded, renamed over the target, and the directory fsynced. A file whose
  content is already right is not rewritten (kubelet sees no change).
- Other conflists in the directory are named in a warning (they would shadow ours if they
  sorted first, or confuse an operator): not removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Callable

from cni.client import LOAD_CLIENT

DEFAULT_BIN_DIR = "/opt/cni/bin"
DEFAULT_CONF_DIR = "/etc/cni/net.d"
DEFAULT_CONFLIST = "00-xdpcni.conflist"
PLUGIN = "xdpcni"
NETWORK = "xdpcni"
HOST_PYTHON = "/usr/bin/python3"
CONFIG_SUFFIXES = (".conf", ".conflist", ".json")  # what libcni reads from the conf dir
CLIENT_DIR = ".xdpcni"  # beside the executable; runtimes look plugins up by name, not by listing
CLIENT_MODULE = "xdpcni_client"

LAUNCHER = (
    f"""#!{HOST_PYTHON} -IS
# xdpcni CNI client, installed by the xdpcni node agent (node/install.py). Generated: do not edit.
import posix, sys
path = sys.argv[0]
for _ in range(40):  # through symlinks to the real file: the module is beside it
    try:
        link = posix.readlink(path)
    except OSError:
        break
    path = link if link.startswith("/") else (path.rpartition("/")[0] or ".") + "/" + link
root = d = (path.rpartition("/")[0] or ".") + "/{CLIENT_DIR}"
m = module = "{CLIENT_MODULE}"
"""
    + LOAD_CLIENT
)

_MAIN = """

# ---- main of the installed client (node/install.py) ----
_SUPPORTED = {versions!r}
_NO_AGENT_CODE = {{"STATUS": 50}}  # CNI 1.1.0: STATUS answers 50 when no ADD can succeed


def _answer(obj, rc):
    import json as _json
    import sys as _sys

    _sys.stdout.write(_json.dumps(obj))
    _sys.stdout.flush()
    return rc


def _requested_version(stdin):
    import json as _json

    try:
        v = _json.loads(stdin or b"{{}}").get("cniVersion")
    except Exception:
        return None
    return v if isinstance(v, str) else None


def _main():
    import sys as _sys

    environ = dict(os.environ)
    command = environ.get("CNI_COMMAND", "")
    stdin = b"" if _sys.stdin is None else _sys.stdin.buffer.read()
    if command == "VERSION":
        v = _requested_version(stdin)
        return _answer({{"cniVersion": v if v in _SUPPORTED else _SUPPORTED[-1], "supportedVersions": list(_SUPPORTED)}}, 0)
    if not command:
        _sys.stderr.write("xdpcni: run by a container runtime (CNI_COMMAND and the network config on stdin)\\n")
    reply = via_agent(environ, stdin)
    if reply is None:
        v = _requested_version(stdin)
        code = _NO_AGENT_CODE.get(command, 11)
        path = socket_path(environ, stdin)
        err = {{
            "cniVersion": v if v in _SUPPORTED else _SUPPORTED[-1],
            "code": code,
            "msg": "xdpcni node agent not reachable: try again later",
            "details": "no agent answers on " + repr(path) + " (the xdpcni DaemonSet pod on this node runs it)",
        }}
        _sys.stderr.write("xdpcni: " + err["msg"] + "\\n")
        return _answer(err, 1)
    rc, out, err = reply
    _sys.stdout.write(out)
    _sys.stdout.flush()
    if err:
        _sys.stderr.write(err)
    return rc


def run():
    raise SystemExit(_main())


if __name__ == "__main__":
    run()
"""


_HOST_MAIN = """

# ---- installed on a host (node/install.py): the xdpcni package is not here, so a verb never
# runs in this process: no agent answering means code 11 (STATUS: 50), never an import attempt.
def _product():
    return None


if __name__ == "__main__":
    run()
"""


def client_source() -> str:
    """The installed client module's text (also runnable as a script: tests run it so): a
    shebang for the host's python3 in isolated mode without site (-IS), then cni/client.py's
    source (the agent protocol, standard library only) and a main, `run()`. When cni/client.py is the lean client with its own main() (VERSION answered by
    hand, the agent, else cni.main found through `_product()`), that main runs with `_product`
    answering None; otherwise the main above (_MAIN). Raises RuntimeError if cni/client.py no
    longer has what either main calls."""
    import cni.client
    from cni.version import SUPPORTED_VERSIONS

    with open(cni.client.__file__) as fh:
        src = fh.read()
    for name in ("via_agent", "socket_path"):
        if not re.search(rf"^def {name}\(", src, re.M):
            raise RuntimeError(f"cni/client.py has no {name}(): the installed client cannot be built")
    if src.startswith("#!"):
        src = src.split("\n", 1)[1]
    # Its own `__main__` block (if any) is replaced by ours.
    src = re.split(r"^if __name__ == [\"']__main__[\"']:", src, maxsplit=1, flags=re.M)[0].rstrip() + "\n"
    digest = hashlib.sha256(src.encode()).hexdigest()[:12]
    head = (
        f"#!{HOST_PYTHON} -IS\n"
        f"# xdpcni CNI client, installed by the xdpcni node agent (node/install.py). Generated: do not edit.\n"
        f"# cni/client.py sha256 {digest}; needs only the host's python3 (standard library).\n"
    )
    if all(re.search(rf"^def {name}\(", src, re.M) for name in ("main", "_product", "run")):
        return head + src + _HOST_MAIN
    if not re.search(r"^import os$", src, re.M):
        src += "\nimport os\n"
    return head + src + _MAIN.format(versions=tuple(SUPPORTED_VERSIONS))


def write_atomic(path: str, data: bytes, mode: int) -> bool:
    """Write `data` to `path` so no reader ever sees a partial file: a dot-named temporary in
    the same directory, fsync, chmod `mode`, rename over `path`, fsync the directory. Returns
    False (and writes nothing) when `path` already has exactly this content and mode."""
    with contextlib.suppress(OSError):
        st = os.stat(path)
        if (st.st_mode & 0o7777) == mode and st.st_size == len(data):
            with open(path, "rb") as fh:
                if fh.read() == data:
                    return False
    d, base = os.path.split(path)
    tmp = os.path.join(d, f".{base}.tmp{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        tmp = ""
        dfd = os.open(d or ".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    finally:
        if tmp:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    return True


def conflist(
    pod_cidrs: list[str],
    mtu: int,
    *,
    root: str | None = None,
    config_path: str | None = None,
    agent_socket: str | None = None,
    nic: str | None = None,
    portmap: bool = False,
) -> dict:
    """The network config for this node: one range set per pod CIDR, in spec.podCIDRs order
    (each pod gets one address per family; the first is the primary one in the result)."""
    from cni.client import DEFAULT_SOCKET
    from datapath.pins import DEFAULT_ROOT

    if not pod_cidrs:
        raise ValueError("no pod CIDRs: the conflist needs the Node's spec.podCIDRs")
    plugin: dict = {"type": PLUGIN, "mtu": int(mtu)}
    if nic:  # the NIC the agent loaded the datapath on (overrides a node config's `nic: auto`)
        plugin["nic"] = nic
    if config_path:
        plugin["nodeConfig"] = config_path
    if root and root != DEFAULT_ROOT:
        plugin["bpffsRoot"] = root
    if agent_socket and agent_socket != DEFAULT_SOCKET:
        plugin["agentSocket"] = agent_socket
    plugin["ipam"] = {"type": "xdpcni", "ranges": [[{"subnet": c}] for c in pod_cidrs]}
    plugins = [plugin]
    if portmap:  # hostPort, when the host has the reference plugin (README "Chaining")
        plugin["capabilities"] = {"portMappings": True}
        plugins.append({"type": "portmap", "capabilities": {"portMappings": True}, "snat": True})
    return {"cniVersion": "1.1.0", "name": NETWORK, "plugins": plugins}


def other_configs(conf_dir: str, ours: str) -> list[str]:
    """CNI config files in `conf_dir` other than `ours`, sorted (libcni's order)."""
    try:
        names = os.listdir(conf_dir)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n != ours and not n.startswith(".") and n.endswith(CONFIG_SUFFIXES))


class CniInstaller:
    """Installs the client and the conflist into host directories (see the module docstring)."""

    def __init__(
        self,
        bin_dir: str = DEFAULT_BIN_DIR,
        conf_dir: str = DEFAULT_CONF_DIR,
        conflist_name: str = DEFAULT_CONFLIST,
        *,
        root: str | None = None,
        config_path: str | None = None,
        agent_socket: str | None = None,
        log: Callable[[str], None] | None = None,
    ):
        if "/" in conflist_name or not conflist_name.endswith(".conflist"):
            raise ValueError(f"conflist name {conflist_name!r}: a file name ending in .conflist")
        self.bin_dir = bin_dir
        self.conf_dir = conf_dir
        self.conflist_name = conflist_name
        self.root = root
        self.config_path = config_path
        self.agent_socket = agent_socket
        self.log = log or (lambda m: print(f"xdpcni install-cni: {m}", file=sys.stderr, flush=True))
        self._warned: list[str] | None = None

    @property
    def executable(self) -> str:
        return os.path.join(self.bin_dir, PLUGIN)

    @property
    def client_module(self) -> str:
        return os.path.join(self.bin_dir, CLIENT_DIR, CLIENT_MODULE + ".py")

    @property
    def conflist_path(self) -> str:
        return os.path.join(self.conf_dir, self.conflist_name)

    def install(self, pod_cidrs: list[str], mtu: int, nic: str | None = None) -> bool:
        """Executable, then conflist. Returns True when anything was (re)written."""
        os.makedirs(os.path.dirname(self.client_module), exist_ok=True)
        os.makedirs(self.conf_dir, exist_ok=True)
        wrote = write_atomic(self.client_module, client_source().encode(), 0o644)
        if wrote:  # its bytecode is the old module's: a rewrite of the same size within the same
            # second would pass the launcher's (and the import system's) mtime and size check
            shutil.rmtree(
                os.path.join(os.path.dirname(self.client_module), "__pycache__"), ignore_errors=True
            )
        wrote |= write_atomic(self.executable, LAUNCHER.encode(), 0o755)
        if wrote:
            self.log(
                f"installed {self.executable} (runs with {HOST_PYTHON} alone; module in {self.client_module})"
            )
        conf = conflist(
            pod_cidrs,
            mtu,
            root=self.root,
            config_path=self.config_path,
            agent_socket=self.agent_socket,
            nic=nic,
            portmap=os.access(os.path.join(self.bin_dir, "portmap"), os.X_OK),
        )
        if write_atomic(self.conflist_path, (json.dumps(conf, indent=2) + "\n").encode(), 0o644):
            wrote = True
            self.log(f"wrote {self.conflist_path}: ranges {', '.join(pod_cidrs)}, mtu {mtu}")
        others = other_configs(self.conf_dir, self.conflist_name)
        if others and others != self._warned:
            first = sorted([*others, self.conflist_name])[0]
            note = "" if first == self.conflist_name else f"; {first} sorts first and will be used instead"
            self.log(f"warning: other CNI configs in {self.conf_dir}: {', '.join(others)}{note}")
        self._warned = others
        return wrote

    def uninstall(self) -> None:
        for path in (self.conflist_path, self.executable):  # config first: nothing points at a gone binary
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        import shutil

        shutil.rmtree(os.path.dirname(self.client_module), ignore_errors=True)
