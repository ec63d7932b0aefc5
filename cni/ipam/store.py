"""Leases on disk, host-local style: one file per address (named by it, holding the owner's
container id and ifname, one per line) plus the last address handed out per range set (a hint
filed under the set's index and its ranges, RangeSet.key), all under one flock per network so
concurrent ADDs never hand out an address twice.

A lease whose owner cannot be parsed (invalid bytes, wrong shape, an id the spec forbids) still
holds its address: it is never handed out again and never released silently; leases() reports
its owner as None and the verbs say so on stderr.
"""

from __future__ import annotations

import ipaddress
import os
import re
from contextlib import contextmanager

from ..env import CONTAINER_ID_RE, is_ip, validate_ifname
from ..errors import CniError
from ..locking import flocked, write_atomic, write_failed

_ADDRESS_CHARS = re.compile(r"[0-9a-fA-F.:]+")  # what an address's canonical text is made of
LOCK_NAME = "lock"
LAST_PREFIX = "last_reserved_ip."
LAST_WIDTH = 40
_LEGACY_HINT = re.compile(re.escape(LAST_PREFIX) + r"[0-9]+")

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
        self._held = False  # this store holds the lease lock (locked())
        self._names: list[str] | None = None  # the directory as the lock holder's sweep saw it

    @contextmanager
    def locked(self):
        """Hold the network's lease lock. The directory is not listed here: an allocation whose
        next candidates are free never lists it (addresses() does, once per hold, when needed)."""
        # flocked creates the directory with the lock file when it is missing (mode 0700)
        with flocked(os.path.join(self.dir, LOCK_NAME), "IPAM lease lock", self.lock_timeout):
            self._held, self._names = True, None
            try:
                yield self
            finally:
                self._held, self._names = False, None

    def _sweep_temporaries(self) -> list[str]:
        """Writes happen under the lock, so a temporary seen by the lock holder is a crash's
        leftover (of write_atomic's named-temporary path, which leases rarely take: readers skip
        them meanwhile); removed by the next lock holder that lists the directory, as is a hint
        of the earlier per-index naming (`last_reserved_ip.<index>`, read by no version since
        hints are filed per range set). Returns the other names."""
        names = []
        for name in os.listdir(self.dir):
            if ".tmp" in name or _LEGACY_HINT.fullmatch(name):
                try:
                    os.unlink(os.path.join(self.dir, name))
                except FileNotFoundError:
                    pass
            else:
                names.append(name)
        return names

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
        """Every leased address, readable owner or not (names only: no file is read), for
        membership tests of addresses in their canonical form (str(ipaddress.ip_address(..)),
        which is how leases are named): the names made of address characters, a regular
        expression's check per name instead of ipaddress's parse (~5 us a name: ~5 ms of every
        ADD on a network with a thousand leases). Under the lock, the names its sweep listed:
        this holder's own reservations since then may be missing, which costs nothing (reserve()
        is exclusive and refuses a taken address)."""
        if self._held:
            if self._names is None:
                self._names = self._sweep_temporaries()
            names = self._names
        else:
            if not os.path.isdir(self.dir):
                return set()
            names = os.listdir(self.dir)
        return {name for name in names if _ADDRESS_CHARS.fullmatch(name)}

    def unreadable(self) -> list[str]:
        return sorted(os.path.join(self.dir, ip) for ip, owner in self.leases().items() if owner is None)

    def owned_by(
        self, container_id: str, ifname: str, hint: list[str] | None = None, expected: int = 0
    ) -> list[str]:
        """The addresses leased to (container_id, ifname). With `hint` (a complete attachment
        record's addresses) and `expected` (one address per range set: what a finished ADD
        holds), only the hinted leases are read when they are exactly that many and all this
        owner's: no other lease can be its then (allocation is all or nothing). Otherwise, or
        for a record that names other addresses, every lease is read (O(leases))."""
        owner = (container_id, ifname)
        if (
            hint is not None
            and expected
            and len(set(hint)) == len(hint) == expected
            and all(is_ip(ip) and self.owner(ip) == owner for ip in hint)
        ):
            return sorted(hint)
        return sorted(ip for ip, o in self.leases().items() if o == owner)

    def owner(self, ip: str) -> Owner | None | bool:
        """The owner of the lease of `ip`; None when it is not leased; False when its owner
        cannot be read."""
        try:
            with open(os.path.join(self.dir, ip), "rb") as fh:
                raw = fh.read(4096)
        except FileNotFoundError:
            return None
        except OSError:
            return False
        return parse_owner(raw) or False

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

    def last_reserved(self, hint: str | int) -> str | None:
        """The address last handed out from the range set filed as `hint` (builtin.py: its index
        and RangeSet.key); None when there is none or it cannot be read."""
        try:
            with open(os.path.join(self.dir, f"{LAST_PREFIX}{hint}"), "rb") as fh:
                return fh.read(64).decode("ascii").strip() or None
        except (FileNotFoundError, UnicodeDecodeError):
            return None

    def set_last_reserved(self, hint: str | int, ip: str) -> None:
        """Overwritten in place, space-padded to a fixed width (an IPv6 address has at most 39
        characters): no temporary file, no rename and no truncation, each of which makes ext4
        flush (auto_da_alloc, ~0.3-0.8 ms per ADD on this machine's disk). It is only a hint
        (where the next search starts): a torn write reads as garbage, which means "start at
        the range's beginning"; a single write of this size is never torn by SIGKILL."""
        path = os.path.join(self.dir, f"{LAST_PREFIX}{hint}")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.pwrite(fd, f"{ip:<{LAST_WIDTH}}\n".encode("ascii"), 0)
            finally:
                os.close(fd)
        except OSError as exc:
            raise write_failed(path, exc) from exc
