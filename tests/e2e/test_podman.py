"""A real runtime: podman 4.3 (Debian 12) runs two containers on an xdpcni
network through its CNI backend (libcni, which validates the plugin with VERSION and dummy
variables first), inside a simulated node's network namespace.

Everything podman uses is private to the test: CONTAINERS_CONF with network_backend="cni", the
network config dir (one conflist, the xdpcni plugin on cni_plugin_dirs), storage (--root,
--runroot). No image registry is needed: the containers run from a local rootfs holding a
static busybox (Debian's busybox-static). The OCI runtime is runc: crun refuses this machine's
cgroup v1 hierarchy, and the default RLIMIT_NOFILE podman asks for exceeds the test host's hard
limit, so the containers get explicit ulimits.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

import pytest

from sim.cni_runtime import REFERENCE_PLUGINS, cni_bin_dir, xdpcni_netconf
from tests.harness.nodestate import pod_links, snapshot

pytestmark = pytest.mark.e2e
NEEDS = {"podman": "podman", "runc": "runc", "busybox": "busybox-static"}
BUSYBOX = "/bin/busybox"


def _missing() -> list[str]:
    return [pkg for exe, pkg in NEEDS.items() if shutil.which(exe) is None]


@pytest.fixture
def podman(node):
    missing = _missing()
    if missing:
        pytest.skip(f"needs Debian packages {', '.join(missing)} (apt-get install -y {' '.join(missing)})")
    work = tempfile.mkdtemp(prefix="xdpcni-podman-")
    rootfs = os.path.join(work, "rootfs")
    os.makedirs(os.path.join(rootfs, "bin"))
    shutil.copy(shutil.which("busybox"), os.path.join(rootfs, "bin", "busybox"))
    netd = os.path.join(work, "net.d")
    os.makedirs(netd)
    conf = xdpcni_netconf(node, "tc", cni_version="1.0.0")
    plugin = {k: v for k, v in conf.items() if k not in ("cniVersion", "name")}
    with open(os.path.join(netd, "xdpcni-test.conflist"), "w") as fh:
        json.dump({"cniVersion": "1.0.0", "name": "xdpcni-test", "plugins": [plugin]}, fh)
    containers_conf = os.path.join(work, "containers.conf")
    with open(containers_conf, "w") as fh:
        fh.write(
            "[network]\n"
            'network_backend = "cni"\n'
            f'cni_plugin_dirs = ["{cni_bin_dir()}", "{REFERENCE_PLUGINS}"]\n'
            f'network_config_dir = "{netd}"\n'
            "[engine]\n"
            'events_logger = "file"\n'
            'cgroup_manager = "cgroupfs"\n'
            'runtime = "runc"\n'
        )
    env = {**os.environ, "CONTAINERS_CONF": containers_conf}
    base = [
        "nsenter",
        f"--net=/var/run/netns/{node.ns}",
        "podman",
        "--root",
        os.path.join(work, "root"),
        "--runroot",
        os.path.join(work, "runroot"),
        "--network-config-dir",
        netd,
    ]

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(base + list(args), env=env, capture_output=True, text=True, timeout=120)
        if check:
            assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return proc

    run.rootfs = rootfs
    try:
        yield run
    finally:
        run("rm", "-f", "-a", "-t", "0", check=False)
        shutil.rmtree(work, ignore_errors=True)


def test_podman_runs_two_containers_on_an_xdpcni_network(cluster, node, podman):
    nets = podman("network", "ls", "--format", "{{.Name}} {{.Driver}}").stdout.split("\n")
    assert "xdpcni-test xdpcni" in nets, nets  # libcni accepted the plugin (VERSION with dummy variables)
    limits = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]
    for name in ("c1", "c2"):
        podman(
            "run",
            "-d",
            *limits,
            "--name",
            name,
            "--network",
            "xdpcni-test",
            "--rootfs",
            podman.rootfs,
            BUSYBOX,
            "sleep",
            "300",
        )
    addrs = {}
    for name in ("c1", "c2"):
        out = podman("exec", name, BUSYBOX, "ip", "-4", "-o", "addr", "show", "eth0").stdout
        addrs[name] = out.split("inet ")[1].split("/")[0]
    assert addrs["c1"] != addrs["c2"] and all(
        a.startswith(str(node.cidr4.network_address)[:-1]) for a in addrs.values()
    )
    state = snapshot(node)
    assert len(pod_links(node)) == 2 and len(state["endpoints"]) == 2
    ping = podman("exec", "c1", BUSYBOX, "ping", "-c", "3", "-W", "2", addrs["c2"], check=False)
    assert ping.returncode == 0 and " 0% packet loss" in ping.stdout, ping.stdout + ping.stderr
    podman("rm", "-f", "-t", "0", "c1", "c2")
    after = snapshot(node)
    assert (
        pod_links(node) == []
        and after["endpoints"] == []
        and after["leases"] == []
        and after["records"] == []
    )
