"""UDP sink for "into the pod's socket" runs: python -m bench.sink --port P --seconds S.

Started inside the pod's network namespace (nsenter --net) and pinned to a CPU by its caller. It
drains one socket with recvmmsg(2) (64 datagrams per call, through ctypes: a Python recv() per
datagram would cost more than the datapath under test), naps 0.5 ms when the socket is empty,
and exits after --seconds at the latest, or on SIGTERM. The caller counts delivery from the pod's
Udp InDatagrams counter.
"""

from __future__ import annotations

import argparse
import ctypes as ct
import signal
import socket
import sys
import time

VLEN = 64
BUF = 2048
MSG_DONTWAIT = 0x40
SO_RCVBUFFORCE = 33


class IoVec(ct.Structure):
    _fields_ = [("base", ct.c_void_p), ("len", ct.c_size_t)]


class MsgHdr(ct.Structure):
    _fields_ = [
        ("name", ct.c_void_p),
        ("namelen", ct.c_uint32),
        ("iov", ct.POINTER(IoVec)),
        ("iovlen", ct.c_size_t),
        ("control", ct.c_void_p),
        ("controllen", ct.c_size_t),
        ("flags", ct.c_int),
    ]


class MMsgHdr(ct.Structure):
    _fields_ = [("hdr", MsgHdr), ("len", ct.c_uint)]


class Timespec(ct.Structure):
    _fields_ = [("sec", ct.c_long), ("nsec", ct.c_long)]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rcvbuf", type=int, default=32 << 20)
    ap.add_argument("--nap", type=float, default=0.0005, help="sleep when the queue is empty (s)")
    args = ap.parse_args()

    stop = False

    def on_term(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    libc = ct.CDLL(None, use_errno=True)
    libc.recvmmsg.argtypes = [ct.c_int, ct.POINTER(MMsgHdr), ct.c_uint, ct.c_int, ct.POINTER(Timespec)]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, args.rcvbuf)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, args.rcvbuf)
    s.bind(("0.0.0.0", args.port))
    bufs = [ct.create_string_buffer(BUF) for _ in range(VLEN)]
    iovs = (IoVec * VLEN)(*[IoVec(ct.cast(b, ct.c_void_p), BUF) for b in bufs])
    msgs = (MMsgHdr * VLEN)()
    for i in range(VLEN):
        msgs[i].hdr.iov = ct.pointer(iovs[i])
        msgs[i].hdr.iovlen = 1
    print("ready", flush=True)
    deadline = time.monotonic() + args.seconds
    got = 0
    fd = s.fileno()
    # Drain in batches and nap when the queue is empty, as a busy server does: no sleeping reader
    # means no wake-up per datagram, so the figure is the kernel's cost of delivering into the
    # socket plus the copy out, not this script's.
    while not stop and time.monotonic() < deadline:
        n = libc.recvmmsg(fd, msgs, VLEN, MSG_DONTWAIT, None)
        if n > 0:
            got += n
            if n == VLEN:
                continue
        time.sleep(args.nap)
    s.close()
    print(got, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
