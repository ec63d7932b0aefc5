"""xdpcni node agent: a warm process that runs CNI verbs for the plugin executable.

Why: a plugin process that imports pyroute2 spends ~130 ms on imports before it does any work;
the agent pays that once. The executable (cni/client.py) hands over env + stdin on a unix
socket and prints the reply; if no agent answers it runs the same code in-process, so the
agent is an accelerator, never a dependency.

It also keeps the conntrack gate honest while it runs: `netfilter: auto` is re-decided every
second, and the fast path's TCP flows are marked liberal in conntrack as they become established
(datapath/ctliberal.py), which the gate requires of TCP unless nf_conntrack_tcp_be_liberal=1.

Requests are served one at a time, in the order they arrive: verbs take node-wide locks anyway,
and one thread keeps setns()/netlink state simple. The agent must run in the node's network
namespace; a client from another namespace is told to fall back.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import sys
import threading
import time

from cni import client
from cni.main import execute
from datapath.pins import DEFAULT_ROOT


def _serve_one(conn: socket.socket, own_netns: int, log) -> None:
    conn.settimeout(30)
    try:
        req = client.recv_msg(conn)
    except (OSError, ValueError) as exc:
        log(f"bad request: {exc}")
        return
    if req.get("netns") != own_netns:
        client.send_msg(conn, {"fallback": "client is in another network namespace"})
        return
    env = {k: v for k, v in (req.get("env") or {}).items() if k.startswith("CNI_")}
    t0 = time.monotonic()
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc, stdout = execute(env, req.get("stdin", "").encode(errors="surrogateescape"))
    log(
        f"{env.get('CNI_COMMAND', '?')} {env.get('CNI_CONTAINERID', '-')} rc={rc} "
        f"{(time.monotonic() - t0) * 1000:.1f}ms"
    )
    try:
        client.send_msg(conn, {"rc": rc, "stdout": stdout, "stderr": err.getvalue()})
    except OSError as exc:
        log(f"client went away before the reply: {exc}")


NETFILTER_PERIOD = 1.0  # seconds between re-decisions of the conntrack gate (netfilter: auto)


def watch_netfilter(roots: list[str], stop: threading.Event, log, period: float = NETFILTER_PERIOD) -> None:
    """netfilter: auto is re-decided while running, never once at load: kube-proxy adds its rules
    after the datapath is loaded. Every `period` seconds, for each loaded datapath in `roots` whose
    setting is auto, write the gate bit for this namespace's current netfilter state."""
    from datapath import netfilter
    from datapath.loader import NodeState
    from datapath.pins import PinLayout

    last: dict[str, bool] = {}
    while not stop.wait(period):
        for root in roots:
            state = NodeState.read(root)
            if state is None or state.netfilter != "auto" or not PinLayout(root).is_loaded():
                continue
            try:
                on = netfilter.sync(root, "auto")
            except Exception as exc:  # keep watching; say why once per change
                log(f"netfilter sync for {root} failed: {exc}")
                continue
            if last.get(root) != on:
                log(f"netfilter auto: conntrack gate {'on' if on else 'off'} for {root}")
                last[root] = on


def endpoint_flow(roots: list[str]):
    """accept() for the liberal marker: an untranslated flow (reply tuple = the inverse of the
    original) with a local pod at one end, the only kind the fast path takes. Other flows keep
    conntrack's full TCP window tracking."""
    from datapath import abi
    from datapath.ctliberal import NFCTAttrTuple
    from datapath.maps import PinnedMap
    from datapath.pins import PinLayout

    def accept(entry) -> bool:
        fam = entry["nfgen_family"]
        orig = NFCTAttrTuple.from_netlink(fam, entry.get_attr("CTA_TUPLE_ORIG"))
        reply = NFCTAttrTuple.from_netlink(fam, entry.get_attr("CTA_TUPLE_REPLY"))
        if (reply.saddr, reply.daddr, reply.sport, reply.dport) != (
            orig.daddr,
            orig.saddr,
            orig.dport,
            orig.sport,
        ):
            return False
        for root in roots:
            layout = PinLayout(root)
            if not layout.is_loaded():
                continue
            with PinnedMap(layout, "endpoints") as eps:
                for ip in (orig.saddr, orig.daddr):
                    if eps.get(abi.EndpointKey.for_ip(ip)) is not None:
                        return True
        return False

    return accept


def start_liberal_marker(roots: list[str], log):
    """Per-flow liberal TCP window tracking for the flows the conntrack gate lets through (see
    datapath/ctliberal.py): event-driven, ~1-2 ms after a flow becomes ASSURED. None when
    ctnetlink is unavailable (the gate then keeps those TCP flows on the stack)."""
    from datapath.ctliberal import LiberalMarker

    marker = LiberalMarker(accept=endpoint_flow(roots))
    try:
        marker.start()
    except Exception as exc:
        log(f"conntrack liberal marker not started ({exc}): established TCP stays on the stack")
        return None
    log("conntrack liberal marker: marking the fast path's TCP flows as they become established")
    return marker


def serve(path: str = client.DEFAULT_SOCKET, log=None, roots: list[str] | None = None) -> int:
    log = log or (lambda m: print(f"xdpcni-agent: {m}", flush=True))
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    if os.path.exists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
            log(f"another agent already serves {path}")
            return 1
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(path)  # stale socket of a dead agent
        finally:
            probe.close()
    # Warm up: everything a verb imports, before the first request arrives.
    import cni.commands.add  # noqa: F401,E401
    import cni.commands.check
    import cni.commands.delete
    import cni.commands.gc
    import cni.commands.status  # noqa: F401

    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # socket file 0600: only root may run verbs
    try:
        srv.bind(path)
    finally:
        os.umask(old_umask)
    srv.listen(256)
    own_netns = client.netns_inode()
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1) or srv.close())
    log(f"serving CNI verbs on {path} (pid {os.getpid()})")
    roots = roots or [DEFAULT_ROOT]
    stop_watch = threading.Event()
    watcher = threading.Thread(target=watch_netfilter, args=(roots, stop_watch, log), daemon=True)
    watcher.start()
    marker = start_liberal_marker(roots, log)
    try:
        while not stopping:
            try:
                conn, _ = srv.accept()
            except OSError:
                break  # closed by SIGTERM
            with conn:
                _serve_one(conn, own_netns, log)
    except KeyboardInterrupt:
        pass
    finally:
        stop_watch.set()
        if marker is not None:
            marker.stop()
        srv.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(serve(*(sys.argv[1:2])))
