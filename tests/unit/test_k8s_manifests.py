"""conf/kubernetes/: the manifests `kubectl apply -f conf/kubernetes/` installs.

Checked against the Kubernetes OpenAPI schema (kubernetes-validate, strict: unknown fields fail)
for the oldest and newest API versions we support, and against the code they run: the
ClusterRole grants exactly what node/k8s.py calls (RBAC_RULES), the container's arguments parse
with xdpcnictl's own parser, and every host path the agent writes (pins, node state, CNI
directories, the runtime's netns mounts) is mounted from the host.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from cni.netconf import DEFAULT_DATA_DIR
from datapath.config import NodeConfig
from datapath.pins import RUN_DIR
from node.ctl import build_parser

MANIFESTS = Path(__file__).resolve().parents[2] / "conf" / "kubernetes"
SCHEMA_VERSIONS = ("1.30.0", "1.37.0")  # oldest we support (appArmorProfile field), newest packaged


def _docs() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path.name, doc))
    return out


def _one(kind: str) -> dict:
    found = [d for _, d in _docs() if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _agent() -> dict:
    (c,) = _one("DaemonSet")["spec"]["template"]["spec"]["containers"]
    return c


def _args() -> list[str]:
    """The container's argv after the program, with $(NODE_NAME) expanded as the kubelet does."""
    return [a.replace("$(NODE_NAME)", "node-a") for a in _agent()["args"]]


def _mounts() -> dict[str, tuple[str, dict]]:
    """container mountPath -> (host path, volumeMount)."""
    spec = _one("DaemonSet")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    out = {}
    for m in _agent()["volumeMounts"]:
        vol = volumes[m["name"]]
        out[m["mountPath"]] = (vol.get("hostPath", {}).get("path"), m)
    return out


def _host_path_of(container_path: str) -> str | None:
    """The host path a container path lands on through the mounts (None: not on the host)."""
    best = None
    for mpath, (host, _) in _mounts().items():
        inside = container_path == mpath or container_path.startswith(mpath.rstrip("/") + "/")
        if host and inside and (best is None or len(mpath) > len(best[0])):
            best = (mpath, host)
    if best is None:
        return None
    return posixpath.normpath(posixpath.join(best[1], posixpath.relpath(container_path, best[0])))


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_every_manifest_validates_against_the_openapi_schema(version):
    docs = _docs()
    assert {d["kind"] for _, d in docs} >= {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "DaemonSet",
    }
    for name, doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)  # raises ValidationError
        assert doc["metadata"].get("namespace", "xdpcni-system") == "xdpcni-system", name


def test_strict_validation_rejects_an_unknown_field():
    """The check above can fail: a misspelt field is an error, not ignored."""
    ds = _one("DaemonSet")
    ds["spec"]["template"]["spec"]["hostNetwrok"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, SCHEMA_VERSIONS[0], strict=True)


def test_files_apply_in_dependency_order():
    """`kubectl apply -f DIR` goes by file name: the Namespace first, the DaemonSet last."""
    kinds = [d["kind"] for _, d in _docs()]
    assert kinds[0] == "Namespace" and kinds[-1] == "DaemonSet"


def test_cluster_role_grants_exactly_what_the_agent_calls():
    from node.k8s import RBAC_RULES

    def norm(rules):
        return sorted(
            (tuple(sorted(r.get("apiGroups", []))), tuple(sorted(r["resources"])), tuple(sorted(r["verbs"])))
            for r in rules
        )

    assert norm(_one("ClusterRole")["rules"]) == norm(RBAC_RULES)
    binding = _one("ClusterRoleBinding")
    sa = _one("ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": _one("ClusterRole")["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": sa["metadata"]["namespace"]}
    ]
    pod = _one("DaemonSet")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]


def test_container_arguments_parse_with_xdpcnictl():
    assert _agent()["command"][-1].endswith("xdpcnictl")
    args = build_parser().parse_args(_args())
    assert args.kubernetes is True
    assert args.node_name == "node-a"
    env = {e["name"]: e for e in _agent()["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}


def test_node_config_in_the_configmap_is_valid_and_mounted_where_the_agent_reads_it():
    cm = _one("ConfigMap")
    cfg = NodeConfig.from_dict(yaml.safe_load(cm["data"]["xdpcni.yaml"]))
    config_arg = next(a.split("=", 1)[1] for a in _args() if a.startswith("--config="))
    mounts = _mounts()
    assert os.path.dirname(config_arg) in mounts
    _, m = mounts[os.path.dirname(config_arg)]
    spec = _one("DaemonSet")["spec"]["template"]["spec"]
    vol = next(v for v in spec["volumes"] if v["name"] == m["name"])
    assert vol["configMap"]["name"] == cm["metadata"]["name"]
    assert os.path.basename(config_arg) in cm["data"]
    # the pins land on the host's bpffs, so they outlive the agent's pod
    assert _host_path_of(cfg.bpffs_root) == cfg.bpffs_root


def test_every_host_path_the_agent_uses_is_mounted_from_the_host():
    args = build_parser().parse_args(_args())
    # node state and the agent's socket, the CNI data dir (IPAM leases, attachment records)
    for path in (RUN_DIR, DEFAULT_DATA_DIR):
        assert _host_path_of(path) == path, f"{path} is not the host's"
    # the CNI directories the agent installs into
    assert _host_path_of(args.cni_bin_dir) == "/opt/cni/bin"
    assert _host_path_of(args.cni_conf_dir) == "/etc/cni/net.d"
    # pod netns the runtime creates later must appear: HostToContainer on both spellings
    for path in ("/run/netns", "/var/run/netns"):
        host, m = _mounts()[path]
        assert host == path and m.get("mountPropagation") == "HostToContainer", path
    # sysctls go through the host's procfs (/proc/sys is read-only in the container)
    env = {e["name"]: e.get("value") for e in _agent()["env"]}
    assert _host_path_of(env["XDPCNI_PROCFS"]) == "/proc"
    bpffs_host, bpffs_mount = _mounts()["/sys/fs/bpf"]
    assert bpffs_host == "/sys/fs/bpf" and bpffs_mount.get("mountPropagation") == "HostToContainer"


def test_pod_runs_on_every_node_with_the_host_network_and_least_privilege():
    pod = _one("DaemonSet")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["hostPID"] is True  # CNI_NETNS=/proc/<host pid>/ns/net
    assert pod["priorityClassName"] == "system-node-critical"
    assert {"operator": "Exists"} in pod["tolerations"]
    sc = _agent()["securityContext"]
    assert sc.get("privileged") is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert set(sc["capabilities"]["add"]) == {
        "NET_ADMIN",
        "BPF",
        "PERFMON",
        "SYS_ADMIN",
        "SYS_PTRACE",
        "SYS_RESOURCE",
    }


def test_probes_hit_the_agents_health_endpoint():
    args = build_parser().parse_args(_args())
    host, port = args.metrics.rsplit(":", 1)
    for probe in ("readinessProbe", "livenessProbe"):
        get = _agent()[probe]["httpGet"]
        assert (get["path"], get["port"], get["host"]) == ("/healthz", int(port), host)


def test_sysctl_writes_follow_xdpcni_procfs(tmp_path):
    """What the DaemonSet's XDPCNI_PROCFS does: forwarding switches land under that procfs."""
    import subprocess
    import sys

    conf = tmp_path / "sys/net/ipv4/conf/eth9"
    conf.mkdir(parents=True)
    (conf / "forwarding").write_text("0")
    code = "from datapath import sysctl; sysctl.enable_forwarding('eth9')"
    env = dict(os.environ, XDPCNI_PROCFS=str(tmp_path))
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=Path(__file__).resolve().parents[2])
    assert (conf / "forwarding").read_text() == "1"


def test_forwarding_switches_are_written_only_when_off(tmp_path, monkeypatch):
    """A host veth made while the node forwards globally starts with forwarding on: the switch is
    read, and written only when it is off (a write makes the kernel flush its routing cache)."""
    from datapath import sysctl

    monkeypatch.setattr(sysctl, "PROCFS", str(tmp_path))
    written = []
    real_write = sysctl._write
    monkeypatch.setattr(sysctl, "_write", lambda path, value: written.append(path) or real_write(path, value))
    for fam, names in (("ipv4", ["forwarding"]), ("ipv6", ["forwarding", "force_forwarding"])):
        d = tmp_path / f"sys/net/{fam}/conf"
        for dev, value in (("on0", "1\n"), ("off0", "0\n")):
            (d / dev).mkdir(parents=True, exist_ok=True)
            for n in names:
                (d / dev / n).write_text(value)
    sysctl.enable_forwarding("on0")
    assert written == []
    sysctl.enable_forwarding("off0")
    assert sorted(written) == sorted(
        str(tmp_path / f"sys/net/{p}")
        for p in ("ipv4/conf/off0/forwarding", "ipv6/conf/off0/forwarding", "ipv6/conf/off0/force_forwarding")
    )
    assert all(
        (tmp_path / f"sys/net/{fam}/conf/off0/forwarding").read_text().strip() == "1"
        for fam in ("ipv4", "ipv6")
    )
    sysctl.enable_forwarding("missing0")  # a switch this kernel lacks (force_forwarding before 6.17)
