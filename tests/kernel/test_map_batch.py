"""Batched map writes (datapath/libbpf.map_update_batch): an endpoint's counters are zeroed in one
BPF_MAP_UPDATE_BATCH call on ADD and DEL (REASON_MAX slots, every CPU) instead of one syscall per
slot. Checked on a per-CPU array shaped as the datapath's `counters`, pinned under a per-test
root in bpffs."""

from __future__ import annotations

import ctypes as ct
import os
import shutil
import uuid

import pytest

from datapath import abi, libbpf
from datapath.maps import PerCpuArray
from datapath.pins import PinLayout

pytestmark = pytest.mark.kernel

SLOTS = abi.REASON_MAX * 3


@pytest.fixture
def counters():
    root = f"/sys/fs/bpf/xdpcni-test-batch-{uuid.uuid4().hex[:8]}"
    layout = PinLayout(root)
    os.makedirs(layout.maps_dir, mode=0o700)
    fd = libbpf.map_create(libbpf.BPF_MAP_TYPE_PERCPU_ARRAY, "counters", 4, ct.sizeof(abi.Counter), SLOTS)
    try:
        libbpf.obj_pin(fd, layout.map("counters"))
        m = PerCpuArray(layout, "counters")
        try:
            yield m
        finally:
            m.close()
    finally:
        os.close(fd)
        shutil.rmtree(root)  # bpffs: unlinking the pin and the directories frees the map


def _fill(m: PerCpuArray) -> None:
    for index in range(SLOTS):
        buf = (ct.c_uint8 * (m.stride * m.ncpu))()
        for cpu in range(m.ncpu):
            c = abi.Counter.from_buffer(buf, cpu * m.stride)
            for name, _ in abi.Counter._fields_:
                setattr(c, name, index * 1000 + cpu + 1)
        libbpf.map_update(m.fd, ct.c_uint32(index), buf)


def _values(m: PerCpuArray, index: int) -> list[tuple]:
    return [tuple(getattr(c, n) for n, _ in abi.Counter._fields_) for c in m.get_all_cpus(index)]


def test_zeroing_an_endpoints_slots_clears_every_cpu_and_only_those_slots(counters):
    _fill(counters)
    first = abi.REASON_MAX  # ep_id 1's slots
    counters.zero(first, abi.REASON_MAX)
    for index in range(SLOTS):
        got = _values(counters, index)
        assert len(got) == counters.ncpu
        if first <= index < first + abi.REASON_MAX:
            assert all(v == (0,) * len(v) for v in got), (index, got)
        else:
            assert all(v == (index * 1000 + cpu + 1,) * len(v) for cpu, v in enumerate(got)), (index, got)


def test_a_batch_past_the_end_is_an_error_that_says_how_far_it_got(counters):
    with pytest.raises(OSError) as exc:
        counters.zero(SLOTS - 2, 4)
    assert "2 of 4 written" in str(exc.value)
