"""The node agent's Kubernetes mode (`xdpcnictl agent --kubernetes`): the cluster's Nodes drive
this node's routes, its CNI config and its NetworkUnavailable condition.

What it reads (official `kubernetes` client; in-cluster config, or `--kubeconfig`):
- GET nodes/<self> once at start (says early and clearly when the node name or RBAC is wrong);
- LIST nodes once (resourceVersion "0": served from the API server's watch cache; pages of 500
  with continue otherwise), then WATCH
  nodes from the list's resourceVersion with allowWatchBookmarks, informer style: one local
  cache {name: NodeView}, updated per event, never a relist per event. A watch that ends at its
  timeoutSeconds is resumed from the last resourceVersion seen (events and bookmarks). 410 Gone
  (as an ERROR event or an HTTP status) or any other watch/list error → relist (after 410 with an
  unset resourceVersion, a consistent read) with exponential backoff, 0.5 s doubling to 30 s,
  jittered; watch timeouts are spread over 300..600 s.
  A relist replaces the cache wholesale; routes are diffed against the kernel, so nothing flaps.
  Events that change nothing we use (kubelet's heartbeats) trigger no work.
What it writes:
- routes to every other node's pod CIDRs (spec.podCIDRs, spec.podCIDR for old clusters) via
  its InternalIP(s), IPv4 and IPv6 (node/routes.py RouteController: own protocol, diffed, never
  a route it did not create; a peer off our L2 segment is reported and skipped);
- the CNI executable and conflist on the host (node/install.py), once ready: the datapath is
  loaded, this Node has podCIDRs, the first route sync is done and the agent socket is bound.
  Ranges from spec.podCIDRs in their order (the first family is the primary one in the CNI
  result), pod MTU from the link that reaches the other nodes;
- PATCH nodes/<self>/status (strategic merge) NetworkUnavailable=False, reason XdpcniIsUp, as
  Calico (CalicoIsUp) and Cilium (CiliumIsUp) do, once ready and whenever the Node says otherwise.
RBAC_RULES below is exactly that set of calls (the ClusterRole in conf/kubernetes is checked
against it).

Sources: API concepts (efficient detection of changes, watch bookmarks, 410 Gone),
https://kubernetes.io/docs/reference/using-api/api-concepts/; client-go's reflector
(tools/cache/reflector.go) for the list/watch/relist cycle; Node conditions,
https://kubernetes.io/docs/reference/node/node-status/#condition.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import socket
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .routes import Peer

RBAC_RULES: list[dict] = [
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]},
]

CONDITION_TYPE = "NetworkUnavailable"
CONDITION_REASON = "XdpcniIsUp"
STRATEGIC_MERGE = "application/strategic-merge-patch+json"
MTU_MIN, MTU_MAX = 576, 3506  # datapath/config.py NodeConfig.mtu: IPv4 minimum, veth native XDP limit
WATCH_TIMEOUT = 300  # seconds: timeoutSeconds of each watch, ×1..2 at random (client-go's spread)
LIST_PAGE = 500  # nodes per LIST page (client-go's default page size)
BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0
RESYNC_PERIOD = 60.0  # seconds between reconciles when nothing changed (repairs removed routes)
PATCH_RETRY = 10.0  # seconds before the same condition patch is sent again


class Gone(Exception):
    """410 Gone: the resourceVersion we watch from is older than the API server keeps."""


# ---------------------------------------------------------------------------------------------
# Node objects → what we use (pure, unit-tested)


@dataclass(frozen=True)
class NodeView:
    """The part of a v1.Node this mode uses; two Nodes with equal views need no work.
    peer: name, InternalIPs (in status.addresses order), pod CIDRs (spec.podCIDRs order);
    condition: (status, reason) of NetworkUnavailable, None when the Node has none."""

    peer: Peer
    condition: tuple[str, str] | None


def pod_cidrs_of(node: dict) -> tuple[str, ...]:
    """spec.podCIDRs in order (the first is the primary family), else [spec.podCIDR]."""
    spec = node.get("spec") or {}
    cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    return tuple(c for c in cidrs if isinstance(c, str))


def internal_ips(node: dict) -> tuple[str, ...]:
    """status.addresses of type InternalIP (IPv4 and IPv6), in the Node's order."""
    addrs = (node.get("status") or {}).get("addresses") or []
    return tuple(
        a["address"]
        for a in addrs
        if isinstance(a, dict) and a.get("type") == "InternalIP" and isinstance(a.get("address"), str)
    )


def condition_of(node: dict, ctype: str = CONDITION_TYPE) -> tuple[str, str] | None:
    for c in (node.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == ctype:
            return (str(c.get("status")), str(c.get("reason") or ""))
    return None


def node_view(node: dict) -> NodeView:
    name = node["metadata"]["name"]
    return NodeView(Peer(name, internal_ips(node), pod_cidrs_of(node)), condition_of(node))


def condition_patch(message: str, now: float | None = None) -> dict:
    """The nodes/status strategic merge patch body: conditions merge by type, so kubelet's Ready
    and the others are left as they are."""
    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    cond = {
        "type": CONDITION_TYPE,
        "status": "False",
        "reason": CONDITION_REASON,
        "message": message,
        "lastTransitionTime": ts,
        "lastHeartbeatTime": ts,
    }
    return {"status": {"conditions": [cond]}}


def clamp_mtu(link_mtu: int) -> int:
    """Pod MTU for a node whose uplink has `link_mtu`: native routing adds no header, so the same,
    within the node config's limits (576..3506; above 3506 a veth cannot run native XDP). GCP's
    1460 stays 1460, AWS's 9001 becomes 3506."""
    return max(MTU_MIN, min(MTU_MAX, int(link_mtu)))


# ---------------------------------------------------------------------------------------------
# the API client


def api_client(kubeconfig: str | None = None):
    """A CoreV1Api: from `kubeconfig` when given, else in-cluster (the pod's service account,
    KUBERNETES_SERVICE_HOST/PORT). Raises RuntimeError naming what is missing."""
    from kubernetes import client, config

    cfg = client.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg, persist_config=False)
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=cfg)
    else:
        raise RuntimeError("no --kubeconfig given and not in a pod (KUBERNETES_SERVICE_HOST is unset)")
    return client.CoreV1Api(client.ApiClient(cfg))


def _lines(resp):
    """Newline-delimited watch events from a streamed HTTP response."""
    buf = b""
    for chunk in resp.stream(amt=None, decode_content=False):
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                yield line


def _status_code(exc: BaseException) -> int | None:
    return getattr(exc, "status", None)


def _brief(exc: BaseException) -> str:
    """One line for the log: the HTTP status and reason of an API error, else type and text."""
    if _status_code(exc) and getattr(exc, "reason", None):
        return f"HTTP {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


class NodeInformer:
    """List once, then watch; a cache {name: NodeView}. `on_change()` is called (from this
    thread) after a list and after each event that changed a view."""

    def __init__(
        self,
        api,
        on_change: Callable[[], None],
        log: Callable[[str], None],
        watch_timeout: int = WATCH_TIMEOUT,
        backoff: tuple[float, float] = (BACKOFF_MIN, BACKOFF_MAX),
    ):
        self.api = api
        self.on_change = on_change
        self.log = log
        self.watch_timeout = watch_timeout
        self.backoff = backoff
        self.cache: dict[str, NodeView] = {}
        self.lock = threading.Lock()
        self.synced = threading.Event()  # the first list is in the cache
        self.stopping = threading.Event()
        self.lists = 0  # lists done (for status and tests)
        self.resource_version: str | None = None
        self._resp = None

    def snapshot(self) -> dict[str, NodeView]:
        with self.lock:
            return dict(self.cache)

    def _list(self, resource_version: str | None) -> str:
        """LIST nodes in pages of LIST_PAGE (limit + continue: one consistent snapshot; the
        server ignores the limit when it serves resourceVersion "0" from its cache)."""
        items: list[dict] = []
        cont = None
        while True:
            kw = {"resource_version": resource_version} if resource_version is not None else {}
            if cont:
                kw = {"_continue": cont}
            resp = self.api.list_node(
                limit=LIST_PAGE, _preload_content=False, _request_timeout=(10, 120), **kw
            )
            try:
                if resp.status == 410:
                    raise Gone("list: 410 Gone (continue token expired)")
                if resp.status != 200:
                    raise RuntimeError(f"list nodes: HTTP {resp.status}: {resp.data[:200]!r}")
                doc = json.loads(resp.data)
            finally:
                resp.release_conn()
            items += doc.get("items") or []
            cont = (doc.get("metadata") or {}).get("continue")
            if not cont:
                break
        doc["items"] = items
        views = {}
        for item in doc.get("items") or []:
            try:
                v = node_view(item)
            except (KeyError, TypeError):
                continue
            views[v.peer.name] = v
        with self.lock:
            changed = views != self.cache
            self.cache = views
        self.lists += 1
        rv = doc["metadata"]["resourceVersion"]
        self.log(f"nodes: listed {len(views)} at resourceVersion {rv}")
        self.synced.set()
        if changed or self.lists == 1:
            self.on_change()
        return rv

    def _watch(self, rv: str) -> str:
        """One watch from `rv` until the server ends it; returns the last resourceVersion seen.
        Its timeout is spread at random over [watch_timeout, 2 × watch_timeout), so thousands of
        agents started together do not come back to the API server together."""
        timeout = int(self.watch_timeout * (1 + random.random()))
        resp = self.api.list_node(
            watch=True,
            resource_version=rv,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout,
            _preload_content=False,
            _request_timeout=(10, timeout + 30),
        )
        self._resp = resp
        try:
            if resp.status == 410:
                raise Gone(f"watch from {rv}: HTTP 410 Gone")
            if resp.status != 200:
                raise RuntimeError(f"watch nodes: HTTP {resp.status}")
            for line in _lines(resp):
                if self.stopping.is_set():
                    break
                ev = json.loads(line)
                etype, obj = ev.get("type"), ev.get("object") or {}
                if etype == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone(f"watch from {rv}: {obj.get('message', '410 Gone')}")
                    raise RuntimeError(f"watch error {obj.get('code')}: {obj.get('message')}")
                rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                self.resource_version = rv
                if etype == "BOOKMARK":
                    continue
                self._apply(etype, obj)
        finally:
            self._resp = None
            with contextlib.suppress(Exception):
                resp.release_conn()
        return rv

    def _apply(self, etype: str, obj: dict) -> None:
        try:
            view = node_view(obj)
        except (KeyError, TypeError):
            return
        name = view.peer.name
        with self.lock:
            old = self.cache.get(name)
            if etype == "DELETED":
                self.cache.pop(name, None)
                changed = old is not None
            else:
                self.cache[name] = view
                changed = old != view
        if changed:
            if etype == "DELETED" or old is None:
                self.log(f"nodes: {name} {'deleted' if etype == 'DELETED' else 'added'}")
            self.on_change()

    def run(self) -> None:
        rv: str | None = None
        list_rv: str | None = "0"
        delay = self.backoff[0]
        while not self.stopping.is_set():
            try:
                if rv is None:
                    rv = self._list(list_rv)
                    self.resource_version = rv
                started = time.monotonic()
                rv = self._watch(rv)
                if time.monotonic() - started > 1:
                    delay = self.backoff[0]
            except Exception as exc:
                if self.stopping.is_set():
                    break
                if not isinstance(exc, Gone) and _status_code(exc) != 410:
                    self.log(f"nodes: {_brief(exc)}: relisting in {delay:.1f}s")
                    rv, list_rv = None, "0"
                    self.stopping.wait(delay * (0.5 + random.random()))  # jittered: no relist storms
                    delay = min(delay * 2, self.backoff[1])
                    continue
                self.log(f"nodes: {exc if isinstance(exc, Gone) else _brief(exc)}: relisting")
                rv, list_rv = None, None  # a consistent read: the cache may be too old
                self.stopping.wait(min(delay, 1.0))
                delay = min(delay * 2, self.backoff[1])

    def stop(self) -> None:
        self.stopping.set()
        resp = self._resp
        if resp is not None:  # unblock the read: shut the socket down under it
            with contextlib.suppress(Exception):
                sock = getattr(getattr(resp, "connection", None), "sock", None) or getattr(
                    getattr(getattr(resp, "_fp", None), "fp", None), "raw", None
                )
                if isinstance(sock, socket.socket):
                    sock.shutdown(socket.SHUT_RDWR)
                else:
                    resp.shutdown()


# ---------------------------------------------------------------------------------------------
# the node side: link MTU, NIC


def _route_dev(ipr, addr: str) -> int | None:
    try:
        msgs = ipr.route("get", dst=addr)
    except Exception:
        return None
    for m in msgs:
        oif = m.get_attr("RTA_OIF")
        if oif:
            return oif
    return None


def detect_mtu(
    peer_addresses: list[str], nic: str | None = None, netns: str | None = None
) -> tuple[int, str]:
    """(link MTU, where it came from): the device of the route to the first reachable peer
    address, else the NIC, else 1500."""
    from pyroute2 import IPRoute

    from datapath.netns import entered

    with entered(netns):
        ipr = IPRoute()
    try:
        for addr in peer_addresses:
            oif = _route_dev(ipr, addr)
            if oif:
                link = ipr.get_links(oif)[0]
                return link.get_attr("IFLA_MTU"), f"{link.get_attr('IFLA_IFNAME')} (route to {addr})"
        if nic:
            idx = ipr.link_lookup(ifname=nic)
            if idx:
                return ipr.get_links(idx[0])[0].get_attr("IFLA_MTU"), nic
    finally:
        ipr.close()
    return 1500, "default"


def nic_holding(addresses: list[str], netns: str | None = None) -> str | None:
    """The interface that holds one of `addresses` (this Node's InternalIPs): the NIC."""
    from pyroute2 import IPRoute

    from datapath.netns import entered

    wanted = {str(ipaddress.ip_address(a)) for a in addresses}
    with entered(netns):
        ipr = IPRoute()
    try:
        for a in ipr.get_addr():
            local = a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS")
            if local and str(ipaddress.ip_address(local)) in wanted:
                return ipr.get_links(a["index"])[0].get_attr("IFLA_IFNAME")
    finally:
        ipr.close()
    return None


def _socket_answers(path: str | None) -> bool:
    """The agent's socket is there (a unix socket file). Not probed by connecting: the agent
    logs every connection that sends no request, and it binds the socket before it starts this
    mode anyway."""
    if not path:
        return True
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# the mode


class KubernetesMode:
    """Ties the Node informer to the routes, the CNI install and the condition.

    node_name: this Node's metadata.name. root: the datapath's bpffs pin root. config_path: the
    node config YAML (None: the default if present); its `nic` is used, else the interface that
    holds this Node's InternalIP. install: a node.install.CniInstaller (None: nothing installed).
    agent_socket: the agent's socket, which must be bound before the CNI config is written.
    api: a CoreV1Api (tests), else one from `kubeconfig` / in-cluster.
    """

    def __init__(
        self,
        node_name: str,
        root: str,
        *,
        kubeconfig: str | None = None,
        config_path: str | None = None,
        install=None,
        agent_socket: str | None = None,
        log: Callable[[str], None] | None = None,
        netns: str | None = None,
        api=None,
        watch_timeout: int = WATCH_TIMEOUT,
        resync_period: float = RESYNC_PERIOD,
        load_datapath: bool = True,
    ):
        from .routes import RouteController, status_path

        if not node_name:
            raise ValueError(
                "no node name: pass --node-name or set NODE_NAME (the downward API's spec.nodeName)"
            )
        self.node_name = node_name
        self.root = root
        self.config_path = config_path
        self.install = install
        self.agent_socket = agent_socket
        self.log = log or (lambda m: print(f"xdpcni-agent: {m}", flush=True))
        self.netns = netns
        self.api = api if api is not None else api_client(kubeconfig)
        self.resync_period = resync_period
        self.load_datapath = load_datapath
        self.routes = RouteController(
            node_name, netns=netns, status_file=status_path(root), source="kubernetes"
        )
        self.informer = NodeInformer(self.api, self._changed, self.log, watch_timeout=watch_timeout)
        self.dirty = threading.Event()
        self.stopping = threading.Event()
        self.ready = threading.Event()  # datapath, podCIDRs, routes, socket: CNI config written
        self.condition_set = threading.Event()
        self.last_sync = None  # routes.SyncResult of the last route sync
        self._synced: tuple[tuple[Peer, ...], float] = ((), 0.0)  # peers of that sync, and when
        self.pod_mtu: int | None = None
        self._patched: tuple[float, str] | None = None
        self._load_failed_at = 0.0
        self._logged: set[str] = set()
        self._threads: list[threading.Thread] = []

    def _changed(self) -> None:
        self.dirty.set()

    def _once(self, msg: str) -> None:
        if msg not in self._logged:
            self._logged.add(msg)
            self.log(msg)

    # -- lifecycle --

    def start(self) -> None:
        """Threads only: the agent's socket serves meanwhile, whatever the API server does."""
        for name, target in (("k8s-informer", self._watch), ("k8s-reconcile", self._reconcile_loop)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop watching. Routes, the datapath and the installed CNI stay: pods keep working."""
        self.stopping.set()
        self.informer.stop()
        self.dirty.set()
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()

    def _watch(self) -> None:
        self._check_own_node()
        self.informer.run()

    def _check_own_node(self) -> None:
        """GET nodes/<self>: a wrong name or missing RBAC is said now, not found out later."""
        try:
            resp = self.api.read_node(self.node_name, _preload_content=False, _request_timeout=(10, 30))
            node = json.loads(resp.data)
            resp.release_conn()
            self.log(
                f"kubernetes: node {self.node_name}: InternalIP {', '.join(internal_ips(node)) or 'none'}, "
                f"podCIDRs {', '.join(pod_cidrs_of(node)) or 'none yet'}"
            )
        except Exception as exc:
            code = _status_code(exc)
            hint = {
                404: " (is --node-name / NODE_NAME this node's name?)",
                401: " (credentials rejected)",
                403: " (the ClusterRole must allow get/list/watch nodes, patch nodes/status)",
            }.get(code, "")
            self.log(f"kubernetes: cannot read node {self.node_name}: {_brief(exc)}{hint}; watching anyway")

    # -- reconcile --

    def _reconcile_loop(self) -> None:
        while not self.stopping.is_set():
            self.dirty.wait(self.resync_period)
            if self.stopping.is_set():
                return
            self.dirty.clear()
            if not self.informer.synced.is_set():
                continue
            try:
                self.reconcile()
            except Exception as exc:  # keep going: retried in 5 s (said once per distinct error)
                self._once(f"kubernetes: reconcile failed (retrying): {_brief(exc)}")
                self.stopping.wait(5.0)
                self.dirty.set()

    def reconcile(self) -> None:
        """One pass: routes from the cache, then (when everything is ready) the CNI install and
        the condition. Cheap when nothing changed: the route sync is a diff."""
        views = self.informer.snapshot()
        own = views.get(self.node_name)
        peers = tuple(sorted((v.peer for v in views.values()), key=lambda p: p.name))
        now = time.monotonic()
        if (
            self.last_sync is not None
            and peers == self._synced[0]
            and now - self._synced[1] < self.resync_period
        ):
            res = self.last_sync  # only a condition changed: the routes need no sync
        else:
            res = self.routes.sync(peers)
            self._synced = (peers, now)
        if res is not self.last_sync and (res.added or res.changed or res.removed or self.last_sync is None):
            self.log(f"kubernetes: {res.summary()} ({len(views) - (own is not None)} other node(s))")
        for p in res.problems:
            self._once(f"kubernetes: route problem: {p}")
        self.last_sync = res
        if own is None:
            self._once(f"kubernetes: node {self.node_name} is not in the cluster's Node list: waiting")
            return
        # The datapath first: /healthz (the DaemonSet's probes) follows it, and a cluster whose
        # node IPAM is slow to set podCIDRs must not see the agent killed meanwhile.
        if not self._datapath_ready(own):
            return
        if not own.peer.pod_cidrs:
            self._once(f"kubernetes: node {self.node_name} has no spec.podCIDRs yet: CNI config not written")
            return
        if not _socket_answers(self.agent_socket):
            self._once(f"kubernetes: agent socket {self.agent_socket} not there yet: CNI config not written")
            self.stopping.wait(0.2)
            self.dirty.set()
            return
        peer_addrs = [a for v in views.values() if v.peer.name != self.node_name for a in v.peer.addresses]
        nic = self._nic(own)
        link_mtu, where = detect_mtu(peer_addrs, nic, self.netns)
        mtu = clamp_mtu(link_mtu)
        if mtu != self.pod_mtu:
            clamp = "" if mtu == link_mtu else f" (link {link_mtu}, clamped to {MTU_MIN}..{MTU_MAX})"
            self.log(f"kubernetes: pod MTU {mtu} from {where}{clamp}")
            self.pod_mtu = mtu
        if self.install is not None:
            self.install.install(list(own.peer.pod_cidrs), mtu, nic=nic)
        if not self.ready.is_set():
            self.log(f"kubernetes: ready: podCIDRs {', '.join(own.peer.pod_cidrs)}, {res.summary()}")
            self.ready.set()
        self._set_condition(own, len(res.routes))

    def _nic(self, own: NodeView) -> str | None:
        """The node config's `nic`, unless it is `auto` or there is no node config: then the
        interface holding this Node's InternalIP (NIC names differ between nodes; one ConfigMap
        serves them all)."""
        from datapath.config import DEFAULT_CONFIG_PATH, ConfigError, NodeConfig

        path = self.config_path or (DEFAULT_CONFIG_PATH if os.path.exists(DEFAULT_CONFIG_PATH) else None)
        nic = None
        if path:
            try:
                nic = NodeConfig.from_yaml(path).nic
            except ConfigError as exc:
                self._once(f"kubernetes: node config: {exc}")
        if nic and nic != "auto":
            return nic
        return nic_holding(list(own.peer.addresses), self.netns)

    def _datapath_ready(self, own: NodeView) -> bool:
        from datapath.pins import PinLayout

        if PinLayout(self.root).is_loaded():
            return True
        if not self.load_datapath:
            self._once(f"kubernetes: datapath not loaded under {self.root}: CNI config not written")
            return False
        if time.monotonic() - self._load_failed_at < 10:
            self.stopping.wait(1.0)
            self.dirty.set()
            return False
        from datapath.config import resolve
        from datapath.loader import load
        from datapath.netns import entered

        nic = self._nic(own)
        try:
            if not nic:
                raise RuntimeError(
                    f"no NIC: the node config names none (or `auto`) and no interface holds "
                    f"{', '.join(own.peer.addresses) or 'an InternalIP (the Node lists none)'}"
                )
            cfg = resolve(self.config_path, nic=nic, bpffs_root=self.root)
            self.log(f"kubernetes: loading the datapath on {cfg.nic} under {self.root}")
            with entered(self.netns):
                load(cfg, log=lambda m: None)
            return True
        except Exception as exc:
            self._load_failed_at = time.monotonic()
            self._once(f"kubernetes: datapath load failed (retrying every 10 s): {exc}")
            self.dirty.set()
            return False

    def _set_condition(self, own: NodeView, n_routes: int) -> None:
        want = ("False", CONDITION_REASON)
        if own.condition == want:
            self.condition_set.set()
            return
        now = time.monotonic()
        if self._patched and now - self._patched[0] < PATCH_RETRY:
            return  # sent; the MODIFIED event is on its way
        msg = f"xdpcni is up on this node: datapath loaded, {n_routes} route(s) to other nodes' pod CIDRs"
        try:
            resp = self.api.patch_node_status(
                self.node_name,
                condition_patch(msg),
                _content_type=STRATEGIC_MERGE,
                _preload_content=False,
                _request_timeout=(10, 30),
            )
            resp.release_conn()
            self._patched = (now, msg)
            self.condition_set.set()
            self.log(f"kubernetes: node {self.node_name}: {CONDITION_TYPE}=False ({CONDITION_REASON})")
        except Exception as exc:
            self._once(f"kubernetes: patching nodes/{self.node_name}/status failed: {_brief(exc)}")
