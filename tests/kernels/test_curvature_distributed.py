"""HessianOperator under torch.distributed: two gloo processes, each with a shard of the batches, give the
single-process products, gradients, losses and spectral estimates (float64, 1e-10).

The batches have different numbers of labelled tokens, so a product that averaged ranks instead of
weighting their tokens would be off by far more than the tolerance.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests import model_zoo as mz
from tests.ranks import launch
from tscope_widgets import HessianOperator, hutchpp_trace, lanczos, slq_density
from tscope_widgets.models.registry import adapt

WORLD = 2


def batches() -> list[dict[str, torch.Tensor]]:
    """Four padded batches of 3, 2, 4 and 1 sequences (rank r takes batches r, r + 2)."""
    adapter = adapt(mz.gpt2())
    return [mz.random_batch(adapter, B, S, seed=s) for s, (B, S) in enumerate([(3, 6), (2, 5), (4, 6), (1, 4)])]


def compute(data, process_group=None) -> dict[str, torch.Tensor]:
    """Everything compared between runs, as float64 tensors."""
    model = mz.gpt2()
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731  (same probes on every rank)
    out = {}
    H = HessianOperator(model, data, process_group=process_group)
    V = torch.randn(H.shape[1], 3, dtype=torch.float64, generator=gen())
    for kind in ("hessian", "ggn", "functional"):
        out[kind] = HessianOperator(model, data, kind=kind, process_group=process_group) @ V
    out["forward_over_reverse"] = HessianOperator(model, data, route="forward_over_reverse",
                                                  process_group=process_group) @ V
    out["finite_difference"] = HessianOperator(model, data, route="finite_difference",
                                               process_group=process_group) @ V
    block = H.restrict("block0.attn.q", col_groups=["block0.attn.k", "ln_f"])
    out["block"] = block @ torch.randn(block.shape[1], 2, dtype=torch.float64, generator=gen())
    out["gradient"] = H.gradient()
    out["loss"] = torch.tensor([H.loss_value()], dtype=torch.float64)
    out["lanczos"] = lanczos(H, k=2, which="both", tol=1e-9, generator=gen()).eigenvalues
    trace = hutchpp_trace(H, 30, generator=gen())
    out["hutchpp"] = torch.tensor([trace.value, trace.stderr], dtype=torch.float64)
    density = slq_density(H.restrict("block1.*"), num_probes=2, num_steps=8, generator=gen())
    out["slq_nodes"], out["slq_weights"] = density.nodes, density.weights
    return {k: v.contiguous() for k, v in out.items()}


def worker(out: Path) -> None:
    import torch.distributed as dist

    from tscope_widgets.distributed import init_from_env

    torch.set_num_threads(1)
    ctx = init_from_env()
    save_file(compute(batches()[ctx.rank :: WORLD], dist.group.WORLD), out / f"rank{ctx.rank}.safetensors")
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict[str, torch.Tensor]]:
    out = launch("tests.kernels.test_curvature_distributed", tmp_path_factory.mktemp("curvature"), WORLD)
    return [load_file(out / f"rank{r}.safetensors") for r in range(WORLD)]


def test_two_process_curvature_equals_single_process(ranks):
    single = compute(batches())
    for r, got in enumerate(ranks):
        assert got.keys() == single.keys()
        for key, want in single.items():
            err = float((got[key] - want).norm() / want.norm())
            assert err < 1e-10, f"rank {r}, {key}: relative difference {err:.2e}"


def test_a_shard_alone_is_not_the_full_problem():
    """The comparison above has teeth: one rank's shard, without the reduction, differs."""
    data = batches()
    H_all, H_half = HessianOperator(mz.gpt2(), data), HessianOperator(mz.gpt2(), data[::WORLD])
    v = torch.randn(H_all.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert float((H_all @ v - H_half @ v).norm() / (H_all @ v).norm()) > 1e-2


def test_process_group_must_be_a_process_group():
    with pytest.raises(TypeError, match="torch.distributed.ProcessGroup"):
        HessianOperator(mz.gpt2(), batches(), process_group="WORLD")


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
