"""The CNI benchmark's percentile (bench/cnibench.py pct): nearest rank, as the README's CNI
table reports p50/p99 of ADD and DEL calls."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.cnibench import pct


def test_p99_of_100_is_the_99th_value_not_the_maximum():
    values = [float(v) for v in range(1, 101)]
    assert pct(values, 99) == 99.0
    assert pct(values, 50) == 50.0
    assert pct(values, 100) == 100.0
    assert pct([3.0, 1.0, 2.0], 0) == 1.0


def test_small_samples():
    assert pct([], 50) is None
    assert pct([7.0], 99) == 7.0
    assert pct([float(v) for v in range(1, 85)], 50) == 42.0  # 84 calls: the 42nd
    assert pct([float(v) for v in range(1, 85)], 99) == 84.0  # ceil(83.16) = 84th


@st.composite
def samples(draw):
    """Sample sizes where p * n / 100 is often a whole number (where rounding goes wrong), values
    mostly distinct (ties hide a wrong rank)."""
    n = draw(st.one_of(st.sampled_from([2, 4, 10, 20, 50, 84, 100, 200]), st.integers(1, 300)))
    return draw(st.lists(st.integers(0, 10_000), min_size=n, max_size=n))


@settings(max_examples=300, deadline=None)
@given(samples(), st.one_of(st.sampled_from([10, 25, 50, 90, 99]), st.integers(1, 100)))
def test_nearest_rank_definition(ints, p):
    values = [float(v) for v in ints]
    got = pct(values, p)
    rank = math.ceil(p * len(values) / 100)  # exact: integers
    assert sum(v <= got for v in values) >= rank  # at least p % of the sample at or below it
    assert sum(v < got for v in values) < rank  # and the smallest such value


def test_endpoint_counts_are_measured_side_by_side():
    """bench/cnibench.interleaved: each count's node gets every cycle's ADD+DEL of both plugins,
    and no node is always the first of its plugin (one node after the other let a slow or fast
    stretch of the VM land on one count alone)."""
    from bench.cnibench import interleaved

    order = interleaved(2, 4)
    assert len(order) == 16
    for p in ("xdpcni", "xdpcni-agent"):
        for k in (0, 1):
            assert [c for c, q, j in order if (q, j) == (p, k)] == [0, 1, 2, 3]
    firsts = [next(j for c2, q, j in order if c2 == c and q == "xdpcni-agent") for c in range(4)]
    assert firsts == [0, 1, 0, 1]
    assert [c for c, _, _ in order] == sorted(c for c, _, _ in order)  # cycle by cycle, not count by count
    assert interleaved(1, 3) == [(c, p, 0) for c in range(3) for p in ("xdpcni", "xdpcni-agent")]


def test_cpu_groups_fall_back_where_the_hierarchy_is_read_only(tmp_path, monkeypatch):
    """bench/cpugroups.separate on a read-only cgroup mount (a container's usual
    /sys/fs/cgroup): the phase runs in one group and says why; nothing is raised, not even by
    the cleanup (rmdir on a read-only mount fails with EROFS even for a name that is not there),
    and nothing is moved."""
    import errno

    from bench import cpugroups

    def read_only(path, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system", path)

    monkeypatch.setattr(cpugroups, "_hierarchy", lambda: (str(tmp_path), "v1"))
    monkeypatch.setattr(cpugroups.os, "mkdir", read_only)
    monkeypatch.setattr(cpugroups.os, "rmdir", read_only)
    with cpugroups.separate("xdpcni-bench-x") as groups:
        assert groups.base is None
        assert groups.how.startswith("not used: ") and "Read-only" in groups.how
        groups.add_agent(1)  # a no-op
    assert groups.moved == [] and list(tmp_path.iterdir()) == []
