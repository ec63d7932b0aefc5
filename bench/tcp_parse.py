"""Parsing the TCP benchmark tools' output into figures (pure: no root, no namespaces).

- iperf3 `-J` (TCP_STREAM): bytes and Gbit/s the receiver counted, sender retransmits, iperf3's own
  cpu_utilization_percent (process CPU of the client "host" and server "remote");
- sockperf `ping-pong --tcp --full-rtt` (TCP_RR): round trips in the valid window, transactions/s,
  p50/p90/p99 (the percentile lines bench/latency.py reads for UDP);
- wrk `--latency` with `Connection: close` (TCP_CRR): requests/s, latency distribution, socket errors.
"""

from __future__ import annotations

import json
import re

from .latency import _AVG, _OBS, _PCT

_TOTAL = re.compile(r"\[Total Run\] RunTime=([\d.]+) sec; .*SentMessages=(\d+); ReceivedMessages=(\d+)")
_VALID = re.compile(r"\[Valid Duration\] RunTime=([\d.]+) sec; SentMessages=(\d+); ReceivedMessages=(\d+)")
_WRK_REQS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_WRK_TOTAL = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m),")
_WRK_PCT = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_WRK_ERR = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_TIME_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def iperf3(text: str) -> dict:
    """Figures of one `iperf3 -c ... -J` run; raises with iperf3's own error text when it failed."""
    j = json.loads(text)
    if "error" in j:
        raise RuntimeError(f"iperf3: {j['error']}")
    end = j["end"]
    rcv, snd = end["sum_received"], end["sum_sent"]
    cpu = end.get("cpu_utilization_percent", {})
    return {
        "bytes": rcv["bytes"],
        "seconds": rcv["seconds"],
        "gbit_s": round(rcv["bits_per_second"] / 1e9, 3),
        "retransmits": snd.get("retransmits"),
        "iperf3_cpu_client_pct": round(cpu.get("host_total", 0.0), 1),
        "iperf3_cpu_server_pct": round(cpu.get("remote_total", 0.0), 1),
        "mss": j["start"].get("tcp_mss_default"),
    }


def sockperf(text: str) -> dict:
    """Figures of one `sockperf ping-pong --tcp --full-rtt` run (round trips, µs)."""
    pct = {float(p): float(v) for p, v in _PCT.findall(text)}
    valid = _VALID.search(text)
    if 50.0 not in pct or not valid:
        raise RuntimeError(f"sockperf ping-pong: no statistics in its output: {text[-600:]}")
    run_s, received = float(valid.group(1)), int(valid.group(3))
    avg = _AVG.search(text)
    obs = dict(_OBS.findall(text))
    total = _TOTAL.search(text)
    return {
        "round_trips": received,
        "round_trips_total": int(total.group(3)) if total else None,  # warm-up included
        "valid_seconds": run_s,
        "tx_s": round(received / run_s, 1) if run_s else None,
        "p50_us": pct[50.0],
        "p90_us": pct.get(90.0),
        "p99_us": pct.get(99.0),
        "p99_9_us": pct.get(99.9),
        "avg_us": float(avg.group(1)) if avg else None,
        "max_us": float(obs["MAX"]) if "MAX" in obs else None,
    }


def wrk(text: str) -> dict:
    """Figures of one `wrk --latency` run; errors are counted, not hidden."""
    reqs = _WRK_REQS.search(text)
    total = _WRK_TOTAL.search(text)
    if not reqs or not total:
        raise RuntimeError(f"wrk: no summary in its output: {text[-600:]}")
    lat = {f"p{p}_us": round(float(v) * _TIME_UNIT[u] * 1e6, 1) for p, v, u in _WRK_PCT.findall(text)}
    err = _WRK_ERR.search(text)
    non2xx = _WRK_NON2XX.search(text)
    return {
        "tx_s": float(reqs.group(1)),
        "requests": int(total.group(1)),
        "seconds": round(float(total.group(2)) * _TIME_UNIT[total.group(3)], 3),
        **lat,
        "socket_errors": dict(zip(("connect", "read", "write", "timeout"), map(int, err.groups())))
        if err
        else {},
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    }


def per_gb(cpu_s: float, nbytes: int) -> float | None:
    """CPU seconds per 10^9 bytes delivered."""
    return round(cpu_s / (nbytes / 1e9), 4) if nbytes else None


def per_tx_us(cpu_s: float, transactions: float) -> float | None:
    """CPU microseconds per transaction."""
    return round(cpu_s * 1e6 / transactions, 2) if transactions else None
