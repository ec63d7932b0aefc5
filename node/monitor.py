"""`xdpcnictl monitor`: live events from the datapath (bpf/lib/monitor.h).

While a monitor runs, monitor_cfg.active is set: the programs put every drop into the
monitor_events ring buffer, and with --sample N every Nth forwarded or passed packet per CPU and
hook (the per-CPU sequence in monitor_seq, reset when a monitor starts, so sampling is
deterministic: a sender pinned to one CPU sees exactly every Nth packet). On exit (Ctrl-C,
SIGTERM, --count/--duration reached) the switch goes back to 0 and the programs stop reporting.
The switch is node-wide: two monitors at once share it, and the first to stop turns it off.
"""

from __future__ import annotations

import ctypes as ct
import ipaddress
import json
import signal
import socket
import sys
import time
from collections.abc import Callable

from datapath import abi, libbpf
from datapath.abi import Reason
from datapath.endpoints import EndpointTable
from datapath.maps import PinnedMap
from datapath.pins import PinLayout
from datapath.ringbuf import RingBuffer

from . import pods

DIRECTIONS = {abi.HOOK_XDP_NIC: "from-wire", abi.HOOK_TC_NIC: "from-wire", abi.HOOK_TC_POD: "from-pod"}
PROTOS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp", 47: "gre"}
ETHERTYPES = {0x0800: "ipv4", 0x86DD: "ipv6", 0x0806: "arp"}


class Monitor:
    """Turns the programs' reporting on for its lifetime and decodes their events."""

    def __init__(self, root: str, sample_n: int = 0):
        self.root = root
        self.layout = PinLayout(root)
        self.sample_n = sample_n
        self.cfg = PinnedMap(self.layout, "monitor_cfg")
        self.seq = PinnedMap(self.layout, "monitor_seq")
        self.events = PinnedMap(self.layout, "monitor_events")
        self._names: dict[int, dict] = {}
        self._boot_offset = time.time() - time.monotonic()  # bpf_ktime_get_ns is CLOCK_MONOTONIC

    def start(self) -> None:
        ncpu = libbpf.num_possible_cpus()
        zero = (ct.c_uint8 * (8 * ncpu))()
        for hook in range(abi.HOOK_MAX):
            libbpf.map_update(self.seq.fd, ct.c_uint32(hook), zero)
        self.cfg.put(0, abi.MonitorConfig(active=1, sample_n=self.sample_n))

    def stop(self) -> None:
        if self.cfg.fd >= 0:
            self.cfg.put(0, abi.MonitorConfig(active=0, sample_n=0))

    def close(self) -> None:
        self.stop()
        for m in (self.cfg, self.seq, self.events):
            m.close()

    def _identity(self, ep_id: int) -> dict:
        if ep_id == 0:
            return pods.identity(None)
        if ep_id not in self._names:
            with EndpointTable(self.root) as table:
                self._names = {e.ep_id: pods.identity(e) for e in table.list()}
        return self._names.get(ep_id) or {"pod": f"ep {ep_id}", "veth": None, "ips": [], "ep_id": ep_id}

    def decode(self, raw: bytes) -> dict:
        ev = abi.MonitorEvent.from_buffer_copy(raw.ljust(ct.sizeof(abi.MonitorEvent), b"\0"))
        try:
            reason = Reason(ev.reason)
            reason_name, verdict = reason.name.lower(), reason.verdict
        except ValueError:
            reason_name, verdict = f"reason_{ev.reason}", "?"
        src = dst = None
        if ev.family == abi.FAMILY_IPV4:
            src, dst = (
                str(ipaddress.IPv4Address(bytes(ev.src)[:4])),
                str(ipaddress.IPv4Address(bytes(ev.dst)[:4])),
            )
        elif ev.family == abi.FAMILY_IPV6:
            src, dst = str(ipaddress.IPv6Address(bytes(ev.src))), str(ipaddress.IPv6Address(bytes(ev.dst)))
        ident = self._identity(ev.ep_id)
        return {
            "time": round(self._boot_offset + ev.ts_ns / 1e9, 6),
            "hook": abi.HOOK_NAMES.get(ev.hook, str(ev.hook)),
            "direction": DIRECTIONS.get(ev.hook, "?"),
            "ifindex": ev.ifindex,
            "ifname": pods.veth_name(ev.ifindex),
            "ep_id": ev.ep_id,
            "pod": ident["pod"],
            "pod_ips": ident["ips"],
            "verdict": verdict,
            "reason": reason_name,
            "proto": PROTOS.get(ev.l4proto, str(ev.l4proto))
            if ev.family
            else ETHERTYPES.get(ev.ethertype, f"{ev.ethertype:#06x}"),
            "src": src,
            "dst": dst,
            "sport": socket.ntohs(ev.sport) if ev.sport or ev.dport else None,
            "dport": socket.ntohs(ev.dport) if ev.sport or ev.dport else None,
            "len": ev.len,
            "vlan": ev.vlan or None,
            "smac": abi.mac_to_str(ev.smac),
            "dmac": abi.mac_to_str(ev.dmac),
            "cpu": ev.cpu,
        }

    def run(
        self,
        on_event: Callable[[dict], bool],
        should_stop: Callable[[], bool],
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        """Poll until should_stop() or on_event() returns False; on_ready() once reporting is on."""
        done = False

        def sample(raw: bytes) -> None:
            nonlocal done
            if not done and on_event(self.decode(raw)) is False:
                done = True

        with RingBuffer(self.events.fd, sample) as rb:
            self.start()
            try:
                if on_ready is not None:
                    on_ready()
                while not done and not should_stop():
                    rb.poll(100)
            finally:
                self.stop()
                rb.poll(0)  # what was already in the ring, for a complete picture up to now


def format_event(e: dict) -> str:
    t = time.strftime("%H:%M:%S", time.localtime(e["time"])) + f".{int(e['time'] * 1e6) % 1_000_000:06d}"
    where = e["pod"] if e["pod"] != pods.NODE else f"node ({e['ifname'] or e['ifindex']})"
    if e["src"]:
        sp = f":{e['sport']}" if e["sport"] is not None else ""
        dp = f":{e['dport']}" if e["dport"] is not None else ""
        flow = f"{e['src']}{sp} -> {e['dst']}{dp}"
    else:
        flow = f"{e['smac']} -> {e['dmac']}"
    return (
        f"{t} {e['hook']:<7} {e['direction']:<9} {where:<16} {e['verdict']:<4} {e['reason']:<17} "
        f"{e['proto']:<6} {flow} len {e['len']}"
    )


def main(
    root: str,
    *,
    pod: str | None,
    reason: str | None,
    drops: bool,
    sample: int,
    as_json: bool,
    count: int | None,
    duration: float | None,
    out=sys.stdout,
    err=sys.stderr,
) -> int:
    """The CLI: prints events until Ctrl-C/SIGTERM (or --count events, or --duration seconds)."""
    layout = PinLayout(root)
    if not layout.is_loaded():
        print(f"xdpcnictl: nothing loaded under {root}: run `xdpcnictl load` first", file=err)
        return 1
    want_ep = None
    if pod:
        with EndpointTable(root) as table:
            want_ep = pods.find_endpoint(pod, table.list()).ep_id
    if reason:
        names = {r.name.lower() for r in Reason}
        if reason.lower() not in names:
            print(f"xdpcnictl: unknown reason {reason!r} (one of: {', '.join(sorted(names))})", file=err)
            return 2
    stop = {"now": False}

    def on_signal(*_):
        stop["now"] = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    deadline = time.monotonic() + duration if duration else None
    seen = 0

    def on_event(e: dict) -> bool:
        nonlocal seen
        if want_ep is not None and e["ep_id"] != want_ep:
            return True
        if reason and e["reason"] != reason.lower():
            return True
        if drops and e["verdict"] != "drop":
            return True
        out.write((json.dumps(e) if as_json else format_event(e)) + "\n")
        out.flush()
        seen += 1
        return count is None or seen < count

    mon = Monitor(root, sample_n=0 if drops else sample)
    try:
        what = f"drops and 1 in {sample} of the rest" if sample and not drops else "drops"
        mon.run(
            on_event,
            lambda: stop["now"] or (deadline is not None and time.monotonic() >= deadline),
            on_ready=lambda: print(
                f"xdpcnictl monitor: listening ({what}); Ctrl-C stops", file=err, flush=True
            ),
        )
    finally:
        mon.close()
        for s, h in old.items():
            signal.signal(s, h)
    return 0


def config(root: str) -> dict:
    """The monitor switch as the programs see it (for `xdpcnictl status`)."""
    with PinnedMap(PinLayout(root), "monitor_cfg") as m:
        cfg = m.get(0)
    return {"active": bool(cfg.active), "sample_n": cfg.sample_n} if cfg else {"active": False, "sample_n": 0}
