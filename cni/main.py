"""xdpcni: the CNI plugin executable a container runtime runs from /opt/cni/bin.

Contract (CNI spec 1.1.0): CNI_COMMAND and the other CNI_* variables in the environment, the
network configuration as JSON on stdin; the result (ADD), version info (VERSION) or an error
object on stdout; exit 0 on success, 1 on error. Diagnostics go to stderr only.

Two ways to run a verb, same code: handed to the node agent over its unix socket when one
serves this node (node/agent.py: warm process, no pyroute2 import per call), otherwise in this
process. Module-level imports stay minimal so the agent path starts fast.
"""

from __future__ import annotations

import json
import os
import sys

from . import client

USAGE = """\
xdpcni — CNI plugin with an eBPF (XDP/TC) fast path from the node NIC to pods.

It is run by a container runtime, not by hand: CNI_COMMAND=ADD|DEL|CHECK|VERSION|GC|STATUS,
CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_PATH (and optional CNI_ARGS) in the environment,
the network configuration JSON on stdin. Example:

  echo '{"cniVersion":"1.1.0"}' | CNI_COMMAND=VERSION xdpcni

Supported spec versions: {versions}. Example config: conf/10-xdpcni.conflist.
If a node agent listens (xdpcnictl agent; netconf "agentSocket", default
/run/xdpcni/agent.sock) verbs run there; otherwise in this process.
Operator tool for the node datapath: xdpcnictl --help.
"""


def _dispatch(environ: dict[str, str], stdin: bytes) -> dict | None:
    from datapath import locks

    from . import env as cni_env
    from . import netconf, version

    env = cni_env.from_environ(environ)
    if env.command == "VERSION":
        return version.version_result(_requested_version(stdin))

    data = netconf.decode(stdin)
    conf = netconf.parse(data, env.command)
    version.require_supported(conf.cni_version, env.command)
    if env.command in ("ADD", "CHECK"):
        env.netns_fd = cni_env.check_netns(env.netns)
    try:
        with locks.deadline(conf.lock_timeout):
            return _run_verb(env, conf)
    finally:
        if env.netns_fd is not None:
            os.close(env.netns_fd)


def _run_verb(env, conf) -> dict | None:
    from datapath.locks import LockTimeout

    from .locking import lock_error

    try:
        if env.command == "ADD":
            from .commands import add

            return add.run(env, conf)
        if env.command == "DEL":
            from .commands import delete

            delete.run(env, conf)
        elif env.command == "CHECK":
            from .commands import check

            check.run(env, conf)
        elif env.command == "GC":
            from .commands import gc

            removed = gc.run(env, conf)["removed"]
            if removed:
                print(f"xdpcni GC: removed attachments of {', '.join(removed)}", file=sys.stderr)
        elif env.command == "STATUS":
            from .commands import status

            status.run(env, conf)
    except LockTimeout as exc:  # a datapath lock (the CNI's own locks raise CniError already)
        raise lock_error(exc) from None
    return None


def _requested_version(stdin: bytes) -> str | None:
    """cniVersion from stdin if it is a JSON object that has one; None for anything else."""
    try:
        v = json.loads(stdin or b"{}").get("cniVersion")
    except Exception:  # not JSON, not an object, nested too deeply: VERSION still answers
        return None
    return v if isinstance(v, str) else None


def _error_version(stdin: bytes) -> str:
    from . import version

    v = _requested_version(stdin)
    return v if v in version.SUPPORTED_VERSIONS else version.LATEST


def execute(environ: dict[str, str], stdin: bytes) -> tuple[int, str]:
    """Run one verb in this process: (exit code, stdout text). Diagnostics go to stderr. Whatever
    the input, a failure is exactly one spec error object and exit code 1."""
    from .errors import INTERNAL, CniError

    try:
        out = _dispatch(environ, stdin)
    except CniError as exc:
        print(f"xdpcni: {exc}", file=sys.stderr)
        return 1, json.dumps(exc.to_dict(_error_version(stdin)))
    except Exception as exc:  # never a traceback on stdout: the runtime parses it
        import traceback

        traceback.print_exc(file=sys.stderr)
        err = CniError(INTERNAL, f"internal error: {type(exc).__name__}: {str(exc)[:500]}")
        return 1, json.dumps(err.to_dict(_error_version(stdin)))
    return 0, json.dumps(out) if out is not None else ""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if (
        argv
        and argv[0] in ("-h", "--help", "help")
        or (not argv and "CNI_COMMAND" not in os.environ and sys.stdin.isatty())
    ):
        from .version import SUPPORTED_VERSIONS

        print(USAGE.replace("{versions}", ", ".join(SUPPORTED_VERSIONS)))
        return 0
    if argv and argv[0] == "--version":
        from .version import SUPPORTED_VERSIONS

        print(f"xdpcni CNI plugin, spec versions {', '.join(SUPPORTED_VERSIONS)}")
        return 0
    environ = dict(os.environ)
    try:
        stdin = (
            b"" if environ.get("CNI_COMMAND") == "VERSION" and sys.stdin.isatty() else sys.stdin.buffer.read()
        )
    except (OSError, ValueError, AttributeError):
        stdin = b""
    reply = None
    if environ.get("CNI_COMMAND") != "VERSION":
        try:
            reply = client.via_agent(environ, stdin)
        except Exception as exc:  # the agent path is an accelerator: run here instead
            print(f"xdpcni: node agent not used: {type(exc).__name__}: {exc}", file=sys.stderr)
    if reply is not None:
        rc, stdout, stderr = reply
        if stderr:
            sys.stderr.write(stderr)
    else:
        rc, stdout = execute(environ, stdin)
    if stdout:
        print(stdout)
    return rc


if __name__ == "__main__":
    sys.exit(main())
