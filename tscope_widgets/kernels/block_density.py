r"""Spectral densities of the diagonal blocks of the loss Hessian, one per parameter group.

Zhang, Chen, Ding, Li, Sun & Luo ("Why Transformers Need Adam: A Hessian Perspective", NeurIPS 2024; code
``zyushun/hessian-spectrum``) run stochastic Lanczos quadrature (SLQ) on each diagonal block
:math:`H_{aa} = \partial^2 L / \partial\theta_a^2` of a parameter block ``a`` separately (defaults: 100 Lanczos
steps, 10 Gaussian probes, float64) and find that the block spectra of transformers differ strongly from
block to block ("block heterogeneity"), those of CNNs much less. :mod:`.heterogeneity` measures it.

Here each block's density is :func:`~.density.slq_density` (all probes through one fully reorthogonalised
Lanczos recurrence) on :meth:`HessianOperator.restrict` of one operator: the gradient graph
:math:`g = \nabla_\theta L` of the whole selection is built once (one forward and one backward with
``create_graph=True``) and every block's products are backward passes through it,
:math:`H_{aa} v = \partial (g_a^\top v) / \partial \theta_a` with the ``K`` probes of a step as one batched
backward. :func:`iter_block_slq` does the same for any mapping of block operators (e.g. dense blocks).

References:
    Zhang et al. (2024), NeurIPS, arXiv 2402.16788; Ubaru, Chen & Saad (2017), SIAM J. Matrix Anal. Appl. 38(4).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..models.adapter import ModelAdapter
from .curvature import GroupSpec, HessianOperator, LossFn
from .density import SpectralDensity, slq_density
from .operator import LinearOperator, as_operator

__all__ = ["BlockDensities", "block_densities", "iter_block_densities", "iter_block_slq"]

# Zhang et al. (2024): 100 Lanczos steps, 10 Gaussian probes per block.
DEFAULT_BLOCK_STEPS = 100
DEFAULT_BLOCK_PROBES = 10


@dataclass
class BlockDensities:
    """SLQ densities of the diagonal blocks done so far (a snapshot for a Job, or the final result).

    Attributes:
        labels: Block labels in order (all of them, also those not done yet).
        sizes: ``{label: number of parameters}``.
        densities: ``{label: SpectralDensity}`` of the blocks done, in order (each on its own default grid).
        num_matvecs: Block-vector products so far (all blocks).
        done: Blocks done. total: Blocks in all.
    """

    labels: list[str]
    sizes: dict[str, int]
    densities: dict[str, SpectralDensity] = field(default_factory=dict)
    num_matvecs: int = 0
    done: int = 0
    total: int = 0

    def __getitem__(self, label: str) -> SpectralDensity:
        return self.densities[label]

    def __len__(self) -> int:
        return len(self.densities)


def iter_block_slq(
    blocks: Mapping[str, LinearOperator | Tensor],
    num_probes: int = DEFAULT_BLOCK_PROBES,
    num_steps: int = DEFAULT_BLOCK_STEPS,
    *,
    distribution: str = "gaussian",
    num_points: int = 512,
    generator: torch.Generator | None = None,
) -> Iterator[BlockDensities]:
    """SLQ density of each symmetric block operator in turn, yielding after every block.

    Args:
        blocks: ``{label: symmetric operator [N_a, N_a]}`` (or matrices), float32 or float64.
        num_probes: Probes per block (``n_v``).
        num_steps: Lanczos steps per probe (capped at ``N_a``: a block with ``N_a <= num_steps`` is resolved
            exactly, its nodes are its eigenvalues).
        distribution: ``"gaussian"`` (Zhang et al.) or ``"rademacher"`` probes, normalised to unit length.
        num_points: Points of each block's own default grid (see :func:`~.density.iter_slq`).
        generator: Seeded generator (probes of block after block, in order).

    Yields:
        A :class:`BlockDensities` after each block; the last one holds every block.

    Raises:
        ValueError: For no blocks, or (from :func:`~.density.iter_slq`) a non-square block or bad counts.
    """
    ops = {str(label): as_operator(op) for label, op in blocks.items()}
    if not ops:
        raise ValueError("no blocks given: pass {label: operator} with at least one block")
    labels = list(ops)
    sizes = {k: op.shape[0] for k, op in ops.items()}
    done: dict[str, SpectralDensity] = {}
    matvecs = 0
    for label in labels:
        op = ops[label]
        before = op.num_matvecs
        done[label] = slq_density(op, num_probes, num_steps, num_points=num_points, distribution=distribution,
                                  generator=generator)
        matvecs += op.num_matvecs - before
        yield BlockDensities(list(labels), dict(sizes), dict(done), matvecs, len(done), len(labels))


def iter_block_densities(
    model: ModelAdapter | nn.Module,
    data: Mapping[str, Tensor] | Iterable[Mapping[str, Tensor]],
    groups: GroupSpec | Mapping[str, GroupSpec] = None,
    num_probes: int = DEFAULT_BLOCK_PROBES,
    num_steps: int = DEFAULT_BLOCK_STEPS,
    *,
    loss: LossFn | None = None,
    dtype: torch.dtype | None = torch.float64,
    distribution: str = "gaussian",
    num_points: int = 512,
    generator: torch.Generator | None = None,
) -> Iterator[BlockDensities]:
    """Per-block SLQ densities of the loss Hessian of a transformer, yielding after every block.

    Args:
        model: A supported model or its :class:`ModelAdapter` (only read; a private analysis copy is used).
        data: A batch ``{"input_ids": [B, S], ...}`` or a list of them (see :class:`HessianOperator`).
        groups: The blocks: ``None`` (one block per parameter group of ``param_groups()``), a pattern or list of
            group names/patterns (one block each, after expansion), or ``{label: groups}`` (a block of several
            groups, e.g. ``{"block0.qk": ["block0.attn.q", "block0.attn.k"]}``).
        num_probes: Gaussian probes per block (Zhang et al.: 10).
        num_steps: Lanczos steps per probe (Zhang et al.: 100).
        loss: Custom loss (see :class:`HessianOperator`); ``None``: the LM loss.
        dtype: Analysis dtype (default float64, as Zhang et al.).
        distribution: ``"gaussian"`` or ``"rademacher"``.
        num_points: Grid points of each block's density.
        generator: Seeded generator.

    Yields:
        A :class:`BlockDensities` after each block.

    Raises:
        ValueError: An unknown group, a group in two blocks, empty data (from :class:`HessianOperator`).
    """
    spec = _block_spec(model, groups)
    members = [g for gs in spec.values() for g in gs]
    op = HessianOperator(model, data, groups=members, loss=loss, dtype=dtype, route="double_backward")
    op.share_gradient_graph()  # one forward + backward for every block's products
    blocks = {label: op.restrict(gs) for label, gs in spec.items()}
    yield from iter_block_slq(blocks, num_probes, num_steps, distribution=distribution, num_points=num_points,
                              generator=generator)


def block_densities(
    model: ModelAdapter | nn.Module,
    data: Mapping[str, Tensor] | Iterable[Mapping[str, Tensor]],
    groups: GroupSpec | Mapping[str, GroupSpec] = None,
    num_probes: int = DEFAULT_BLOCK_PROBES,
    num_steps: int = DEFAULT_BLOCK_STEPS,
    *,
    loss: LossFn | None = None,
    dtype: torch.dtype | None = torch.float64,
    distribution: str = "gaussian",
    num_points: int = 512,
    generator: torch.Generator | None = None,
) -> BlockDensities:
    """SLQ density of every diagonal Hessian block: the final result of :func:`iter_block_densities`.

    Args:
        model: A supported model or adapter.
        data: Batches.
        groups: Blocks (see :func:`iter_block_densities`).
        num_probes: Probes per block.
        num_steps: Lanczos steps per probe.
        loss: Custom loss or ``None``.
        dtype: Analysis dtype.
        distribution: ``"gaussian"`` or ``"rademacher"``.
        num_points: Grid points per density.
        generator: Seeded generator.

    Returns:
        :class:`BlockDensities` with every block.

    Example:
        >>> from tscope_widgets.models.tiny import TinyConfig, TinyTransformer
        >>> _ = torch.manual_seed(0)
        >>> model = TinyTransformer(TinyConfig(vocab_size=11, d_model=8, n_head=2, n_layer=1, max_seq_len=8))
        >>> batch = {"input_ids": torch.randint(0, 11, (2, 6))}
        >>> d = block_densities(model, batch, ["block0.attn.q", "block0.ln1"], num_probes=2, num_steps=10,
        ...                     generator=torch.Generator().manual_seed(0))
        >>> d.labels, d.sizes
        (['block0.attn.q', 'block0.ln1'], {'block0.attn.q': 72, 'block0.ln1': 16})
    """
    run = iter_block_densities(model, data, groups, num_probes, num_steps, loss=loss, dtype=dtype,
                               distribution=distribution, num_points=num_points, generator=generator)
    return deque(run, maxlen=1)[0]


def _block_spec(model, groups) -> dict[str, list[str]]:
    """``{label: [group names]}``: one block per group unless ``groups`` is a mapping of labels to groups."""
    from ..models.registry import adapt
    from .curvature import resolve_groups

    available = adapt(model).param_groups()
    if isinstance(groups, Mapping):
        if not groups:
            raise ValueError("groups is an empty mapping; give {label: group names} with at least one block")
        out = {}
        for label, spec in groups.items():
            if not isinstance(label, str):
                raise TypeError(f"block labels must be strings, got {label!r}")
            try:
                out[label] = resolve_groups(available, spec)
            except ValueError as err:
                raise ValueError(f"block {label!r}: {err}") from None
        return out
    return {g: [g] for g in resolve_groups(available, groups)}
