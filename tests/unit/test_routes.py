"""Route controller logic without a kernel: the plan (peers -> desired routes and problems), the
diff against our routes in the kernel (no flaps), the peers file parser, and the file watcher."""

from __future__ import annotations

import ipaddress
import os
import sys
import threading
import time

import pytest

from node.routes import (
    Connected,
    Peer,
    PeersFileError,
    Route,
    SyncResult,
    diff,
    dump_peers,
    load_peers_file,
    parse_peers,
    plan,
    watch_peers_file,
)

NIC = [
    Connected(2, "nic0", ipaddress.ip_network("192.168.10.0/24"), "192.168.10.11"),
    Connected(2, "nic0", ipaddress.ip_network("fd00:1::/64"), "fd00:1::11"),
]
ME = Peer("a", ("192.168.10.11", "fd00:1::11"), ("10.244.0.0/24", "fd00:244::/64"))
B = Peer("b", ("192.168.10.12", "fd00:1::12"), ("10.244.1.0/24", "fd00:244:1::/64"))
C = Peer("c", ("192.168.10.13",), ("10.244.2.0/24",))


def _plan(*peers, connected=NIC, own=()):
    return plan("a", peers, connected, own)


# --- plan ------------------------------------------------------------------------------------


def test_each_peer_cidr_is_routed_via_its_address_of_the_same_family():
    desired, problems = _plan(ME, B, C)
    assert problems == []
    assert desired == {
        "10.244.1.0/24": Route("10.244.1.0/24", "192.168.10.12", 2),
        "fd00:244:1::/64": Route("fd00:244:1::/64", "fd00:1::12", 2),
        "10.244.2.0/24": Route("10.244.2.0/24", "192.168.10.13", 2),
    }
    assert {r.peer for r in desired.values()} == {"b", "c"}
    assert all(r.ifname == "nic0" for r in desired.values())


def test_self_is_skipped_and_its_cidrs_are_own():
    desired, problems = _plan(ME)
    assert desired == {} and problems == []
    # another peer claiming part of this node's pod CIDR is refused
    desired, problems = _plan(ME, Peer("x", ("192.168.10.20",), ("10.244.0.128/25",)))
    assert desired == {}
    assert len(problems) == 1 and "peer x" in problems[0] and "own pod CIDR 10.244.0.0/24" in problems[0]
    # own CIDRs given to the controller count too (no self entry in the peers)
    desired, problems = plan("a", [Peer("x", ("192.168.10.20",), ("10.244.0.0/16",))], NIC, ["10.244.0.0/24"])
    assert desired == {} and "overlaps this node's own" in problems[0]


def test_a_peer_not_on_a_connected_subnet_is_reported_and_skipped():
    far = Peer("far", ("10.1.2.3", "fd00:99::3"), ("10.244.5.0/24", "fd00:244:5::/64"))
    desired, problems = _plan(ME, B, far)
    assert set(desired) == {"10.244.1.0/24", "fd00:244:1::/64"}
    assert len(problems) == 2
    assert all("peer far" in p and "not on a directly connected subnet" in p for p in problems)
    assert "192.168.10.0/24" in problems[0] and "fd00:1::/64" in problems[1]


def test_first_on_link_address_of_the_family_is_the_gateway():
    p = Peer("b", ("10.1.2.3", "192.168.10.12", "192.168.10.99"), ("10.244.1.0/24",))
    desired, problems = _plan(p)
    assert problems == [] and desired["10.244.1.0/24"].gateway == "192.168.10.12"


def test_only_the_given_interface_counts_when_restricted():
    other = [*NIC, Connected(7, "eth9", ipaddress.ip_network("172.16.0.0/16"), "172.16.0.1")]
    desired, _ = _plan(Peer("b", ("172.16.3.4",), ("10.244.1.0/24",)), connected=other)
    assert desired["10.244.1.0/24"].ifindex == 7 and desired["10.244.1.0/24"].ifname == "eth9"


def test_cidr_without_an_address_of_its_family_is_a_problem():
    desired, problems = _plan(Peer("v4only", ("192.168.10.14",), ("10.244.4.0/24", "fd00:244:4::/64")))
    assert list(desired) == ["10.244.4.0/24"]
    assert len(problems) == 1 and "no IPv6 address for pod CIDR fd00:244:4::/64" in problems[0]


@pytest.mark.parametrize(
    "peer, words",
    [
        (Peer("b", ("192.168.10.12",), ("10.244.1.1/24",)), "not valid"),  # host bits
        (Peer("b", ("192.168.10.12",), ("10.244.1.0/33",)), "not valid"),
        (Peer("b", ("192.168.10.12",), ("banana",)), "not valid"),
        (Peer("b", ("not-an-ip",), ("10.244.1.0/24",)), "not an IP address"),
        (Peer("b", ("192.168.10.11",), ("10.244.1.0/24",)), "this node's own"),
        (Peer("b", ("fe80::1",), ("fd00:244:1::/64",)), "cannot be a next hop"),
        (Peer("b", ("192.168.10.12",), ("192.168.10.0/25",)), "directly connected subnet 192.168.10.0/24"),
        (Peer("b", ("192.168.10.12",), ("0.0.0.0/0",)), "directly connected subnet"),
        (Peer("b", (), ("10.244.1.0/24",)), "no addresses"),
        (Peer("b", ("192.168.10.12",), ()), "no pod CIDRs"),
    ],
)
def test_invalid_input_is_a_problem_and_routes_nothing(peer, words):
    desired, problems = _plan(peer)
    assert desired == {}
    assert any(words in p and "peer b" in p for p in problems), problems


def test_overlapping_peers_first_by_name_keeps_the_cidr():
    z = Peer("z", ("192.168.10.30",), ("10.244.1.0/25",))
    desired, problems = _plan(z, B)
    assert desired["10.244.1.0/24"].peer == "b" and "10.244.1.0/25" not in desired
    assert (
        len(problems) == 1 and "peer z" in problems[0] and "overlaps 10.244.1.0/24 of peer b" in problems[0]
    )


def test_duplicate_peer_name_is_a_problem():
    desired, problems = _plan(B, Peer("b", ("192.168.10.40",), ("10.244.9.0/24",)))
    assert set(desired) == {"10.244.1.0/24", "fd00:244:1::/64"}  # the first entry stands
    assert problems == ["peer b: listed twice, the second entry is skipped"]


def test_an_address_two_peers_claim_routes_only_the_first_by_name():
    twin = Peer("bb", ("192.168.10.12",), ("10.244.8.0/24",))
    desired, problems = _plan(twin, B)
    assert "10.244.8.0/24" not in desired and desired["10.244.1.0/24"].gateway == "192.168.10.12"
    assert any(p.startswith("peer bb: address 192.168.10.12 is peer b's too") for p in problems), problems


def test_plan_is_deterministic_whatever_the_order():
    a = _plan(C, B, ME)
    b = _plan(ME, B, C)
    assert a == b


# --- diff ------------------------------------------------------------------------------------


def R(dst, gw, oif=2, metric=None):
    return Route(dst, gw, oif, metric=metric)


def test_unchanged_routes_are_kept_not_re_added():
    desired, _ = _plan(ME, B, C)
    ours = [R(r.dst, r.gateway, r.ifindex, 1024 if ":" in r.dst else None) for r in desired.values()]
    d = diff(desired, ours)
    assert d.add == [] and d.change == [] and d.remove == [] and d.conflicts == []
    assert sorted(r.dst for r in d.keep) == sorted(desired)


def test_new_changed_and_gone():
    desired, _ = _plan(ME, B, Peer("c", ("192.168.10.99",), ("10.244.2.0/24",)))
    ours = [
        R("10.244.1.0/24", "192.168.10.12"),  # kept
        R("10.244.2.0/24", "192.168.10.13"),  # c moved to .99: changed in place
        R("10.244.7.0/24", "192.168.10.17"),  # a peer that went: removed
    ]
    d = diff(desired, ours)
    assert [r.dst for r in d.keep] == ["10.244.1.0/24"]
    assert d.change == [R("10.244.2.0/24", "192.168.10.99")]
    assert d.remove == [R("10.244.7.0/24", "192.168.10.17")]
    assert d.add == [R("fd00:244:1::/64", "fd00:1::12")]


def test_a_device_change_is_a_change():
    desired = {"10.244.1.0/24": R("10.244.1.0/24", "192.168.10.12", 2)}
    d = diff(desired, [R("10.244.1.0/24", "192.168.10.12", 3)])
    assert d.change == [R("10.244.1.0/24", "192.168.10.12", 2)] and d.keep == [] and d.remove == []


def test_duplicates_of_ours_are_reduced_to_one():
    desired = {"10.244.1.0/24": R("10.244.1.0/24", "192.168.10.12")}
    dup = R("10.244.1.0/24", "192.168.10.77", metric=5)
    d = diff(desired, [dup, R("10.244.1.0/24", "192.168.10.12", metric=0)])
    assert d.keep == [R("10.244.1.0/24", "192.168.10.12")] and d.remove == [dup] and d.change == []


def test_empty_desired_removes_all_of_ours_only():
    ours = [R("10.244.1.0/24", "192.168.10.12"), R("fd00:244:1::/64", "fd00:1::12")]
    d = diff({}, ours, {"10.244.9.0/24": "proto static"})
    assert d.remove == ours and d.add == d.keep == d.change == [] and d.conflicts == []


def test_a_foreign_route_on_the_same_prefix_is_left_alone():
    desired, _ = _plan(B)
    d = diff(desired, [], {"10.244.1.0/24": "proto static via 192.168.10.1"})
    assert [r.dst for r in d.add] == ["fd00:244:1::/64"]
    assert len(d.conflicts) == 1
    assert "peer b" in d.conflicts[0] and "not created by xdpcni" in d.conflicts[0]
    assert "proto static via 192.168.10.1" in d.conflicts[0]


def test_a_foreign_route_appended_next_to_ours_is_never_replaced():
    desired = {"10.244.1.0/24": R("10.244.1.0/24", "192.168.10.12")}
    foreign = {"10.244.1.0/24": "proto static"}
    d = diff(desired, [R("10.244.1.0/24", "192.168.10.12")], foreign)
    assert d.keep == [R("10.244.1.0/24", "192.168.10.12")] and d.conflicts == []  # ours is right: kept
    stale = R("10.244.1.0/24", "192.168.10.99")
    d = diff(desired, [stale], foreign)  # ours is wrong: no replace that could hit theirs
    assert d.change == [] and d.add == [] and d.remove == [stale] and len(d.conflicts) == 1


def test_route_equality_ignores_peer_and_metric():
    assert Route("10.0.0.0/8", "1.2.3.4", 2, "nic0", "b", 0) == Route("10.0.0.0/8", "1.2.3.4", 2)


def test_sync_result_summary_and_dict():
    r = SyncResult(added=[R("10.244.1.0/24", "192.168.10.12")], kept=[R("10.244.2.0/24", "192.168.10.13")])
    r.problems.append("peer far: nope")
    assert r.summary() == "routes: 1 added, 0 changed, 0 removed, 1 kept; 1 problem(s)"
    assert [x.dst for x in r.routes] == ["10.244.1.0/24", "10.244.2.0/24"]
    d = r.as_dict()
    assert d["added"][0]["gateway"] == "192.168.10.12" and d["problems"] == ["peer far: nope"]


# --- peers file ------------------------------------------------------------------------------


def test_the_example_file_parses():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    peers = load_peers_file(os.path.join(root, "conf", "peers.example.yaml"))
    assert [p.name for p in peers] == ["node-a", "node-b", "node-c"]
    assert peers[1] == Peer(
        "node-b", ("192.168.10.12", "fd00:192:168:10::12"), ("10.244.1.0/24", "fd00:10:244:1::/64")
    )


def test_dump_and_load_round_trip(tmp_path):
    f = tmp_path / "peers.yaml"
    f.write_text(dump_peers([B, C]))
    assert load_peers_file(str(f)) == [B, C]


def test_parse_accepts_a_single_string_and_no_peers():
    assert parse_peers({"peers": [{"name": "b", "addresses": "1.2.3.4", "podCIDRs": "10.0.0.0/24"}]}) == [
        Peer("b", ("1.2.3.4",), ("10.0.0.0/24",))
    ]
    assert parse_peers({"peers": []}) == [] and parse_peers({"peers": None}) == []


@pytest.mark.parametrize(
    "text, words",
    [
        ("", "empty"),
        ("peers: [", "not YAML"),
        ("- a\n", "mapping with a `peers` list"),
        ("nodes: []\n", "mapping with a `peers` list"),
        ("peers: []\nextra: 1\n", "unknown top-level key(s) extra"),
        ("peers: {a: 1}\n", "`peers` must be a list"),
        ("peers: [b]\n", "peers[0]: expected a mapping"),
        ("peers: [{addresses: [1.2.3.4]}]\n", "`name` must be a non-empty string"),
        ("peers: [{name: b, podCIDR: [10.0.0.0/24]}]\n", "unknown key(s) podCIDR"),
        ("peers: [{name: b, addresses: [1, 2]}]\n", "peer 'b': `addresses` must be a list of strings"),
        ("peers: [{name: b, podCIDRs: {x: 1}}]\n", "`podCIDRs` must be a list of strings"),
    ],
)
def test_malformed_files_are_refused_naming_the_entry(tmp_path, text, words):
    f = tmp_path / "peers.yaml"
    f.write_text(text)
    with pytest.raises(PeersFileError) as err:
        load_peers_file(str(f))
    assert words in str(err.value) and str(f) in str(err.value)


# --- the file source -------------------------------------------------------------------------


class FakeController:
    def __init__(self):
        self.synced: list[list[Peer]] = []

    def sync(self, peers):
        self.synced.append(list(peers))
        return SyncResult()


def _wait(pred, timeout=3.0):
    deadline = time.monotonic() + timeout
    while not pred() and time.monotonic() < deadline:
        time.sleep(0.01)
    return pred()


def test_watcher_syncs_at_start_on_change_and_not_on_a_bad_file(tmp_path):
    f = tmp_path / "peers.yaml"
    f.write_text(dump_peers([B, C]))
    ctl, stop, logs = FakeController(), threading.Event(), []
    t = threading.Thread(target=watch_peers_file, args=(str(f), ctl, stop, logs.append, 0.02), daemon=True)
    t.start()
    try:
        assert _wait(lambda: len(ctl.synced) == 1) and ctl.synced[0] == [B, C]
        time.sleep(0.1)
        assert len(ctl.synced) == 1, "an unchanged file is not synced again"
        tmp = tmp_path / "peers.new"
        tmp.write_text(dump_peers([B]))
        os.replace(tmp, f)
        assert _wait(lambda: len(ctl.synced) == 2) and ctl.synced[1] == [B]
        f.write_text("")  # truncated mid-write: routes stay as they are
        assert _wait(lambda: any("not applied" in m for m in logs))
        os.unlink(f)
        assert _wait(lambda: sum("not applied" in m for m in logs) == 2)
        assert len(ctl.synced) == 2
        f.write_text(dump_peers([C]))
        assert _wait(lambda: len(ctl.synced) == 3) and ctl.synced[2] == [C]
    finally:
        stop.set()
        t.join(2)
    assert not t.is_alive()


def test_watcher_resyncs_an_unchanged_file_periodically_and_logs_only_news(tmp_path):
    f = tmp_path / "peers.yaml"
    f.write_text(dump_peers([B]))
    ctl, stop, logs = FakeController(), threading.Event(), []
    args = (str(f), ctl, stop, logs.append, 0.01, 0.05)
    t = threading.Thread(target=watch_peers_file, args=args, daemon=True)
    t.start()
    try:
        assert _wait(lambda: len(ctl.synced) >= 4), "no periodic resync"
    finally:
        stop.set()
        t.join(2)
    assert len(logs) == 1, logs  # the first sync; the quiet resyncs changed nothing


def test_the_cli_takes_the_route_options():
    from node.ctl import build_parser

    a = build_parser().parse_args(["agent", "--peers", "/etc/xdpcni/peers.yaml", "--node-name", "n1"])
    assert (a.peers, a.node_name) == ("/etc/xdpcni/peers.yaml", "n1")
    assert build_parser().parse_args(["agent"]).peers is None
    r = build_parser().parse_args(
        ["routes", "--peers", "p.yaml", "--node-name", "n1", "--dev", "eth1", "--json"]
    )
    assert (r.peers, r.node_name, r.dev, r.json, r.remove_all) == ("p.yaml", "n1", "eth1", True, False)


# --- plan at cluster scale -------------------------------------------------------------------

WIDE = [  # one connected /16 and /48 holding every node's address
    Connected(2, "nic0", ipaddress.ip_network("192.168.0.0/16"), "192.168.255.254"),
    Connected(2, "nic0", ipaddress.ip_network("fd00:1::/48"), "fd00:1::ffff"),
]


def _node(i: int, k: int | None = None) -> Peer:
    """Node i: addresses on WIDE, a /24 and a /64 numbered k (default i)."""
    k = i if k is None else k
    return Peer(
        f"p{i:05d}",
        (f"192.168.{i // 250}.{i % 250 + 1}", f"fd00:1::{i + 1:x}"),
        (f"10.{k // 256}.{k % 256}.0/24", str(ipaddress.ip_network(f"fd00:244:{k:x}::/64"))),
    )


class _TooMuchWork(Exception):
    pass


def _calls(fn, limit=None):
    """How many Python and C function calls fn() makes, and its result: a measure of work that does
    not depend on the machine's speed or load. Gives up (_TooMuchWork) past `limit`."""
    n = 0

    def count(frame, event, arg):
        nonlocal n
        if event == "call" or event == "c_call":
            n += 1
            if limit is not None and n > limit:
                raise _TooMuchWork

    sys.setprofile(count)
    try:
        result = fn()
    finally:
        sys.setprofile(None)
    return n, result


def test_plan_of_5000_peers_is_right_and_near_linear():
    peers = [_node(i) for i in range(5000)]
    desired, problems = plan("self", peers, WIDE)
    assert problems == []
    assert len(desired) == 10_000
    for p in peers:
        v4, v6 = (desired[c] for c in p.pod_cidrs)
        assert (v4.gateway, v6.gateway, v4.peer, v6.peer) == (*p.addresses, p.name, p.name)
    # 10x the peers may cost 10x the work (20x allowed), not the 100x of comparing every pair
    small, _ = _calls(lambda: plan("self", peers[:500], WIDE))
    try:
        large, (again, _) = _calls(lambda: plan("self", peers, WIDE), limit=20 * small)
    except _TooMuchWork:
        pytest.fail(f"plan() of 5000 peers made over 20x the calls of 500 peers ({small}): quadratic?")
    assert again == desired


def test_every_overlap_among_many_peers_is_reported_naming_the_first_claimed():
    # p00000..p00399 own /24 and /64 number 399 - i: claim order is the reverse of address order
    peers = [_node(i, 399 - i) for i in range(400)]
    extra = {  # name -> (pod CIDRs, the expected problem)
        "a-wide": (("10.1.0.0/17",), None),  # claimed first: the /24s of 10.1.0-127 are refused
        "zz-sup-all": (("10.0.0.0/8",), "pod CIDR 10.0.0.0/8 overlaps 10.1.0.0/17 of peer a-wide"),
        "zz-sup4": (("10.0.0.0/16",), "pod CIDR 10.0.0.0/16 overlaps 10.0.255.0/24 of peer p00144"),
        "zz-sup6": (("fd00:244::/40",), "pod CIDR fd00:244::/40 overlaps fd00:244:ff::/64 of peer p00144"),
    }
    for j in range(50):
        k = 7 * j
        sub = f"10.{k // 256}.{k % 256}.128/25"
        owner = "a-wide" if 256 <= k < 384 else f"p{399 - k:05d}"
        whose = "10.1.0.0/17" if owner == "a-wide" else f"10.{k // 256}.{k % 256}.0/24"
        extra[f"zz-sub-{j:02d}"] = ((sub,), f"pod CIDR {sub} overlaps {whose} of peer {owner}")
        dup = str(ipaddress.ip_network(f"fd00:244:{j:x}::/64"))
        extra[f"zz-dup-{j:02d}"] = ((dup,), f"pod CIDR {dup} overlaps {dup} of peer p{399 - j:05d}")
    peers += [
        Peer(name, (f"192.168.200.{n + 1}", f"fd00:1::2:{n + 1:x}"), cidrs)
        for n, (name, (cidrs, _)) in enumerate(extra.items())
    ]
    expected = {name: f"peer {name}: {why}: skipped" for name, (_, why) in extra.items() if why}
    for i in range(16, 144):  # their v4 /24 numbered 383..256 lies in a-wide's /17
        k = 399 - i
        expected[f"p{i:05d}"] = (
            f"peer p{i:05d}: pod CIDR 10.1.{k % 256}.0/24 overlaps 10.1.0.0/17 of peer a-wide: skipped"
        )
    desired, problems = plan("self", reversed(peers), WIDE)
    assert problems == [expected[name] for name in sorted(expected)]
    assert len(desired) == 1 + 400 + 400 - 128
