"""Attachment records: one small JSON file per (container id, ifname), written *before* ADD
creates anything, so DEL and GC can find and undo what an ADD left behind even if it was
SIGKILLed half way (the veth name and the leases are derived from the same key).

Layout: <dataDir>/<network>/attachments/<host ifname>.json
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from .locking import write_atomic
from .plumbing import host_ifname_for


@dataclass
class Record:
    container_id: str
    ifname: str
    netns: str = ""
    host_ifname: str = ""
    ips: list[str] = field(default_factory=list)  # filled in once IPAM answered
    ipam_type: str = ""
    complete: bool = False  # ADD printed its result

    def __post_init__(self) -> None:
        if not self.host_ifname:
            self.host_ifname = host_ifname_for(self.container_id, self.ifname)


class RecordStore:
    def __init__(self, network_dir: str):
        self.dir = os.path.join(network_dir, "attachments")

    def path(self, container_id: str, ifname: str) -> str:
        return os.path.join(self.dir, host_ifname_for(container_id, ifname) + ".json")

    def get(self, container_id: str, ifname: str) -> Record | None:
        return self._read(self.path(container_id, ifname))

    def put(self, rec: Record) -> None:
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        write_atomic(self.path(rec.container_id, rec.ifname), json.dumps(asdict(rec)))

    def remove(self, container_id: str, ifname: str) -> bool:
        try:
            os.unlink(self.path(container_id, ifname))
            return True
        except FileNotFoundError:
            return False

    def all(self) -> list[Record]:
        if not os.path.isdir(self.dir):
            return []
        out = []
        for name in sorted(os.listdir(self.dir)):
            if name.endswith(".json"):
                rec = self._read(os.path.join(self.dir, name))
                if rec is not None:
                    out.append(rec)
        return out

    @staticmethod
    def _read(path: str) -> Record | None:
        try:
            with open(path) as fh:
                data = json.load(fh)
            return Record(**data)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError):
            return None  # a torn write cannot happen (atomic rename); a foreign file is ignored
