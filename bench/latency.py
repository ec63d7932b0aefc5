"""UDP request/response latency between the wire host and the pod: sockperf ping-pong.

Two variants: blocking sockets, and --nonblocked sockets on both ends (busy polling). The server
runs in the pod namespace pinned to CPU 1, the client in the wire namespace pinned to
CPU 0 (both started by PID and stopped by PID). Figures are full round trips (--full-rtt) in
microseconds: wire -> node NIC -> pod and back (pod -> host veth -> node NIC -> wire).
"""

from __future__ import annotations

import re
import subprocess
import time

from sim import processes

from .topo import BenchNode

PORT = 11111
CLIENT_CPU = 0
SERVER_CPU = 1
_PCT = re.compile(r"--->\s+percentile\s+([\d.]+)\s+=\s+([\d.]+)")
_AVG = re.compile(r"avg-rtt=([\d.]+)")
_OBS = re.compile(r"--->\s+<(MAX|MIN)> observation\s+=\s+([\d.]+)")
_COUNT = re.compile(r"Summary: Round trip is [\d.]+ usec|SentMessages=(\d+)")


def sockperf_run(bn: BenchNode, mode: str, seconds: float, msg_size: int = 64, busy: bool = False) -> dict:
    """busy=False: blocking sockets (every message wakes a sleeping process: scheduler and wake-up
    latency dominate); busy=True: --nonblocked on both ends (the processes spin on their sockets, so
    the round trip is mostly the two network paths)."""
    bn.configure(mode)
    extra = ["--nonblocked"] if busy else []
    server = subprocess.Popen(
        [
            "nsenter",
            f"--net=/var/run/netns/{bn.pod.ns}",
            "taskset",
            "-c",
            str(SERVER_CPU),
            "sockperf",
            "server",
            "-i",
            bn.pod.ip4,
            "-p",
            str(PORT),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        if server.poll() is not None:
            raise RuntimeError("sockperf server exited early")
        proc = subprocess.run(
            [
                "nsenter",
                f"--net=/var/run/netns/{bn.wire}",
                "taskset",
                "-c",
                str(CLIENT_CPU),
                "sockperf",
                "ping-pong",
                "-i",
                bn.pod.ip4,
                "-p",
                str(PORT),
                "-t",
                str(int(max(1, seconds))),
                "-m",
                str(msg_size),
                "--full-rtt",
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 30,
            check=False,
        )
    finally:
        processes.stop(server, grace=5)
    out = proc.stdout + proc.stderr
    pct = {float(p): float(v) for p, v in _PCT.findall(out)}
    if proc.returncode != 0 or 50.0 not in pct:
        raise RuntimeError(f"sockperf ping-pong failed (rc {proc.returncode}): {out[-800:]}")
    avg = _AVG.search(out)
    obs = dict(_OBS.findall(out))
    sent = re.search(r"SentMessages=(\d+)", out)
    recv = re.search(r"ReceivedMessages=(\d+)", out)
    return {
        "mode": mode,
        "sockets": "busy-polling" if busy else "blocking",
        "seconds": seconds,
        "msg_size": msg_size,
        "p50_us": pct[50.0],
        "p99_us": pct[99.0],
        "p99_9_us": pct.get(99.9),
        "avg_us": float(avg.group(1)) if avg else None,
        "min_us": float(obs["MIN"]) if "MIN" in obs else None,
        "max_us": float(obs["MAX"]) if "MAX" in obs else None,
        "sent": int(sent.group(1)) if sent else None,
        "received": int(recv.group(1)) if recv else None,
    }
