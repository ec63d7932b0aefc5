"""Mark ESTABLISHED+ASSURED TCP conntrack entries "be liberal" (docs/design.md "Netfilter and
conntrack"): what the kernel's flowtable does for the flows it offloads, done over ctnetlink for
the flows the fast path takes, so that the node-wide nf_conntrack_tcp_be_liberal can stay 0.

Sets IP_CT_TCP_FLAG_BE_LIBERAL (0x08) in ct->proto.tcp.seen[0].flags and
seen[1].flags of existing conntrack entries through ctnetlink (pyroute2
NFCTSocket), the same thing nft flow offload does for offloaded flows, so
that a TCP flow whose packets later bypass conntrack (BPF fast path) is not
declared INVALID ("ACK/SEQ over upper bound") when its FIN/ACKs go through
the stack again.

Netlink message used by mark_liberal() (IPCTNL_MSG_CT_NEW update,
NLM_F_REQUEST|NLM_F_ACK, no NLM_F_CREATE/NLM_F_EXCL):

    nfgenmsg{family=AF_INET|AF_INET6, version=0, res_id=0}
    CTA_TUPLE_ORIG
        CTA_TUPLE_IP    {CTA_IP_V4_SRC, CTA_IP_V4_DST}   (or V6)
        CTA_TUPLE_PROTO {CTA_PROTO_NUM=6, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT}
    [CTA_ZONE be16]     only if the entry is in a non-default zone
    CTA_PROTOINFO
        CTA_PROTOINFO_TCP
            CTA_PROTOINFO_TCP_FLAGS_ORIGINAL  {flags=0x08, mask=0x08}
            CTA_PROTOINFO_TCP_FLAGS_REPLY     {flags=0x08, mask=0x08}

No CTA_PROTOINFO_TCP_STATE / CTA_STATUS / CTA_TIMEOUT / CTA_MARK is sent, so
the kernel (nlattr_to_tcp: seen[d].flags = (flags & ~mask) | (f & mask))
changes nothing but the liberal bit.

Public API
    mark_liberal(tuple_orig, zone=None, conn=None, netns=None, verify=False) -> bool
    get_entry(tuple_orig, zone=None, conn=None, netns=None) -> nfct_msg | None
    tcp_flags(entry) -> (orig_flags, reply_flags) | None
    is_eligible(entry) / is_liberal(entry)
    class CTConn            -- per-thread pair of pyroute2 NFCTSockets
    class LiberalMarker     -- event-driven marker (start/stop/sweep/stats)
    attach_event_filter(sock) -- cBPF ctnetlink event pre-filter
"""

import errno
import logging
import select
import socket
import threading
import time

from pyroute2 import NFCTSocket
from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_CTNETLINK
from pyroute2.netlink.nfnetlink.nfctsocket import (
    FILTER_FLAG_CTA_PROTO_NUM,
    IP_CT_TCP_FLAG_BE_LIBERAL,
    IPCTNL_MSG_CT_GET,
    IPCTNL_MSG_CT_NEW,
    IPS_ASSURED,
    TCP_CONNTRACK_ESTABLISHED,
    NFCTAttrTuple,
    nfct_msg,
    terminate_error_msg,
)

log = logging.getLogger("ctliberal")

BE_LIBERAL = IP_CT_TCP_FLAG_BE_LIBERAL  # 0x08
NFNLGRP_CONNTRACK_NEW = 1
NFNLGRP_CONNTRACK_UPDATE = 2
SOL_NETLINK = 270
MSG_CT_NEW = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW


# ---------------------------------------------------------------- helpers
def _tuple(t, family=None):
    """Accept an NFCTAttrTuple or (saddr, daddr, sport, dport)."""
    if isinstance(t, NFCTAttrTuple):
        return t
    saddr, daddr, sport, dport = t
    if family is None:
        family = socket.AF_INET6 if ":" in saddr else socket.AF_INET
    return NFCTAttrTuple(
        family=family, saddr=saddr, daddr=daddr, proto=socket.IPPROTO_TCP, sport=int(sport), dport=int(dport)
    )


def tcp_flags(entry):
    """(seen[0].flags, seen[1].flags) from a ctnetlink entry/event, or None
    if the message carries no CTA_PROTOINFO_TCP flags."""
    pi = entry.get_attr("CTA_PROTOINFO")
    if pi is None:
        return None
    tcp = pi.get_attr("CTA_PROTOINFO_TCP")
    if tcp is None:
        return None
    fo = tcp.get_attr("CTA_PROTOINFO_TCP_FLAGS_ORIGINAL")
    fr = tcp.get_attr("CTA_PROTOINFO_TCP_FLAGS_REPLY")
    if fo is None or fr is None:
        return None
    return fo[0], fr[0]


def tcp_state(entry):
    pi = entry.get_attr("CTA_PROTOINFO")
    tcp = pi.get_attr("CTA_PROTOINFO_TCP") if pi is not None else None
    return tcp.get_attr("CTA_PROTOINFO_TCP_STATE") if tcp is not None else None


def l4proto(entry):
    t = entry.get_attr("CTA_TUPLE_ORIG")
    p = t.get_attr("CTA_TUPLE_PROTO") if t is not None else None
    return p.get_attr("CTA_PROTO_NUM") if p is not None else None


def is_liberal(entry):
    f = tcp_flags(entry)
    return f is not None and bool(f[0] & f[1] & BE_LIBERAL)


def is_eligible(entry):
    """TCP, ASSURED, state ESTABLISHED, not yet liberal both ways.
    Returns None if undecidable (event without protoinfo)."""
    if l4proto(entry) != socket.IPPROTO_TCP:
        return False
    if not (entry.get_attr("CTA_STATUS") or 0) & IPS_ASSURED:
        return False
    st = tcp_state(entry)
    if st is None or tcp_flags(entry) is None:
        return None
    return st == TCP_CONNTRACK_ESTABLISHED and not is_liberal(entry)


def entry_tuple(entry):
    return NFCTAttrTuple.from_netlink(entry["nfgen_family"], entry.get_attr("CTA_TUPLE_ORIG"))


# ---------------------------------------------------------------- sockets
class CTConn:
    """Request sockets (one NFCTSocket per L3 family, since NFCTSocket
    stamps its own nfgen_family on every request).

    NOTE pyroute2 0.9 keeps the real socket in threading.local: use a CTConn
    only from the thread that created it.  With netns=NAME pyroute2 opens
    the socket inside that netns (forked helper + fd passing); with
    netns=None it is opened in the *calling thread's* netns."""

    def __init__(self, netns=None):
        self.netns = netns
        self._socks = {}

    def sock(self, family):
        s = self._socks.get(family)
        if s is None:
            s = NFCTSocket(nfgen_family=family, netns=self.netns)
            self._socks[family] = s
        return s

    def close(self):
        for s in self._socks.values():
            try:
                s.close()
            except Exception:
                pass
        self._socks.clear()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def _with_conn(conn, netns):
    return (conn, False) if conn is not None else (CTConn(netns), True)


def build_mark_msg(tup, zone=None):
    msg = nfct_msg.create_from(
        tuple_orig=tup,
        zone=zone if zone else None,
        protoinfo={
            "attrs": [
                [
                    "CTA_PROTOINFO_TCP",
                    {
                        "attrs": [
                            ["CTA_PROTOINFO_TCP_FLAGS_ORIGINAL", {"value": (BE_LIBERAL, BE_LIBERAL)}],
                            ["CTA_PROTOINFO_TCP_FLAGS_REPLY", {"value": (BE_LIBERAL, BE_LIBERAL)}],
                        ]
                    },
                ]
            ]
        },
    )
    return msg


def get_entry(tuple_orig, zone=None, conn=None, netns=None):
    tup = _tuple(tuple_orig)
    conn, own = _with_conn(conn, netns)
    try:
        msg = nfct_msg.create_from(tuple_orig=tup, zone=zone if zone else None)
        try:
            res = conn.sock(tup.family).request(
                msg, IPCTNL_MSG_CT_GET, msg_flags=NLM_F_REQUEST | NLM_F_ACK, terminate=terminate_error_msg
            )
        except NetlinkError as e:
            if e.code == errno.ENOENT:
                return None
            raise
        for m in res:
            if m.get_attr("CTA_TUPLE_ORIG") is not None:
                return m
        return None
    finally:
        if own:
            conn.close()


def mark_liberal(tuple_orig, zone=None, conn=None, netns=None, verify=False):
    """Set BE_LIBERAL in both directions of one existing TCP conntrack entry.

    tuple_orig: NFCTAttrTuple (proto must be TCP) or (saddr, daddr, sport,
    dport).  Returns True if the kernel ACKed the update (and, with
    verify=True, a read-back shows 0x08 in both directions); False if the
    entry does not exist (ENOENT) or is not TCP.  Other errors raise."""
    tup = _tuple(tuple_orig)
    if tup.proto != socket.IPPROTO_TCP:
        # the kernel silently ACKs protoinfo on non-TCP entries (no-op)
        return False
    conn, own = _with_conn(conn, netns)
    try:
        try:
            conn.sock(tup.family).request(
                build_mark_msg(tup, zone),
                IPCTNL_MSG_CT_NEW,
                msg_flags=NLM_F_REQUEST | NLM_F_ACK,
                terminate=terminate_error_msg,
            )
        except NetlinkError as e:
            if e.code == errno.ENOENT:
                return False
            raise
        if verify:
            e = get_entry(tup, zone=zone, conn=conn)
            return e is not None and is_liberal(e)
        return True
    finally:
        if own:
            conn.close()


def dump_tcp(conn, family, assured_only=True):
    """Dump TCP entries of one family with kernel-side filtering
    (CTA_FILTER proto=TCP, CTA_STATUS/CTA_STATUS_MASK=ASSURED; kernel
    >= 5.15). Falls back to an unfiltered dump on EINVAL/EOPNOTSUPP."""
    kw = dict(
        tuple_orig=NFCTAttrTuple(family=family, proto=socket.IPPROTO_TCP),
        filter={
            "attrs": [["CTA_FILTER_ORIG_FLAGS", FILTER_FLAG_CTA_PROTO_NUM], ["CTA_FILTER_REPLY_FLAGS", 0]]
        },
    )
    if assured_only:
        kw.update(status=IPS_ASSURED, status_mask=IPS_ASSURED)
    s = conn.sock(family)
    try:
        for m in s.request(
            nfct_msg.create_from(**kw), IPCTNL_MSG_CT_GET, msg_flags=NLM_F_REQUEST | NLM_F_DUMP
        ):
            yield m
    except NetlinkError as e:
        if e.code not in (errno.EINVAL, errno.EOPNOTSUPP):
            raise
        log.warning("filtered dump unsupported (%s), full dump", e)
        for m in s.request(nfct_msg(), IPCTNL_MSG_CT_GET, msg_flags=NLM_F_REQUEST | NLM_F_DUMP):
            if l4proto(m) == socket.IPPROTO_TCP:
                yield m


# ---------------------------------------------------------------- cBPF
# Classic BPF socket filter for the events socket (same technique as
# conntrackd / libnetfilter_conntrack nfct_filter): SKF_AD_NLATTR[_NEST]
# walk the ctnetlink attributes in-kernel, so only events that can need a
# mark reach userspace: TCP && ASSURED && (state == ESTABLISHED && !liberal
# both ways, or no protoinfo/flags in the event -> userspace GETs).
SO_ATTACH_FILTER = 26
_SKF_NLATTR = (-0x1000 + 12) & 0xFFFFFFFF
_SKF_NLATTR_NEST = (-0x1000 + 16) & 0xFFFFFFFF
_NFMSG = 20  # nlmsghdr + nfgenmsg


def _cbpf_program():
    LD_IMM, LDX_IMM, LD_ABS_W, LD_IND_W, LD_IND_B = 0x00, 0x01, 0x20, 0x40, 0x50
    LD_MEM, ST, TAX, RET_K = 0x60, 0x02, 0x07, 0x06
    JEQ, JSET = 0x15, 0x45
    prog, fix = [], []  # fix: (index, jt_label, jf_label)

    def op(code, k=0, jt=None, jf=None):
        if jt is not None or jf is not None:
            fix.append((len(prog), jt, jf))
        prog.append([code, 0, 0, k])

    def find(x, nest):
        op(LDX_IMM, x)
        op(LD_ABS_W, _SKF_NLATTR_NEST if nest else _SKF_NLATTR)

    # TCP ?
    op(LD_IMM, _NFMSG)
    find(1, False)
    op(JEQ, 0, "drop", None)  # TUPLE_ORIG
    find(2, True)
    op(JEQ, 0, "drop", None)  # TUPLE_PROTO
    find(1, True)
    op(JEQ, 0, "drop", None)  # PROTO_NUM
    op(TAX)
    op(LD_IND_B, 4)
    op(JEQ, 6, None, "drop")
    # ASSURED ?
    op(LD_IMM, _NFMSG)
    find(3, False)
    op(JEQ, 0, "drop", None)  # STATUS
    op(TAX)
    op(LD_IND_W, 4)
    op(JSET, IPS_ASSURED, None, "drop")
    # protoinfo (absent -> accept, userspace decides with a GET)
    op(LD_IMM, _NFMSG)
    find(4, False)
    op(JEQ, 0, "accept", None)
    find(1, True)
    op(JEQ, 0, "accept", None)  # PROTOINFO_TCP
    op(ST, 0)
    find(1, True)
    op(JEQ, 0, "accept", None)  # TCP_STATE
    op(TAX)
    op(LD_IND_B, 4)
    op(JEQ, TCP_CONNTRACK_ESTABLISHED, None, "drop")
    for attr in (4, 5):  # FLAGS_*
        op(LD_MEM, 0)
        find(attr, True)
        op(JEQ, 0, "accept", None)
        op(TAX)
        op(LD_IND_B, 4)
        op(JSET, BE_LIBERAL, None, "accept")
    op(RET_K, 0)  # liberal both ways: drop
    labels = {"drop": len(prog)}
    op(RET_K, 0)
    labels["accept"] = len(prog)
    op(RET_K, 0xFFFFFFFF)
    for i, jt, jf in fix:
        if jt:
            prog[i][1] = labels[jt] - i - 1
        if jf:
            prog[i][2] = labels[jf] - i - 1
    return prog


def attach_event_filter(sock):
    import ctypes
    import struct

    prog = _cbpf_program()
    buf = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *ins) for ins in prog))
    fprog = struct.pack("HL", len(prog), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    return len(prog)


# ---------------------------------------------------------------- marker
class LiberalMarker:
    """Listen to ctnetlink NEW/UPDATE events in one netns and mark every TCP
    entry that becomes ASSURED + ESTABLISHED liberal in both directions.

        m = LiberalMarker(netns=None, on_mark=cb)   # netns=None: caller's
        m.start()         # thread: open sockets, subscribe, sweep(), loop
        ...
        m.stop()          # sets the Event, joins (bounded)
        m.stats           # counters

    on_mark(dict) is called after each successful mark with
    {'tuple','id','t_event','t_marked','source'} (time.monotonic()).
    After ENOBUFS (events lost) it resyncs with sweep().
    """

    def __init__(
        self,
        netns=None,
        families=(socket.AF_INET, socket.AF_INET6),
        rcvbuf=4 << 20,
        poll_interval=0.2,
        on_mark=None,
        sweep_on_start=True,
        kernel_filter=True,
        min_sweep_interval=0.1,
        accept=None,
    ):
        # accept(entry) -> bool: only entries it accepts are marked (the agent passes "a local
        # endpoint's untranslated flow", so flows the fast path never takes keep full tracking)
        self.accept = accept
        self.kernel_filter = kernel_filter
        self.min_sweep_interval = min_sweep_interval
        self.netns = netns
        self.families = families
        self.rcvbuf = rcvbuf
        self.poll_interval = poll_interval
        self.on_mark = on_mark
        self.sweep_on_start = sweep_on_start
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = None
        self._error = None
        self._lock = threading.Lock()
        self.stats = dict(
            events=0,
            tcp_events=0,
            marked=0,
            already_liberal=0,
            not_eligible=0,
            gets=0,
            enoent=0,
            errors=0,
            enobufs=0,
            sweeps=0,
            sweep_marked=0,
            not_accepted=0,
        )

    # -- lifecycle
    def start(self, timeout=10.0):
        self._thread = threading.Thread(target=self._run, name="ctliberal", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise TimeoutError("marker did not start")
        if self._error:
            raise self._error
        return self

    def stop(self, timeout=5.0):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def run_forever(self):
        """Run in the calling thread until stop() is called."""
        self._run()
        if self._error:
            raise self._error

    # -- sweep
    def sweep(self, conn=None):
        """Dump ASSURED TCP entries and mark every eligible one.
        Returns the number marked. Usable from any thread (opens its own
        sockets in self.netns unless conn is given)."""
        conn, own = _with_conn(conn, self.netns)
        n = 0
        try:
            todo = []
            for fam in self.families:
                for e in dump_tcp(conn, fam):
                    if is_eligible(e) and self._accepted(e):
                        todo.append((entry_tuple(e), e.get_attr("CTA_ZONE"), e.get_attr("CTA_ID")))
            # mark after the dump: do not send requests mid-dump
            for tup, zone, ctid in todo:
                if self._mark(conn, tup, zone, ctid, time.monotonic(), "sweep"):
                    n += 1
        finally:
            if own:
                conn.close()
        with self._lock:
            self.stats["sweeps"] += 1
            self.stats["sweep_marked"] += n
        return n

    # -- internals
    def _accepted(self, entry) -> bool:
        if self.accept is None:
            return True
        try:
            return bool(self.accept(entry))
        except Exception:
            log.exception("accept callback")
            return False

    def _bump(self, k, v=1):
        with self._lock:
            self.stats[k] += v

    def _mark(self, conn, tup, zone, ctid, t_event, source):
        try:
            ok = mark_liberal(tup, zone=zone, conn=conn)
        except NetlinkError as e:
            log.warning("mark %s failed: %s", tup, e)
            self._bump("errors")
            return False
        if not ok:
            self._bump("enoent")
            return False
        self._bump("marked")
        if self.on_mark is not None:
            try:
                self.on_mark(
                    {
                        "tuple": tup,
                        "id": ctid,
                        "t_event": t_event,
                        "t_marked": time.monotonic(),
                        "source": source,
                    }
                )
            except Exception:
                log.exception("on_mark callback")
        return True

    def _handle(self, conn, m, t_event):
        self._bump("events")
        if m["header"]["type"] != MSG_CT_NEW:
            return
        if l4proto(m) != socket.IPPROTO_TCP:
            return
        self._bump("tcp_events")
        el = is_eligible(m)
        zone = m.get_attr("CTA_ZONE")
        if el is None:
            # ASSURED event without protoinfo: look the entry up
            self._bump("gets")
            try:
                m = get_entry(entry_tuple(m), zone=zone, conn=conn)
            except NetlinkError:
                self._bump("errors")
                return
            if m is None:
                self._bump("enoent")
                return
            el = is_eligible(m)
        if el and not self._accepted(m):
            self._bump("not_accepted")
            return
        if not el:
            self._bump("already_liberal" if is_liberal(m) else "not_eligible")
            return
        self._mark(conn, entry_tuple(m), zone, m.get_attr("CTA_ID"), t_event, "event")

    def _run(self):
        ev = conn = None
        try:
            conn = CTConn(self.netns)
            # events socket: pyroute2 NFCTSocket, used raw (recv + marshal
            # parse) so that ENOBUFS surfaces as OSError and the loop is
            # stoppable; nfgen_family is irrelevant for multicast.
            ev = NFCTSocket(netns=self.netns)
            a = ev.asyncore
            raw = a.socket  # created here (thread-local), in self.netns
            try:
                raw.setsockopt(socket.SOL_SOCKET, 33, self.rcvbuf)  # RCVBUFFORCE
            except OSError:
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
            # must be bound: an unbound netlink socket has portid 0, and
            # netlink_broadcast() skips sockets whose portid equals the
            # sender's (0 for kernel-originated ct events) -> no events.
            raw.bind((0, 0))
            a.add_membership(NFNLGRP_CONNTRACK_NEW)
            a.add_membership(NFNLGRP_CONNTRACK_UPDATE)
            if self.kernel_filter:
                attach_event_filter(raw)
            raw.setblocking(False)
            marshal = a.marshal
            if self.sweep_on_start:
                self.sweep(conn)
            last_sweep = time.monotonic()
            need_sweep = False
            self._ready.set()
            while not self._stop.is_set():
                timeout = self.poll_interval
                if need_sweep:
                    timeout = max(0.0, min(timeout, last_sweep + self.min_sweep_interval - time.monotonic()))
                r, _, _ = select.select([raw], [], [], timeout)
                drained = False
                for _ in range(256):  # bounded batch, then re-check stop
                    try:
                        data = raw.recv(65536)
                    except BlockingIOError:
                        drained = True
                        break
                    except OSError as e:
                        if e.errno != errno.ENOBUFS:
                            raise
                        # events were lost. The kernel reports ENOBUFS once
                        # and then drops silently (NETLINK_S_CONGESTED) until
                        # the queue is read empty: drain first, then sweep.
                        self._bump("enobufs")
                        need_sweep = True
                        continue
                    t = time.monotonic()
                    for m in marshal.parse(data):
                        self._handle(conn, m, t)
                if need_sweep and drained and time.monotonic() - last_sweep >= self.min_sweep_interval:
                    need_sweep = False
                    self.sweep(conn)
                    last_sweep = time.monotonic()
        except Exception as e:  # surfaced by start()/run_forever()
            log.exception("marker failed")
            self._error = e
        finally:
            self._ready.set()
            for s in (ev, conn):
                if s is not None:
                    try:
                        s.close()
                    except Exception:
                        pass
