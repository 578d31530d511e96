"""A Welford kernel for the Job tests: units of BATCH rows, checkpointable snapshots, hooks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

from tscope_widgets.jobs import Checkpoint
from tscope_widgets.kernels.welford import WelfordState

REPO = Path(__file__).resolve().parents[2]
ROWS, BATCH, SHAPE = 120, 10, (4, 3)
WAIT = 20.0  # generous upper bound for event waits; never reached unless something is broken


def make_data(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed random rows ``[ROWS, 4, 3]`` with NaN padding where the mask is False."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(ROWS, *SHAPE, generator=g, dtype=torch.float64) * 2 + 1
    mask = torch.rand(ROWS, *SHAPE, generator=g) < 0.8
    return torch.where(mask, x, float("nan")), mask


@dataclass(frozen=True)
class WelfordSnapshot:
    state: WelfordState
    done: int
    total: int

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.state.state_dict()

    def meta(self) -> dict:
        return {"next_row": self.done, "batch": BATCH}


def welford_kernel(
    seed: int,
    *,
    resume: Checkpoint | None = None,
    before_unit: Callable[[int], None] | None = None,
    log: list | None = None,
):
    """Accumulate a WelfordState over ``make_data(seed)``, BATCH rows per unit of work."""
    x, mask = make_data(seed)
    state, start = WelfordState(SHAPE), 0
    if resume is not None:
        state.load_state_dict(resume.tensors)
        start = resume.meta["next_row"]
    try:
        for lo in range(start, ROWS, BATCH):
            unit = lo // BATCH
            if log is not None:
                log.append(unit)
            if before_unit is not None:
                before_unit(unit)
            state.update(x[lo : lo + BATCH], mask[lo : lo + BATCH])
            yield WelfordSnapshot(state.clone(), min(lo + BATCH, ROWS), ROWS)
    finally:
        if log is not None:
            log.append("closed")


def reference_state(seed: int, rows: int = ROWS) -> WelfordState:
    """The statistics of an uninterrupted run over the first ``rows`` rows."""
    snaps = [s for s in welford_kernel(seed) if s.done <= rows]
    return snaps[-1].state


def assert_bit_identical(a: WelfordState, b: WelfordState) -> None:
    da, db = a.state_dict(), b.state_dict()
    assert da.keys() == db.keys()
    for k in da:
        assert torch.equal(da[k], db[k]), k


def wait_for(event: threading.Event) -> None:
    assert event.wait(WAIT), "timed out waiting for the job"


def fast_counter(n: int, delay: float = 0.0):
    """Yield ``n`` snapshots without state, ``delay`` seconds apart."""
    for i in range(n):
        if delay:
            time.sleep(delay)
        yield SimpleNamespace(done=i + 1, total=n)
