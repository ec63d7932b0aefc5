"""The lean CNI executable (cni/client.py): what it imports before the agent answered, its
hand-written JSON against the json module, the launcher, and the in-process fallback."""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cni import client

ROOT = Path(__file__).resolve().parents[2]
PY = os.path.join(os.path.dirname(sys.executable), "python3")


class FakeAgent:
    """A stand-in agent: records each request, answers with `reply` (a dict, sent as JSON)."""

    def __init__(self, path: str, reply: dict):
        self.path, self.reply, self.seen = path, reply, []
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            with conn:
                self.seen.append(client.recv_msg(conn))
                client.send_msg(conn, self.reply)

    def close(self) -> None:
        self.srv.close()


@pytest.fixture
def agent(tmp_path):
    a = FakeAgent(
        str(tmp_path / "agent.sock"), {"rc": 0, "stdout": '{"cniVersion": "1.0.0"}', "stderr": "w\n"}
    )
    yield a
    a.close()


def test_agent_path_imports_only_what_a_bare_isolated_python_has(agent):
    """Before the agent's reply, nothing beyond `python3 -I -S`'s own modules and _socket."""
    net = json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "xdpcni", "agentSocket": agent.path})
    code = f"""
import sys
before = set(sys.modules)
sys.path.insert(0, {str(ROOT)!r})
from cni.client import via_agent
reply = via_agent({{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1"}}, {net.encode()!r})
print(sorted(set(sys.modules) - before))
print(reply)
"""
    out = subprocess.run([PY, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    new, reply = out.stdout.splitlines()
    assert set(eval(new)) <= {"cni", "cni.client", "_socket"}, new
    assert reply == "(0, '{\"cniVersion\": \"1.0.0\"}', 'w\\n')"


def test_launcher_relays_the_agents_reply_and_sends_exact_env_and_stdin(agent, tmp_path):
    exe = str(tmp_path / "xdpcni")
    client.write_launcher(exe, PY)
    # Odd but valid bytes must reach the agent exactly: quotes, escapes, control characters,
    # non-ASCII, and invalid UTF-8 (carried as surrogateescape, as os.environ does; not JSON, so
    # the socket comes from XDPCNI_AGENT_SOCKET and the agent will answer code 6).
    net = (
        b'{"cniVersion": "1.0.0", "name": "n\\"q\\u00e9", "type": "xdpcni", "x": "\\t\\u0001 \xc3\xa9 \xff"}'
    )
    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "abc",
        "CNI_ARGS": 'K8S_POD_NAME=a"b\\c\x01\u00e9',
        "OTHER": "x",
        "XDPCNI_AGENT_SOCKET": agent.path,
    }
    res = subprocess.run([exe], input=net, capture_output=True, env=env, timeout=30)
    assert res.returncode == 0 and res.stdout == b'{"cniVersion": "1.0.0"}\n' and res.stderr == b"w\n"
    req = agent.seen[0]
    assert req["env"] == {k: v for k, v in env.items() if k.startswith("CNI_")}
    assert req["stdin"].encode(errors="surrogateescape") == net
    assert req["netns"] == os.stat("/proc/thread-self/ns/net").st_ino


def test_launcher_error_replies_and_fallback_reply(tmp_path):
    exe = str(tmp_path / "xdpcni")
    client.write_launcher(exe, PY)
    err = {"cniVersion": "1.0.0", "code": 7, "msg": 'bad \u00e9 \\ " \U0001f600'}
    a = FakeAgent(str(tmp_path / "a.sock"), {"rc": 1, "stdout": json.dumps(err), "stderr": ""})
    try:
        net = json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "xdpcni", "agentSocket": a.path})
        res = subprocess.run(
            [exe], input=net.encode(), capture_output=True, env={"CNI_COMMAND": "DEL"}, timeout=30
        )
        assert res.returncode == 1 and json.loads(res.stdout) == err
    finally:
        a.close()
    # An agent saying "fallback" (another network namespace): the verb runs in this process,
    # here a config error (code 7) that needs no root.
    b = FakeAgent(str(tmp_path / "b.sock"), {"fallback": "client is in another network namespace"})
    try:
        net = json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "xdpcni", "agentSocket": b.path})
        env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0"}
        res = subprocess.run([exe], input=net.encode(), capture_output=True, env=env, timeout=60)
        assert len(b.seen) == 1 and res.returncode == 1 and json.loads(res.stdout)["code"] == 7, res.stderr
    finally:
        b.close()


def test_no_agent_runs_in_process_and_version_is_answered_alone(tmp_path):
    exe = str(tmp_path / "xdpcni")
    client.write_launcher(exe, PY)
    net = json.dumps(
        {"cniVersion": "1.0.0", "name": "n", "type": "xdpcni", "agentSocket": str(tmp_path / "none")}
    )
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0"}
    res = subprocess.run([exe], input=net.encode(), capture_output=True, env=env, timeout=60)
    assert res.returncode == 1 and json.loads(res.stdout)["code"] == 7, res.stderr
    for stdin, want in ((b'{"cniVersion": "0.4.0"}', "0.4.0"), (b"not json", "1.1.0"), (b"[1]", "1.1.0")):
        res = subprocess.run(
            [exe], input=stdin, capture_output=True, env={"CNI_COMMAND": "VERSION"}, timeout=30
        )
        from cni.version import version_result

        assert res.returncode == 0 and json.loads(res.stdout) == version_result(want), res.stdout
    # A copy of the file run by the host python3 (no venv, no checkout): code 11, try again later.
    copy = tmp_path / "copy.py"
    copy.write_text((ROOT / "cni" / "client.py").read_text())
    res = subprocess.run(
        ["/usr/bin/python3", "-I", "-S", str(copy)],
        input=net.encode(),
        capture_output=True,
        env=env,
        timeout=30,
    )
    assert res.returncode == 1 and json.loads(res.stdout)["code"] == 11, res.stdout + res.stderr


CONFIGS = [
    b'{"agentSocket": "/a"}',
    b'{"agentSocket": "/a", "agentSocket": "/b"}',
    b'{"agentSocket": 5}',
    b'{"agentSocket": ""}',
    b'{"x": {"agentSocket": "/nested"}, "y": ["]", "}"], "agentSocket": "/top"}',
    b'{"\\u0061gentSocket": "/esc\\u00e9\\"\\\\"}',
    b'{"agentSocket": "/\\ud83d\\ude00"}',
    b'  {"agentSocket" :"/ws" }  ',
    b'{"agentSocket": "/a"} trailing',
    b'{"agentSocket": "/a",}',
    b'{"agentSocket": "/unterminated}',
    b'["agentSocket", "/a"]',
    b"",
    b"\xff\xfe",
    b"[" * 100000,
    b'{"a": ' + b"[" * 500 + b"]" * 500 + b', "agentSocket": "/deep"}',
    b'{"agentSocket": null, "n": -12, "f": 1.5e3, "t": true}',
]


@pytest.mark.parametrize("raw", CONFIGS, ids=range(len(CONFIGS)))
def test_socket_path_matches_the_json_module(raw):
    try:
        conf = json.loads(raw)
        want = conf.get("agentSocket") if isinstance(conf, dict) else None
    except (ValueError, RecursionError):
        want = None
    want = want if isinstance(want, str) else "/default"
    assert client.socket_path({"XDPCNI_AGENT_SOCKET": "/default"}, raw) == want


EXIT_PROBE = """
import atexit, os, sys
sys.path.insert(0, {root!r})  # no arguments: the executable's argv is empty
atexit.register(os.write, 1, b"FINALIZED\\n")  # runs only if the interpreter is finalized
{before}
from cni.client import run
run()
"""


def test_client_skips_finalization_and_flushes_what_a_verb_run_here_wrote(agent, tmp_path):
    """run() ends with _exit, no atexit handlers and no finalization, whether the agent answered,
    VERSION was answered here, or the verb ran in this process (~10 ms of teardown saved); in the
    last case what the product left in sys.stdout's and sys.stderr's buffers is written first."""

    def probe(env: dict, stdin: bytes, before: str = "") -> tuple[int, dict, bytes, bytes]:
        """(exit code, the JSON on stdout's first line, the rest of stdout, stderr)."""
        res = subprocess.run(
            [PY, "-I", "-S", "-c", EXIT_PROBE.format(root=str(ROOT), before=before)],
            input=stdin,
            capture_output=True,
            env=env,
            timeout=60,
        )
        first, _, rest = res.stdout.partition(b"\n")
        try:
            return res.returncode, json.loads(first), rest, res.stderr
        except ValueError:
            raise AssertionError(res.stdout + res.stderr) from None

    rc, out, rest, _ = probe({"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "1.0.0"}')
    assert (rc, out["cniVersion"], rest) == (0, "1.0.0", b"")

    verb = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0"}
    net = json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "xdpcni", "agentSocket": agent.path})
    assert probe(verb, net.encode())[:3] == (0, {"cniVersion": "1.0.0"}, b"")
    assert len(agent.seen) == 1

    # No agent: the verb runs in this process (a config error, code 7: no root needed). Text
    # still in the buffers (stderr is line-buffered, a pipe's stdout block-buffered) comes out.
    net = json.dumps(
        {"cniVersion": "1.0.0", "name": "n", "type": "xdpcni", "agentSocket": str(tmp_path / "none")}
    )
    buffered = 'sys.stderr.write("no newline yet"); sys.stdout.write("buffered out")'
    rc, out, rest, err = probe(verb, net.encode(), before=buffered)
    assert (rc, out["code"], rest) == (1, 7, b"buffered out"), err
    assert b"no newline yet" in err


def test_launcher_runs_the_client_from_current_bytecode_only(tmp_path):
    """LOAD_CLIENT: with bytecode that matches the source the client runs without the import
    system (the package's __init__, which here refuses to be imported, never runs); without
    bytecode, or with a source edited since it was written, the import system runs it."""
    co = tmp_path / "co"
    (co / "cni").mkdir(parents=True)
    src = co / "cni" / "client.py"
    shutil.copy(client.__file__, src)
    (co / "cni" / "__init__.py").write_text('raise ImportError("the package was imported")\n')
    exe = str(tmp_path / "xdpcni")
    client.write_launcher(exe, PY, checkout=str(co))

    def version() -> subprocess.CompletedProcess:
        env = {"CNI_COMMAND": "VERSION"}
        return subprocess.run([exe], input=b"{}", capture_output=True, env=env, timeout=30)

    res = version()  # no bytecode yet
    assert res.returncode != 0 and b"the package was imported" in res.stderr
    subprocess.run([PY, "-m", "py_compile", str(src)], check=True, timeout=30)
    res = version()
    assert res.returncode == 0 and json.loads(res.stdout)["supportedVersions"], res.stderr
    with open(src, "a") as fh:  # edited after its bytecode was written: stale
        fh.write("\n# edited\n")
    res = version()
    assert res.returncode != 0 and b"the package was imported" in res.stderr


@settings(max_examples=400, deadline=None)
@given(
    st.text(st.characters(blacklist_categories=()))
    | st.sampled_from(['"\\', "\x7f", "\udc80a\\", "a\u2028b"])
)
def test_json_string_encoder_matches_its_table(s):
    """_jstr's fast path (printable text: only quotes and backslashes escaped) writes exactly what
    the escape table writes, and what json.loads reads back as `s` (surrogateescape'd bytes, the
    table's \\udcXX, come back as those code points)."""
    assert client._jstr(s) == '"' + s.translate(client._ESCAPES) + '"'
    assert json.loads(client._jstr(s)) == s
