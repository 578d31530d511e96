"""Ctrl-C in ``tscope run``: one line saying where the checkpoint is and how to resume, exit 130, no traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

CONFIG = """
[model]
kind = 'hf'
[model.config]
model_type = 'gpt2'
vocab_size = 64
n_positions = 32
n_embd = 16
n_layer = 2
n_head = 2
bos_token_id = 0
eos_token_id = 0
[data]
task = 'induction'
task_kwargs = {num_symbols = 24, k_max = 8}
samples = 100000
[analysis]
batch_size = 1
checkpoint_every = 1
"""


def test_sigint_prints_one_line_with_the_checkpoint_and_exits_130(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(CONFIG, encoding="utf-8")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tscope_widgets.cli", "run", str(config), "--out", str(out), "--no-progress",
         "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    deadline = time.monotonic() + 120
    while not (out / "checkpoint").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.startswith("tscope:")]
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"tscope: interrupted; checkpoints are in {out / 'checkpoint'}"), err
    assert lines[0].endswith(f"tscope run {config} --out {out} --resume"), err
