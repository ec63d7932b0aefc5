"""conf/xdpcni.yaml is what the docs say, and bad node configs fail with a clear message."""

from pathlib import Path

import pytest

from datapath.config import ConfigError, NodeConfig

CONF = Path(__file__).resolve().parents[2] / "conf"


def test_shipped_node_config_loads():
    cfg = NodeConfig.from_yaml(str(CONF / "xdpcni.yaml"))
    assert cfg.mode == "auto" and cfg.bpffs_root == "/sys/fs/bpf/xdpcni" and cfg.nic


def test_shipped_conflist_parses():
    import json

    from cni import netconf

    lst = json.loads((CONF / "10-xdpcni.conflist").read_text())
    first = {**lst["plugins"][0], "cniVersion": lst["cniVersion"], "name": lst["name"]}
    conf = netconf.parse(first, "ADD")
    assert conf.ipam.builtin and len(conf.ipam.range_sets) == 2


@pytest.mark.parametrize(
    "data,needle",
    [
        ({}, "nic"),
        ({"nic": "eth0", "mode": "fast"}, "mode"),
        ({"nic": "eth0", "vlan": 5000}, "vlan"),
        ({"nic": "eth0", "bpffs_root": "/tmp/x"}, "bpffs_root"),
        ({"nic": "eth0", "mtu": 9000}, "mtu"),
        ({"nic": "eth0", "pod_cidrs": ["10.0.0.0/33"]}, "pod_cidrs"),
        ({"nic": "eth0", "typo": 1}, "unknown"),
    ],
)
def test_bad_node_config(data, needle):
    with pytest.raises(ConfigError, match=needle):
        NodeConfig.from_dict(data)


def test_pin_roots_never_share_state_or_lock_files():
    from datapath.pins import PinLayout

    a, b = PinLayout("/sys/fs/bpf/X/c/d"), PinLayout("/sys/fs/bpf/X/c_d")
    assert a.state_file != b.state_file
    assert a.key != b.key  # the address claims directory and any per-root file derive from it
    assert PinLayout("/sys/fs/bpf/X/c_d").key == PinLayout("/sys/fs/bpf/X/c_d/").key


def test_load_with_nic_auto_says_what_to_do(tmp_path, capsys):
    """`nic: auto` (the DaemonSet's ConfigMap) means something only to the Kubernetes mode;
    `xdpcnictl load` refuses it with what to pass instead, before touching the kernel."""
    from node.ctl import main

    conf = tmp_path / "xdpcni.yaml"
    conf.write_text("nic: auto\nbpffs_root: /sys/fs/bpf/xdpcni-unit-never-loaded\n")
    assert main(["--config", str(conf), "load"]) == 2
    err = capsys.readouterr().err
    assert "nic: auto" in err and "--nic" in err and "--kubernetes" in err
    assert not Path("/sys/fs/bpf/xdpcni-unit-never-loaded").exists()


@pytest.mark.parametrize(
    "missing", ["progs", "maps", "progs/tc_pod", "maps/endpoints", "maps/monitor_events"]
)
def test_is_loaded_needs_every_pin(tmp_path, missing):
    """is_loaded() reads the two pin directories (every verb asks): loaded only when every
    program and map is there, never when one pin or a whole directory is missing."""
    from datapath.pins import MAPS, PROGRAMS, PinLayout

    layout = PinLayout(str(tmp_path))
    for sub, names in (("progs", PROGRAMS), ("maps", MAPS)):
        (tmp_path / sub).mkdir()
        for n in names:
            (tmp_path / sub / n).touch()
    (tmp_path / "progs" / "unrelated").touch()
    assert layout.is_loaded()
    target = tmp_path / missing
    if target.is_dir():
        for f in target.iterdir():
            f.unlink()
        target.rmdir()
    else:
        target.unlink()
    assert not layout.is_loaded()
    target.mkdir() if "/" not in missing else target.touch()
    assert layout.is_loaded() == ("/" in missing)
