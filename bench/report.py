"""Figures, ratios and targets from one run's raw results; the printed table; the plot.

Every ratio is computed here from figures of the same results dict, i.e. the same run.
Throughput figures are medians over the run's repetitions of "delivered per CPU-second".
"""

from __future__ import annotations

import statistics

KERNEL = "kernel"


def med(values):
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def ratio(a, b):
    return round(a / b, 3) if a is not None and b not in (None, 0) else None


def _tp(results, model, mode, where, key="per_cpu_s"):
    runs = results.get("throughput", {}).get(model, {}).get("runs", [])
    return med([r.get(key) for r in runs if r["mode"] == mode and r["where"] == where])


def build(results: dict) -> tuple[list[dict], list[dict]]:
    rows: list[dict] = []
    targets: list[dict] = []

    def row(group, figure, model, value, unit, **kw):
        r = {
            "group": group,
            "figure": figure,
            "model": model,
            "value": value,
            "unit": unit,
            "vs_kernel": kw.get("vs_kernel"),
            "vs_ceiling": kw.get("vs_ceiling"),
            "vs_bridge": kw.get("vs_bridge"),
        }
        rows.append(r)
        return r

    def target(name, measured, goal, met, source, unit="x"):
        targets.append(
            {
                "target": name,
                "measured": measured,
                "goal": goal,
                "unit": unit,
                "met": met if measured is not None else None,
                "source": source,
            }
        )

    # -- throughput, veth model (trafgen) --------------------------------------------------------
    if results.get("throughput", {}).get("veth"):
        vceil = _tp(results, "veth", "nic-drop", "nic")
        for where, label in (
            ("door", "to the pod's door"),
            ("socket", "into the pod's socket, reader incl."),
        ):
            k = _tp(results, "veth", "kernel", where)
            vc = vceil if where == "door" else None  # the ceiling compares with the door figures only
            row(
                "throughput",
                f"{label} [pkt per CPU-s]",
                "veth NIC: kernel path (ptp-style)",
                k,
                "pps/CPU-s",
                vs_ceiling=ratio(k, vc),
            )
            for mode, name in (
                ("tc", "veth NIC: xdpcni TC (redirect_peer)"),
                ("xdp", "veth NIC: xdpcni XDP (devmap)"),
            ):
                v = _tp(results, "veth", mode, where)
                row(
                    "throughput",
                    f"{label} [pkt per CPU-s]",
                    name,
                    v,
                    "pps/CPU-s",
                    vs_kernel=ratio(v, k),
                    vs_ceiling=ratio(v, vc),
                )
            if where == "socket":
                k0 = _tp(results, "veth", "kernel", where, "per_cpu0_s")
                label0 = "into the pod's socket [pkt per CPU-s, reader excluded]"
                row("throughput", label0, "veth NIC: kernel path (ptp-style)", k0, "pps/CPU-s")
                for mode, name in (
                    ("tc", "veth NIC: xdpcni TC (redirect_peer)"),
                    ("xdp", "veth NIC: xdpcni XDP (devmap)"),
                ):
                    v = _tp(results, "veth", mode, where, "per_cpu0_s")
                    row("throughput", label0, name, v, "pps/CPU-s", vs_kernel=ratio(v, k0))
                t0 = ratio(_tp(results, "veth", "tc", where, "per_cpu0_s"), k0)
                target(
                    "veth model, TC, into the socket (reader excluded) vs kernel",
                    t0,
                    ">= 1.3x",
                    t0 is not None and t0 >= 1.3,
                    "brief",
                )
            t = ratio(_tp(results, "veth", "tc", where), k)
            if where == "socket":
                row(
                    "throughput",
                    "TC drop at the NIC [pkt per CPU-s]",
                    "veth NIC: ceiling (generator + NIC rx)",
                    vceil,
                    "pps/CPU-s",
                    vs_ceiling=1.0,
                )
                target(
                    "veth model, TC, into the socket (reader incl.) vs kernel",
                    t,
                    ">= 1.3x",
                    t is not None and t >= 1.3,
                    "brief",
                )
                target(
                    "veth model, TC, into the socket (reader incl.) vs kernel",
                    t,
                    ">= 1.25x",
                    t is not None and t >= 1.25,
                    "raised aim",
                )
            else:
                target(
                    "veth model, TC, to the door vs kernel", t, ">= 1.3x", t is not None and t >= 1.3, "brief"
                )
                target(
                    "veth model, TC, to the door vs kernel",
                    t,
                    ">= 1.5x",
                    t is not None and t >= 1.5,
                    "raised aim",
                )

    # -- throughput, native-XDP model (live frames) -------------------------------------------------
    nat = results.get("throughput", {}).get("native")
    if nat and nat.get("runs"):
        ceil = _tp(results, "native", "live-kernel", "nic")
        for where, label in (
            ("door", "to the pod's door"),
            ("socket", "into the pod's socket, reader incl."),
        ):
            k = _tp(results, "native", "live-kernel", where)
            v = _tp(results, "native", "live-xdp", where)
            c = ceil if where == "door" else None
            row(
                "throughput",
                f"{label} [pkt per CPU-s]",
                "native XDP: kernel path (XDP_PASS + forwarding)",
                k,
                "pps/CPU-s",
                vs_ceiling=ratio(k, c),
            )
            row(
                "throughput",
                f"{label} [pkt per CPU-s]",
                "native XDP: xdpcni XDP redirect",
                v,
                "pps/CPU-s",
                vs_kernel=ratio(v, k),
                vs_ceiling=ratio(v, c),
            )
            if where == "socket":
                k0 = _tp(results, "native", "live-kernel", where, "per_cpu0_s")
                v0 = _tp(results, "native", "live-xdp", where, "per_cpu0_s")
                label0 = "into the pod's socket [pkt per CPU-s, reader excluded]"
                row("throughput", label0, "native XDP: kernel path (XDP_PASS + forwarding)", k0, "pps/CPU-s")
                row(
                    "throughput",
                    label0,
                    "native XDP: xdpcni XDP redirect",
                    v0,
                    "pps/CPU-s",
                    vs_kernel=ratio(v0, k0),
                )
                r0 = ratio(v0, k0)
                target(
                    "native model, XDP, into the socket (reader excluded) vs kernel",
                    r0,
                    ">= 2x",
                    r0 is not None and r0 >= 2.0,
                    "brief",
                )
            r = ratio(v, k)
            short = "to the door" if where == "door" else "into the socket (reader incl.)"
            target(f"native model, XDP, {short} vs kernel", r, ">= 2x", r is not None and r >= 2.0, "brief")
            if where == "door":
                target(
                    "native model, XDP, to the door vs kernel",
                    r,
                    ">= 3x",
                    r is not None and r >= 3.0,
                    "raised aim",
                )
                c = ratio(v, ceil)
                target(
                    "native model, XDP, to the door vs XDP_DROP ceiling",
                    c,
                    ">= 0.35x",
                    c is not None and c >= 0.35,
                    "raised aim",
                )
            else:
                target(
                    "native model, XDP, into the socket (reader incl.) vs kernel",
                    r,
                    ">= 1.4x",
                    r is not None and r >= 1.4,
                    "raised aim",
                )
        row(
            "throughput",
            "XDP_DROP on the NIC [pkt per CPU-s]",
            "native XDP: ceiling",
            ceil,
            "pps/CPU-s",
            vs_ceiling=1.0,
        )

    # -- latency ------------------------------------------------------------------------------------
    lat = results.get("latency", {}).get("runs")
    if lat:
        for sockets in ("blocking", "busy-polling"):
            sub = [r for r in lat if r.get("sockets", "blocking") == sockets]
            if not sub:
                continue
            for p in ("p50_us", "p99_us"):
                fig = f"UDP round trip {p[:3]}, {sockets} sockets [us]"
                k = med([r[p] for r in sub if r["mode"] == "kernel"])
                row("latency", fig, "veth NIC: kernel path", k, "us")
                for mode, name in (("tc", "veth NIC: xdpcni TC"), ("xdp", "veth NIC: xdpcni XDP")):
                    v = med([r[p] for r in sub if r["mode"] == mode])
                    row("latency", fig, name, v, "us", vs_kernel=ratio(v, k))
                    r = ratio(v, k)
                    if mode == "tc":
                        if p == "p99_us":
                            target(
                                f"latency p99 ({sockets}), TC vs kernel",
                                r,
                                "<= 0.80x (20% lower)",
                                r is not None and r <= 0.8,
                                "brief",
                            )
                        target(
                            f"latency {p[:3]} ({sockets}), TC vs kernel",
                            r,
                            "<= 0.70x (30% lower)",
                            r is not None and r <= 0.7,
                            "raised aim",
                        )

    # -- program cost ---------------------------------------------------------------------------------
    pc = results.get("program_cost", {})
    tr = pc.get("test_run")
    if tr:
        row(
            "program cost",
            "xdp_nic, BPF_PROG_TEST_RUN (minus empty) [ns/pkt]",
            "test run",
            tr["xdp"]["xdp_nic_ns"],
            "ns",
        )
        row(
            "program cost",
            "tc_nic, BPF_PROG_TEST_RUN (minus empty) [ns/pkt]",
            "test run",
            tr["tc"]["tc_nic_ns"],
            "ns",
        )
        row(
            "program cost",
            "empty XDP program, BPF_PROG_TEST_RUN [ns/run]",
            "test run",
            tr["xdp"]["empty_program_ns"],
            "ns",
        )
        target(
            "program cost xdp_nic (test run, minus empty program)",
            tr["xdp"]["xdp_nic_ns"],
            "<= 50 ns",
            tr["xdp"]["xdp_nic_ns"] <= 50,
            "brief",
            unit="ns",
        )
        target(
            "program cost tc_nic (test run, minus empty program)",
            tr["tc"]["tc_nic_ns"],
            "<= 50 ns",
            tr["tc"]["tc_nic_ns"] <= 50,
            "brief",
            unit="ns",
        )
    bs = pc.get("bpf_stats")
    if bs:
        for key, label in (
            ("xdp_nic_on_veth", "xdp_nic attached to the veth NIC"),
            ("tc_nic_on_veth", "tc_nic attached to the veth NIC"),
            ("tc_pod_latency", "tc_pod on the host veth (sockperf replies)"),
            ("xdp_nic_on_veth_minus_door", "xdp_nic on the veth NIC minus a counting XDP_DROP program"),
            ("tc_nic_on_veth_minus_door", "tc_nic on the veth NIC minus a counting TC drop program"),
            ("live_xdp_nic_minus_drop", "live frames: prologue+xdp_nic minus prologue+XDP_DROP"),
        ):
            if bs.get(key) is not None:
                row("program cost", f"{label}, bpf_stats [ns/run]", "bpf_stats", bs[key], "ns")

    # -- the monitor (bench/realnode.py monitor_costs) --------------------------------------------------
    mon = pc.get("monitor")
    if mon:
        for hook in ("xdp", "tc"):
            h = mon.get(hook)
            if h:
                fig = f"{h['program']} test run, fast path, monitor [ns/pkt]"
                row("program cost", fig, "monitor off", h["monitor_off_ns"], "ns")
                row("program cost", fig, "monitor on, 1-in-100 sampling", h["monitor_on_1_in_100_ns"], "ns")

    # -- conntrack gate (bench/realnode.py gate_costs) ---------------------------------------------------
    g = pc.get("conntrack_gate")
    if g:
        for hook in ("xdp", "tc"):
            h = g.get(hook)
            if not h:
                continue
            for proto in ("udp", "tcp"):
                fig = f"{h['program']} test run, {proto.upper()} frame, conntrack gate [ns/pkt]"
                for case, name in (
                    ("off", "gate off (bypass)"),
                    ("on_hit", "gate on, hit (assured entry)"),
                    ("on_miss", "gate on, miss (no entry: to the stack)"),
                ):
                    row("conntrack gate", fig, name, h[f"{proto}_{case}_ns"], "ns")
        for hook in ("xdp", "tc"):
            h = g.get(hook)
            if not h:
                continue
            for proto in ("udp", "tcp"):
                for case in ("hit", "miss"):
                    row(
                        "conntrack gate",
                        f"cost of the conntrack check (gate on minus off), {h['program']} [ns/pkt]",
                        f"{proto.upper()} {case}",
                        h[f"{proto}_check_{case}_ns"],
                        "ns",
                    )

    # -- realistic node (bench/realnode.py) ----------------------------------------------------------
    rn = results.get("realistic_node")
    if rn and rn.get("tcp"):
        names = {
            "kernel": "realistic node: kernel path (conntrack, 1000 services)",
            "respect": "realistic node: xdpcni TC, netfilter: respect",
            "bypass": "realistic node: xdpcni TC, netfilter: bypass (reference)",
        }
        for direction, label in (("wire-to-pod", "wire host -> pod"), ("pod-to-wire", "pod -> wire host")):
            for key, unit, fig in (
                ("gbit_s", "Gbit/s", f"TCP bulk {label} [Gbit/s]"),
                ("cpu_s_per_gb", "CPU-s/GB", f"TCP bulk {label} [CPU-s per GB, all CPUs]"),
            ):
                k = med(
                    [r[key] for r in rn["tcp"] if r["direction"] == direction and r["config"] == "kernel"]
                )
                for config, name in names.items():
                    v = med(
                        [r[key] for r in rn["tcp"] if r["direction"] == direction and r["config"] == config]
                    )
                    if v is None:
                        continue
                    row(
                        "realistic node",
                        fig,
                        name,
                        v,
                        unit,
                        vs_kernel=None if config == "kernel" else ratio(v, k),
                    )
    if rn and rn.get("udp"):
        names = {
            "kernel": "realistic node: kernel path (conntrack, 1000 services)",
            "respect": "realistic node: xdpcni TC, respect (one-way UDP never ASSURED: stack)",
        }
        for where, label in (
            ("door", "to the pod's door"),
            ("socket", "into the pod's socket, reader incl."),
        ):
            fig = f"UDP 64 B {label} [pkt per CPU-s]"
            k = med([r["per_cpu_s"] for r in rn["udp"] if r["where"] == where and r["config"] == "kernel"])
            for config, name in names.items():
                v = med([r["per_cpu_s"] for r in rn["udp"] if r["where"] == where and r["config"] == config])
                row(
                    "realistic node",
                    fig,
                    name,
                    v,
                    "pps/CPU-s",
                    vs_kernel=None if config == "kernel" else ratio(v, k),
                )

    # -- CNI ------------------------------------------------------------------------------------------
    cni = results.get("cni")
    if cni and cni.get("add"):
        b_add = cni["add"]["bridge"]["p50_ms"]
        for verb in ("add", "del"):
            for p in ("p50_ms", "p99_ms"):
                ref = cni[verb]["bridge"][p]
                for plugin, name in (
                    ("xdpcni", "xdpcni (in-process, no agent)"),
                    ("xdpcni-agent", "xdpcni via node agent"),
                    ("bridge", "bridge + host-local"),
                    ("ptp", "ptp + host-local"),
                ):
                    if plugin in cni[verb]:
                        v = cni[verb][plugin][p]
                        row(
                            "cni",
                            f"{verb.upper()} {p[:3]} over {cni['n_pods']} pods [ms]",
                            name,
                            v,
                            "ms",
                            vs_bridge=ratio(v, ref),
                        )
        for _n, res in (cni.get("add_with_existing") or {}).items():
            for plugin, name in (
                ("xdpcni", "xdpcni (in-process)"),
                ("xdpcni-agent", "xdpcni via node agent"),
            ):
                v = res[plugin]["add"]["p50_ms"]
                row(
                    "cni",
                    f"ADD p50 with {res['endpoints_present']} endpoints [ms]",
                    name,
                    v,
                    "ms",
                    vs_bridge=ratio(v, b_add),
                )
        for plugin in ("xdpcni", "xdpcni-agent"):
            v = cni["add"][plugin]["p50_ms"]
            target(
                f"CNI ADD p50, {plugin} vs bridge",
                ratio(v, b_add),
                "<= 1.0x",
                ratio(v, b_add) <= 1.0,
                "brief",
            )
    return rows, targets


def breakdown(results: dict) -> dict:
    """Nanoseconds of CPU per delivered packet at each stage (1e9 / per-CPU-second figure), and what
    the node-side bypass can win at most once the stages it does not touch are counted."""

    def ns(model, mode, where, key="per_cpu_s"):
        v = _tp(results, model, mode, where, key)
        return round(1e9 / v, 1) if v else None

    out = {}
    if results.get("throughput", {}).get("veth"):
        c = ns("veth", "nic-drop", "nic")
        m = {"ceiling_generator_and_nic_rx_ns": c}
        for mode in ("kernel", "tc", "xdp"):
            d, s0 = ns("veth", mode, "door"), ns("veth", mode, "socket", "per_cpu0_s")
            m[mode] = {
                "to_door_ns": d,
                "node_side_ns": round(d - c, 1) if d and c else None,
                "socket_datapath_cpu_ns": s0,
                "pod_stack_ns": round(s0 - d, 1) if s0 and d else None,
            }
        out["veth"] = m
    if results.get("throughput", {}).get("native", {}).get("runs"):
        c = ns("native", "live-kernel", "nic")
        m = {"ceiling_xdp_drop_ns": c}
        for mode in ("live-kernel", "live-xdp"):
            d, s0 = ns("native", mode, "door"), ns("native", mode, "socket", "per_cpu0_s")
            m[mode] = {
                "to_door_ns": d,
                "node_side_ns": round(d - c, 1) if d and c else None,
                "socket_datapath_cpu_ns": s0,
                "pod_stack_ns": round(s0 - d, 1) if s0 and d else None,
            }
        out["native"] = m
    for model, (kname, fname) in (("veth", ("kernel", "tc")), ("native", ("live-kernel", "live-xdp"))):
        m = out.get(model)
        if not m or not m[kname]["socket_datapath_cpu_ns"] or not m[fname]["pod_stack_ns"]:
            continue
        base = m.get("ceiling_generator_and_nic_rx_ns") or m.get("ceiling_xdp_drop_ns")
        k_sock = m[kname]["socket_datapath_cpu_ns"]
        if base is None:
            continue
        # Best case for "into the socket": node side free, generator/NIC and pod stack unchanged.
        m["socket_ratio_if_node_side_were_free"] = round(k_sock / (base + m[fname]["pod_stack_ns"]), 2)
    return out


def breakdown_text(b: dict) -> str:
    lines = ["where the time goes (ns of CPU per delivered packet, datapath CPU only, medians)"]
    for model, m in b.items():
        base_key = "ceiling_generator_and_nic_rx_ns" if model == "veth" else "ceiling_xdp_drop_ns"
        lines.append(f"  {model}: ceiling (generator + NIC receive/drop) {m.get(base_key)} ns")
        for mode, v in m.items():
            if isinstance(v, dict):
                lines.append(
                    f"    {mode:12} to the door {v['to_door_ns']} ns (node side {v['node_side_ns']} ns), "
                    f"into the socket {v['socket_datapath_cpu_ns']} ns (pod stack {v['pod_stack_ns']} ns)"
                )
        if m.get("socket_ratio_if_node_side_were_free"):
            lines.append(
                f"    into-the-socket ratio if the node side cost nothing: "
                f"{m['socket_ratio_if_node_side_were_free']}x"
            )
    return "\n".join(lines)


def _fmt_val(v, unit):
    if v is None:
        return "-"
    if unit == "pps/CPU-s":
        return f"{v / 1e6:.3f} M" if v >= 1e6 else f"{v / 1e3:.0f} k"
    if unit in ("us", "ms", "ns"):
        return f"{v:.1f} {unit}"
    if unit in ("Gbit/s", "CPU-s/GB"):
        return f"{v:.2f} {unit}"
    return str(v)


def _fmt_ratio(r):
    return "-" if r is None else f"{r:.2f}x"


def table(rows: list[dict], targets: list[dict]) -> str:
    head = ("figure", "model", "value", "vs kernel", "vs ceiling", "vs bridge")
    body = [
        (
            r["figure"],
            r["model"],
            _fmt_val(r["value"], r["unit"]),
            _fmt_ratio(r["vs_kernel"]),
            _fmt_ratio(r["vs_ceiling"]),
            _fmt_ratio(r["vs_bridge"]),
        )
        for r in rows
    ]
    w = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head))]
    line = "  ".join("-" * n for n in w)
    out = ["  ".join(str(h).ljust(w[i]) for i, h in enumerate(head)), line]
    group = None
    for r, b in zip(rows, body):
        if group is not None and r["group"] != group:
            out.append("")
        group = r["group"]
        out.append("  ".join(str(x).ljust(w[i]) if i < 2 else str(x).rjust(w[i]) for i, x in enumerate(b)))
    out.append("")
    out.append("targets")
    for t in targets:
        m = t["measured"]
        ms = "-" if m is None else (f"{m:.2f}x" if t.get("unit", "x") == "x" else f"{m:.1f} {t['unit']}")
        verdict = {True: "MET", False: "MISSED", None: "n/a"}[t["met"]]
        out.append(f"  [{verdict:6}] {t['target']}: {ms} (goal {t['goal']}, {t['source']})")
    return "\n".join(out)


_SHORT = [
    ("xdp_nic, BPF_PROG_TEST_RUN (minus empty)", "xdp_nic test run\n(minus empty prog)"),
    ("tc_nic, BPF_PROG_TEST_RUN (minus empty)", "tc_nic test run\n(minus empty prog)"),
    ("empty XDP program, BPF_PROG_TEST_RUN", "empty XDP prog\ntest run"),
    ("xdp_nic attached to the veth NIC, bpf_stats", "xdp_nic on veth NIC\nbpf_stats"),
    ("tc_nic attached to the veth NIC, bpf_stats", "tc_nic on veth NIC\nbpf_stats"),
    ("tc_pod on the host veth (sockperf replies), bpf_stats", "tc_pod (pod egress)\nbpf_stats"),
    (
        "xdp_nic on the veth NIC minus a counting XDP_DROP program, bpf_stats",
        "xdp_nic on veth NIC\nbpf_stats - trivial prog",
    ),
    (
        "tc_nic on the veth NIC minus a counting TC drop program, bpf_stats",
        "tc_nic on veth NIC\nbpf_stats - trivial prog",
    ),
    (
        "live frames: prologue+xdp_nic minus prologue+XDP_DROP, bpf_stats",
        "xdp_nic live frames\nbpf_stats - XDP_DROP",
    ),
]


def _short(figure: str) -> str:
    f = figure.replace(" [ns/pkt]", "").replace(" [ns/run]", "")
    return next((s for long, s in _SHORT if f == long), f)


def plot(results: dict, rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 2, figsize=(14, 15))
    meta = results.get("meta", {})
    fig.suptitle(
        f"xdpcni benchmarks — {meta.get('date', '')}, kernel {meta.get('kernel', '')}, "
        f"{meta.get('cpus', '?')} CPUs{' (quick run)' if meta.get('quick') else ''}",
        fontsize=11,
    )

    # (a) throughput
    ax = axes[0][0]
    groups = [
        ("veth", "door", "veth NIC\nto the door"),
        ("veth", "socket", "veth NIC\ninto the socket"),
        ("native", "door", "native XDP\nto the door"),
        ("native", "socket", "native XDP\ninto the socket"),
    ]
    series = [
        ("kernel path", {"veth": "kernel", "native": "live-kernel"}, "#888888"),
        ("xdpcni TC", {"veth": "tc"}, "#1f77b4"),
        ("xdpcni XDP", {"veth": "xdp", "native": "live-xdp"}, "#d62728"),
    ]
    width = 0.26
    for si, (label, modes, color) in enumerate(series):
        xs, ys = [], []
        for gi, (model, where, _) in enumerate(groups):
            mode = modes.get(model)
            v = _tp(results, model, mode, where) if mode else None
            if v is not None:
                xs.append(gi + (si - 1) * width)
                ys.append(v / 1e6)
        bars = ax.bar(xs, ys, width, label=label, color=color)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(range(len(groups)), [g[2] for g in groups], fontsize=8)
    ax.set_ylabel("Mpps per CPU-second (median)")
    ceil = _tp(results, "native", "live-kernel", "nic")
    ax.set_title(
        "Throughput into a pod, 64-byte UDP"
        + (f" (XDP_DROP ceiling {ceil / 1e6:.1f} Mpps/CPU-s)" if ceil else ""),
        fontsize=10,
    )
    ax.legend(fontsize=8)

    # (b) latency
    ax = axes[0][1]
    lat = results.get("latency", {}).get("runs") or []
    modes = [
        ("kernel", "kernel path", "#888888"),
        ("tc", "xdpcni TC", "#1f77b4"),
        ("xdp", "xdpcni XDP", "#d62728"),
    ]
    cats = [
        ("blocking", "p50_us"),
        ("blocking", "p99_us"),
        ("busy-polling", "p50_us"),
        ("busy-polling", "p99_us"),
    ]
    for i, (mode, label, color) in enumerate(modes):
        xs, vals = [], []
        for ci, (sockets, p) in enumerate(cats):
            v = med([r[p] for r in lat if r["mode"] == mode and r.get("sockets", "blocking") == sockets])
            if v is not None:
                xs.append(ci + (i - 1) * width)
                vals.append(v)
        bars = ax.bar(xs, vals, width, label=label, color=color)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(
        range(len(cats)),
        ["p50\nblocking", "p99\nblocking", "p50\nbusy-polling", "p99\nbusy-polling"],
        fontsize=8,
    )
    ax.set_ylabel("round trip, µs (median of runs)")
    ax.set_title("sockperf UDP ping-pong, wire host <-> pod (veth NIC)", fontsize=10)
    ax.legend(fontsize=8)

    # (c) program cost
    ax = axes[1][0]
    pcs = [r for r in rows if r["group"] == "program cost" and r["value"] is not None]
    labels = [_short(r["figure"]) for r in pcs]
    bars = ax.barh(range(len(pcs)), [r["value"] for r in pcs], color="#2ca02c")
    ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_yticks(range(len(pcs)), labels, fontsize=7)
    ax.axvline(50, color="red", linestyle="--", linewidth=1, label="target 50 ns")
    ax.set_xlabel("ns per packet")
    ax.set_title("Program cost", fontsize=10)
    ax.legend(fontsize=8)
    ax.invert_yaxis()

    # (d) CNI
    ax = axes[1][1]
    cni = results.get("cni") or {}
    plugins = [p for p in ("xdpcni", "xdpcni-agent", "bridge", "ptp") if p in (cni.get("add") or {})]
    colors = {"xdpcni": "#d62728", "xdpcni-agent": "#ff9896", "bridge": "#888888", "ptp": "#bbbbbb"}
    for i, p in enumerate(plugins):
        w = 0.8 / max(1, len(plugins))
        xs = [0 + (i - (len(plugins) - 1) / 2) * w, 1 + (i - (len(plugins) - 1) / 2) * w]
        p50 = [cni["add"][p]["p50_ms"], cni["del"][p]["p50_ms"]]
        p99 = [cni["add"][p]["p99_ms"], cni["del"][p]["p99_ms"]]
        bars = ax.bar(
            xs,
            p50,
            w,
            yerr=[[0, 0], [max(0, a - b) for a, b in zip(p99, p50)]],
            capsize=3,
            label=p,
            color=colors[p],
        )
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks([0, 1], [f"ADD ({cni.get('n_pods', '?')} pods)", "DEL"])
    ax.set_ylabel("ms (bar p50, whisker p99)")
    ax.set_title("CNI call latency (whole plugin process)", fontsize=10)
    if plugins:
        ax.legend(fontsize=8)

    # (e) conntrack gate cost
    ax = axes[2][0]
    g = results.get("program_cost", {}).get("conntrack_gate") or {}
    groups = [(hook, proto) for hook in ("xdp", "tc") for proto in ("udp", "tcp") if hook in g]
    cases = [
        ("off", "gate off", "#888888"),
        ("on_hit", "gate on, hit", "#1f77b4"),
        ("on_miss", "gate on, miss", "#ff7f0e"),
    ]
    for ci, (case, label, color) in enumerate(cases):
        xs = [gi + (ci - 1) * width for gi in range(len(groups))]
        ys = [g[hook][f"{proto}_{case}_ns"] for hook, proto in groups]
        bars = ax.bar(xs, ys, width, label=label, color=color)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(
        range(len(groups)), [f"{g[h]['program']}\n{p.upper()} frame" for h, p in groups], fontsize=8
    )
    ax.margins(y=0.25)  # room for the legend above the bars
    ax.set_ylabel("ns per packet (test run, minus empty program)")
    ax.set_title("Conntrack gate (netfilter: respect) cost per packet", fontsize=10)
    if groups:
        ax.legend(fontsize=8)

    # (f) realistic node, TCP bulk
    ax = axes[2][1]
    rn = (results.get("realistic_node") or {}).get("tcp") or []
    dirs = [("wire-to-pod", "wire host -> pod"), ("pod-to-wire", "pod -> wire host")]
    cfgs = [
        ("kernel", "kernel path", "#888888"),
        ("respect", "xdpcni TC, respect", "#1f77b4"),
        ("bypass", "xdpcni TC, bypass", "#d62728"),
    ]
    for ci, (config, label, color) in enumerate(cfgs):
        xs, ys = [], []
        for di, (d, _) in enumerate(dirs):
            v = med([r["gbit_s"] for r in rn if r["direction"] == d and r["config"] == config])
            if v is not None:
                xs.append(di + (ci - 1) * width)
                ys.append(v)
        if xs:
            bars = ax.bar(xs, ys, width, label=label, color=color)
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(range(len(dirs)), [d[1] for d in dirs], fontsize=8)
    ax.set_ylabel("Gbit/s (median)")
    ax.set_title("Realistic node: kube-proxy-like rules (1000 services), conntrack on; TCP bulk", fontsize=10)
    if rn:
        ax.legend(fontsize=8)

    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
