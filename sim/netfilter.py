"""Netfilter state for simulated nodes, as kube-proxy and friends leave it on a real node: nft
rulesets, per-namespace sysctls, the conntrack CLI. Shared by the tests and the benchmarks."""

from __future__ import annotations

import subprocess

from .topology import run_in, sysctl

__all__ = ["TRACKING", "conntrack", "invalid_drops", "nft", "sysctl"]

# What makes conntrack track a node's namespace, as kube-proxy's rules do: a forward chain that
# drops what conntrack calls INVALID (the counter shows whether the fast path made it so).
TRACKING = """
table inet xdpcni_test {
  chain forward {
    type filter hook forward priority 0; policy accept;
    ct state invalid counter drop
  }
}
"""


def nft(ns: str, ruleset: str) -> None:
    """Apply an nft ruleset (`nft -f -`) in namespace `ns`."""
    run_in(ns, "nft", "-f", "-", input=ruleset)


def conntrack(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """The conntrack CLI in namespace `ns`."""
    return run_in(ns, "conntrack", *args, check=check)


def invalid_drops(ns: str) -> int:
    """Packets the TRACKING chain dropped as INVALID in `ns`."""
    out = run_in(ns, "nft", "list", "chain", "inet", "xdpcni_test", "forward").stdout
    return int(out.split("counter packets ")[1].split()[0])
