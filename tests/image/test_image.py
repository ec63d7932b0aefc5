"""`make test-image`: the container image (make image) run the way the DaemonSet runs it.

Not part of `make test` (building the image is minutes of package downloads). One simulated
node (a network namespace with its NIC on the simulated wire); the image runs under podman in
that namespace (`--network ns:`, the DaemonSet's hostNetwork), with host PIDs, the DaemonSet's
capabilities instead of --privileged, and its host mounts: bpffs, the CNI bin and conf
directories (temporary directories standing in for the host's), /var/lib/cni, /run/xdpcni and
/run/netns with slave propagation. The agent runs in Kubernetes mode against the fake API
server (tests/harness/fakeapi.py) listening on the node's 127.0.0.1.

Checked: the container installs the stdlib-only CNI client and then the conflist (the node's
podCIDRs from its Node object) into the host directories and reports ready on /healthz; a pod
network namespace created *after* the container started gets an address through the installed
client run by the host's /usr/bin/python3 (ADD served by the agent in the container), the pod
is reachable from the node over IPv4 and IPv6, DEL removes it, and stopping the container leaves
the pins (pods stay on the fast path across agent restarts).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import yaml

from sim.topology import VENV_BIN, Cluster, run_in
from tests.harness.fakeapi import FakeApiServer, make_node
from tests.harness.waiting import wait_for

VERSION = "0.1.0"
IMAGE = os.environ.get("XDPCNI_IMAGE", f"localhost/xdpcni:{VERSION}")
HOST_PYTHON = "/usr/bin/python3"
CAPS = ["NET_ADMIN", "BPF", "PERFMON", "SYS_ADMIN", "SYS_PTRACE", "SYS_RESOURCE"]
NAME = f"xdpcni-test-image-{os.getpid()}"


def _podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=check)


@pytest.fixture(scope="module")
def node_in_container():
    if _podman("image", "exists", IMAGE, check=False).returncode != 0:
        pytest.fail(f"{IMAGE} is not built: run `make image` (make test-image does)")
    cluster = Cluster(1, routes=False)
    api = FakeApiServer(bookmark_interval=0.5)
    node = cluster.nodes[0]
    host = os.path.join(node.data_dir, "host")
    dirs = {
        "bin": os.path.join(host, "opt/cni/bin"),
        "conf": os.path.join(host, "etc/cni/net.d"),
        "lib": os.path.join(host, "var/lib/cni"),
        "etc": os.path.join(host, "etc/xdpcni"),
    }
    try:
        for d in dirs.values():
            os.makedirs(d, exist_ok=True)
        os.makedirs("/run/xdpcni", mode=0o700, exist_ok=True)
        port = api.listen(node.ns)
        api.kubeconfig(os.path.join(dirs["etc"], "kubeconfig"), port)
        with open(os.path.join(dirs["etc"], "xdpcni.yaml"), "w") as fh:
            yaml.safe_dump(
                {"nic": "auto", "mode": "tc", "netfilter": "auto", "bpffs_root": node.pin_root}, fh
            )
        api.add_node(make_node(node.name, [node.nic_ip4, node.nic_ip6], [str(node.cidr4), str(node.cidr6)]))
        socket = os.path.join(node.data_dir, "agent.sock")
        run = _podman(
            "--runtime=runc",
            "run",
            "--detach",
            "--name",
            NAME,
            f"--network=ns:/var/run/netns/{node.ns}",
            "--pid=host",
            "--cap-drop=ALL",
            *[f"--cap-add={c}" for c in CAPS],
            "--security-opt=seccomp=unconfined",
            "--security-opt=apparmor=unconfined",
            # podman's default RLIMIT_NOFILE exceeds this machine's hard limit (see test_podman.py)
            "--ulimit=nofile=1024:1024",
            "--ulimit=nproc=4096:4096",
            "--volume=/sys/fs/bpf:/sys/fs/bpf:rslave",
            f"--volume={dirs['bin']}:/host/opt/cni/bin",
            f"--volume={dirs['conf']}:/host/etc/cni/net.d",
            f"--volume={dirs['lib']}:/var/lib/cni",
            "--volume=/run/xdpcni:/run/xdpcni",
            "--volume=/run/netns:/run/netns:rslave",
            f"--volume={dirs['etc']}:/etc/xdpcni:ro",
            # the agent's socket at the same path inside and out (the conflist names it)
            f"--volume={node.data_dir}:{node.data_dir}",
            f"--env=NODE_NAME={node.name}",
            "--volume=/proc:/host/proc",
            "--env=XDPCNI_PROCFS=/host/proc",
            IMAGE,
            "/opt/xdpcni/.venv/bin/xdpcnictl",
            "--config=/etc/xdpcni/xdpcni.yaml",
            "agent",
            "--kubernetes",
            "--kubeconfig=/etc/xdpcni/kubeconfig",
            f"--node-name={node.name}",
            "--cni-bin-dir=/host/opt/cni/bin",
            "--cni-conf-dir=/host/etc/cni/net.d",
            f"--socket={socket}",
            "--metrics=127.0.0.1:9465",
            check=False,
        )
        assert run.returncode == 0, run.stderr
        yield cluster, api, node, dirs, socket
    finally:
        logs = _podman("logs", NAME, check=False)
        if logs.returncode == 0:
            print(logs.stdout[-4000:], logs.stderr[-4000:])
        _podman("rm", "--force", "--time=5", NAME, check=False)
        api.close()
        cluster.teardown()
        shutil.rmtree(node.data_dir, ignore_errors=True)


def _logs() -> str:
    r = _podman("logs", NAME, check=False)
    return (r.stdout + r.stderr)[-3000:]


def _healthz(node) -> int:
    out = run_in(
        node.ns,
        os.path.join(VENV_BIN, "python"),
        "-c",
        "import urllib.request,sys\n"
        "try: print(urllib.request.urlopen('http://127.0.0.1:9465/healthz', timeout=2).status)\n"
        "except Exception as e: print(getattr(e, 'code', 0))",
        check=False,
    )
    return int(out.stdout.strip() or 0)


def _cni(node, dirs, socket, command: str, netns_path: str, cid: str) -> subprocess.CompletedProcess:
    """The installed executable as kubelet's runtime runs it: host python3 alone, in the node."""
    with open(os.path.join(dirs["conf"], "00-xdpcni.conflist")) as fh:
        conflist = json.load(fh)
    plugin = dict(conflist["plugins"][0], cniVersion=conflist["cniVersion"], name=conflist["name"])
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": cid,
        "CNI_NETNS": netns_path,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": dirs["bin"],
        "CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=after-start",
    }
    return subprocess.run(
        [
            "nsenter",
            f"--net=/var/run/netns/{node.ns}",
            HOST_PYTHON,
            "-I",
            "-S",
            os.path.join(dirs["bin"], "xdpcni"),
        ],
        input=json.dumps(plugin),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_container_installs_the_plugin_then_the_conflist(node_in_container):
    cluster, api, node, dirs, socket = node_in_container
    conflist = os.path.join(dirs["conf"], "00-xdpcni.conflist")
    wait_for(lambda: os.path.exists(conflist), 180, "the conflist in the host conf dir", log=_logs)
    exe = os.path.join(dirs["bin"], "xdpcni")
    assert os.access(exe, os.X_OK)
    assert os.stat(exe).st_mtime <= os.stat(conflist).st_mtime, "conflist written before the executable"
    with open(conflist) as fh:
        conf = json.load(fh)
    ipam = conf["plugins"][0]["ipam"]
    subnets = [r[0]["subnet"] for r in ipam["ranges"]]
    assert subnets == [str(node.cidr4), str(node.cidr6)]
    wait_for(lambda: _healthz(node) == 200, 30, "/healthz 200", log=_logs)
    wait_for(
        lambda: any(
            c["type"] == "NetworkUnavailable" and c["status"] == "False"
            for c in api.node(node.name)["status"]["conditions"]
        ),
        30,
        "NetworkUnavailable=False",
        log=_logs,
    )


def test_add_into_a_netns_created_after_the_container_started(node_in_container):
    cluster, api, node, dirs, socket = node_in_container
    wait_for(
        lambda: os.path.exists(os.path.join(dirs["conf"], "00-xdpcni.conflist")), 180, "conflist", log=_logs
    )
    ns = f"{cluster.prefix}-late-pod"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    cluster.namespaces.append(ns)  # removed at teardown, also on failure
    path = f"/var/run/netns/{ns}"
    add = _cni(node, dirs, socket, "ADD", path, "late0001")
    assert add.returncode == 0, f"ADD failed: {add.stdout}{add.stderr}\n{_logs()}"
    result = json.loads(add.stdout)
    ips = [i["address"].split("/")[0] for i in result["ips"]]
    assert len(ips) == 2, result
    inside = run_in(ns, "ip", "-o", "addr", "show", "dev", "eth0").stdout
    for ip in ips:
        assert ip in inside
        r = run_in(node.ns, "ping", "-c", "2", "-W", "2", ip, check=False)
        assert r.returncode == 0, f"node cannot reach the pod at {ip}: {r.stdout}{r.stderr}"
    eps = run_in(
        node.ns, os.path.join(VENV_BIN, "xdpcnictl"), "--root", node.pin_root, "endpoints", "--json"
    ).stdout
    assert any(set(ips) <= set(e.get("ips", [])) for e in json.loads(eps)), eps
    dele = _cni(node, dirs, socket, "DEL", path, "late0001")
    assert dele.returncode == 0, dele.stdout + dele.stderr
    assert "eth0" not in run_in(ns, "ip", "-o", "link", "show").stdout
    eps = json.loads(
        run_in(
            node.ns, os.path.join(VENV_BIN, "xdpcnictl"), "--root", node.pin_root, "endpoints", "--json"
        ).stdout
    )
    assert not any(set(ips) & set(e.get("ips", [])) for e in eps)
