"""install-cni (node/install.py): the conflist from podCIDRs in order, atomic writes that leave no
temporary and skip unchanged content, executable before conflist, other conflists named, and the
generated client running on the host's python3 alone (-I -S: no venv, no site-packages)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from node import install

HOST_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def test_conflist_ranges_follow_pod_cidrs_order():
    conf = install.conflist(["fd00:10:244:1::/64", "10.244.1.0/24"], 1460)
    (plugin,) = conf["plugins"]
    assert [rs[0]["subnet"] for rs in plugin["ipam"]["ranges"]] == ["fd00:10:244:1::/64", "10.244.1.0/24"]
    assert plugin["ipam"]["type"] == "xdpcni" and plugin["mtu"] == 1460
    assert conf["cniVersion"] == "1.1.0" and conf["name"] == "xdpcni"
    # defaults are left out; what differs from them is written
    assert not {"bpffsRoot", "agentSocket", "nodeConfig", "nic", "capabilities"} & set(plugin)
    conf = install.conflist(
        ["10.244.1.0/24"],
        1500,
        root="/sys/fs/bpf/x",
        agent_socket="/run/x.sock",
        config_path="/etc/x.yaml",
        nic="eth1",
        portmap=True,
    )
    plugin, portmap = conf["plugins"]
    assert (plugin["bpffsRoot"], plugin["agentSocket"], plugin["nodeConfig"], plugin["nic"]) == (
        "/sys/fs/bpf/x",
        "/run/x.sock",
        "/etc/x.yaml",
        "eth1",
    )
    assert plugin["capabilities"] == {"portMappings": True} and portmap["type"] == "portmap"


def test_conflist_parses_as_our_network_config():
    from cni import netconf

    data = install.conflist(["10.244.1.0/24", "fd00::/64"], 1400, nic="eth0")
    net = {"cniVersion": data["cniVersion"], "name": data["name"], **data["plugins"][0]}
    conf = netconf.parse(net, "ADD")
    assert conf.mtu == 1400 and conf.nic == "eth0"
    assert [str(rs.ranges[0].subnet) for rs in conf.ipam.range_sets] == ["10.244.1.0/24", "fd00::/64"]


def test_conflist_needs_pod_cidrs():
    with pytest.raises(ValueError, match="podCIDRs"):
        install.conflist([], 1500)


def test_write_atomic_leaves_no_temporary_and_skips_unchanged(tmp_path):
    path = str(tmp_path / "00-x.conflist")
    assert install.write_atomic(path, b"one", 0o644)
    assert os.stat(path).st_mode & 0o777 == 0o644
    ino = os.stat(path).st_ino
    assert not install.write_atomic(path, b"one", 0o644)  # same content: untouched
    assert os.stat(path).st_ino == ino
    assert install.write_atomic(path, b"two", 0o644)
    assert os.stat(path).st_ino != ino  # replaced by rename, never rewritten in place
    assert install.write_atomic(path, b"two", 0o755)  # a mode change is a change
    assert sorted(os.listdir(tmp_path)) == ["00-x.conflist"]


def test_write_atomic_failure_leaves_nothing(tmp_path, monkeypatch):
    path = str(tmp_path / "f")

    def boom(*a):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        install.write_atomic(path, b"x", 0o644)
    assert os.listdir(tmp_path) == []


def test_installer_writes_the_executable_first_and_warns_about_other_configs(tmp_path, monkeypatch):
    bin_dir, conf_dir = tmp_path / "bin", tmp_path / "net.d"
    conf_dir.mkdir()
    (conf_dir / "05-calico.conflist").write_text("{}")
    (conf_dir / "99-loopback.conf").write_text("{}")
    (conf_dir / "README").write_text("not a config")
    order, logs = [], []
    real = install.write_atomic
    monkeypatch.setattr(
        install, "write_atomic", lambda p, d, m: order.append(os.path.basename(p)) or real(p, d, m)
    )
    inst = install.CniInstaller(str(bin_dir), str(conf_dir), log=logs.append)
    assert inst.install(["10.244.1.0/24"], 1500)
    assert order == ["xdpcni_client.py", "xdpcni", "00-xdpcni.conflist"]
    (warning,) = [m for m in logs if m.startswith("warning")]
    assert "05-calico.conflist, 99-loopback.conf" in warning and "sorts first" not in warning
    assert not inst.install(["10.244.1.0/24"], 1500)  # nothing changed, nothing rewritten
    assert len([m for m in logs if m.startswith("warning")]) == 1  # said once per set of files
    (conf_dir / "00-xdpcni.conflist").unlink()
    inst2 = install.CniInstaller(str(bin_dir), str(conf_dir), "50-xdpcni.conflist", log=logs.append)
    inst2.install(["10.244.1.0/24"], 1500)
    assert "05-calico.conflist sorts first and will be used instead" in logs[-1]


def test_conflist_name_must_be_a_conflist_file():
    for bad in ("x.conf", "../00-x.conflist", "a/b.conflist"):
        with pytest.raises(ValueError):
            install.CniInstaller("/tmp/b", "/tmp/c", bad)


def _run_client(path, command, stdin: bytes, env=None):
    e = {"CNI_COMMAND": command, **(env or {})}
    return subprocess.run(
        [HOST_PYTHON, "-I", "-S", path], input=stdin, capture_output=True, env=e, timeout=30
    )


@pytest.fixture
def client(tmp_path):
    path = tmp_path / "xdpcni"
    path.write_text(install.client_source())
    path.chmod(0o755)
    return str(path)


def test_client_answers_version_alone(client):
    res = _run_client(client, "VERSION", b'{"cniVersion": "0.4.0"}')
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out == {"cniVersion": "0.4.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}
    res = _run_client(client, "VERSION", b"not json")
    assert res.returncode == 0 and json.loads(res.stdout)["cniVersion"] == "1.1.0"


def test_client_says_try_again_later_without_an_agent(client, tmp_path):
    net = json.dumps(
        {"cniVersion": "1.0.0", "name": "xdpcni", "type": "xdpcni", "agentSocket": str(tmp_path / "none")}
    )
    for verb in ("ADD", "DEL", "CHECK"):
        res = _run_client(client, verb, net.encode())
        assert res.returncode == 1
        out = json.loads(res.stdout)
        assert out["code"] == 11 and out["cniVersion"] == "1.0.0", out
        assert str(tmp_path / "none") in out["details"]
    res = _run_client(client, "STATUS", net.replace("1.0.0", "1.1.0").encode())
    assert res.returncode == 1 and json.loads(res.stdout)["code"] == 50


def test_client_relays_the_agents_reply(client, tmp_path):
    """A stand-in agent on a unix socket: the client sends env + stdin, prints the reply as is."""
    import socket
    import threading

    from cni import client as proto

    path = str(tmp_path / "agent.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    seen = {}

    def serve():
        conn, _ = srv.accept()
        with conn:
            seen.update(proto.recv_msg(conn))
            proto.send_msg(conn, {"rc": 0, "stdout": '{"cniVersion": "1.0.0", "ips": []}', "stderr": ""})

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        net = json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "xdpcni", "agentSocket": path})
        res = _run_client(client, "ADD", net.encode(), {"CNI_CONTAINERID": "abc", "OTHER": "x"})
        t.join(10)
    finally:
        srv.close()
    assert res.returncode == 0 and json.loads(res.stdout) == {"cniVersion": "1.0.0", "ips": []}, res.stderr
    assert (
        seen["env"] == {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc"}
        and json.loads(seen["stdin"])["name"] == "n"
    )


def _imports(client, command, stdin: bytes) -> set[str]:
    res = subprocess.run(
        [HOST_PYTHON, "-I", "-S", "-v", client],
        input=stdin,
        capture_output=True,
        env={"CNI_COMMAND": command},
    )
    return {m.split(".")[0] for m in re.findall(r"^import '([\w.]+)'", res.stderr.decode(), re.M)}


def test_client_imports_nothing_but_the_standard_library(client, tmp_path):
    net = json.dumps(
        {"cniVersion": "1.0.0", "name": "n", "type": "xdpcni", "agentSocket": str(tmp_path / "x")}
    )
    for command in ("VERSION", "ADD", "STATUS"):
        imported = _imports(client, command, net.encode())
        assert imported and imported <= set(sys.stdlib_module_names), (command, imported)
        assert "site" not in imported and "cni" not in imported


OLD_CLIENT = '''"""A client of the first kind: the protocol only, no main of its own."""
import json
import os


def socket_path(environ, stdin):
    return json.loads(stdin).get("agentSocket") or "/run/xdpcni/agent.sock"


def via_agent(environ, stdin):
    return None if not os.path.exists(socket_path(environ, stdin)) else (0, "{}", "")
'''


def test_a_client_module_without_a_main_gets_ours(monkeypatch, tmp_path):
    import cni.client

    fake = tmp_path / "client.py"
    fake.write_text(OLD_CLIENT)
    monkeypatch.setattr(cni.client, "__file__", str(fake))
    exe = tmp_path / "xdpcni"
    exe.write_text(install.client_source())
    net = json.dumps({"cniVersion": "0.4.0", "agentSocket": str(tmp_path / "none")}).encode()
    res = _run_client(str(exe), "DEL", net)
    assert (
        res.returncode == 1
        and json.loads(res.stdout)["code"] == 11
        and json.loads(res.stdout)["cniVersion"] == "0.4.0"
    )
    res = _run_client(str(exe), "VERSION", net)
    assert res.returncode == 0 and json.loads(res.stdout)["cniVersion"] == "0.4.0"


def test_client_source_needs_the_agent_protocol(monkeypatch, tmp_path):
    import cni.client

    fake = tmp_path / "client.py"
    fake.write_text("def socket_path(e, s):\n    return ''\n")
    monkeypatch.setattr(cni.client, "__file__", str(fake))
    with pytest.raises(RuntimeError, match="via_agent"):
        install.client_source()


def test_client_source_drops_a_main_block_of_its_own(monkeypatch, tmp_path):
    import cni.client

    fake = tmp_path / "client.py"
    with open(cni.client.__file__) as fh:
        src = fh.read() + '\n\nif __name__ == "__main__":\n    raise SystemExit(99)\n'
    fake.write_text(src)
    monkeypatch.setattr(cni.client, "__file__", str(fake))
    out = install.client_source()
    assert "SystemExit(99)" not in out and out.count('if __name__ == "__main__":') == 1


def test_xdpcnictl_install_cni(tmp_path, capsys):
    from node import ctl

    rc = ctl.main(
        [
            "install-cni",
            "--cni-bin-dir",
            str(tmp_path / "bin"),
            "--cni-conf-dir",
            str(tmp_path / "net.d"),
            "--pod-cidr",
            "10.244.7.0/24",
            "--pod-cidr",
            "fd00:10:244:7::/64",
            "--mtu",
            "1450",
        ]
    )
    assert rc == 0
    conf = json.loads((tmp_path / "net.d" / "00-xdpcni.conflist").read_text())
    plugin = conf["plugins"][0]
    assert [r[0]["subnet"] for r in plugin["ipam"]["ranges"]] == ["10.244.7.0/24", "fd00:10:244:7::/64"]
    assert plugin["mtu"] == 1450
    assert os.access(tmp_path / "bin" / "xdpcni", os.X_OK)


def test_the_installed_launcher_runs_the_client_module_from_cached_bytecode(tmp_path):
    """The executable is a launcher importing the client module beside it: Python compiles a
    script on every run but caches a module's bytecode after the first (issue 12)."""
    bin_dir = tmp_path / "bin"
    inst = install.CniInstaller(str(bin_dir), str(tmp_path / "net.d"), log=lambda m: None)
    inst.install(["10.244.1.0/24"], 1500)
    cache = bin_dir / install.CLIENT_DIR / "__pycache__"
    assert not cache.exists()
    net = json.dumps({"cniVersion": "0.4.0", "agentSocket": str(tmp_path / "none")}).encode()
    for _ in range(2):  # from another working directory, as a runtime runs it
        res = subprocess.run(
            [HOST_PYTHON, "-I", "-S", str(bin_dir / "xdpcni")],
            input=net,
            capture_output=True,
            env={"CNI_COMMAND": "VERSION"},
            cwd="/",
            timeout=30,
        )
        assert res.returncode == 0 and json.loads(res.stdout)["cniVersion"] == "0.4.0", res.stderr
        assert [p.name.split(".")[0] for p in cache.iterdir()] == [install.CLIENT_MODULE]
    res = _run_client(str(bin_dir / "xdpcni"), "DEL", net)
    assert res.returncode == 1 and json.loads(res.stdout)["code"] == 11  # no agent: try again
    imported = _imports(str(bin_dir / "xdpcni"), "ADD", net)
    assert imported <= set(sys.stdlib_module_names) | {install.CLIENT_MODULE}, imported
    inst.uninstall()
    assert sorted(os.listdir(bin_dir)) == []


def test_the_launcher_finds_its_module_through_a_symlink(tmp_path):
    bin_dir = tmp_path / "bin"
    install.CniInstaller(str(bin_dir), str(tmp_path / "net.d"), log=lambda m: None).install(
        ["10.244.1.0/24"], 1500
    )
    other = tmp_path / "other-bin"
    other.mkdir()
    (other / "xdpcni").symlink_to(bin_dir / "xdpcni")
    res = _run_client(str(other / "xdpcni"), "VERSION", b'{"cniVersion": "1.0.0"}')
    assert res.returncode == 0 and json.loads(res.stdout)["cniVersion"] == "1.0.0", res.stderr
