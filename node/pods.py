"""What operators call an endpoint: the one place that turns an endpoint-table entry into a name.

Every tool that shows a pod (`xdpcnictl trace`, `monitor`, `status`, the Prometheus metrics)
goes through display_name()/identity() and find_endpoint(), so pod names arrive everywhere at once.

Kubernetes runtimes pass K8S_POD_NAMESPACE / K8S_POD_NAME in CNI_ARGS; ADD keeps them in the
attachment record and writes them into the host veth's ownership mark (ifalias, ` pod=NS/NAME`,
cni/plumbing.owner_mark), where every tool here reads them from the live link. A pod without them
(another runtime, the simulator's hand-made pods) is shown as its host veth's name.
"""

from __future__ import annotations

import ipaddress
import socket

from datapath.endpoints import Endpoint

NODE = "node"  # the name of counters row 0: traffic that belongs to no pod


def veth_name(ifindex: int) -> str | None:
    """The host-side veth's name in the current (node) network namespace, None when it is gone."""
    try:
        return socket.if_indextoname(ifindex)
    except OSError:
        return None


def pod_name(ifindex: int) -> str | None:
    """ "namespace/name" from the host veth's ownership mark, None when it carries none."""
    from pyroute2 import IPRoute

    try:
        with IPRoute() as ipr:
            alias = ipr.get_links(ifindex)[0].get_attr("IFLA_IFALIAS") or ""
    except Exception:
        return None
    if " pod=" not in alias:
        return None
    return alias.split(" pod=", 1)[1].split()[0] or None


def display_name(ep: Endpoint) -> str:
    """The pod's name as tools show it: NAMESPACE/NAME when the runtime gave it, else the host
    veth's name (see the module docstring)."""
    return pod_name(ep.ifindex) or veth_name(ep.ifindex) or f"if{ep.ifindex}"


def identity(ep: Endpoint | None) -> dict:
    """{pod, veth, ips, ep_id} of an endpoint; the node's row when ep is None."""
    if ep is None:
        return {"pod": NODE, "veth": None, "ips": [], "ep_id": 0}
    return {"pod": display_name(ep), "veth": veth_name(ep.ifindex), "ips": list(ep.ips), "ep_id": ep.ep_id}


def describe(ep: Endpoint | None) -> str:
    """One line: `name (veth X, ip ip)`."""
    if ep is None:
        return NODE
    ident = identity(ep)
    extra = [f"veth {ident['veth']}"] if ident["veth"] and ident["veth"] != ident["pod"] else []
    return f"{ident['pod']} ({', '.join(extra + ep.ips)})" if extra or ep.ips else ident["pod"]


class UnknownPod(LookupError):
    pass


def find_endpoint(ident: str, endpoints: list[Endpoint]) -> Endpoint:
    """The endpoint an operator means by `ident`: its display name (NAMESPACE/NAME when the
    runtime gave it), its host veth name, one of its IPs, or its endpoint id. Raises UnknownPod."""
    ident = ident.strip()
    try:
        ip = ipaddress.ip_address(ident)
    except ValueError:
        ip = None
    for ep in endpoints:
        if ident in (display_name(ep), veth_name(ep.ifindex)):
            return ep
        if ip is not None and any(ipaddress.ip_address(a) == ip for a in ep.ips):
            return ep
        if ident.isdigit() and int(ident) == ep.ep_id:
            return ep
    known = ", ".join(display_name(e) for e in endpoints) or "none"
    raise UnknownPod(f"no endpoint {ident!r} on this node (pods by name, veth, IP or endpoint id: {known})")
