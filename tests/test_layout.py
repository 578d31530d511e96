"""The package's layers import downwards only (docs/architecture.md), read from the source with ``ast``.

Every ``import`` and ``from ... import`` of every module, at any depth (imports inside functions count),
is resolved to the ``tscope_widgets`` module it names; a rule below fails with the file, the line and the
import. The layers, top to bottom: cli; widgets; export, figures; distributed, tracking, training, jobs;
kernels, data, tasks; models.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "tscope_widgets"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# module prefix -> prefixes it must not import (a prefix matches the module and everything under it)
FORBIDDEN = {
    f"{PACKAGE}.kernels": ["jobs", "widgets", "cli", "export", "figures", "tracking", "distributed", "training"],
    f"{PACKAGE}.models": ["kernels", "jobs", "widgets", "cli", "export", "figures", "tracking", "distributed"],
    f"{PACKAGE}.data": ["kernels", "jobs", "widgets", "cli", "export", "figures", "tracking", "distributed"],
    f"{PACKAGE}.figures": ["widgets", "jobs", "cli"],
    f"{PACKAGE}.export": ["widgets", "jobs", "cli"],
    f"{PACKAGE}.jobs": ["widgets", "cli", "export", "figures"],
    f"{PACKAGE}.distributed": ["widgets", "cli", "figures"],
    f"{PACKAGE}.tracking": ["widgets", "cli"],
    f"{PACKAGE}.cli": ["widgets"],
}
# the one writer and the one reader of files sit below everything
_ALL = ["models", "data", "tasks", "kernels", "tracking", "training", "jobs", "distributed", "figures", "export",
        "widgets", "cli", "_atomic", "files"]
FORBIDDEN[f"{PACKAGE}._atomic"] = [m for m in _ALL if m != "_atomic"]
FORBIDDEN[f"{PACKAGE}.files"] = [m for m in _ALL if m != "files"]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _imports(path: Path) -> list[tuple[int, str, str]]:
    """``(line, imported module, source text)`` for every import of a ``tscope_widgets`` module in ``path``."""
    name = _module_name(path)
    package = name if _is_package(path) else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, f"import {a.name}") for a in node.names if a.name.startswith(PACKAGE)]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith(PACKAGE):
                continue
            text = f"from {'.' * node.level}{node.module or ''} import {', '.join(a.name for a in node.names)}"
            # `from .. import jobs` imports the module jobs; `from .. import X` of a plain name imports the root
            subs = [f"{target}.{alias.name}" for alias in node.names]
            found += [(node.lineno, t, text) for t in dict.fromkeys(s if _exists(s) else target for s in subs)]
    return found


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()


def _matches(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


SOURCES = sorted(ROOT.rglob("*.py"))


def test_the_package_has_sources():
    assert len(SOURCES) > 20


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_imports_run_down_the_layers(path):
    name = _module_name(path)
    problems = []
    for line, target, text in _imports(path):
        where = f"{path.relative_to(ROOT.parent)}:{line}: {text}"
        if target == PACKAGE and name != PACKAGE:
            problems.append(f"{where} (imports the package root from inside; import the defining module)")
        for owner, banned in FORBIDDEN.items():
            if _matches(name, owner):
                problems += [
                    f"{where} ({owner} must not import {PACKAGE}.{b})"
                    for b in banned
                    if _matches(target, f"{PACKAGE}.{b}")
                ]
    assert not problems, "\n".join(problems)


def test_the_rules_catch_an_upward_import(tmp_path, monkeypatch):
    """The checker itself: a kernel module that imports a widget, and a root import, are both reported."""
    fake_root = tmp_path / PACKAGE
    (fake_root / "kernels").mkdir(parents=True)
    (fake_root / "widgets").mkdir()
    for folder in (fake_root, fake_root / "kernels", fake_root / "widgets"):
        (folder / "__init__.py").write_text("")
    (fake_root / "widgets" / "view.py").write_text("")
    bad = fake_root / "kernels" / "bad.py"
    bad.write_text("def f():\n    from ..widgets import view\n    from .. import __version__\n")
    monkeypatch.setitem(globals(), "ROOT", fake_root)
    with pytest.raises(AssertionError) as failure:
        test_imports_run_down_the_layers(bad)
    message = str(failure.value)
    assert "kernels/bad.py:2: from ..widgets import view" in message
    assert "must not import tscope_widgets.widgets" in message
    assert "kernels/bad.py:3: from .. import __version__ (imports the package root" in message
