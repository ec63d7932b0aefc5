"""Plugin input handling that needs no kernel: env, versions, netconf, ranges, results."""

import pytest

from cni import env as cni_env
from cni import netconf, version
from cni.errors import CniError
from cni.ipam.ranges import parse_range_sets
from cni.result import Interface, IPConfig, Result, Route

BASE = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "abc",
    "CNI_NETNS": "/var/run/netns/x",
    "CNI_IFNAME": "eth0",
    "CNI_PATH": "/opt/cni/bin",
}


def code_of(fn, *a):
    with pytest.raises(CniError) as exc:
        fn(*a)
    return exc.value.code


def test_env_parsing():
    e = cni_env.from_environ({**BASE, "CNI_ARGS": "K8S_POD_NAME=web;IgnoreUnknown=1"})
    assert e.args == {"K8S_POD_NAME": "web", "IgnoreUnknown": "1"} and e.path == ["/opt/cni/bin"]
    assert code_of(cni_env.from_environ, {**BASE, "CNI_COMMAND": "NOPE"}) == 4
    assert code_of(cni_env.from_environ, {**BASE, "CNI_IFNAME": "x" * 16}) == 4
    assert code_of(cni_env.from_environ, {**BASE, "CNI_ARGS": "novalue"}) == 4
    # DEL may come without a netns (the runtime lost it): still valid.
    d = dict(BASE, CNI_COMMAND="DEL")
    del d["CNI_NETNS"]
    assert cni_env.from_environ(d).netns == ""


def test_versions():
    for v in version.SUPPORTED_VERSIONS:
        version.require_supported(v, "ADD")
    assert code_of(version.require_supported, "0.2.0", "ADD") == 1
    assert code_of(version.require_supported, "0.3.1", "CHECK") == 1
    assert code_of(version.require_supported, "1.0.0", "STATUS") == 1
    assert version.version_result("0.4.0")["cniVersion"] == "0.4.0"


def test_ranges_and_round_robin():
    (rs,) = parse_range_sets([[{"subnet": "10.1.0.0/29", "gateway": "10.1.0.1"}]])
    assert [str(ip) for ip in rs.candidates(None)] == [f"10.1.0.{i}" for i in range(2, 7)]
    import ipaddress

    after = ipaddress.ip_address("10.1.0.5")
    assert [str(ip) for ip in rs.candidates(after)] == [
        "10.1.0.6",
        "10.1.0.2",
        "10.1.0.3",
        "10.1.0.4",
        "10.1.0.5",
    ]
    assert rs.size == 5
    assert code_of(parse_range_sets, [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.0.0.128/25"}]]) == 7
    assert code_of(parse_range_sets, [[{"subnet": "10.0.0.0/31"}]]) == 7
    assert code_of(parse_range_sets, []) == 7


def test_range_sets_of_a_value_seen_before_are_not_parsed_again(monkeypatch):
    """The node agent parses every ADD's "ranges": a value it has parsed is answered from what it
    kept (range sets are immutable), an invalid one fails every time, a changed one is parsed."""
    from cni.ipam import ranges

    value = [[{"subnet": "10.9.0.0/24", "rangeStart": "10.9.0.10"}], [{"subnet": "fd00:9::/64"}]]
    first = parse_range_sets(value)
    first.pop()  # the caller's list is its own
    monkeypatch.setattr(ranges, "parse_range", lambda item: pytest.fail("parsed again"))
    again = parse_range_sets(
        [[{"subnet": "10.9.0.0/24", "rangeStart": "10.9.0.10"}], [{"subnet": "fd00:9::/64"}]]
    )
    assert [str(rs.ranges[0].start) for rs in again] == ["10.9.0.10", "fd00:9::1"]
    monkeypatch.undo()
    bad = [[{"subnet": "10.9.0.0/24"}], [{"subnet": "10.9.0.128/25"}]]
    assert code_of(parse_range_sets, bad) == 7
    assert code_of(parse_range_sets, bad) == 7  # never kept
    other = parse_range_sets([[{"subnet": "10.9.0.0/24", "rangeStart": "10.9.0.20"}]])
    assert str(other[0].ranges[0].start) == "10.9.0.20"


def test_netconf_validation():
    good = {
        "cniVersion": "1.1.0",
        "name": "n",
        "type": "xdpcni",
        "ipam": {"type": "xdpcni", "ranges": [[{"subnet": "10.0.0.0/24"}]]},
    }
    conf = netconf.parse(good, "ADD")
    assert conf.ipam.builtin and conf.data_dir == netconf.DEFAULT_DATA_DIR
    assert code_of(netconf.parse, {**good, "name": "bad name"}, "ADD") == 7
    assert code_of(netconf.parse, {**good, "mtu": "1500"}, "ADD") == 7
    assert code_of(netconf.decode, b"{") == 6
    # DEL does not need ipam (a runtime may send a stripped config).
    assert netconf.parse({k: v for k, v in good.items() if k != "ipam"}, "DEL").ipam is None


@pytest.mark.parametrize(
    "v,ip_version_field,mtu_field",
    [("0.3.1", True, False), ("0.4.0", True, False), ("1.0.0", False, False), ("1.1.0", False, True)],
)
def test_result_formats(v, ip_version_field, mtu_field):
    res = Result(
        [Interface("eth0", "aa:bb:cc:dd:ee:ff", "/var/run/netns/x", mtu=1500)],
        [IPConfig("10.0.0.2/32", "169.254.1.1", 0)],
        [Route("0.0.0.0/0", "169.254.1.1")],
    )
    out = res.to_json(v)
    assert out["cniVersion"] == v
    assert ("version" in out["ips"][0]) == ip_version_field
    assert ("mtu" in out["interfaces"][0]) == mtu_field
    back = Result.from_json(out)
    assert back.ips[0].address == "10.0.0.2/32" and back.interfaces[0].sandbox == "/var/run/netns/x"
