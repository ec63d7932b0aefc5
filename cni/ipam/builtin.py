"""The built-in allocator over a LeaseStore: one address per range set, all or nothing."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from ..errors import ALREADY_EXISTS, IPAM_EXHAUSTED, CniError
from .ranges import RangeSet
from .store import LeaseStore

# Candidates tried by reserving them outright (an exclusive link: a taken address just fails)
# before the lease directory is listed to skip the taken ones. After the last address handed out
# the next one is nearly always free: an ADD then reads no directory (O(1) in the leases), and a
# network that wrapped around pays one listing, as before.
DIRECT_TRIES = 4


def allocate(
    store: LeaseStore,
    range_sets: list[RangeSet],
    container_id: str,
    ifname: str,
    claim: Callable[[str], bool] | None = None,
    check_owner: bool = True,
) -> list[str]:
    """Reserve one address in every range set for (container_id, ifname); returns them.

    `claim(ip)` (node-wide, cni/claims.py) is asked after each reservation; an address it refuses
    (live on this node for another network) is given back and the next one tried.
    check_owner=False skips reading every lease to refuse an owner that holds addresses already
    (ADD knows from the attachment record, which outlives its leases)."""
    got: list[str] = []
    with store.locked():
        if check_owner and store.owned_by(container_id, ifname):
            raise CniError(ALREADY_EXISTS, f"{container_id}/{ifname} already holds addresses: DEL it first")
        try:
            for idx, rs in enumerate(range_sets):
                got.append(_allocate_one(store, idx, rs, container_id, ifname, claim))
        except BaseException:
            for ip in got:
                store.release(ip)
            raise
    return got


def _allocate_one(
    store: LeaseStore,
    idx: int,
    rs: RangeSet,
    container_id: str,
    ifname: str,
    claim: Callable[[str], bool] | None,
) -> str:
    hint = f"{idx}.{rs.key}"  # per range set: another config's ranges do not move this one's start
    last = store.last_reserved(hint)
    after = None
    if last:
        try:
            after = ipaddress.ip_address(last)
        except ValueError:
            after = None
    taken: set[str] | None = None  # listed only once DIRECT_TRIES candidates in a row were taken
    refused = elsewhere = 0
    for ip in rs.candidates(after):
        s = str(ip)
        if taken is not None and s in taken:
            continue
        if store.reserve(s, container_id, ifname):
            refused = 0
            if claim is not None and not claim(s):
                store.release(s)
                elsewhere += 1
                continue
            store.set_last_reserved(hint, s)
            return s
        refused += 1
        if taken is None and refused >= DIRECT_TRIES:
            taken = store.addresses()
    ranges = ", ".join(f"{r.start}-{r.end}" for r in rs.ranges)
    also = f"; {elsewhere} more are in use on this node by other networks" if elsewhere else ""
    raise CniError(
        IPAM_EXHAUSTED,
        f"no free address left in range set {idx} ({ranges}){also}",
        "widen the range or remove pods of this network; `xdpcnictl status` shows the ranges' use",
    )


def release(store: LeaseStore, container_id: str, ifname: str, ips: list[str] | None = None) -> list[str]:
    """Release every lease of (container_id, ifname); none is fine (DEL twice). `ips`: the
    owner's addresses as LeaseStore.owned_by found them (each is re-checked under the lock, so
    only this owner's leases go); None: every lease is read."""
    with store.locked():
        if ips is None:
            ips = store.owned_by(container_id, ifname)
        else:
            ips = [ip for ip in ips if store.owner(ip) == (container_id, ifname)]
        for ip in ips:
            store.release(ip)
    return ips


def free_addresses(store: LeaseStore, range_sets: list[RangeSet]) -> list[int]:
    """Free addresses per range set (for operators: a full set fails ADD with code 103, never
    STATUS)."""
    taken = [ipaddress.ip_address(ip) for ip in store.leases()]
    return [rs.size - sum(1 for ip in taken if ip in rs) for rs in range_sets]
