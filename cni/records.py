"""Attachment records: one small JSON file per (network, container id, ifname), written *before*
ADD creates anything, so DEL and GC can find and undo what an ADD left behind even if it was
SIGKILLed half way.

Layout: <dataDir>/<network>/attachments/<host ifname>.json

A record is a hint, never trusted to name what gets deleted: the host veth's name and its
ownership mark are derived from the key (network, container id, ifname), and DEL/GC delete only
a link that carries that mark. A record that cannot be read is reported and left alone.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from .env import CONTAINER_ID_RE, is_ip
from .errors import IO_FAILURE, CniError
from .locking import write_atomic
from .plumbing import host_ifname_for, owner_mark


class RecordUnreadable(CniError):
    def __init__(self, path: str, why: str):
        super().__init__(
            IO_FAILURE,
            f"attachment record {path} is unreadable ({why})",
            "inspect it; DEL of that container id/ifname removes the attachment and the record",
        )
        self.path = path


@dataclass
class Record:
    container_id: str
    ifname: str
    network: str = ""
    netns: str = ""
    ips: list[str] = field(default_factory=list)  # filled in once IPAM answered
    ipam_type: str = ""
    complete: bool = False  # ADD printed its result
    pod_namespace: str = ""  # from CNI_ARGS K8S_POD_NAMESPACE / K8S_POD_NAME / K8S_POD_UID, if given
    pod_name: str = ""
    pod_uid: str = ""

    @property
    def pod(self) -> str | None:
        """ "namespace/name" when the runtime said (Kubernetes), else None."""
        return f"{self.pod_namespace}/{self.pod_name}" if self.pod_namespace and self.pod_name else None

    @property
    def host_ifname(self) -> str:
        return host_ifname_for(self.container_id, self.ifname, self.network)

    @property
    def mark(self) -> str:
        return owner_mark(self.network, self.container_id, self.ifname)


RECORD_SIZE = 2048  # bytes a record file is padded to (JSON allows trailing whitespace)


class RecordStore:
    def __init__(self, network_dir: str, network: str):
        self.dir = os.path.join(network_dir, "attachments")
        self.network = network

    def path(self, container_id: str, ifname: str) -> str:
        return os.path.join(self.dir, host_ifname_for(container_id, ifname, self.network) + ".json")

    def exists(self, container_id: str, ifname: str) -> bool:
        return os.path.exists(self.path(container_id, ifname))

    def get(self, container_id: str, ifname: str) -> Record | None:
        """None when there is no record; RecordUnreadable when there is one we cannot trust."""
        rec = self._read(self.path(container_id, ifname))
        if rec is not None and (rec.container_id, rec.ifname) != (container_id, ifname):
            raise RecordUnreadable(self.path(container_id, ifname), "it names another attachment")
        return rec

    def put(self, rec: Record, in_place: bool = False) -> None:
        """Write the record: a new file atomically (temporary + rename), space-padded to
        RECORD_SIZE bytes. in_place=True (ADD's final update, under the attachment lock)
        overwrites such a file where it is, in one write of one page: no temporary, rename or
        truncation, each of which makes ext4 flush (auto_da_alloc, ~0.3-0.8 ms here); SIGKILL
        cannot tear a write of this size, and a reader outside the lock that catches it
        half-copied finds an unreadable record, which every verb and GC leave alone."""
        rec.network = self.network
        data = dict(vars(rec))  # flat fields: a shallow copy (dataclasses.asdict deep-copies, 3x slower)
        data["ips"] = list(rec.ips)
        text = json.dumps(data)  # ASCII (ensure_ascii): one character, one byte
        path = self.path(rec.container_id, rec.ifname)
        if len(text) < RECORD_SIZE:
            text = text.ljust(RECORD_SIZE - 1) + "\n"
            if in_place and self._overwrite(path, text.encode("ascii")):
                return
        try:
            write_atomic(path, text)
        except FileNotFoundError:  # the network's first record: its directory (created when missing only)
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            write_atomic(path, text)

    @staticmethod
    def _overwrite(path: str, data: bytes) -> bool:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            if os.fstat(fd).st_size != len(data):
                return False  # not one of ours as written (edited, or from an older version)
            return os.pwrite(fd, data, 0) == len(data)
        except OSError:
            return False
        finally:
            os.close(fd)

    def remove(self, container_id: str, ifname: str) -> bool:
        try:
            os.unlink(self.path(container_id, ifname))
            return True
        except FileNotFoundError:
            return False

    def all(self) -> tuple[list[Record], list[RecordUnreadable]]:
        """Readable records, and the unreadable ones (reported, never acted on)."""
        if not os.path.isdir(self.dir):
            return [], []
        out, bad = [], []
        for name in sorted(os.listdir(self.dir)):
            if not name.endswith(".json"):
                continue
            path = os.path.join(self.dir, name)
            try:
                rec = self._read(path)
            except RecordUnreadable as exc:
                bad.append(exc)
                continue
            if rec is None:
                continue
            if self.path(rec.container_id, rec.ifname) != path:
                bad.append(RecordUnreadable(path, "its key does not match its file name"))
                continue
            out.append(rec)
        return out, bad

    def _read(self, path: str) -> Record | None:
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RecordUnreadable(path, exc.strerror or str(exc)) from None
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise RecordUnreadable(path, "not valid JSON") from None
        if not isinstance(data, dict):
            raise RecordUnreadable(path, "not a JSON object")
        data.pop("host_ifname", None)  # written by older versions; derived now, never trusted
        try:
            rec = Record(**data)
        except TypeError as exc:
            raise RecordUnreadable(path, f"unexpected fields: {exc}") from None
        if (
            not isinstance(rec.container_id, str)
            or not CONTAINER_ID_RE.fullmatch(rec.container_id)
            or not isinstance(rec.ifname, str)
            or not isinstance(rec.ips, list)
            or not all(isinstance(ip, str) and is_ip(ip) for ip in rec.ips)
            or not isinstance(rec.ipam_type, str)
            or rec.network != self.network
        ):
            raise RecordUnreadable(path, "malformed fields")
        return rec
