"""Where a CNI ADD's time goes inside the process that runs it: what the node agent's execute() of
an ADD spends, step by step, for the next session working on issue 12 (CNI ADD latency).

N ADD/DEL pairs run in this one warm process (cni.main.execute, as the agent runs them) on a bench
node (bench/topo.py, TC mode), with the agent's settings: the per-verb netfilter re-decision is
skipped (the agent re-decides every second) and the cyclic GC does not run inside verbs. Printed,
as p50 over the ADDs:
  - each step of ADD, from cni/testhook.py's step marks (datapath, record, ipam, veth, pod-side,
    host-side, programs, maps, result);
  - pyroute2's encoding of each request type (datapath/rtnl.py Rtnl._msg; cached requests show as
    ~1 us);
  - each batch's sendmsg by its first request's type: the kernel runs netlink requests inside
    sendmsg, so this is the kernel's share.
A warm loop runs ~20-30 % faster than the bench's agent, whose caches the client processes between
two ADDs evict. Run as root: flock /tmp/xdpcni-heavy.lock python -m bench.addprofile [--pods N]
[--endpoints M]. Not part of `make bench` or `make test`.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import statistics
import struct
import time

from cni import locking, testhook
from cni import node as cni_node
from cni.main import execute
from datapath import rtnl
from datapath.netns import entered

from .cnibench import Plugins, PodNamespaces, add_fake_endpoints, remove_fake_endpoints
from .topo import BenchNode

RTM_NAMES = {16: "NEWLINK", 17: "DELLINK", 18: "GETLINK", 19: "SETLINK", 20: "NEWADDR", 24: "NEWROUTE"}
RTM_NAMES.update({28: "NEWNEIGH", 36: "NEWQDISC", 44: "NEWTFILTER"})


class _TimedSocket:
    """A socket whose sendall() is timed, by the first request's type."""

    def __init__(self, sock, sends: dict):
        self._sock, self._sends = sock, sends

    def sendall(self, data) -> None:
        t = time.perf_counter()
        try:
            self._sock.sendall(data)
        finally:
            kind = RTM_NAMES.get(struct.unpack_from("=H", data, 4)[0], "?")
            self._sends[kind].append(time.perf_counter() - t)

    def __getattr__(self, name):
        return getattr(self._sock, name)


def profile(n_pods: int, endpoints: int, log=print) -> dict:
    """The run described above; returns {"steps": ..., "encode": ..., "sendmsg": ...} in ms (p50)."""
    steps: dict[str, list[float]] = collections.defaultdict(list)
    encode: dict[str, list[float]] = collections.defaultdict(list)
    sends: dict[str, list[float]] = collections.defaultdict(list)
    totals: list[float] = []
    marks: list[tuple[str, float]] = []

    orig_step, orig_msg, orig_init = testhook.step, rtnl.Rtnl._msg, rtnl.Rtnl.__init__

    def step(name: str) -> None:
        marks.append((name, time.perf_counter()))
        orig_step(name)

    def msg(self, kind, flags, m, key=None, fields=()):
        t = time.perf_counter()
        try:
            return orig_msg(self, kind, flags, m, key, fields)
        finally:
            encode[RTM_NAMES.get(kind, str(kind))].append(time.perf_counter() - t)

    def init(self, *args, **kwargs):
        orig_init(self, *args, **kwargs)
        self.sock = _TimedSocket(self.sock, sends)

    bn = BenchNode(None, log=log)
    pods = None
    graveyard = None
    try:
        bn.configure("tc")
        node = bn.node
        pods = PodNamespaces(node)
        conf = json.dumps(Plugins(node, None).confs["xdpcni"]).encode()
        if endpoints:
            graveyard = f"{node.ns}-gy"
            add_fake_endpoints(node, endpoints, graveyard, log)
        cni_node.WATCHED_ROOTS.add(node.pin_root)
        rtnl.use_templates()
        locking.keep_spares()
        testhook.step, rtnl.Rtnl._msg, rtnl.Rtnl.__init__ = step, msg, init
        gc.collect()
        gc.disable()
        names = [pods.new(f"ap{i}") for i in range(n_pods)]
        with entered(node.ns):
            for i, ns in enumerate(names):
                env = {
                    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                    "CNI_COMMAND": "ADD",
                    "CNI_CONTAINERID": f"addprofile-{i}",
                    "CNI_NETNS": f"/var/run/netns/{ns}",
                    "CNI_IFNAME": "eth0",
                }
                marks.clear()
                t0 = time.perf_counter()
                rc, out = execute(env, conf)
                t1 = time.perf_counter()
                if rc != 0:
                    raise RuntimeError(f"ADD failed: {out}")
                totals.append(t1 - t0)
                prev = t0
                for name, t in marks:
                    steps[name].append(t - prev)
                    prev = t
                steps["(after the last step)"].append(t1 - prev)
                after_add = {id(v): len(v) for table in (encode, sends) for v in table.values()}
                env["CNI_COMMAND"] = "DEL"
                rc, out = execute(env, conf)
                if rc != 0:
                    raise RuntimeError(f"DEL failed: {out}")
                for table in (encode, sends):  # only the ADD's requests count: drop the DEL's
                    for k, v in list(table.items()):
                        del v[after_add.get(id(v), 0) :]
                        if not v:
                            del table[k]
                locking.refill_spares()  # as the agent does after each reply
                gc.collect()
    finally:
        gc.enable()
        rtnl.use_templates(False)
        locking.keep_spares(False)
        testhook.step, rtnl.Rtnl._msg, rtnl.Rtnl.__init__ = orig_step, orig_msg, orig_init
        cni_node.WATCHED_ROOTS.discard(bn.node.pin_root if bn.node else "")
        if pods is not None:
            pods.remove_all()
        if graveyard:
            remove_fake_endpoints(graveyard)
        bn.close()

    def p50(v: list[float]) -> float:
        return round(statistics.median(v) * 1e3, 3)

    def per_add(v: list[float]) -> float:  # ms per ADD: several requests of a type add up
        return round(sum(v) / len(totals) * 1e3, 3)

    return {
        "add_ms": p50(totals),
        "steps": {k: p50(v) for k, v in steps.items()},
        "encode": {k: (p50(v), per_add(v), len(v) // len(totals)) for k, v in encode.items()},
        "sendmsg": {k: (p50(v), per_add(v), len(v) // len(totals)) for k, v in sends.items()},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.addprofile", description=__doc__.split("\n\n")[0])
    ap.add_argument("--pods", type=int, default=60, help="ADD/DEL pairs (default 60)")
    ap.add_argument("--endpoints", type=int, default=0, help="extra endpoints in the table first")
    args = ap.parse_args(argv)
    res = profile(args.pods, args.endpoints, log=lambda m: print(m, flush=True))
    print(f"ADD p50 {res['add_ms']} ms over {args.pods} ADDs (warm, in this process)")
    print("steps (p50 ms):")
    for k, v in res["steps"].items():
        print(f"  {k:24} {v:7.3f}")
    print("pyroute2 encoding by request type: p50 ms per request, ms per ADD, requests per ADD")
    for k, (v, total, n) in sorted(res["encode"].items(), key=lambda kv: -kv[1][1]):
        print(f"  {k:24} {v:7.3f} {total:7.3f}  {n}")
    print("sendmsg by batch (first request's type; the kernel's work): p50 ms, ms per ADD, batches per ADD")
    for k, (v, total, n) in sorted(res["sendmsg"].items(), key=lambda kv: -kv[1][1]):
        print(f"  {k:24} {v:7.3f} {total:7.3f}  {n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
