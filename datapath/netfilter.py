"""The node's netfilter state, and the `netfilter` node setting that decides what the fast path
may skip (docs/design.md "Netfilter and conntrack").

  bypass   the fast path ignores netfilter: right only on nodes without NAT, conntrack-based
           rules or policy engines (no kube-proxy, no masquerade).
  respect  (default) the conntrack check runs on every fast-path hook: a packet takes the shortcut
           only when conntrack has an assured, established, untranslated entry for its flow; with
           programs that cannot look conntrack up, every pod packet goes to the stack.
  auto     bypass while the node's network namespace has no netfilter state at all (no nftables
           table, no legacy iptables table, no conntrack entry), respect as soon as it has any.
           Re-decided while running (the node agent every second, every CNI verb, `xdpcnictl
           load`): kube-proxy adds its rules after the datapath is loaded.

The decision is one bit in the node_cfg map (XDPCNI_NODE_F_CONNTRACK) that the programs read per
packet, so flipping it needs no reload.
"""

from __future__ import annotations

from . import abi
from .maps import PinnedMap
from .pins import PinLayout

MODES = ("respect", "bypass", "auto")
DEFAULT_MODE = "respect"


def state() -> list[str]:
    """What netfilter state the caller's network namespace has, one line per finding ([] = none).

    Sources: nftables tables of every family (iptables-nft lives there too) over netlink
    (pyroute2), legacy x_tables tables (/proc/net/ip{,6}_tables_names), and the conntrack entry
    count (/proc/sys/net/netfilter/nf_conntrack_count: something made conntrack track this netns).
    """
    found = []
    from pyroute2.nftables.main import NFTables

    with NFTables(nfgen_family=0) as nft:  # NFPROTO_UNSPEC: tables of every family
        for t in nft.get_tables():
            found.append(f"nftables table {t.get_attr('NFTA_TABLE_NAME')} (family {t['nfgen_family']})")
    for fam in ("ip", "ip6"):
        try:
            with open(f"/proc/net/{fam}_tables_names") as fh:
                found += [f"legacy {fam}tables table {n.strip()}" for n in fh if n.strip()]
        except FileNotFoundError:
            pass
    try:
        with open("/proc/sys/net/netfilter/nf_conntrack_count") as fh:
            n = int(fh.read())
        if n:
            found.append(f"{n} conntrack entries")
    except (FileNotFoundError, ValueError):
        pass
    return found


def wants_conntrack(mode: str, findings: list[str] | None = None) -> bool:
    """Whether the conntrack check must run: respect always, bypass never, auto when the netns has
    any netfilter state (`findings`, computed when not given)."""
    if mode == "respect":
        return True
    if mode == "bypass":
        return False
    return bool(state() if findings is None else findings)


def sync(root: str, mode: str) -> bool:
    """Write the decision for `mode` into the loaded datapath's node_cfg; returns the bit's value.

    Must run in the node's network namespace (it inspects that namespace's netfilter state).
    """
    on = wants_conntrack(mode)
    set_gate(root, on)
    return on


def gate(root: str) -> bool:
    """The conntrack gate's bit as the programs read it (node_cfg, XDPCNI_NODE_F_CONNTRACK)."""
    with PinnedMap(PinLayout(root), "node_cfg") as m:
        return bool(m.get(0).flags & abi.NODE_F_CONNTRACK)


def set_gate(root: str, on: bool) -> None:
    """Set or clear the gate's bit (only written when it changes); the programs read it per
    packet, so this needs no reload. Run in the node's network namespace."""
    with PinnedMap(PinLayout(root), "node_cfg") as m:
        cfg = m.get(0)
        want = (cfg.flags | abi.NODE_F_CONNTRACK) if on else (cfg.flags & ~abi.NODE_F_CONNTRACK)
        if want != cfg.flags:
            cfg.flags = want
            m.put(0, cfg)
