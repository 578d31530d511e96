"""Loss-landscape slices under torch.distributed: two gloo processes, each with its own shard of a float64
batch list, give the single-process slice over all batches (loss and accuracy, 1e-10 relative).

The batches have different numbers of labelled tokens, so ranks that averaged their means instead of
adding token sums would be off by far more than the tolerance. Each rank runs the module as a script
(``tests.ranks.launch``) and writes its slices to ``OUT/rank<r>.safetensors`` and ``OUT/rank<r>.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests import model_zoo as mz
from tests.ranks import launch
from tscope_widgets.kernels.landscape import random_direction, slice_1d, slice_2d
from tscope_widgets.models.registry import adapt

WORLD = 2
ALPHAS = [-1.0, 0.0, 0.5]
BETAS = [-0.5, 0.0, 1.0, 2.0]
BUILDERS = {"tiny": mz.tiny, "gpt2": mz.gpt2}
# (model, points_per_call on rank 0, on rank 1): the default (several points per vmapped call on these
# tiny models), one point per plain call, and ranks asking for different values (they use the smallest).
CASES = {"tiny_default": ("tiny", None, None), "tiny_p1": ("tiny", 1, 1), "tiny_p2_p3": ("tiny", 2, 3),
         "gpt2_default": ("gpt2", None, None)}


def batches(name: str) -> list[dict[str, torch.Tensor]]:
    """Four padded batches of 3, 2, 4 and 1 sequences of different lengths (rank r takes batches r, r + 2)."""
    adapter = adapt(BUILDERS[name]())
    return [mz.random_batch(adapter, B, S, seed=s) for s, (B, S) in enumerate([(3, 6), (2, 5), (4, 7), (1, 4)])]


def directions(name: str) -> tuple[dict, dict]:
    """The same two filter-normalized directions on every rank (seeded)."""
    g = torch.Generator().manual_seed(0)
    model = BUILDERS[name]()
    return random_direction(model, generator=g), random_direction(model, generator=g)


def compute(data_of, ppc_of, process_group=None) -> dict[str, torch.Tensor]:
    """Final 2D and 1D slices of every case: ``data_of(name)`` the batches, ``ppc_of(case)`` points per call."""
    out = {}
    for case, (name, *_) in CASES.items():
        d1, d2 = directions(name)
        kw = dict(points_per_call=ppc_of(case), process_group=process_group)
        plane = list(slice_2d(BUILDERS[name](), data_of(name), d1, d2, ALPHAS, BETAS, **kw))[-1]
        line = list(slice_1d(BUILDERS[name](), data_of(name), d2, BETAS, **kw))[-1]
        for kind, s in (("2d", plane), ("1d", line)):
            out[f"{case}.{kind}.loss"], out[f"{case}.{kind}.accuracy"] = s.loss, s.accuracy
            out[f"{case}.{kind}.origin"] = torch.tensor([s.origin_loss, s.origin_accuracy], dtype=torch.float64)
            out[f"{case}.{kind}.rows_done"] = torch.tensor([s.rows_done], dtype=torch.float64)
    return out


def worker(out: Path) -> None:
    """One rank: its half of the batches; all batches on rank 1 (rank 0 has none); a bad batch on rank 1."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, group = dist.get_rank(), dist.group.WORLD
    tensors = compute(lambda name: batches(name)[rank::WORLD], lambda case: CASES[case][1 + rank], group)
    d1, d2 = directions("tiny")
    lopsided = list(slice_2d(mz.tiny(), batches("tiny") if rank == 1 else [], d1, d2, ALPHAS, BETAS,
                             process_group=group))[-1]
    tensors["lopsided.2d.loss"] = lopsided.loss
    info = {}
    bad = batches("tiny")[rank::WORLD]
    if rank == 1:
        bad[0]["input_ids"][0, 0] = 99  # not in the vocabulary: rank 1 rejects its shard, rank 0 accepts
    try:
        slice_2d(mz.tiny(), bad, d1, d2, ALPHAS, BETAS, process_group=group)
    except (ValueError, RuntimeError) as exc:
        info["failure"] = f"{type(exc).__name__}: {exc}"
    save_file({k: v.contiguous() for k, v in tensors.items()}, out / f"rank{rank}.safetensors")
    (out / f"rank{rank}.json").write_text(json.dumps(info))
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[tuple[dict[str, torch.Tensor], dict]]:
    out = launch("tests.kernels.landscape.test_landscape_distributed", tmp_path_factory.mktemp("landscape"), WORLD)
    return [(load_file(out / f"rank{r}.safetensors"), json.loads((out / f"rank{r}.json").read_text()))
            for r in range(WORLD)]


def test_two_process_slices_equal_single_process(ranks):
    single = compute(batches, lambda case: CASES[case][1])
    for r, (got, _) in enumerate(ranks):
        for key, want in single.items():
            torch.testing.assert_close(got[key], want, rtol=1e-10, atol=0, msg=f"rank {r}, {key}")
    assert single["tiny_default.2d.loss"].shape == (3, 4) and single["tiny_default.1d.loss"].shape == (4,)
    assert not torch.isnan(single["tiny_default.2d.loss"]).any()


def test_a_rank_without_batches_adds_nothing(ranks):
    d1, d2 = directions("tiny")
    want = list(slice_2d(mz.tiny(), batches("tiny"), d1, d2, ALPHAS, BETAS))[-1].loss
    for got, _ in ranks:
        torch.testing.assert_close(got["lopsided.2d.loss"], want, rtol=1e-10, atol=0)


def test_a_rank_that_rejects_its_shard_fails_every_rank(ranks):
    (_, info0), (_, info1) = ranks
    assert info1["failure"].startswith("ValueError: batch 0")  # rank 1's own error
    assert info0["failure"].startswith("RuntimeError: the landscape slice failed on another rank")


@pytest.mark.parametrize("group", ["default", "WORLD", 0, object()])
def test_unsupported_group_type_is_a_type_error(group):
    model = mz.tiny()
    d1, d2 = directions("tiny")
    with pytest.raises(TypeError, match="process_group must be a torch.distributed.ProcessGroup"):
        slice_2d(model, batches("tiny"), d1, d2, ALPHAS, BETAS, process_group=group)
    with pytest.raises(TypeError, match="process_group must be a torch.distributed.ProcessGroup"):
        slice_1d(model, batches("tiny"), d1, ALPHAS, process_group=group)


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
