"""A Kubernetes API server in miniature for Nodes: enough of the real protocol that the official
`kubernetes` client (and so the agent's Kubernetes mode) cannot tell it from kube-apiserver for
the calls it makes. No API server can be installed on these machines; this is the stand-in.

What it speaks (shapes as in Kubernetes 1.30, https://kubernetes.io/docs/reference/using-api/api-concepts/):
- GET  /api/v1/nodes[?limit=N[&continue=T]]  NodeList {metadata.resourceVersion, items: [v1.Node]},
       in pages of `limit` from one snapshot with a `continue` token (410 for an unknown one);
       resourceVersion=0 is answered whole, as the API server's watch cache does
- GET  /api/v1/nodes?watch=true&resourceVersion=N[&allowWatchBookmarks=true][&timeoutSeconds=T]
       chunked stream of newline-delimited watch events {"type": ADDED|MODIFIED|DELETED|BOOKMARK|
       ERROR, "object": ...}: every change after N, then live changes, a BOOKMARK every
       `bookmark_interval` seconds when asked for, the stream closed after T seconds. N older
       than the retained history gives 410 Gone: as an ERROR event carrying a Status (what the
       etcd watcher does) or, with `gone_as_http`, as an HTTP 410 response (the watch cache's way).
- GET  /api/v1/nodes/NAME                    the Node, or 404 with a Status
- PATCH /api/v1/nodes/NAME/status            application/strategic-merge-patch+json (lists of
       conditions merged by `type`, as the Node's patch strategy says) or
       application/merge-patch+json (RFC 7386: lists replaced); anything else 415.
Every request needs `Authorization: Bearer <token>` (401 otherwise) and is logged in `requests`
as (method, path, query dict, content type, listener port). Each resourceVersion is a global counter, as etcd's.

Listeners bind 127.0.0.1 only, on an ephemeral port, optionally inside a network namespace (the
socket is created there), so an agent running in a simulated node reaches it on its own loopback.
"""

from __future__ import annotations

import contextlib
import copy
import json
import secrets
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from datapath.netns import entered


def make_node(
    name: str,
    addresses: list[str] = (),
    pod_cidrs: list[str] = (),
    conditions: list[dict] | None = None,
) -> dict:
    """A v1.Node as kubelet registers it: InternalIP addresses and a Hostname, spec.podCIDR(s) as
    the node IPAM controller sets them, and kubelet's Ready condition."""
    addrs = [{"type": "InternalIP", "address": a} for a in addresses] + [
        {"type": "Hostname", "address": name}
    ]
    spec: dict = {}
    if pod_cidrs:
        spec = {"podCIDR": pod_cidrs[0], "podCIDRs": list(pod_cidrs)}
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "KubeletReady",
        "message": "kubelet is posting ready status",
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "uid": secrets.token_hex(16),
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
            "creationTimestamp": now,
        },
        "spec": spec,
        "status": {"addresses": addrs, "conditions": conditions if conditions is not None else [ready]},
    }


def _status(code: int, reason: str, message: str) -> dict:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch: objects merge, null deletes, anything else (lists) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


# Lists in a Node that strategic merge patches merge by a key (k8s.io/api/core/v1 types.go
# patchMergeKey): status.conditions by type, status.addresses by type (a simplification that
# is exact for the single-address-per-type nodes used here).
MERGE_KEYS = {("status", "conditions"): "type", ("status", "addresses"): "type"}


def strategic_merge_patch(target, patch, path: tuple = ()):
    if isinstance(patch, list) and path in MERGE_KEYS and isinstance(target, list):
        key = MERGE_KEYS[path]
        out = [copy.deepcopy(x) for x in target]
        for item in patch:
            idx = next((i for i, x in enumerate(out) if x.get(key) == item.get(key)), None)
            if idx is None:
                out.append(copy.deepcopy(item))
            else:
                out[idx] = strategic_merge_patch(out[idx], item, path + ("[]",))
        return out
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = strategic_merge_patch(out.get(k), v, path + (k,))
    return out


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """A client that hangs up (an agent stopped mid-watch) is no error worth a traceback."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FakeApiServer:
    """Cluster state (Nodes), the event history watches replay from, and HTTP listeners."""

    def __init__(self, bookmark_interval: float = 1.0, history: int = 1000):
        self.token = secrets.token_hex(16)
        self.bookmark_interval = bookmark_interval
        self.history = history  # events kept; a watch from before the oldest one gets 410
        self.gone_as_http = False
        self.rv = 100
        self.nodes: dict[str, dict] = {}
        self.events: list[tuple[int, str, dict]] = []  # (rv, type, object)
        self.compacted_rv = self.rv  # watches from an RV below this are too old
        self.requests: list[tuple[str, str, dict, str, int]] = []
        self.snapshots: dict[str, tuple[int, list[dict]]] = {}  # continue token -> (rv, rest)
        self.pages = 0  # list pages served
        self.paused = False  # pause(): open watches deliver nothing (a partition), changes pile up
        self.cond = threading.Condition()
        self.generation = 0  # bumped by break_watches(): live watch streams end abruptly
        self.endings = 0  # bumped by end_watches(): live watch streams end as at timeoutSeconds
        self.watching = 0  # open watch streams
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []

    # ---- cluster state changes (as the node controller or kubelet would make them) ----

    def _emit(self, etype: str, obj: dict) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.events.append((self.rv, etype, copy.deepcopy(obj)))
        if len(self.events) > self.history:
            self.compacted_rv = self.events[-self.history - 1][0] + 1
            del self.events[: -self.history]
        self.cond.notify_all()

    def add_node(self, node: dict) -> dict:
        with self.cond:
            node = copy.deepcopy(node)
            self.nodes[node["metadata"]["name"]] = node
            self._emit("ADDED", node)
            return copy.deepcopy(node)

    def modify_node(self, name: str, change) -> dict:
        """change(node) edits the stored Node in place; a MODIFIED event follows."""
        with self.cond:
            node = self.nodes[name]
            change(node)
            self._emit("MODIFIED", node)
            return copy.deepcopy(node)

    def delete_node(self, name: str) -> None:
        with self.cond:
            node = self.nodes.pop(name)
            self._emit("DELETED", node)

    def node(self, name: str) -> dict:
        with self.cond:
            return copy.deepcopy(self.nodes[name])

    def compact(self) -> None:
        """Forget the event history (etcd compaction): every watch from an older RV gets 410."""
        with self.cond:
            self.events.clear()
            self.compacted_rv = self.rv + 1

    def pause(self, paused: bool = True) -> None:
        """While paused, open watch streams send nothing (events, bookmarks): the clients miss
        every change made meanwhile unless they relist."""
        with self.cond:
            self.paused = paused
            self.cond.notify_all()

    def expire(self) -> None:
        """Every resourceVersion up to now becomes too old to watch from (etcd compaction, or an
        API server restart with a fresh watch cache): the next watch gets 410 Gone."""
        with self.cond:
            self.events.clear()
            self.compacted_rv = self.rv + 2

    def end_watches(self) -> None:
        """End every open watch cleanly, as the API server does at timeoutSeconds; the client
        then watches again from its last resourceVersion."""
        with self.cond:
            self.endings += 1
            self.cond.notify_all()

    def break_watches(self) -> None:
        """Drop every open watch connection without a final event (a proxy or apiserver restart)."""
        with self.cond:
            self.generation += 1
            self.cond.notify_all()

    def log(
        self, method: str | None = None, watch: bool | None = None, port: int | None = None
    ) -> list[tuple[str, str, dict, str, int]]:
        with self.cond:
            out = list(self.requests)
        if port is not None:
            out = [r for r in out if r[4] == port]
        if method:
            out = [r for r in out if r[0] == method]
        if watch is not None:
            out = [r for r in out if (r[2].get("watch") == "true") == watch]
        return out

    # ---- HTTP ----

    def listen(self, netns: str | None = None) -> int:
        """A listener on 127.0.0.1 (in `netns` when given): its port."""
        with entered(netns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv = _Server(("127.0.0.1", 0), _handler(self), bind_and_activate=False)
        srv.socket.close()
        srv.socket = sock
        srv.daemon_threads = True
        try:
            srv.server_bind()
            srv.server_activate()
        except BaseException:
            srv.server_close()
            raise
        t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        t.start()
        self._servers.append(srv)
        self._threads.append(t)
        return srv.server_address[1]

    def kubeconfig(self, path: str, port: int) -> str:
        """A kubeconfig for a listener (written to `path`): plain http, bearer token."""
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
            "users": [{"name": "xdpcni", "user": {"token": self.token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "xdpcni"}}],
            "current-context": "fake",
        }
        with open(path, "w") as fh:
            json.dump(cfg, fh)  # JSON is YAML
        return path

    def close(self) -> None:
        self.break_watches()
        for srv in self._servers:
            srv.shutdown()
            srv.server_close()
        for t in self._threads:
            t.join(5)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _handler(api: FakeApiServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def _send_json(self, code: int, obj: dict) -> None:
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _begin(self) -> tuple[str, dict] | None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            with api.cond:
                api.requests.append(
                    (
                        self.command,
                        url.path,
                        query,
                        self.headers.get("Content-Type", ""),
                        self.server.server_address[1],
                    )
                )
            if self.headers.get("Authorization") != f"Bearer {api.token}":
                self._send_json(401, _status(401, "Unauthorized", "Unauthorized"))
                return None
            return url.path, query

        def do_GET(self):
            got = self._begin()
            if got is None:
                return
            path, query = got
            if path == "/api/v1/nodes":
                if query.get("watch") in ("true", "1"):
                    return self._watch(query)
                token = query.get("continue")
                with api.cond:
                    if token:
                        if token not in api.snapshots:
                            return self._send_json(
                                410, _status(410, "Expired", "The provided continue parameter is too old")
                            )
                        rv, items = api.snapshots.pop(token)
                    else:
                        items = [copy.deepcopy(n) for _, n in sorted(api.nodes.items())]
                        rv = api.rv
                    # resourceVersion "0" is served whole from the watch cache: limit ignored
                    limit = 0 if query.get("resourceVersion") == "0" else int(query.get("limit") or 0)
                    meta = {"resourceVersion": str(rv)}
                    if limit and len(items) > limit:  # one snapshot, served in pages
                        rest, items = items[limit:], items[:limit]
                        meta["continue"] = secrets.token_urlsafe(8)
                        api.snapshots[meta["continue"]] = (rv, rest)
                    api.pages += 1
                for item in items:  # list items carry no kind/apiVersion
                    item.pop("kind", None)
                    item.pop("apiVersion", None)
                return self._send_json(
                    200, {"kind": "NodeList", "apiVersion": "v1", "metadata": meta, "items": items}
                )
            if path.startswith("/api/v1/nodes/") and path.count("/") == 4:
                name = path.rsplit("/", 1)[1]
                with api.cond:
                    node = copy.deepcopy(api.nodes.get(name))
                if node is None:
                    return self._send_json(404, _status(404, "NotFound", f'nodes "{name}" not found'))
                return self._send_json(200, node)
            self._send_json(404, _status(404, "NotFound", "the server could not find the requested resource"))

        def do_PATCH(self):
            got = self._begin()
            if got is None:
                return
            path, _ = got
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            parts = path.split("/")
            if len(parts) != 6 or parts[:4] != ["", "api", "v1", "nodes"] or parts[5] != "status":
                return self._send_json(405, _status(405, "MethodNotAllowed", f"PATCH {path} not served here"))
            ctype = self.headers.get("Content-Type", "").split(";")[0].strip()
            if ctype == "application/strategic-merge-patch+json":
                merge = strategic_merge_patch
            elif ctype == "application/merge-patch+json":
                merge = merge_patch
            else:
                return self._send_json(
                    415,
                    _status(
                        415,
                        "UnsupportedMediaType",
                        f"the body of the request was in an unknown format: {ctype}",
                    ),
                )
            try:
                patch = json.loads(body)
            except ValueError as exc:
                return self._send_json(400, _status(400, "BadRequest", str(exc)))
            with api.cond:
                node = api.nodes.get(parts[4])
                if node is None:
                    return self._send_json(404, _status(404, "NotFound", f'nodes "{parts[4]}" not found'))
                # nodes/status: only status changes (the API server drops the rest)
                new = merge(node, {"status": patch.get("status", {})})
                node.clear()
                node.update(new)
                api._emit("MODIFIED", node)
                out = copy.deepcopy(node)
            self._send_json(200, out)

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def _watch(self, query: dict) -> None:
            try:
                since = int(query.get("resourceVersion") or 0)
            except ValueError:
                return self._send_json(400, _status(400, "BadRequest", "resourceVersion must be an integer"))
            bookmarks = query.get("allowWatchBookmarks") == "true"
            deadline = time.monotonic() + float(query.get("timeoutSeconds") or 1800)
            with api.cond:
                too_old = since != 0 and since < api.compacted_rv - 1
                if too_old and api.gone_as_http:
                    msg = f"too old resource version: {since} ({api.compacted_rv - 1})"
                    return self._send_json(410, _status(410, "Expired", msg))
                gen, ending = api.generation, api.endings
                api.watching += 1
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                if too_old:
                    msg = f"too old resource version: {since} ({api.compacted_rv - 1})"
                    self._chunk(
                        json.dumps({"type": "ERROR", "object": _status(410, "Expired", msg)}).encode() + b"\n"
                    )
                    self._chunk(b"")
                    return
                sent = since if since else api.rv  # RV 0: "any", start from now
                next_bookmark = time.monotonic() + api.bookmark_interval
                while True:
                    with api.cond:
                        while api.generation == gen and api.endings == ending:
                            if not api.paused:
                                now = time.monotonic()
                                if api.events and api.events[-1][0] > sent:
                                    break
                                if now >= deadline or (bookmarks and now >= next_bookmark):
                                    break
                            api.cond.wait(0.05)
                        if api.generation != gen:
                            self.close_connection = True
                            with contextlib.suppress(OSError):
                                self.connection.shutdown(socket.SHUT_RDWR)
                            return
                        ended = api.endings != ending
                        pending = (
                            []
                            if ended
                            else [(rv, t, copy.deepcopy(o)) for rv, t, o in api.events if rv > sent]
                        )
                        current = api.rv
                    for rv, etype, obj in pending:
                        self._chunk(json.dumps({"type": etype, "object": obj}).encode() + b"\n")
                        sent = rv
                    now = time.monotonic()
                    if ended or now >= deadline:
                        self._chunk(b"")  # the API server ends a watch at timeoutSeconds
                        return
                    if bookmarks and now >= next_bookmark:
                        mark = {
                            "kind": "Node",
                            "apiVersion": "v1",
                            "metadata": {"resourceVersion": str(current)},
                        }
                        self._chunk(json.dumps({"type": "BOOKMARK", "object": mark}).encode() + b"\n")
                        sent = max(sent, current)
                        next_bookmark = now + api.bookmark_interval
            except OSError:
                self.close_connection = True
            finally:
                with api.cond:
                    api.watching -= 1

    return Handler
