"""cni/commands/common.py attachment locks: 64 kept lock files per network shared by attachments,
and a veth deletion that outlives its DEL (the node agent's) holding a lock of its attachment's
own, so a slow deletion holds up only its attachment, never the others sharing its file."""

from __future__ import annotations

import os
import threading
import time
from contextlib import ExitStack
from types import SimpleNamespace

import pytest

from cni.commands import common
from cni.errors import CniError
from datapath import locks


def _same_file_pair(conf) -> tuple[str, str]:
    first = "pod-0"
    path = common.attachment_lock_path(conf, first, "eth0")
    for i in range(1, 10000):
        if common.attachment_lock_path(conf, f"pod-{i}", "eth0") == path:
            return first, f"pod-{i}"
    raise AssertionError("no two attachments share a lock file")


@pytest.fixture
def conf(tmp_path):
    return SimpleNamespace(name="net", data_dir=str(tmp_path))


def test_a_pending_deletion_holds_up_its_attachment_only(conf):
    a, b = _same_file_pair(conf)
    held = ExitStack()
    with common.attachment_locked(conf, a, "eth0"):  # DEL of a: its veth's deletion is deferred
        common.hold_deletion_lock(conf, a, "eth0", held)
    try:
        t0 = time.monotonic()
        with common.attachment_locked(conf, b, "eth0"):  # shares a's lock file: not held up
            assert time.monotonic() - t0 < 1.0
        # a's next verb waits for the deletion
        with locks.deadline(0.3), pytest.raises(CniError) as exc, common.attachment_locked(conf, a, "eth0"):
            pass
        assert exc.value.code == 11 and "deletion lock" in exc.value.msg
        got = []

        def next_verb():
            with common.attachment_locked(conf, a, "eth0"):
                got.append(time.monotonic())

        t = threading.Thread(target=next_verb)
        t.start()
        time.sleep(0.3)
        assert got == []
        released = time.monotonic()
        held.close()  # the veth is gone
        t.join(10)
        assert got and got[0] >= released
    finally:
        held.close()
    locks_dir = os.path.join(conf.data_dir, conf.name, "locks")
    assert all(f.startswith("attachments-") for f in os.listdir(locks_dir))  # the deletion's file went
