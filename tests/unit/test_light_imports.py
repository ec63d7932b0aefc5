"""What a CNI verb run in-process (no node agent) imports: the per-call path must not pay for
pyroute2's package __init__ (every netlink family, asyncio: ~130 ms), the loader (BCC glue), YAML,
or site's .pth files (an editable install's import hook), and must still work (tests/e2e run every
verb in-process too)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cni import client

ROOT = Path(__file__).resolve().parents[2]
PY = os.path.join(os.path.dirname(sys.executable), "python3")
HEAVY = (
    "asyncio",
    "pyroute2.iproute",
    "pyroute2.ndb",
    "pyroute2.nftables",
    "yaml",
    "datapath.loader",
    "bcc",
    "subprocess",  # with locale ~2 ms: only the datapath loader and a delegated IPAM run processes
)


def _run(code: str, *flags: str) -> list[str]:
    out = subprocess.run([PY, *flags, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_add_and_del_import_no_heavy_module_and_pyroute2_still_completes_on_demand():
    code = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
import cni.main, cni.commands.add, cni.commands.delete
from datapath import pyroute2_light
print(sorted(m for m in {HEAVY!r} if m in sys.modules))
print(pyroute2_light.complete())
from pyroute2 import IPRoute, netns
from pyroute2.iproute.linux import IPRoute as Real
print(IPRoute is Real, netns.__name__, pyroute2_light.complete())
import pyroute2
print(pyroute2.NDB.__module__)
"""
    heavy, before, after, ndb = _run(code)
    assert heavy == "[]", heavy
    assert before == "False"  # the message classes are in, pyroute2's __init__ has not run
    assert after == "True pyroute2.netns True"
    assert ndb.startswith("pyroute2.ndb")


def test_light_install_is_a_no_op_once_pyroute2_is_imported():
    code = """
import pyroute2, sys
from datapath import pyroute2_light
pyroute2_light.install()
print(sys.modules["pyroute2"] is pyroute2, pyroute2_light.complete())
"""
    assert _run(code) == ["True True"]


def test_in_process_fallback_skips_site_pth_files_but_finds_the_product():
    """The launcher runs `python -I -S`; with no agent, _product() puts the venv's and the system's
    site-packages on sys.path itself instead of site.main() (whose .pth files import an editable
    install's finder and setuptools' distutils shim)."""
    code = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from cni import client
product = client._product()
print(product.__name__)
print("_distutils_hack" in sys.modules)
print([m for m in sys.modules if m.startswith("__editable__")])
import pyroute2.netlink, yaml
print(pyroute2.netlink.__file__, yaml.__file__)
"""
    name, shims, finders, found = _run(code, "-I", "-S")
    assert name == "cni.main"
    assert shims == "False" and finders == "[]"
    # the same packages as a process whose site.main() ran
    assert [found] == _run("import pyroute2.netlink, yaml; print(pyroute2.netlink.__file__, yaml.__file__)")


def test_site_dirs_are_the_directories_site_main_adds():
    """In the executable's `python -I -S`, _site_dirs() lists what site.main() would have put on
    sys.path for the same interpreter, in the same order (.pth additions aside)."""
    code = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from cni import client
print(client._site_dirs())
"""
    (mine,) = _run(code, "-I", "-S")
    (with_site,) = _run(
        "import sys; print([p for p in sys.path if p.endswith(('site-packages', 'dist-packages'))])", "-I"
    )
    assert eval(mine) == eval(with_site)


def test_lazy_pyroute2_completes_once_under_concurrent_first_use():
    """Two threads asking pyroute2 for package attributes while its real __init__ runs (~130 ms):
    the second waits for it instead of finding a half-made package."""
    code = f"""
import sys, threading, time
sys.path.insert(0, {str(ROOT)!r})
import datapath.rtnl
import pyroute2
errors = []
def ask(name, delay):
    time.sleep(delay)
    try:
        getattr(pyroute2, name)
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=ask, args=(n, d)) for n, d in (("NDB", 0), ("IPRoute", 0.01), ("IPSet", 0.02))]
for t in threads: t.start()
for t in threads: t.join()
from datapath import pyroute2_light
print(errors, pyroute2_light.complete())
"""
    assert _run(code) == ["[] True"]


def test_site_dirs_follow_pyvenv_cfg(tmp_path, monkeypatch):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    v = sys.version_info
    site_packages = venv / "lib" / f"python{v.major}.{v.minor}" / "site-packages"
    site_packages.mkdir(parents=True)
    monkeypatch.setattr(sys, "executable", str(venv / "bin" / "python3"))
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\ninclude-system-site-packages = false\n")
    assert client._site_dirs() == [str(site_packages)]
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\nInclude-System-Site-Packages = True\n")
    import site

    dirs = client._site_dirs()
    assert dirs[0] == str(site_packages)
    assert dirs[1:] == [d for d in site.getsitepackages() if os.path.isdir(d)]
    (venv / "pyvenv.cfg").unlink()  # not a venv: the system's only
    assert client._site_dirs() == [d for d in site.getsitepackages() if os.path.isdir(d)]


def test_a_dependency_only_a_pth_file_knows_makes_the_fallback_run_site():
    code = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from cni import client
client._DEPENDENCIES = ("pyroute2", "xdpcni_only_a_pth_file_knows_this")
product = client._product()
print(product.__name__, "_distutils_hack" in sys.modules)
"""
    assert _run(code, "-I", "-S") == ["cni.main True"]


def test_tc_plugins_we_do_not_encode_run_at_first_use_and_decode_as_pyroute2_does():
    """tcmsg's qdisc and classifier modules other than clsact and bpf run at their first use
    (cls_basic alone pulls in rt_files, dataclasses and pathlib: ~14 ms of an in-process verb).
    A message of such a kind, made by a process with the whole pyroute2, decodes to the same
    fields under the light import."""
    make = """
from pyroute2.netlink.rtnl.tcmsg import tcmsg
msg = tcmsg()
msg["index"] = 7
msg["attrs"] = [("TCA_KIND", "sfq"), ("TCA_OPTIONS", {"quantum": 1514, "perturb_period": 10, "limit": 127})]
msg.encode()
print(msg.data.hex())
"""
    (data,) = _run(make)
    decode = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
import cni.commands.add
from datapath.pyroute2_light import _Deferred
print("pyroute2.netlink.rt_files" in sys.modules, type(sys.modules["pyroute2.netlink.rtnl.tcmsg.sched_sfq"]) is _Deferred)
from pyroute2.netlink.rtnl.tcmsg import tcmsg
msg = tcmsg(bytes.fromhex({data!r}))
msg.decode()
opts = msg.get_attr("TCA_OPTIONS")
print(msg.get_attr("TCA_KIND"), opts["quantum"], opts["perturb_period"], opts["limit"])
print(type(sys.modules["pyroute2.netlink.rtnl.tcmsg.sched_sfq"]) is _Deferred, "pyroute2.netlink.rt_files" in sys.modules)
"""
    before, decoded, after = _run(decode)
    assert before == "False True"
    assert decoded == "sfq 1514 10 127"
    assert after == "False False"  # sfq ran; cls_basic (rt_files) still has not


def test_deferred_module_runs_once_under_concurrent_first_use_and_retries_after_a_failure(tmp_path):
    """Threads asking a deferred module for attributes while its code runs wait for all of it;
    its code runs once; a run that raised is run again at the next lookup."""
    pkg = tmp_path / "xdeferpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "slow.py").write_text(
        "import builtins, os, time\n"
        "builtins.RUNS = getattr(builtins, 'RUNS', 0) + 1\n"
        "if os.path.exists(os.environ['FAIL_ONCE']):\n"
        "    os.unlink(os.environ['FAIL_ONCE'])\n"
        "    raise RuntimeError('first run fails')\n"
        "first = 1\n"
        "time.sleep(0.2)\n"
        "last = 2\n"
    )
    fail = tmp_path / "fail-once"
    fail.write_text("")
    code = f"""
import builtins, sys, threading
sys.path[:0] = [{str(ROOT)!r}, {str(tmp_path)!r}]
from datapath import pyroute2_light
pyroute2_light._defer("xdeferpkg.slow", [{str(pkg)!r}])
import xdeferpkg.slow as slow
try:
    slow.last
except RuntimeError as exc:
    print("raised", exc)
got, errors = [], []
def ask():
    try:
        got.append(slow.last)
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=ask) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
print(got, errors, builtins.RUNS, type(slow).__name__)
"""
    out = subprocess.run(
        [PY, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "FAIL_ONCE": str(fail)},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["raised first run fails", f"{[2] * 8} [] 2 module"]
