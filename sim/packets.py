"""Send and capture raw frames inside a namespace; scapy builds and dissects them.

AF_PACKET sockets are created inside the target namespace and then used from ours (a socket
stays bound to the namespace it was made in), so no subprocess is needed per packet.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from contextlib import contextmanager

from datapath.netns import entered

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def packet_socket(ns: str, ifname: str) -> socket.socket:
    with entered(ns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind((ifname, 0))
    return s


def send_frames(ns: str, ifname: str, frames, count: int = 1) -> None:
    """Transmit each frame `count` times from `ifname` in namespace `ns`."""
    s = packet_socket(ns, ifname)
    try:
        for frame in frames:
            raw = bytes(frame)
            for _ in range(count):
                s.send(raw)
    finally:
        s.close()


class Capture:
    """Frames received on an interface (outgoing ones are skipped)."""

    def __init__(self, ns: str, ifname: str):
        self.ns, self.ifname = ns, ifname
        self.sock = packet_socket(ns, ifname)
        self.sock.setblocking(False)
        self.frames: list[bytes] = []

    def read(self, timeout: float = 0.5, want: int | None = None) -> list[bytes]:
        """Collect frames until `timeout` passes with nothing new, or `want` frames arrived."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or (want is not None and len(self.frames) >= want):
                break
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                break
            while True:
                try:
                    data, addr = self.sock.recvfrom(65535)
                except BlockingIOError:
                    break
                if addr[2] != PACKET_OUTGOING:
                    self.frames.append(data)
                    deadline = max(deadline, time.monotonic() + 0.2)
        return self.frames

    def close(self) -> None:
        self.sock.close()


@contextmanager
def capture(ns: str, ifname: str):
    cap = Capture(ns, ifname)
    try:
        yield cap
    finally:
        cap.close()


def snmp(ns: str) -> dict[str, int]:
    """/proc/net/snmp and snmp6 counters of namespace `ns` (files are per namespace)."""
    out: dict[str, int] = {}
    with entered(ns):
        with open("/proc/thread-self/net/snmp") as fh:
            lines = fh.read().splitlines()
        with open("/proc/thread-self/net/snmp6") as fh:
            lines6 = fh.read().splitlines()
    for head, vals in zip(lines[::2], lines[1::2]):
        prefix = head.split(":")[0]
        for n, v in zip(head.split()[1:], vals.split()[1:]):
            out[f"{prefix}{n}"] = int(v)
    for line in lines6:
        parts = line.split()
        if len(parts) == 2:
            out[parts[0]] = int(parts[1])
    return out


def forwarded(ns: str) -> int:
    """Packets the kernel forwarded in `ns` (IPv4 + IPv6): must not move for fast-path traffic."""
    c = snmp(ns)
    return c["IpForwDatagrams"] + c["Ip6OutForwDatagrams"]


def udp_exchange(
    src_ns: str,
    dst_ns: str,
    dst_ip: str,
    n: int = 10,
    port: int = 40000,
    payload: bytes = b"xdpcni",
    timeout: float = 2.0,
) -> int:
    """Send n datagrams from a socket in src_ns to dst_ip:port where a socket in dst_ns listens;
    returns how many arrived (real reachability through both kernels and the datapath)."""
    fam = socket.AF_INET6 if ":" in dst_ip else socket.AF_INET
    with entered(dst_ns):
        rx = socket.socket(fam, socket.SOCK_DGRAM)
        rx.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", port))
    with entered(src_ns):
        tx = socket.socket(fam, socket.SOCK_DGRAM)
    got = 0
    try:
        rx.settimeout(timeout)
        for i in range(n):
            tx.sendto(payload + i.to_bytes(4, "big"), (dst_ip, port))
        deadline = time.monotonic() + timeout
        while got < n and time.monotonic() < deadline:
            try:
                rx.recv(2048)
                got += 1
            except TimeoutError:
                break
    finally:
        rx.close()
        tx.close()
    return got


def tcp_bulk(
    src_ns: str, dst_ns: str, dst: str, nbytes: int, port: int, timeout: float = 10.0, established=None
) -> int:
    """One TCP connection from a socket in src_ns to dst:port (a sink in dst_ns) carrying `nbytes`,
    closed in both directions (the client waits for the peer's FIN); returns the bytes received.
    `established`: called once the connection is up and its first byte sent, before the rest (a
    test waits there for what the node does with an established flow)."""
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with entered(dst_ns):
        srv = socket.socket(fam, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", port))
        srv.listen(1)
    srv.settimeout(timeout)
    got = [0]

    def sink():
        conn, _ = srv.accept()
        conn.settimeout(timeout)
        with conn:
            while b := conn.recv(1 << 16):
                got[0] += len(b)

    t = threading.Thread(target=sink, daemon=True)
    t.start()
    with entered(src_ns):
        cli = socket.socket(fam, socket.SOCK_STREAM)
    try:
        cli.settimeout(timeout)
        cli.connect((dst, port))
        if established is not None and nbytes:
            cli.sendall(b"b")
            nbytes -= 1
            established()
        cli.sendall(b"b" * nbytes)
        cli.shutdown(socket.SHUT_WR)
        cli.recv(1)  # the peer's FIN: the close completed both ways
    finally:
        cli.close()
    t.join(timeout + 5)
    srv.close()
    return got[0]
