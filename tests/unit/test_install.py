"""scripts/install.sh into a DESTDIR: the launcher it installs is a working CNI plugin."""

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_install_and_uninstall_into_destdir(tmp_path):
    env = {**os.environ, "DESTDIR": str(tmp_path)}
    out = subprocess.run(["bash", "scripts/install.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    plugin = tmp_path / "opt/cni/bin/xdpcni"
    assert os.access(plugin, os.X_OK)
    assert (
        json.loads((tmp_path / "etc/cni/net.d/10-xdpcni.conflist").read_text())["plugins"][0]["type"]
        == "xdpcni"
    )
    res = subprocess.run(
        [str(plugin)],
        input=b'{"cniVersion":"1.0.0"}',
        capture_output=True,
        env={"CNI_COMMAND": "VERSION", "PATH": "/usr/bin:/bin"},
    )
    assert res.returncode == 0 and json.loads(res.stdout)["cniVersion"] == "1.0.0"
    help_out = subprocess.run(
        [str(tmp_path / "opt/cni/bin/xdpcnictl"), "--help"], capture_output=True, text=True
    )
    assert help_out.returncode == 0 and "load" in help_out.stdout
    out = subprocess.run(
        ["bash", "scripts/install.sh", "--uninstall"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0 and not plugin.exists()
    assert (tmp_path / "etc/xdpcni/xdpcni.yaml.bak").exists()
