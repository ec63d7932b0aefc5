"""An ADD killed with SIGKILL at any step leaves state that DEL (or GC)
removes completely; and an ADD failing at any step rolls back everything it created itself."""

import pytest

from cni.testhook import ADD_STEPS, FAIL_ENV, KILL_ENV
from tests.harness.nodestate import pod_links, snapshot

pytestmark = pytest.mark.e2e
STEPS = [s for s in ADD_STEPS if s != "datapath"]


def _clean(node) -> None:
    after = snapshot(node)
    assert pod_links(node) == [], after["links"]
    assert after["endpoints"] == [] and after["leases"] == [] and after["records"] == [], after


def test_sigkill_inside_add_then_del_or_gc_leaves_nothing(cluster, node, runtime):
    assert runtime.add("warmup", runtime.new_pod_netns("w")).ok  # loads the datapath
    assert runtime.delete("warmup", None).ok
    for i, step in enumerate(STEPS):
        ns = runtime.new_pod_netns(f"k{i}")
        inv = runtime.add(f"kill{i}", ns, extra_env={KILL_ENV: step})
        assert inv.rc == -9 or inv.rc == 137, (step, inv.rc, inv.stderr)
        left = snapshot(node)
        assert left["records"], f"{step}: the record must exist before anything else"
        if i % 2 == 0:
            inv = runtime.delete(f"kill{i}", ns)
        else:
            conf = runtime.xdpcni_conf(**{"cni.dev/valid-attachments": []})
            inv = runtime.call("GC", conf)
        assert inv.ok, (step, inv.stdout + inv.stderr)
        _clean(node)


def test_failure_at_each_add_step_rolls_back(cluster, node, runtime):
    assert runtime.add("warm", runtime.new_pod_netns("w")).ok
    assert runtime.delete("warm", None).ok
    before = snapshot(node)
    for i, step in enumerate(STEPS):
        ns = runtime.new_pod_netns(f"f{i}")
        inv = runtime.add(f"failing{i}", ns, extra_env={FAIL_ENV: step})
        assert inv.rc == 1 and inv.code == 100 and "injected failure" in inv.out["msg"], (step, inv.stdout)
        assert snapshot(node) == before, step
        _clean(node)
