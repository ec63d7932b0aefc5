"""Minimal rtnetlink over a raw socket: the per-pod netlink work of CNI ADD and DEL.

Why not pyroute2 here: importing it costs ~150 ms (the in-process CNI path pays that per call),
each request runs an asyncio loop (~1-2 ms of Python per call in the node agent), and reaching
another namespace forks a helper process. This module speaks netlink directly (stdlib only):

- A socket is bound to the network namespace it was created in, so `Rtnl(netns_fd=fd)` creates
  its socket in a short-lived thread that setns()es into the pod's namespace: no fork, and the
  calling thread never changes namespace (the node agent serves verbs from many threads).
- `batch()` sends several requests in one sendmsg and then reads one ack per request: the kernel
  runs them in order and acks each, so N requests cost one round trip.

Only what ADD/DEL need is here: veth pairs (peer created directly in the pod's namespace),
addresses, routes, neighbours, clsact + a cls_bpf filter, XDP, link lookups and deletes.
Errors raise NetlinkError with `.code` an errno number (the same attribute pyroute2's has).
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import threading

NETLINK_ROUTE = 0
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_NEWROUTE, RTM_NEWNEIGH = 20, 24, 28
RTM_NEWQDISC, RTM_NEWTFILTER = 36, 44

IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINKINFO, IFLA_IFALIAS = 1, 3, 4, 18, 20
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

_IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBi")  # family, prefixlen, flags, scope, index
_NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_TCMSG = struct.Struct("=BxxxiIII")  # family, ifindex, handle, parent, info
_NLHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_NLA = struct.Struct("=HH")


class NetlinkError(OSError):
    """A request the kernel refused; `.code` is the errno (as pyroute2's NetlinkError)."""

    def __init__(self, code: int, what: str = ""):
        super().__init__(code, f"{os.strerror(code)}{f' ({what})' if what else ''}")
        self.code = code


def _attr(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return _NLA.pack(n, kind) + payload + b"\0" * (-n & 3)


def _u32(kind: int, v: int) -> bytes:
    return _attr(kind, struct.pack("=I", v))


def _i32(kind: int, v: int) -> bytes:
    return _attr(kind, struct.pack("=i", v))


def _str(kind: int, s: str) -> bytes:
    return _attr(kind, s.encode() + b"\0")


def _mac(s: str) -> bytes:
    return bytes.fromhex(s.replace(":", ""))


def _ip(addr: str) -> tuple[int, bytes]:
    if ":" in addr:
        return socket.AF_INET6, socket.inet_pton(socket.AF_INET6, addr)
    return socket.AF_INET, socket.inet_pton(socket.AF_INET, addr)


def parse_attrs(data: bytes, off: int = 0, end: int | None = None) -> dict[int, bytes]:
    end = len(data) if end is None else end
    out: dict[int, bytes] = {}
    while off + 4 <= end:
        n, kind = _NLA.unpack_from(data, off)
        if n < 4:
            break
        out[kind & 0x3FFF] = data[off + 4 : off + n]
        off += (n + 3) & ~3
    return out


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
    """A NETLINK_ROUTE socket bound to the namespace behind `netns_fd`: made in a thread of its
    own that setns()es there and ends (a thread's namespace dies with it), so the caller's
    threads never change namespace and nothing forks."""
    box: list = []

    def make() -> None:
        try:
            setns(netns_fd)
            box.append(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE))
        except BaseException as exc:  # handed to the caller
            box.append(exc)

    t = threading.Thread(target=make, name="xdpcni-netns-socket")
    t.start()
    t.join()
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


class Link:
    __slots__ = ("index", "ifname", "mac", "alias", "kind", "flags")

    def __init__(self, index: int, flags: int, attrs: dict[int, bytes]):
        self.index = index
        self.flags = flags
        self.ifname = attrs.get(IFLA_IFNAME, b"").rstrip(b"\0").decode(errors="replace")
        mac = attrs.get(IFLA_ADDRESS)
        self.mac = ":".join(f"{x:02x}" for x in mac) if mac else None
        alias = attrs.get(IFLA_IFALIAS)
        self.alias = alias.rstrip(b"\0").decode(errors="replace") if alias else ""
        info = parse_attrs(attrs[IFLA_LINKINFO]) if IFLA_LINKINFO in attrs else {}
        kind = info.get(IFLA_INFO_KIND)
        self.kind = kind.rstrip(b"\0").decode() if kind else None


class Rtnl:
    """One rtnetlink socket in the caller's namespace, or in `netns_fd`'s."""

    def __init__(self, netns_fd: int | None = None):
        if netns_fd is None:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        else:
            self.sock = socket_in_netns(netns_fd)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((0, 0))
        self.seq = 0
        self._queued: list[tuple[int, bytes, str, tuple[int, ...]]] = []

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- transport --------------------------------------------------------------------------------
    def _msg(self, kind: int, flags: int, body: bytes) -> tuple[int, bytes]:
        self.seq += 1
        return self.seq, _NLHDR.pack(16 + len(body), kind, flags | NLM_F_REQUEST, self.seq, 0) + body

    def _recv_until(self, want: set[int]) -> dict[int, tuple[int, list[bytes]]]:
        """Read until every seq in `want` has its ack (or error / dump end): seq -> (errno, msgs)."""
        got: dict[int, tuple[int, list[bytes]]] = {}
        msgs: dict[int, list[bytes]] = {}
        while want - got.keys():
            data = self.sock.recv(1 << 20)
            off = 0
            while off + 16 <= len(data):
                n, kind, _flags, seq, _pid = _NLHDR.unpack_from(data, off)
                if n < 16:
                    break
                if seq in want:
                    if kind == NLMSG_ERROR:
                        code = -struct.unpack_from("=i", data, off + 16)[0]
                        got[seq] = (code, msgs.pop(seq, []))
                    elif kind == NLMSG_DONE:
                        got[seq] = (0, msgs.pop(seq, []))
                    else:
                        msgs.setdefault(seq, []).append(data[off + 16 : off + n])
                off += (n + 3) & ~3
        return got

    def request(self, kind: int, flags: int, body: bytes, what: str = "", ok: tuple[int, ...] = ()) -> None:
        """One request, acked; errno values in `ok` count as success."""
        self.queue(kind, flags, body, what, ok)
        self.flush()

    def queue(self, kind: int, flags: int, body: bytes, what: str = "", ok: tuple[int, ...] = ()) -> None:
        seq, msg = self._msg(kind, flags | NLM_F_ACK, body)
        self._queued.append((seq, msg, what, ok))

    def flush(self) -> None:
        """Send every queued request in one sendmsg; raise the first refusal (in order), after
        all acks are read (the kernel carries on with the next request after a failed one)."""
        queued, self._queued = self._queued, []
        if not queued:
            return
        self.sock.sendall(b"".join(m for _, m, _, _ in queued))
        got = self._recv_until({seq for seq, _, _, _ in queued})
        for seq, _, what, ok in queued:
            code = got[seq][0]
            if code and code not in ok:
                raise NetlinkError(code, what)

    def _get(self, kind: int, body: bytes, what: str) -> list[bytes]:
        seq, msg = self._msg(kind, NLM_F_ACK, body)
        self.sock.sendall(msg)
        code, msgs = self._recv_until({seq})[seq]
        if code:
            raise NetlinkError(code, what)
        return msgs

    # -- links ------------------------------------------------------------------------------------
    def get_link(self, ifname: str | None = None, index: int = 0) -> Link | None:
        """The link by name or index; None when there is none."""
        body = _IFINFO.pack(socket.AF_UNSPEC, 0, index, 0, 0) + _u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
        if ifname is not None:
            body += _str(IFLA_IFNAME, ifname)
        try:
            msgs = self._get(RTM_GETLINK, body, f"link {ifname or index}")
        except NetlinkError as exc:
            if exc.code in (errno.ENODEV, errno.ENOENT):
                return None
            raise
        for m in msgs:
            _fam, _type, idx, flags, _change = _IFINFO.unpack_from(m)
            return Link(idx, flags, parse_attrs(m, _IFINFO.size))
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
    ) -> None:
        """A veth pair whose peer is created directly in the namespace behind `peer_netns_fd`
        (no create-then-move), both ends with the given MACs and MTU, the host end up (`up`)
        and marked with `alias` (queued: the next flush sends it). The peer starts down: the
        kernel refuses to open it before the pair is linked (ENOTCONN); set_up() it from its
        namespace."""
        flags = IFF_UP if up else 0
        peer = (
            _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
            + _str(IFLA_IFNAME, peer_ifname)
            + _u32(IFLA_MTU, mtu)
            + _attr(IFLA_ADDRESS, _mac(peer_mac))
            + _u32(IFLA_NET_NS_FD, peer_netns_fd)
        )
        linkinfo = _str(IFLA_INFO_KIND, "veth") + _attr(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer))
        body = (
            _IFINFO.pack(socket.AF_UNSPEC, 0, 0, flags, flags)
            + _str(IFLA_IFNAME, host_ifname)
            + _u32(IFLA_MTU, mtu)
            + _attr(IFLA_ADDRESS, _mac(host_mac))
            + _attr(IFLA_LINKINFO, linkinfo)
        )
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"create veth {host_ifname}")
        if alias:
            self.queue(
                RTM_SETLINK,
                0,
                _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
                + _str(IFLA_IFNAME, host_ifname)
                + _str(IFLA_IFALIAS, alias),
                f"ifalias of {host_ifname}",
            )

    def set_up(self, index: int) -> None:
        self.queue(
            RTM_NEWLINK, 0, _IFINFO.pack(socket.AF_UNSPEC, 0, index, IFF_UP, IFF_UP), f"link {index} up"
        )

    def delete_link(self, index: int) -> bool:
        """False when it is gone already."""
        try:
            self.request(
                RTM_DELLINK, 0, _IFINFO.pack(socket.AF_UNSPEC, 0, index, 0, 0), f"delete link {index}"
            )
        except NetlinkError as exc:
            if exc.code in (errno.ENODEV, errno.ENOENT):
                return False
            raise
        return True

    def set_xdp(self, index: int, prog_fd: int, flags: int) -> None:
        xdp = _i32(IFLA_XDP_FD, prog_fd) + _u32(IFLA_XDP_FLAGS, flags)
        self.queue(
            RTM_SETLINK,
            0,
            _IFINFO.pack(socket.AF_UNSPEC, 0, index, 0, 0) + _attr(IFLA_XDP, xdp),
            f"XDP on link {index}",
        )

    # -- addresses, routes, neighbours (queued: flush() sends them) --------------------------------
    def add_addr(self, index: int, addr: str, prefixlen: int, flags: int = 0) -> None:
        fam, raw = _ip(addr)
        body = _IFADDR.pack(fam, prefixlen, flags & 0xFF, RT_SCOPE_UNIVERSE, index)
        body += _attr(IFA_LOCAL, raw) + _attr(IFA_ADDRESS, raw)
        if flags > 0xFF:
            body += _u32(IFA_FLAGS, flags)
        self.queue(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body, f"address {addr}/{prefixlen}")

    def replace_route(
        self, dst: str, dst_len: int, oif: int, gateway: str | None = None, scope: int = RT_SCOPE_UNIVERSE
    ) -> None:
        fam, raw = _ip(dst)
        body = _RTMSG.pack(fam, dst_len, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, scope, RTN_UNICAST, 0)
        if dst_len:
            body += _attr(RTA_DST, raw)
        body += _u32(RTA_OIF, oif)
        if gateway:
            body += _attr(RTA_GATEWAY, _ip(gateway)[1])
        self.queue(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, body, f"route {dst}/{dst_len}")

    def replace_neigh(self, index: int, dst: str, lladdr: str, state: int = NUD_PERMANENT) -> None:
        fam, raw = _ip(dst)
        body = _NDMSG.pack(fam, index, state, 0, 0) + _attr(NDA_DST, raw) + _attr(NDA_LLADDR, _mac(lladdr))
        self.queue(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, body, f"neighbour {dst}")

    # -- tc ---------------------------------------------------------------------------------------
    def add_clsact(self, index: int) -> None:
        body = _TCMSG.pack(socket.AF_UNSPEC, index, 0xFFFF0000, TC_H_CLSACT, 0) + _str(TCA_KIND, "clsact")
        self.queue(
            RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL, body, f"clsact on link {index}", ok=(errno.EEXIST,)
        )

    def replace_bpf_filter(self, index: int, prog_fd: int, name: str, handle: int = 1, prio: int = 1) -> None:
        """Our direct-action cls_bpf filter on clsact ingress (as datapath/attach.py's)."""
        info = (prio << 16) | socket.htons(ETH_P_ALL)
        opts = (
            _u32(TCA_BPF_FD, prog_fd)
            + _str(TCA_BPF_NAME, name)
            + _u32(TCA_BPF_FLAGS, TCA_BPF_FLAG_ACT_DIRECT)
            + _u32(TCA_BPF_CLASSID, 1)
        )
        parent = 0xFFFF0000 | TC_H_MIN_INGRESS
        body = _TCMSG.pack(socket.AF_UNSPEC, index, handle, parent, info) + _str(TCA_KIND, "bpf")
        body += _attr(TCA_OPTIONS, opts)
        self.queue(RTM_NEWTFILTER, NLM_F_CREATE | NLM_F_REPLACE, body, f"tc filter {name} on link {index}")
