"""CPU time and per-namespace counters sampled around a measurement window."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from sim.packets import snmp

HZ = os.sysconf("SC_CLK_TCK")


@dataclass
class CpuSample:
    t: float
    busy: dict[int, float]  # seconds spent not idle (user+nice+system+irq+softirq), per CPU
    steal: dict[int, float]  # seconds the hypervisor took away, per CPU
    softirq: dict[int, float]


def cpu_sample() -> CpuSample:
    busy, steal, soft = {}, {}, {}
    with open("/proc/stat") as fh:
        for line in fh:
            if not line.startswith("cpu") or line.startswith("cpu "):
                continue
            f = line.split()
            cpu = int(f[0][3:])
            user, nice, system, idle, iowait, irq, softirq, st = (int(x) for x in f[1:9])
            busy[cpu] = (user + nice + system + irq + softirq) / HZ
            steal[cpu] = st / HZ
            soft[cpu] = softirq / HZ
    return CpuSample(time.monotonic(), busy, steal, soft)


def cpu_delta(a: CpuSample, b: CpuSample) -> dict:
    return {
        "wall_s": b.t - a.t,
        "busy_s": {c: round(b.busy[c] - a.busy[c], 3) for c in a.busy},
        "softirq_s": {c: round(b.softirq[c] - a.softirq[c], 3) for c in a.softirq},
        "steal_s": {c: round(b.steal[c] - a.steal[c], 3) for c in a.steal},
    }


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (and its reaped children), seconds; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            rest = fh.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # fields after the comm: state(0) ... utime(11) stime(12) cutime(13) cstime(14)
    return sum(int(x) for x in rest[11:15]) / HZ


def udp_counters(ns: str) -> dict[str, int]:
    c = snmp(ns)
    return {
        "in": c["UdpInDatagrams"],
        "rcvbuf_errors": c["UdpRcvbufErrors"],
        "no_ports": c["UdpNoPorts"],
        "in_errors": c["UdpInErrors"],
        "csum_errors": c.get("UdpInCsumErrors", 0),
    }


def forwarded(ns: str) -> int:
    c = snmp(ns)
    return c["IpForwDatagrams"] + c["Ip6OutForwDatagrams"]
