"""The pod's network plumbing: netlink through datapath/rtnl.py (pyroute2's message classes over
our own socket: no forked netns helper, one batch per namespace on ADD/DEL).

Shape (as the reference ptp plugin, with link-local gateways as Calico/Cilium do):
  pod ns:  eth0  <addr>/32, <addr6>/128; gateway 169.254.1.1 / fe80::1 with *permanent* neighbour
           entries pointing at the host veth's MAC, so the pod never ARPs/NDs to leave;
  node ns: host veth (forwarding on), /32 and /128 host routes to the pod and permanent neighbour
           entries for them: the kernel path (fallback, ICMP errors) works without ARP either.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from datapath import rtnl, sysctl
from datapath.abi import parse_ip
from datapath.rtnl import NetlinkError, Rtnl

if TYPE_CHECKING:
    from pyroute2 import IPRoute

GATEWAY_V4 = "169.254.1.1"
GATEWAY_V6 = "fe80::1"
NUD_PERMANENT = 0x80
IFA_F_NODAD = 0x02
RT_SCOPE_LINK = 253
LOOPBACK_IFINDEX = 1  # lo in every network namespace (include/net/flow.h)


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


@functools.lru_cache(maxsize=4096)
def host_ifname_for(container_id: str, ifname: str, network: str | None = None) -> str:
    """Deterministic, so DEL finds the veth from its key alone (IFNAMSIZ is 16). Named per
    (network, container id, ifname): the same container on two networks gets two veths.
    (network=None: the simulator's hand-made pods, which belong to no network.) Cached: a verb
    asks several times (lock, record and veth names), each a SHA-256 through OpenSSL."""
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


def link_owner_ok(nl: Rtnl, idx: int, mark: str | None) -> bool:
    """True when link `idx` carries `mark` (or mark is None: no ownership requirement). A veth
    named like ours without any alias is a crash between creating and marking it: ours too."""
    if mark is None:
        return True
    return _carries_mark(nl.get_link(index=idx), mark)


def _carries_mark(link: rtnl.Link | None, mark: str) -> bool:
    if link is None:
        return False
    if link.alias:
        return link.alias.split(" ", 1)[0] == mark.split(" ", 1)[0]
    return link.kind == "veth"


def pod_netns(netns_path: str) -> IPRoute:
    """An IPRoute bound to a pod's namespace that never creates it (pyroute2's default is
    O_CREAT: a missing namespace would silently become a new empty one with a bind mount).
    For CHECK and tools; ADD and DEL use datapath/rtnl.py (no helper process)."""
    from pyroute2 import IPRoute

    if not os.path.exists(netns_path):
        raise PlumbingError(f"network namespace {netns_path} does not exist")
    return IPRoute(netns=netns_path, flags=0)


def open_netns(netns_path: str) -> int:
    """A read-only fd of a pod's namespace (never created); the caller closes it."""
    try:
        return os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise PlumbingError(f"network namespace {netns_path} does not exist") from exc


def create_pod_link(
    nl: Rtnl,
    pod_nl: Rtnl,
    netns_fd: int,
    netns_path: str,
    host_ifname: str,
    pod_ifname: str,
    mtu: int,
    mark: str | None = None,
    created: list | None = None,
) -> PodLink:
    """Create the pair with its pod end directly in the pod's namespace (IFLA_NET_NS_FD on the
    peer: no create-then-move, no temporary name) and mark the host end as ours (ifalias, queued
    on `nl`: the next flush sends it; an unmarked veth with our name is ours,
    see link_owner_ok). `nl` is a socket in the node's namespace, `pod_nl` one in the pod's.
    `created` gets the host ifindex appended as soon as the pair exists (the caller's rollback
    deletes exactly that link, never a same-named other). The kernel's echo of the creation
    gives both ifindexes; lookups only where it does not echo (before Linux 6.1) or on EEXIST
    (to say which end's name is taken)."""
    host_mac, pod_mac = rtnl.random_mac(), rtnl.random_mac()
    try:
        host = nl.create_veth(host_ifname, host_mac, pod_ifname, pod_mac, netns_fd, mtu, alias=mark)
    except NetlinkError as exc:
        if exc.code == errno.EEXIST:
            if pod_nl.get_link(pod_ifname) is not None:
                raise PlumbingError(f"interface {pod_ifname} already exists in {netns_path}") from exc
            raise PlumbingError(f"host interface {host_ifname} already exists") from exc
        raise
    if host is None or not host.link:
        host = nl.get_link(host_ifname)
        if host is None:
            raise PlumbingError(f"host interface {host_ifname} vanished right after its creation")
    if created is not None:
        created.append(host.index)
    pod_index = host.link
    if not pod_index:
        pod = pod_nl.get_link(pod_ifname)
        if pod is None:
            raise PlumbingError(f"interface {pod_ifname} did not appear in {netns_path}")
        pod_index = pod.index
    return PodLink(host_ifname, host.index, host.mac or host_mac, pod_ifname, pod_index, pod_mac)


def configure_pod(pod_nl: Rtnl, link: PodLink, ips: list[str]) -> None:
    """Pod side in one batch: the interface up, addresses, link-local gateways with permanent
    neighbours, default routes. lo is the runtime's (containerd's loopback plugin, CRI-O and
    podman bring it up themselves), as for the reference plugins: ~0.1 ms of every ADD less."""
    idx = link.pod_ifindex
    v4 = [a for a in ips if parse_ip(a).version == 4]
    v6 = [a for a in ips if parse_ip(a).version == 6]
    for a in v4:
        pod_nl.add_addr(idx, str(parse_ip(a)), 32)
    for a in v6:
        pod_nl.add_addr(idx, str(parse_ip(a)), 128, flags=IFA_F_NODAD)
    pod_nl.set_up(idx)
    if v4:
        pod_nl.replace_neigh(idx, GATEWAY_V4, link.host_mac)
        pod_nl.replace_route(GATEWAY_V4, 32, idx, scope=RT_SCOPE_LINK, repeats=True)
        pod_nl.replace_route("0.0.0.0", 0, idx, gateway=GATEWAY_V4, repeats=True)
    if v6:
        pod_nl.replace_neigh(idx, GATEWAY_V6, link.host_mac)
        pod_nl.replace_route("::", 0, idx, gateway=GATEWAY_V6, repeats=True)
    pod_nl.flush()


def configure_host(nl: Rtnl, link: PodLink, ips: list[str], flush: bool = True) -> None:
    """Forwarding on (per device, for the families of the pod's addresses: a family the pod has
    no address of is not forwarded to or from it), router advertisements off, host routes and
    permanent neighbours to the pod's addresses (one batch; the host end came up at creation).
    flush=False leaves the batch queued on `nl` for the caller's next flush (ADD sends it with the
    TC attachment: one round trip)."""
    addrs = [parse_ip(a) for a in ips]
    sysctl.disable_ipv6_ra(link.host_ifname)  # always: a pod must never configure the node by RA
    sysctl.enable_forwarding(
        link.host_ifname, ipv4=any(ip.version == 4 for ip in addrs), ipv6=any(ip.version == 6 for ip in addrs)
    )
    for ip in addrs:
        nl.replace_route(str(ip), 32 if ip.version == 4 else 128, link.host_ifindex, scope=RT_SCOPE_LINK)
        nl.replace_neigh(link.host_ifindex, str(ip), link.pod_mac)
    if flush:
        nl.flush()


def prime_templates() -> None:
    """Make the templates of the per-pod requests of ADD and DEL (datapath/rtnl.py
    use_templates) before the first pod asks for them: the node agent's first ADD otherwise
    pays their encodes (measured: 16 ms against 3.6 ms for the next ones). Runs this module's
    own plumbing over DrySocket stand-ins, which reach no kernel, with values of a pod's encoded
    lengths (our host veth name, eth0, MACs, an IPv4 and an IPv6 address, ifindexes, an fd);
    a request whose values differ in length (another ifname, an ifalias) makes its own at first
    use. The sysctls configure_host writes name a device that does not exist: nothing is
    written."""
    from datapath import pod as pod_dp

    nl, pod_nl = Rtnl(sock=rtnl.DrySocket()), Rtnl(sock=rtnl.DrySocket())
    host = "xc" + "0" * 11  # host_ifname_for's form
    nl.create_veth(host, rtnl.random_mac(), "eth0", rtnl.random_mac(), 3, 1500)
    link = PodLink(host, 4, rtnl.random_mac(), "eth0", 2, rtnl.random_mac())
    ips = ["192.0.2.1", "2001:db8::1"]
    configure_pod(pod_nl, link, ips)
    configure_host(nl, link, ips, flush=False)
    pod_dp.queue_host_side(nl, 3, link.host_ifindex)
    nl.flush()
    nl.get_link(host)  # DEL's lookups and deletion
    nl.get_link(index=link.host_ifindex)
    nl.delete_link(link.host_ifindex)


def create_veth(
    ipr,
    netns_path: str,
    host_ifname: str,
    pod_ifname: str,
    mtu: int,
    mark: str | None = None,
    created: list | None = None,
) -> PodLink:
    """create_pod_link() for callers in the node's namespace without sockets of their own (the
    simulator's hand-made pods); `ipr` is unused (kept for their signature)."""
    fd = open_netns(netns_path)
    try:
        with Rtnl() as nl, Rtnl(fd) as pod_nl:
            link = create_pod_link(nl, pod_nl, fd, netns_path, host_ifname, pod_ifname, mtu, mark, created)
            nl.flush()  # the ownership mark
            return link
    finally:
        os.close(fd)


def configure_pod_side(netns_path: str, link: PodLink, ips: list[str]) -> None:
    fd = open_netns(netns_path)
    try:
        with Rtnl(fd) as pod_nl:
            configure_pod(pod_nl, link, ips)
    finally:
        os.close(fd)


def configure_host_side(ipr, link: PodLink, ips: list[str]) -> None:
    with Rtnl() as nl:
        configure_host(nl, link, ips)


def find_host_link(nl: Rtnl, host_ifname: str, mark: str | None = None) -> int | None:
    """ifindex of our host veth, or None when it is missing or does not carry `mark`."""
    link = nl.get_link(host_ifname)
    if link is None or (mark is not None and not _carries_mark(link, mark)):
        return None
    return link.index


def delete_host_link(nl: Rtnl, host_ifname: str, mark: str | None = None) -> bool:
    """Deleting the host end removes the pair, its routes and neighbours; gone already is fine.
    With `mark`, a link of that name that is not ours is left alone."""
    idx = find_host_link(nl, host_ifname, mark)
    if idx is None:
        return False
    return delete_link_index(nl, idx)


def delete_link_index(nl: Rtnl, idx: int) -> bool:
    return nl.delete_link(idx)
