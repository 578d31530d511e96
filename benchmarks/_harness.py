"""Plumbing shared by the benchmark scripts: one subprocess per measured method, and the machine facts."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version


def spawn(script: str, args: list[str], *, pass_stderr: bool = False) -> dict | None:
    """Run ``python script *args``; its last stdout line is its JSON result (``None`` if it failed).

    With ``pass_stderr`` the child's progress lines reach the terminal as it runs; otherwise its stderr is
    captured and the tail printed if it fails.
    """
    res = subprocess.run(
        [sys.executable, script, *args],
        stdout=subprocess.PIPE,
        stderr=None if pass_stderr else subprocess.PIPE,
        text=True,
        check=False,
    )
    if res.returncode:
        detail = "its stderr is above" if pass_stderr else res.stderr[-3000:]
        print(f"{' '.join(args)[:200]} failed (exit {res.returncode}): {detail}", file=sys.stderr)
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def package_version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def environment(*peers: str, default_threads: int = 1) -> dict:
    """Python, torch, transformers and the ``peers``' versions, the device, cores, threads and load."""
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        **{p: package_version(p) for p in peers},
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "cpus": os.cpu_count(),
        "threads": int(os.environ.get("BENCH_THREADS", str(default_threads))),
        "load_average_start": os.getloadavg(),
        "machine": platform.machine(),
    }
