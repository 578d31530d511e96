"""The commands: ``tscope demo`` and ``tscope run CONFIG.toml``, their options, exit codes and ``torchrun`` plumbing.

Each command joins ``torchrun``'s process group when there is one (:func:`_process_group`), prepares the model
and data (:mod:`.prepare`), runs the analysis (:mod:`.runs`) on this rank's shard, and leaves the writing to
rank 0 (:mod:`.reports`). :func:`main` maps errors to exit codes: 0 ok, 2 a configuration error (on any rank),
1 anything else, including a rank that stopped answering. See :mod:`tscope_widgets.cli` for the whole story.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import distributed as dist_
from .._version import __version__
from ..tasks import get_task
from .attention import report_attention, run_attention
from .blocks import check_single_process, report_blocks, run_blocks
from .compare import add_parser as add_compare_parser
from .config import (
    STATISTICS_SHOWN,
    ConfigError,
    CurvatureConfig,
    ModelConfig,
    OutputConfig,
    RunConfig,
    SensitivityConfig,
    load_run_config,
)
from .growth import growth_checkpoint_dir
from .limits import check_grid, check_output_dir, check_positions, check_samples
from .prepare import Dataset, Prepared, on_every_rank, prepare_data, prepare_model, task_dataset
from .reports import report_curvature, report_demo, report_landscape, report_sensitivity
from .runs import (
    check_resume_checkpoint,
    loss_batches,
    run_curvature,
    run_landscape,
    run_sensitivity,
    sensitivity_checkpoint_dir,
)
from .sweep import add_parser as add_sweep_parser

DEMO_CURVATURE_SAMPLES = 64  # sequences whose loss `tscope demo` takes the Hessian spectrum and trace of
DEFAULT_DIST_TIMEOUT_S = 1800  # torch's default for gloo; a rank gives up after waiting this long for the others


def _world_size() -> int:
    """Processes of the run: torch.distributed's world, else torchrun's ``WORLD_SIZE``, else 1."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def _env_rank() -> int:
    """This process's rank from torchrun's ``RANK`` (0 without it)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


@contextmanager
def _process_group(args: argparse.Namespace, enabled: bool = True):
    """Join ``torchrun``'s process group for the duration of a command (gloo on the CPU, nccl with CUDA);
    without torchrun's environment, or when not ``enabled``, a world of one. Yields the :class:`DistContext`."""
    if not enabled or torch.distributed.is_initialized():  # a caller that runs main() inside its own group
        yield dist_.context()
        return
    try:
        ctx = dist_.init_from_env(timeout=args.dist_timeout)
    except ValueError as err:
        raise ConfigError(f"torchrun environment: {err}") from None
    finished = False
    try:
        yield ctx
        finished = True
    finally:
        if ctx.backend is not None and torch.distributed.is_initialized():
            if finished:  # every rank leaves together: tearing gloo down while a peer still talks aborts it
                torch.distributed.barrier()
            torch.distributed.destroy_process_group()


def _analysis_device(ctx: dist_.DistContext) -> torch.device | None:
    """The GPU of this rank under torchrun with CUDA (``cuda:<LOCAL_RANK>``), else ``None`` (the model's device)."""
    return ctx.device if ctx.device.type != "cpu" else None


def _check_same_data(dataset: Dataset) -> None:
    """Under torchrun: refuse on every rank when the ranks' data differ (e.g. an ids file that differs by machine)."""
    data = dataset.data
    if isinstance(data, Tensor):
        tensors = {"input_ids": data}
    elif isinstance(data, Mapping):
        tensors = {k: v for k, v in data.items() if isinstance(v, Tensor)}
    else:  # texts
        tensors = {"texts": torch.frombuffer(bytearray(json.dumps(data).encode()), dtype=torch.uint8)}
    try:
        dist_.check_same_on_every_rank(tensors, "the data")
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _shard_batches(batches: list[dict[str, Tensor]], ctx: dist_.DistContext) -> tuple[list, Any]:
    """This rank's loss batches (``r, r + W, ...``) and the process group to reduce over (``None`` alone)."""
    if ctx.world_size == 1:
        return batches, None
    if len(batches) < ctx.world_size:
        raise ConfigError(
            f"the data make {len(batches)} loss batches for {ctx.world_size} processes, and every process needs "
            "at least one: lower [analysis].batch_size, raise [data].samples, or start fewer processes"
        )
    return batches[ctx.rank :: ctx.world_size], torch.distributed.group.WORLD


def _is_communication_error(err: BaseException) -> bool:
    """A collective that timed out or lost a peer (gloo raises a plain RuntimeError naming its source file)."""
    text = str(err)
    return isinstance(err, torch.distributed.DistError) or "gloo/transport" in text or "Timed out" in text


def cmd_demo(args: argparse.Namespace) -> int:
    """``tscope demo``: train the induction model, measure its sensitivity, write results and report.

    Under ``torchrun``: rank 0 trains and broadcasts the model, every rank maps the sensitivity of its
    shard, and rank 0 alone computes the curvature (64 sequences), writes and prints.
    """
    with _process_group(args) as ctx:
        return _demo(args, ctx)


def _demo(args: argparse.Namespace, ctx: dist_.DistContext) -> int:
    from ..training import RECIPES

    out = Path(args.out)
    check_output_dir(out, "--out")
    steps = args.steps if args.steps is not None else (300 if args.quick else None)
    samples = args.samples if args.samples is not None else (32 if args.quick else 256)
    check_samples(samples, get_task("induction", **RECIPES["induction"].task_kwargs).seq_len, "--samples")
    model_cfg = ModelConfig(kind="tiny", task="induction", steps=steps, seed=args.seed)
    analysis = SensitivityConfig(
        layers=args.layers, method=args.method, probes=args.probes, batch_size=32, seed=args.seed
    )
    # Log colours: cells span orders of magnitude (the diagonal carries the residual identity path).
    output = OutputConfig(statistics=list(STATISTICS_SHOWN), log=True)
    start = time.perf_counter()
    progress = not args.no_progress and ctx.is_main
    prepared = prepare_model(model_cfg, progress, args.threads or 1)
    result = prepared.training  # None on ranks other than 0
    if ctx.is_main:
        print(
            f"trained {RECIPES['induction'].model} on induction for {len(result.losses)} steps in "
            f"{result.seconds:.1f} s: held-out accuracy {result.accuracy:.3f}"
        )
    task = prepared.task
    dataset = task_dataset(task, samples, args.seed + 1)
    _check_same_data(dataset)
    snapshot, seconds, layers = run_sensitivity(
        prepared, dataset, analysis, progress, device=_analysis_device(ctx)
    )
    if not ctx.is_main:  # rank 0 holds the same merged statistics; it alone goes on
        return 0
    # Curvature of the trained model's loss on the first sequences: extreme eigenvalues and the trace.
    n_curv = min(samples, DEMO_CURVATURE_SAMPLES)
    curvature_analysis = CurvatureConfig(
        batch_size=analysis.batch_size,
        max_seq_len=analysis.max_seq_len,
        dtype=analysis.dtype,
        seed=analysis.seed,
        density_probes=0,
        block_norms=False,
    )
    subset = Dataset(dataset.data[:n_curv], dataset.description, labels=dataset.labels[:n_curv])
    curvature = run_curvature(
        prepared.model, loss_batches(subset, curvature_analysis), curvature_analysis, not args.no_progress
    )
    report_demo(out, prepared, dataset, snapshot, seconds, layers, analysis, output, curvature, n_curv, start)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """``tscope run CONFIG``: the analysis a TOML file describes (sensitivity also under ``torchrun``)."""
    cfg = load_run_config(args.config)
    kind = cfg.analysis.kind
    if args.resume and kind not in ("sensitivity", "growth_rates"):
        raise ConfigError(f"--resume continues a sensitivity or growth_rates run from its checkpoint; kind = {kind!r} "
                          "has none")
    out = Path(args.out or cfg.output.dir or Path("results") / Path(args.config).stem)
    check_output_dir(out, "--out" if args.out else "[output].dir" if cfg.output.dir else "the output folder")
    if kind == "growth_rates" and cfg.model.kind == "growth":
        return _run_growth_rates(args, cfg, out)
    if kind == "landscape":
        check_grid(cfg.analysis.resolution)
    with _process_group(args) as ctx:
        start = time.perf_counter()
        model_cfg = cfg.model
        progress = not args.no_progress and ctx.is_main
        if args.resume:  # before the model is trained
            where = growth_checkpoint_dir(out) if kind == "growth_rates" else sensitivity_checkpoint_dir(out)
            on_every_rank("while looking for the checkpoint", lambda: check_resume_checkpoint(where))
        prepared = prepare_model(model_cfg, progress, args.threads or 1)
        if prepared.training is not None:  # trained here (under torchrun: on rank 0)
            r = prepared.training
            print(
                f"trained {'tiny model' if model_cfg.kind == 'tiny' else type(r.model).__name__} on {r.task.name} "
                f"for {len(r.losses)} steps in {r.seconds:.1f} s: "
                f"held-out accuracy {r.accuracy:.3f}"
            )
        dataset = on_every_rank("while preparing the data", lambda: prepare_data(cfg.data, model_cfg, prepared))
        check_positions(dataset.data, cfg.analysis.max_seq_len, prepared.model)
        _check_same_data(dataset)
        run = {"sensitivity": _run_sensitivity, "curvature": _run_curvature, "landscape": _run_landscape,
               "attention": _run_attention, "blocks": _run_blocks, "growth_rates": _run_model_growth_rates}[kind]
        return run(args, cfg, out, prepared, dataset, start)


def _run_growth_rates(args, cfg: RunConfig, out: Path) -> int:
    """The growth-rate experiment: fresh models per point, no training or data preparation (one process)."""
    from .growth import report_growth_rates, run_growth_rates

    if _world_size() > 1:
        raise ConfigError("kind = 'growth_rates' runs in one process; start it without torchrun")
    start = time.perf_counter()
    snapshot, seconds = run_growth_rates(cfg, not args.no_progress, growth_checkpoint_dir(out), args.resume)
    report_growth_rates(args.config, cfg, out, snapshot, seconds, start)
    return 0


def _run_model_growth_rates(args, cfg: RunConfig, out: Path, prepared: Prepared, dataset: Dataset,
                            start: float) -> int:
    """The growth-rate experiment on the configured model, on the first batch of the data (one process)."""
    from .growth import report_growth_rates, run_model_growth_rates

    check_single_process(dist_.context().world_size, "growth_rates")
    batch = loss_batches(dataset, cfg.analysis)[0]
    snapshot, seconds = run_model_growth_rates(cfg, prepared.model, batch, not args.no_progress,
                                               growth_checkpoint_dir(out), args.resume)
    report_growth_rates(args.config, cfg, out, snapshot, seconds, start)
    return 0


def _run_sensitivity(args, cfg: RunConfig, out: Path, prepared: Prepared, dataset: Dataset, start: float) -> int:
    ctx = dist_.context()
    checkpoints = sensitivity_checkpoint_dir(out) if cfg.analysis.checkpoint_every or args.resume else None
    if checkpoints is not None:  # what main() says on Ctrl-C
        args.interrupted_hint = (
            f"checkpoints are in {checkpoints}; continue with: tscope run {args.config} --out {out} --resume"
        )
    snapshot, seconds, layers = run_sensitivity(
        prepared,
        dataset,
        cfg.analysis,
        not args.no_progress and ctx.is_main,
        checkpoint_dir=checkpoints,
        resume=args.resume,
        device=_analysis_device(ctx),
    )
    if not ctx.is_main:  # rank 0 holds the same merged statistics and writes them
        return 0
    report_sensitivity(args.config, cfg, out, prepared, dataset, snapshot, seconds, layers, start)
    return 0


def _run_curvature(args, cfg: RunConfig, out: Path, prepared: Prepared, dataset: Dataset, start: float) -> int:
    batches = loss_batches(dataset, cfg.analysis)
    ctx = dist_.context()
    mine, group = _shard_batches(batches, ctx)
    if _analysis_device(ctx) is not None:  # under torchrun with CUDA: this rank's GPU
        prepared.model.to(_analysis_device(ctx))
    result = run_curvature(prepared.model, mine, cfg.analysis, not args.no_progress and ctx.is_main, group)
    if not ctx.is_main:  # every rank holds the same result; rank 0 writes it
        return 0
    report_curvature(args.config, cfg, out, prepared, dataset, batches, result, start)
    return 0


def _run_blocks(args, cfg: RunConfig, out: Path, prepared: Prepared, dataset: Dataset, start: float) -> int:
    ctx = dist_.context()
    check_single_process(ctx.world_size)
    batches = loss_batches(dataset, cfg.analysis)
    if _analysis_device(ctx) is not None:
        prepared.model.to(_analysis_device(ctx))
    result = run_blocks(prepared.model, batches, cfg.analysis, not args.no_progress)
    report_blocks(args.config, cfg, out, prepared, dataset, batches, result, start)
    return 0


def _run_landscape(args, cfg: RunConfig, out: Path, prepared: Prepared, dataset: Dataset, start: float) -> int:
    batches = loss_batches(dataset, cfg.analysis)
    ctx = dist_.context()
    mine, group = _shard_batches(batches, ctx)
    if _analysis_device(ctx) is not None:
        prepared.model.to(_analysis_device(ctx))
    result = run_landscape(prepared.model, mine, cfg.analysis, not args.no_progress and ctx.is_main, group)
    if not ctx.is_main:  # every rank holds the same result; rank 0 writes it
        return 0
    report_landscape(args.config, cfg, out, prepared, dataset, batches, result, start)
    return 0

def _run_attention(args, cfg: RunConfig, out: Path, prepared: Prepared, dataset: Dataset, start: float) -> int:
    ctx = dist_.context()
    if ctx.world_size > 1:
        raise ConfigError("kind = 'attention' runs in one process; start it without torchrun")
    result = run_attention(prepared, dataset, cfg.analysis, not args.no_progress)
    report_attention(args.config, cfg, out, prepared, dataset, result, start)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``tscope`` argument parser: ``--version`` and one subcommand per command (``demo``, ``run``, ...)."""
    parser = argparse.ArgumentParser(
        prog="tscope", description="Look inside transformers through their derivatives."
    )
    parser.add_argument("--version", action="version", version=f"tscope_widgets {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train a tiny induction model and map its sensitivity")
    demo.add_argument("--out", default="results/demo", help="output folder (default: results/demo)")
    demo.add_argument(
        "--samples", type=int, default=None, help="sequences analysed (default 256; --quick: 32)"
    )
    demo.add_argument(
        "--steps", type=int, default=None, help="training steps (default: the recipe's; --quick: 300)"
    )
    demo.add_argument("--layers", default="all", help="'all' (every block and final) or e.g. '0,1,final'")
    demo.add_argument("--method", default="exact", choices=("exact", "hutchinson", "full"))
    demo.add_argument("--probes", type=int, default=8, help="Hutchinson probes per position")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quick", action="store_true", help="a short run (for tests): fewer steps and samples")
    demo.set_defaults(func=cmd_demo)

    run = sub.add_parser("run", help="run the analysis a TOML file describes (see examples/)")
    run.add_argument("config", help="TOML configuration file")
    run.add_argument(
        "--out", default=None, help="output folder (default: [output].dir or results/<config name>)"
    )
    run.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    run.set_defaults(func=cmd_run)

    add_compare_parser(sub)
    add_sweep_parser(sub)

    for p in (demo, run):
        p.add_argument(
            "--threads",
            type=int,
            default=None,
            help="torch threads (default: torch's; 1 is fastest for tiny models on a busy machine)",
        )
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        p.add_argument(
            "--dist-timeout",
            type=float,
            default=DEFAULT_DIST_TIMEOUT_S,
            metavar="SECONDS",
            help="under torchrun: how long a process waits for the others at a collective step (the merge "
            "waits for the slowest shard) before it gives up with an error instead of hanging "
            f"(default {DEFAULT_DIST_TIMEOUT_S})",
        )
    return parser

def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tscope`` command; returns the exit status (0 ok, 2 configuration error, 130 Ctrl-C:
    one line saying where the checkpoint is and how to resume, no traceback)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("samples", "steps", "probes", "threads"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            parser.error(f"--{name} must be >= 1, got {value}")
    dist_timeout = getattr(args, "dist_timeout", DEFAULT_DIST_TIMEOUT_S)  # `compare` starts no processes
    if not (math.isfinite(dist_timeout) and dist_timeout > 0):
        parser.error(f"--dist-timeout must be a positive number of seconds, got {args.dist_timeout}")
    threads_before = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rank = _env_rank()
    try:
        return args.func(args)
    except dist_.RankFailure as err:
        # Every rank raises it alike; rank 0 says it once. A rank's own unexpected error keeps its traceback.
        own = err.__cause__
        if own is not None and not isinstance(own, ConfigError):
            traceback.print_exception(type(own), own, own.__traceback__)
        if rank == 0:
            print(f"tscope: error: {err}", file=sys.stderr)
        return 2 if all(m.startswith("ConfigError: ") for m in err.failures.values()) else 1
    except ConfigError as err:
        print(f"tscope: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = getattr(args, "interrupted_hint", None) or (
            "no checkpoint was written (set [analysis].checkpoint_every = N in a sensitivity run to resume one)"
        )
        print(f"tscope: interrupted; {hint}", file=sys.stderr)
        return 130
    except RuntimeError as err:
        if _world_size() <= 1 or not _is_communication_error(err):
            raise
        print(
            f"tscope: error: rank {rank} of {_world_size()}: waiting for the other processes failed: "
            f"{str(err).splitlines()[0]}. Another process stopped (its own error is in its output) or fell "
            f"more than --dist-timeout {dist_timeout:g} s behind.",
            file=sys.stderr,
        )
        return 1
    finally:
        torch.set_num_threads(threads_before)
