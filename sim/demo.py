"""`make demo` / `xdpcnictl demo`: the fast path, live, on a simulated 2-node cluster.

Routes between the nodes come from the product's route controller: the demo writes a peers file
(every node's name, NIC addresses and pod CIDRs) and each node syncs from it with `xdpcnictl
routes --peers FILE`, as `xdpcnictl agent --peers FILE` does; no route is hand-written.
Pods are created by the real CNI executable (as a runtime would); traffic is real sockets in
real namespaces: from the wire host into every pod, pod to pod on one node, pod to pod across
nodes, pod to the wire. The table then shows per-endpoint fast-path counters growing while each
node's kernel forwarding counter (Ip ForwDatagrams + Ip6 OutForwDatagrams) stays flat; a
control run with the fast path unloaded shows that counter does move for the same traffic.
Everything is torn down at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import glob
import os
import signal
import sys
import time

from datapath.abi import Reason
from datapath.endpoints import EndpointTable
from datapath.stats import Stats

from .cni_runtime import Runtime
from .packets import forwarded, udp_exchange
from .topology import TEST_PIN_BASE, WIRE_HOST_V4, WIRE_HOST_V6, Cluster

PER_FLOW = 200  # datagrams per flow
PODS_PER_NODE = 2


def _say(msg: str, t0: float) -> None:
    print(f"[{time.monotonic() - t0:5.1f}s] {msg}", flush=True)


def _flows(cluster: Cluster, pods: dict) -> list[tuple[str, str, str, str]]:
    """(label, source netns, destination netns, destination IP) for each kind of traffic."""
    (a1, a2), (b1, _) = pods["n0"], pods["n1"]
    flows = []
    for node_pods in pods.values():
        for p in node_pods:
            flows.append((f"wire -> {p.name}", cluster.wire, p.ns, p.ip4))
            flows.append((f"wire -> {p.name} (v6)", cluster.wire, p.ns, p.ip6))
    flows += [
        (f"{a1.name} -> {a2.name} (same node)", a1.ns, a2.ns, a2.ip4),
        (f"{a1.name} -> {b1.name} (across nodes)", a1.ns, b1.ns, b1.ip4),
        (f"{b1.name} -> {a2.name} (across nodes, v6)", b1.ns, a2.ns, a2.ip6),
        (f"{a2.name} -> wire host", a2.ns, cluster.wire, WIRE_HOST_V4),
        (f"{b1.name} -> wire host (v6)", b1.ns, cluster.wire, WIRE_HOST_V6),
    ]
    return flows


def _sigterm_handler(main_pid: int):
    """SIGTERM cleans up like Ctrl-C, in this process only: pyroute2 forks helper children
    (netns sockets) that inherit handlers and must still die the default way."""

    def handler(signum, frame):
        if os.getpid() == main_pid:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    return handler


def run_demo(mode: str = "tc", per_flow: int = PER_FLOW) -> int:
    t0 = time.monotonic()
    signal.signal(signal.SIGTERM, _sigterm_handler(os.getpid()))
    print(f"xdpcni demo: 2 simulated nodes, {PODS_PER_NODE} pods each, NIC mode {mode}\n", flush=True)
    cluster = Cluster(2, routes=False)
    ok = False
    try:
        _say(f"cluster up: wire switch {cluster.wire}, nodes {', '.join(n.ns for n in cluster.nodes)}", t0)
        peers = cluster.write_peers()
        for name, res in cluster.sync_routes().items():
            routes = ", ".join(f"{r['dst']} via {r['gateway']}" for r in res["added"] + res["kept"])
            _say(f"{name}: routes from the peers file {os.path.basename(peers)} (proto 201): {routes}", t0)
        runtimes, pods = {}, {}
        for node in cluster.nodes:
            rt = runtimes[node.ns] = Runtime.single(node, mode)
            key = f"n{node.index}"
            pods[key] = []
            for i in range(PODS_PER_NODE):
                name = f"{key}-pod{i + 1}"
                if i == 0:
                    _say(f"{key}: CNI ADD {name} (the first ADD on a node loads its datapath)", t0)
                ns = rt.new_pod_netns(f"pod{i + 1}")
                # what kubelet passes: the pod's namespace and name end up in every operator view
                k8s = f"IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME={name}"
                inv = rt.add(name, ns, extra_env={"CNI_ARGS": k8s})
                if not inv.ok:
                    raise RuntimeError(f"CNI ADD {name} failed: {inv.stdout} {inv.stderr[-500:]}")
                pod = rt.pod_from_result(name, ns, inv.out)
                pods[key].append(pod)
                _say(f"{key}: {name} eth0 {pod.ip4} {pod.ip6}", t0)

        fwd_before = {n.ns: forwarded(n.ns) for n in cluster.nodes}
        _say(f"sending {per_flow} UDP datagrams per flow through real sockets", t0)
        print(f"\n  {'flow':40} {'delivered':>10}", flush=True)
        for label, src, dst_ns, dst_ip in _flows(cluster, pods):
            got = udp_exchange(src, dst_ns, dst_ip, n=per_flow)
            print(f"  {label:40} {got:>6}/{per_flow}", flush=True)
        fwd_after = {n.ns: forwarded(n.ns) for n in cluster.nodes}

        print(
            f"\n  {'node':6} {'endpoint':10} {'ip':16} {'nic->pod':>9} {'pod->pod':>9} {'pod->nic':>9}"
            f" {'to stack':>9} {'dropped':>8}"
        )
        for node in cluster.nodes:
            with EndpointTable(node.pin_root) as table, Stats(node.pin_root) as st:
                for ep in table.list():
                    c = st.endpoint(ep.ep_id)
                    n = {r: c[r].packets if r in c else 0 for r in Reason}
                    passed = sum(v for r, v in n.items() if r.verdict == "pass")
                    dropped = sum(v for r, v in n.items() if r.verdict == "drop")
                    print(
                        f"  n{node.index:<5} {ep.ep_id:<10} {ep.ips[0]:16} {n[Reason.FWD_NIC_TO_POD]:>9}"
                        f" {n[Reason.FWD_POD_TO_POD]:>9} {n[Reason.FWD_POD_TO_NIC]:>9} {passed:>9}"
                        f" {dropped:>8}"
                    )
        print(f"\n  {'node':6} {'kernel-forwarded before':>24} {'after':>8} {'delta':>7}")
        for node in cluster.nodes:
            b, a = fwd_before[node.ns], fwd_after[node.ns]
            print(f"  n{node.index:<5} {b:>24} {a:>8} {a - b:>7}")
        flat = all(fwd_after[k] == fwd_before[k] for k in fwd_before)
        print(
            "\n  "
            + (
                "host forwarding counters stayed flat: every packet took the eBPF fast path"
                if flat
                else "host forwarding counters moved: some traffic took the kernel path"
            )
        )

        # Control: the same wire -> pod traffic with node n1's fast path unloaded.
        node = cluster.nodes[1]
        target = pods["n1"][0]
        node.unload()
        before = forwarded(node.ns)
        got = udp_exchange(cluster.wire, target.ns, target.ip4, n=per_flow)
        delta = forwarded(node.ns) - before
        _say(
            f"control: n1 datapath unloaded, wire -> {target.name}: {got}/{per_flow} delivered, "
            f"host forwarded +{delta} (the kernel path, counted)",
            t0,
        )

        _say("CNI DEL for every pod", t0)
        for node in cluster.nodes:
            rt = runtimes[node.ns]
            for pod in pods[f"n{node.index}"]:
                inv = rt.delete(pod.name, pod.ns)
                if not inv.ok:
                    raise RuntimeError(f"CNI DEL {pod.name} failed: {inv.stdout}")
        ok = flat and delta > 0
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", flush=True)
    finally:
        prefix = cluster.prefix
        cluster.teardown()
        left_ns = (
            [n for n in os.listdir("/var/run/netns") if n.startswith(prefix)]
            if os.path.isdir("/var/run/netns")
            else []
        )
        left_pins = glob.glob(f"{TEST_PIN_BASE}/{prefix}*")
        _say(f"cleaned up: {len(left_ns)} namespaces and {len(left_pins)} pin roots left behind", t0)
    print("demo " + ("passed" if ok else "FAILED"), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run_demo(sys.argv[1] if len(sys.argv) > 1 else "tc"))
