"""The analyses a run performs: sensitivity, curvature and loss landscapes, each streamed to its end.

:func:`run_sensitivity` (with its checkpoints), :func:`run_curvature` (with :func:`curvature_estimate`) and
:func:`run_landscape` take a prepared model and data (:mod:`.prepare`) and return results; they print nothing
but progress bars and write nothing but checkpoints (:mod:`.reports` writes the results).
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .. import distributed as dist_
from ..models import ModelAdapter, adapt
from .config import AnalysisConfig, ConfigError, CurvatureConfig, LandscapeConfig, SensitivityConfig
from .prepare import Dataset, Prepared, on_every_rank

Layer = int | str


def parse_layers(spec: str | int | Sequence, adapter: ModelAdapter) -> list[Layer]:
    """``"all"`` → every block and ``"final"``; else ints and ``"final"`` (list or comma-separated)."""
    if spec == "all":
        return [*range(adapter.num_layers), "final"]
    items = spec.split(",") if isinstance(spec, str) else ([spec] if isinstance(spec, int) else list(spec))
    layers: list[Layer] = []
    for item in items:
        if isinstance(item, str):
            item = item.strip()
            if item != "final":
                try:
                    item = int(item)
                except ValueError:
                    raise ConfigError(f"layers: {item!r} is neither an integer nor 'final'") from None
        try:
            layers.append(adapter.resolve_layer(item))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"layers: {err}") from None
    return list(dict.fromkeys(layers))


def run_sensitivity(
    prepared: Prepared,
    dataset: Dataset,
    analysis: SensitivityConfig,
    progress: bool,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    device: torch.device | str | None = None,
):
    """Stream :func:`iter_sensitivity` to its last snapshot with a progress bar (and checkpoints).

    Under ``torchrun`` (an initialised process group of more than one process) each rank streams its
    shard with :func:`distributed.iter_sensitivity_distributed` and the returned snapshot holds the merged
    statistics of all ranks, the same on every rank. ``checkpoint_dir`` is then this rank's own folder
    (see :func:`sensitivity_checkpoint_dir`): every rank saves and resumes its local snapshots, and a run
    can only be resumed with the number of processes that made its checkpoints. A failure on any rank, while
    starting, in the middle of a shard or while saving a checkpoint, stops every rank at the merge with
    :class:`distributed.RankFailure` instead of a hang.

    Args:
        prepared: The model to analyse.
        dataset: The token ids (``dataset.data``) and the tokenizer for text.
        analysis: The ``[analysis]`` table: layers, source, method, mode, batch size, dtype, seed, checkpoint interval.
        progress: Show a progress bar (tqdm).
        checkpoint_dir: Folder for checkpoints (this rank's own under torchrun), or ``None`` for none.
        resume: Start from the newest checkpoint in ``checkpoint_dir``.
        device: Where the model is analysed (its private copy); ``None``: where the model is.

    Returns:
        ``(snapshot, seconds, layers)``.
    """
    from ..jobs import save_checkpoint
    from ..kernels.sensitivity import iter_sensitivity

    distributed = dist_.is_distributed()
    adapter = adapt(prepared.model)

    def start_stream():
        layers = parse_layers(analysis.layers, adapter)
        source = analysis.source
        if isinstance(source, str) and source != "embeddings":
            raise ConfigError(f"[analysis].source must be 'embeddings' or a block index, got {source!r}")
        checkpoint = _load_resume_checkpoint(checkpoint_dir) if resume else None
        dtype = analysis.torch_dtype
        run = dist_.iter_sensitivity_distributed if distributed else iter_sensitivity
        try:
            stream = run(
                adapter if device is None else adapter.analysis(dtype, device),
                dataset.data,
                layers=layers,
                method=analysis.method,
                mode=analysis.mode,
                batch_size=analysis.batch_size,
                max_seq_len=analysis.max_seq_len,
                tokenizer=dataset.tokenizer,
                source=source,
                probes=analysis.probes,
                chunk_size=analysis.chunk_size,
                dtype=dtype,
                seed=analysis.seed,
                resume=checkpoint,
            )
        except (TypeError, ValueError) as err:
            where = "--resume" if checkpoint is not None and "checkpoint" in str(err) else "[analysis]"
            raise ConfigError(f"{where}: {err}") from None
        return layers, stream

    layers, stream = on_every_rank("while starting the sensitivity analysis", start_stream)
    snapshot = None
    start = time.perf_counter()
    every = analysis.checkpoint_every
    desc = f"sensitivity (rank 0's shard of {dist_.world_size()})" if distributed else "sensitivity"
    with tqdm(total=None, desc=desc, unit="sample", disable=not progress) as bar:
        for snapshot in stream:
            if getattr(snapshot, "merged", False):
                continue  # the last one: every rank's statistics merged
            try:
                bar.total = snapshot.total
                bar.update(snapshot.done - bar.n)
                last = distributed and snapshot.done == snapshot.total  # the shard's end, before the merge
                if every and checkpoint_dir is not None and (snapshot.batches % every == 0 or last):
                    save_checkpoint(checkpoint_dir, snapshot, job_name="tscope run")
            except Exception as err:  # noqa: BLE001 - other ranks learn of it at the merge
                if not distributed:
                    raise
                stream.throw(err)  # raises err here after telling the other ranks
    if snapshot is None:
        raise ConfigError("the data produced no batches")
    if every and checkpoint_dir is not None and not distributed:
        save_checkpoint(checkpoint_dir, snapshot, job_name="tscope run")
    return snapshot, time.perf_counter() - start, layers


def sensitivity_checkpoint_dir(out: Path) -> Path:
    """Where a sensitivity run in ``out`` keeps its checkpoint: ``out/checkpoint``, or under ``torchrun``
    with ``W`` processes one folder per rank, ``out/checkpoint/rank<r>-of-<W>``."""
    if dist_.is_distributed():
        return out / "checkpoint" / f"rank{dist_.rank()}-of-{dist_.world_size()}"
    return out / "checkpoint"


def _load_resume_checkpoint(directory: Path) -> Any:
    """The checkpoint ``--resume`` continues from, or a :class:`ConfigError` saying what is there instead."""
    from ..jobs import load_checkpoint

    check_resume_checkpoint(directory)
    try:
        return load_checkpoint(directory)
    except ValueError as err:
        raise ConfigError(f"--resume: {err}") from None


def check_resume_checkpoint(directory: Path) -> None:
    """Raise a :class:`ConfigError` when ``directory`` holds no checkpoint, saying which run's checkpoints
    are there instead (the same message on every rank that misses its own)."""
    if (directory / "meta.json").is_file():
        return
    distributed = dist_.is_distributed()
    folder = directory.parent if distributed else directory  # OUT/checkpoint
    worlds = {p.name.rsplit("-of-", 1)[1] for p in folder.glob("rank*-of-*") if (p / "meta.json").is_file()}
    worlds.discard(str(dist_.world_size()) if distributed else "")
    if distributed:
        w = dist_.world_size()
        what = f"--resume: {folder} has no rank<r>-of-{w} checkpoints (one per process of a run with {w})"
    else:
        what = f"--resume: no checkpoint in {directory}"
    if distributed and (folder / "meta.json").is_file():
        what += "; it holds the checkpoint of a run in one process: resume that without torchrun"
    elif worlds:
        what += (f"; it holds the checkpoints of a run under torchrun: resume that with torchrun "
                 f"--nproc-per-node {' or '.join(sorted(worlds))}")
    raise ConfigError(what)


def loss_batches(dataset: Dataset, analysis: AnalysisConfig) -> list[dict[str, Tensor]]:
    """The analysis data as loss batches ``{"input_ids": [B, S], "attention_mask"?, "labels"?}``.

    Batches hold ``[analysis].batch_size`` samples, cut to ``max_seq_len`` positions. A synthetic task
    brings its labels (only its predictable tokens are scored, as in training); other data are scored on
    every next token (:meth:`ModelAdapter.targets`). Texts are padded on the right to the longest text of
    their batch, as the sensitivity analysis pads them.
    """
    size, cut = analysis.batch_size, analysis.max_seq_len
    data = dataset.data
    if isinstance(data, list):
        trunc = {"truncation": True, "max_length": cut} if cut else {}
        batches = []
        for a in range(0, len(data), size):
            enc = dataset.tokenizer(
                data[a : a + size], padding="longest", padding_side="right", return_tensors="pt", **trunc
            )
            batches.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
        return batches
    fields = dict(data) if isinstance(data, Mapping) else {"input_ids": data}
    if dataset.labels is not None:
        fields["labels"] = dataset.labels
    fields = {k: v[:, :cut] for k, v in fields.items() if v is not None}
    n = fields["input_ids"].shape[0]
    return [{k: v[a : a + size] for k, v in fields.items()} for a in range(0, n, size)]


def _last_snapshot(snapshots, desc: str, unit: str, progress: bool):
    """Run a kernel generator to its last snapshot (each has ``done``/``total``) under a progress bar."""
    last = None
    with tqdm(desc=desc, unit=unit, disable=not progress) as bar:
        for last in snapshots:
            bar.total = last.total
            bar.update(last.done - bar.n)
        if last is not None:  # an iteration that converged early ends the bar there
            bar.total = last.done
            bar.refresh()
    return last


@contextmanager
def _kernel_errors(where: str, caught: list[str]):
    """Turn the kernels' argument errors into :class:`ConfigError`; collect their ``UserWarning`` messages
    (Lanczos not converged, an ill-defined condition number) in ``caught``, and pass other warnings on."""
    try:
        with warnings.catch_warnings(record=True) as records:
            warnings.simplefilter("always", UserWarning)
            yield
    except (TypeError, ValueError, MemoryError, FloatingPointError) as err:
        raise ConfigError(f"{where}: {err}") from None
    finally:
        for w in records:
            if issubclass(w.category, UserWarning):
                caught.append(str(w.message))
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


@dataclass
class CurvatureResult:
    """What :func:`run_curvature` computed: kernel results (float64 on the CPU) and how long each took."""

    kind: str  # "hessian", "ggn" or "functional"
    num_params: int
    group_sizes: dict[str, int]
    loss: float  # the token-weighted loss the operator differentiates
    lanczos: Any  # LanczosResult, which = "both"
    summary: Any  # CurvatureSummary
    trace: Any = None  # TraceEstimate (Hutch++)
    density: Any = None  # SpectralDensity (SLQ)
    blocks: Any = None  # BlockNorms
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    estimate: Any = None  # CostEstimate made before the run


def run_curvature(
    model: torch.nn.Module,
    batches: list[dict[str, Tensor]],
    analysis: CurvatureConfig,
    progress: bool,
    process_group=None,
) -> CurvatureResult:
    r"""Extreme eigenvalues, trace, spectral density and block norms of one curvature operator.

    The operator is :class:`~tscope_widgets.kernels.curvature.HessianOperator` of the token-weighted LM
    loss over ``batches`` (``[analysis].hessian_kind``: Hessian, Gauss–Newton or functional part), in
    ``[analysis].dtype``. Lanczos (partial reorthogonalization) gives the ``k`` largest and ``k``
    smallest eigenvalues with residual norms; Hutch++ the trace :math:`\pm` its standard error; SLQ the
    smoothed spectral density; the block map :math:`\lVert H_{ab} \rVert_F` over parameter groups is
    exact when the groups hold at most ``AUTO_EXACT_MAX_PARAMS`` parameters (spectral norms of the
    diagonal blocks come with it), else estimated from 16 probes per group. Every estimator draws from
    its own generator seeded with ``[analysis].seed``, so each can be repeated alone. Generators are
    streamed under progress bars. With a ``process_group``, ``batches`` are this rank's shard and every
    product is reduced over the ranks (see ``HessianOperator``).

    Raises:
        ConfigError: for arguments the kernels refuse (unknown groups, ``k`` above the parameter count, a
            loss that is not finite, ...), with the kernel's message.
    """
    from ..kernels.blocks import AUTO_EXACT_MAX_PARAMS, iter_block_norms
    from ..kernels.curvature import HessianOperator
    from ..kernels.density import iter_slq
    from ..kernels.lanczos import curvature_summary, iter_lanczos
    from ..kernels.trace import hutchpp_trace

    dtype, kind, seed = analysis.torch_dtype, analysis.hessian_kind, analysis.seed
    caught: list[str] = []
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 3)
        clock = now

    with _kernel_errors("[analysis]", caught):
        op = HessianOperator(model, batches, kind=kind, dtype=dtype, process_group=process_group)
        estimate = curvature_estimate(op, batches, analysis)
        if progress:
            print(f"estimate: {estimate}", file=sys.stderr)
        lap("estimate")
        lanczos_steps = iter_lanczos(
            op,
            analysis.k,
            "both",
            tol=analysis.tol,
            criterion=analysis.criterion,
            max_iter=analysis.max_iter,
            generator=torch.Generator().manual_seed(seed),
        )
        eig = _last_snapshot(lanczos_steps, f"lanczos ({kind})", "step", progress)
        lap("lanczos")
        if not eig.converged:
            caught.append(
                f"Lanczos stopped after {eig.num_iterations} steps without reaching tol={analysis.tol:g} "
                f"(residual norms {', '.join(f'{r:.2g}' for r in eig.residual_norms.tolist())}); raise "
                "[analysis].max_iter or tol"
            )
        trace = density = blocks = None
        if analysis.trace_matvecs:
            trace = hutchpp_trace(op, analysis.trace_matvecs, generator=torch.Generator().manual_seed(seed))
            lap("trace")
        if analysis.density_probes:
            slq = iter_slq(
                op,
                analysis.density_probes,
                analysis.density_steps,
                generator=torch.Generator().manual_seed(seed),
            )
            density = _last_snapshot(slq, "density (SLQ)", "matvec", progress)
            lap("density")
        summary = curvature_summary(eig, density)
    if analysis.block_norms is not False:
        groups = None if analysis.block_norms is True else list(analysis.block_norms)
        with _kernel_errors("[analysis].block_norms", caught):
            exact = (op if groups is None else op.restrict(groups)).shape[0] <= AUTO_EXACT_MAX_PARAMS
            stream = iter_block_norms(
                model,
                batches,
                groups,
                kind=kind,
                exact=exact,
                spectral=exact,  # free from the dense diagonal blocks when exact; Lanczos per group otherwise
                dtype=dtype,
                generator=torch.Generator().manual_seed(seed),
                process_group=process_group,
            )
            blocks = _last_snapshot(stream, "block norms", "group", progress)
            lap("block_norms")
    return CurvatureResult(
        kind=kind,
        num_params=op.num_params,
        group_sizes=dict(op.group_sizes),
        loss=op.loss_value(),
        lanczos=eig,
        summary=summary,
        trace=trace,
        density=density,
        blocks=blocks,
        seconds=seconds,
        warnings=caught,
        estimate=estimate,
    )


def curvature_estimate(op, batches: list[dict[str, Tensor]], analysis: CurvatureConfig):
    """What the curvature run of ``analysis`` will cost: two measured products of ``op`` (the first also
    builds the gradient graph that the run reuses), the products the run needs at most, and the memory
    model of :mod:`tscope_widgets.kernels.cost`."""
    from ..kernels.blocks import AUTO_EXACT_MAX_PARAMS
    from ..kernels.cost import CostEstimate, available_memory, measure_seconds, product_memory

    v = torch.randn(op.shape[1], dtype=op.dtype, generator=torch.Generator().manual_seed(analysis.seed))
    first = measure_seconds(lambda: op @ v, op.device)
    unit = measure_seconds(lambda: op @ v, op.device)
    lanczos_steps = analysis.max_iter or min(op.shape[0], 20 * 2 * analysis.k + 100)
    units = lanczos_steps + analysis.trace_matvecs + analysis.density_probes * analysis.density_steps
    if analysis.block_norms is not False:
        groups = None if analysis.block_norms is True else list(analysis.block_norms)
        try:
            blocks = op if groups is None else op.restrict(groups)
            units += blocks.shape[0] if blocks.shape[0] <= AUTO_EXACT_MAX_PARAMS else 16 * len(blocks.groups)
        except ValueError:  # an unknown group: the block-norm step reports it
            pass
    return CostEstimate("Hessian-vector product", units, unit, max(first - unit, 0.0),
                        product_memory(op.adapter, batches, op.dtype), available_memory(op.device))


@dataclass
class LandscapeResult:
    """What :func:`run_landscape` computed: the slice, its two directions and how they were made."""

    slice: Any  # LandscapeSlice, loss [A, B]
    directions: dict[str, dict[str, Tensor]]  # {"d1": Direction, "d2": Direction}
    how: dict[str, Any]  # kind of directions, seed, normalization or eigenvalues
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def run_landscape(
    model: torch.nn.Module,
    batches: list[dict[str, Tensor]],
    analysis: LandscapeConfig,
    progress: bool,
    process_group=None,
) -> LandscapeResult:
    r"""The 2D slice :math:`L(\theta + \alpha d_1 + \beta d_2)` on a square grid around the model.

    Directions: ``"random"``, two Gaussian directions with filter normalization (Li et al., NeurIPS 2018;
    biases and norm gains held fixed), drawn in ``[analysis].dtype`` from one generator seeded with
    ``[analysis].seed``; or ``"eigen"``, the two top Hessian eigenvectors (unit norm, Lanczos to
    ``tol``). ``alphas = betas = linspace(-span, span, resolution)``; rows stream under a progress bar.
    With a ``process_group``, ``batches`` are this rank's shard; losses are reduced over the ranks and the
    directions, drawn from the same seed (or the same reduced Hessian), are the same on every rank.

    Raises:
        ConfigError: for arguments the kernels refuse, with the kernel's message.
    """
    from ..kernels.landscape import landscape_grid, make_directions, slice_2d

    dtype = analysis.torch_dtype
    caught: list[str] = []
    start = time.perf_counter()
    with _kernel_errors("[analysis]", caught):
        made = make_directions(
            analysis.directions, model, count=2, data=batches, seed=analysis.seed, dtype=dtype, tol=analysis.tol,
            max_iter=analysis.max_iter, process_group=process_group,
        )
        d1, d2 = made.directions
        how = made.how
        directions_seconds = round(time.perf_counter() - start, 3)
        grid = landscape_grid(analysis.span, analysis.resolution)
        rows = slice_2d(model, batches, d1, d2, grid, grid, dtype=dtype, process_group=process_group)
        landscape = _last_snapshot(rows, "landscape", "row", progress)
    seconds = {"directions": directions_seconds, "slice": round(time.perf_counter() - start - directions_seconds, 3)}
    return LandscapeResult(landscape, {"d1": d1, "d2": d2}, how, seconds, caught)
