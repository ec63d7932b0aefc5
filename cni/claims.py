"""Node-wide address claims: an address bound to a live endpoint on this node is never given to a
second one, whichever network (name, conflist, IPAM) asks.

Leases are per network, so two networks with overlapping ranges each believe an address is free.
Every ADD therefore also *claims* each address it got, node-wide for its datapath (pin root):
one file per address, created with link(2) so two claimants can never both win, holding the
owner (network, container id, ifname). DEL/GC of that owner remove it. An address that is in the
endpoint map without a claim (a pod made by an older version or by hand) counts as taken too.

Layout: /run/xdpcni/<pin root key>.claims/<address>   (JSON ["network", "container id", "ifname"])
The directory is made by the first claim and removed (when empty) by unloading the datapath.
"""

from __future__ import annotations

import contextlib
import json
import os

from datapath.pins import PinLayout

from .locking import write_atomic

Owner = tuple[str, str, str]  # network, container id, ifname


class ClaimStore:
    def __init__(self, root: str):
        self.dir = PinLayout(root).claims_dir

    def _path(self, ip: str) -> str:
        return os.path.join(self.dir, ip)

    def owner(self, ip: str) -> Owner | None | bool:
        """The claim's owner; None when unclaimed; False when the claim cannot be read."""
        try:
            with open(self._path(ip), "rb") as fh:
                data = json.loads(fh.read(4096).decode("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, UnicodeDecodeError, RecursionError):
            return False
        if isinstance(data, list) and len(data) == 3 and all(isinstance(x, str) for x in data):
            return tuple(data)  # type: ignore[return-value]
        return False

    def claim(self, ip: str, owner: Owner) -> Owner | None | bool:
        """Claim `ip` for `owner`. Returns None on success (or when `owner` holds it already),
        else the current owner (False: a claim that cannot be read, which also blocks)."""
        for _ in range(5):
            try:
                write_atomic(self._path(ip), json.dumps(list(owner)), exclusive=True)
                return None
            except FileExistsError:
                current = self.owner(ip)
                if current is None:
                    continue  # released meanwhile: try again
                return None if current == owner else current
            except FileNotFoundError:  # the first claim since the datapath was loaded
                os.makedirs(self.dir, mode=0o700, exist_ok=True)
        return False

    def release(self, ips: list[str], owner: Owner) -> None:
        """Remove the claims of `ips` that `owner` holds (others' claims are left alone)."""
        for ip in ips:
            if self.owner(ip) == owner:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._path(ip))
        # The directory stays while the datapath is loaded (the next ADD would create it again,
        # ~0.1 ms on ext4); unloading the datapath removes it (datapath/loader.py unload).

    def all(self) -> dict[str, Owner | bool]:
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return {}
        out: dict[str, Owner | bool] = {}
        for name in names:
            if ".tmp" in name:
                continue
            owner = self.owner(name)
            if owner is not None:
                out[name] = owner
        return out


def describe(owner: Owner | bool) -> str:
    if owner is False:
        return "an unreadable claim"
    net, cid, ifname = owner  # type: ignore[misc]
    return f"network {net!r}, container {cid}, ifname {ifname}"
