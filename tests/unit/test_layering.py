"""The one-way street of the import graph: bpf <- datapath <- cni <- sim <- node, and product code
never imports tests/ or bench/. Drawn from the source with ast (imports inside functions too)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("cni", "datapath", "node", "sim")
# package -> top-level packages it must never import (directly or by running `python -m`)
FORBIDDEN = {
    "datapath": {"cni", "node", "sim", "tests", "bench"},
    "cni": {"node", "sim", "tests", "bench"},
    "sim": {"node", "tests", "bench"},
    "node": {"tests", "bench"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of every module `path` imports, relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            mod = ".".join([*base, node.module] if node.module else base)
            out.add(mod)
            out.update(f"{mod}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # `python -m pkg.mod` in a subprocess is an import too
            val = node.value
            if val.count(".") == 1 and val.split(".")[0] in PRODUCT + ("tests", "bench") and " " not in val:
                out.add(val)
    return out


def _files(pkg: str) -> list[Path]:
    return sorted((ROOT / pkg).rglob("*.py"))


def test_packages_exist():
    for pkg in PRODUCT:
        assert (ROOT / pkg / "__init__.py").exists(), pkg


@pytest.mark.parametrize("pkg", sorted(FORBIDDEN))
def test_no_import_runs_up_the_one_way_street(pkg):
    bad = []
    for path in _files(pkg):
        for mod in _imports(path):
            if mod.split(".")[0] in FORBIDDEN[pkg]:
                bad.append(f"{path.relative_to(ROOT)} imports {mod}")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_relative_and_function_level_imports(tmp_path, monkeypatch):
    """The checker itself: a nested relative import is resolved and found."""
    pkg = tmp_path / "cni" / "commands"
    pkg.mkdir(parents=True)
    (tmp_path / "cni" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    mod = pkg / "x.py"
    mod.write_text("def f():\n    from ..agent import serve\n    import sim.demo\n    run('node.ctl')\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert {"cni.agent", "cni.agent.serve", "sim.demo", "node.ctl"} <= _imports(mod)


def test_tests_and_bench_are_not_installed_packages():
    text = (ROOT / "pyproject.toml").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("include = ["))
    assert "tests" not in line and "bench" not in line
    assert all(f'"{p}*"' in line for p in PRODUCT)
