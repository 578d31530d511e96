"""Checked conversions of the values :class:`~.sensitivity.SensitivityExplorer` receives, as pure functions.

Values from the browser are untrusted: the view state the page may set (``layer``, ``statistic``,
``selected_cell``, ``view``, ``log_scale``, ``colormap``, ``color_percentiles``, ``color_limits``,
``sample``) is checked
against what the explorer offers (:func:`check_view_state`). So are the
constructor's pass-through options (:func:`check_kernel_options`),
token labels (:func:`check_token_labels`, :func:`fit_labels`) and the statistics asked of an export
(:func:`check_statistics`). :func:`cell_detail` reads one cell of a snapshot into what the page draws,
:func:`sample_detail` one reservoir sample's map with its tokens (:func:`decode_tokens`).
Nothing here holds state, draws or computes.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from ..data import first_batch
from ..figures.charts import COLORMAPS
from ..figures.sensitivity import STAT_TITLES
from ..kernels.sensitivity import iter_sensitivity
from ._values import Check, choice, flag, is_finite, is_int

__all__ = [
    "STATISTICS",
    "STATISTICS_TITLES",
    "VIEWS",
    "BROWSER_TRAITS",
    "KERNEL_OPTIONS",
    "check_kernel_options",
    "check_data",
    "check_token_labels",
    "fit_labels",
    "check_statistics",
    "check_layer",
    "check_log_scale",
    "check_color_percentiles",
    "check_color_limits",
    "check_colormap",
    "check_color_options",
    "check_view_state",
    "cell_detail",
    "sample_detail",
    "decode_tokens",
]

STATISTICS = ("mean", "std", "sem", "cv", "min", "max", "count")
STATISTICS_TITLES = {s: STAT_TITLES[s] for s in STATISTICS}
VIEWS = ("matrix", "offset")
BROWSER_TRAITS = (
    "layer",
    "statistic",
    "selected_cell",
    "view",
    "log_scale",
    "colormap",
    "color_percentiles",
    "color_limits",
    "sample",
)
LOG_SCALES = ("auto", True, False)  # "auto": log where the values span decades (figures.charts.auto_log)

# Keyword arguments of iter_sensitivity a user may pass through **kernel_kwargs (the rest are the
# explorer's own arguments).
KERNEL_OPTIONS = frozenset(inspect.signature(iter_sensitivity).parameters) - {
    "adapter",
    "data",
    "layers",
    "method",
    "batch_size",
    "max_seq_len",
    "tokenizer",
    "resume",
}


def check_kernel_options(kernel_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The extra keyword arguments for ``iter_sensitivity`` (their values are checked by the kernel).

    Raises:
        TypeError: For a name that is not one of :data:`KERNEL_OPTIONS`.
    """
    unknown = sorted(set(kernel_kwargs) - KERNEL_OPTIONS)
    if unknown:
        raise TypeError(
            f"unknown keyword arguments {unknown}; SensitivityExplorer passes on only "
            f"{sorted(KERNEL_OPTIONS)} to iter_sensitivity"
        )
    return dict(kernel_kwargs)


def check_data(adapter: Any, data: Any, batch_size: int, max_seq_len: int | None, tokenizer: Any) -> None:
    """Refuse data the job would fail on, before it starts: ids that are not integers, ids outside the
    model's vocabulary, a mask of another shape or with values other than 0/1 (every id of a tensor; the
    first batch of a list of strings, a ``DataLoader`` or a list of batches; nothing of a one-shot iterator).

    Raises:
        TypeError: For ids that are not an integer tensor, naming the dtype and what to pass.
        ValueError: For ids outside ``[0, vocab_size)`` or a bad mask, naming the values found.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        return  # iter_sensitivity names the problem
    batch = first_batch(data, batch_size, max_seq_len, tokenizer)
    if batch is None:
        return
    ids, mask = batch
    try:
        adapter.check_inputs(ids, mask)
    except TypeError as err:
        raise TypeError(f"data: {err}; pass token ids as an integer tensor (e.g. ids.long())") from None
    except ValueError as err:
        raise ValueError(f"data: {err}; check the tokenizer or the ids against the model's vocabulary") from None


def check_token_labels(token_labels: Any) -> list[str] | None:
    """``token_labels`` as a list of strings (one per position), or None.

    Raises:
        TypeError: For a string, a non-iterable or labels that are not strings.
    """
    if token_labels is None:
        return None
    why = "token_labels must be a sequence of strings, one per position"
    if isinstance(token_labels, (str, bytes, Mapping)) or not isinstance(token_labels, Iterable):
        raise TypeError(why)
    labels = list(token_labels)
    if not all(isinstance(t, str) for t in labels):
        raise TypeError(why)
    return [str(t) for t in labels]


def fit_labels(labels: Sequence[str], S: int) -> list[str]:
    """``labels`` cut or padded with blanks to ``S`` positions."""
    return (list(labels) + [""] * S)[:S]


def check_statistics(statistics: str | Sequence[str] | None, current: str) -> list[str]:
    """The statistics an export asks for: None (the one shown, ``current``), a name or a list of names.

    Raises:
        ValueError: For an empty list or a name that is not one of :data:`STATISTICS`.
    """
    if statistics is None:
        names = [current]
    elif isinstance(statistics, str):
        names = [statistics]
    else:
        names = list(statistics)
    bad = [s for s in names if not isinstance(s, str) or s not in STATISTICS]
    if bad or not names:
        raise ValueError(f"unknown statistics {bad or names}; choose from {list(STATISTICS)}")
    return names


def check_layer(value: Any, layers: Sequence, num_layers: int) -> Check:
    """One of the analysed ``layers`` (an index, negative from the end of ``num_layers``, or a label)."""
    options = list(layers)
    if is_int(value):
        value = int(value)
        if value < 0:
            value += num_layers
    if (is_int(value) or isinstance(value, str)) and value in options:
        return True, value, ""
    return False, None, f"not one of the analysed layers {options}"


def check_log_scale(value: Any) -> Check:
    """``"auto"``, True or False."""
    if isinstance(value, str):
        return (True, value, "") if value == "auto" else (False, None, "must be true, false or 'auto'")
    ok, canonical, _ = flag(value)
    return (True, canonical, "") if ok else (False, None, "must be true, false or 'auto'")


def check_colormap(value: Any) -> Check:
    """One of :data:`~tscope_widgets.figures.charts.COLORMAPS`."""
    return choice(value, COLORMAPS)


def check_color_percentiles(value: Any) -> Check:
    """None (the full range) or ``[p_lo, p_hi]`` with ``0 <= p_lo < p_hi <= 100``."""
    if value is None:
        return True, None, ""
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(is_finite(p) for p in value):
        lo, hi = float(value[0]), float(value[1])
        if 0 <= lo < hi <= 100:
            return True, [lo, hi], ""
    return False, None, "must be null or [low, high] percentiles with 0 <= low < high <= 100"


def check_color_limits(value: Any) -> Check:
    """None or ``[lo, hi]`` colour limits (finite numbers or null for the data's end; ``lo < hi``)."""
    if value is None:
        return True, None, ""
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(v is None or is_finite(v) for v in value):
        lo, hi = (None if v is None else float(v) for v in value)
        if lo is None or hi is None or lo < hi:
            return True, [lo, hi], ""
    return False, None, "must be null or [low, high] numbers (null: the data's end) with low < high"


def check_color_options(**options: Any) -> dict[str, Any]:
    """The constructor's colour options (``log_scale``, ``colormap``, ``color_percentiles``, ``color_limits``)
    in canonical form.

    Raises:
        ValueError: For a value the matching view-state check refuses, naming the option and the rule.
    """
    checks = {
        "log_scale": check_log_scale,
        "colormap": check_colormap,
        "color_percentiles": check_color_percentiles,
        "color_limits": check_color_limits,
    }
    out = {}
    for name, value in options.items():
        ok, canonical, why = checks[name](value)
        if not ok:
            raise ValueError(f"{name}={value!r}: {why}")
        out[name] = canonical
    return out


def check_view_state(name: str, value: Any, *, layers: Sequence, num_layers: int, seq_len: int) -> Check:
    """``(ok, canonical value, reason if not ok)`` for a view-state trait of the explorer.

    Args:
        name: One of :data:`BROWSER_TRAITS`.
        value: The value proposed (from the browser: anything JSON can hold).
        layers: The analysed layers (``layer`` is one of them; a negative index counts from the end).
        num_layers: The model's number of layers.
        seq_len: Positions ``S`` (``selected_cell`` is ``[i, j]`` with ``0 <= i, j < S``, or None).
    """
    if name == "layer":
        return check_layer(value, layers, num_layers)
    if name == "statistic":
        return choice(value, STATISTICS)
    if name == "view":
        return choice(value, VIEWS)
    if name == "log_scale":
        return check_log_scale(value)
    if name == "colormap":
        return check_colormap(value)
    if name == "color_percentiles":
        return check_color_percentiles(value)
    if name == "color_limits":
        return check_color_limits(value)
    if name == "sample":
        if value is None:
            return True, None, ""
        if is_int(value) and value >= 0:
            return True, int(value), ""
        return False, None, "must be null (the population) or a sample's index in the data set (an int >= 0)"
    if name == "selected_cell":
        if value is None:
            return True, None, ""
        S = seq_len
        if isinstance(value, (list, tuple)) and len(value) == 2 and all(is_int(c) and 0 <= c < S for c in value):
            return True, [int(value[0]), int(value[1])], ""
        return False, None, f"must be null or [i, j] with 0 <= i, j < {S}"
    raise KeyError(f"{name!r} is not a view-state trait of SensitivityExplorer; those are {list(BROWSER_TRAITS)}")


def cell_detail(snap: Any, layer: Any, cell: Sequence[int] | None) -> dict[str, Any] | None:
    """What the page shows of one cell ``[i, j]`` of ``layer`` in a snapshot: every statistic, and the cell's
    values in the reservoir samples (``samples [n]`` float32 without padding, ``sample_index [n]``); None
    without a cell or for one outside the snapshot's ``S``."""
    if cell is None or not all(0 <= c < snap.seq_len for c in cell):
        return None
    i, j = cell
    state = snap.stats[layer]
    values: dict[str, Any] = {stat: float(getattr(state, stat)[i, j]) for stat in STATISTICS}
    values["count"] = int(values["count"])
    res = snap.reservoir
    n = res.size
    per_sample = res.maps[layer][:n, i, j]  # [n] float32, NaN where i or j is padding
    keep = torch.isfinite(per_sample)
    return {
        "layer": layer,
        "cell": [i, j],
        **values,
        "samples": per_sample[keep].numpy(),
        "sample_index": res.sample_index[:n][keep].numpy(),
        "reservoir_size": n,
        "seen": res.seen,
    }


def decode_tokens(ids: Sequence[int], mask: Sequence[bool], tokenizer: Any = None) -> list[str]:
    """The token strings of one sample: ``tokenizer.decode([id])`` per real position (ids as text without a
    tokenizer, or where it cannot decode single ids), ``""`` at padding.

    Args:
        ids: ``[S]`` token ids.
        mask: ``[S]`` True at real tokens.
        tokenizer: A Hugging Face tokenizer, or None.
    """
    ids = [int(t) for t in ids]
    real = [bool(m) for m in mask]
    if tokenizer is not None:
        try:
            return [str(tokenizer.decode([t])) if m else "" for t, m in zip(ids, real, strict=True)]
        except Exception:  # a tokenizer that cannot decode single ids: show the ids
            pass
    return [str(t) if m else "" for t, m in zip(ids, real, strict=True)]


def sample_detail(snap: Any, layer: Any, sample: int | None, tokenizer: Any = None) -> dict[str, Any] | None:
    """What the page shows of one reservoir sample: its own map of ``layer`` and its tokens.

    Args:
        snap: A :class:`~tscope_widgets.kernels.sensitivity.SensitivitySnapshot`.
        layer: A layer of the snapshot.
        sample: The sample's index in the data set (``SampleReservoir.sample_index``), or None.
        tokenizer: Names the tokens (see :func:`decode_tokens`).

    Returns:
        None without a sample; ``{"sample", "layer", "missing": True}`` when the reservoir does not hold it
        (never kept, or replaced since); else ``{"sample", "layer", "map": [S, S] float32 (per-sample
        s_ij = ||J_ij||_F², NaN at padding), "mean": [S, S] float32 (the population mean shown beside it),
        "tokens": [S] str, "ids": [S] int, "length": real tokens}``.
    """
    if sample is None:
        return None
    res = snap.reservoir
    n = res.size
    slots = torch.nonzero(res.sample_index[:n] == int(sample)).flatten()
    if slots.numel() == 0:
        return {"sample": int(sample), "layer": layer, "missing": True}
    slot = int(slots[0])
    ids, mask = res.input_ids[slot], res.mask[slot]
    return {
        "sample": int(sample),
        "layer": layer,
        "map": res.maps[layer][slot].to(torch.float32).numpy(),
        "mean": snap.stats[layer].mean.to(torch.float32).numpy(),
        "tokens": decode_tokens(ids.tolist(), mask.tolist(), tokenizer),
        "ids": [int(t) for t in ids.tolist()],
        "length": int(mask.sum()),
    }
