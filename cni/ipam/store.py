"""Leases on disk, host-local style: one file per address (named by it, holding the owner's
container id and ifname, one per line) plus the last address handed out per range set, all
under one flock per network so concurrent ADDs never hand out an address twice.

A lease whose owner cannot be parsed (invalid bytes, wrong shape, an id the spec forbids) still
holds its address: it is never handed out again and never released silently; leases() reports
its owner as None and the verbs say so on stderr.
"""

from __future__ import annotations

import ipaddress
import os
from contextlib import contextmanager

from ..env import CONTAINER_ID_RE, validate_ifname
from ..errors import CniError
from ..locking import flocked, write_atomic

LOCK_NAME = "lock"
LAST_PREFIX = "last_reserved_ip."

Owner = tuple[str, str]


def parse_owner(raw: bytes) -> Owner | None:
    """b"<container id>\\n<ifname>\\n" -> (container id, ifname); None for anything else."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    parts = text.split("\n")  # only "\n": an ifname may hold other line-breaking characters
    if parts and parts[-1] == "":
        parts.pop()
    if len(parts) != 2 or not CONTAINER_ID_RE.fullmatch(parts[0]):
        return None
    try:
        validate_ifname(parts[1])
    except CniError:
        return None
    return parts[0], parts[1]


class LeaseStore:
    def __init__(self, directory: str, lock_timeout: float | None = None):
        self.dir = directory
        self.lock_timeout = lock_timeout  # None: the verb's deadline (datapath/locks.py)

    @contextmanager
    def locked(self):
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        with flocked(os.path.join(self.dir, LOCK_NAME), "IPAM lease lock", self.lock_timeout):
            self._sweep_temporaries()
            yield self

    def _sweep_temporaries(self) -> None:
        """Writes happen under the lock, so a temporary seen by the lock holder is a crash's leftover."""
        for name in os.listdir(self.dir):
            if ".tmp" in name:
                try:
                    os.unlink(os.path.join(self.dir, name))
                except FileNotFoundError:
                    pass

    def leases(self) -> dict[str, Owner | None]:
        """address -> (container id, ifname), or None when the owner cannot be read; readable
        without the lock (files appear atomically)."""
        out: dict[str, Owner | None] = {}
        if not os.path.isdir(self.dir):
            return out
        for name in os.listdir(self.dir):
            try:
                ipaddress.ip_address(name)
            except ValueError:
                continue
            try:
                with open(os.path.join(self.dir, name), "rb") as fh:
                    raw = fh.read(4096)
            except FileNotFoundError:
                continue
            except OSError:
                out[name] = None
                continue
            out[name] = parse_owner(raw)
        return out

    def addresses(self) -> set[str]:
        """Every leased address, readable owner or not (names only: no file is read)."""
        if not os.path.isdir(self.dir):
            return set()
        out = set()
        for name in os.listdir(self.dir):
            try:
                ipaddress.ip_address(name)
            except ValueError:
                continue
            out.add(name)
        return out

    def unreadable(self) -> list[str]:
        return sorted(os.path.join(self.dir, ip) for ip, owner in self.leases().items() if owner is None)

    def owned_by(self, container_id: str, ifname: str) -> list[str]:
        return sorted(ip for ip, owner in self.leases().items() if owner == (container_id, ifname))

    def reserve(self, ip: str, container_id: str, ifname: str) -> bool:
        """Lock held. False when the address is taken."""
        try:
            write_atomic(os.path.join(self.dir, ip), f"{container_id}\n{ifname}\n", exclusive=True)
            return True
        except FileExistsError:
            return False

    def release(self, ip: str) -> bool:
        try:
            os.unlink(os.path.join(self.dir, ip))
            return True
        except FileNotFoundError:
            return False

    def last_reserved(self, set_index: int) -> str | None:
        try:
            with open(os.path.join(self.dir, f"{LAST_PREFIX}{set_index}"), "rb") as fh:
                return fh.read(64).decode("ascii").strip() or None
        except (FileNotFoundError, UnicodeDecodeError):
            return None

    def set_last_reserved(self, set_index: int, ip: str) -> None:
        write_atomic(os.path.join(self.dir, f"{LAST_PREFIX}{set_index}"), ip)
