"""The CNI executable's side of the node agent protocol. Standard library only: this runs in
every plugin process, before (and usually instead of) importing pyroute2.

Wire format, both directions: 4-byte big-endian length, then a JSON object.
  request  {"env": {CNI_*...}, "stdin": "<network config>", "netns": <inode of our net ns>}
  reply    {"rc": int, "stdout": str, "stderr": str}  or  {"fallback": "<why>"}
"""

from __future__ import annotations

import json
import os
import socket
import struct

DEFAULT_SOCKET = "/run/xdpcni/agent.sock"
TIMEOUT = 150.0  # the first ADD on a node may compile and load the datapath
TRY_AGAIN_LATER = 11


def socket_path(environ: dict[str, str], stdin: bytes) -> str:
    """netconf "agentSocket" ("" disables the agent), else XDPCNI_AGENT_SOCKET, else the default."""
    try:
        conf = json.loads(stdin)
        if isinstance(conf, dict) and isinstance(conf.get("agentSocket"), str):
            return conf["agentSocket"]
    except Exception:  # not JSON, nested too deeply, ...: the verb reports it (code 6)
        pass
    return environ.get("XDPCNI_AGENT_SOCKET", DEFAULT_SOCKET)


def netns_inode() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def send_msg(sock: socket.socket, obj: dict) -> None:
    data = json.dumps(obj).encode()
    sock.sendall(struct.pack(">I", len(data)) + data)


def recv_msg(sock: socket.socket) -> dict:
    head = _recv_exact(sock, 4)
    return json.loads(_recv_exact(sock, struct.unpack(">I", head)[0]))


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionResetError("agent closed the connection")
        buf += chunk
    return bytes(buf)


def via_agent(environ: dict[str, str], stdin: bytes) -> tuple[int, str, str] | None:
    """(rc, stdout, stderr) from the agent, or None to run in-process (no agent, not ours)."""
    path = socket_path(environ, stdin)
    if not path or "\0" in path or not path.startswith("/") or not os.path.exists(path):
        return None  # a malformed path is the verb's to report (code 7)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    try:
        try:
            sock.connect(path)
        except OSError:
            return None  # stale socket of a dead agent, not a socket, too long a path
        request = {
            "env": {k: v for k, v in environ.items() if k.startswith("CNI_")},
            "stdin": stdin.decode(errors="surrogateescape"),
            "netns": netns_inode(),
        }
        try:
            send_msg(sock, request)
            reply = recv_msg(sock)
        except (OSError, ValueError) as exc:
            # The agent died mid-request: what it did is unknown, so let the runtime DEL and retry.
            err = {
                "cniVersion": "1.1.0",
                "code": TRY_AGAIN_LATER,
                "msg": "xdpcni agent failed mid-request",
                "details": str(exc),
            }
            return 1, json.dumps(err), ""
        if "fallback" in reply:
            return None
        return int(reply["rc"]), reply.get("stdout", ""), reply.get("stderr", "")
    finally:
        sock.close()
