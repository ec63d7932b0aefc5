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
HEAVY = ("asyncio", "pyroute2.iproute", "pyroute2.ndb", "pyroute2.nftables", "yaml", "datapath.loader", "bcc")


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
