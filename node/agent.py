"""xdpcni node agent: a warm process that runs CNI verbs for the plugin executable.

Why: a plugin process that imports pyroute2 spends ~130 ms on imports before it does any work;
the agent pays that once. The executable (cni/client.py) hands over env + stdin on a unix
socket and prints the reply; if no agent answers it runs the same code in-process, so the
agent is an accelerator, never a dependency.

It also keeps the conntrack gate honest while it runs: `netfilter: auto` is re-decided every
second, and the fast path's TCP flows are marked liberal in conntrack as they become established
(datapath/ctliberal.py), which the gate requires of TCP unless nf_conntrack_tcp_be_liberal=1.

Each connection is served by a thread of its own (threads waiting in accept() take one each
and serve it; another starts whenever the last waiting one is taken: _Acceptors): a slow verb
(waiting for a lock) or an idle or malformed connection never holds up the others. Verbs
serialise where they must through their own locks (per attachment, per network, per datapath; flock locks exclude threads as they
exclude processes), and a verb's thread leaves the node's network namespace only for the one
socket() call that makes a pod namespace's netlink socket (datapath/rtnl.py socket_in_netns: no
fork; its messages are pyroute2's). A malformed message gets an error object on its own connection and is
logged; the agent keeps serving. The agent must run in the node's network
namespace; a client from another namespace is told to fall back.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import io
import json
import os
import signal
import socket
import struct
import sys
import threading
import time

from cni import client, locking, plumbing
from cni import node as cni_node
from cni.main import execute
from datapath.pins import DEFAULT_ROOT

REQUEST_TIMEOUT = 30.0  # seconds a connection may take to send its request (its own thread only)
MAX_REQUEST = 16 << 20  # bytes: a CNI request is a few KiB


class _ThreadStderr(io.TextIOBase):
    """sys.stderr for a threaded server: each verb's diagnostics go to its own buffer."""

    def __init__(self, real):
        self.real = real
        self.local = threading.local()

    def write(self, s: str) -> int:
        buf = getattr(self.local, "buf", None)
        return (buf if buf is not None else self.real).write(s)

    def flush(self) -> None:
        if getattr(self.local, "buf", None) is None:
            self.real.flush()

    @contextlib.contextmanager
    def captured(self):
        self.local.buf = io.StringIO()
        try:
            yield self.local.buf
        finally:
            self.local.buf = None


_STDERR: _ThreadStderr | None = None

_LOG_LOCK = threading.Lock()
LOG_LOCK_TIMEOUT = 5.0  # s: past it a line is written unlocked (a glued line beats a stuck verb)


def log_line(message: str) -> None:
    """The agent's default log: one line on stdout, "xdpcni-agent: MESSAGE", written whole.

    The agent logs from many threads (each connection's verb, the netfilter watcher, the
    Kubernetes watches). print() writes the text and its newline in two calls, so another
    thread's line could land between them: two lines glued on one, the next line empty. With 8
    threads printing, ~30 % of the lines came out glued (Python 3.11); under 100 ADDs at once
    the benchmark, which reads the verbs back from this log, missed up to 5 of 200. Here each
    line is a single write under a lock, then flushed (a container runtime's log reader sees it
    at once)."""
    stream = sys.stdout
    locked = _LOG_LOCK.acquire(timeout=LOG_LOCK_TIMEOUT)
    try:
        stream.write(f"xdpcni-agent: {message}\n")
        stream.flush()
    finally:
        if locked:
            _LOG_LOCK.release()


def _error_reply(code: int, msg: str, details: str = "") -> dict:
    err = {"cniVersion": "1.1.0", "code": code, "msg": msg}
    if details:
        err["details"] = details
    return {"rc": 1, "stdout": json.dumps(err), "stderr": f"xdpcni agent: {msg}\n"}


def _read_request(conn: socket.socket) -> dict:
    head = client._recv_exact(conn, 4)
    size = struct.unpack(">I", head)[0]
    if size > MAX_REQUEST:
        raise ValueError(f"request of {size} bytes is larger than {MAX_REQUEST}")
    req = json.loads(client._recv_exact(conn, size))
    if not isinstance(req, dict):
        raise ValueError("request is not a JSON object")
    env = req.get("env")
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise ValueError('request "env" must be an object of strings')
    if not isinstance(req.get("stdin", ""), str):
        raise ValueError('request "stdin" must be a string')
    return req


def _serve_one(conn: socket.socket, own_netns: int, log) -> None:
    conn.settimeout(REQUEST_TIMEOUT)
    try:
        req = _read_request(conn)
    except (OSError, ConnectionError) as exc:
        log(f"connection dropped before a full request: {exc}")
        return
    except (ValueError, RecursionError, struct.error) as exc:
        log(f"bad request: {exc}")
        with contextlib.suppress(OSError):
            client.send_msg(conn, _error_reply(6, "xdpcni agent: malformed request", str(exc)[:500]))
        return
    if req.get("netns") != own_netns:
        client.send_msg(conn, {"fallback": "client is in another network namespace"})
        return
    env = {k: v for k, v in req["env"].items() if k.startswith("CNI_")}
    arrived = time.monotonic()
    with _SLOTS.held(), _STDERR.captured() as err:
        t0 = time.monotonic()
        rc, stdout = execute(env, req.get("stdin", "").encode(errors="surrogateescape"))
        elapsed = time.monotonic() - t0
    log(
        f"{env.get('CNI_COMMAND', '?')} {env.get('CNI_CONTAINERID', '-')} rc={rc} {elapsed * 1000:.1f}ms "
        f"(waited {(t0 - arrived) * 1000:.1f}ms for its turn)"
    )
    if _VERBS is not None:
        _VERBS.observe(env.get("CNI_COMMAND", "?"), _code(rc, stdout), elapsed)
    conn.settimeout(REQUEST_TIMEOUT)
    try:
        client.send_msg(conn, {"rc": rc, "stdout": stdout, "stderr": err.getvalue()})
    except OSError as exc:
        log(f"client went away before the reply: {exc}")
    locking.refill_spares()  # the next verb's state files, made now that this one has its answer


_VERBS = None  # node.metrics.VerbMetrics when the agent serves metrics


class RunSlots:
    """At most `n` verbs run at once; the others wait their turn in arrival order of the
    kernel's wake-ups. Verbs are CPU-bound Python (one GIL), so running a hundred at once only
    interleaves them: measured with 100 ADDs launched at once, 1 slot finished them sooner than
    4 or 100 (bench/cnibench.py). A verb waiting for a lock gives its slot up meanwhile
    (datapath.locks.WAIT_HOOK), so a slow lock holder never stalls the verbs that do not need
    that lock."""

    def __init__(self, n: int):
        self.sem = threading.Semaphore(n)
        self.local = threading.local()

    @contextlib.contextmanager
    def held(self):
        self.sem.acquire()
        self.local.holding = True
        try:
            yield
        finally:
            self.local.holding = False
            self.sem.release()

    @contextlib.contextmanager
    def released_while_waiting(self):
        if not getattr(self.local, "holding", False):
            yield
            return
        self.local.holding = False
        self.sem.release()
        try:
            yield
        finally:
            self.sem.acquire()
            self.local.holding = True


DEFAULT_RUNNING = 1
_SLOTS = RunSlots(DEFAULT_RUNNING)


class Reaper:
    """Deletes pod veths after their DEL answered (cni/commands/common.py DEFER): each on a
    thread of its own (the kernel's veth deletion mostly waits, ~35-40 ms, and the waits of many
    overlap), which then releases the attachment's lock. stop() waits for the ones still
    running; one the agent dies before is finished from its note (cni/pending.py)."""

    def __init__(self, log):
        self.log = log
        self.threads: set[threading.Thread] = set()
        self.lock = threading.Lock()

    def submit(self, finish, held: contextlib.ExitStack) -> None:
        def run() -> None:
            try:
                finish()
            except Exception as exc:  # its note is disowned: watch_netfilter retries it
                self.log(f"deleting a pod veth after DEL failed ({type(exc).__name__}: {exc}); retrying")
            finally:
                held.close()
                with self.lock:
                    self.threads.discard(threading.current_thread())

        t = threading.Thread(target=run, name="xdpcni-del-finish", daemon=True)
        with self.lock:
            self.threads.add(t)
        try:
            t.start()
        except BaseException:  # no thread (a pids limit): finish here, never keep the lock
            with self.lock:
                self.threads.discard(t)
            try:
                finish()
            finally:
                held.close()
            raise

    def stop(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with self.lock:
            pending = list(self.threads)
        for t in pending:
            t.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in pending):
            self.log("stopping with pod veth deletions still running: the next agent or DEL finishes them")


def _code(rc: int, stdout: str) -> int:
    """The CNI result code of a reply: 0 for success, else the error object's code."""
    if rc == 0:
        return 0
    try:
        return int(json.loads(stdout).get("code", 100))
    except (ValueError, AttributeError, TypeError):
        return 100


FULL_GC_ROUNDS = 30  # periods between collections of every generation (collect_between_verbs)
GC_PERIOD = 1.0  # seconds between the agent's cyclic garbage collections


def collect_between_verbs(stop: threading.Event, period: float = GC_PERIOD) -> None:
    """The cyclic GC, run between verbs instead of inside them. Automatic collections fire on
    allocation counts, i.e. in the middle of whatever verb crosses the threshold (~0.5 ms of
    every ADD here, measured with tests of ADD in a loop); the agent turns them off and collects
    once a period while holding a run slot, so no verb waits on a collection. Reference counting
    frees everything else at once; only cycles wait for this: a period's worth at most, or
    FULL_GC_ROUNDS periods for a cycle that outlived two young collections."""
    gc.disable()
    rounds = 0
    try:
        while not stop.wait(period):
            rounds += 1
            with _SLOTS.held():
                # The young generations (what verbs made since) every period; everything that
                # survived them (the oldest generation: slower to walk the more the agent has
                # cached since gc.freeze()) once every FULL_GC_ROUNDS periods.
                gc.collect(2 if rounds % FULL_GC_ROUNDS == 0 else 1)
    finally:
        gc.enable()


def _health(roots: list[str]):
    """healthy() for /healthz: None when every datapath root is loaded, else the reason."""
    from datapath.pins import PinLayout

    def healthy() -> str | None:
        missing = [r for r in roots if not PinLayout(r).is_loaded()]
        return f"datapath not loaded under {', '.join(missing)}" if missing else None

    return healthy


def _connection(conn: socket.socket, own_netns: int, log) -> None:
    """One connection's thread: whatever happens stays on this connection."""
    try:
        with conn:
            _serve_one(conn, own_netns, log)
    except Exception as exc:  # never let one connection take the agent down
        log(f"error serving a connection: {type(exc).__name__}: {exc}")


class _Acceptors:
    """Threads that each accept a connection and serve it themselves: no thread is started per
    connection while one waits in accept() (a thread start cost ~0.2 ms of every verb here).
    Whenever the last waiting thread takes a connection it starts another first, so a
    connection never waits for a thread (a verb waiting for a lock keeps its thread, and the
    others go on); a thread that finds IDLE_MAX others waiting ends. accept() errors other than
    the socket's shutdown (`stopping` set) are retried; a thread that cannot be started leaves
    the one that took the connection accepting again once it has served it."""

    IDLE_MAX = 4

    def __init__(self, srv: socket.socket, own_netns: int, log, stopping: threading.Event) -> None:
        self.srv, self.own_netns, self.log, self.stopping = srv, own_netns, log, stopping
        self.lock = threading.Lock()
        self.idle = 0  # threads in (or on their way to) accept()

    def start(self) -> None:
        with self.lock:
            self.idle += 1
        try:
            threading.Thread(target=self._run, name="xdpcni-agent-conn", daemon=True).start()
        except Exception as exc:  # e.g. a pids limit: the caller stays the acceptor
            with self.lock:
                self.idle -= 1
            self.log(f"could not start a connection thread ({exc}): serving one at a time")

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError as exc:
                if self.stopping.is_set() or exc.errno in (errno.EBADF, errno.EINVAL):  # shut down
                    with self.lock:
                        self.idle -= 1
                    return
                self.log(f"accept failed ({exc}): retrying")
                time.sleep(0.05)
                continue
            with self.lock:
                self.idle -= 1
                last = self.idle == 0
            if last:
                self.start()
            _connection(conn, self.own_netns, self.log)
            with self.lock:
                if self.idle >= self.IDLE_MAX:
                    return
                self.idle += 1


NETFILTER_PERIOD = 1.0  # seconds between re-decisions of the conntrack gate (netfilter: auto)


def watch_netfilter(roots: list[str], stop: threading.Event, log, period: float = NETFILTER_PERIOD) -> None:
    """netfilter: auto is re-decided while running, never once at load: kube-proxy adds its rules
    after the datapath is loaded. Every `period` seconds, for each loaded datapath in `roots` whose
    setting is auto, write the gate bit for this namespace's current netfilter state. Also
    retries the pod veth deletions a DEL could not finish (cni/pending.py: the notes it gave up)."""
    from datapath import netfilter, nodeaddrs
    from datapath.loader import NodeState
    from datapath.pins import PinLayout

    last: dict[str, bool] = {}
    while not stop.wait(period):
        for root in roots:
            finish_owed_deletions(root, log, "whose deletion had failed")
            state = NodeState.read(root)
            if state is None or not PinLayout(root).is_loaded():
                continue
            try:
                nodeaddrs.sync(root)
            except Exception as exc:
                log(f"node address sync for {root} failed: {exc}")
            if state.netfilter != "auto":
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


def finish_owed_deletions(root: str, log, whose: str) -> None:
    """Delete the pod veths whose DEL answered but whose deletion nobody will finish: owed by a
    dead agent, or given up after a failure (cni/pending.py); `whose` says which in the log."""
    from cni.pending import PendingDeletes

    try:
        n = PendingDeletes(root).finish_orphans()
    except Exception as exc:
        log(f"finishing owed pod veth deletions for {root} failed: {exc}")
        return
    if n:
        log(f"{root}: deleted {n} pod veth(s) {whose}")


def restore_endpoints(roots: list[str], log) -> None:
    """At start, as Cilium's agent does: every loaded datapath's maps and pod programs are made to
    match the live pods (datapath/restore.py); a datapath that cannot be restored is logged."""
    from datapath.pins import PinLayout
    from datapath.restore import restore

    for root in roots:
        finish_owed_deletions(root, log, "a previous agent still owed")
        if not PinLayout(root).is_loaded():
            continue
        try:
            log(f"restore {root}: {restore(root, log=lambda m: None).summary()}")
        except Exception as exc:
            log(f"restore {root} failed: {exc}")


def serve(
    path: str = client.DEFAULT_SOCKET,
    log=None,
    roots: list[str] | None = None,
    metrics_listen: str | None = None,
    peers_file: str | None = None,
    node_name: str | None = None,
    services: list | None = None,
    running: int = 0,
) -> int:
    """Serve until SIGTERM. `services`: objects with start() and stop() run while the agent
    serves, started once the socket is bound (node/k8s.py KubernetesMode). `running`: how many
    verbs run at once (RunSlots; 0: DEFAULT_RUNNING)."""
    log = log or log_line
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

    global _STDERR, _SLOTS
    from cni.commands import common as cni_common
    from datapath import locks, rtnl

    rtnl.use_templates()  # per-pod netlink requests from templates pyroute2 encoded (datapath/rtnl.py)
    try:
        plumbing.prime_templates()  # made now, not by the first pod's ADD (~12 ms of it)
    except Exception as exc:  # an accelerator: the verbs make them at first use instead
        log(f"could not make the netlink templates ahead of use: {type(exc).__name__}: {exc}")
    locking.keep_spares()  # state files' inodes made between verbs (cni/locking.py write_atomic)

    _SLOTS = RunSlots(running if running > 0 else DEFAULT_RUNNING)
    locks.WAIT_HOOK = _SLOTS.released_while_waiting
    reaper = Reaper(log)
    cni_common.DEFER = reaper.submit
    if not isinstance(sys.stderr, _ThreadStderr):
        sys.stderr = _ThreadStderr(sys.stderr)
    _STDERR = sys.stderr
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # socket file 0600: only root may run verbs
    try:
        srv.bind(path)
    finally:
        os.umask(old_umask)
    srv.listen(256)
    own_netns = client.netns_inode()
    stopping = threading.Event()

    def stop(*_) -> None:
        stopping.set()
        with contextlib.suppress(OSError):
            srv.shutdown(socket.SHUT_RDWR)  # wakes the threads in accept() (close alone does not)
        srv.close()

    signal.signal(signal.SIGTERM, stop)
    log(f"serving CNI verbs on {path} (pid {os.getpid()})")
    roots = roots or [DEFAULT_ROOT]
    cni_node.WATCHED_ROOTS.update(roots)  # watch_netfilter re-decides their gate: verbs need not
    stop_watch = threading.Event()
    watcher = threading.Thread(target=watch_netfilter, args=(roots, stop_watch, log), daemon=True)
    watcher.start()
    if peers_file:  # routes to the other nodes' pod CIDRs, re-synced when the file changes
        from .routes import start_file_source

        name = node_name or os.environ.get("NODE_NAME") or socket.gethostname()
        start_file_source(peers_file, name, roots[0], stop_watch, log)
    started = []
    for svc in services or []:
        svc.start()
        started.append(svc)
    marker = start_liberal_marker(roots, log)
    httpd = None
    if metrics_listen:
        global _VERBS
        from . import metrics

        reg = metrics.registry(roots[0])
        _VERBS = metrics.VerbMetrics(reg)
        httpd = metrics.start_server(reg, metrics_listen, _health(roots), log)
    restore_endpoints(roots, log)
    # Everything imported and built so far lives as long as the agent: out of the cyclic GC's
    # sight, so its full collections (otherwise ~10 ms over pyroute2's objects) never stall a verb.
    gc.collect()
    gc.freeze()
    collector = threading.Thread(target=collect_between_verbs, args=(stop_watch,), daemon=True)
    collector.start()
    try:
        _Acceptors(srv, own_netns, log, stopping).start()
        while not stopping.wait(3600):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        stop()  # no more connections while the rest is torn down
        stop_watch.set()
        reaper.stop()
        cni_common.DEFER = None
        locks.WAIT_HOOK = None
        locking.keep_spares(False)
        cni_node.WATCHED_ROOTS.difference_update(roots)
        for svc in started:
            svc.stop()
        if marker is not None:
            marker.stop()
        if httpd is not None:
            httpd.shutdown()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(serve(*(sys.argv[1:2])))
