"""Run a test module's ``worker`` as several gloo processes with torchrun's environment (no torchrun needed).

A module launched this way ends with ``if __name__ == "__main__": worker(Path(sys.argv[1]))``; each rank
writes its results under the output folder, and the test compares them with a single-process run.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loopback_interface() -> str:
    names = [name for _, name in socket.if_nameindex() if name.startswith("lo")]
    return names[0] if names else "lo"


def launch(module: str, out: Path, world: int = 2, timeout: float = 180) -> Path:
    """Run ``python -m module out`` as ``world`` ranks; raise with each failed rank's output."""
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE=str(world),
               GLOO_SOCKET_IFNAME=loopback_interface(), OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    procs = [
        subprocess.Popen([sys.executable, "-m", module, str(out)], cwd=ROOT,
                         env=dict(env, RANK=str(r), LOCAL_RANK=str(r)), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        for r in range(world)
    ]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    failed = [f"rank {r} exited with {p.returncode}:\n{log}" for r, (p, log) in enumerate(zip(procs, logs, strict=True))
              if p.returncode != 0]
    assert not failed, "\n".join(failed)
    return out
