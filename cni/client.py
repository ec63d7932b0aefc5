#!/usr/bin/python3 -IS
"""The lean xdpcni CNI executable: hands the verb to the node agent over its unix socket.

One self-contained module (no package-relative imports): the installed `xdpcni` runs it as
`python3 -I -S .../cni/client.py` (or a copy of this file). Until it knows whether an agent
answers it uses only what a bare `python3 -I -S` has loaded or built in (`sys`, `posix`,
`_socket`): no `os`, `json`, `socket` or `struct` (each pulls in modules worth 2-10 ms of start
time). VERSION is answered here. With no agent (none listening, a stale socket, an agent in
another network namespace) the verb runs in this process through cni.main.execute (the
checkout's or the installed package's); where the package is not installed (the copy on a
Kubernetes host) the answer is code 11, try again later (STATUS: 50, not available).

Wire format, both directions: 4-byte big-endian length, then a JSON object.
  request  {"env": {CNI_*...}, "stdin": "<network config>", "netns": <inode of our net ns>}
  reply    {"rc": int, "stdout": str, "stderr": str}  or  {"fallback": "<why>"}
JSON is written and read here by hand (flat objects of strings and integers; the network
config is only scanned for its top-level "agentSocket" and "cniVersion").
"""

import _socket
import posix
import sys

DEFAULT_SOCKET = "/run/xdpcni/agent.sock"
TIMEOUT = 150.0  # the first ADD on a node may compile and load the datapath
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50
SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")  # cni/version.py uses these


class _OsOnDemand:
    """The `os` module, imported on first use: the agent path never needs it. (A main appended
    to a copy of this file, as node/install.py generates, may refer to `os`.)"""

    def __getattr__(self, name):
        import os as real

        globals()["os"] = real
        return getattr(real, name)


os = _OsOnDemand()


# -- JSON, by hand ------------------------------------------------------------------------------
_ESCAPES = {i: f"\\u{i:04x}" for i in range(32)}
_ESCAPES.update({ord('"'): '\\"', ord("\\"): "\\\\", 8: "\\b", 9: "\\t", 10: "\\n", 12: "\\f", 13: "\\r"})
_ESCAPES.update({i: f"\\u{i:04x}" for i in range(0xDC80, 0xDD00)})  # surrogateescape'd bytes
_UNESCAPE = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_WS = " \t\n\r"


def _jstr(s: str) -> str:
    if s.isprintable():  # no control character, no surrogate: only quotes and backslashes to escape
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'  # ~8x faster than the table
    return '"' + s.translate(_ESCAPES) + '"'


def _ws(s: str, i: int) -> int:
    n = len(s)
    while i < n and s[i] in _WS:
        i += 1
    return i


def _string(s: str, i: int) -> "tuple[str, int]":
    """The JSON string starting at s[i] == '"': (its value, the index after it)."""
    if s[i : i + 1] != '"':
        raise ValueError("expected a string")
    i += 1
    parts = []
    while True:
        q = s.find('"', i)
        b = s.find("\\", i, q if q >= 0 else len(s))
        if q < 0:
            raise ValueError("unterminated string")
        if b < 0:
            parts.append(s[i:q])
            i = q + 1
            break
        parts.append(s[i:b])
        e = s[b + 1 : b + 2]
        if e == "u":
            h = s[b + 2 : b + 6]
            if len(h) != 4 or not all(c in "0123456789abcdefABCDEF" for c in h):
                raise ValueError("bad \\u escape")
            parts.append(chr(int(h, 16)))
            i = b + 6
        elif e in _UNESCAPE:
            parts.append(_UNESCAPE[e])
            i = b + 2
        else:
            raise ValueError("bad escape")
    out = "".join(parts)
    for c in out:
        if "\ud800" <= c <= "\udbff":  # a \\u surrogate pair: as json.loads, one character
            return out.encode("utf-16", "surrogatepass").decode("utf-16", "surrogateescape"), i
    return out, i


def _skip(s: str, i: int) -> int:
    """The index after the JSON value starting at s[i] (containers skipped by counting)."""
    n = len(s)
    c = s[i : i + 1]
    if c == '"':
        return _string(s, i)[1]
    if c in ("{", "["):
        depth = 0
        while i < n:
            c = s[i]
            if c == '"':
                i = _string(s, i)[1]
                continue
            if c in "{[":
                depth += 1
            elif c in "}]":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        raise ValueError("unterminated container")
    j = i
    while j < n and s[j] not in ",}] \t\n\r":
        j += 1
    if j == i:
        raise ValueError("expected a value")
    return j


def _object(s: str, wanted: "tuple[str, ...]") -> "dict | None":
    """The top-level JSON object in `s`: the values of `wanted` keys that are strings or
    integers (others are skipped); None when `s` is not one JSON object. Duplicate keys: the
    last wins (as json.loads)."""
    out: dict = {}
    try:
        i = _ws(s, 0)
        if s[i : i + 1] != "{":
            return None
        i = _ws(s, i + 1)
        if s[i : i + 1] == "}":
            i += 1
        else:
            while True:
                key, i = _string(s, _ws(s, i))
                i = _ws(s, i)
                if s[i : i + 1] != ":":
                    return None
                i = _ws(s, i + 1)
                end = _skip(s, i)
                if key in wanted:
                    if s[i] == '"':
                        out[key] = _string(s, i)[0]
                    else:
                        raw = s[i:end]
                        out[key] = int(raw) if raw.lstrip("-").isdigit() else None
                i = _ws(s, end)
                c = s[i : i + 1]
                i += 1
                if c == "}":
                    break
                if c != ",":
                    return None
        if _ws(s, i) != len(s):
            return None
    except (ValueError, IndexError, UnicodeError):
        return None
    return out


def _config(stdin: bytes, key: str):
    """Top-level `key` of the network config if it is a string, else None."""
    try:
        text = stdin.decode("utf-8")
    except UnicodeDecodeError:
        return None
    conf = _object(text, (key,))
    value = conf.get(key) if conf else None
    return value if isinstance(value, str) else None


# -- the agent protocol -----------------------------------------------------------------------
def socket_path(environ: "dict[str, str]", stdin: bytes) -> str:
    """netconf "agentSocket" ("" disables the agent), else XDPCNI_AGENT_SOCKET, else the default."""
    path = _config(stdin, "agentSocket")
    if path is not None:
        return path
    return environ.get("XDPCNI_AGENT_SOCKET", DEFAULT_SOCKET)


def netns_inode() -> int:
    return posix.stat("/proc/thread-self/ns/net").st_ino


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def _recv_exact(sock, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionResetError("agent closed the connection")
        buf += chunk
    return bytes(buf)


def send_msg(sock, obj: dict) -> None:
    """For the agent and tests (they have json loaded): one framed JSON message."""
    import json

    sock.sendall(_frame(json.dumps(obj).encode()))


def recv_msg(sock) -> dict:
    import json

    return json.loads(_recv_exact(sock, int.from_bytes(_recv_exact(sock, 4), "big")))


def _request(environ: "dict[str, str]", stdin: bytes) -> bytes:
    env = ", ".join(f"{_jstr(k)}: {_jstr(v)}" for k, v in environ.items() if k.startswith("CNI_"))
    text = stdin.decode("utf-8", "surrogateescape")
    return f'{{"env": {{{env}}}, "stdin": {_jstr(text)}, "netns": {netns_inode()}}}'.encode()


def via_agent(environ: "dict[str, str]", stdin: bytes) -> "tuple[int, str, str] | None":
    """(rc, stdout, stderr) from the agent, or None to run in-process (no agent, not ours)."""
    path = socket_path(environ, stdin)
    if not path or "\0" in path or not path.startswith("/"):
        return None  # a malformed path is the verb's to report (code 7)
    try:
        posix.stat(path)
    except OSError:
        return None
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    try:
        try:
            sock.connect(path)
        except OSError:
            return None  # stale socket of a dead agent, not a socket, too long a path
        try:
            sock.sendall(_frame(_request(environ, stdin)))
            size = int.from_bytes(_recv_exact(sock, 4), "big")
            raw = _recv_exact(sock, size).decode("utf-8", "surrogateescape")
            reply = _object(raw, ("rc", "stdout", "stderr", "fallback"))
            if reply is None or ("fallback" not in reply and not isinstance(reply.get("rc"), int)):
                raise ValueError("malformed reply from the agent")
        except (OSError, ValueError) as exc:
            # The agent died mid-request: what it did is unknown, so let the runtime DEL and retry.
            err = (
                f'{{"cniVersion": "1.1.0", "code": {TRY_AGAIN_LATER}, '
                f'"msg": "xdpcni agent failed mid-request", "details": {_jstr(str(exc))}}}'
            )
            return 1, err, ""
        if "fallback" in reply:
            return None
        return reply["rc"], reply.get("stdout") or "", reply.get("stderr") or ""
    finally:
        sock.close()


# -- the executable -----------------------------------------------------------------------------
def _write(fd: int, data: bytes) -> None:
    while data:
        data = data[posix.write(fd, data) :]


def _read_stdin() -> bytes:
    chunks = []
    try:
        while True:
            chunk = posix.read(0, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError:
        pass
    return b"".join(chunks)


def _version(stdin: bytes) -> str:
    v = _config(stdin, "cniVersion")
    v = v if v in SUPPORTED_VERSIONS else SUPPORTED_VERSIONS[-1]
    versions = ", ".join(_jstr(x) for x in SUPPORTED_VERSIONS)
    return f'{{"cniVersion": {_jstr(v)}, "supportedVersions": [{versions}]}}'


def _product():
    """cni.main of the installed package or of the checkout this file is in; None if neither."""
    import gc
    import os.path

    gc.disable()  # one verb and exit: the cyclic GC would only slow the imports down
    no_site = sys.flags.no_site and "site" not in sys.modules
    if no_site:
        sys.path.extend(d for d in _site_dirs() if d not in sys.path)
    checkout = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))  # <checkout>/cni/client.py
    if os.path.isfile(os.path.join(checkout, "cni", "main.py")) and checkout not in sys.path:
        sys.path.append(checkout)
    main = _import_main()
    if no_site and (main is None or not _dependencies_found()):
        import site

        site.main()  # an install, or a dependency, that only .pth files know about
        main = main or _import_main()
    return main


def _import_main():
    try:
        import cni.main

        return cni.main
    except ImportError:
        return None


# What a verb run in-process imports besides the standard library (pyproject.toml's dependencies
# that cni/ and datapath/ use on the per-call path; BCC only in the loader's own process).
_DEPENDENCIES = ("pyroute2", "yaml")


def _dependencies_found() -> bool:
    """Whether every dependency is on sys.path as it is (else site.main()'s .pth files must run)."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in _DEPENDENCIES)


def _site_dirs() -> "list[str]":
    """The site-packages directories site.main() would put on sys.path for this interpreter,
    without running their .pth files (here an editable install's import hook and setuptools'
    distutils shim: ~25 ms of every in-process call; this file's checkout, which the editable
    hook would find, is put on sys.path by the launcher or by _product). A venv's own directory
    (pyvenv.cfg next to or above the executable, as site.venv() finds it), then the system's
    unless the venv excludes them (include-system-site-packages)."""
    import os.path
    import site  # with -S, importing site runs nothing

    exe_dir = os.path.dirname(os.path.abspath(sys.executable))
    dirs: list[str] = []
    system = True
    for cfg in (os.path.join(exe_dir, "pyvenv.cfg"), os.path.join(os.path.dirname(exe_dir), "pyvenv.cfg")):
        if os.path.isfile(cfg):
            with open(cfg, encoding="utf-8") as fh:
                settings = dict(
                    (k.strip().lower(), v.strip().lower()) for k, _, v in (ln.partition("=") for ln in fh)
                )
            system = settings.get("include-system-site-packages", "true") == "true"  # as site.venv()
            v = sys.version_info
            dirs.append(
                os.path.join(os.path.dirname(cfg), "lib", f"python{v.major}.{v.minor}", "site-packages")
            )
            break
    if system:
        dirs.extend(site.getsitepackages())
    return [d for d in dirs if os.path.isdir(d)]


def _no_agent(environ: "dict[str, str]", stdin: bytes) -> "tuple[int, str]":
    command = environ.get("CNI_COMMAND", "")
    v = _config(stdin, "cniVersion")
    v = v if v in SUPPORTED_VERSIONS else SUPPORTED_VERSIONS[-1]
    code = NOT_AVAILABLE if command == "STATUS" else TRY_AGAIN_LATER
    details = f"no agent answers on {socket_path(environ, stdin)!r} and xdpcni is not installed here"
    _write(2, b"xdpcni: node agent not reachable: try again later\n")
    return 1, (
        f'{{"cniVersion": {_jstr(v)}, "code": {code}, '
        f'"msg": "xdpcni node agent not reachable: try again later", "details": {_jstr(details)}}}'
    )


_ANSWERED = False  # main() answered a verb (here, through the agent or in this process): see run()


def run() -> None:
    """The executable's entry point: main(), then exit with its code. Once a verb is answered
    nothing needs finalizing, so the process ends with _exit() and skips the interpreter's
    teardown: the answer went out with unbuffered posix.write, and what a verb run in this
    process left in sys.stdout's or sys.stderr's buffer is flushed first; such a verb leaves no
    thread, atexit duty or child behind (the datapath loader it may start has exited). This saves
    ~1.6 ms of the runtime's wait after the agent's answer, ~10 ms after an in-process verb
    (the teardown of everything it imported). --help and friends exit normally."""
    rc = main()
    if _ANSWERED:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # closed or gone: nothing left to say there
                pass
        posix._exit(rc)
    sys.exit(rc)


def main(argv: "list[str] | None" = None) -> int:
    """The executable: VERSION here, other verbs through the agent, else in this process."""
    global _ANSWERED
    argv = sys.argv[1:] if argv is None else argv
    fs = sys.getfilesystemencoding()
    environ = {
        k.decode(fs, "surrogateescape"): v.decode(fs, "surrogateescape") for k, v in posix.environ.items()
    }
    command = environ.get("CNI_COMMAND")
    if argv or (command is None and posix.isatty(0)):  # --help, --version, a human at a terminal
        product = _product()
        if product is None:
            _write(2, b"xdpcni: a CNI plugin, run by a container runtime (CNI_COMMAND, config on stdin)\n")
            return 1
        return product.main(argv)
    stdin = b"" if command == "VERSION" and posix.isatty(0) else _read_stdin()
    reply = None
    if command == "VERSION":
        rc, stdout = 0, _version(stdin)
    else:
        try:
            reply = via_agent(environ, stdin)
        except Exception as exc:  # the agent path is an accelerator: run here instead
            _write(2, f"xdpcni: node agent not used: {type(exc).__name__}: {exc}\n".encode())
        if reply is not None:
            rc, stdout, stderr = reply
            if stderr:
                _write(2, stderr.encode("utf-8", "surrogateescape"))
        else:
            product = _product()
            if product is None:
                rc, stdout = _no_agent(environ, stdin)
            else:
                rc, stdout = product.execute(environ, stdin)
    if stdout:
        _write(1, stdout.encode("utf-8", "surrogateescape") + b"\n")
    _ANSWERED = True
    return rc


# The end of every launcher (this one and node/install.py's): run the client module `module`,
# whose source is <d>/<m>.py and whose package root (for the import system) is `root`, from its
# cached bytecode when that is current: no import machinery at all (the package's import alone,
# a path finder and the package's __init__, cost ~0.55 ms of every verb). "Current" is checked
# as the import system checks a timestamp-based .pyc (PEP 552): the interpreter's magic number,
# flags 0, the source's mtime and size; anything else (no bytecode yet, an edited source, another
# Python) takes the import system, which also writes the bytecode for the next run.
LOAD_CLIENT = """import marshal, posix
src = d + "/" + m + ".py"
try:
    st = posix.stat(src)
    with open(d + "/__pycache__/" + m + "." + sys.implementation.cache_tag + ".pyc", "rb") as fh:
        code = fh.read()
    stamp = (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little") + (st.st_size & 0xFFFFFFFF).to_bytes(4, "little")
    magic = sys.modules["_frozen_importlib_external"].MAGIC_NUMBER
    code = marshal.loads(memoryview(code)[16:]) if code[:16] == magic + bytes(4) + stamp else None
except (OSError, ValueError, EOFError, TypeError, KeyError):
    code = None
sys.path.insert(0, root)  # the import system's search order either way (the fallback's product)
if code is None:
    run = __import__(module, fromlist=["run"]).run
else:
    g = {"__name__": module, "__file__": src, "__builtins__": __builtins__}
    exec(code, g)
    run = g["run"]
run()
"""

LAUNCHER = """#!{python} -IS
# xdpcni CNI plugin: the lean client (cni/client.py of {checkout}), written by cni.client.write_launcher
import sys
root, d, m, module = {checkout!r}, {checkout!r} + "/cni", "client", "cni.client"
"""


def write_launcher(dest: str, python: "str | None" = None, checkout: "str | None" = None) -> None:
    """Write the `xdpcni` executable a runtime runs: `python` (default: this interpreter, e.g.
    the venv's) in isolated mode without site, running this module of `checkout` (default: the
    one this file is in) from its cached bytecode (LOAD_CLIENT), nothing else until the agent
    answered."""
    checkout = checkout or os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    tmp = f"{dest}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(LAUNCHER.format(python=python or sys.executable, checkout=checkout) + LOAD_CLIENT)
    os.chmod(tmp, 0o755)
    os.replace(tmp, dest)


if __name__ == "__main__":
    run()
