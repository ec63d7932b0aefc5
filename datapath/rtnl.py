"""rtnetlink for the per-pod work of CNI ADD and DEL: pyroute2's codec over a transport of our own.

Every request is encoded by pyroute2's message classes (ifinfmsg, ifaddrmsg, rtmsg, ndmsg, tcmsg
with its cls_bpf options), and replies are decoded by them (lookups, dumps); what this module
keeps is the socket, the request/ack loop and its framing, because pyroute2's own (IPRoute /
NetNS) costs what issue 12 removed from ADD:

- Reaching another namespace: pyroute2's NetNS forks a helper process. Here a socket is bound to
  the network namespace it was created in, so `Rtnl(netns_fd=fd)` makes its socket with the
  calling thread setns()ed into the pod's namespace for that one call (socket_in_netns): no
  fork, and no other thread of the process (the node agent serves verbs from many) is affected.
- Each IPRoute request runs an asyncio loop (~1-2 ms of Python per call in the node agent); here a
  request is one sendall and one recv loop.
- Batching: queue() + flush() send several requests in one sendall and then read one ack per
  batch, matched by sequence number: the kernel runs them in order, so N requests cost one
  round trip.
- Framing: message headers and an ack's error code are read with struct (~0.3 us a message,
  pyroute2's nlmsg + nlmsgerr ~19 us); the veth creation's 1.5 KB echo is read for the five
  attributes ADD needs (Link.from_raw, ~10 us; pyroute2 decodes all of it in ~180 us).

Encoding costs, measured: pyroute2 encodes a message in ~60-430 us (the veth pair the most), an
ADD's dozen requests ~1.2 ms. Requests every pod repeats byte for byte (lo and eth0 up, the pod's
routes) are encoded once per process (_ENCODED); in a long-running process (the node agent:
use_templates) each per-pod request shape is encoded by pyroute2 once, with where each per-pod
value (ifindex, MAC, address, name of a given length, fd) lies in its bytes, and later requests of
that shape are those bytes with their values written in (_Template: ~5 us; checked against
pyroute2's own encodings when made, and by tests/unit/test_rtnl_codec.py for random values).
Importing all of pyroute2 costs ~130 ms; this module imports only its rtnetlink message classes
(datapath/pyroute2_light.py, ~25 ms), which is what the in-process fallback (the CNI binary running
a verb itself when no agent answers) pays on every call.

Only what ADD/DEL need is here: veth pairs (peer created directly in the pod's namespace),
addresses, routes, neighbours, clsact + a cls_bpf filter, XDP, link lookups and deletes.
Errors raise NetlinkError with `.code` an errno number (the same attribute pyroute2's has).
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import socket
import struct
import sys
import threading

# Only the message classes, not pyroute2's __init__: the package's import arranged that
# (datapath/__init__.py, datapath/pyroute2_light.py).
from pyroute2.netlink import nlmsg
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg
from pyroute2.netlink.rtnl.tcmsg import tcmsg

NETLINK_ROUTE, NETLINK_NETFILTER = 0, 12
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_ECHO = 0x1, 0x2, 0x4, 0x8
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_NEWROUTE, RTM_NEWNEIGH = 20, 24, 28
RTM_NEWQDISC, RTM_NEWTFILTER = 36, 44

IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_LINKINFO, IFLA_IFALIAS = 1, 3, 4, 5, 18, 20
IFLA_NET_NS_FD, IFLA_EXT_MASK, IFLA_XDP = 28, 29, 43
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFLA_XDP_FD, IFLA_XDP_FLAGS = 1, 3
RTEXT_FILTER_SKIP_STATS = 1 << 3
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
NDA_DST, NDA_LLADDR = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY = 1, 4, 5
TCA_KIND, TCA_OPTIONS = 1, 2
TCA_BPF_CLASSID, TCA_BPF_FD, TCA_BPF_NAME, TCA_BPF_FLAGS = 3, 6, 7, 8
TCA_BPF_FLAG_ACT_DIRECT = 1
TC_H_CLSACT, TC_H_MIN_INGRESS = 0xFFFFFFF1, 0xFFF2
ETH_P_ALL = 0x0003
IFF_UP = 0x1
NUD_PERMANENT = 0x80
RT_TABLE_MAIN, RTPROT_STATIC, RTN_UNICAST = 254, 4, 1
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
CLONE_NEWNET = 0x40000000

# Raw layouts of the netlink header and ifinfomsg: the transport's framing (_recv_until), the
# veth creation's echo (Link.from_raw) and tests/e2e/test_cni_netlink.py's link monitor (with
# parse_attrs below). Requests are encoded by pyroute2 only.
_NLHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
_NLA = struct.Struct("=HH")
_ERRNO = struct.Struct("=i")  # nlmsgerr's error, after the header


# Requests pyroute2 encoded, by (type, flags, builder key[, field shapes]): bytes (the requests
# every pod's ADD repeats byte for byte: lo and eth0 up, the pod's routes) or a _Template (the
# per-pod requests, once templates are on). pyroute2 spends ~25-430 us on each. Bounded: cleared
# when full.
_ENCODED: dict[tuple, bytes | _Template | None] = {}
_ENCODED_MAX = 1024
# Each thread's receive buffer (Rtnl._recv): the largest datagram one read takes (a larger one
# would be cut short): 1 MiB, as every read here has always asked for.
RECV_BUFFER = 1 << 20
_RECV = threading.local()
_TEMPLATES = False


def use_templates(on: bool = True) -> None:
    """Per-pod requests from templates (see _Template) in this process: for long-running
    processes (the node agent), where each request shape is templated once and then reused by
    every ADD/DEL. Off by default: a one-verb process (the in-process fallback) would pay the
    template's extra encodes (two per field, plus two) and never reuse them."""
    global _TEMPLATES
    _TEMPLATES = on


# How a field's value appears in pyroute2's encoding (checked per template: _template), and
# another value of the same encoded length (`salt` 1 or 2) to find where it lies.
def _pack_u32(v: int) -> bytes:
    if not 0 <= v < 1 << 31:  # some of these fields are signed (ifinfmsg's index): pyroute2 decides
        raise ValueError(f"{v} is not a templated u32")
    return v.to_bytes(4, sys.byteorder)


def _pack_mac(v: str) -> bytes:
    if len(v) != 17 or v[2::3] != ":" * 5:  # only the canonical form: other forms are pyroute2's
        raise ValueError(f"{v!r} is not a templated MAC")
    return bytes.fromhex(v.replace(":", ""))


def _pack_ip(v: str) -> bytes:
    return socket.inet_pton(_family(v), v)


def _pack_name(v: str) -> bytes:
    return v.encode("ascii")  # UnicodeEncodeError: no template, pyroute2 encodes this one


_PACK = {"u32": _pack_u32, "mac": _pack_mac, "ip": _pack_ip, "name": _pack_name}


def _other(kind: str, v, salt: int):
    if kind == "u32":  # a non-negative int below 2**31 stays one (ifinfmsg's index is signed)
        return v ^ (0x5A3C69 if salt == 1 else 0x1E2D4B)
    if kind == "name":
        x, y = ("a", "b") if salt == 1 else ("c", "d")
        return "".join(y if c == x else x for c in v)
    raw = bytes(b ^ (0xA5 if salt == 1 else 0x3C) for b in _PACK[kind](v))
    if kind == "mac":
        return ":".join(f"{b:02x}" for b in raw)
    return socket.inet_ntop(_family(v), raw)


class _Template:
    """A request shape pyroute2 encoded, with where each field's value lies in its bytes.

    `spans`: (field number, offset, length). Made by _template() from pyroute2's own encodings
    and checked there; a request of this shape is then these bytes with its fields' values and
    sequence number written in (~5 us against pyroute2's 60-430 us per message)."""

    __slots__ = ("raw", "spans")

    def __init__(self, raw: bytes, spans: tuple) -> None:
        self.raw, self.spans = raw, spans

    def fill(self, seq: int, packed: tuple) -> bytes:
        out = bytearray(self.raw)
        out[8:12] = seq.to_bytes(4, sys.byteorder)
        for i, off, n in self.spans:
            out[off : off + n] = packed[i]
        return bytes(out)


def _template(kind: int, flags: int, build, fields: tuple) -> _Template | None:
    """The template of `build(*values)` (a function making the pyroute2 message), or None when
    pyroute2's encoding does not vary with a field as a fixed-length value in place.

    Each field is moved to two other values of its encoded length in turn; the bytes that change
    locate it (every place it occurs), and only when writing the new value's bytes there gives
    exactly pyroute2's encoding of the changed message (for both values, and for all fields
    changed at once) is the template kept. pyroute2 does the encoding; this only reuses it."""
    values = [v for _, v in fields]
    raw = _encode(kind, flags, build(*values), 0)
    spans = []
    for i, (fk, v) in enumerate(fields):
        a = _PACK[fk](v)
        n = len(a)
        found = None
        for salt in (1, 2):
            alt = _other(fk, v, salt)
            b = _PACK[fk](alt)
            other = _encode(kind, flags, build(*values[:i], alt, *values[i + 1 :]), 0)
            offs = [p for p in range(len(raw) - n + 1) if raw[p : p + n] == a and other[p : p + n] == b]
            if not offs or len(other) != len(raw) or (found is not None and offs != found):
                return None
            patched = bytearray(raw)
            for p in offs:
                patched[p : p + n] = b
            if patched != other:
                return None
            found = offs
        spans.extend((i, p, n) for p in found)
    tpl = _Template(raw, tuple(spans))
    alts = [_other(fk, v, 1) for fk, v in fields]
    if tpl.fill(0, tuple(_PACK[fk](v) for (fk, _), v in zip(fields, alts))) != _encode(
        kind, flags, build(*alts), 0
    ):
        return None
    return tpl


def _encode(kind: int, flags: int, msg, seq: int) -> bytes:
    """pyroute2's encoding of `msg` with its header."""
    hdr = msg["header"]
    hdr["type"] = kind
    hdr["flags"] = flags | NLM_F_REQUEST
    hdr["sequence_number"] = seq
    hdr["pid"] = 0
    msg.encode()
    return bytes(msg.data)


class NetlinkError(OSError):
    """A request the kernel refused; `.code` is the errno (as pyroute2's NetlinkError)."""

    def __init__(self, code: int, what: str = ""):
        super().__init__(code, f"{os.strerror(code)}{f' ({what})' if what else ''}")
        self.code = code


def _family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def parse_attrs(data: bytes, off: int = 0, end: int | None = None) -> dict[int, bytes]:
    """Raw attributes by type (see _NLHDR): for a monitor reading events without a decoder."""
    end = len(data) if end is None else end
    out: dict[int, bytes] = {}
    while off + 4 <= end:
        n, kind = _NLA.unpack_from(data, off)
        if n < 4:
            break
        out[kind & 0x3FFF] = data[off + 4 : off + n]
        off += (n + 3) & ~3
    return out


def _asciiz(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="surrogateescape")


def random_mac() -> str:
    """A random locally administered unicast MAC, as the kernel gives a veth end."""
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFE) | 0x02
    return ":".join(f"{x:02x}" for x in b)


_libc = None


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def socket_in_netns(netns_fd: int) -> socket.socket:
    """A NETLINK_ROUTE socket bound to the namespace behind `netns_fd` (a socket belongs to the
    namespace it was created in). The calling thread setns()es there for the socket() call alone
    and straight back, as the reference plugins' ns.Do does: a namespace is per thread, so the
    process's other threads never notice, and nothing forks. (A helper thread that made these
    sockets cost a hand-off, ~80 us here against ~30 us.) A thread that cannot get back to its
    own namespace ends the process: nothing may go on acting from inside a pod's namespace."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:  # setns inside: a signal right after it still brings the thread back
            setns(netns_fd)
            return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        finally:
            try:
                setns(home)
            except BaseException as exc:
                os.write(2, f"xdpcni: cannot return to its own network namespace ({exc}): exiting\n".encode())
                os._exit(70)
    finally:
        os.close(home)


class Link:
    """A link as RTM_NEWLINK describes it; `link` is IFLA_LINK (a veth's peer ifindex, in the
    peer's namespace), None when absent."""

    __slots__ = ("index", "ifname", "mac", "alias", "kind", "flags", "link")

    def __init__(
        self,
        index: int,
        ifname: str,
        mac: str | None,
        alias: str,
        kind: str | None,
        flags: int,
        link: int | None = None,
    ) -> None:
        self.index = index
        self.ifname = ifname
        self.mac = mac
        self.alias = alias
        self.kind = kind
        self.flags = flags
        self.link = link

    @classmethod
    def from_raw(cls, data: bytes) -> Link:
        """From one RTM_NEWLINK message's bytes (header included): what Link.from_msg takes from
        pyroute2's decoding, read straight off the attributes. For the kernel's echo of a veth
        creation (1.5 KB, mostly statistics and per-family settings): pyroute2 decodes every
        attribute of it in ~180 us, this reads the five it needs in ~10 us."""
        _, _, index, flags, _ = _IFINFO.unpack_from(data, 16)
        attrs = parse_attrs(data, 32)
        info = attrs.get(IFLA_LINKINFO)
        kind = parse_attrs(info).get(IFLA_INFO_KIND) if info is not None else None
        mac = attrs.get(IFLA_ADDRESS)
        link = attrs.get(IFLA_LINK)
        return cls(
            index,
            _asciiz(attrs.get(IFLA_IFNAME, b"")),
            ":".join(f"{b:02x}" for b in mac) if mac is not None else None,
            _asciiz(attrs.get(IFLA_IFALIAS, b"")),
            _asciiz(kind) if kind is not None else None,
            flags,
            int.from_bytes(link[:4], sys.byteorder) if link is not None else None,
        )

    @classmethod
    def from_msg(cls, msg: ifinfmsg) -> Link:
        """From a decoded RTM_NEWLINK (pyroute2's ifinfmsg)."""
        info = msg.get_attr("IFLA_LINKINFO")
        return cls(
            msg["index"],
            msg.get_attr("IFLA_IFNAME") or "",
            msg.get_attr("IFLA_ADDRESS"),
            msg.get_attr("IFLA_IFALIAS") or "",
            info.get_attr("IFLA_INFO_KIND") if info is not None else None,
            msg["flags"],
            msg.get_attr("IFLA_LINK"),
        )


def _ifinfo(index: int = 0, flags: int = 0, change: int = 0, attrs: list | None = None) -> ifinfmsg:
    msg = ifinfmsg()
    msg["family"] = socket.AF_UNSPEC
    msg["index"] = index
    msg["flags"] = flags
    msg["change"] = change
    msg["attrs"] = attrs or []
    return msg


def _link_query(ifname: str, index: int = 0) -> ifinfmsg:
    return _ifinfo(index, attrs=[("IFLA_EXT_MASK", RTEXT_FILTER_SKIP_STATS), ("IFLA_IFNAME", ifname)])


def _index_query(index: int) -> ifinfmsg:
    return _ifinfo(index, attrs=[("IFLA_EXT_MASK", RTEXT_FILTER_SKIP_STATS)])


def _veth_msg(
    flags: int, host_ifname: str, host_mac: str, peer_ifname: str, peer_mac: str, peer_netns_fd: int, mtu: int
) -> ifinfmsg:
    peer = {
        "family": socket.AF_UNSPEC,
        "ifi_type": 0,
        "index": 0,
        "flags": 0,
        "change": 0,
        "attrs": [
            ("IFLA_IFNAME", peer_ifname),
            ("IFLA_MTU", mtu),
            ("IFLA_ADDRESS", peer_mac),
            ("IFLA_NET_NS_FD", peer_netns_fd),
        ],
    }
    linkinfo = {
        "attrs": [
            ("IFLA_INFO_KIND", "veth"),
            ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", peer)]}),
        ]
    }
    return _ifinfo(
        flags=flags,
        change=flags,
        attrs=[
            ("IFLA_IFNAME", host_ifname),
            ("IFLA_MTU", mtu),
            ("IFLA_ADDRESS", host_mac),
            ("IFLA_LINKINFO", linkinfo),
        ],
    )


class DrySocket:
    """A stand-in for an rtnetlink socket that reaches no kernel: each request that asks for an
    ack (NLM_F_ACK) is answered with a success ack, as netlink_rcv_skb answers one, and nothing
    else. For making templates ahead of use (Rtnl(sock=DrySocket()): cni/plumbing.py
    prime_templates)."""

    def __init__(self) -> None:
        self._replies = bytearray()

    def sendall(self, data) -> None:
        off = 0
        while off + 16 <= len(data):
            n, _, flags, seq, _ = _NLHDR.unpack_from(data, off)
            if n < 16:
                break
            if flags & NLM_F_ACK:
                ack = _ERRNO.pack(0) + bytes(data[off : off + 16])
                self._replies += _NLHDR.pack(16 + len(ack), NLMSG_ERROR, 0, seq, 0) + ack
            off += (n + 3) & ~3

    def recv_into(self, buf) -> int:
        n = len(self._replies)
        buf[:n] = self._replies
        del self._replies[:]
        return n

    def close(self) -> None:
        pass


class Rtnl:
    """One rtnetlink socket in the caller's namespace, or in `netns_fd`'s."""

    def __init__(self, netns_fd: int | None = None, protocol: int = NETLINK_ROUTE, sock=None):
        """`protocol`: another netlink family over the same transport (datapath/netfilter.py's
        nftables table dump uses NETLINK_NETFILTER), in the caller's namespace only. `sock`: a
        stand-in to use as it is instead (DrySocket: requests are encoded and acked, and none
        reaches the kernel)."""
        if sock is not None:
            self.sock = sock
        else:
            if netns_fd is None:
                self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol)
            elif protocol != NETLINK_ROUTE:
                raise ValueError("sockets in another namespace are rtnetlink only")
            else:
                self.sock = socket_in_netns(netns_fd)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            self.sock.bind((0, 0))
        self.seq = 0
        self._queued: list[tuple] = []  # kind, flags, msg, what, ok, key, fields

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- transport --------------------------------------------------------------------------------
    def _msg(
        self, kind: int, flags: int, msg, key: tuple | None = None, fields: tuple = ()
    ) -> tuple[int, bytes]:
        """The next sequence number and `msg` (a pyroute2 message, or a function making one from
        `fields`' values) encoded with its header. `key`: everything the message's bytes depend
        on besides the header's sequence number and `fields` (the builder's other arguments).
        `fields`: (kind, value) pairs, kind one of _PACK's: the per-pod values of a templated
        request. A keyed request without fields pyroute2 encoded before reuses those bytes with
        this request's sequence number; one with fields is filled into its shape's template
        (with templates on: use_templates), else pyroute2 encodes it (_ENCODED)."""
        self.seq += 1
        if key is not None and (_TEMPLATES or not fields):
            try:
                packed = tuple(_PACK[fk](v) for fk, v in fields)
            except (ValueError, OSError, OverflowError, TypeError, AttributeError):
                packed = None  # a value without a fixed-length form: pyroute2 encodes this one
            if packed is not None:
                full = (kind, flags, key, tuple((fk, len(p)) for (fk, _), p in zip(fields, packed)))
                got = _ENCODED.get(full, False)
                if got is False:
                    if len(_ENCODED) >= _ENCODED_MAX:
                        _ENCODED.clear()
                    if fields:
                        try:
                            got = _template(kind, flags, msg, fields)
                        except Exception:  # pyroute2 refused a perturbed value: no template
                            got = None
                    else:
                        got = _encode(kind, flags, msg() if callable(msg) else msg, 0)
                    _ENCODED[full] = got
                if isinstance(got, _Template):
                    return self.seq, got.fill(self.seq, packed)
                if got is not None:  # the header: length, type, flags, then the u32 sequence number
                    return self.seq, got[:8] + self.seq.to_bytes(4, sys.byteorder) + got[12:]
        if callable(msg):
            msg = msg(*(v for _, v in fields))
        return self.seq, _encode(kind, flags, msg, self.seq)

    def _recv(self) -> bytes:
        """One datagram, read into a buffer each thread keeps (RECV_BUFFER bytes of anonymous
        memory: pages the kernel never writes to stay unallocated) and copied out at its size.
        recv(RECV_BUFFER) would allocate a new object of that size per read: an mmap, a mremap
        and a munmap, ~25 us of every read (measured here: 2 reads of a lookup took 60 us, now
        13 us)."""
        buf = getattr(_RECV, "buf", None)
        if buf is None:
            buf = _RECV.buf = memoryview(mmap.mmap(-1, RECV_BUFFER))
        return bytes(buf[: self.sock.recv_into(buf)])

    def _recv_until(
        self, want: set[int], reply: type[nlmsg] | None = nlmsg, errors: dict[int, int] | None = None
    ) -> dict[int, tuple[int, list]]:
        """Read until every seq in `want` has its ack (or error / dump end): seq -> (errno, msgs),
        msgs the other messages for that seq decoded as `reply` (pyroute2's class; None: each
        message's raw bytes, header included). Refusals of other requests of this socket (sent
        without NLM_F_ACK) go into `errors` (seq -> errno). The framing (each message's header,
        an ack's error code) is read with struct: this transport's own, ~0.3 us a message
        against ~19 us for pyroute2's nlmsg + nlmsgerr."""
        got: dict[int, tuple[int, list]] = {}
        msgs: dict[int, list] = {}
        while want - got.keys():
            data = self._recv()
            if not data:  # a netlink socket never reads empty: never spin on one that does
                raise NetlinkError(errno.EIO, "netlink socket read nothing before the reply")
            off = 0
            while off + 16 <= len(data):
                n, kind, _, seq, _ = _NLHDR.unpack_from(data, off)
                if n < 16:
                    break
                if kind == NLMSG_ERROR and (seq in want or errors is not None):
                    code = -_ERRNO.unpack_from(data, off + 16)[0] if n >= 20 else errno.EIO
                    if seq in want:
                        got[seq] = (code, msgs.pop(seq, []))
                    else:
                        errors[seq] = code
                elif seq in want:
                    if kind == NLMSG_DONE:
                        got[seq] = (0, msgs.pop(seq, []))
                    elif reply is None:
                        msgs.setdefault(seq, []).append(data[off : off + n])
                    else:
                        msg = reply(data, offset=off)
                        msg.decode()
                        msgs.setdefault(seq, []).append(msg)
                off += (n + 3) & ~3
        if errors is not None:
            errors.update((seq, code) for seq, (code, _) in got.items())
        return got

    def request(
        self,
        kind: int,
        flags: int,
        msg,
        what: str = "",
        ok: tuple[int, ...] = (),
        key: tuple | None = None,
        fields: tuple = (),
    ) -> None:
        """One request, acked; errno values in `ok` count as success (`msg`, `key`, `fields`:
        see _msg)."""
        self.queue(kind, flags, msg, what, ok, key, fields)
        self.flush()

    def queue(
        self,
        kind: int,
        flags: int,
        msg,
        what: str = "",
        ok: tuple[int, ...] = (),
        key: tuple | None = None,
        fields: tuple = (),
    ) -> None:
        """Add a request to the next flush(); it is encoded there (`msg`, `key`, `fields`: see
        _msg)."""
        self._queued.append((kind, flags, msg, what, ok, key, fields))

    def flush(self) -> None:
        """Send every queued request in one sendmsg; raise the first refusal (in order), after
        the batch is done. Only the last request asks for an ack (NLM_F_ACK): the kernel runs a
        batch in order, answers a failed request with an error message whether or not it asked
        for an ack (netlink_rcv_skb), and carries on with the next one, so the last ack means
        every request before it ran, and any refusal has arrived by then. N requests: one
        round trip, one ack to read."""
        queued, self._queued = self._queued, []
        if not queued:
            return
        last = len(queued) - 1
        seqs, raws = [], []
        for i, (kind, flags, msg, _, _, key, fields) in enumerate(queued):
            seq, raw = self._msg(kind, flags | (NLM_F_ACK if i == last else 0), msg, key, fields)
            seqs.append(seq)
            raws.append(raw)
        self.sock.sendall(b"".join(raws))
        errors: dict[int, int] = {}
        self._recv_until({seqs[-1]}, errors=errors)
        for seq, (_, _, _, what, ok, _, _) in zip(seqs, queued):
            code = errors.get(seq, 0)
            if code and code not in ok:
                raise NetlinkError(code, what)

    def get(
        self,
        kind: int,
        msg,
        what: str,
        reply: type[nlmsg] | None,
        flags: int = 0,
        key: tuple | None = None,
        fields: tuple = (),
    ) -> list:
        """One acked request and the messages answering it (decoded as `reply`); with NLM_F_DUMP
        in `flags`, every message of the dump (the kernel ends it with NLMSG_DONE, no ack).
        `msg`, `key`, `fields`: see _msg."""
        seq, raw = self._msg(kind, flags | NLM_F_ACK, msg, key, fields)
        self.sock.sendall(raw)
        code, msgs = self._recv_until({seq}, reply)[seq]
        if code:
            raise NetlinkError(code, what)
        return msgs

    # -- links ------------------------------------------------------------------------------------
    def get_link(self, ifname: str | None = None, index: int = 0) -> Link | None:
        """The link by name or index; None when there is none."""
        if ifname is not None:
            key, fields = ("link-by-name", index), (("name", ifname),)
        else:
            key, fields = ("link-by-index",), (("u32", index),)
        try:
            msgs = self.get(
                RTM_GETLINK,
                (lambda ifname: _link_query(ifname, index)) if ifname is not None else _index_query,
                f"link {ifname or index}",
                ifinfmsg,
                key=key,
                fields=fields,
            )
        except NetlinkError as exc:
            if exc.code in (errno.ENODEV, errno.ENOENT):
                return None
            raise
        for m in msgs:
            return Link.from_msg(m)
        return None

    def create_veth(
        self,
        host_ifname: str,
        host_mac: str,
        peer_ifname: str,
        peer_mac: str,
        peer_netns_fd: int,
        mtu: int,
        alias: str | None = None,
        up: bool = True,
    ) -> Link | None:
        """A veth pair whose peer is created directly in the namespace behind `peer_netns_fd`
        (no create-then-move), both ends with the given MACs and MTU, the host end up (`up`)
        and marked with `alias` (queued: the next flush sends it). The peer starts down: the
        kernel refuses to open it before the pair is linked (ENOTCONN); set_up() it from its
        namespace.

        Returns the host end as the kernel echoes it (NLM_F_ECHO, honoured by rtnl_newlink since
        Linux 6.1): its ifindex, and the peer's ifindex as IFLA_LINK, with no lookup round trip.
        None on kernels that do not echo: look the links up instead."""
        flags = IFF_UP if up else 0
        msgs = self.get(
            RTM_NEWLINK,
            lambda *values: _veth_msg(flags, *values),
            f"create veth {host_ifname}",
            None,  # the echo's bytes: Link.from_raw
            NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO,
            key=("veth", flags),
            fields=(
                ("name", host_ifname),
                ("mac", host_mac),
                ("name", peer_ifname),
                ("mac", peer_mac),
                ("u32", peer_netns_fd),
                ("u32", mtu),
            ),
        )
        echoed = None
        for raw in msgs:
            if _NLHDR.unpack_from(raw)[1] == RTM_NEWLINK:
                link = Link.from_raw(raw)
                if link.ifname == host_ifname:
                    echoed = link
        if alias:
            self.queue(
                RTM_SETLINK,
                0,
                lambda name, alias: _ifinfo(attrs=[("IFLA_IFNAME", name), ("IFLA_IFALIAS", alias)]),
                f"ifalias of {host_ifname}",
                key=("alias",),
                fields=(("name", host_ifname), ("name", alias)),
            )
        return echoed

    def set_up(self, index: int) -> None:
        self.queue(
            RTM_NEWLINK, 0, lambda: _ifinfo(index, IFF_UP, IFF_UP), f"link {index} up", key=("up", index)
        )

    def delete_link(self, index: int) -> bool:
        """False when it is gone already."""
        try:
            self.request(
                RTM_DELLINK, 0, _ifinfo, f"delete link {index}", key=("del",), fields=(("u32", index),)
            )
        except NetlinkError as exc:
            if exc.code in (errno.ENODEV, errno.ENOENT):
                return False
            raise
        return True

    def set_xdp(self, index: int, prog_fd: int, flags: int) -> None:
        xdp = {"attrs": [("IFLA_XDP_FD", prog_fd), ("IFLA_XDP_FLAGS", flags)]}
        self.queue(RTM_SETLINK, 0, _ifinfo(index, attrs=[("IFLA_XDP", xdp)]), f"XDP on link {index}")

    # -- addresses, routes, neighbours (queued: flush() sends them) --------------------------------
    def add_addr(self, index: int, addr: str, prefixlen: int, flags: int = 0) -> None:
        self.queue(
            RTM_NEWADDR,
            NLM_F_CREATE | NLM_F_EXCL,
            lambda index, addr: self._addr(index, addr, prefixlen, flags),
            f"address {addr}/{prefixlen}",
            key=("addr", prefixlen, flags),
            fields=(("u32", index), ("ip", addr)),
        )

    @staticmethod
    def _addr(index: int, addr: str, prefixlen: int, flags: int) -> ifaddrmsg:
        msg = ifaddrmsg()
        msg["family"] = _family(addr)
        msg["prefixlen"] = prefixlen
        msg["flags"] = flags & 0xFF
        msg["scope"] = RT_SCOPE_UNIVERSE
        msg["index"] = index
        msg["attrs"] = [("IFA_LOCAL", addr), ("IFA_ADDRESS", addr)]
        if flags > 0xFF:
            msg["attrs"].append(("IFA_FLAGS", flags))
        return msg

    def replace_route(
        self,
        dst: str,
        dst_len: int,
        oif: int,
        gateway: str | None = None,
        scope: int = RT_SCOPE_UNIVERSE,
        repeats: bool = False,
    ) -> None:
        """repeats=True: a route every pod has (its gateway and default routes: eth0 is ifindex 2
        in a fresh namespace), whose bytes come from _ENCODED after the first; per-pod routes
        (the node's route to a pod) are filled into a template (use_templates)."""
        if repeats:
            key, fields = ("route", dst, dst_len, oif, gateway, scope), ()
        else:  # the destination, interface and gateway vary: the template's fields
            key = ("route-to", dst_len, scope, gateway is not None)
            fields = (("ip", dst), ("u32", oif)) + ((("ip", gateway),) if gateway else ())

        def build(dst: str = dst, oif: int = oif, gateway: str | None = gateway) -> rtmsg:
            return self._route(dst, dst_len, oif, gateway, scope)

        self.queue(
            RTM_NEWROUTE,
            NLM_F_CREATE | NLM_F_REPLACE,
            build,
            f"route {dst}/{dst_len}",
            key=key,
            fields=fields,
        )

    @staticmethod
    def _route(dst: str, dst_len: int, oif: int, gateway: str | None, scope: int) -> rtmsg:
        msg = rtmsg()
        msg["family"] = _family(dst)
        msg["dst_len"] = dst_len
        msg["src_len"] = 0
        msg["tos"] = 0
        msg["table"] = RT_TABLE_MAIN
        msg["proto"] = RTPROT_STATIC
        msg["scope"] = scope
        msg["type"] = RTN_UNICAST
        msg["flags"] = 0
        attrs: list = [("RTA_DST", dst)] if dst_len else []
        attrs.append(("RTA_OIF", oif))
        if gateway:
            attrs.append(("RTA_GATEWAY", gateway))
        msg["attrs"] = attrs
        return msg

    def replace_neigh(self, index: int, dst: str, lladdr: str, state: int = NUD_PERMANENT) -> None:
        self.queue(
            RTM_NEWNEIGH,
            NLM_F_CREATE | NLM_F_REPLACE,
            lambda index, dst, lladdr: self._neigh(index, dst, lladdr, state),
            f"neighbour {dst}",
            key=("neigh", state),
            fields=(("u32", index), ("ip", dst), ("mac", lladdr)),
        )

    @staticmethod
    def _neigh(index: int, dst: str, lladdr: str, state: int) -> ndmsg:
        msg = ndmsg()
        msg["family"] = _family(dst)
        msg["ifindex"] = index
        msg["state"] = state
        msg["flags"] = 0
        msg["ndm_type"] = 0
        msg["attrs"] = [("NDA_DST", dst), ("NDA_LLADDR", lladdr)]
        return msg

    # -- tc ---------------------------------------------------------------------------------------
    @staticmethod
    def _tcmsg(index: int, handle: int, parent: int, info: int, attrs: list) -> tcmsg:
        msg = tcmsg()
        msg["family"] = socket.AF_UNSPEC
        msg["index"] = index
        msg["handle"] = handle
        msg["parent"] = parent
        msg["info"] = info
        msg["attrs"] = attrs
        return msg

    def add_clsact(self, index: int) -> None:
        self.queue(
            RTM_NEWQDISC,
            NLM_F_CREATE | NLM_F_EXCL,
            lambda index: self._tcmsg(index, 0xFFFF0000, TC_H_CLSACT, 0, [("TCA_KIND", "clsact")]),
            f"clsact on link {index}",
            ok=(errno.EEXIST,),
            key=("clsact",),
            fields=(("u32", index),),
        )

    def replace_bpf_filter(self, index: int, prog_fd: int, name: str, handle: int = 1, prio: int = 1) -> None:
        """Our direct-action cls_bpf filter on clsact ingress (as datapath/attach.py's); TCA_OPTIONS
        is encoded by tcmsg's plugin for kind "bpf" (pyroute2.netlink.rtnl.tcmsg.sched_bpf)."""
        self.queue(
            RTM_NEWTFILTER,
            NLM_F_CREATE | NLM_F_REPLACE,
            lambda index, prog_fd: self._bpf_filter(index, prog_fd, name, handle, prio),
            f"tc filter {name} on link {index}",
            key=("bpf-filter", name, handle, prio),
            fields=(("u32", index), ("u32", prog_fd)),
        )

    @classmethod
    def _bpf_filter(cls, index: int, prog_fd: int, name: str, handle: int, prio: int) -> tcmsg:
        info = (prio << 16) | socket.htons(ETH_P_ALL)
        opts = {
            "attrs": [
                ("TCA_BPF_FD", prog_fd),
                ("TCA_BPF_NAME", name),
                ("TCA_BPF_FLAGS", TCA_BPF_FLAG_ACT_DIRECT),
                ("TCA_BPF_CLASSID", 1),
            ]
        }
        parent = 0xFFFF0000 | TC_H_MIN_INGRESS
        return cls._tcmsg(index, handle, parent, info, [("TCA_KIND", "bpf"), ("TCA_OPTIONS", opts)])
