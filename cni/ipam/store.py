"""Leases on disk, host-local style: one file per address (named by it, holding the owner's
container id and ifname) plus the last address handed out per range set, all under one flock
per network so concurrent ADDs never hand out an address twice.
"""

from __future__ import annotations

import ipaddress
import os
from contextlib import contextmanager

from ..locking import flocked, write_atomic

LOCK_NAME = "lock"
LAST_PREFIX = "last_reserved_ip."


class LeaseStore:
    def __init__(self, directory: str, lock_timeout: float = 60.0):
        self.dir = directory
        self.lock_timeout = lock_timeout

    @contextmanager
    def locked(self):
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        with flocked(os.path.join(self.dir, LOCK_NAME), self.lock_timeout, "IPAM lease lock"):
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

    def leases(self) -> dict[str, tuple[str, str]]:
        """address -> (container id, ifname); readable without the lock (files appear atomically)."""
        out: dict[str, tuple[str, str]] = {}
        if not os.path.isdir(self.dir):
            return out
        for name in os.listdir(self.dir):
            try:
                ipaddress.ip_address(name)
            except ValueError:
                continue
            try:
                with open(os.path.join(self.dir, name)) as fh:
                    lines = fh.read().splitlines()
            except FileNotFoundError:
                continue
            cid = lines[0].strip() if lines else ""
            ifname = lines[1].strip() if len(lines) > 1 else ""
            out[name] = (cid, ifname)
        return out

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
            with open(os.path.join(self.dir, f"{LAST_PREFIX}{set_index}")) as fh:
                return fh.read().strip() or None
        except FileNotFoundError:
            return None

    def set_last_reserved(self, set_index: int, ip: str) -> None:
        write_atomic(os.path.join(self.dir, f"{LAST_PREFIX}{set_index}"), ip)
