"""Prometheus metrics of the node datapath, read from the pinned maps at every scrape.

`xdpcnictl metrics --listen ADDR:PORT` serves them (default 127.0.0.1:9465, loopback only: the
counters name pods and addresses). The numbers are exactly `xdpcnictl stats --json` (the same
rows, node.ctl.stats_rows), labelled by pod (node/pods.py), reason, verdict and direction:

  xdpcni_packets_total / xdpcni_bytes_total {pod, reason, verdict, direction}
  xdpcni_endpoints                          pods with an entry in the endpoint table
  xdpcni_map_entries / xdpcni_map_capacity  {map} fill level of every pinned map (hash maps)
  xdpcni_datapath_loaded                    1 when every program and map is pinned
  xdpcni_datapath_info                      {nic, mode, toolchain, netfilter} = 1
  xdpcni_conntrack_gate                     1 while the conntrack gate is on

Pods beyond --max-pods (by endpoint id) are summed into pod="_other", so a scrape stays bounded.
Direction is what the counters row and reason tell: from-wire (NIC ingress, the node row), to-pod
(delivered or meant for the pod), from-pod (its egress), either (a pod-row pass reason both hooks
give: policy, MTU, conntrack, NAT, protocol, padding).
"""

from __future__ import annotations

import signal
import socket
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from . import pods

DEFAULT_LISTEN = "127.0.0.1:9465"
DEFAULT_MAX_PODS = 256
OTHER = "_other"

_TO_POD = {"FWD_NIC_TO_POD", "DROP_REDIRECT", "DROP_XDP_LOST"}
_EITHER = {"PASS_POLICY", "PASS_MTU", "PASS_CONNTRACK", "PASS_NAT", "PASS_PROTO", "PASS_PADDING"}


def direction(ep_id: int, reason: str) -> str:
    if ep_id == 0:
        return "from-wire"
    if reason in _TO_POD:
        return "to-pod"
    if reason in _EITHER:
        return "either"
    return "from-pod"


def verdict(reason: str) -> str:
    return reason.split("_", 1)[0].lower()


class DatapathCollector:
    def __init__(self, root: str, max_pods: int = DEFAULT_MAX_PODS):
        self.root = root
        self.max_pods = max_pods

    def collect(self):
        from datapath.pins import PinLayout

        from .ctl import gate_on, map_fill, stats_rows

        layout = PinLayout(self.root)
        loaded = layout.is_loaded()
        up = GaugeMetricFamily(
            "xdpcni_datapath_loaded", "1 when every program and map of the datapath is pinned"
        )
        up.add_metric([], 1 if loaded else 0)
        yield up
        if not loaded:
            return
        rows, state, eps = stats_rows(self.root)
        labelled = set(sorted(eps)[: self.max_pods])
        pk = CounterMetricFamily(
            "xdpcni_packets",
            "Packets by verdict reason (xdpcnictl stats)",
            labels=["pod", "reason", "verdict", "direction"],
        )
        by = CounterMetricFamily(
            "xdpcni_bytes",
            "Bytes by verdict reason (xdpcnictl stats)",
            labels=["pod", "reason", "verdict", "direction"],
        )
        sums_p: dict[tuple, int] = {}
        sums_b: dict[tuple, int] = {}
        for ep_id, reason, packets, nbytes in rows:
            if ep_id == 0:
                pod = pods.NODE
            elif ep_id in labelled:
                pod = pods.display_name(eps[ep_id])
            elif ep_id in eps:
                pod = OTHER
            else:
                pod = f"ep{ep_id}"  # a counters row without a table entry (stale): keep it visible
            key = (pod, reason.lower(), verdict(reason), direction(ep_id, reason))
            sums_p[key] = sums_p.get(key, 0) + packets
            if nbytes is not None:
                sums_b[key] = sums_b.get(key, 0) + nbytes
        for key, v in sorted(sums_p.items()):
            pk.add_metric(list(key), v)
        for key, v in sorted(sums_b.items()):
            by.add_metric(list(key), v)
        yield pk
        yield by
        n = GaugeMetricFamily("xdpcni_endpoints", "Pods with an entry in the endpoint table")
        n.add_metric([], len(eps))
        yield n
        ent = GaugeMetricFamily("xdpcni_map_entries", "Entries in a pinned map (hash maps)", labels=["map"])
        cap = GaugeMetricFamily("xdpcni_map_capacity", "max_entries of a pinned map", labels=["map"])
        for m in map_fill(self.root):
            cap.add_metric([m["map"]], m["capacity"])
            if m["entries"] is not None:
                ent.add_metric([m["map"]], m["entries"])
        yield ent
        yield cap
        info = GaugeMetricFamily(
            "xdpcni_datapath_info", "The loaded datapath", labels=["nic", "mode", "toolchain", "netfilter"]
        )
        if state is not None:
            info.add_metric([state.nic, state.mode, state.toolchain, state.netfilter], 1)
        yield info
        gate = GaugeMetricFamily("xdpcni_conntrack_gate", "1 while the conntrack gate is on")
        gate.add_metric([], 1 if gate_on(self.root) else 0)
        yield gate
        from .ipam import address_use

        addrs = GaugeMetricFamily(
            "xdpcni_ipam_addresses",
            "Addresses of a built-in IPAM range set (node/ipam.py), by state used|free",
            labels=["network", "range_set", "state"],
        )
        for use in address_use():
            if "error" not in use:
                for st in ("used", "free"):
                    addrs.add_metric([use["network"], str(use["range_set"]), st], use[st])
        yield addrs


def registry(root: str, max_pods: int = DEFAULT_MAX_PODS) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(DatapathCollector(root, max_pods))
    return reg


class VerbMetrics:
    """CNI verbs the node agent served: counts by verb and result code, latency by verb."""

    def __init__(self, reg: CollectorRegistry):
        from prometheus_client import Counter, Histogram

        self.requests = Counter(
            "xdpcni_cni_requests", "CNI verbs served by the node agent", ["verb", "code"], registry=reg
        )
        self.seconds = Histogram(
            "xdpcni_cni_request_duration_seconds",
            "Time the node agent spent on a CNI verb",
            ["verb"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=reg,
        )

    def observe(self, verb: str, code: int, seconds: float) -> None:
        self.requests.labels(verb, str(code)).inc()
        self.seconds.labels(verb).observe(seconds)


def app(reg: CollectorRegistry, healthy=None):
    """WSGI app: /metrics (Prometheus exposition) and /healthz (200 "ok" while healthy() says so,
    else 503 with the reason), for the agent's readiness and liveness probes."""
    metrics_app = make_wsgi_app(reg)

    def wsgi(environ, start_response):
        if environ.get("PATH_INFO") == "/healthz":
            why = healthy() if healthy is not None else None
            status = "200 OK" if why is None else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain")])
            return [b"ok\n" if why is None else f"{why}\n".encode()]
        return metrics_app(environ, start_response)

    return wsgi


def start_server(reg: CollectorRegistry, listen: str, healthy=None, log=print):
    """Serve app() on a daemon thread (the node agent's way); returns the server (shutdown())."""
    import threading

    host, port = parse_listen(listen)
    httpd = make_server(host, port, app(reg, healthy), server_class=_Server, handler_class=_Quiet)
    threading.Thread(target=httpd.serve_forever, name="metrics", daemon=True).start()
    log(f"metrics on http://{listen}/metrics, health on /healthz")
    return httpd


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--listen {listen!r}: use ADDR:PORT (e.g. 127.0.0.1:9465 or [::1]:9465)")
    return host.strip("[]") or "127.0.0.1", int(port)


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args) -> None:  # no access log on stderr per scrape
        pass


class _Server(WSGIServer):
    def __init__(self, addr, handler, bind_and_activate=True):
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        super().__init__(addr, handler, bind_and_activate)


def serve(root: str, listen: str = DEFAULT_LISTEN, max_pods: int = DEFAULT_MAX_PODS, log=print) -> int:
    """Serve /metrics until SIGTERM/SIGINT; scrapes run on this thread (and in its namespace)."""
    host, port = parse_listen(listen)
    httpd = make_server(host, port, app(registry(root, max_pods)), server_class=_Server, handler_class=_Quiet)
    stop = {"now": False}

    def on_signal(*_):
        stop["now"] = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    httpd.timeout = 0.2
    try:
        log(f"xdpcnictl metrics: serving http://{listen}/metrics for {root}")
        while not stop["now"]:
            httpd.handle_request()
    finally:
        httpd.server_close()
        for s, h in old.items():
            signal.signal(s, h)
    return 0
