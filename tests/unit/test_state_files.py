"""The CNI's state files on the hot path (issue 12): what DEL reads to find an attachment's leases,
and the in-place writes that spare ext4 its rename/truncate flushes, keep their guarantees."""

from __future__ import annotations

import builtins
import os

import pytest

from cni import locking
from cni.ipam.store import LAST_PREFIX, LeaseStore
from cni.records import RECORD_SIZE, Record, RecordStore

OWNER = ("c1", "eth0")


def _store(tmp_path) -> LeaseStore:
    store = LeaseStore(str(tmp_path))
    os.makedirs(store.dir, exist_ok=True)
    return store


def _lease(store: LeaseStore, ip: str, owner=OWNER) -> None:
    assert store.reserve(ip, *owner)


def _no_scan(store: LeaseStore, monkeypatch) -> None:
    def scan():
        raise AssertionError("every lease was read")

    monkeypatch.setattr(store, "leases", scan)


def test_a_verified_hint_is_read_alone(tmp_path, monkeypatch):
    store = _store(tmp_path)
    _lease(store, "10.0.0.5")
    _lease(store, "fd00::5")
    for i in range(20):
        _lease(store, f"10.0.1.{i}", (f"other{i}", "eth0"))
    _no_scan(store, monkeypatch)
    assert store.owned_by(*OWNER, hint=["fd00::5", "10.0.0.5"], expected=2) == ["10.0.0.5", "fd00::5"]


@pytest.mark.parametrize(
    "hint, expected",
    [
        (["10.0.0.5", "10.0.9.9"], 2),  # a record naming another pod's address (edited)
        (["10.0.0.5"], 2),  # fewer addresses than range sets: an older or edited record
        (["10.0.0.5", "10.0.0.5"], 2),  # duplicates
        (["10.0.0.5", "not-an-ip/../x"], 2),  # not an address
        (["10.0.0.5", "fd00::5"], 0),  # delegated IPAM: nothing to expect
    ],
)
def test_a_hint_that_does_not_check_out_falls_back_to_reading_every_lease(tmp_path, hint, expected):
    store = _store(tmp_path)
    _lease(store, "10.0.0.5")
    _lease(store, "fd00::5")
    _lease(store, "10.0.9.9", ("victim", "eth0"))
    assert store.owned_by(*OWNER, hint=hint, expected=expected) == ["10.0.0.5", "fd00::5"]


def test_last_reserved_is_overwritten_in_place(tmp_path):
    store = _store(tmp_path)
    path = os.path.join(store.dir, f"{LAST_PREFIX}0")
    store.set_last_reserved(0, "2001:db8:ffff:ffff:ffff:ffff:ffff:fffe")
    ino = os.stat(path).st_ino
    store.set_last_reserved(0, "10.0.0.7")
    assert store.last_reserved(0) == "10.0.0.7"  # the longer value left nothing behind
    assert os.stat(path).st_ino == ino  # same file: no temporary, no rename
    with open(path, "wb") as fh:  # a torn or foreign file is only a hint: ignored
        fh.write(b"\xff\xfe garbage")
    assert store.last_reserved(0) is None


def test_a_record_is_updated_in_place_only_when_it_is_ours_as_written(tmp_path):
    store = RecordStore(str(tmp_path), "net")
    rec = Record("c1", "eth0", network="net", netns="/var/run/netns/p")
    store.put(rec)
    path = store.path("c1", "eth0")
    assert os.path.getsize(path) == RECORD_SIZE
    ino = os.stat(path).st_ino
    rec.ips, rec.complete = ["10.0.0.5", "fd00::5"], True
    store.put(rec, in_place=True)
    assert os.stat(path).st_ino == ino and os.path.getsize(path) == RECORD_SIZE
    got = store.get("c1", "eth0")
    assert got.complete and got.ips == ["10.0.0.5", "fd00::5"]
    # A file someone edited (another size) is replaced whole, never overwritten in part.
    with open(path, "w") as fh:
        fh.write('{"container_id": "c1", "ifname": "eth0", "network": "net"}')
    rec.ips = ["10.0.0.6"]
    store.put(rec, in_place=True)
    assert store.get("c1", "eth0").ips == ["10.0.0.6"]
    assert os.stat(path).st_ino != ino


# -- write_atomic: unnamed files, and the spares a long-running process keeps -------------------


@pytest.fixture
def spares():
    locking.keep_spares()
    try:
        yield
    finally:
        locking.keep_spares(False)


def _opens_of_unnamed_files(monkeypatch) -> list[str]:
    seen: list[str] = []
    real = os.open

    def watch(path, flags, *args, **kwargs):
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            seen.append(path)
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(locking.os, "open", watch)
    return seen


def test_a_write_names_an_unnamed_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    seen = _opens_of_unnamed_files(monkeypatch)
    path = str(tmp_path / "10.0.0.7")
    locking.write_atomic(path, "c1\neth0\n", exclusive=True)
    assert seen == [str(tmp_path)] and os.listdir(tmp_path) == ["10.0.0.7"]
    with open(path) as fh:
        assert fh.read() == "c1\neth0\n"
    with pytest.raises(FileExistsError):  # exclusive: never over an existing file
        locking.write_atomic(path, "c2\neth0\n", exclusive=True)
    locking.write_atomic(path, "c3\neth0\n")  # not exclusive: replaced (rename)
    with open(path) as fh:
        assert fh.read() == "c3\neth0\n"
    assert os.listdir(tmp_path) == ["10.0.0.7"]


def test_spares_are_made_between_writes_and_used_by_the_next(tmp_path, monkeypatch, spares):
    d = tmp_path / "ipam"
    d.mkdir()
    locking.write_atomic(str(d / "a"), "1")  # the first write in a directory makes its own file
    seen = _opens_of_unnamed_files(monkeypatch)
    locking.refill_spares()
    assert seen == [str(d)] * locking.SPARES_PER_DIR
    assert os.listdir(d) == ["a"]  # spares have no name
    del seen[:]
    for name in ("b", "c"):
        locking.write_atomic(str(d / name), name, exclusive=True)
    assert seen == []  # both from the spares
    assert sorted(os.listdir(d)) == ["a", "b", "c"]
    with open(d / "c") as fh:
        assert fh.read() == "c"
    locking.keep_spares(False)  # closing the spares leaves nothing behind
    assert sorted(os.listdir(d)) == ["a", "b", "c"]


def test_addresses_are_the_lease_names_without_parsing_them(tmp_path, monkeypatch):
    store = _store(tmp_path)
    for ip in ("10.0.0.5", "fd00::5", "10.0.0.6"):
        _lease(store, ip)
    store.set_last_reserved(0, "10.0.0.6")
    for other in ("lock", "10.0.0.9.tmp77-77"):
        (tmp_path / other).write_text("")
    import cni.ipam.store as store_mod

    monkeypatch.setattr(store_mod.ipaddress, "ip_address", lambda s: pytest.fail("parsed a lease name"))
    assert store.addresses() == {"10.0.0.5", "fd00::5", "10.0.0.6"}


def _range_set(first: str, last: str):
    from cni.ipam.ranges import parse_range_sets

    (rs,) = parse_range_sets([[{"subnet": "10.0.0.0/24", "rangeStart": first, "rangeEnd": last}]])
    return rs


def test_an_allocation_after_the_last_one_lists_no_lease(tmp_path, monkeypatch):
    """ADD's address comes from reserving the next candidate outright (an exclusive link fails
    on a taken one): with 50 leases and the next address free, the lease directory is not read
    (it was listed and every name matched on every ADD: O(leases)). As ADD calls it: the
    attachment record, not the leases, says whether the owner holds addresses."""
    from cni.ipam import builtin

    store = _store(tmp_path)
    for i in range(10, 60):
        _lease(store, f"10.0.0.{i}", (f"c{i}", "eth0"))
    rs = _range_set("10.0.0.10", "10.0.0.200")
    store.set_last_reserved(f"0.{rs.key}", "10.0.0.59")
    listdir = os.listdir
    monkeypatch.setattr(
        os, "listdir", lambda p: pytest.fail("listed the leases") if p == store.dir else listdir(p)
    )
    assert builtin.allocate(store, [rs], "new", "eth0", check_owner=False) == ["10.0.0.60"]
    assert store.owner("10.0.0.60") == ("new", "eth0")


def test_configs_of_one_network_with_other_ranges_keep_their_own_hint(tmp_path, monkeypatch):
    """Two configs of one network (one lease store) with different ranges, allocating in turn,
    as the bench's in-process and agent configs do: each continues after its own last address
    and none lists the leases. With one hint per range-set index, each turn started from the
    other config's address, outside its ranges: its range's start, all taken, DIRECT_TRIES
    refusals and a listing of every lease, every time."""
    from cni.ipam import builtin

    store = _store(tmp_path)
    low, high = _range_set("10.0.0.10", "10.0.0.99"), _range_set("10.0.0.100", "10.0.0.200")
    assert low.key != high.key and low.key == _range_set("10.0.0.10", "10.0.0.99").key
    listed = []
    listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda p: listed.append(p) or listdir(p))
    got = []
    for i in range(6):
        for name, rs in (("l", low), ("h", high)):
            got += builtin.allocate(store, [rs], f"{name}{i}", "eth0", check_owner=False)
    assert got == [x for i in range(6) for x in (f"10.0.0.{10 + i}", f"10.0.0.{100 + i}")]
    assert listed == []


def test_a_wrapped_range_lists_the_leases_once_and_sweeps_leftovers(tmp_path, monkeypatch):
    """After the range's end the search starts again at its beginning, where every address is
    taken but one: after builtin.DIRECT_TRIES refused links the directory is listed once (a
    crash's leftover temporary is removed then) and the taken addresses are skipped."""
    from cni.ipam import builtin

    store = _store(tmp_path)
    for i in range(10, 30):
        if i != 25:
            _lease(store, f"10.0.0.{i}", (f"c{i}", "eth0"))
    rs = _range_set("10.0.0.10", "10.0.0.29")
    store.set_last_reserved(f"0.{rs.key}", "10.0.0.29")
    store.set_last_reserved(0, "10.0.0.11")  # the per-index hint of an earlier version: swept
    (tmp_path / "10.0.0.25.tmp1-1").write_text("c9\neth0\n")  # a killed write's leftover
    listed, links = [], []
    listdir, reserve = os.listdir, store.reserve
    monkeypatch.setattr(os, "listdir", lambda p: listed.append(p) or listdir(p))
    monkeypatch.setattr(store, "reserve", lambda ip, *a: links.append(ip) or reserve(ip, *a))
    assert builtin.allocate(store, [rs], "new", "eth0", check_owner=False) == ["10.0.0.25"]
    assert listed == [store.dir]
    assert links == ["10.0.0.10", "10.0.0.11", "10.0.0.12", "10.0.0.13", "10.0.0.25"]
    assert not (tmp_path / "10.0.0.25.tmp1-1").exists()
    assert not (tmp_path / f"{LAST_PREFIX}0").exists() and (tmp_path / f"{LAST_PREFIX}0.{rs.key}").exists()
    with pytest.raises(Exception, match="no free address"):
        builtin.allocate(store, [_range_set("10.0.0.10", "10.0.0.29")], "full", "eth0", check_owner=False)


def test_a_replacing_write_writes_its_data_once(tmp_path, monkeypatch):
    """Replacing an existing file names the unnamed file already written with a temporary name
    and renames it over the old one: the data is written once (it was written to the unnamed
    file, then again to a named temporary), the inode is new, and nothing is left behind."""
    path = tmp_path / "note"
    locking.write_atomic(str(path), "old\n")
    old_ino = os.stat(path).st_ino
    writes, opened = [], []
    real_write, real_open = os.write, builtins.open
    monkeypatch.setattr(os, "write", lambda fd, data: writes.append(bytes(data)) or real_write(fd, data))
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: opened.append(str(f)) or real_open(f, *a, **k))
    locking.write_atomic(str(path), "new\n")
    assert writes == [b"new\n"] and opened == []  # no named temporary written a second time
    assert path.read_text() == "new\n" and os.stat(path).st_ino != old_ino
    assert os.listdir(tmp_path) == ["note"]
