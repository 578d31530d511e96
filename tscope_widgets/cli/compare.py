r"""``tscope compare RUN_A RUN_B``: where two sensitivity runs differ, cell by cell, with FDR control.

Reads two folders written by ``tscope run`` (``[analysis] kind = "sensitivity"``) or ``tscope demo``
(:func:`~tscope_widgets.export.load_statistics`: safetensors and JSON, nothing pickled), checks that they hold
the same layers with the same cell grids, and tests every cell of every layer:

- by default Welch's t-test on the two runs' Welford statistics
  (:func:`~tscope_widgets.kernels.compare.compare_statistics`);
- with ``--paired``, when both runs saw the same samples (equal ``data_sha256`` in their ``meta.json``), the
  paired t-test on per-sample differences (:func:`~tscope_widgets.kernels.compare.paired_statistics`). Those
  are not in the results files, so both runs' models are rebuilt from their folders and configurations
  (a tiny model from the ``model.safetensors`` the run saved; a Hugging Face model as its config says) and
  run again on the data of run A (:func:`~tscope_widgets.kernels.sensitivity.iter_paired_sensitivity`);
  the command refuses when the rebuilt models or data do not match the runs' fingerprints.

The q-values are Benjamini–Hochberg over the tested cells of all layers together. Writes to ``--out``:
``comparison.safetensors`` (each field of :class:`~tscope_widgets.kernels.compare.Comparison` as
``[L, S, S]``) with ``meta.json`` (:func:`~tscope_widgets.export.save_results`), and ``report.html``
(:mod:`tscope_widgets.figures.compare`). Exit status 2 with ``tscope: error:`` when the runs cannot be compared.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..kernels.compare import Comparison, compare_statistics, paired_statistics
from .compare_paired import stacked
from .config import ConfigError

RESULTS_NAME = "comparison"
_RUN_KIND = 'folders written by `tscope run` with [analysis] kind = "sensitivity" (or by `tscope demo`)'


def load_run(path: Path, which: str) -> tuple[Any, dict]:
    """``(stats, meta)`` of a sensitivity results folder; :class:`ConfigError` naming ``which`` run otherwise."""
    from ..export.results import load_statistics

    try:
        return load_statistics(path)
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"{which} {path}: {err}. tscope compare reads two {_RUN_KIND}") from None


def check_comparable(stats_a, stats_b, a: Path, b: Path) -> None:
    """The same layers, each with the same cell grid; :class:`ConfigError` saying what differs."""
    if list(stats_a) != list(stats_b):
        raise ConfigError(
            f"the runs hold different layers: {a} has {list(stats_a)}, {b} has {list(stats_b)}; compare runs made "
            "with the same [analysis].layers"
        )
    for layer in stats_a:
        sa, sb = stats_a[layer].shape, stats_b[layer].shape
        if sa != sb:
            raise ConfigError(
                f"layer {layer!r} has cells {list(sa)} in {a} but {list(sb)} in {b}: the runs' sequence lengths "
                "differ; compare runs whose data have the same length (or the same [analysis].max_seq_len)"
            )


def data_fingerprint(meta: dict) -> str | None:
    """The sha256 of the samples a run read (``meta["fingerprint"]["data_sha256"]``), or None."""
    fp = meta.get("fingerprint")
    value = fp.get("data_sha256") if isinstance(fp, dict) else None
    return value if isinstance(value, str) and value else None


def cmd_compare(args: argparse.Namespace) -> int:
    """``tscope compare RUN_A RUN_B``: test every cell, write the comparison and its report, print a summary."""
    a, b = Path(args.run_a), Path(args.run_b)
    if not 0 < args.alpha < 1:
        raise ConfigError(f"--alpha must be in (0, 1), e.g. 0.05; got {args.alpha:g}")
    out = Path(args.out) if args.out else Path("results") / f"compare_{a.name}_vs_{b.name}"
    stats_a, meta_a = load_run(a, "RUN_A")
    stats_b, meta_b = load_run(b, "RUN_B")
    check_comparable(stats_a, stats_b, a, b)
    layers = list(stats_a)
    fp_a, fp_b = data_fingerprint(meta_a), data_fingerprint(meta_b)
    same_data = fp_a is not None and fp_a == fp_b and meta_a.get("samples") == meta_b.get("samples")
    if args.paired:
        if not same_data:
            raise ConfigError(
                f"--paired needs both runs on the same samples, but their data differ (sha256 {str(fp_a)[:12]}… in "
                f"{a}, {str(fp_b)[:12]}… in {b}); leave out --paired for Welch's test of independent samples"
            )
        from .compare_paired import paired_differences  # imports the kernels' sensitivity stream

        diff, run_a, run_b = paired_differences(a, b, meta_a, meta_b, layers, not args.no_progress)
        comparison = paired_statistics(diff, alpha=args.alpha, a=run_a, b=run_b)
    else:
        comparison = compare_statistics(stacked(stats_a, layers), stacked(stats_b, layers), alpha=args.alpha)
        if same_data:
            print(
                "note: both runs read the same samples (equal data sha256); `--paired` tests the per-sample "
                "differences, which finds much smaller differences (it runs both models again on those samples)."
            )
    paths = write_comparison(out, comparison, layers, a, b, meta_a, same_data)
    print("wrote:")
    for what, path in paths.items():
        print(f"  {what:<11} {path}")
    print(summary(comparison, layers))
    return 0


def summary(comparison: Comparison, layers: list) -> str:
    """One sentence per layer: significant cells of the tested ones, and the largest difference."""
    test = "paired t-test" if comparison.paired else "Welch's t-test"
    fix = {"fdr_bh": "Benjamini–Hochberg", "bonferroni": "Bonferroni", None: "no correction"}[comparison.correction]
    parts = []
    for k, layer in enumerate(layers):
        sig, valid = comparison.significant[k], comparison.valid[k]
        diff = comparison.difference[k].nan_to_num(0.0).abs()
        parts.append(f"layer {layer}: {int(sig.sum())} of {int(valid.sum())} cells (largest |a − b| "
                     f"{diff.max().item():.4g})")
    return (f"{test}, {fix} at q < {comparison.alpha:g} over {comparison.num_tests} cells: "
            f"{comparison.num_significant} differ. " + "; ".join(parts) + ".")


def write_comparison(
    out: Path, comparison: Comparison, layers: list, a: Path, b: Path, meta_a: dict, same_data: bool
) -> dict[str, Path]:
    """``comparison.safetensors`` + ``meta.json`` (through the atomic writer) and ``report.html``."""
    from ..export.html import save_report
    from ..export.results import save_results
    from ..figures.compare import comparison_figures

    tensors = comparison.tensors()
    S = comparison.shape[-1]
    labels = meta_a.get("token_labels")
    labels = [str(t) for t in labels] if isinstance(labels, list) and len(labels) == S else None
    meta = {
        "command": f"tscope compare {a} {b}",
        "runs": {"a": str(a), "b": str(b)},
        "layers": layers,
        "test": "paired" if comparison.paired else "welch",
        **comparison.meta(),
        "same_data": same_data,
        "token_labels": labels,
        "quantity": "difference of mean s_ij = ||d h_i / d e_j||_F^2, run a minus run b, per layer [L, S, S]",
    }
    paths = {"results": save_results(out, RESULTS_NAME, tensors, meta), "meta": out / "meta.json"}
    test = "paired t-test on per-sample differences" if comparison.paired else "Welch's t-test"
    notes = [
        f"a = {a}, b = {b}. {summary(comparison, layers)}",
        f"Left: mean of a minus mean of b per cell (blue: a smaller, red: a larger; {test}); cells with "
        f"Benjamini–Hochberg q ≥ {comparison.alpha:g} over all layers' cells are faded, untested cells (fewer than "
        "2 values on a side) grey. Right: both mean maps on one logarithmic colour scale.",
    ]
    fields = {k: tensors[k] for k in ("difference", "significant", "mean_a", "mean_b")}
    figure = comparison_figures(fields, layers, token_labels=labels)
    paths["report"] = save_report(out / "report.html", figure, title=f"tscope compare: {a.name} vs {b.name}",
                                  notes=notes)
    return paths


def add_parser(sub) -> argparse.ArgumentParser:
    """The ``compare`` subcommand's parser."""
    p = sub.add_parser("compare", help="test where two sensitivity runs differ, cell by cell")
    p.add_argument("run_a", metavar="RUN_A", help="results folder of `tscope run` (sensitivity)")
    p.add_argument("run_b", metavar="RUN_B", help="another such folder, with the same layers and sequence length")
    p.add_argument("--alpha", type=float, default=0.05, help="false discovery rate (Benjamini–Hochberg), default 0.05")
    p.add_argument("--paired", action="store_true",
                   help="paired test when both runs read the same samples (runs both models again)")
    p.add_argument("--out", default=None, help="output folder (default: results/compare_<A>_vs_<B>)")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_compare)
    return p


__all__ = ["add_parser", "check_comparable", "cmd_compare", "load_run", "stacked", "write_comparison"]
