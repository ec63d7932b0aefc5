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
    found = [f"nftables table {name} (family {family})" for name, family in nft_tables()]
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


NFT_MSG_GETTABLE = 1  # include/uapi/linux/netfilter/nf_tables.h
NFPROTO_UNSPEC = 0


_NFT_TABLE = None  # pyroute2 message class of a table, made on first use


def nft_tables() -> list[tuple[str, int]]:
    """(name, family) of every nftables table in the caller's network namespace: one
    NFT_MSG_GETTABLE dump (NFPROTO_UNSPEC: all families). pyroute2's message class, over
    datapath/rtnl.py's transport: pyroute2's NFTables socket imports its asyncio core (~27 ms),
    which a CNI verb run in-process would pay for this one dump (and the agent every second).
    Raises rtnl.NetlinkError when the kernel refuses (no nf_tables)."""
    global _NFT_TABLE
    from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_NFTABLES, nfgen_msg

    from . import rtnl

    if _NFT_TABLE is None:

        class nft_table(nfgen_msg):  # the attributes we read of pyroute2's nft_table_msg
            nla_map = (("NFTA_TABLE_UNSPEC", "none"), ("NFTA_TABLE_NAME", "asciiz"))

        _NFT_TABLE = nft_table
    req = nfgen_msg()
    req["nfgen_family"] = NFPROTO_UNSPEC
    req["version"] = 0
    req["res_id"] = 0
    with rtnl.Rtnl(protocol=rtnl.NETLINK_NETFILTER) as nl:
        msgs = nl.get(
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE,
            req,
            "nftables tables",
            _NFT_TABLE,
            rtnl.NLM_F_DUMP,
        )
    return [(m.get_attr("NFTA_TABLE_NAME"), m["nfgen_family"]) for m in msgs]


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
