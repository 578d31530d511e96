"""binder/ still matches the install: every runtime dependency of pyproject.toml (for Binder's Python) is in
binder/requirements.txt, torch pinned as in constraints.txt, the png extra and its system library present, a
Python the package supports, and postBuild builds the bundle and installs the package."""

from __future__ import annotations

import re
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the package depends on tomli there
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
NAME = re.compile(r"^\s*([A-Za-z0-9_.\-]+)")


def _names(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        out[NAME.match(line).group(1).lower().replace("_", "-")] = line
    return out


def test_binder_matches_the_install():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = (REPO / "binder" / "runtime.txt").read_text().strip()
    major, minor = (int(v) for v in re.fullmatch(r"python-(\d+)\.(\d+)", runtime).groups())
    low = tuple(int(v) for v in re.search(r">=\s*(\d+)\.(\d+)", project["requires-python"]).groups())
    assert (major, minor) >= low, f"binder/runtime.txt ({runtime}) is older than requires-python"

    binder = _names((REPO / "binder" / "requirements.txt").read_text().splitlines())
    for dep in project["dependencies"]:
        if ";" in dep:  # an environment marker: only for Pythons older than Binder's
            marker = dep.split(";", 1)[1]
            bound = re.search(r"python_version\s*<\s*'(\d+)\.(\d+)'", marker)
            assert bound is not None, f"unexpected marker in {dep!r}: teach this test about it"
            if (major, minor) >= tuple(int(v) for v in bound.groups()):
                continue
        name = NAME.match(dep).group(1).lower().replace("_", "-")
        assert name in binder, f"{name} (a dependency in pyproject.toml) is missing from binder/requirements.txt"
    for dep in project["optional-dependencies"]["png"]:
        assert NAME.match(dep).group(1).lower() in binder, f"binder/requirements.txt lacks {dep} (save_png)"
    assert "libcairo2" in (REPO / "binder" / "apt.txt").read_text().split()

    (torch_pin,) = [line for line in (REPO / "constraints.txt").read_text().splitlines() if line.startswith("torch==")]
    assert binder["torch"] == torch_pin, f"binder pins {binder['torch']!r}, constraints.txt {torch_pin!r}"

    post = (REPO / "binder" / "postBuild").read_text()
    assert "npm --prefix js ci" in post and "npm --prefix js run build" in post
    assert re.search(r"pip install .*-e \.", post)
