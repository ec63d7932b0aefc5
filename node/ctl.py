"""xdpcnictl: load, inspect and remove the xdpcni node datapath.

  xdpcnictl load --nic eth1 [--mode auto|xdp|tc]   compile, pin, attach (idempotent; reload = upgrade)
  xdpcnictl unload                                 detach and remove every pin
  xdpcnictl status                                 what is loaded where, in which mode
  xdpcnictl netfilter [--sync]                     the node's netfilter state and the conntrack gate
  xdpcnictl endpoints                              the endpoint table
  xdpcnictl stats [--ep ID]                        fast-path / pass / drop counters per endpoint
  xdpcnictl agent [--socket PATH]                  serve CNI verbs warm (optional accelerator)
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


def cmd_status(args) -> int:
    from datapath.loader import NodeState

    root = _root(args)
    state = NodeState.read(root)
    layout = PinLayout(root)
    out = {"root": root, "loaded": layout.is_loaded(), "state": state.__dict__ if state else None}
    if layout.is_loaded():
        from datapath.endpoints import EndpointTable

        with EndpointTable(root) as table:
            out["endpoints"] = len(table.list())
        out["conntrack_gate"] = _gate(root)
    if args.json:
        print(json.dumps(out, indent=2))
    elif not out["loaded"]:
        print(f"xdpcni datapath: not loaded (no pins under {root})")
        return 1
    else:
        s = out["state"] or {}
        print(f"xdpcni datapath: loaded under {root}")
        print(f"  NIC {s.get('nic')} (ifindex {s.get('nic_ifindex')}), mode {s.get('mode')}")
        print(f"  programs built by {s.get('toolchain')}")
        if s.get("restore"):
            print(f"  at load: {s['restore']}")
        if s.get("fallback"):
            print(f"  fallback: {s['fallback']}")
        print(
            f"  netfilter {s.get('netfilter')}: conntrack gate {'on' if out.get('conntrack_gate') else 'off'}"
        )
        print(f"  programs {s.get('prog_ids')}")
        print(f"  endpoints {out['endpoints']}")
    return 0


def _gate(root: str) -> bool:
    from datapath import abi
    from datapath.maps import PinnedMap

    with PinnedMap(PinLayout(root), "node_cfg") as m:
        return bool(m.get(0).flags & abi.NODE_F_CONNTRACK)


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
    gate = _gate(root) if PinLayout(root).is_loaded() else None
    if args.json:
        print(json.dumps({"root": root, "netfilter": mode, "state": findings, "conntrack_gate": gate}))
        return 0
    print(f"netfilter setting: {mode}")
    print("netfilter state in this namespace: " + ("; ".join(findings) if findings else "none"))
    print(f"conntrack gate: {'not loaded' if gate is None else 'on' if gate else 'off'}")
    return 0


def cmd_endpoints(args) -> int:
    from datapath.endpoints import EndpointTable

    with EndpointTable(_root(args)) as table:
        eps = table.list()
    if args.json:
        print(json.dumps([e.as_dict() for e in eps], indent=2))
        return 0
    print(f"{'ID':>4}  {'IFINDEX':>7}  {'POD MAC':17}  {'HOST MAC':17}  IPS")
    for e in eps:
        print(f"{e.ep_id:>4}  {e.ifindex:>7}  {e.pod_mac:17}  {e.host_mac:17}  {' '.join(e.ips)}")
    return 0


def cmd_stats(args) -> int:
    from datapath.endpoints import EndpointTable
    from datapath.loader import NodeState
    from datapath.stats import Stats, xdp_lost

    root = _root(args)
    with EndpointTable(root) as table:
        eps = {e.ep_id: e for e in table.list()}
    ids = [args.ep] if args.ep is not None else [0, *sorted(eps)]
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
    if args.json:
        print(json.dumps([{"ep_id": i, "reason": r, "packets": p, "bytes": b} for i, r, p, b in rows]))
        return 0
    print(f"{'EP':>4}  {'WHO':24}  {'REASON':18}  {'PACKETS':>10}  {'BYTES':>12}")
    for ep_id, reason, packets, nbytes in rows:
        who = "node" if ep_id == 0 else (eps[ep_id].ips[0] if ep_id in eps and eps[ep_id].ips else "?")
        shown = "-" if nbytes is None else nbytes
        print(f"{ep_id:>4}  {who:24}  {reason.lower():18}  {packets:>10}  {shown:>12}")
    if state is not None and state.mode == "xdp":
        print(
            "drop_xdp_lost: kernel counters after the program (NIC receive drops, e.g. failed redirects; "
            "host veth XDP transmit errors), since the device came up"
        )
    return 0


def cmd_agent(args) -> int:
    from .agent import serve

    return serve(args.socket, roots=[_root(args)])


def cmd_demo(args) -> int:
    from sim.demo import run_demo

    return run_demo(mode=args.mode or "tc")


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
    sp = sub.add_parser("status", help="is the datapath loaded, where, in which mode")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_status)
    ep = sub.add_parser("endpoints", help="list the endpoint table")
    ep.add_argument("--json", action="store_true")
    ep.set_defaults(func=cmd_endpoints)
    st = sub.add_parser("stats", help="per-endpoint counters by reason (ep 0 = node-level)")
    st.add_argument("--ep", type=int, help="only this endpoint id")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_stats)
    ag = sub.add_parser(
        "agent",
        help="serve CNI verbs warm on a unix socket (the plugin falls back "
        "to in-process work when no agent runs)",
    )
    ag.add_argument("--socket", default=DEFAULT_SOCKET, help="socket path (default %(default)s)")
    ag.set_defaults(func=cmd_agent)
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
