"""Malformed or hostile input gets the spec's error object
with the right code, a non-zero exit, and changes nothing on the node."""

import json
import os

import pytest

from tests.harness.nodestate import snapshot

pytestmark = pytest.mark.e2e


def _conf(rt, **changes):
    conf = rt.xdpcni_conf()
    for key, val in changes.items():
        if val is None:
            conf.pop(key, None)
        else:
            conf[key] = val
    return conf


def _ipam(node, *ranges):
    return {"type": "xdpcni", "ranges": [list(ranges)]}


CASES = [
    # (id, command, conf builder, env changes, expected code)
    ("bad-json", "ADD", lambda rt, n: b'{"cniVersion": "1.1.0", ', {}, 6),
    ("not-an-object", "ADD", lambda rt, n: b"[1, 2]", {}, 6),
    ("not-utf8", "ADD", lambda rt, n: b"\xff\xfe{}", {}, 6),
    ("unknown-version", "ADD", lambda rt, n: _conf(rt, cniVersion="9.9.9"), {}, 1),
    ("malformed-version", "ADD", lambda rt, n: _conf(rt, cniVersion="one"), {}, 1),
    ("check-needs-0.4.0", "CHECK", lambda rt, n: _conf(rt, cniVersion="0.3.1"), {}, 1),
    (
        "gc-needs-1.1.0",
        "GC",
        lambda rt, n: _conf(rt, cniVersion="1.0.0", **{"cni.dev/valid-attachments": []}),
        {},
        1,
    ),
    ("missing-name", "ADD", lambda rt, n: _conf(rt, name=None), {}, 7),
    ("missing-type", "ADD", lambda rt, n: _conf(rt, type=None), {}, 7),
    ("missing-ipam", "ADD", lambda rt, n: _conf(rt, ipam=None), {}, 7),
    ("bad-mode", "ADD", lambda rt, n: _conf(rt, mode="fast"), {}, 7),
    ("bad-mtu", "ADD", lambda rt, n: _conf(rt, mtu=9000), {}, 7),
    ("bpffs-root-outside", "ADD", lambda rt, n: _conf(rt, bpffsRoot="/tmp/pins"), {}, 7),
    ("cidr-prefix-33", "ADD", lambda rt, n: _conf(rt, ipam=_ipam(n, {"subnet": "10.0.0.0/33"})), {}, 7),
    ("cidr-garbage", "ADD", lambda rt, n: _conf(rt, ipam=_ipam(n, {"subnet": "ten.0.0.0/8"})), {}, 7),
    (
        "range-outside-subnet",
        "ADD",
        lambda rt, n: _conf(rt, ipam=_ipam(n, {"subnet": str(n.cidr4), "rangeStart": "10.9.9.9"})),
        {},
        7,
    ),
    (
        "mixed-families",
        "ADD",
        lambda rt, n: _conf(rt, ipam=_ipam(n, {"subnet": str(n.cidr4)}, {"subnet": str(n.cidr6)})),
        {},
        7,
    ),
    ("ipam-plugin-missing", "ADD", lambda rt, n: _conf(rt, ipam={"type": "no-such-ipam"}), {}, 7),
    (
        "bandwidth-egress",
        "ADD",
        lambda rt, n: _conf(rt, runtimeConfig={"bandwidth": {"egressRate": 1000000, "egressBurst": 10000}}),
        {},
        2,
    ),
    ("missing-containerid", "ADD", lambda rt, n: _conf(rt), {"CNI_CONTAINERID": ""}, 4),
    ("bad-containerid", "ADD", lambda rt, n: _conf(rt), {"CNI_CONTAINERID": "-bad/id"}, 4),
    ("missing-netns-var", "ADD", lambda rt, n: _conf(rt), {"CNI_NETNS": ""}, 4),
    ("missing-netns", "ADD", lambda rt, n: _conf(rt), {"CNI_NETNS": "/var/run/netns/xdpcni-no-such-ns"}, 4),
    ("relative-netns", "ADD", lambda rt, n: _conf(rt), {"CNI_NETNS": "pod-ns"}, 4),
    ("ifname-too-long", "ADD", lambda rt, n: _conf(rt), {"CNI_IFNAME": "a-very-long-ifname0"}, 4),
    ("unknown-command", "ADD", lambda rt, n: _conf(rt), {"CNI_COMMAND": "FROB"}, 4),
    (
        "exhausted-range",
        "ADD",
        lambda rt, n: _conf(
            rt,
            ipam=_ipam(
                n, {"subnet": str(n.cidr4), "rangeStart": str(n.cidr4[1]), "rangeEnd": str(n.cidr4[1])}
            ),
        ),
        {},
        103,
    ),
    ("already-attached", "ADD", lambda rt, n: _conf(rt), {"CNI_CONTAINERID": "keeper"}, 105),
    # Nested too deeply for any decoder: a decode error object, every verb.
    *[(f"deep-nesting-{v}", v, lambda rt, n: DEEP, {}, 6) for v in ("ADD", "DEL", "CHECK", "GC", "STATUS")],
    ("deep-object-nesting", "ADD", lambda rt, n: b'{"a":' * 50_000 + b"1" + b"}" * 50_000, {}, 6),
    # Case 5/7: the spec's character rules exactly (a `$` would accept a trailing newline).
    ("name-trailing-newline", "ADD", lambda rt, n: _conf(rt, name="xdpcni-test\n"), {}, 7),
    ("containerid-trailing-newline", "ADD", lambda rt, n: _conf(rt), {"CNI_CONTAINERID": "victim\n"}, 4),
    ("containerid-trailing-newline-del", "DEL", lambda rt, n: _conf(rt), {"CNI_CONTAINERID": "keeper\n"}, 4),
    ("ifname-nbsp", "ADD", lambda rt, n: _conf(rt), {"CNI_IFNAME": "e\u00a00"}, 4),
    ("ifname-newline", "DEL", lambda rt, n: _conf(rt), {"CNI_IFNAME": "eth0\n"}, 4),
    # Case 9: the node's own namespace, the host's: never a pod's.
    ("netns-host", "ADD", lambda rt, n: _conf(rt), {"CNI_NETNS": "/proc/1/ns/net"}, 4),
    ("netns-node-own", "ADD", lambda rt, n: _conf(rt), lambda n: {"CNI_NETNS": f"/var/run/netns/{n.ns}"}, 4),
    (
        "netns-node-own-check",
        "CHECK",
        lambda rt, n: _prev(rt),
        lambda n: {"CNI_NETNS": f"/var/run/netns/{n.ns}"},
        4,
    ),
    # Case 3: CHECK on a namespace that does not exist (and is not created).
    (
        "check-missing-netns",
        "CHECK",
        lambda rt, n: _prev(rt),
        {"CNI_NETNS": "/var/run/netns/xdpcni-no-such-ns"},
        4,
    ),
    # Case 14: code 4/7 where 100 was answered.
    ("ifname-16-bytes", "ADD", lambda rt, n: _conf(rt), {"CNI_IFNAME": "\u00e9" * 8}, 4),
    ("netns-regular-file", "ADD", lambda rt, n: _conf(rt), {"CNI_NETNS": "/etc/hostname"}, 4),
    ("netns-other-ns-type", "ADD", lambda rt, n: _conf(rt), {"CNI_NETNS": "/proc/self/ns/uts"}, 4),
    ("datadir-nul", "ADD", lambda rt, n: _conf(rt, dataDir=n.data_dir + "\u0000x"), {}, 7),
    ("datadir-dotdot", "ADD", lambda rt, n: _conf(rt, dataDir=n.data_dir + "/../escape"), {}, 7),
    ("name-300", "ADD", lambda rt, n: _conf(rt, name="n" * 300), {}, 7),
    (
        "bpffs-root-dotdot",
        "ADD",
        lambda rt, n: _conf(rt, bpffsRoot="/sys/fs/bpf/../../tmp/xdpcni-escape"),
        {},
        7,
    ),
    ("nic-too-long", "ADD", lambda rt, n: _conf(rt, nic="x" * 16), {}, 7),
    ("prev-result-malformed", "CHECK", lambda rt, n: _conf(rt, prevResult={"ips": [1]}), {}, 7),
    (
        "prev-result-bad-address",
        "CHECK",
        lambda rt, n: _conf(rt, prevResult={"ips": [{"address": "x"}]}),
        {},
        7,
    ),
    ("runtimeconfig-not-object", "ADD", lambda rt, n: _conf(rt, runtimeConfig=[1]), {}, 7),
    ("lock-timeout-negative", "ADD", lambda rt, n: _conf(rt, lockTimeout=-1), {}, 7),
    (
        "gc-needs-cni-path",
        "GC",
        lambda rt, n: _conf(rt, **{"cni.dev/valid-attachments": []}),
        {"CNI_PATH": ""},
        4,
    ),
]
DEEP = b"[" * 100_000 + b"]" * 100_000


def _prev(rt):
    """A well-formed CHECK config for the kept pod."""
    return _conf(rt, prevResult=rt.cache["keeper/eth0"])


@pytest.fixture
def keeper(cluster, node, runtime):
    """A loaded datapath with one pod (it holds the range's first address), so "nothing changed"
    covers a populated node."""
    ns = runtime.new_pod_netns("keeper")
    inv = runtime.add("keeper", ns)
    assert inv.ok, inv.stdout + inv.stderr
    assert inv.out["ips"][0]["address"] == f"{node.cidr4[1]}/32"
    return ns


def test_malformed_input_table(cluster, node, runtime, keeper):
    pod_ns = runtime.new_pod_netns("victim")
    for case_id, command, build, env, code in CASES:
        before = snapshot(node)
        conf = build(runtime, node)
        extra = dict(env(node) if callable(env) else env)
        cid = extra.pop("CNI_CONTAINERID", "victim")
        ifname = extra.pop("CNI_IFNAME", "eth0")
        netns_path = extra.pop("CNI_NETNS", f"/var/run/netns/{pod_ns}")
        cmd = extra.pop("CNI_COMMAND", command)
        inv = runtime.call(cmd, conf, container_id=cid, netns_path=netns_path, ifname=ifname, extra_env=extra)
        assert inv.rc == 1, (case_id, inv.rc, inv.stdout, inv.stderr)
        assert inv.out is not None, (case_id, "stdout is not a JSON error object", inv.stdout)
        assert inv.out["code"] == code, (case_id, inv.out)
        assert set(inv.out) <= {"cniVersion", "code", "msg", "details"} and inv.out["msg"], (case_id, inv.out)
        assert inv.out["cniVersion"] in ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"), (case_id, inv.out)
        assert snapshot(node) == before, f"{case_id}: the node changed"
    assert not os.path.exists("/tmp/xdpcni-escape") and not os.path.exists("/var/run/netns/xdpcni-no-such-ns")
    # The pod never got an interface from any of those calls.
    from pyroute2 import IPRoute

    with IPRoute(netns=f"/var/run/netns/{pod_ns}") as ipr:
        assert [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()] == ["lo"]
    # And the kept pod is untouched and still checks out.
    assert runtime.check("keeper", keeper).ok


def test_error_object_is_json_on_stdout_only(cluster, node, runtime):
    inv = runtime.call("ADD", b"not json", container_id="x", netns_path="/var/run/netns/none")
    assert inv.rc == 1 and json.loads(inv.stdout)["code"] == 6
    assert "Traceback" not in inv.stdout
