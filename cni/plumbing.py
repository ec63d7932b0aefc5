"""The pod's network plumbing, all through pyroute2 netlink calls.

Shape (as the reference ptp plugin, with link-local gateways as Calico/Cilium do):
  pod ns:  eth0  <addr>/32, <addr6>/128; gateway 169.254.1.1 / fe80::1 with *permanent* neighbour
           entries pointing at the host veth's MAC, so the pod never ARPs/NDs to leave;
  node ns: host veth (forwarding on), /32 and /128 host routes to the pod and permanent neighbour
           entries for them: the kernel path (fallback, ICMP errors) works without ARP either.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import os
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from datapath import sysctl

GATEWAY_V4 = "169.254.1.1"
GATEWAY_V6 = "fe80::1"
NUD_PERMANENT = 0x80
IFA_F_NODAD = 0x02
RT_SCOPE_LINK = 253


class PlumbingError(RuntimeError):
    pass


@dataclass
class PodLink:
    host_ifname: str
    host_ifindex: int
    host_mac: str
    pod_ifname: str
    pod_ifindex: int
    pod_mac: str


def host_ifname_for(container_id: str, ifname: str, network: str | None = None) -> str:
    """Deterministic, so DEL finds the veth from its key alone (IFNAMSIZ is 16). Named per
    (network, container id, ifname): the same container on two networks gets two veths.
    (network=None: the simulator's hand-made pods, which belong to no network.)"""
    key = f"{container_id}/{ifname}" if network is None else f"{network}\0{container_id}\0{ifname}"
    return "xc" + hashlib.sha256(key.encode(errors="surrogateescape")).hexdigest()[:11]


def owner_mark(network: str, container_id: str, ifname: str, pod: str | None = None) -> str:
    """The ownership mark ADD writes as the host veth's ifalias: DEL and GC delete a link only
    when it carries the mark of the attachment they undo (never the NIC, never another pod's); only
    the first word (the digest) is compared. `pod` ("namespace/name" from the runtime's
    K8S_POD_NAMESPACE / K8S_POD_NAME) follows as ` pod=NS/NAME` so operator tools show pods by
    name (node/pods.py)."""
    digest = hashlib.sha256(f"{network}\0{container_id}\0{ifname}".encode(errors="surrogateescape"))
    readable = f" {network[:64]}/{container_id[:64]}/{ifname.encode('unicode_escape').decode()}"
    named = f" pod={pod}" if pod else ""
    return f"xdpcni:{digest.hexdigest()[:32]}{readable}{named}"[:255]


def link_owner_ok(ipr: IPRoute, idx: int, mark: str | None) -> bool:
    """True when link `idx` carries `mark` (or mark is None: no ownership requirement). A veth
    named like ours without any alias is a crash between creating and marking it: ours too."""
    if mark is None:
        return True
    try:
        link = ipr.get_links(idx)[0]
    except NetlinkError:
        return False
    alias = link.get_attr("IFLA_IFALIAS") or ""
    if alias:
        return alias.split(" ", 1)[0] == mark.split(" ", 1)[0]
    info = link.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    return kind == "veth"


def pod_netns(netns_path: str) -> IPRoute:
    """An IPRoute bound to a pod's namespace that never creates it (pyroute2's default is
    O_CREAT: a missing namespace would silently become a new empty one with a bind mount)."""
    if not os.path.exists(netns_path):
        raise PlumbingError(f"network namespace {netns_path} does not exist")
    return IPRoute(netns=netns_path, flags=0)


def _open_netns(netns_path: str) -> int:
    try:
        return os.open(netns_path, os.O_RDONLY)
    except FileNotFoundError as exc:
        raise PlumbingError(f"network namespace {netns_path} does not exist") from exc


def create_veth(
    ipr: IPRoute,
    netns_path: str,
    host_ifname: str,
    pod_ifname: str,
    mtu: int,
    mark: str | None = None,
    created: list | None = None,
) -> PodLink:
    """Create the pair in the node namespace, mark the host end as ours (ifalias), move the pod
    end into the pod and name it there. `created` gets the host ifindex appended as soon as the
    pair exists (the caller's rollback deletes exactly that link, never a same-named other)."""
    tmp_peer = "xt" + host_ifname[2:]
    nsfd = _open_netns(netns_path)
    try:
        with pod_netns(netns_path) as pod:
            if pod.link_lookup(ifname=pod_ifname):
                raise PlumbingError(f"interface {pod_ifname} already exists in {netns_path}")
        try:
            ipr.link("add", ifname=host_ifname, kind="veth", mtu=mtu, peer={"ifname": tmp_peer, "mtu": mtu})
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                raise PlumbingError(f"host interface {host_ifname} already exists") from exc
            raise
        host_idx = ipr.link_lookup(ifname=host_ifname)[0]
        if created is not None:
            created.append(host_idx)
        if mark:
            ipr.link("set", index=host_idx, ifalias=mark)
        peer_idx = ipr.link_lookup(ifname=tmp_peer)[0]
        ipr.link("set", index=peer_idx, net_ns_fd=nsfd)
    finally:
        os.close(nsfd)
    with pod_netns(netns_path) as pod:
        idx = pod.link_lookup(ifname=tmp_peer)[0]
        pod.link("set", index=idx, ifname=pod_ifname)
        pod_mac = pod.get_links(idx)[0].get_attr("IFLA_ADDRESS")
    host_idx = ipr.link_lookup(ifname=host_ifname)[0]
    host_mac = ipr.get_links(host_idx)[0].get_attr("IFLA_ADDRESS")
    return PodLink(host_ifname, host_idx, host_mac, pod_ifname, idx, pod_mac)


def configure_pod_side(netns_path: str, link: PodLink, ips: list[str]) -> None:
    """Addresses, link-local gateways with permanent neighbours, default routes."""
    with pod_netns(netns_path) as pod:
        lo = pod.link_lookup(ifname="lo")[0]
        pod.link("set", index=lo, state="up")
        idx = link.pod_ifindex
        v4 = [ipaddress.ip_address(a) for a in ips if ipaddress.ip_address(a).version == 4]
        v6 = [ipaddress.ip_address(a) for a in ips if ipaddress.ip_address(a).version == 6]
        for a in v4:
            pod.addr("add", index=idx, address=str(a), prefixlen=32)
        for a in v6:
            pod.addr("add", index=idx, address=str(a), prefixlen=128, flags=IFA_F_NODAD)
        pod.link("set", index=idx, state="up")
        if v4:
            pod.neigh("replace", dst=GATEWAY_V4, lladdr=link.host_mac, ifindex=idx, state=NUD_PERMANENT)
            pod.route("replace", dst=f"{GATEWAY_V4}/32", oif=idx, scope=RT_SCOPE_LINK)
            pod.route("replace", dst="0.0.0.0/0", gateway=GATEWAY_V4, oif=idx)
        if v6:
            pod.neigh("replace", dst=GATEWAY_V6, lladdr=link.host_mac, ifindex=idx, state=NUD_PERMANENT)
            pod.route("replace", dst="::/0", gateway=GATEWAY_V6, oif=idx, family=10)


def configure_host_side(ipr: IPRoute, link: PodLink, ips: list[str]) -> None:
    """Forwarding on, host routes and permanent neighbours to the pod's addresses."""
    sysctl.disable_ipv6_ra(link.host_ifname)
    sysctl.enable_forwarding(link.host_ifname)
    ipr.link("set", index=link.host_ifindex, state="up")
    for a in ips:
        ip = ipaddress.ip_address(a)
        plen = 32 if ip.version == 4 else 128
        ipr.route(
            "replace",
            dst=f"{ip}/{plen}",
            oif=link.host_ifindex,
            scope=RT_SCOPE_LINK,
            family=2 if ip.version == 4 else 10,
        )
        ipr.neigh("replace", dst=str(ip), lladdr=link.pod_mac, ifindex=link.host_ifindex, state=NUD_PERMANENT)


def find_host_link(ipr: IPRoute, host_ifname: str, mark: str | None = None) -> int | None:
    """ifindex of our host veth, or None when it is missing or does not carry `mark`."""
    found = ipr.link_lookup(ifname=host_ifname)
    if not found or not link_owner_ok(ipr, found[0], mark):
        return None
    return found[0]


def delete_host_link(ipr: IPRoute, host_ifname: str, mark: str | None = None) -> bool:
    """Deleting the host end removes the pair, its routes and neighbours; gone already is fine.
    With `mark`, a link of that name that is not ours is left alone."""
    idx = find_host_link(ipr, host_ifname, mark)
    if idx is None:
        return False
    return delete_link_index(ipr, idx)


def delete_link_index(ipr: IPRoute, idx: int) -> bool:
    try:
        ipr.link("del", index=idx)
    except NetlinkError as exc:
        if exc.code not in (errno.ENODEV, errno.ENOENT):
            raise
        return False
    return True
