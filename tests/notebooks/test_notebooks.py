"""Every notebook in ``notebooks/`` runs top to bottom (nbclient, CPU, bounded time), and its HTML export
(nbconvert, with or without widget state) shows the final static picture of each explorer, an output of
its own right after the widget output, instead of a blank box or the widget view from a CDN."""

from __future__ import annotations

import base64
import copy
import io
import json
import re
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from nbconvert import HTMLExporter
from nbformat.v4 import new_code_cell, new_notebook
from PIL import Image

from tscope_widgets.figures.palettes import SEQUENTIAL

pytestmark = pytest.mark.slow  # end to end: a kernel per notebook, about a minute

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 120  # one cell; the slowest (training the tiny model) takes about 15 s
NOTEBOOK_BUDGET_S = 90  # a whole notebook, kernel start included; about 25 s on a busy 2-core machine
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
PICTURE = re.compile(r'<div class="tscope-static"([^>]*)>')
PICTURE_IMG = re.compile(r'<img [^>]*class="tscope-static-picture"[^>]*>')  # nbconvert sorts attributes
SVG_SRC = re.compile(r'src="data:image/svg\+xml;base64,([^"]+)"')
HEATMAP_PNG = re.compile(
    r'<image class="tscope-static-heatmap" data-rows="(\d+)"[^>]*href="data:image/png;base64,([^"]+)"'
)


def svgs(html: str) -> list[str]:
    """The SVG documents of the pictures in ``html`` (each picture is an <img> of one)."""
    sources = [SVG_SRC.search(img) for img in PICTURE_IMG.findall(html)]
    assert all(sources), "a picture <img> without an SVG source"
    return [base64.b64decode(src.group(1)).decode("utf-8") for src in sources]


def run(nb: nbformat.NotebookNode, cwd: Path, *, widget_state: bool = False) -> float:
    """Execute ``nb`` in place in a fresh python3 kernel started in ``cwd``; returns the seconds it took.

    By default no widget state is stored, as in a notebook saved by JupyterLab with its default settings.
    """
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        store_widget_state=widget_state,
        resources={"metadata": {"path": str(cwd)}},
    )
    start = time.monotonic()
    client.execute()
    return time.monotonic() - start


def to_html(nb: nbformat.NotebookNode) -> str:
    body, _ = HTMLExporter().from_notebook_node(nb)
    return body


def test_there_are_notebooks():
    assert [p.name for p in NOTEBOOKS][:2] == ["01_quickstart.ipynb", "02_sensitivity_hf.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"  # else JupyterLab asks for a kernel
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name} is stored with outputs"

    seconds = run(nb, tmp_path)  # raises CellExecutionError (with the traceback) if a cell fails
    assert seconds < NOTEBOOK_BUDGET_S, f"{path.name} took {seconds:.0f} s"
    assert all(c.execution_count for c in code)

    pairs = [(c.outputs[k], c.outputs[k + 1 :]) for c in code for k in range(len(c.outputs))]
    widget_outputs = [(o, rest) for o, rest in pairs if WIDGET_VIEW in o.get("data", {})]
    assert widget_outputs, f"{path.name} shows no widget"
    for output, rest in widget_outputs:
        assert "text/html" not in output["data"]  # nbconvert and JupyterLab would never show it
        assert rest and rest[0]["output_type"] == "display_data", "the picture must follow the widget output"
        picture = rest[0]["data"]["text/html"]
        assert 'data-status="done"' in picture, "the output's picture was not refreshed when the job ended"
        (svg,) = svgs(picture)
        assert HEATMAP_PNG.search(svg) or 'class="tscope-static-sweep"' in svg  # a heatmap, or the sweep's chart

    html = to_html(nb)
    pictures = PICTURE.findall(html)
    assert len(pictures) == len(widget_outputs)  # each widget output shows its picture, not a blank box
    assert all('data-status="done"' in attrs for attrs in pictures)
    assert f'<script type="{WIDGET_VIEW}">' not in html  # without widget state nbconvert must not pick the view


def test_html_export_shows_the_final_heatmap(tmp_path):
    """The picture in the HTML export is the final heatmap, cell by cell and colour by colour, whether the
    notebook stores widget state (nbconvert then embeds the widget view, for a page that loads the widget
    manager from a CDN, and the picture as well) or not."""
    setup = """
import json
import torch
from tscope_widgets import TinyConfig, TinyTransformer
from tscope_widgets.widgets import SensitivityExplorer

torch.manual_seed(0)
model = TinyTransformer(TinyConfig(vocab_size=11, d_model=8, n_head=2, n_layer=2, max_seq_len=8)).double()
ids = torch.randint(0, 11, (24, 6), generator=torch.Generator().manual_seed(1))
explorer = SensitivityExplorer(model, ids, batch_size=4, token_labels=["<s>", "a", "b", "a", "b", "&"],
                               log_scale=False)
explorer
"""
    read_back = """
explorer.wait()
mean = explorer.stats[explorer.layer].mean
print(json.dumps({"layer": explorer.layer, "mean": [[v if v == v else None for v in row] for row in mean.tolist()]}))
"""
    nb = new_notebook(cells=[new_code_cell(setup.strip()), new_code_cell(read_back.strip())])
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    run(nb, tmp_path, widget_state=True)
    final = json.loads(nb.cells[1].outputs[0]["text"])
    mean = np.array(final["mean"], dtype=np.float64)  # [6, 6]; None -> NaN
    html = to_html(nb)
    assert f'<script type="{WIDGET_VIEW}">' in html  # the widget view, for a page with the internet
    stateless = copy.deepcopy(nb)
    del stateless.metadata["widgets"]
    html_stateless = to_html(stateless)
    assert f'<script type="{WIDGET_VIEW}">' not in html_stateless
    assert svgs(html_stateless) == svgs(html)

    (attrs,) = PICTURE.findall(html)
    assert 'data-status="done"' in attrs and f'data-layer="{final["layer"]}"' in attrs and 'data-done="24"' in attrs
    (svg,) = svgs(html)
    assert "0:&lt;s&gt;" in svg and "5:&amp;" in svg  # token labels on the axes, escaped
    ((rows, png),) = HEATMAP_PNG.findall(svg)
    assert int(rows) == 6
    image = Image.open(io.BytesIO(base64.b64decode(png)))
    assert image.mode == "P" and image.size == (6, 6)
    indices = np.array(image)

    # Reference: a linear scale over the finite values, 254 viridis levels, NaN -> entry 254 (grey).
    finite = mean[np.isfinite(mean)]
    lo, hi = finite.min(), finite.max()
    expected = np.full(mean.shape, 254)
    ok = np.isfinite(mean)
    expected[ok] = np.minimum(np.floor((mean[ok] - lo) / (hi - lo) * 254), 253)
    np.testing.assert_array_equal(indices, expected)

    palette = np.array(image.getpalette()[: 3 * 256], dtype=np.uint8).reshape(-1, 3)
    viridis = np.array([[int(c[k : k + 2], 16) for k in (1, 3, 5)] for c in SEQUENTIAL["viridis"]])
    for level in (0, 100, 253):
        assert tuple(palette[level]) == tuple(viridis[round(level * 255 / 253)])
    assert tuple(palette[254]) == (0xC7, 0xC7, 0xC7)
