"""xdpcnictl: load, inspect and remove the xdpcni node datapath.

  xdpcnictl load --nic eth1 [--mode auto|xdp|tc]   compile, pin, attach (idempotent; reload = upgrade)
  xdpcnictl unload                                 detach and remove every pin
  xdpcnictl status                                 what is loaded where, in which mode
  xdpcnictl netfilter [--sync]                     the node's netfilter state and the conntrack gate
  xdpcnictl endpoints                              the endpoint table
  xdpcnictl stats [--ep ID]                        fast-path / pass / drop counters per endpoint
  xdpcnictl trace PACKET [--from nic|POD]          what the loaded programs do with a packet (none sent)
  xdpcnictl monitor [--pod P] [--drops] [--sample N]  live datapath events (drops, sampled verdicts)
  xdpcnictl metrics [--listen ADDR:PORT]           serve Prometheus metrics (default 127.0.0.1:9465)
  xdpcnictl agent [--socket PATH]                  serve CNI verbs warm (optional accelerator)
        [--peers FILE --node-name NAME]            ... and keep routes to the other nodes' pod CIDRs
        [--kubernetes [--kubeconfig F] [--node-name NAME] [--cni-bin-dir D] [--cni-conf-dir D]]
                                                   ... from the cluster's Nodes; installs the CNI when ready
  xdpcnictl install-cni --pod-cidr CIDR [...]      write the CNI client and conflist into host dirs
  xdpcnictl routes [--peers FILE --node-name NAME]  our routes to other nodes; with --peers: sync once
  xdpcnictl demo                                   the one-command demo (simulated 2-node cluster)

--netns NAME runs the command in that network namespace (net only: bpffs pins stay visible).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from cni.client import DEFAULT_SOCKET
from datapath.config import DEFAULT_CONFIG_PATH, MODES, NETFILTER_MODES, ConfigError, NodeConfig, resolve
from datapath.netns import entered
from datapath.pins import DEFAULT_ROOT, PinLayout
from datapath.probes import ProbeError


def _config(args) -> NodeConfig:
    cfg = resolve(
        args.config,
        netfilter=getattr(args, "netfilter", None),
        nic=getattr(args, "nic", None),
        mode=getattr(args, "mode", None),
        vlan=getattr(args, "vlan", None),
        bpffs_root=args.root,
    )
    if cfg is None:
        raise ConfigError("no NIC given: pass --nic or a node config with `nic:` (--config)")
    if cfg.nic == "auto":
        raise ConfigError(
            "nic: auto is resolved by `xdpcnictl agent --kubernetes` (the interface holding the "
            "Node's InternalIP); here pass --nic NAME or set `nic:` to an interface name"
        )
    return cfg


def _root(args) -> str:
    if args.root:
        return args.root
    if args.config:
        return NodeConfig.from_yaml(args.config).bpffs_root
    return DEFAULT_ROOT


def cmd_load(args) -> int:
    from datapath.loader import load

    cfg = _config(args)
    t0 = time.monotonic()
    state = load(cfg, log=lambda m: print(m, flush=True))
    print(
        f"loaded: {state.nic} (ifindex {state.nic_ifindex}) mode={state.mode} "
        f"(asked {state.requested_mode}) netfilter={state.netfilter} "
        f"(conntrack gate {'on' if state.conntrack_check else 'off'}) pins={state.root} "
        f"in {time.monotonic() - t0:.1f}s",
        flush=True,
    )
    if args.wait:
        # Stay in the foreground like an agent would; the datapath does not depend on us.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        print("ready", flush=True)
        while True:
            time.sleep(3600)
    return 0


def cmd_unload(args) -> int:
    from datapath.loader import unload

    if not unload(_root(args)):
        print(f"nothing loaded under {_root(args)}")
    return 0


def map_fill(root: str) -> list[dict]:
    """Every pinned map: type, entries (hash maps: counted; arrays and the ring buffer: None) and
    capacity (max_entries; the ring buffer's in bytes)."""
    from datapath import abi, libbpf
    from datapath.maps import PinnedMap
    from datapath.pins import MAPS

    layout = PinLayout(root)
    out = []
    for name in MAPS:
        if not os.path.exists(layout.map(name)):
            out.append({"map": name, "type": None, "entries": None, "capacity": 0, "pinned": False})
            continue
        with PinnedMap(layout, name) as m:
            info = m.info()
            hashed = info.type in (libbpf.BPF_MAP_TYPE_HASH, libbpf.BPF_MAP_TYPE_DEVMAP_HASH)
            entries = sum(1 for _ in libbpf.map_keys(m.fd, abi.MAP_LAYOUT[name][0])) if hashed else None
        out.append(
            {"map": name, "type": info.type, "entries": entries, "capacity": info.max_entries, "pinned": True}
        )
    return out


def _boot_time() -> float:
    return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


def _programs(root: str) -> list[dict]:
    """Pinned programs: id, tag, load time (wall clock), run count when kernel stats are on."""
    from datapath import libbpf
    from datapath.pins import PROGRAMS

    layout = PinLayout(root)
    out = []
    boot = _boot_time()
    for name in PROGRAMS:
        try:
            fd = libbpf.obj_get(layout.prog(name))
        except OSError:
            out.append({"program": name, "pinned": False})
            continue
        try:
            info = libbpf.prog_info(fd)
        finally:
            os.close(fd)
        out.append(
            {
                "program": name,
                "pinned": True,
                "id": info.id,
                "tag": bytes(info.tag).hex(),
                "loaded_at": round(boot + info.load_time / 1e9, 3),
                "run_cnt": info.run_cnt,
            }
        )
    return out


def _hooks(state, root: str) -> dict:
    """Which program runs on which hook, as the kernel says (not only as the state file says)."""
    from pyroute2 import IPRoute

    from datapath import attach
    from datapath.maps import PinnedMap

    out = {"nic": None, "pod_egress": {"tc_pod": 0, "without": 0}, "pod_eth0": "GRO (veth NAPI, in each pod)"}
    with IPRoute() as ipr:
        if state is not None:
            try:
                xdp = attach.xdp_prog_id(ipr, state.nic_ifindex)
                tc = attach.tc_ingress_prog_names(ipr, state.nic_ifindex)
                out["nic"] = {
                    "device": state.nic,
                    "mode": "xdp" if xdp else "tc" if tc else "none",
                    "xdp_prog_id": xdp or None,
                    "tc_programs": tc,
                }
            except Exception as exc:
                out["nic"] = {"device": state.nic, "mode": "none", "error": str(exc)}
        with PinnedMap(PinLayout(root), "ifaces") as ifaces:
            for key in ifaces:
                try:
                    names = attach.tc_ingress_prog_names(ipr, key.value)
                except Exception:
                    names = []
                out["pod_egress"]["tc_pod" if names else "without"] += 1
    return out


def _agent_alive(path: str) -> bool:
    import socket

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(0.5)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def _problems(out: dict, rows) -> list[str]:
    """What an operator should look at first, newest knowledge the kernel has."""
    probs = []
    s = out.get("state") or {}
    if s.get("fallback"):
        probs.append(f"fallback: {s['fallback']}")
    nic = (out.get("hooks") or {}).get("nic") or {}
    if s and nic.get("mode") not in (None, s.get("mode")):
        probs.append(f"the NIC runs {nic.get('mode')}, the last load attached {s.get('mode')}")
    if (out.get("hooks") or {}).get("pod_egress", {}).get("without"):
        probs.append(f"{out['hooks']['pod_egress']['without']} endpoint veth(s) without the pod program")
    for m in out.get("maps", []):
        if not m["pinned"]:
            probs.append(f"map {m['map']} is not pinned (reload the datapath)")
        elif m["entries"] is not None and m["capacity"] and m["entries"] >= 0.9 * m["capacity"]:
            probs.append(f"map {m['map']} is {m['entries']}/{m['capacity']} full")
    for ep_id, reason, packets, _ in rows:
        if reason in ("DROP_REDIRECT", "DROP_XDP_LOST"):
            probs.append(f"{reason.lower()}: {packets} packet(s) on ep {ep_id} (a target went missing)")
    for use in out.get("address_use", []):
        if "error" in use:
            probs.append(f"network {use['network']}: {use['error']}")
        elif use["free"] == 0:
            probs.append(
                f"network {use['network']} range set {use['range_set']} is full ({use['used']}/{use['size']}): "
                "new pods get code 103 until addresses are freed or the range grows"
            )
    for p in (out.get("routes") or {}).get("problems", []):
        probs.append(f"routes: {p}")
    if not out.get("agent", {}).get("alive"):
        probs.append(
            f"no node agent on {out.get('agent', {}).get('socket')} (CNI verbs run in-process: slower)"
        )
    return probs


def status(root: str, agent_socket: str = DEFAULT_SOCKET, cni_conf_dir: str | None = None) -> dict:
    from datapath.loader import NodeState

    state = NodeState.read(root)
    layout = PinLayout(root)
    out = {"root": root, "loaded": layout.is_loaded(), "state": state.__dict__ if state else None}
    out["agent"] = {"socket": agent_socket, "alive": _agent_alive(agent_socket)}
    rows = []
    if os.path.exists(layout.map("ifaces")):
        out["programs"] = _programs(root)
        out["maps"] = map_fill(root)
        out["hooks"] = _hooks(state, root)
    if layout.is_loaded():
        from datapath.endpoints import EndpointTable

        with EndpointTable(root) as table:
            out["endpoints"] = len(table.list())
        out["conntrack_gate"] = gate_on(root)
        rows = stats_rows(root)[0]
        from . import monitor

        out["monitor"] = monitor.config(root)
    from .ipam import address_use

    out["address_use"] = address_use(cni_conf_dir)
    from .routes import read_status

    out["routes"] = read_status(root)
    out["problems"] = _problems(out, rows) if out["loaded"] else []
    return out


def cmd_status(args) -> int:
    root = _root(args)
    out = status(root, os.environ.get("XDPCNI_AGENT_SOCKET", DEFAULT_SOCKET), args.cni_conf_dir)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0 if out["loaded"] else 1
    if not out["loaded"]:
        print(f"xdpcni datapath: not loaded (no pins under {root})")
        return 1
    s = out["state"] or {}
    print(f"xdpcni datapath: loaded under {root}")
    nic = out["hooks"]["nic"] or {}
    print(
        f"  NIC {s.get('nic')} (ifindex {s.get('nic_ifindex')}), mode {nic.get('mode')} "
        f"(asked {s.get('requested_mode')})"
    )
    if s.get("fallback"):
        print(f"  fallback: {s['fallback']}")
    eg = out["hooks"]["pod_egress"]
    print(
        f"  pod egress: tc_pod on {eg['tc_pod']} host veth(s)"
        + (f", {eg['without']} without" if eg["without"] else "")
    )
    print(
        f"  toolchain {s.get('toolchain')}; netfilter {s.get('netfilter')}: conntrack gate {'on' if out.get('conntrack_gate') else 'off'}"
    )
    print(f"  endpoints {out['endpoints']}")
    print(f"  agent {out['agent']['socket']}: {'alive' if out['agent']['alive'] else 'not running'}")
    mon = out.get("monitor") or {}
    print(
        f"  monitor {'listening' if mon.get('active') else 'off'}"
        + (f", sampling 1 in {mon['sample_n']}" if mon.get("sample_n") else "")
    )
    if s.get("restore"):
        print(f"  at load: {s['restore']}")
    print("  programs:")
    for p in out["programs"]:
        if not p["pinned"]:
            print(f"    {p['program']:<8} not pinned")
            continue
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(p["loaded_at"]))
        print(f"    {p['program']:<8} id {p['id']:<6} tag {p['tag']}  loaded {when}")
    print("  maps (entries/capacity):")
    for m in out["maps"]:
        fill = (
            "not pinned"
            if not m["pinned"]
            else (
                f"{m['entries']}/{m['capacity']}" if m["entries"] is not None else f"array of {m['capacity']}"
            )
        )
        if m["map"] == "monitor_events" and m["pinned"]:
            fill = f"ring buffer of {m['capacity'] // 1024} KiB"
        print(f"    {m['map']:<15} {fill}")
    for use in out["address_use"]:
        if "error" not in use:
            print(
                f"  addresses {use['network']} set {use['range_set']}: {use['used']}/{use['size']} used, "
                f"{use['free']} free"
            )
    rt = out.get("routes")
    if rt:
        when = time.strftime("%H:%M:%S", time.localtime(rt["time"]))
        print(
            f"  routes to other nodes: {len(rt['routes'])} ({rt['peers']} node(s) listed, this one "
            f"{rt['node']}; {rt['source'] or 'source ?'}; synced {when})"
        )
    print("  problems:" if out["problems"] else "  problems: none")
    for p in out["problems"]:
        print(f"    - {p}")
    return 0


def gate_on(root: str) -> bool:
    from datapath.netfilter import gate

    return gate(root)


def cmd_netfilter(args) -> int:
    """Show what netfilter state this namespace has and whether the conntrack gate is on; with
    --sync, re-decide the gate for the loaded datapath's `netfilter` setting (what the agent does
    every second for `auto`)."""
    from datapath import netfilter
    from datapath.loader import NodeState

    root = _root(args)
    state = NodeState.read(root)
    mode = state.netfilter if state else netfilter.DEFAULT_MODE
    findings = netfilter.state()
    if args.sync:
        if not PinLayout(root).is_loaded():
            raise ConfigError(f"nothing loaded under {root}: run `xdpcnictl load` first")
        netfilter.sync(root, mode)
    gate = gate_on(root) if PinLayout(root).is_loaded() else None
    if args.json:
        print(json.dumps({"root": root, "netfilter": mode, "state": findings, "conntrack_gate": gate}))
        return 0
    print(f"netfilter setting: {mode}")
    print("netfilter state in this namespace: " + ("; ".join(findings) if findings else "none"))
    print(f"conntrack gate: {'not loaded' if gate is None else 'on' if gate else 'off'}")
    return 0


def cmd_endpoints(args) -> int:
    from datapath.endpoints import EndpointTable

    from . import pods

    with EndpointTable(_root(args)) as table:
        eps = table.list()
    if args.json:
        print(json.dumps([{**e.as_dict(), "pod": pods.display_name(e)} for e in eps], indent=2))
        return 0
    print(f"{'ID':>4}  {'POD':32}  {'IFINDEX':>7}  {'POD MAC':17}  {'HOST MAC':17}  IPS")
    for e in eps:
        print(
            f"{e.ep_id:>4}  {pods.display_name(e):32}  {e.ifindex:>7}  {e.pod_mac:17}  {e.host_mac:17}  "
            f"{' '.join(e.ips)}"
        )
    return 0


def stats_rows(root: str, ep: int | None = None):
    """(rows, node state, endpoints by id): rows are (ep_id, REASON, packets, bytes or None), the
    counters summed over CPUs plus, in XDP mode, the kernel's DROP_XDP_LOST reconciliation. One
    source for `stats` and the Prometheus metrics (node/metrics.py)."""
    from datapath.endpoints import EndpointTable
    from datapath.loader import NodeState
    from datapath.stats import Stats, xdp_lost

    with EndpointTable(root) as table:
        eps = {e.ep_id: e for e in table.list()}
    ids = [ep] if ep is not None else [0, *sorted(eps)]
    rows = []
    with Stats(root) as stats:
        for ep_id in ids:
            for reason, c in stats.endpoint(ep_id).items():
                rows.append((ep_id, reason.name, c.packets, c.bytes))
    # XDP mode: a redirect the program counted as delivered can still fail in the veth afterwards;
    # the kernel counts those on the host veth, and they are reconciled here.
    state = NodeState.read(root)
    if state is not None and state.mode == "xdp":
        if 0 in ids and (lost := xdp_lost(state.nic_ifindex, "nic")):
            rows.append((0, "DROP_XDP_LOST", lost, None))
        for ep_id in ids:
            if ep_id in eps and (lost := xdp_lost(eps[ep_id].ifindex, "veth")):
                rows.append((ep_id, "DROP_XDP_LOST", lost, None))
    return rows, state, eps


def cmd_stats(args) -> int:
    from . import pods

    rows, state, eps = stats_rows(_root(args), args.ep)
    if args.json:
        print(json.dumps([{"ep_id": i, "reason": r, "packets": p, "bytes": b} for i, r, p, b in rows]))
        return 0
    print(f"{'EP':>4}  {'WHO':32}  {'REASON':18}  {'PACKETS':>10}  {'BYTES':>12}")
    for ep_id, reason, packets, nbytes in rows:
        ep = eps.get(ep_id)
        who = "node" if ep_id == 0 else "?" if ep is None else " ".join([pods.display_name(ep), *ep.ips[:1]])
        shown = "-" if nbytes is None else nbytes
        print(f"{ep_id:>4}  {who:32}  {reason.lower():18}  {packets:>10}  {shown:>12}")
    if state is not None and state.mode == "xdp":
        print(
            "drop_xdp_lost: kernel counters after the program (NIC receive drops, e.g. failed redirects; "
            "host veth XDP transmit errors), since the device came up"
        )
    return 0


def cmd_trace(args) -> int:
    from . import trace as tr

    if args.packet and any(v is not None for v in (args.dst, args.src, args.dport, args.sport)):
        raise ConfigError("give either a PACKET expression or --dst/--src/--proto/--sport/--dport, not both")
    if args.hex:
        if args.packet or args.dst:
            raise ConfigError("--hex is the whole frame: no PACKET or --dst with it")
        pkt = bytes.fromhex(args.hex)
    elif args.packet:
        pkt = tr.parse_packet(args.packet)
    elif args.dst:
        pkt = tr.packet_from_flags(args.dst, args.src, args.proto, args.sport, args.dport, args.ttl)
    else:
        raise ConfigError("nothing to trace: give a PACKET (scapy syntax) or --dst")
    from_pod = None if args.from_ in (None, "nic") else args.from_
    result = tr.trace(_root(args), pkt, from_pod=from_pod, mode=args.mode)
    print(json.dumps(result.as_dict(), indent=2) if args.json else tr.render(result))
    return result.exit_status


def cmd_monitor(args) -> int:
    from . import monitor

    return monitor.main(
        _root(args),
        pod=args.pod,
        reason=args.reason,
        drops=args.drops,
        sample=args.sample,
        as_json=args.json,
        count=args.count,
        duration=args.duration,
    )


def cmd_metrics(args) -> int:
    from . import metrics

    if args.cni_conf_dir:
        os.environ["XDPCNI_CNI_CONF_DIR"] = args.cni_conf_dir  # read per scrape by node/ipam.py
    return metrics.serve(
        _root(args), args.listen, args.max_pods, log=lambda m: print(m, file=sys.stderr, flush=True)
    )


def cmd_agent(args) -> int:
    from .agent import log_line, serve

    services = []
    if args.kubernetes:
        if args.peers:
            raise ConfigError("--kubernetes and --peers are two sources of the same routes: choose one")
        from .install import CniInstaller
        from .k8s import KubernetesMode

        log = log_line  # the agent's own log: whole lines from every thread
        installer = CniInstaller(
            args.cni_bin_dir,
            args.cni_conf_dir,
            args.conflist_name,
            root=_root(args),
            config_path=args.config,
            agent_socket=args.socket,
            log=log,
        )
        services.append(
            KubernetesMode(
                _node_name(args),
                _root(args),
                kubeconfig=args.kubeconfig,
                config_path=args.config,
                install=installer,
                agent_socket=args.socket,
                log=log,
            )
        )
    return serve(
        args.socket,
        roots=[_root(args)],
        metrics_listen=args.metrics or None,
        peers_file=args.peers,
        node_name=args.node_name,
        services=services,
        running=args.max_running or 0,
    )


def cmd_install_cni(args) -> int:
    """Write the CNI client and a conflist for the given pod CIDRs (what the agent's Kubernetes
    mode does once ready), without an agent or a cluster."""
    from .install import CniInstaller

    inst = CniInstaller(
        args.cni_bin_dir,
        args.cni_conf_dir,
        args.conflist_name,
        root=args.root,
        config_path=args.config,
        agent_socket=args.socket,
    )
    inst.install(args.pod_cidr, args.mtu)
    return 0


def _node_name(args) -> str:
    import socket

    return args.node_name or os.environ.get("NODE_NAME") or socket.gethostname()


def cmd_routes(args) -> int:
    """Our routes to the other nodes' pod CIDRs in this namespace; with --peers, one sync from the
    file first (what `agent --peers` does at start and on every change), recorded for `status`."""
    from . import routes

    root = _root(args)
    ctl = routes.RouteController(
        _node_name(args),
        ifname=args.dev,
        status_file=routes.status_path(root),
        source=f"peers file {args.peers}" if args.peers else "",
    )
    if args.remove_all:
        print(f"removed {ctl.remove_all()} route(s) of proto {routes.RTPROT_XDPCNI}")
        return 0
    if args.peers:
        res = ctl.sync(routes.load_peers_file(args.peers))
        if args.json:
            print(json.dumps({"node": ctl.self_name, **res.as_dict()}, indent=2))
            return 0
        print(res.summary())
        for r in res.added:
            print(f"  + {r}")
        for r in res.changed:
            print(f"  ~ {r}")
        for r in res.removed:
            print(f"  - {r}")
        for p in res.problems:
            print(f"  problem: {p}")
        return 0
    current = ctl.routes()
    last = routes.read_status(root)
    if args.json:
        print(json.dumps({"routes": [str(r) for r in current], "last_sync": last}, indent=2))
        return 0
    print(f"routes of proto {routes.RTPROT_XDPCNI} (xdpcni) in this namespace: {len(current)}")
    for r in current:
        print(f"  {r}")
    if last:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last["time"]))
        print(f"last sync {when} for node {last['node']} from {last['source'] or '?'}: {last['summary']}")
        for p in last["problems"]:
            print(f"  problem: {p}")
    return 0


def cmd_demo(args) -> int:
    from sim.demo import run_demo

    return run_demo(mode=args.mode or "tc")


def _cni_dir_args(p) -> None:
    from .install import DEFAULT_BIN_DIR, DEFAULT_CONF_DIR, DEFAULT_CONFLIST

    p.add_argument("--cni-bin-dir", default=DEFAULT_BIN_DIR, help="host CNI bin dir (default %(default)s)")
    p.add_argument("--cni-conf-dir", default=DEFAULT_CONF_DIR, help="host CNI conf dir (default %(default)s)")
    p.add_argument(
        "--conflist-name",
        default=DEFAULT_CONFLIST,
        help="conflist file name; sorts first so containerd/CRI-O use it (default %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="xdpcnictl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--netns", help="run in this network namespace (name or path)")
    p.add_argument("--root", help=f"bpffs pin root (default {DEFAULT_ROOT})")
    p.add_argument("--config", help=f"node config YAML (default {DEFAULT_CONFIG_PATH} if present)")
    sub = p.add_subparsers(dest="cmd", required=True)
    lp = sub.add_parser("load", help="compile, pin and attach the node datapath (reload = upgrade)")
    lp.add_argument("--nic", help="the node's uplink interface")
    lp.add_argument("--mode", choices=MODES, help="NIC attach mode (default auto)")
    lp.add_argument("--vlan", type=int, help="802.1Q VLAN id that carries pod traffic (0 = none)")
    lp.add_argument(
        "--netfilter",
        choices=NETFILTER_MODES,
        help="respect (default): only conntrack-accepted, untranslated flows take the fast path; "
        "bypass: ignore netfilter; auto: bypass while the node has no netfilter state",
    )
    lp.add_argument(
        "--wait", action="store_true", help="stay in the foreground after loading (until SIGTERM)"
    )
    lp.set_defaults(func=cmd_load)
    sub.add_parser("unload", help="detach and remove all pins").set_defaults(func=cmd_unload)
    nf = sub.add_parser("netfilter", help="netfilter state of this namespace and the conntrack gate")
    nf.add_argument("--sync", action="store_true", help="re-decide the gate now (netfilter: auto)")
    nf.add_argument("--json", action="store_true")
    nf.set_defaults(func=cmd_netfilter)
    sp = sub.add_parser("status", help="the first screen: hooks, programs, maps, endpoints, agent, problems")
    sp.add_argument("--json", action="store_true")
    sp.add_argument(
        "--cni-conf-dir",
        help="CNI config dir whose xdpcni networks' address use is shown (default /etc/cni/net.d)",
    )
    sp.set_defaults(func=cmd_status)
    ep = sub.add_parser("endpoints", help="list the endpoint table")
    ep.add_argument("--json", action="store_true")
    ep.set_defaults(func=cmd_endpoints)
    st = sub.add_parser("stats", help="per-endpoint counters by reason (ep 0 = node-level)")
    st.add_argument("--ep", type=int, help="only this endpoint id")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_stats)
    tp = sub.add_parser(
        "trace",
        help="run one packet through the loaded programs (BPF_PROG_TEST_RUN; nothing is sent, no "
        "counter moves); exit 0 fast path, 3 stack, 4 drop",
    )
    tp.add_argument(
        "packet", nargs="?", help="scapy expression, e.g. \"Ether()/IP(dst='10.244.1.5')/UDP(dport=53)\""
    )
    tp.add_argument(
        "--from", dest="from_", default="nic", help="nic (default: from the wire) or a pod (veth, IP, id)"
    )
    tp.add_argument("--mode", choices=("xdp", "tc"), help="NIC program to run (default: the attached mode)")
    tp.add_argument("--dst", help="without PACKET: destination IP")
    tp.add_argument("--src", help="without PACKET: source IP (default: the pod's, or a wire address)")
    tp.add_argument("--proto", default="udp", choices=("udp", "tcp", "icmp"))
    tp.add_argument("--sport", type=int)
    tp.add_argument("--dport", type=int)
    tp.add_argument("--ttl", type=int, default=64, help="TTL / hop limit (default 64)")
    tp.add_argument("--hex", help="the whole frame as hex bytes (run as is: nothing is filled in)")
    tp.add_argument("--json", action="store_true")
    tp.set_defaults(func=cmd_trace)
    mp = sub.add_parser(
        "monitor", help="live datapath events: every drop, and 1 in N of the rest (--sample N)"
    )
    mp.add_argument("--pod", help="only this pod (NAMESPACE/NAME, veth, IP or endpoint id)")
    mp.add_argument("--reason", help="only this reason, e.g. drop_spoof_ip")
    mp.add_argument("--drops", action="store_true", help="only drops")
    mp.add_argument(
        "--sample", type=int, default=0, help="also every Nth forwarded/passed packet per CPU (0 = none)"
    )
    mp.add_argument("--count", type=int, help="stop after this many events")
    mp.add_argument("--duration", type=float, help="stop after this many seconds")
    mp.add_argument("--json", action="store_true", help="one JSON object per line")
    mp.set_defaults(func=cmd_monitor)
    mt = sub.add_parser("metrics", help="serve Prometheus metrics over HTTP (until SIGTERM)")
    mt.add_argument(
        "--listen", default="127.0.0.1:9465", help="ADDR:PORT (default %(default)s, loopback only)"
    )
    mt.add_argument(
        "--max-pods", type=int, default=256, help="pods labelled by name; the rest sum into _other"
    )
    mt.add_argument(
        "--cni-conf-dir", help="CNI config dir for the address-use gauges (default /etc/cni/net.d)"
    )
    mt.set_defaults(func=cmd_metrics)
    ag = sub.add_parser(
        "agent",
        help="serve CNI verbs warm on a unix socket (the plugin falls back "
        "to in-process work when no agent runs)",
    )
    ag.add_argument("--socket", default=DEFAULT_SOCKET, help="socket path (default %(default)s)")
    ag.add_argument(
        "--metrics",
        default="",
        metavar="ADDR:PORT",
        help="also serve Prometheus /metrics (datapath + CNI verbs) and /healthz, e.g. 127.0.0.1:9465",
    )
    ag.add_argument(
        "--peers",
        metavar="FILE",
        help="peers file (conf/peers.example.yaml): route every other node's pod CIDRs via its address, "
        "re-synced when the file changes",
    )
    ag.add_argument(
        "--node-name",
        help="this node's name in the peers or its Node's metadata.name (default $NODE_NAME, else the host name)",
    )
    ag.add_argument(
        "--kubernetes",
        action="store_true",
        help="Kubernetes mode: watch the cluster's Nodes, keep routes to their pod CIDRs, install the CNI "
        "client and conflist from this Node's podCIDRs once ready, set NetworkUnavailable=False",
    )
    ag.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster service account)")
    ag.add_argument(
        "--max-running",
        type=int,
        metavar="N",
        help="verbs run at once; the others queue (default 1: verbs are CPU-bound Python, "
        "and a verb waiting for a lock gives its turn up)",
    )
    _cni_dir_args(ag)
    ag.set_defaults(func=cmd_agent)
    ic = sub.add_parser(
        "install-cni", help="write the CNI client and a conflist for these pod CIDRs into host directories"
    )
    ic.add_argument(
        "--pod-cidr", action="append", required=True, help="a pod CIDR, repeated in spec.podCIDRs order"
    )
    ic.add_argument("--mtu", type=int, default=1500, help="pod MTU (default %(default)s)")
    ic.add_argument("--socket", default=DEFAULT_SOCKET, help="the agent's socket (default %(default)s)")
    _cni_dir_args(ic)
    ic.set_defaults(func=cmd_install_cni)
    rp = sub.add_parser(
        "routes", help="routes to the other nodes' pod CIDRs (proto 201); --peers FILE syncs them once"
    )
    rp.add_argument("--peers", metavar="FILE", help="sync from this peers file now")
    rp.add_argument(
        "--node-name", help="this node's name in the peers (default $NODE_NAME, else the host name)"
    )
    rp.add_argument("--dev", help="only subnets on this interface count as directly connected")
    rp.add_argument("--remove-all", action="store_true", help="delete every route of ours (proto 201)")
    rp.add_argument("--json", action="store_true")
    rp.set_defaults(func=cmd_routes)
    dp = sub.add_parser("demo", help="simulated 2-node cluster showing the bypass, then cleanup")
    dp.add_argument("--mode", choices=("xdp", "tc"), help="NIC mode for the demo (default tc)")
    dp.set_defaults(func=cmd_demo)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with entered(args.netns):
            return args.func(args)
    except (ProbeError, ConfigError, FileNotFoundError) as exc:
        print(f"xdpcnictl: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # operator-facing: one line, not a traceback
        if os.environ.get("XDPCNI_DEBUG"):
            raise
        print(f"xdpcnictl: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
