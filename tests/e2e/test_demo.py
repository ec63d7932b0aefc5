"""The demo finishes, shows flat host forwarding counters next to growing
pod counters, and leaves no namespace or pin behind."""

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_demo_runs_clean():
    before = set(os.listdir("/var/run/netns")) if os.path.isdir("/var/run/netns") else set()
    xdpcnictl = os.path.join(os.path.dirname(sys.executable), "xdpcnictl")
    out = subprocess.run([xdpcnictl, "demo"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "host forwarding counters stayed flat" in text and "demo passed" in text
    # every node row: delta 0; every endpoint got fast-path packets from the NIC
    deltas = re.findall(r"^  n\d\s+\d+\s+\d+\s+(\d+)$", text, re.M)
    assert deltas == ["0", "0"], text
    nic_to_pod = [int(m) for m in re.findall(r"^  n\d\s+\d+\s+\d+\.[\d.]+\s+(\d+)", text, re.M)]
    assert len(nic_to_pod) == 4 and all(n >= 200 for n in nic_to_pod), text
    assert re.search(r"host forwarded \+\d*[1-9]", text), "the control run must show kernel forwarding"
    assert "0 namespaces and 0 pin roots left behind" in text
    prefix = re.search(r"wire switch (xc[0-9a-f]{6})-wire", text).group(1)
    after = set(os.listdir("/var/run/netns")) if os.path.isdir("/var/run/netns") else set()
    assert [n for n in after - before if n.startswith(prefix)] == []
    assert not os.path.exists(f"/sys/fs/bpf/xdpcni-test/{prefix}-n0")
