"""Routes to the other nodes' pod CIDRs (native routing, flannel host-gw / Cilium
`autoDirectNodeRoutes` style): for every other node, `ip route replace <podCIDR> via <its
address> dev <nic>`, IPv4 and IPv6, kept in step with a desired state.

Sources feed `RouteController.sync()` the whole cluster each time: the peers file
(`load_peers_file`, `xdpcnictl agent --peers FILE --node-name NAME`, the netns simulator) or the
Kubernetes Node watch (node/k8s.py). The controller is stateless between calls: the kernel's
routing table is the record, so a restarted agent resumes where the last one stopped.

Rules:
- Ownership by protocol. Every route this module creates carries the rtnetlink protocol
  RTPROT_XDPCNI (rtm_protocol, `proto 201` in `ip route`; not assigned in iproute2's rt_protos,
  which names the routing daemons' numbers). Only routes of the main table with
  that protocol are ever changed or deleted; a route of any other protocol, to any prefix, is left
  alone, and when one already holds a peer's exact pod CIDR the peer's route is skipped and the
  conflict reported instead of overwritten.
- No flapping. `sync()` diffs the desired routes against the kernel's routes of our protocol
  (RTM_GETROUTE dump): an unchanged route is neither deleted nor re-added, a changed one is
  replaced in place (one RTM_NEWROUTE with NLM_F_REPLACE, no RTM_DELROUTE), a new one is added
  with NLM_F_EXCL, a route no peer wants any more is deleted (RTM_DELROUTE). Restarting the agent
  therefore deletes nothing.
- Direct routes need L2 adjacency (there is no overlay and no BGP): a peer's pod CIDRs are routed
  via the first of its addresses of the same family that lies in a directly connected subnet of
  this node (an address of ours with its prefix, on `ifname` when given). A peer with no such
  address is reported and skipped, never routed through something that cannot reach it.
- Validation, each failure a problem string naming the peer, its route skipped: unparsable or
  host-bits-set CIDRs and addresses, a pod CIDR without an address of its family, a pod CIDR
  overlapping this node's own pod CIDRs, another peer's (the first by name keeps it), or a
  directly connected subnet (it would hijack the node's own network), a duplicate peer name, a
  peer address that is this node's own, link-local, or another peer's (the first by name keeps it). The entry named `self_name` is this node:
  never routed, its pod CIDRs are the "own" ones.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import ipaddress
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import yaml
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from datapath.netns import entered
from datapath.pins import RUN_DIR, PinLayout

RTPROT_XDPCNI = 201  # 0xc9: rtm_protocol of every route this module creates (`proto 201`)
RT_TABLE_MAIN = 254
RTN_UNICAST = 1
POLL_PERIOD = 1.0  # seconds between mtime checks of the peers file
RESYNC_PERIOD = 60.0  # seconds between syncs of an unchanged peers file (repairs removed routes)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Peer:
    """Another node as a source sees it.

    name: the node's name (Kubernetes `metadata.name`); the one equal to the controller's
      `self_name` is this node.
    addresses: its InternalIP(s), IPv4 and/or IPv6, as strings, in order of preference.
    pod_cidrs: its pod CIDRs (`spec.podCIDRs`), e.g. ("10.244.1.0/24", "fd00:10:244:1::/64").
    """

    name: str
    addresses: tuple[str, ...]
    pod_cidrs: tuple[str, ...]


@dataclass(frozen=True)
class Route:
    """One route of ours: `dst via gateway dev ifname` (main table, proto RTPROT_XDPCNI).
    `peer` is the node it leads to (empty for a route read back from the kernel with no peer
    wanting it); it takes no part in comparisons."""

    dst: str  # network in canonical form, "198.19.1.0/24"
    gateway: str
    ifindex: int
    ifname: str = field(default="", compare=False)
    peer: str = field(default="", compare=False)
    metric: int | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return f"{self.dst} via {self.gateway} dev {self.ifname or self.ifindex}" + (
            f" ({self.peer})" if self.peer else ""
        )


@dataclass(frozen=True)
class Connected:
    """A directly connected subnet of this node: an address of ours with its prefix."""

    ifindex: int
    ifname: str
    network: Network
    address: str


@dataclass
class SyncResult:
    """What one sync did. added: new routes; changed: our routes replaced in place (new gateway
    or device); removed: our routes no peer wants; kept: untouched; problems: one line per peer
    or CIDR skipped, and per kernel error."""

    added: list[Route] = field(default_factory=list)
    changed: list[Route] = field(default_factory=list)
    removed: list[Route] = field(default_factory=list)
    kept: list[Route] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def routes(self) -> list[Route]:
        """Our routes in the kernel after the sync."""
        return sorted(self.kept + self.changed + self.added, key=lambda r: r.dst)

    def summary(self) -> str:
        s = (
            f"routes: {len(self.added)} added, {len(self.changed)} changed, {len(self.removed)} removed, "
            f"{len(self.kept)} kept"
        )
        return s + (f"; {len(self.problems)} problem(s)" if self.problems else "")

    def as_dict(self) -> dict:
        def rows(rs):
            return [{k: v for k, v in asdict(r).items() if k != "metric"} for r in rs]

        return {
            "added": rows(self.added),
            "changed": rows(self.changed),
            "removed": rows(self.removed),
            "kept": rows(self.kept),
            "problems": list(self.problems),
        }


class PeersFileError(ValueError):
    """The peers file is not what conf/peers.example.yaml describes; str() names file and entry."""


# ---------------------------------------------------------------------------------------------
# peers.yaml


PEER_KEYS = {"name", "addresses", "podCIDRs"}


def parse_peers(doc, source: str = "peers file") -> list[Peer]:
    """Peers from a loaded peers document: `{"peers": [{"name", "addresses", "podCIDRs"}]}`.
    Structure is checked here (PeersFileError); address and CIDR syntax are checked by sync(),
    which skips only the bad entry. An empty document is an error, not "no peers" (a file caught
    while being written must not remove every route); `peers: []` is no peers."""
    if doc is None:
        raise PeersFileError(f"{source}: empty (write `peers: []` for no peers)")
    if not isinstance(doc, dict) or "peers" not in doc:
        raise PeersFileError(f"{source}: expected a mapping with a `peers` list")
    extra = set(doc) - {"peers"}
    if extra:
        raise PeersFileError(f"{source}: unknown top-level key(s) {', '.join(sorted(map(str, extra)))}")
    items = doc["peers"]
    if items is None:
        items = []
    if not isinstance(items, list):
        raise PeersFileError(f"{source}: `peers` must be a list")
    out = []
    for i, item in enumerate(items):
        where = f"{source}: peers[{i}]"
        if not isinstance(item, dict):
            raise PeersFileError(f"{where}: expected a mapping with name, addresses, podCIDRs")
        unknown = set(item) - PEER_KEYS
        if unknown:
            raise PeersFileError(
                f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))} (expected name, addresses, podCIDRs)"
            )
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise PeersFileError(f"{where}: `name` must be a non-empty string")
        where = f"{source}: peer {name!r}"
        lists = {}
        for key in ("addresses", "podCIDRs"):
            val = item.get(key, [])
            if val is None:
                val = []
            if isinstance(val, str):
                val = [val]
            if not isinstance(val, list) or not all(isinstance(v, str) for v in val):
                raise PeersFileError(f"{where}: `{key}` must be a list of strings")
            lists[key] = tuple(v.strip() for v in val)
        out.append(Peer(name.strip(), lists["addresses"], lists["podCIDRs"]))
    return out


def load_peers_file(path: str) -> list[Peer]:
    """Peers from a peers.yaml file (format: conf/peers.example.yaml). Raises PeersFileError for
    a malformed file, OSError when it cannot be read."""
    with open(path) as fh:
        text = fh.read()
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PeersFileError(f"{path}: not YAML: {exc}") from None
    return parse_peers(doc, path)


def dump_peers(peers: Iterable[Peer]) -> str:
    """The peers file text for `peers` (what the simulator writes)."""
    return yaml.safe_dump(
        {
            "peers": [
                {"name": p.name, "addresses": list(p.addresses), "podCIDRs": list(p.pod_cidrs)} for p in peers
            ]
        },
        sort_keys=False,
    )


# ---------------------------------------------------------------------------------------------
# the plan: desired routes from peers (pure, unit-tested)


def _net(text: str) -> Network:
    return ipaddress.ip_network(text, strict=True)


class _Claims:
    """The pod CIDRs plan() has routed so far, and whose: pairwise disjoint, in the order claimed.
    `first_overlapping(net)` is the earliest claimed that overlaps `net` (what a scan of the list
    in order would find) in O(log n) instead of O(n), so a plan is near-linear in the peers.

    Two CIDRs overlap iff one contains the other. The claimed ones inside `net` are those whose
    start lies in `net`: a range of the sorted start addresses of every candidate CIDR (fixed up
    front), over which a min segment tree holds the claim order. A claimed one holding `net` is
    found by a lookup of `net`'s address masked to each prefix length claimed so far."""

    def __init__(self, candidates: Iterable[Network]):
        self.keys = sorted({(n.version, int(n.network_address)) for n in candidates})
        self.pos = {k: i for i, k in enumerate(self.keys)}
        self.size = 1
        while self.size < len(self.keys):
            self.size *= 2
        self.none = 1 << 62  # no claim: larger than any claim order
        self.tree = [self.none] * (2 * self.size)  # min claim order of the starts below each node
        self.by_prefix: dict[tuple[int, int, int], int] = {}  # (version, prefixlen, start) -> order
        self.prefixlens: dict[int, set[int]] = {4: set(), 6: set()}
        self.claimed: list[tuple[Network, str]] = []

    def first_overlapping(self, net: Network) -> tuple[Network, str] | None:
        v, start, plen = net.version, int(net.network_address), net.prefixlen
        best = self.none
        bits = net.max_prefixlen
        for length in self.prefixlens[v]:
            if length < plen:  # a claimed CIDR holding net
                masked = start >> (bits - length) << (bits - length)
                best = min(best, self.by_prefix.get((v, length, masked), self.none))
        lo = bisect.bisect_left(self.keys, (v, start)) + self.size
        hi = bisect.bisect_right(self.keys, (v, int(net.broadcast_address))) + self.size
        tree = self.tree
        while lo < hi:  # claimed CIDRs starting inside net
            if lo & 1:
                best = min(best, tree[lo])
                lo += 1
            if hi & 1:
                hi -= 1
                best = min(best, tree[hi])
            lo >>= 1
            hi >>= 1
        return None if best == self.none else self.claimed[best]

    def claim(self, net: Network, who: str) -> None:
        order = len(self.claimed)
        self.claimed.append((net, who))
        v, start = net.version, int(net.network_address)
        self.by_prefix[(v, net.prefixlen, start)] = order
        self.prefixlens[v].add(net.prefixlen)
        i = self.pos[(v, start)] + self.size
        while i and self.tree[i] > order:  # orders only grow: stop at the first holding an earlier one
            self.tree[i] = order
            i >>= 1


def plan(
    self_name: str,
    peers: Iterable[Peer],
    connected: Iterable[Connected],
    own_cidrs: Iterable[str] = (),
) -> tuple[dict[str, Route], list[str]]:
    """Desired routes keyed by destination, and the problems found. Pure: `connected` is this
    node's directly connected subnets (read by the controller from its addresses). Near-linear in
    the peers: names and next hops are looked up in dicts, overlaps among peers in _Claims."""
    problems: list[str] = []
    connected = list(connected)
    own_addrs = {ipaddress.ip_address(c.address) for c in connected}
    peers = list(peers)
    own: list[Network] = []
    for text in list(own_cidrs) + [c for p in peers if p.name == self_name for c in p.pod_cidrs]:
        try:
            own.append(_net(text))
        except ValueError as exc:
            problems.append(f"this node ({self_name}): pod CIDR {text!r} is not valid: {exc}")
    parsed: dict[str, Network | ValueError] = {}  # every peer's pod CIDR, parsed once
    for peer in peers:
        if peer.name != self_name:
            for text in peer.pod_cidrs:
                if text not in parsed:
                    try:
                        parsed[text] = _net(text)
                    except ValueError as exc:
                        parsed[text] = exc
    desired: dict[str, Route] = {}
    claims = _Claims(n for n in parsed.values() if not isinstance(n, ValueError))  # routed so far, and whose
    seen: set[str] = set()
    used_by: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, str] = {}  # next hops claimed so far
    for peer in sorted(peers, key=lambda p: p.name):
        if peer.name == self_name:
            continue
        if peer.name in seen:
            problems.append(f"peer {peer.name}: listed twice, the second entry is skipped")
            continue
        seen.add(peer.name)
        addrs = []
        for text in peer.addresses:
            try:
                addr = ipaddress.ip_address(text)
            except ValueError:
                problems.append(f"peer {peer.name}: address {text!r} is not an IP address")
                continue
            if addr in own_addrs:
                problems.append(f"peer {peer.name}: address {addr} is this node's own")
            elif addr.is_link_local or addr.is_loopback or addr.is_multicast or addr.is_unspecified:
                problems.append(f"peer {peer.name}: address {addr} cannot be a next hop (not unicast global)")
            elif used_by.get(addr, peer.name) != peer.name:
                problems.append(f"peer {peer.name}: address {addr} is peer {used_by[addr]}'s too: not used")
            else:
                used_by[addr] = peer.name
                addrs.append(addr)
        if not peer.pod_cidrs:
            problems.append(f"peer {peer.name}: no pod CIDRs")
        if not peer.addresses:
            problems.append(f"peer {peer.name}: no addresses")
        for text in peer.pod_cidrs:
            net = parsed[text]
            if isinstance(net, ValueError):
                problems.append(f"peer {peer.name}: pod CIDR {text!r} is not valid: {net}")
                continue
            clash = next((o for o in own if o.version == net.version and o.overlaps(net)), None)
            if clash is not None:
                problems.append(
                    f"peer {peer.name}: pod CIDR {net} overlaps this node's own pod CIDR {clash}: skipped"
                )
                continue
            clash_c = next(
                (c for c in connected if c.network.version == net.version and c.network.overlaps(net)), None
            )
            if clash_c is not None:
                problems.append(
                    f"peer {peer.name}: pod CIDR {net} overlaps the directly connected subnet "
                    f"{clash_c.network} ({clash_c.ifname}): skipped"
                )
                continue
            clash_p = claims.first_overlapping(net)
            if clash_p is not None:
                problems.append(
                    f"peer {peer.name}: pod CIDR {net} overlaps {clash_p[0]} of peer {clash_p[1]}: skipped"
                )
                continue
            family = [a for a in addrs if a.version == net.version]
            if not family:
                problems.append(
                    f"peer {peer.name}: no IPv{net.version} address for pod CIDR {net} "
                    f"(addresses: {', '.join(peer.addresses) or 'none'}): skipped"
                )
                continue
            via = None
            for addr in family:
                via = next(
                    (c for c in connected if c.network.version == addr.version and addr in c.network), None
                )
                if via is not None:
                    gateway = addr
                    break
            if via is None:
                subnets = ", ".join(str(c.network) for c in connected if c.network.version == net.version)
                problems.append(
                    f"peer {peer.name}: {', '.join(map(str, family))} not on a directly connected subnet of "
                    f"this node ({subnets or 'none'}); direct routes need L2 adjacency: {net} skipped"
                )
                continue
            claims.claim(net, peer.name)
            desired[str(net)] = Route(str(net), str(gateway), via.ifindex, via.ifname, peer.name)
    return desired, problems


@dataclass
class Diff:
    add: list[Route]
    change: list[Route]  # the desired route replacing ours to the same dst
    remove: list[Route]
    keep: list[Route]
    conflicts: list[str]


def diff(desired: dict[str, Route], ours: Iterable[Route], foreign: dict[str, str] | None = None) -> Diff:
    """What to do to make our routes (`ours`, read from the kernel) equal `desired`. `foreign`
    maps a destination held by a route of another protocol to its description: such a
    destination is never added (conflict reported); our own stale routes are still removed."""
    foreign = foreign or {}
    out = Diff([], [], [], [], [])
    by_dst: dict[str, list[Route]] = {}
    for r in ours:
        by_dst.setdefault(r.dst, []).append(r)
    for dst, want in sorted(desired.items()):
        have = by_dst.pop(dst, [])
        same = [r for r in have if r == want]
        if dst in foreign and not same:
            # A replace could hit the other route (IPv4 replaces the first alias with the same
            # key), so ours goes and theirs stands.
            out.conflicts.append(
                f"peer {want.peer}: a route to {dst} not created by xdpcni exists ({foreign[dst]}): left alone, skipped"
            )
            out.remove += have
            continue
        if same:
            out.keep.append(
                Route(want.dst, want.gateway, want.ifindex, want.ifname, want.peer, same[0].metric)
            )
            out.remove += [r for r in have if r is not same[0]]
        elif have:
            out.change.append(
                Route(want.dst, want.gateway, want.ifindex, want.ifname, want.peer, have[0].metric)
            )
            out.remove += have[1:]
        else:
            out.add.append(want)
    for rest in by_dst.values():
        out.remove += rest
    return out


# ---------------------------------------------------------------------------------------------
# the controller


class RouteController:
    """Keeps routes to the other nodes' pod CIDRs in the main table of a network namespace.

    self_name: this node's name (its entry in the peers is skipped; its pod CIDRs are "own").
    netns: a network namespace name or path (None: the calling thread's).
    ifname: only subnets on this interface count as directly connected (None: any interface).
    pod_cidrs: this node's own pod CIDRs, besides those of the peer named self_name.
    status_file: where sync() records its last result for `xdpcnictl status` (see status_path()).
    source: what feeds it, for that record ("peers file /etc/xdpcni/peers.yaml", "kubernetes").

    Each call opens its own rtnetlink socket in the namespace; calls serialise on a lock, so one
    controller may be shared by threads. Netlink errors on one route become problems; a missing
    namespace raises FileNotFoundError.
    """

    def __init__(
        self,
        self_name: str,
        netns: str | None = None,
        ifname: str | None = None,
        *,
        pod_cidrs: Iterable[str] = (),
        status_file: str | None = None,
        source: str = "",
    ):
        self.self_name = self_name
        self.source = source
        self.netns = netns
        self.ifname = ifname
        self.pod_cidrs = tuple(pod_cidrs)
        self.status_file = status_file
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _ipr(self):
        with entered(self.netns):
            ipr = IPRoute()  # a netlink socket stays in the namespace it was created in
        try:
            yield ipr
        finally:
            ipr.close()

    def connected(self, ipr: IPRoute) -> list[Connected]:
        """Directly connected subnets: global/site addresses of ours with a prefix shorter than a
        host route (not lo, not link-local), on self.ifname if set."""
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        out = []
        for a in ipr.get_addr():
            ifname = names.get(a["index"], "")
            if ifname == "lo" or (self.ifname and ifname != self.ifname):
                continue
            addr = a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS")
            if not addr:
                continue
            iface = ipaddress.ip_interface(f"{addr}/{a['prefixlen']}")
            if iface.ip.is_link_local or iface.ip.is_loopback:
                continue
            if iface.network.prefixlen == iface.max_prefixlen:
                continue  # a /32 or /128 has no neighbours
            out.append(Connected(a["index"], ifname, iface.network, str(iface.ip)))
        return out

    @staticmethod
    def _read(ipr: IPRoute, names: dict[int, str]) -> tuple[list[Route], dict[str, str]]:
        """Our routes (main table, proto RTPROT_XDPCNI) and the destinations held by others."""
        ours: list[Route] = []
        foreign: dict[str, str] = {}
        for fam in (socket.AF_INET, socket.AF_INET6):
            for m in ipr.route("dump", family=fam, table=RT_TABLE_MAIN):
                table = m.get_attr("RTA_TABLE") or m["table"]
                if table != RT_TABLE_MAIN or m["type"] != RTN_UNICAST:
                    continue
                dst = m.get_attr("RTA_DST") or ("0.0.0.0" if fam == socket.AF_INET else "::")
                net = str(ipaddress.ip_network(f"{dst}/{m['dst_len']}", strict=False))
                if m["proto"] == RTPROT_XDPCNI:
                    oif = m.get_attr("RTA_OIF") or 0
                    ours.append(
                        Route(
                            net,
                            m.get_attr("RTA_GATEWAY") or "",
                            oif,
                            names.get(oif, ""),
                            metric=m.get_attr("RTA_PRIORITY"),
                        )
                    )
                else:
                    foreign[net] = f"proto {m['proto']}" + (
                        f" via {m.get_attr('RTA_GATEWAY')}" if m.get_attr("RTA_GATEWAY") else ""
                    )
        return ours, foreign

    def routes(self) -> list[Route]:
        """Our routes in the namespace now."""
        with self._lock, self._ipr() as ipr:
            names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
            return sorted(self._read(ipr, names)[0], key=lambda r: r.dst)

    @staticmethod
    def _kw(r: Route) -> dict:
        net = ipaddress.ip_network(r.dst)
        kw = {
            "dst": str(net.network_address),
            "dst_len": net.prefixlen,
            "family": socket.AF_INET if net.version == 4 else socket.AF_INET6,
            "table": RT_TABLE_MAIN,
            "proto": RTPROT_XDPCNI,
            "type": RTN_UNICAST,
        }
        if r.gateway:
            kw["gateway"] = r.gateway
        if r.ifindex:
            kw["oif"] = r.ifindex
        if r.metric is not None:
            kw["priority"] = r.metric
        return kw

    def sync(self, peers: Iterable[Peer]) -> SyncResult:
        """Make our routes equal the routes `peers` (the whole desired state) call for: RTM_NEWROUTE
        with NLM_F_EXCL for new ones, NLM_F_REPLACE for changed ones, RTM_DELROUTE for ours no
        peer wants; unchanged routes are not touched. Returns what was done and the problems."""
        peers = list(peers)
        res = SyncResult()
        with self._lock, self._ipr() as ipr:
            names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
            desired, problems = plan(self.self_name, peers, self.connected(ipr), self.pod_cidrs)
            res.problems += problems
            ours, foreign = self._read(ipr, names)
            d = diff(desired, ours, foreign)
            res.problems += d.conflicts
            res.kept = d.keep
            for r in d.remove:
                try:
                    ipr.route("del", **self._kw(r))
                    res.removed.append(r)
                except NetlinkError as exc:
                    if exc.code == errno.ESRCH:
                        res.removed.append(r)  # gone already
                    else:
                        res.problems.append(f"removing {r}: {exc}")
            for r in d.change:
                try:
                    ipr.route("replace", **self._kw(r))
                    res.changed.append(r)
                except NetlinkError as exc:
                    res.problems.append(f"replacing {r}: {exc}")
            for r in d.add:
                try:
                    ipr.route("add", **self._kw(r))
                    res.added.append(r)
                except NetlinkError as exc:
                    why = "a route to it appeared meanwhile, left alone" if exc.code == errno.EEXIST else exc
                    res.problems.append(f"peer {r.peer}: adding {r}: {why}")
        if self.status_file:
            write_status(self.status_file, self.self_name, len({p.name for p in peers}), res, self.source)
        return res

    def remove_all(self) -> int:
        """Delete every route of ours (main table, proto RTPROT_XDPCNI) in the namespace, and
        nothing else; returns how many went."""
        n = 0
        with self._lock, self._ipr() as ipr:
            for r in self._read(ipr, {})[0]:
                try:
                    ipr.route("del", **self._kw(r))
                    n += 1
                except NetlinkError as exc:
                    if exc.code != errno.ESRCH:
                        raise
        if self.status_file:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.status_file)
        return n


# ---------------------------------------------------------------------------------------------
# status for `xdpcnictl status`


def status_path(root: str) -> str:
    """Where the agent serving datapath `root` records its last route sync (next to the node
    state file, gone with it)."""
    return os.path.join(RUN_DIR, PinLayout(root).key + ".routes.json")


def write_status(path: str, node: str, peers: int, res: SyncResult, source: str = "") -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    doc = {
        "node": node,
        "time": time.time(),
        "peers": peers,
        "source": source,
        "routes": [str(r) for r in res.routes],
        "summary": res.summary(),
        "problems": res.problems,
    }
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with open(tmp, "w") as fh:
            json.dump(doc, fh)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def read_status(root: str) -> dict | None:
    """The last recorded route sync for datapath `root`, or None when no route source runs."""
    try:
        with open(status_path(root)) as fh:
            return json.load(fh)
    except (FileNotFoundError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# the peers file as a source


def watch_peers_file(
    path: str,
    ctl: RouteController,
    stop: threading.Event,
    log: Callable[[str], None],
    period: float = POLL_PERIOD,
    resync: float = RESYNC_PERIOD,
) -> None:
    """Sync from `path` now, whenever its mtime (or size, inode) changes, and every `resync`
    seconds (a route someone deleted comes back), until `stop` is set. A file that cannot be read
    or parsed changes nothing (the routes stay as they are) and is logged once per change. A
    periodic sync is logged only when it changed something or the problems changed."""
    last = None
    last_problems: list[str] | None = None
    next_resync = time.monotonic() + resync
    while True:
        try:
            st = os.stat(path)
            sig = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError as exc:
            sig = ("missing", str(exc))
        changed = sig != last
        if changed or (time.monotonic() >= next_resync and last_problems is not None):
            last = sig
            next_resync = time.monotonic() + resync
            try:
                res = ctl.sync(load_peers_file(path))
                if changed or res.added or res.changed or res.removed or res.problems != last_problems:
                    log(f"peers {path}: {res.summary()}")
                    for p in res.problems:
                        log(f"peers {path}: problem: {p}")
                last_problems = res.problems
            except (OSError, PeersFileError) as exc:
                if changed:
                    log(f"peers {path}: not applied, routes left as they are: {exc}")
        if stop.wait(period):
            return


def start_file_source(
    path: str, node_name: str, root: str, stop: threading.Event, log: Callable[[str], None]
) -> threading.Thread:
    """The agent's hook: a daemon thread running watch_peers_file for this namespace."""
    ctl = RouteController(node_name, status_file=status_path(root), source=f"peers file {path}")
    t = threading.Thread(target=watch_peers_file, args=(path, ctl, stop, log), daemon=True, name="peers")
    t.start()
    return t
