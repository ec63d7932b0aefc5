"""CNI error codes (spec 1.1.0) and the one exception every verb raises to report them.

main() turns a CniError into the spec's JSON error object on stdout and a non-zero exit; any
other exception becomes code 100 (ours, "internal") so a runtime never sees a Python traceback
on stdout.
"""

from __future__ import annotations

# Spec-defined codes.
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENV = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_NETCONF = 7
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50
LIMITED_CONNECTIVITY = 51

# Ours (100+).
INTERNAL = 100
DATAPATH = 101  # datapath could not be loaded, or a pinned map/program operation failed
PLUMBING = 102  # netlink work on the veth pair failed
IPAM_EXHAUSTED = 103  # no free address left in a range set
IPAM_DELEGATE = 104  # the delegated IPAM plugin failed without a spec error object
ALREADY_EXISTS = 105  # ADD for a container/ifname that already has an attachment: DEL it first
CHECK_FAILED = 106  # CHECK found the attachment differing from prevResult or the node state
ADDRESS_IN_USE = 107  # the (delegated) IPAM gave an address that is live on this node for another pod


class CniError(Exception):
    def __init__(self, code: int, msg: str, details: str = ""):
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_dict(self, cni_version: str) -> dict:
        out = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out

    def __str__(self) -> str:
        return f"[{self.code}] {self.msg}" + (f": {self.details}" if self.details else "")
