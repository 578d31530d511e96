"""``tscope sweep SWEEP.toml``: one ``tscope run`` per point of a grid, a table of summaries, a scaling report.

A sweep file is a run configuration plus ``[sweep]`` axes (:mod:`.sweep_config`). For every point the sweep
prepares the model once (a tiny model is trained and saved in ``OUT/points/<point>/model``), prepares the data,
and runs each analysis of ``[sweep].analyses`` with the runners and reports of ``tscope run``
(:mod:`.runs`, :mod:`.reports`), writing ``OUT/points/<point>/<analysis>/`` as ``tscope run`` would (its
printed lines go to ``log.txt`` there). The summaries (:mod:`.sweep_rows`) of every finished point make one
row of ``OUT/table.csv`` and ``OUT/table.json``, rewritten after each point; at the end
``OUT/scaling_report.html`` and ``OUT/fits.json`` hold the power-law fits (:mod:`.sweep_report`).

Resuming: a point writes ``point.json`` (its configuration's digest) first, each analysis writes
``summary.json`` when its results are written, and the point writes ``done.json`` (its row) last. A re-run
skips finished points and analyses, reloads the saved model instead of training again, and continues a
sensitivity analysis from its checkpoint (``[analysis].checkpoint_every``). A point whose configuration
changed since it was started is refused, naming its folder. The rows of a resumed sweep equal those of an
uninterrupted one (the table holds no timings; ``done.json`` does).

Under ``torchrun`` the points are dealt out, point ``i`` to rank ``i mod W`` (each rank runs its points in
one process; a point is never run twice), and rank 0 writes the table and report once every rank is done.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .._atomic import write_text
from ..figures.sweep import SweepTable
from .config import ConfigError, RunConfig
from .limits import check_grid, check_output_dir, check_positions
from .sweep_config import SweepConfig, SweepPoint, load_sweep
from .sweep_rows import (
    SUMMARY_DOCS,
    attention_summaries,
    curvature_summaries,
    landscape_summaries,
    model_summaries,
    sensitivity_summaries,
)

DONE = "done.json"  # written last in a point's folder: the point is finished
SUMMARY = "summary.json"  # written last in an analysis folder: the analysis is finished
POINT = "point.json"  # written first in a point's folder: the configuration its files belong to


def add_parser(sub) -> None:
    """Add ``tscope sweep`` to the subcommands."""
    p = sub.add_parser("sweep", help="run a grid of analyses over model/data sizes, seeds, ... (see examples/)")
    p.add_argument("config", help="sweep TOML file: a run configuration plus [sweep] axes")
    p.add_argument("--out", default=None, help="output folder (default: [output].dir or results/<sweep name>)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-report", action="store_true", help="write the table but not the scaling report")
    p.add_argument("--dist-timeout", type=float, default=1800.0, metavar="SECONDS",
                   help="under torchrun: how long rank 0 waits for the other ranks' points at the end")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    """``tscope sweep SWEEP.toml``: run every point not finished yet, then write the table and the report."""
    sweep = load_sweep(args.config)
    out = Path(args.out or sweep.output_dir or Path("results") / Path(args.config).stem)
    check_output_dir(out, "--out" if args.out else "[output].dir" if sweep.output_dir else "the output folder")
    for point in sweep.points:
        landscape = point.runs.get("landscape")
        if landscape is not None:
            check_grid(landscape.analysis.resolution)
    args.interrupted_hint = (  # what main() says on Ctrl-C
        f"finished points and analyses are kept in {out}; run the same command again to continue the sweep"
    )
    rank, world = _env_rank_world()
    mine = [p for i, p in enumerate(sweep.points) if i % world == rank]
    after = None if world > 1 else (lambda: write_table(out, sweep, collect_rows(sweep, out)))
    run_points(sweep, mine, out, progress=not args.no_progress, threads=args.threads,
               label=f"rank {rank} of {world}: " if world > 1 else "", after_point=after)
    if world > 1:
        _wait_for_ranks(args.dist_timeout)
        if rank != 0:
            return 0
    rows = collect_rows(sweep, out)
    path = write_table(out, sweep, rows)
    print(f"table: {path} ({len(rows)} of {len(sweep.points)} points)")
    if not args.no_report:
        from .sweep_report import write_scaling_report

        for p in write_scaling_report(out, sweep, rows):
            print(f"report: {p}")
    return 0


def _env_rank_world() -> tuple[int, int]:
    """This process's rank and the world size from torchrun's environment (0, 1 without it)."""
    try:
        return int(os.environ.get("RANK", "0")), max(int(os.environ.get("WORLD_SIZE", "1")), 1)
    except ValueError:
        raise ConfigError("torchrun environment: RANK and WORLD_SIZE must be integers") from None


def _wait_for_ranks(timeout: float) -> None:
    """Join torchrun's process group after the points and wait for every rank (a barrier), then leave it."""
    import torch

    from .. import distributed as dist_

    try:
        dist_.init_from_env(device="cpu", timeout=timeout)  # gloo: a barrier needs no GPU
    except ValueError as err:
        raise ConfigError(f"torchrun environment: {err}") from None
    try:
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


def run_points(sweep: SweepConfig, points: list[SweepPoint], out: Path, *, progress: bool, threads: int | None,
               label: str = "", after_point: Callable[[], Any] | None = None) -> None:
    """Run the points not finished yet, with one progress bar (and ETA) over all of ``points``; call
    ``after_point`` after each (the table is rewritten there, so a killed sweep leaves the finished rows)."""
    todo = [p for p in points if not _finished(out, p)]
    skipped = len(points) - len(todo)
    if skipped and progress:
        print(f"sweep: {label}{skipped} of {len(points)} points already finished; skipping them", file=sys.stderr)
    spent: list[float] = []
    with tqdm(total=len(points), initial=skipped, desc=f"{label}sweep", unit="point", disable=not progress) as bar:
        for point in todo:
            start = time.perf_counter()
            bar.set_postfix_str(point.name)
            run_point(sweep, point, out / "points" / point.name, threads=threads)
            spent.append(time.perf_counter() - start)
            bar.update(1)
            if after_point is not None:
                after_point()
            if progress:
                left = len(todo) - len(spent)
                eta = sum(spent) / len(spent) * left
                tqdm.write(f"sweep: {label}{point.name} done in {spent[-1]:.1f} s; {left} left, ETA {eta:.0f} s",
                           file=sys.stderr)


def iter_sweep_tables(config: str | os.PathLike | SweepConfig, out: str | os.PathLike, *,
                      threads: int | None = None) -> Iterator[SweepTable]:
    """Run a sweep point by point in this process, as ``tscope sweep`` does without torchrun, and yield its table.

    Finished points are kept (resume), ``table.csv``/``table.json`` are rewritten after each point; the scaling
    report is not written (``tscope sweep`` writes it). Feeds :class:`~tscope_widgets.widgets.SweepWidget`:
    ``SweepWidget(lambda: iter_sweep_tables("sweep.toml", "results/sweep"), summary="lambda_max")``.

    Args:
        config: A sweep file (TOML) or a loaded :class:`SweepConfig`.
        out: The output folder.
        threads: Torch threads of the points' runs (None: torch's).

    Yields:
        A :class:`~tscope_widgets.figures.sweep.SweepTable` of the finished points (``done`` of ``total``
        points): once at the start, then after each point run here.

    Raises:
        ConfigError: For a bad sweep file or output folder (the message names the key or the folder).
    """
    sweep = config if isinstance(config, SweepConfig) else load_sweep(config)
    out = Path(out)
    check_output_dir(out, "out")
    for point in sweep.points:
        landscape = point.runs.get("landscape")
        if landscape is not None:
            check_grid(landscape.analysis.resolution)

    def table(rows: list[dict[str, Any]]) -> SweepTable:
        return SweepTable(tuple(rows), tuple(sweep.axes), tuple(sweep.seed_axes), len(rows), len(sweep.points))

    yield table(collect_rows(sweep, out))
    for point in sweep.points:
        if _finished(out, point):
            continue
        run_point(sweep, point, out / "points" / point.name, threads=threads)
        rows = collect_rows(sweep, out)
        write_table(out, sweep, rows)
        yield table(rows)


def _finished(out: Path, point: SweepPoint) -> bool:
    """Whether ``point`` is finished in ``out`` (refusing a folder written for another configuration)."""
    done = out / "points" / point.name / DONE
    if not done.is_file():
        return False
    record = _read_record(done)
    if record.get("digest") != point.digest:
        raise ConfigError(
            f"{done.parent}: this point was finished with another configuration than the sweep file gives now; "
            "give a new --out for the changed sweep, or delete that folder to run the point again"
        )
    return True


def _read_record(path: Path) -> dict:
    from ..files import read_json

    try:
        return read_json(path, what="a sweep record written by tscope sweep",
                         fix=f"delete {path.parent} to run that part of the sweep again")
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _json_number(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _write_record(path: Path, record: dict) -> None:
    clean = {k: ({kk: _json_number(vv) for kk, vv in v.items()} if isinstance(v, dict) else _json_number(v))
             for k, v in record.items()}
    write_text(path, json.dumps(clean, indent=1, allow_nan=False, default=str))


def point_device():
    """Where a point's Hugging Face model is trained and analysed: this process's GPU (``cuda:<LOCAL_RANK>``
    under torchrun, ``cuda:0`` otherwise) when CUDA is available, else ``None`` (the CPU, where it is built)."""
    import torch

    if not torch.cuda.is_available():
        return None
    local_rank = os.environ.get("LOCAL_RANK", "0")
    return torch.device("cuda", int(local_rank) if local_rank.isdigit() else 0)


def run_point(sweep: SweepConfig, point: SweepPoint, folder: Path, threads: int | None) -> dict[str, Any]:
    """Prepare one point's model and data, run (or reuse) each of its analyses, write ``done.json``; its row."""
    from ..training import MODEL_WEIGHTS
    from .prepare import prepare_data, prepare_model

    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / POINT
    if marker.is_file():  # a point started before: resume it only with the same configuration
        if _read_record(marker).get("digest") != point.digest:
            raise ConfigError(
                f"{folder}: this point was started with another configuration than the sweep file gives now (its "
                "saved model and checkpoints belong to that one); give a new --out for the changed sweep, or "
                "delete that folder to run the point again"
            )
    else:
        _write_record(marker, {"digest": point.digest, "values": point.values})
    first = next(iter(point.runs.values()))
    model_cfg, model_dir = first.model, folder / "model"
    saved = (model_dir / MODEL_WEIGHTS).is_file() and (model_dir / "model.json").is_file()
    device = point_device()
    if model_cfg.kind == "tiny" and model_cfg.path is None and saved:  # resuming: the model this point trained
        load = replace(model_cfg, path=str(model_dir), steps=None, lr=None, task_kwargs=None, tiny_config=None)
        prepared = prepare_model(load, False, threads, device)
    else:
        prepared = prepare_model(model_cfg, False, threads, device)
        if prepared.training is not None:
            prepared.save(model_dir)
    dataset = prepare_data(first.data, model_cfg, prepared)
    row: dict[str, Any] = {"point": point.name, **point.values, **model_summaries(prepared.model, prepared.description)}
    seconds: dict[str, float] = {}
    for kind, cfg in point.runs.items():
        start = time.perf_counter()
        row.update(_run_analysis(sweep, point, kind, cfg, folder / kind, prepared, dataset))
        seconds[kind] = round(time.perf_counter() - start, 3)
    rank = os.environ.get("RANK", "0")  # under torchrun: the rank that ran the point
    _write_record(folder / DONE, {"digest": point.digest, "values": point.values, "row": row, "seconds": seconds,
                                  "rank": int(rank) if rank.isdigit() else 0})
    return row


def _run_analysis(sweep: SweepConfig, point: SweepPoint, kind: str, cfg: RunConfig, folder: Path, prepared,
                  dataset) -> dict[str, float]:
    """One analysis of a point, as ``tscope run`` runs and writes it (or its ``summary.json`` when finished)."""
    from .attention import report_attention, run_attention
    from .reports import report_curvature, report_landscape, report_sensitivity
    from .runs import loss_batches, run_curvature, run_landscape, run_sensitivity

    done = folder / SUMMARY
    if done.is_file():
        record = _read_record(done)
        if record.get("digest") == point.digest:
            return {k: math.nan if v is None else v for k, v in record["summaries"].items()}
    folder.mkdir(parents=True, exist_ok=True)
    check_positions(dataset.data, cfg.analysis.max_seq_len, prepared.model)
    config = str(sweep.path)
    start = time.perf_counter()
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        if kind == "sensitivity":
            checkpoints = folder / "checkpoint" if cfg.analysis.checkpoint_every else None
            resume = checkpoints is not None and (checkpoints / "meta.json").is_file()
            snapshot, seconds, layers = run_sensitivity(prepared, dataset, cfg.analysis, False,
                                                        checkpoint_dir=checkpoints, resume=resume)
            report_sensitivity(config, cfg, folder, prepared, dataset, snapshot, seconds, layers, start)
            summaries = sensitivity_summaries(snapshot.stats, layers, dataset.description)
        elif kind == "curvature":
            batches = loss_batches(dataset, cfg.analysis)
            result = run_curvature(prepared.model, batches, cfg.analysis, False)
            report_curvature(config, cfg, folder, prepared, dataset, batches, result, start)
            summaries = curvature_summaries(result, cfg.analysis.k)
        elif kind == "attention":
            result = run_attention(prepared, dataset, cfg.analysis, False)
            report_attention(config, cfg, folder, prepared, dataset, result, start)
            summaries = attention_summaries(result)
        else:  # landscape
            batches = loss_batches(dataset, cfg.analysis)
            result = run_landscape(prepared.model, batches, cfg.analysis, False)
            report_landscape(config, cfg, folder, prepared, dataset, batches, result, start)
            summaries = landscape_summaries(result)
    write_text(folder / "log.txt", log.getvalue())
    _write_record(done, {"digest": point.digest, "summaries": summaries})
    return summaries


def collect_rows(sweep: SweepConfig, out: Path) -> list[dict[str, Any]]:
    """The rows of the finished points, in the sweep's order (from their ``done.json``)."""
    rows = []
    for point in sweep.points:
        if _finished(out, point):
            row = _read_record(out / "points" / point.name / DONE)["row"]
            rows.append({k: math.nan if v is None else v for k, v in row.items()})
    return rows


def table_columns(sweep: SweepConfig, rows: list[dict[str, Any]]) -> list[str]:
    """``point``, the axes, then the summaries in :data:`SUMMARY_DOCS` order (those any row has)."""
    present = {k for r in rows for k in r}
    return ["point", *sweep.axes, *(k for k in SUMMARY_DOCS if k in present)]


def write_table(out: Path, sweep: SweepConfig, rows: list[dict[str, Any]]) -> Path:
    """Write ``table.csv`` (``nan`` for missing values) and ``table.json`` (``null``); return the CSV's path."""
    columns = table_columns(sweep, rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for r in rows:
        writer.writerow([_csv_value(r.get(c, math.nan)) for c in columns])
    path = write_text(out / "table.csv", buffer.getvalue())
    document = {
        "command": f"tscope sweep {sweep.path.name}",
        "axes": sweep.axes,
        "seed_axes": list(sweep.seed_axes),
        "analyses": list(sweep.analyses),
        "columns": columns,
        "definitions": {k: SUMMARY_DOCS[k] for k in columns if k in SUMMARY_DOCS},
        "points": len(sweep.points),
        "rows": [{c: _json_number(r.get(c, math.nan)) for c in columns} for r in rows],
    }
    write_text(out / "table.json", json.dumps(document, indent=1, allow_nan=False, default=str))
    return path


def _csv_value(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return value if isinstance(value, str) else json.dumps(value)
