"""Statistics from 2 ``gloo`` processes equal those of one process.

The two-process tests start this file as a script twice (``python -m tests.test_distributed OUT``)
with torchrun's environment (``MASTER_ADDR=127.0.0.1``, a free port, ``RANK``, ``WORLD_SIZE``), once
per module; each rank writes its results to ``OUT/rank<r>.safetensors`` and ``OUT/rank<r>.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.model_zoo import random_batch, tiny
from tests.ranks import launch
from tscope_widgets.distributed import (
    DistContext,
    RankFailure,
    all_merge_welford,
    broadcast_json,
    broadcast_module_,
    check_all_ranks,
    check_same_on_every_rank,
    init_from_env,
    is_distributed,
    iter_sensitivity_distributed,
    rank_seed,
    sensitivity_statistics,
    shard,
    shard_indices,
)
from tscope_widgets.jobs import Checkpoint
from tscope_widgets.kernels.sensitivity import iter_sensitivity
from tscope_widgets.kernels.welford import WelfordState
from tscope_widgets.models import adapt

WORLD = 2
N_WELFORD = 11  # uneven: rank 0 gets 6 samples, rank 1 gets 5
N_SENS = 7  # rank 0: samples 0, 2, 4, 6; rank 1: 1, 3, 5
# batch_size=1 in both runs: every sample's map then comes from the same computation bit for bit,
# so count/min/max must match exactly and mean/std differ only by the order of the merges.
SENS_KW = dict(layers=[0, "final"], method="exact", batch_size=1, reservoir_size=3, seed=5)
EXACT = dict(rtol=0, atol=0, equal_nan=True)
ROUNDING = dict(rtol=1e-12, atol=0, equal_nan=True)


# ----- shared data -----------------------------------------------------------------------------------
def welford_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Values ``[N, 3, 4]`` (large mean, small spread), mask ``[N, 3, 4]`` and scalars ``[N]``.

    Cell (0, 0) is masked everywhere (count 0: NaN statistics); cell (0, 1) only on odd samples (rank
    1's shard is empty there); cell (0, 2) is valid on sample 0 alone (count 1: NaN variance).
    """
    g = torch.Generator().manual_seed(1)
    x = 1e3 + torch.randn(N_WELFORD, 3, 4, generator=g, dtype=torch.float64)
    mask = torch.rand(N_WELFORD, 3, 4, generator=g) < 0.8
    mask[:, 0, 0] = False
    mask[:, 0, 1] = torch.arange(N_WELFORD) % 2 == 0
    mask[:, 0, 2] = torch.arange(N_WELFORD) == 0
    scalars = torch.randn(N_WELFORD, generator=g, dtype=torch.float64)
    return x, mask, scalars


def empty_states() -> dict[str, WelfordState]:
    float32_grid = WelfordState((3, 4), torch.float32)
    return {"grid": WelfordState((3, 4)), "grid32": float32_grid, "scalar": WelfordState(())}


def welford_states(x, mask, scalars) -> dict[str, WelfordState]:
    """One state per key, fed in two batches."""
    states = empty_states()
    half = x.shape[0] // 2
    for part in (slice(0, half), slice(half, None)):
        states["grid"].update(x[part], mask[part])
        states["grid32"].update(x[part].float(), mask[part])
        states["scalar"].update(scalars[part])
    return states


def sensitivity_data() -> dict[str, torch.Tensor]:
    """Padded ids ``[7, 6]`` for the tiny model (rows 1, 4: right-padded; 2, 5: left-padded)."""
    return random_batch(adapt(tiny()), N_SENS, 6, pad=True, seed=3)


def ragged_data(r: int) -> dict[str, torch.Tensor]:
    """Rank ``r``'s own part of a data set of unequal lengths: ids ``[3, 4]`` on rank 0, ``[2, 6]`` on 1."""
    return random_batch(adapt(tiny()), 3 - r, 4 + 2 * r, pad=True, seed=10 + r)


def flat(states, prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{key}.{k}": v for key, st in states.items() for k, v in st.state_dict().items()}


# ----- the worker: one rank --------------------------------------------------------------------------
def worker(out: Path) -> None:
    """One rank of the two-process run: Welford gather, a mismatched gather, sensitivity statistics."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    ctx = init_from_env()
    info = {"context": [ctx.rank, ctx.world_size, ctx.backend, str(ctx.device), is_distributed()]}
    x, mask, scalars = welford_data()
    local = welford_states(shard(x), shard(mask), shard(scalars))
    tensors = flat(all_merge_welford(local), "welford")
    try:
        all_merge_welford({f"only-on-rank-{ctx.rank}": WelfordState(2)})
    except ValueError as exc:
        info["mismatch"] = str(exc)

    snaps = list(iter_sensitivity_distributed(tiny(), sensitivity_data(), **SENS_KW))
    final = snaps[-1]
    info["local"] = [[s.done, s.total, s.batches, s.seed, s.merged] for s in snaps[:-1]]
    info["final"] = final.meta()
    tensors.update(flat(final.stats, "sens"))
    tensors.update({f"reservoir.{k}": v for k, v in final.reservoir.state_dict().items()})

    ragged_kw = dict(SENS_KW, batch_size=3)
    ragged = sensitivity_statistics(tiny(), ragged_data(ctx.rank), sharded=True, **ragged_kw)
    info["ragged"] = ragged.meta()
    tensors.update(flat(ragged.stats, "ragged"))
    tensors.update({f"ragged_reservoir.{k}": v for k, v in ragged.reservoir.state_dict().items()})

    bad = ragged_data(ctx.rank)
    if ctx.rank == 1:
        bad["input_ids"][0, 0] = 99  # not in the vocabulary: rank 1 fails while rank 0 works
    try:
        sensitivity_statistics(tiny(), bad, sharded=True, **SENS_KW)
    except (ValueError, RuntimeError) as exc:
        info["failure"] = f"{type(exc).__name__}: {exc}"

    module = rank_module(ctx.rank)
    try:
        check_same_on_every_rank(dict(module.state_dict()), "the module")
    except ValueError as exc:
        info["differs"] = str(exc)
    broadcast_module_(module)
    check_same_on_every_rank(dict(module.state_dict()), "the module")  # raises if the broadcast missed one
    tensors.update({f"module.{k}": v for k, v in module.state_dict().items()})
    info["json"] = broadcast_json({"from": ctx.rank})
    try:
        check_all_ranks(ValueError("bad shard") if ctx.rank == 1 else None, "while testing")
    except RankFailure as exc:
        info["check"] = [str(exc), repr(exc.__cause__), exc.failures]
    check_all_ranks(None, "while testing")  # nobody failed: returns on every rank
    save_file(tensors, out / f"rank{ctx.rank}.safetensors")
    (out / f"rank{ctx.rank}.json").write_text(json.dumps(info))
    dist.destroy_process_group()


def rank_module(rank: int) -> torch.nn.Module:
    """A module whose float parameters and bool buffer differ by rank."""
    torch.manual_seed(rank)
    module = torch.nn.Linear(3, 2).double()
    module.register_buffer("flags", torch.tensor([rank == 0, rank == 1]))
    return module


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    return launch("tests.test_distributed", tmp_path_factory.mktemp("dist"), WORLD, timeout=120)


def load_rank(out: Path, r: int) -> tuple[dict[str, torch.Tensor], dict]:
    return load_file(out / f"rank{r}.safetensors"), json.loads((out / f"rank{r}.json").read_text())


def assert_same_statistics(merged: dict[str, torch.Tensor], reference: dict[str, torch.Tensor],
                           tol: dict) -> None:
    """count, min, max, rows exactly; mean and m2 to ``tol``; both as state_dict tensors."""
    assert merged.keys() == reference.keys()
    for name, ref in reference.items():
        got = merged[name]
        assert got.dtype == ref.dtype, name
        kind = name.rsplit(".", 1)[1]
        torch.testing.assert_close(got, ref, **(tol if kind in ("mean", "m2") else EXACT), msg=name)


def assert_same_derived(merged: WelfordState, reference: WelfordState, tol: dict) -> None:
    for attr in ("mean", "std"):
        torch.testing.assert_close(getattr(merged, attr), getattr(reference, attr), **tol)
    for attr in ("count", "min", "max"):
        torch.testing.assert_close(getattr(merged, attr), getattr(reference, attr), **EXACT)
    assert merged.total_count == reference.total_count


def states_from(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, WelfordState]:
    keys = {name[len(prefix) + 1:].rsplit(".", 1)[0] for name in tensors if name.startswith(prefix + ".")}
    return {
        key: WelfordState.from_state_dict(
            {k.rsplit(".", 1)[1]: v for k, v in tensors.items() if k.startswith(f"{prefix}.{key}.")})
        for key in keys
    }


# ----- two processes ---------------------------------------------------------------------------------
def test_two_process_welford_gather_equals_one_pass(two_ranks):
    rank0, info0 = load_rank(two_ranks, 0)
    rank1, info1 = load_rank(two_ranks, 1)
    assert info0["context"] == [0, 2, "gloo", "cpu", True]
    assert info1["context"] == [1, 2, "gloo", "cpu", True]
    welford0 = {k: v for k, v in rank0.items() if k.startswith("welford.")}
    welford1 = {k: v for k, v in rank1.items() if k.startswith("welford.")}
    assert_same_statistics(welford1, welford0, EXACT)  # every rank ends with identical statistics

    x, mask, scalars = welford_data()
    one_pass = empty_states()
    one_pass["grid"].update(x, mask)
    one_pass["grid32"].update(x.float(), mask)
    one_pass["scalar"].update(scalars)
    merged = states_from(rank0, "welford")
    reference64 = {k: v for k, v in flat(one_pass, "welford").items() if ".grid32." not in k}
    assert_same_statistics({k: v for k, v in welford0.items() if ".grid32." not in k}, reference64, ROUNDING)
    assert_same_derived(merged["grid"], one_pass["grid"], ROUNDING)
    assert_same_derived(merged["scalar"], one_pass["scalar"], ROUNDING)
    # float32: the variance's rounding error grows like (|mean| / std)·eps = 1e3·eps (see welford.py).
    float32_tol = dict(rtol=4 * 1e3 * torch.finfo(torch.float32).eps, atol=0, equal_nan=True)
    assert_same_derived(merged["grid32"], one_pass["grid32"], float32_tol)
    assert merged["grid32"].dtype == torch.float32
    counts = merged["grid"].count
    assert (counts[0, 0], counts[0, 1], counts[0, 2]) == (0, 6, 1)
    assert merged["grid"].total_count == N_WELFORD


def test_two_process_mismatched_keys_raise_on_every_rank(two_ranks):
    for r in range(WORLD):
        _, info = load_rank(two_ranks, r)
        assert "same keys, shapes and dtypes" in info["mismatch"]
        assert "only-on-rank-0" in info["mismatch"] and "only-on-rank-1" in info["mismatch"]


def test_two_process_sensitivity_equals_single_process(two_ranks):
    rank0, info0 = load_rank(two_ranks, 0)
    rank1, info1 = load_rank(two_ranks, 1)
    data = sensitivity_data()
    *_, single = iter_sensitivity(tiny(), data, **SENS_KW)
    reference = flat(single.stats, "sens")
    sens0 = {k: v for k, v in rank0.items() if k.startswith("sens.")}
    sens1 = {k: v for k, v in rank1.items() if k.startswith("sens.")}
    assert_same_statistics(sens1, sens0, EXACT)
    assert_same_statistics(sens0, reference, ROUNDING)
    merged = states_from(rank0, "sens")
    for layer in ("0", "final"):
        assert_same_derived(merged[layer], single.stats[int(layer) if layer.isdigit() else layer], ROUNDING)
        assert merged[layer].total_count == N_SENS

    # Local snapshots: this rank's shard, this rank's seed; then one merged snapshot of everything.
    assert info0["local"] == [[k, 4, k, 5, False] for k in range(1, 5)]
    assert info1["local"] == [[k, 3, k, rank_seed(5, 1), False] for k in range(1, 4)]
    for info in (info0, info1):
        final = info["final"]
        assert (final["done"], final["total"], final["batches"], final["seed"]) == (N_SENS, N_SENS, N_SENS, 5)
        assert final["merged"] and final["world_size"] == WORLD and final["seq_len"] == 6

    # Rank 0's reservoir on every rank, indexed in the whole data set.
    for key in [k for k in rank0 if k.startswith("reservoir.")]:
        torch.testing.assert_close(rank1[key], rank0[key], **EXACT)
    index = rank0["reservoir.sample_index"]
    assert (index >= 0).all() and (index % WORLD == 0).all()
    torch.testing.assert_close(rank0["reservoir.input_ids"], data["input_ids"][index], **EXACT)
    torch.testing.assert_close(rank0["reservoir.mask"], data["attention_mask"][index].bool(), **EXACT)


def test_two_process_ranks_with_different_lengths_merge_on_the_longest_grid(two_ranks):
    rank0, info0 = load_rank(two_ranks, 0)
    rank1, info1 = load_rank(two_ranks, 1)
    # Single process over the same two batches: the 4-position batch is NaN-padded to 6 positions.
    *_, single = iter_sensitivity(tiny(), [ragged_data(0), ragged_data(1)], **dict(SENS_KW, max_seq_len=6))
    ragged0 = {k: v for k, v in rank0.items() if k.startswith("ragged.")}
    ragged1 = {k: v for k, v in rank1.items() if k.startswith("ragged.")}
    assert_same_statistics(ragged1, ragged0, EXACT)
    assert_same_statistics(ragged0, flat(single.stats, "ragged"), ROUNDING)
    assert (info0["ragged"]["seq_len"], info0["ragged"]["done"], info0["ragged"]["total"]) == (6, 5, 5)
    # Rank 0's reservoir (3 samples of 4 positions), on the 6-position grid, local indices kept.
    reservoir = {k.split(".", 1)[1]: v for k, v in rank1.items() if k.startswith("ragged_reservoir.")}
    assert reservoir["sample_index"].tolist() == [0, 1, 2] and int(reservoir["seq_len"]) == 6
    torch.testing.assert_close(reservoir["input_ids"][:, :4], ragged_data(0)["input_ids"], **EXACT)
    assert not reservoir["mask"][:, 4:].any() and reservoir["maps.final"][:, 4:].isnan().all()


def test_two_process_failure_on_one_rank_raises_on_every_rank(two_ranks):
    _, info0 = load_rank(two_ranks, 0)
    _, info1 = load_rank(two_ranks, 1)
    # Rank 0 learns rank 1's message at the merge; rank 1 raises its own error.
    assert info0["failure"].startswith(
        "RankFailure: rank(s) [1] failed while processing their shard: ValueError: token ids must lie in [0, 11)")
    assert info1["failure"].startswith("ValueError: token ids must lie in [0, 11)")


def test_two_process_broadcasts_and_checks_of_sameness(two_ranks):
    rank0, info0 = load_rank(two_ranks, 0)
    rank1, info1 = load_rank(two_ranks, 1)
    # Before the broadcast the ranks' modules differ, and both ranks say where; after it, both hold rank 0's.
    for info in (info0, info1):
        assert info["differs"].startswith("the module differs between rank 0 and rank 1 (first at 'weight')")
        assert info["json"] == {"from": 0}
    for key, value in rank_module(0).state_dict().items():
        assert torch.equal(rank0[f"module.{key}"], value) and torch.equal(rank1[f"module.{key}"], value), key
    assert rank1["module.flags"].dtype == torch.bool and rank1["module.flags"].tolist() == [True, False]
    # A failure on rank 1 raises on both ranks, from rank 1's own error there.
    message = "rank(s) [1] failed while testing: ValueError: bad shard"
    assert info0["check"] == [message, "None", {"1": "ValueError: bad shard"}]
    assert info1["check"] == [message, "ValueError('bad shard')", {"1": "ValueError: bad shard"}]


# ----- one process -----------------------------------------------------------------------------------
def test_checks_in_one_process_raise_the_error_itself():
    check_all_ranks(None, "while testing")
    error = ValueError("bad")
    with pytest.raises(ValueError, match="bad") as caught:
        check_all_ranks(error, "while testing")
    assert caught.value is error
    module = rank_module(3)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    assert broadcast_module_(module) is module and broadcast_json([1, 2]) == [1, 2]
    assert all(torch.equal(module.state_dict()[k], v) for k, v in before.items())
    check_same_on_every_rank(dict(module.state_dict()), "the module")
    failure = RankFailure("while testing", {2: "OSError: full", 0: "ValueError: x", 1: "OSError: full"})
    assert list(failure.failures) == [0, 1, 2]
    assert str(failure) == ("rank(s) [0, 1, 2] failed while testing: rank(s) [0]: ValueError: x; "
                            "rank(s) [1, 2]: OSError: full")
@pytest.mark.parametrize("world", [1, 2, 3, 4, 7])
def test_shard_indices_cover_every_index_exactly_once(world):
    for n in [0, 1, 2, 5, 6, 13, 100]:
        shards = [shard_indices(n, r, world) for r in range(world)]
        everything = torch.cat(shards)
        assert torch.equal(everything.sort().values, torch.arange(n)), (n, world)
        sizes = [len(s) for s in shards]
        assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
        for r, s in enumerate(shards):
            assert s.tolist() == list(range(r, n, world))  # deterministic, strided


def test_shard_splits_each_kind_of_data_set():
    ids = torch.arange(30).view(10, 3)
    mask = torch.ones(10, 3, dtype=torch.long)
    texts = [f"text {i}" for i in range(10)]
    for r in range(3):
        idx = shard_indices(10, r, 3)
        assert torch.equal(shard(ids, r, 3), ids[idx])
        sharded_ids, sharded_mask = shard((ids, mask), r, 3)
        assert torch.equal(sharded_ids, ids[idx]) and torch.equal(sharded_mask, mask[idx])
        d = shard({"input_ids": ids, "attention_mask": mask, "text": texts}, r, 3)
        assert torch.equal(d["input_ids"], ids[idx]) and d["text"] == [texts[i] for i in idx]
        assert shard(texts, r, 3) == [texts[i] for i in idx]
    assert torch.equal(shard(ids), ids)  # no process group: a world of one


def test_shard_rejects_bad_input():
    ids = torch.zeros(4, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="share their first dimension"):
        shard({"input_ids": ids, "attention_mask": torch.ones(5, 3)}, 0, 2)
    with pytest.raises(TypeError, match="DistributedSampler"):
        shard(torch.utils.data.DataLoader(ids, batch_size=2), 0, 2)
    with pytest.raises(ValueError, match="0 <= rank < world_size"):
        shard(ids, 2, 2)
    with pytest.raises(ValueError, match="n must be >= 0"):
        shard_indices(-1, 0, 1)
    with pytest.raises(TypeError, match="rank must be an int"):
        shard_indices(3, 0.0, 1)


def test_init_from_env_without_torchrun_is_a_no_op(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert init_from_env() == DistContext(0, 1, 0, None, torch.device("cpu"))
    assert not is_distributed()
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match=r"\['WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'\] are not"):
        init_from_env()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="0 <= RANK < WORLD_SIZE"):
        init_from_env()
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="timeout must be a positive number of seconds, got 0"):
        init_from_env(timeout=0)


def test_all_merge_welford_in_one_process_copies():
    x, mask, scalars = welford_data()
    states = welford_states(x, mask, scalars)
    merged = all_merge_welford(states)
    assert list(merged) == list(states)
    for key, st in states.items():
        assert merged[key] is not st
        assert_same_statistics(flat({key: merged[key]}, "w"), flat({key: st}, "w"), EXACT)
    with pytest.raises(TypeError, match="hold WelfordState"):
        all_merge_welford({"a": torch.zeros(3)})
    with pytest.raises(TypeError, match="mapping of WelfordState"):
        all_merge_welford([WelfordState(2)])


def test_distributed_sensitivity_in_one_process_matches_iter_sensitivity():
    data = sensitivity_data()
    kw = dict(SENS_KW, batch_size=3)
    snaps = list(iter_sensitivity_distributed(tiny(), data, **kw))
    *_, single = iter_sensitivity(tiny(), data, **kw)
    assert [s.merged for s in snaps] == [False, False, False, True]
    final = snaps[-1]
    assert (final.done, final.total, final.batches, final.rank, final.world_size) == (7, 7, 3, 0, 1)
    assert_same_statistics(flat(final.stats, "s"), flat(single.stats, "s"), EXACT)
    assert torch.equal(final.reservoir.sample_index, single.reservoir.sample_index)
    assert sensitivity_statistics(tiny(), data, **kw).merged

    merged_ckpt = Checkpoint(final.state_dict(), final.meta())
    with pytest.raises(ValueError, match="merged statistics"):
        iter_sensitivity_distributed(tiny(), data, resume=merged_ckpt, **kw)
    other_rank = Checkpoint(snaps[0].state_dict(), dict(snaps[0].meta(), rank=1, world_size=2))
    with pytest.raises(ValueError, match="from rank 1 of 2"):
        iter_sensitivity_distributed(tiny(), data, resume=other_rank, **kw)
    resumed = list(iter_sensitivity_distributed(tiny(), data, resume=Checkpoint(snaps[0].state_dict(),
                                                                                 snaps[0].meta()), **kw))
    assert_same_statistics(flat(resumed[-1].stats, "s"), flat(final.stats, "s"), EXACT)


def test_rank_seeds_are_distinct_and_rank0_keeps_the_seed():
    assert rank_seed(7, 0) == 7
    assert len({rank_seed(s, r) for s in range(4) for r in range(4)}) == 16


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
