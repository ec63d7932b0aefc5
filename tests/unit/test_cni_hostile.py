"""Hostile and unlucky input, the cases that need no kernel: each verb validates exactly the spec's variables,
hostile stdin always gets one spec error object, the spec's character rules exactly, paths that
could escape, stored state that cannot be read, locks with deadlines, atomic writes on a full
disk. (The e2e tier runs the same inputs through the installed executable on a live node.)"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time

import pytest

from cni import env as cni_env
from cni import netconf
from cni.errors import CniError
from cni.ipam.store import LeaseStore, parse_owner
from cni.locking import write_atomic
from cni.main import execute
from cni.records import Record, RecordStore, RecordUnreadable
from datapath import locks

SPEC_CODES = {1, 2, 3, 4, 5, 6, 7, 11, 50, 51} | set(range(100, 1000))


def conf(**changes) -> dict:
    base = {
        "cniVersion": "1.1.0",
        "name": "net",
        "type": "xdpcni",
        "bpffsRoot": "/sys/fs/bpf/xdpcni-unit-none",
        "dataDir": "/run/xdpcni-unit-none",
        "agentSocket": "",
        "ipam": {"type": "xdpcni", "ranges": [[{"subnet": "10.9.0.0/24"}]]},
    }
    for k, v in changes.items():
        if v is None:
            base.pop(k, None)
        else:
            base[k] = v
    return base


def run(env: dict, stdin) -> tuple[int, dict | None]:
    data = stdin if isinstance(stdin, bytes) else json.dumps(stdin).encode()
    rc, out = execute(env, data)
    return rc, (json.loads(out) if out else None)


def code(env: dict, stdin) -> int:
    rc, out = run(env, stdin)
    assert rc == 1 and isinstance(out, dict), (rc, out)
    assert set(out) <= {"cniVersion", "code", "msg", "details"} and out["msg"], out
    assert out["code"] in SPEC_CODES, out
    return out["code"]


ENV = {
    "CNI_CONTAINERID": "abc",
    "CNI_NETNS": "/var/run/netns/x",
    "CNI_IFNAME": "eth0",
    "CNI_PATH": "/opt/cni/bin",
}


# -- case 1: each verb validates exactly the variables the spec gives it ------------------------


def test_version_ignores_the_dummy_variables_libcni_sends():
    """podman/libcni validate a plugin with VERSION and CNI_NETNS=dummy CNI_IFNAME=dummy CNI_PATH=dummy."""
    env = {"CNI_COMMAND": "VERSION", "CNI_NETNS": "dummy", "CNI_IFNAME": "dummy", "CNI_PATH": "dummy"}
    rc, out = run(env, {"cniVersion": "1.0.0"})
    assert rc == 0 and out["cniVersion"] == "1.0.0" and "1.1.0" in out["supportedVersions"]
    env.update(CNI_CONTAINERID="-not valid-", CNI_ARGS="garbage")
    assert run(env, b"")[0] == 0
    assert run({"CNI_COMMAND": "VERSION"}, b"[[[[[[")[0] == 0  # any stdin: VERSION still answers


@pytest.mark.parametrize("verb", ["GC", "STATUS"])
def test_gc_and_status_ignore_container_variables(verb):
    """GC/STATUS use no container id, netns or ifname: garbage there is not their business."""
    env = {"CNI_COMMAND": verb, "CNI_PATH": "/x", "CNI_NETNS": "dummy", "CNI_IFNAME": "a/b:c d"}
    env.update(CNI_CONTAINERID="-bad\n", CNI_ARGS="novalue")
    e = cni_env.from_environ(env)
    assert e.netns == "" and e.ifname == "" and e.container_id == "" and e.args == {}


def test_required_variables_per_verb():
    """Spec 1.1.0: ADD/CHECK need CONTAINERID, NETNS, IFNAME; DEL needs CONTAINERID, IFNAME; GC
    needs PATH; STATUS and VERSION need only CNI_COMMAND; CNI_PATH is optional for ADD/DEL/CHECK."""
    for verb, needed in cni_env.REQUIRED.items():
        full = {"CNI_COMMAND": verb, **ENV}
        cni_env.from_environ(full)
        for var in needed:
            with pytest.raises(CniError) as exc:
                cni_env.from_environ({k: v for k, v in full.items() if k != var})
            assert exc.value.code == 4 and var in exc.value.msg
    add = {"CNI_COMMAND": "ADD", **ENV}
    del add["CNI_PATH"]
    cni_env.from_environ(add)
    cni_env.from_environ({"CNI_COMMAND": "STATUS"})


# -- case 4: hostile stdin -------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["ADD", "DEL", "CHECK", "GC", "STATUS"])
def test_deeply_nested_stdin_is_a_decode_error(verb):
    deep = b"[" * 100_000 + b"]" * 100_000
    env = {"CNI_COMMAND": verb, **ENV}
    assert code(env, deep) == 6
    assert code(env, b'{"a":' * 50_000 + b"1" + b"}" * 50_000) == 6


def test_client_socket_lookup_survives_hostile_stdin():
    from cni import client

    assert client.socket_path({}, b"[" * 100_000) == client.DEFAULT_SOCKET
    assert client.via_agent({}, b'{"agentSocket": "rel\\u0000x"}') is None


# -- case 7 and 14: the spec's character rules exactly, lengths and paths -------------------------


@pytest.mark.parametrize(
    "cid",
    ["abc\n", "abc\r", "-abc", ".abc", "a b", "a/b", "ab\x00c", "", "aé"],
)
def test_container_id_rules(cid):
    with pytest.raises(CniError) as exc:
        cni_env.validate_container_id(cid)
    assert exc.value.code == 4


@pytest.mark.parametrize(
    "ifname",
    [
        "",
        ".",
        "..",
        "a/b",
        "a:b",
        "a b",
        "eth0\n",
        "e\t0",
        "e\u00a00",
        "e\u20280",
        "x" * 16,
        "é" * 8,
        "e\x000",
    ],
)
def test_ifname_rules_reject(ifname):
    with pytest.raises(CniError) as exc:
        cni_env.validate_ifname(ifname)
    assert exc.value.code == 4


@pytest.mark.parametrize("ifname", ["eth0", "x" * 15, "e\x1c0", "é" * 7, "net1.100", "a-b_c"])
def test_ifname_rules_accept(ifname):
    """Spec whitespace is Unicode White_Space (Go's unicode.IsSpace): U+001C is not whitespace."""
    cni_env.validate_ifname(ifname)


def test_lease_owner_round_trips_every_valid_ifname(tmp_path):
    store = LeaseStore(str(tmp_path))
    with store.locked():
        assert store.reserve("10.0.0.5", "abc", "e\x1c0")
        assert store.reserve("10.0.0.6", "abc", "e\x850")
    assert store.owned_by("abc", "e\x1c0") == ["10.0.0.5"]
    assert parse_owner(b"abc\neth0\n") == ("abc", "eth0")
    for raw in (b"\xff\xfe\n", b"abc\n\neth0\n", b"abc\n", b"abc\neth0\nextra\n", b"-x\neth0\n", b""):
        assert parse_owner(raw) is None, raw


def test_unreadable_lease_is_reported_never_owned(tmp_path):
    store = LeaseStore(str(tmp_path))
    (tmp_path / "10.0.0.9").write_bytes(b"\xff\xfe\x00garbage")
    assert store.leases() == {"10.0.0.9": None}
    assert store.unreadable() == [str(tmp_path / "10.0.0.9")]
    assert store.owned_by("abc", "eth0") == []


@pytest.mark.parametrize(
    "changes",
    [
        {"name": "n" * 300},
        {"name": "net\n"},
        {"name": "net/x"},
        {"dataDir": "/run/a\u0000b"},
        {"dataDir": "/run/../tmp/x"},
        {"dataDir": "relative"},
        {"bpffsRoot": "/sys/fs/bpf/../../tmp/xdpcni-escape"},
        {"bpffsRoot": "/sys/fs/bpf/./x"},
        {"nodeConfig": "/etc/x\u0000"},
        {"agentSocket": "/run/x\u0000"},
        {"nic": "a" * 16},
        {"nic": "a b"},
        {"vlan": 5000},
        {"lockTimeout": 0},
        {"lockTimeout": True},
        {"runtimeConfig": []},
        {"runtimeConfig": {"portMappings": {}}},
    ],
)
def test_netconf_fields_are_code_7(changes):
    with pytest.raises(CniError) as exc:
        netconf.parse(conf(**changes), "ADD")
    assert exc.value.code == 7, exc.value


@pytest.mark.parametrize(
    "prev",
    [
        {"ips": [1]},
        {"ips": "x"},
        {"ips": [{"address": "not-an-ip"}]},
        {"ips": [{"address": "10.0.0.1/32", "interface": "0"}]},
        {"interfaces": [{"name": 5}]},
        {"interfaces": [None]},
        {"routes": [{"dst": []}]},
        {"dns": []},
    ],
)
def test_malformed_prev_result_is_code_7(prev):
    with pytest.raises(CniError) as exc:
        netconf.parse(conf(prevResult=prev), "CHECK")
    assert exc.value.code == 7


def test_netns_that_is_a_regular_file_or_the_own_namespace_is_code_4(tmp_path):
    f = tmp_path / "netns"
    f.write_text("")
    for path in (str(f), str(tmp_path), "/proc/self/ns/net", "/proc/1/ns/net", "/proc/self/ns/uts"):
        with pytest.raises(CniError) as exc:
            cni_env.check_netns(path)
        assert exc.value.code == 4, path
    with pytest.raises(CniError) as exc:
        cni_env.check_netns(str(tmp_path / "missing"))
    assert exc.value.code == 4 and not (tmp_path / "missing").exists()


# -- case 10 and 14: stored state ------------------------------------------------------------


def test_corrupt_or_edited_records_are_unreadable_not_missing(tmp_path):
    store = RecordStore(str(tmp_path), "net")
    store.put(Record("abc", "eth0", ips=["10.0.0.1"]))
    assert store.get("abc", "eth0").ips == ["10.0.0.1"]
    path = store.path("abc", "eth0")
    for content in (b"\xff{", b"[]", b'{"container_id": "zzz", "ifname": "eth0", "network": "net"}', b"{"):
        with open(path, "wb") as fh:
            fh.write(content)
        with pytest.raises(RecordUnreadable):
            store.get("abc", "eth0")
        assert store.all()[0] == [] and len(store.all()[1]) == 1
    # A stale "host_ifname" field is ignored: the veth name always derives from the key.
    with open(path, "w") as fh:
        json.dump({"container_id": "abc", "ifname": "eth0", "network": "net", "host_ifname": "nic0"}, fh)
    assert store.get("abc", "eth0").host_ifname != "nic0"


@pytest.mark.parametrize("tmpfile", [True, False], ids=["unnamed file", "named temporary"])
def test_full_disk_write_leaves_no_temporary(tmp_path, monkeypatch, tmpfile):
    """A write that fails (full disk) raises code 5 and leaves nothing: both ways write_atomic
    writes (an unnamed O_TMPFILE file, or a named temporary where the filesystem has none)."""
    import cni.locking

    class FullDisk:  # the temporary gets created, writing into it fails
        def __init__(self, path, mode):
            self.fh = open(path, mode)  # noqa: SIM115 - closed by __exit__
            made.append(path)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    made: list = []
    real_open = os.open

    def no_tmpfile(path, flags, *args):
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(errno.EOPNOTSUPP, "no O_TMPFILE here")
        return real_open(path, flags, *args)

    def full_write(fd, data):
        made.append(fd)
        raise OSError(errno.ENOSPC, "No space left on device")

    if tmpfile:
        monkeypatch.setattr(cni.locking.os, "write", full_write)
    else:
        monkeypatch.setattr(cni.locking.os, "open", no_tmpfile)
        monkeypatch.setattr(cni.locking, "open", FullDisk, raising=False)
    with pytest.raises(CniError) as exc:
        write_atomic(str(tmp_path / "rec.json"), "{}")
    monkeypatch.undo()
    assert exc.value.code == 5 and "space" in exc.value.msg
    assert made  # the failure came from the way under test
    assert os.listdir(tmp_path) == []


# -- case 11: every lock has a deadline and names its holder ---------------------------------------


HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], (os.O_RDONLY | os.O_DIRECTORY) if os.path.isdir(sys.argv[1]) else (os.O_RDWR | os.O_CREAT))
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(60)
"""


def hold(path: str) -> subprocess.Popen:
    """A stalled process holding a flock on `path` (stop it with .kill())."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, path], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_lock_deadline_and_holder(tmp_path):
    path = str(tmp_path / "lock")
    holder = hold(path)
    try:
        t0 = time.monotonic()
        with pytest.raises(locks.LockTimeout) as exc, locks.deadline(0.5), locks.flocked(path, "test lock"):
            pass
        waited = time.monotonic() - t0
        assert 0.45 <= waited < 2.0
        assert "0.5s" in str(exc.value) and "test lock" in str(exc.value)
        assert f"pid {holder.pid} " in exc.value.holder and "import fcntl" in exc.value.holder
    finally:
        holder.kill()
        holder.wait()
    with locks.flocked(path, "test lock", timeout=0.5):
        pass


def test_lock_on_a_directory_never_creates_it(tmp_path):
    with (
        pytest.raises(FileNotFoundError),
        locks.flocked(str(tmp_path / "maps"), "x", timeout=0.1, is_dir=True),
    ):
        pass
    assert not (tmp_path / "maps").exists()
    with locks.flocked(str(tmp_path), "dir lock", timeout=0.1, is_dir=True):
        pass


def test_removed_lock_file_is_never_held_twice(tmp_path):
    """A holder that removes its lock file must not let a waiter and a newcomer in together."""
    import threading

    path = str(tmp_path / "a.lock")
    inside = []
    overlap = []

    def worker():
        for _ in range(30):
            with locks.flocked(path, "x", timeout=10, remove=True):
                inside.append(1)
                if len(inside) > 1:
                    overlap.append(1)
                time.sleep(0.001)
                inside.pop()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlap == [] and not os.path.exists(path)
