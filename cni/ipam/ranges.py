"""Address ranges as host-local spells them: `ranges` is a list of range sets, one address per set
per attachment; a set is a list of ranges of one family (subnet, optional rangeStart/rangeEnd and
gateway). Invalid input is code 7.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from dataclasses import dataclass

from ..errors import INVALID_NETCONF, CniError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Range:
    subnet: IPNetwork
    start: IPAddress
    end: IPAddress
    gateway: IPAddress | None = None

    def __contains__(self, ip: IPAddress) -> bool:
        return ip.version == self.start.version and self.start <= ip <= self.end

    @property
    def size(self) -> int:
        return (
            int(self.end)
            - int(self.start)
            + 1
            - (1 if self.gateway is not None and self.gateway in self else 0)
        )

    def addresses_from(self, first: IPAddress):
        """Usable addresses from `first` (inside the range) to the end, the gateway skipped."""
        ip = first
        while ip <= self.end:
            if ip != self.gateway:
                yield ip
            ip += 1


@dataclass(frozen=True)
class RangeSet:
    ranges: tuple[Range, ...]

    @property
    def version(self) -> int:
        return self.ranges[0].start.version

    @property
    def size(self) -> int:
        return sum(r.size for r in self.ranges)

    def __contains__(self, ip: IPAddress) -> bool:
        return any(ip in r and ip != r.gateway for r in self.ranges)

    @functools.cached_property
    def key(self) -> str:
        """A short name of exactly this set of ranges (16 hex digits of the sha256 of their
        bounds): what its last-reserved hint is filed under (cni/ipam/store.py), so configs of
        one network with other ranges each keep their own."""
        bounds = ",".join(f"{r.start}-{r.end}" for r in self.ranges)
        return hashlib.sha256(bounds.encode()).hexdigest()[:16]

    def candidates(self, after: IPAddress | None):
        """Every usable address once, starting just after `after` (round robin, as host-local)."""
        start_idx, first = 0, None
        if after is not None:
            for i, r in enumerate(self.ranges):
                if after in r:
                    start_idx, first = i, after + 1
                    break
        n = len(self.ranges)
        if first is None:  # no history: every range from its start
            for r in self.ranges:
                yield from r.addresses_from(r.start)
            return
        here = self.ranges[start_idx]
        if first <= here.end:
            yield from here.addresses_from(first)
        for step in range(1, n):
            r = self.ranges[(start_idx + step) % n]
            yield from r.addresses_from(r.start)
        for ip in here.addresses_from(here.start):  # wrap round to `after` itself
            if ip >= first:
                break
            yield ip

    def to_json(self) -> list[dict]:
        return [
            {"subnet": str(r.subnet), "rangeStart": str(r.start), "rangeEnd": str(r.end)} for r in self.ranges
        ]


def _addr(value, what: str) -> IPAddress:
    try:
        return ipaddress.ip_address(value)
    except (ValueError, TypeError):
        raise CniError(INVALID_NETCONF, f"ipam: {what} {value!r} is not an IP address") from None


def parse_range(item) -> Range:
    if not isinstance(item, dict) or "subnet" not in item:
        raise CniError(INVALID_NETCONF, f'ipam: range {item!r} needs a "subnet"')
    try:
        subnet = ipaddress.ip_network(item["subnet"], strict=False)
    except (ValueError, TypeError):
        raise CniError(INVALID_NETCONF, f"ipam: subnet {item['subnet']!r} is not a valid CIDR") from None
    if subnet.version == 4:
        if subnet.prefixlen > 30:
            raise CniError(INVALID_NETCONF, f"ipam: subnet {subnet} is too small (at most /30 for IPv4)")
        lo, hi = subnet.network_address + 1, subnet.broadcast_address - 1
    else:
        if subnet.prefixlen > 126:
            raise CniError(INVALID_NETCONF, f"ipam: subnet {subnet} is too small (at most /126 for IPv6)")
        lo, hi = subnet.network_address + 1, subnet.broadcast_address
    start = _addr(item["rangeStart"], "rangeStart") if item.get("rangeStart") else lo
    end = _addr(item["rangeEnd"], "rangeEnd") if item.get("rangeEnd") else hi
    gateway = _addr(item["gateway"], "gateway") if item.get("gateway") else None
    for what, ip in (("rangeStart", start), ("rangeEnd", end)):
        if ip.version != subnet.version or not lo <= ip <= hi:
            raise CniError(INVALID_NETCONF, f"ipam: {what} {ip} is not a usable address of {subnet}")
    if start > end:
        raise CniError(INVALID_NETCONF, f"ipam: rangeStart {start} is after rangeEnd {end}")
    if gateway is not None and gateway not in subnet:
        raise CniError(INVALID_NETCONF, f"ipam: gateway {gateway} is outside {subnet}")
    return Range(subnet, start, end, gateway)


_PARSED: dict[str, tuple[RangeSet, ...]] = {}  # repr of a valid "ranges" value -> its range sets
_PARSED_MAX = 64


def parse_range_sets(value) -> list[RangeSet]:
    """The range sets of an IPAM config's "ranges" (a list of lists of range objects); CniError
    (code 7) for anything invalid. Range sets are immutable, so a long-running process (the node
    agent: every ADD parses its network's ranges) keeps those of a few distinct values (by the
    repr of the decoded JSON: equal reprs, equal values) and parses only what it has not seen."""
    key = repr(value)
    hit = _PARSED.get(key)
    if hit is not None:
        return list(hit)
    sets = _parse_range_sets(value)
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.clear()
    _PARSED[key] = tuple(sets)
    return sets


def _parse_range_sets(value) -> list[RangeSet]:
    if not isinstance(value, list) or not value:
        raise CniError(INVALID_NETCONF, 'ipam: "ranges" must be a non-empty list of range sets')
    sets: list[RangeSet] = []
    for raw_set in value:
        if not isinstance(raw_set, list) or not raw_set:
            raise CniError(INVALID_NETCONF, "ipam: each range set must be a non-empty list of ranges")
        ranges = tuple(parse_range(item) for item in raw_set)
        if len({r.subnet.version for r in ranges}) != 1:
            raise CniError(INVALID_NETCONF, "ipam: a range set mixes IPv4 and IPv6")
        sets.append(RangeSet(ranges))
    all_ranges = [r for s in sets for r in s.ranges]
    for i, a in enumerate(all_ranges):
        for b in all_ranges[i + 1 :]:
            if a.start.version == b.start.version and a.start <= b.end and b.start <= a.end:
                raise CniError(
                    INVALID_NETCONF, f"ipam: ranges {a.start}-{a.end} and {b.start}-{b.end} overlap"
                )
    return sets
