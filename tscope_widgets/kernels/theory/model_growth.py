r"""The growth-rate experiment of Ormaniec, Dangel & Singh (ICLR 2025) on any supported model.

:func:`~.growth.iter_growth_rates` builds the paper's own small transformers. :func:`iter_model_growth_rates`
asks the same question of a model the user has (GPT-2, Llama, NeoX, ... from a config or trained): for each
embedding scale :math:`\sigma` its input embeddings (the adapter's ``embed`` group: token embeddings and
learned position embeddings, where the model has them) are redrawn as :math:`N(0, \sigma^2)`, every other
weight is the model's own, and the Frobenius norms of the Hessian, Gauss–Newton and functional parts of the
query and value blocks of one layer are measured on the user's batch with the model's own LM loss, exactly as
for the paper's models (same probes at every :math:`\sigma`, :func:`~tscope_widgets.kernels.frobenius.
hutchinson_frobenius`). The fitted slopes then say how far the paper's :math:`\sigma^5` (query) and
:math:`\sigma^2` (value) laws, derived without LayerNorm, survive in a real architecture.

Two differences from the paper's setting are properties of the models, not of the measurement: a model
whose unembedding is tied to its token embeddings (GPT-2) has its output weights redrawn with them, and a
model with LayerNorm in front of attention (every pre-LN model) normalises the scale away from the query and
value inputs, which is what the paper's pre-LN setting shows.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ...models import adapt
from .growth import GrowthRates, GrowthSetting, _GrowthRun, growth_sigmas

__all__ = ["iter_model_growth_rates"]


def iter_model_growth_rates(
    model: torch.nn.Module,
    batch: Mapping[str, Tensor] | Tensor,
    *,
    sigmas: Sequence[float] | None = None,
    seeds: int | Sequence[int] = 3,
    layer: int = 0,
    num_samples: int = 20,
    exact_max: int | None = None,
    label: str | None = None,
    resume: Any = None,
) -> Iterator[GrowthRates]:
    r"""Stream the block-norm growth experiment on ``model``: a :class:`GrowthRates` after every ``(σ, seed)``.

    Each point works on a private float64 copy of ``model`` (the model itself is never changed) whose
    embedding parameters are :math:`\sigma` times a standard normal draw from a generator seeded by
    ``(seed, σ index)``, and measures :math:`\lVert H_{QQ} \rVert_F`, :math:`\lVert H_{VV} \rVert_F` and
    their GGN and functional parts of block ``layer`` on ``batch`` (the LM loss of ``batch``'s labels, as
    :meth:`ModelAdapter.loss`), with ``num_samples`` Rademacher probes seeded by ``(seed, block)``.

    Args:
        model: Any model :func:`~tscope_widgets.adapt` supports.
        batch: ``input_ids [B, S]`` or a mapping with ``input_ids`` (and ``labels``, ``attention_mask``).
        sigmas: Embedding scales, increasing (default: the paper's ``10^linspace(-2, 1, 20)``).
        seeds: Number of seeds (``0 .. n-1``) or the seeds; a seed fixes the embedding draw and the probes.
        layer: The block whose query and value weights are measured.
        num_samples: Hutchinson probes per block and part.
        exact_max: Blocks with at most this many parameters are exact (default: ``num_samples``).
        label: Name of the curve (default: the model's class name and the block).
        resume: A checkpoint (``.tensors``, ``.meta``) of a snapshot of the same run.

    Yields:
        :class:`GrowthRates` with one setting; ``config`` names the model class, its embedding parameters and
        the batch shape (the setting's architecture fields other than ``n_layer`` and ``layer`` describe the
        paper's models, not this one).

    Raises:
        ValueError: For a model without the layer, bad sigmas or seeds, or a checkpoint of another run.
    """
    adapter = adapt(model)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < adapter.num_layers:
        raise ValueError(f"iter_model_growth_rates: layer must be in [0, {adapter.num_layers}), got {layer!r}")
    if isinstance(batch, Tensor):
        batch = {"input_ids": batch}
    if not isinstance(batch, Mapping) or not isinstance(batch.get("input_ids"), Tensor):
        raise ValueError("iter_model_growth_rates: batch must be input_ids [B, S] or a mapping with input_ids")
    embed = [s.name for s in adapter.param_groups().get("embed", [])]
    if not embed:
        raise ValueError(f"iter_model_growth_rates: {type(model).__name__} has no embedding parameters to rescale")
    name = label or f"{type(model).__name__} block {layer}"
    setting = GrowthSetting(label=name, n_layer=adapter.num_layers, layer=layer,
                            sigmas=tuple(growth_sigmas() if sigmas is None else sigmas))
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"iter_model_growth_rates: seeds must be >= 1, got {seeds}")
        seeds = list(range(seeds))
    seeds = list(seeds)
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds) \
            or len(set(seeds)) != len(seeds):
        raise ValueError(f"iter_model_growth_rates: seeds must be distinct ints >= 0, got {seeds!r}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"iter_model_growth_rates: num_samples must be an int >= 1, got {num_samples!r}")
    exact_max = num_samples if exact_max is None else exact_max
    config = {"model": type(model).__name__, "embedding_parameters": embed,
              "batch_shape": list(batch["input_ids"].shape), "num_samples": num_samples, "exact_max": exact_max,
              "embedding_draw": "per_sigma"}
    run = _ModelGrowthRun(adapter, dict(batch), embed, [setting], seeds, config)
    if resume is not None:
        run.restore(resume)
    yield from run.snapshots()


class _ModelGrowthRun(_GrowthRun):
    """:class:`_GrowthRun` whose point is the user's model with redrawn embeddings instead of a paper model."""

    def __init__(self, adapter, batch: dict[str, Tensor], embed: list[str], settings: list[GrowthSetting],
                 seeds: list[int], config: dict):
        super().__init__(settings, seeds, config, task=None)
        self.adapter, self.batch, self.embed = adapter, batch, embed

    def _point(self, g: int, i: int, j: int, setting: GrowthSetting, sigma: float, seed: int) -> None:
        copy = self.adapter.analysis(torch.float64)
        params = dict(copy.model.named_parameters())
        draw = torch.Generator().manual_seed(int(seed) * 1_000_003 + i + 1)  # as growth_model's "per_sigma"
        with torch.no_grad():
            for name in self.embed:
                p = params[name]
                p.copy_(torch.randn(p.shape, generator=draw, dtype=torch.float64) * sigma)
        self._measure(g, i, j, copy.model, self.batch, setting.block, None, seed)
