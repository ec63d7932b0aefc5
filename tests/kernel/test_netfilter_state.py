"""`netfilter: auto` decides from the node namespace's netfilter state; its nftables part is one
NFT_MSG_GETTABLE dump over datapath/rtnl.py's transport (datapath/netfilter.nft_tables), checked
here against the nft CLI (libnftables, independent of pyroute2) and pyroute2's own NFTables socket."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from datapath import netfilter
from datapath.netns import entered

pytestmark = pytest.mark.kernel

FAMILIES = {"ip": 2, "ip6": 10, "inet": 1, "arp": 3, "bridge": 7, "netdev": 5}


@pytest.fixture
def ns():
    name = f"xdpcni-nft-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _nft(ns: str, *args: str) -> str:
    out = subprocess.run(
        ["ip", "netns", "exec", ns, "nft", *args], capture_output=True, text=True, check=True
    )
    return out.stdout


def _cli_tables(ns: str) -> set[tuple[str, int]]:
    listed = json.loads(_nft(ns, "-j", "list", "tables"))["nftables"]
    return {(t["table"]["name"], FAMILIES[t["table"]["family"]]) for t in listed if "table" in t}


def test_an_empty_namespace_has_no_state_and_auto_bypasses(ns):
    with entered(ns):
        assert netfilter.nft_tables() == []
        assert netfilter.state() == []
        assert netfilter.wants_conntrack("auto") is False


def test_tables_of_every_family_match_the_nft_cli_and_pyroute2(ns):
    script = "".join(f"add table {fam} t_{fam};" for fam in FAMILIES)
    _nft(ns, script)
    subprocess.run(  # iptables-nft's table, as kube-proxy's iptables mode makes it
        ["ip", "netns", "exec", ns, "iptables-nft", "-t", "nat", "-A", "POSTROUTING", "-j", "MASQUERADE"],
        check=True,
    )
    want = _cli_tables(ns)
    assert ("nat", 2) in want and len(want) == len(FAMILIES) + 1
    with entered(ns):
        got = netfilter.nft_tables()
        from pyroute2.nftables.main import NFTables

        with NFTables(nfgen_family=0) as nft:
            theirs = {(t.get_attr("NFTA_TABLE_NAME"), t["nfgen_family"]) for t in nft.get_tables()}
        findings = netfilter.state()
        auto = netfilter.wants_conntrack("auto")
    assert len(got) == len(set(got)) and set(got) == want == theirs
    assert "nftables table nat (family 2)" in findings
    assert auto is True
