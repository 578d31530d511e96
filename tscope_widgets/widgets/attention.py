r"""``AttentionExplorer``: where heads attend over a data set, beside what the output depends on, and head geometry.

Two panes, one widget:

- **Attention against sensitivity.** For the chosen layer, the mean attention map of a head (or the head
  mean, or the rollout) over the samples, beside the layer's mean sensitivity
  :math:`s_{ij} = \lVert \partial h_i / \partial e_j \rVert_F^2` of the *same* samples on the same cells, with
  Spearman's :math:`\rho` between the two over the valid off-diagonal cells and its percentile bootstrap
  interval (:func:`~tscope_widgets.kernels.attention.layer_correlations`); a table gives :math:`\rho` of
  every map of the layer. Hovering or clicking a cell of either map marks it in both; the clicked cell's
  values in every map come back from Python.
- **Head geometry.** A layer × head grid of one effective rank (participation ratio, entropy rank, stable
  rank) or the condition number of ``W_Q, W_K, W_V, W_O, W_QK`` or ``W_OV``
  (:func:`~tscope_widgets.kernels.head_spectra`); clicking a head shows its singular values (log scale).
  Given an :class:`~tscope_widgets.tracking.AttentionTracker`, the grid shows its latest record and follows
  training live; the clicked head's rank and attention entropy are drawn against the step.

It holds no maths: every number comes from the kernels, computed when the explorer is made (the correlation
needs per-sample maps, so it runs on the bounded set of sequences given; exact sensitivity on a float64 copy);
:mod:`._attention_state` turns results into traits. Values from the browser (``layer``, ``attention_map``,
``selected_cell``, ``measure``, ``kind``, ``selected_head``) are checked there; nonsense is logged and the page
is sent back the previous value. Displaying the explorer also makes a static picture (see ``_display``).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import traitlets

from ..figures.attention import MEASURE_TITLES, attention_pane_charts, map_title, rank_grid_chart
from ..figures.svg import render_svg
from ..kernels.attention import head_spectra, layer_correlations
from ..models.registry import adapt
from ._attention_state import (
    BROWSER_TRAITS,
    KINDS,
    MEASURES,
    cell_values,
    check_view_state,
    correlation_table,
    geometry_from_history,
    geometry_from_spectra,
    head_detail,
    pane_data,
    rank_grid,
)
from ._codec import to_json_tree
from ._display import Caption, PicturedWidget, bundle
from ._sensitivity_state import check_log_scale, check_token_labels, fit_labels

__all__ = ["AttentionExplorer"]

logger = logging.getLogger(__name__)

BUNDLE = bundle("attention_explorer.js")
LIVE_VIEW_SELECTOR = ".tscope-attention"  # root element of a rendered view (js/src/attention_explorer.js)
WIDGET_TEXT = "AttentionExplorer: live view (needs its running kernel, or widget state saved with a trusted notebook)"


class AttentionExplorer(PicturedWidget):
    r"""Mean attention beside mean sensitivity per layer and head, their rank correlation, and head geometry.

    Args:
        model: A :class:`~tscope_widgets.models.TinyTransformer`, a supported Hugging Face model or a
            :class:`~tscope_widgets.models.ModelAdapter` with softmax attention; analysed on a private copy.
        input_ids: ``[N, S]`` integer token ids, ``N >= 2`` (the bootstrap resamples sequences).
        attention_mask: ``[N, S]`` 1 for tokens, 0 for padding, or None.
        layers: Blocks of the attention pane (``"all"``, an index or a list).
        token_labels: ``S`` strings naming the positions, or None.
        tracker: An :class:`~tscope_widgets.tracking.AttentionTracker` (followed live: the geometry view
            shows its latest record and each head's trajectory) or an
            :class:`~tscope_widgets.tracking.AttentionHistory`; None: the model's heads as they are.
        num_bootstrap: Bootstrap replicates (``>= 100``).
        confidence: Coverage of the interval, in ``(0, 1)``.
        seed: Seed of the resampling.
        log_scale: Colour scale of the sensitivity map: ``"auto"``, True or False.
        chunk_size: Passed to the sensitivity kernel.

    Raises:
        TypeError: Ids that are not an integer tensor, labels that are not strings, a tracker of another
            type, a model without attention modules.
        ValueError: Ids outside the vocabulary, a bad mask, fewer than 2 sequences, an unknown layer, bad
            bootstrap options, a model whose attention is not softmax.
    """

    _esm = BUNDLE
    live_selector = LIVE_VIEW_SELECTOR
    widget_text = WIDGET_TEXT
    picture_noun = "attention explorer"
    _browser_traits = BROWSER_TRAITS

    # View state: the browser may set these; validated in `_validate_view_state`.
    layer = traitlets.Any(None).tag(sync=True)
    attention_map = traitlets.Any("head mean").tag(sync=True)
    selected_cell = traitlets.Any(None).tag(sync=True)
    measure = traitlets.Any("entropy_rank").tag(sync=True)
    kind = traitlets.Any("qk").tag(sync=True)
    selected_head = traitlets.Any(None).tag(sync=True)

    # Choices and labels (only Python sets them).
    layer_options = traitlets.List().tag(sync=True)
    map_options = traitlets.List().tag(sync=True)
    measure_options = traitlets.List(list(MEASURES)).tag(sync=True)
    measure_titles = traitlets.Dict(dict(MEASURE_TITLES)).tag(sync=True)
    kind_options = traitlets.List(list(KINDS)).tag(sync=True)
    seq_len = traitlets.Int(0).tag(sync=True)
    token_labels = traitlets.List(traitlets.Unicode()).tag(sync=True)
    log_scale = traitlets.Any("auto").tag(sync=True)
    head_layers = traitlets.List().tag(sync=True)
    n_heads = traitlets.Int(0).tag(sync=True)
    steps = traitlets.List().tag(sync=True)

    # Data, as binary buffers where arrays.
    pane = traitlets.Any(None).tag(sync=True, to_json=to_json_tree)
    table = traitlets.List().tag(sync=True, to_json=to_json_tree)
    cell = traitlets.Any(None).tag(sync=True, to_json=to_json_tree)
    grid = traitlets.Any(None).tag(sync=True, to_json=to_json_tree)
    head = traitlets.Any(None).tag(sync=True, to_json=to_json_tree)

    def __init__(
        self,
        model,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        layers="all",
        token_labels: Sequence[str] | None = None,
        tracker=None,
        num_bootstrap: int = 1000,
        confidence: float = 0.95,
        seed: int = 0,
        log_scale: bool | str = "auto",
        chunk_size: int | None = None,
    ):
        labels = check_token_labels(token_labels)
        ok, log_scale, why = check_log_scale(log_scale)
        if not ok:
            raise ValueError(f"log_scale={log_scale!r}: {why}")
        history = _history_of(tracker)
        adapter = adapt(model)
        if not isinstance(input_ids, torch.Tensor):
            raise TypeError(f"input_ids must be a [N, S] integer tensor of token ids, got {type(input_ids).__name__}")
        try:
            adapter.check_inputs(input_ids, attention_mask)
        except TypeError as err:
            raise TypeError(f"input_ids: {err}; pass token ids as an integer tensor (e.g. ids.long())") from None
        except ValueError as err:
            raise ValueError(f"input_ids: {err}; check the ids against the model's vocabulary") from None
        self._correlations = layer_correlations(
            adapter, input_ids, attention_mask, layers=layers, num_bootstrap=num_bootstrap,
            confidence=confidence, seed=seed, chunk_size=chunk_size,
        )
        self._spectra = geometry_from_spectra(head_spectra(adapter))
        self._history = history
        self._lock = threading.RLock()
        first = next(iter(self._correlations.values()))
        S = int(first.mean_sensitivity.shape[-1])
        options = list(self._correlations)
        self._valid = {
            "layer": options[-1],
            "attention_map": "head mean",
            "selected_cell": None,
            "measure": "entropy_rank",
            "kind": "qk",
            "selected_head": None,
        }
        self._unsubscribe = lambda: None
        super().__init__()
        with self.hold_sync():
            self.seq_len = S
            self.layer_options = options
            self.map_options = list(first.labels)
            self.token_labels = [] if labels is None else fit_labels(labels, S)
            if labels is not None and len(labels) != S:
                logger.warning("token_labels has %d entries for %d positions; fitted to %d", len(labels), S, S)
            self.log_scale = log_scale
            self.set_trait("layer", options[-1])
            self._sync_pane()
            self._sync_geometry()
        if hasattr(tracker, "subscribe"):
            self._unsubscribe = tracker.subscribe(self._on_record)

    # ------------------------------------------------------------------ public API
    @property
    def correlations(self) -> dict:
        """``{layer: AttentionSensitivityCorrelation}`` behind the attention pane."""
        return dict(self._correlations)

    def close(self) -> None:
        """Stop following the tracker and close the widget."""
        unsubscribe = getattr(self, "_unsubscribe", None)  # absent when the constructor refused its input
        if unsubscribe is not None:
            unsubscribe()
        super().close()

    def to_bokeh(self):
        """The shown views as static Bokeh figures: the attention pane (two maps) above the head grid."""
        from bokeh.layouts import column, row

        from ..figures.bokeh import matrix_chart_figure

        att, sens, grid = self._charts()
        return column(row(matrix_chart_figure(att, width=420), matrix_chart_figure(sens, width=420)),
                      matrix_chart_figure(grid, width=420))

    def save_html(self, path: str | os.PathLike, *, title: str = "Attention and sensitivity") -> Path:
        """Write a standalone HTML report of :meth:`to_bokeh` with the correlation table as notes."""
        from ..export.html import save_report

        pane = self.pane
        notes = [f"{map_title(r['map'])}: ρ = {r['rho']:.3f} [{r['low']:.3f}, {r['high']:.3f}]" for r in self.table]
        notes.insert(0, f"Layer {self.layer}: Spearman ρ of mean attention with mean sensitivity over "
                        f"{pane['cells']} off-diagonal cells of {pane['samples']} sequences, "
                        f"{100 * pane['confidence']:g}% bootstrap intervals.")
        return save_report(path, [self.to_bokeh()], title, notes)

    # ------------------------------------------------------------------ data to traits
    def _geometry(self):
        live = None if self._history is None else geometry_from_history(self._history)
        return live if live is not None else self._spectra

    def _sync_pane(self) -> None:
        corr = self._correlations[self.layer]
        if self.map_options != list(corr.labels):
            self.map_options = list(corr.labels)
        if self.attention_map not in corr.labels:
            self.set_trait("attention_map", "head mean")
        self.pane = pane_data(corr, self.layer, self.attention_map)
        self.table = correlation_table(corr)
        self.cell = cell_values(corr, self.layer, self.selected_cell)

    def _sync_geometry(self) -> None:
        geom = self._geometry()
        if self.head_layers != geom.layers:
            self.head_layers = list(geom.layers)
        self.n_heads = geom.n_heads
        self.steps = [int(s) for s in geom.steps] if geom is not self._spectra else []
        self.grid = rank_grid(geom, self.measure, self.kind)
        sel = self.selected_head
        if sel is not None and (sel[0] not in geom.layers or sel[1] >= geom.n_heads):
            self.set_trait("selected_head", None)
            sel = None
        self.head = None if sel is None else head_detail(geom, sel[0], sel[1], self.measure, self.kind)

    def _on_record(self, history) -> None:
        """A new tracker record (from the training loop's thread): follow it."""
        with self._lock, self.hold_sync():
            self._history = history
            self._sync_geometry()
        self._picture_changed()

    # ------------------------------------------------------------------ picture
    def _charts(self):
        pane = self.pane
        labels = list(self.token_labels) or None
        att, sens = attention_pane_charts(
            pane["attention"], pane["sensitivity"], layer=pane["layer"], label=pane["map"], rho=pane["rho"],
            low=pane["low"], high=pane["high"], samples=pane["samples"], token_labels=labels, log=self.log_scale,
        )
        geom = self._geometry()
        step = int(geom.steps[-1]) if geom is not self._spectra else None
        grid = rank_grid_chart(self.grid, geom.layers, self.measure, self.kind, step)
        return att, sens, grid

    def _picture_svg(self) -> str | None:
        return render_svg(list(self._charts()))

    def _picture_caption(self) -> Caption:
        pane = self.pane
        title = f"AttentionExplorer · layer {self.layer} · {map_title(self.attention_map)}"
        status = (f"ρ = {pane['rho']:.3f} [{pane['low']:.3f}, {pane['high']:.3f}] over {pane['cells']} cells of "
                  f"{pane['samples']} sequences")
        return Caption(
            title=title,
            status=status,
            alt=f"{title}: mean attention and mean sensitivity heatmaps, and a layer by head grid of "
                f"{self.measure.replace('_', ' ')}",
            attrs={"layer": str(self.layer), "map": self.attention_map, "status": "done"},
        )

    # ------------------------------------------------------------------ browser input
    @traitlets.validate(*BROWSER_TRAITS)
    def _validate_view_state(self, proposal) -> Any:
        return self._validated(proposal)

    @traitlets.observe(*BROWSER_TRAITS)
    def _on_view_state(self, change) -> None:
        old, new = change["old"], change["new"]
        if type(old) is type(new) and old == new:
            return
        self._picture_changed()
        with self._lock, self.hold_sync():
            if change["name"] in ("layer", "attention_map", "selected_cell"):
                self._sync_pane()
            else:
                self._sync_geometry()

    def _check(self, name: str, value: Any) -> tuple[bool, Any, str]:
        geom = self._geometry()
        layer = self._valid["layer"]
        maps = self._correlations[layer].labels if layer in self._correlations else []
        return check_view_state(
            name, value, layers=list(self._correlations), maps=maps, seq_len=self.seq_len,
            head_layers=geom.layers, n_heads=geom.n_heads,
        )


def _history_of(tracker):
    """The :class:`AttentionHistory` of a tracker (or the history itself), or None."""
    if tracker is None:
        return None
    from ..tracking import AttentionHistory, AttentionTracker

    if isinstance(tracker, AttentionTracker):
        return tracker.history
    if isinstance(tracker, AttentionHistory):
        return tracker
    raise TypeError(f"tracker must be an AttentionTracker, an AttentionHistory or None, got {type(tracker).__name__}")
