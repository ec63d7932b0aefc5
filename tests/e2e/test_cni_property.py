"""Random hostile environment and stdin thrown at every verb, in-process (cni.main.execute
inside the node's namespace, the same code the executable and the agent run), on a node with a
loaded datapath and a live pod. Every input carries at least one defect (drawn at random from
the kinds the spec defines) plus random noise elsewhere, and the property is:

  exactly one JSON object on stdout, carrying a spec error code; exit status 1; the node's
  links, map entries, leases, records and claims unchanged.

VERSION takes no input it could reject; it must answer its version object whatever stdin holds.
The CI profile ("ci", the default) runs 50 derandomized examples per verb family; set
HYPOTHESIS_PROFILE=deep for a longer random search. (The installed executable is exercised with
the fixed table in test_cni_errors.py.)
"""

from __future__ import annotations

import contextlib
import io
import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cni import env as cni_env
from cni.claims import ClaimStore
from cni.errors import CniError
from cni.main import execute
from datapath.netns import entered
from tests.harness.nodestate import snapshot

pytestmark = pytest.mark.e2e

settings.register_profile(
    "ci",
    max_examples=50,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.register_profile("deep", parent=settings.get_profile("ci"), max_examples=1000, derandomize=False)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
SPEC_CODES = {1, 2, 3, 4, 5, 6, 7, 11, 50, 51}
VERBS = ("ADD", "DEL", "CHECK", "GC", "STATUS")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)


def _bad(validator):
    def rejected(value: str) -> bool:
        try:
            validator(value)
        except CniError:
            return True
        return False

    return rejected


bad_container_ids = (
    st.text(max_size=20).filter(lambda s: "\0" not in s).filter(_bad(cni_env.validate_container_id))
)
bad_ifnames = st.text(max_size=20).filter(lambda s: "\0" not in s).filter(_bad(cni_env.validate_ifname))
bad_netns = st.one_of(
    st.text(max_size=20).filter(lambda s: "\0" not in s and not s.startswith("/") and s != ""),
    st.sampled_from(["/proc/1/ns/net", "/proc/self/ns/net", "/etc/hostname", "/proc/self/ns/uts", "/"]),
    st.text(alphabet="abcxyz-", min_size=1, max_size=12).map(lambda s: f"/var/run/netns/xdpcni-prop-{s}"),
)
# Fields of the network config with a value of a type (or shape) no verb accepts.
WRONG = {
    "cniVersion": json_values.filter(lambda v: v not in ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")),
    "name": json_values.filter(lambda v: not (isinstance(v, str) and v and v.isascii() and v.isalnum())),
    "type": json_values.filter(lambda v: not isinstance(v, str) or v == ""),
    "mtu": json_values.filter(
        lambda v: not (isinstance(v, int) and not isinstance(v, bool) and 576 <= v <= 3506) and v is not None
    ),
    "vlan": st.one_of(st.integers(min_value=4095), st.integers(max_value=-1), st.text(), st.lists(st.none())),
    "mode": st.text(max_size=8).filter(lambda v: v not in ("auto", "xdp", "tc")),
    "netfilter": st.text(max_size=8).filter(lambda v: v not in ("auto", "respect", "bypass")),
    "bpffsRoot": st.one_of(
        st.text(max_size=30).filter(lambda v: not v.startswith("/sys/fs/bpf/")),
        st.sampled_from(["/sys/fs/bpf/../../tmp/xdpcni-prop", "/sys/fs/bpf/a/./b", "/sys/fs/bpf/x\0"]),
    ),
    "dataDir": st.one_of(
        st.text(max_size=30).filter(lambda v: not v.startswith("/")),
        st.sampled_from(["/run/../tmp/xdpcni-prop", "/run/x\0y", "/" + "d" * 300]),
    ),
    "ipam": st.one_of(
        json_values.filter(lambda v: not isinstance(v, dict)),
        st.builds(lambda r: {"type": "xdpcni", "ranges": r}, json_values),
    ),
    "runtimeConfig": json_values.filter(lambda v: not isinstance(v, dict) and v is not None),
    "lockTimeout": st.one_of(st.integers(max_value=0), st.text(), st.booleans()),
    "nic": st.one_of(bad_ifnames.filter(lambda v: v != ""), st.integers()),
}


@st.composite
def hostile(draw, base_env: dict, base_conf: dict, verb: str):
    env = dict(base_env, CNI_COMMAND=verb)
    conf = json.loads(json.dumps(base_conf))
    if verb == "GC":
        conf["cni.dev/valid-attachments"] = [{"containerID": "keeper", "ifname": "eth0"}]
    # Noise that is valid on its own: unknown keys (ignored), CNI_ARGS the runtime's business.
    for key, val in draw(
        st.dictionaries(st.text(max_size=6).map(lambda k: "x-" + k), json_values, max_size=3)
    ).items():
        conf[key] = val
    if draw(st.booleans()):
        env["CNI_ARGS"] = draw(st.sampled_from(["K8S_POD_NAME=p;IgnoreUnknown=1", "", "A=b"]))
    kinds = ["stdin-bytes", "stdin-deep", "stdin-json", "field"]
    if verb in ("ADD", "DEL", "CHECK"):
        kinds += ["containerid", "ifname"]
    if verb in ("ADD", "CHECK"):
        kinds += ["netns", "prevResult"]
    if verb == "GC":
        kinds += ["valid-attachments"]
    kind = draw(st.sampled_from(kinds))
    stdin = None
    if kind == "stdin-bytes":
        stdin = b"\xff" + draw(st.binary(max_size=200))
    elif kind == "stdin-deep":
        depth = draw(st.integers(min_value=1200, max_value=60_000))
        opener = draw(st.sampled_from([b"[", b'{"a":']))
        stdin = opener * depth
    elif kind == "stdin-json":
        stdin = json.dumps(draw(json_values.filter(lambda v: not isinstance(v, dict)))).encode()
    elif kind == "field":
        key = draw(st.sampled_from(sorted(WRONG)))
        conf[key] = draw(WRONG[key])
    elif kind == "containerid":
        env["CNI_CONTAINERID"] = draw(bad_container_ids)
    elif kind == "ifname":
        env["CNI_IFNAME"] = draw(bad_ifnames)
    elif kind == "netns":
        env["CNI_NETNS"] = draw(bad_netns)
    elif kind == "prevResult":
        conf["prevResult"] = draw(
            st.one_of(
                json_values.filter(lambda v: not isinstance(v, dict) and v is not None),
                st.builds(lambda v: {"ips": [v]}, json_values.filter(lambda v: not isinstance(v, dict))),
                st.builds(
                    lambda v: {"interfaces": v},
                    json_values.filter(lambda v: not isinstance(v, list) and v is not None),
                ),
            )
        )
    elif kind == "valid-attachments":
        conf["cni.dev/valid-attachments"] = draw(
            json_values.filter(lambda v: not isinstance(v, list) and v is not None)
        )
    if stdin is None:
        stdin = json.dumps(conf).encode()
    return kind, env, stdin


def _state(node) -> dict:
    return {"node": snapshot(node), "claims": sorted(ClaimStore(node.pin_root).all())}


@pytest.fixture
def live_node(cluster, node, runtime):
    pod_ns = runtime.new_pod_netns("keeper")
    inv = runtime.add("keeper", pod_ns)
    assert inv.ok, inv.stdout + inv.stderr
    victim_ns = runtime.new_pod_netns("victim")
    base_env = {
        "CNI_CONTAINERID": "victim",
        "CNI_NETNS": f"/var/run/netns/{victim_ns}",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin",
    }
    conf = runtime.xdpcni_conf()
    conf["prevResult"] = inv.out  # a valid one; CHECK's mutations replace it
    return node, base_env, conf


@pytest.mark.parametrize("verb", VERBS)
def test_random_hostile_input_never_changes_the_node(live_node, verb):
    node, base_env, base_conf = live_node

    @settings(settings.get_profile(PROFILE))
    @given(hostile(base_env, base_conf, verb))
    def prop(case):
        kind, env, stdin = case
        before = _state(node)
        with entered(node.ns), contextlib.redirect_stderr(io.StringIO()):
            rc, stdout = execute(env, stdin)
        assert rc == 1, (kind, env, stdin[:200], stdout)
        out = json.loads(stdout)
        assert isinstance(out, dict) and set(out) <= {"cniVersion", "code", "msg", "details"}, stdout
        assert (out["code"] in SPEC_CODES or 100 <= out["code"] < 1000) and out["code"] != 100, (kind, out)
        assert isinstance(out["msg"], str) and out["msg"], out
        assert _state(node) == before, (kind, env, stdin[:200])

    prop()


def test_version_answers_whatever_stdin_holds(live_node):
    node, base_env, _ = live_node

    @settings(settings.get_profile(PROFILE))
    @given(
        st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()),
        st.dictionaries(
            st.sampled_from(["CNI_NETNS", "CNI_IFNAME", "CNI_PATH", "CNI_CONTAINERID", "CNI_ARGS"]),
            st.text(max_size=10).filter(lambda s: "\0" not in s),
        ),
    )
    def prop(stdin, noise):
        rc, stdout = execute({**noise, "CNI_COMMAND": "VERSION"}, stdin)
        assert rc == 0 and "1.1.0" in json.loads(stdout)["supportedVersions"]

    prop()
