"""Rows, ratios vs ptp, targets, the printed matrix and docs/bench-tcp.png for the TCP family
(bench/tcp.py). Pure: everything comes from one run's results dict, every ratio from the same run.
"""

from __future__ import annotations

from .report import med, ratio

KIND_NAMES = {
    "tc": "xdpcni TC",
    "xdp": "xdpcni XDP",
    "ptp": "ptp",
    "bridge": "bridge",
}
REFERENCE = "ptp"
PATH_NAMES = {
    "pod-pod-same": "pod -> pod, same node",
    "pod-pod-cross": "pod -> pod, other node",
    "pod-node": "pod -> its node",
    "wire-pod": "wire host -> pod",
    "svc-same": "pod -> ClusterIP, backend same node",
    "svc-cross": "pod -> ClusterIP, backend other node",
    "wire-wire": "wire host -> host on the wire (no node)",
    "hosts-wire": "host -> host, across the wire (no node)",
    "veth-pair": "netns -> netns over one veth pair (no node)",
}
# The node-side baseline of each row: the same two endpoints with no node between them, with the
# same packet shapes (measured next to the row, same repetition). Node side = the row's CPU-s/GB
# minus the baseline's, repetition by repetition: what the node(s) cost.
BASELINE = {
    "wire-pod": "wire-wire",  # wire host -> a host on the same bridge (segments, as into a node)
    "pod-pod-cross": "hosts-wire",  # a host behind a veth (GSO) -> a host on the bridge (segmented)
    "svc-cross": "hosts-wire",
    "pod-pod-same": "veth-pair",  # GSO end to end
    "svc-same": "veth-pair",
}
# What carries each row's packets once a flow is established, for xdpcni (docs/bench.md): the
# handshake, the close and the first segments (until conntrack has the flow ASSURED) always take
# the stack; NAT flows (Services) never leave it on the node that translates them.
DATAPATH = {
    "pod-pod-same": "fast path: tc_pod redirect_peer into the other pod",
    "pod-pod-cross": "fast path on both nodes: tc_pod fib+redirect_neigh out; NIC program into the pod",
    "pod-node": "stack: traffic for the node itself",
    "wire-pod": "fast path: NIC program (tc_nic / xdp_nic) into the pod",
    "svc-same": "stack: DNAT on the node (IPS_DST_NAT), both directions",
    "svc-cross": "stack on the client's node (DNAT); fast path into the backend on the other node",
    "wire-wire": "no node (baseline)",
    "hosts-wire": "no node (baseline)",
    "veth-pair": "no node (baseline)",
}
# (figure key, label, unit, test, field, better): "lower"/"higher" is better.
FIGURES = (
    ("stream1_gbit", "TCP_STREAM 1 CPU", "Gbit/s", "stream1", "gbit_s", "higher"),
    ("stream1_cpu", "TCP_STREAM 1 CPU, all", "CPU-s/GB", "stream1", "cpu_s_per_gb", "lower"),
    ("stream1_node", "TCP_STREAM 1 CPU, node side", "CPU-s/GB", "stream1", "node_cpu_s_per_gb", "lower"),
    ("stream2_gbit", "TCP_STREAM 2 CPUs", "Gbit/s", "stream2", "gbit_s", "higher"),
    ("stream2_cpu", "TCP_STREAM 2 CPUs, all", "CPU-s/GB", "stream2", "cpu_s_per_gb", "lower"),
    ("stream2_node", "TCP_STREAM 2 CPUs, node side", "CPU-s/GB", "stream2", "node_cpu_s_per_gb", "lower"),
    ("rr_tx", "TCP_RR", "tx/s", "rr", "tx_s", "higher"),
    ("rr_p50", "TCP_RR p50", "us", "rr", "p50_us", "lower"),
    ("rr_p90", "TCP_RR p90", "us", "rr", "p90_us", "lower"),
    ("rr_p99", "TCP_RR p99", "us", "rr", "p99_us", "lower"),
    ("rr_cpu", "TCP_RR CPU per tx", "us", "rr", "cpu_us_per_tx", "lower"),
    ("crr_tx", "TCP_CRR", "tx/s", "crr", "tx_s", "higher"),
    ("crr_cpu", "TCP_CRR CPU per tx", "us", "crr", "cpu_us_per_tx", "lower"),
)
FAST_PATH_ROWS = ("pod-pod-same", "pod-pod-cross", "wire-pod")
BASELINE_PATHS = ("wire-wire", "hosts-wire", "veth-pair")


def _runs(tcp: dict, kind: str, path: str, test: str) -> list[dict]:
    return [r for r in tcp.get("runs", []) if r["kind"] == kind and r["path"] == path and r["test"] == test]


def node_sides(tcp: dict, kind: str, path: str, test: str) -> list[float]:
    """Per repetition: the row's CPU-s/GB minus ptp's baseline path's of the same repetition."""
    if path not in BASELINE:
        return []
    base = {r["rep"]: r.get("cpu_s_per_gb") for r in _runs(tcp, REFERENCE, BASELINE[path], test)}
    return [
        round(r["cpu_s_per_gb"] - base[r["rep"]], 4)
        for r in _runs(tcp, kind, path, test)
        if r.get("cpu_s_per_gb") is not None and base.get(r["rep"]) is not None
    ]


def value(tcp: dict, kind: str, path: str, test: str, key: str) -> float | None:
    """Median over repetitions of one figure (node side: of the per-repetition differences)."""
    if key == "node_cpu_s_per_gb":
        v = med(node_sides(tcp, kind, path, test))
        return round(v, 4) if v is not None else None
    return med([r.get(key) for r in _runs(tcp, kind, path, test)])


def spread(values: list[float]) -> float:
    """Max - min (0 for fewer than two values)."""
    return round(max(values) - min(values), 4) if len(values) > 1 else 0.0


def build(tcp: dict) -> tuple[list[dict], list[dict]]:
    """One row per (path, figure): each kind's value and its ratio to ptp's in the same run. Node-side
    rows also carry their noise: the spread of the per-repetition node sides."""
    kinds = [k for k in KIND_NAMES if any(r["kind"] == k for r in tcp.get("runs", []))]
    rows: list[dict] = []
    for path in PATH_NAMES:
        for fkey, label, unit, test, key, better in FIGURES:
            vals = {k: value(tcp, k, path, test, key) for k in kinds}
            if all(v is None for v in vals.values()):
                continue
            ref = vals.get(REFERENCE)
            row = {
                "path": path,
                "figure": fkey,
                "label": label,
                "unit": unit,
                "better": better,
                "values": vals,
                "vs_ptp": {k: ratio(v, ref) for k, v in vals.items()},
                "datapath": DATAPATH[path],  # what carries the row under xdpcni
            }
            if key == "node_cpu_s_per_gb":
                row["noise"] = {k: spread(node_sides(tcp, k, path, test)) for k in kinds}
            rows.append(row)
    return rows, targets(rows)


def _row(rows: list[dict], path: str, figure: str) -> dict | None:
    return next((r for r in rows if r["path"] == path and r["figure"] == figure), None)


def targets(rows: list[dict]) -> list[dict]:
    """Issue 16's targets, per xdpcni mode and row, with the measured ratio to ptp."""
    out = []
    checks = [
        (
            f"TCP_STREAM {c} CPU{'s' if c == 2 else ''} node-side CPU/GB vs ptp",
            f"stream{c}_node",
            p,
            "<= 0.8x",
        )
        for c in (1, 2)
        for p in FAST_PATH_ROWS
    ]
    checks += [("TCP_RR p99 vs ptp", "rr_p99", p, "<= 0.8x") for p in ("wire-pod", "pod-pod-same")]
    checks += [("TCP_CRR tx/s vs ptp", "crr_tx", p, ">= 1.0x") for p in PATH_NAMES if p not in BASELINE_PATHS]
    for name, figure, path, goal in checks:
        r = _row(rows, path, figure)
        for kind in ("tc", "xdp"):
            m = r["vs_ptp"].get(kind) if r else None
            met = None if m is None else (m <= 0.8 if goal.startswith("<=") else m >= 1.0)
            note = ""
            noise = (r or {}).get("noise")
            if m is not None and noise:
                # A node side no larger than its run-to-run spread makes no ratio: say so, judge nothing.
                ref, n = r["values"][REFERENCE], max(noise[REFERENCE], noise[kind])
                if ref <= n:
                    met, note = (
                        None,
                        f"ptp's node side {ref:.2f} CPU-s/GB is within the spread of its runs ({n:.2f})",
                    )
            out.append(
                {
                    "target": f"{name}, {PATH_NAMES[path]}, {KIND_NAMES[kind]}",
                    "kind": kind,
                    "path": path,
                    "figure": figure,
                    "measured": m,
                    "goal": goal,
                    "met": met,
                    "note": note,
                }
            )
    return out


def _fmt(v, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "tx/s":
        return f"{v:,.0f}"
    if unit in ("us",):
        return f"{v:.0f}" if v >= 100 else f"{v:.1f}"
    if unit == "CPU-s/GB":
        return f"{v:.2f}"
    return f"{v:.2f}"


def _cell(r: dict, kind: str) -> str:
    v = _fmt(r["values"].get(kind), r["unit"])
    x = r["vs_ptp"].get(kind)
    return v if kind == REFERENCE or x is None else f"{v} ({x:.2f}x)"


def table(rows: list[dict], tgts: list[dict], markdown: bool = False) -> str:
    """The matrix: one line per (path, figure), one column per CNI, ratio to ptp in brackets."""
    kinds = [k for k in KIND_NAMES if any(k in r["values"] for r in rows)]
    head = ["path", "figure", *[KIND_NAMES[k] for k in kinds]]
    body = [
        [PATH_NAMES[r["path"]], f"{r['label']} [{r['unit']}]", *[_cell(r, k) for k in kinds]] for r in rows
    ]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        prev = None
        for b in body:
            path = b[0] if b[0] != prev else ""
            prev = b[0]
            lines.append("| " + " | ".join([path, *b[1:]]) + " |")
    else:
        w = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head))]
        lines = ["  ".join(h.ljust(w[i]) for i, h in enumerate(head)), "  ".join("-" * n for n in w)]
        prev = None
        for b in body:
            if prev is not None and b[0] != prev:
                lines.append("")
            prev = b[0]
            lines.append("  ".join(x.ljust(w[i]) if i < 2 else x.rjust(w[i]) for i, x in enumerate(b)))
    if tgts:
        lines += ["", "targets (ratio to ptp, same run)"]
    for t in tgts:
        verdict = {True: "MET", False: "MISSED", None: "n/a"}[t["met"]]
        m = "-" if t["measured"] is None else f"{t['measured']:.2f}x"
        note = f"; {t['note']}" if t.get("note") else ""
        lines.append(f"{'- ' if markdown else '  '}[{verdict}] {t['target']}: {m} (goal {t['goal']}{note})")
    return "\n".join(lines)


PLOTS = (  # (figure, title, bar label format)
    ("stream1_gbit", "TCP_STREAM, 1 CPU: Gbit/s", "%.2f"),
    ("stream1_node", "TCP_STREAM, 1 CPU: node-side CPU-s per GB (lower is better)", "%.2f"),
    ("stream2_gbit", "TCP_STREAM, 2 CPUs: Gbit/s", "%.2f"),
    ("rr_p99", "TCP_RR (sockperf, 64 B, full round trip): p99 µs (lower is better)", "%.0f"),
    ("rr_p50", "TCP_RR: p50 µs (lower is better)", "%.0f"),
    ("crr_tx", "TCP_CRR (wrk -c1, Connection: close): transactions/s", "%.0f"),
)
SHORT = {
    "pod-pod-same": "pod→pod\nsame node",
    "pod-pod-cross": "pod→pod\nother node",
    "pod-node": "pod→\nits node",
    "wire-pod": "wire host\n→pod",
    "svc-same": "ClusterIP\nsame node",
    "svc-cross": "ClusterIP\nother node",
}
COLORS = {"tc": "#1f77b4", "xdp": "#d62728", "ptp": "#888888", "bridge": "#bbbbbb"}


def plot(tcp: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = tcp["rows"]
    kinds = [k for k in KIND_NAMES if any(k in r["values"] for r in rows)]
    paths = [p for p in SHORT if any(r["path"] == p for r in rows)]
    fig, axes = plt.subplots(3, 2, figsize=(15, 14))
    meta = tcp.get("meta", {})
    fig.suptitle(
        f"xdpcni TCP matrix vs ptp and bridge — {meta.get('date', '')}, kernel {meta.get('kernel', '')}, "
        f"{meta.get('cpus', '?')} CPUs{' (quick run)' if meta.get('params', {}).get('quick') else ''}",
        fontsize=11,
    )
    width = 0.8 / max(1, len(kinds))
    for ax, (fkey, title, fmt) in zip(axes.flat, PLOTS):
        for ki, kind in enumerate(kinds):
            xs, ys = [], []
            for pi, p in enumerate(paths):
                r = _row(rows, p, fkey)
                v = r["values"].get(kind) if r else None
                if v is not None:
                    xs.append(pi + (ki - (len(kinds) - 1) / 2) * width)
                    ys.append(v)
            bars = ax.bar(xs, ys, width, label=KIND_NAMES[kind], color=COLORS[kind])
            ax.bar_label(bars, fmt=fmt, fontsize=6, rotation=90, padding=2)
        ax.set_xticks(range(len(paths)), [SHORT[p] for p in paths], fontsize=8)
        ax.margins(y=0.15)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    """`python -m bench.tcp_report [results.json] [--markdown] [--rebuild PLOT]`: print the matrix of a
    stored run; --rebuild also stores the recomputed rows and targets and redraws the plot (the
    measured runs are not touched)."""
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m bench.tcp_report")
    ap.add_argument("results", nargs="?", default="bench/results.json")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--rebuild", metavar="PLOT", help="write rows/targets back and redraw PLOT")
    ap.add_argument("--figures", help="comma-separated figure keys to print (default: all)")
    ap.add_argument("--no-targets", action="store_true")
    args = ap.parse_args(argv)
    with open(args.results) as fh:
        tcp = json.load(fh)["tcp"]
    tcp["rows"], tcp["targets"] = build(tcp)
    keep = args.figures.split(",") if args.figures else None
    rows = [r for r in tcp["rows"] if keep is None or r["figure"] in keep]
    print(table(rows, [] if args.no_targets else tcp["targets"], markdown=args.markdown))
    if args.rebuild:
        from .tcp import save

        save(args.results, tcp)
        plot(tcp, args.rebuild)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
