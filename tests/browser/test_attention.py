"""Real browser: an AttentionExplorer following an AttentionTracker in JupyterLab, driven by headless Chromium.

A small generated notebook makes the explorer of a tiny model (6 sequences of 6 tokens) with a tracker, then
trains for a few steps. The test waits for the two maps (mean attention, mean sensitivity) and the layer ×
head grid to paint, checks that the grid follows the tracker (records drawn), hovers a cell of the
sensitivity map and sees both maps' values in the tooltip, clicks a cell there (the cell's values in every
map come back from Python), picks head 0 from the menu and the rollout from the correlation table, clicks a
head in the grid (its six spectra and its trajectory draw), and checks by re-running the cell that prints
them that Python received every choice.

Front-end markers (``js/src/attention_explorer.js``): ``.tscope-attention[data-paints]``,
``canvas.tscope-attn-map[data-rows][data-map][data-plot]``, ``canvas.tscope-sens-map``,
``.tscope-correlation[data-rho]``, ``.tscope-cell-detail[data-cell]``,
``canvas.tscope-head-grid[data-rows][data-cols][data-records][data-plot]``,
``.tscope-head-detail[data-head][data-series][data-records]``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from nbformat.v4 import new_code_cell, new_notebook
from playwright.sync_api import sync_playwright

from tests.browser.harness import ALL_CELLS_RUN, KERNEL_IDLE_LAB, PageLog, jupyterlab, launch_chromium, wait_for

pytestmark = pytest.mark.slow  # end to end: JupyterLab, a kernel and Chromium

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
KERNEL_IDLE_MS = 120_000
RUN_MS = 240_000
NAME = "attention.ipynb"
S, LAYERS, HEADS, RECORDS = 6, 2, 2, 4
CELL = (4, 1)  # the clicked cell of the sensitivity map (query 4, key 1)
HEAD = (1, 0)  # the clicked head of the grid (layer 1, head 0)

SETUP = f"""
import torch
from tscope_widgets import AttentionExplorer, AttentionTracker, TinyConfig, TinyTransformer

torch.manual_seed(0)
model = TinyTransformer(TinyConfig(vocab_size=11, d_model=8, n_head={HEADS}, n_layer={LAYERS}, max_seq_len=8)).double()
ids = torch.randint(0, 11, (6, {S}), generator=torch.Generator().manual_seed(1))
tracker = AttentionTracker(model, ids, every=1)
explorer = AttentionExplorer(model, ids, num_bootstrap=200, token_labels=list("<abcd>"), tracker=tracker)
explorer
"""
TRAIN = f"""
optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
for step in range({RECORDS}):
    loss = model(ids).logsumexp(-1).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    tracker.step()
print("TRAINED")
"""
READ_BACK = """
print(f"CELL={explorer.selected_cell} HEAD={explorer.selected_head} MAP={explorer.attention_map} "
      f"RECORDS={len(explorer.steps)} CELLMAPS={len(explorer.cell['attention']) if explorer.cell else 0}")
"""

DRAWN = """([S, L, n, records]) => {
  const root = document.querySelector('.jp-OutputArea-output .tscope-attention');
  if (!root || !(Number(root.dataset.paints) > 0)) return false;
  const att = root.querySelector('canvas.tscope-attn-map');
  const sens = root.querySelector('canvas.tscope-sens-map');
  const grid = root.querySelector('canvas.tscope-head-grid');
  const rho = root.querySelector('.tscope-correlation');
  return att.dataset.rows === String(S) && sens.dataset.rows === String(S) && !!att.dataset.plot
    && grid.dataset.rows === String(L) && grid.dataset.cols === String(n) && grid.dataset.records === String(records)
    && rho.dataset.rho !== '' && rho.textContent.startsWith('Spearman');
}"""

SHOWN_MAP = "(m) => document.querySelector('.jp-OutputArea-output canvas.tscope-attn-map').dataset.map === m"

# Share of a canvas's plot area (data-plot) painted in colours other than the page background.
PAINTED = """(canvas) => {
  const ctx = canvas.getContext('2d');
  const dpr = canvas.width / parseFloat(canvas.style.width);
  const [x, y, w, h] = canvas.dataset.plot.split(',').map(Number);
  const corner = ctx.getImageData(0, 0, 1, 1).data;
  const d = ctx.getImageData(Math.round(x * dpr) + 2, Math.round(y * dpr) + 2,
                             Math.round(w * dpr) - 4, Math.round(h * dpr) - 4).data;
  let painted = 0;
  for (let k = 0; k < d.length; k += 4)
    if (Math.abs(d[k] - corner[0]) + Math.abs(d[k + 1] - corner[1]) + Math.abs(d[k + 2] - corner[2]) > 30) painted++;
  return painted / (d.length / 4);
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("jupyter-attention")
    with jupyterlab(tmp) as server:
        nb = new_notebook(cells=[new_code_cell(c.strip()) for c in (SETUP, TRAIN, READ_BACK)])
        nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
        server.write_notebook(NAME, nb, trusted=True)
        yield server


def _centre(canvas, rows: int, cols: int, i: int, j: int) -> dict[str, float]:
    x, y, w, h = (float(v) for v in canvas.get_attribute("data-plot").split(","))
    return {"x": x + (j + 0.5) * w / cols, "y": y + (i + 0.5) * h / rows}


def test_attention_explorer_draws_and_choices_reach_python(server):
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_context(viewport={"width": 1400, "height": 1100}).new_page()
        log = PageLog(page)
        page.goto(server.lab_url(NAME), timeout=180_000)  # a busy 2-core machine loads JupyterLab slowly
        wait_for(page, KERNEL_IDLE_LAB, f"the kernel of {NAME} to be idle", log, KERNEL_IDLE_MS)
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        wait_for(page, ALL_CELLS_RUN, "every cell of the notebook to have run", log, RUN_MS)
        wait_for(page, DRAWN, "both maps and the head grid to draw, following the tracker", log, RUN_MS,
                 arg=[S, LAYERS, HEADS, RECORDS])
        view = page.locator(".jp-OutputArea-output .tscope-attention")
        view.scroll_into_view_if_needed()
        att = view.locator("canvas.tscope-attn-map")
        sens = view.locator("canvas.tscope-sens-map")
        grid = view.locator("canvas.tscope-head-grid")
        for canvas, what in ((att, "attention map"), (sens, "sensitivity map"), (grid, "head grid")):
            painted = canvas.evaluate(PAINTED)
            assert painted > 0.3, f"{painted:.1%} of the {what} is painted"
        assert att.get_attribute("data-map") == "head mean"
        rho = float(view.locator(".tscope-correlation").get_attribute("data-rho"))
        assert -1 <= rho <= 1

        # ----- hover the sensitivity map: the tooltip shows both maps at that cell
        i, j = CELL
        sens.hover(position=_centre(sens, S, S, i, j))
        tip = view.locator(".tscope-tooltip")
        wait_for(page, "() => document.querySelector('.jp-OutputArea-output .tscope-attention .tscope-tooltip')"
                 ".style.display === 'block'", "the linked tooltip", log)
        text = tip.text_content()
        assert "head mean attention:" in text and "sensitivity s_ij:" in text and f"query {i}:" in text, text

        # ----- click it: Python reads the cell of every map
        sens.click(position=_centre(sens, S, S, i, j))
        detail = f".jp-OutputArea-output .tscope-cell-detail[data-cell=\"{i},{j}\"]"
        wait_for(page, f"() => !!document.querySelector('{detail}')", f"cell ({i}, {j}) in every map", log)
        assert view.locator(".tscope-cell-detail tr").count() == HEADS + 2 + 1

        # ----- switch heads from the menu, then the rollout from the correlation table
        view.locator('select[aria-label="attention map"]').select_option(label="head 0")
        wait_for(page, SHOWN_MAP, "the map of head 0", log, arg="head0")
        view.locator('tr.tscope-map-row[data-map="rollout"]').click()
        wait_for(page, SHOWN_MAP, "the rollout map", log, arg="rollout")

        # ----- click a head of the grid: its spectra and its trajectory over the records
        layer, head = HEAD
        grid.scroll_into_view_if_needed()
        grid.click(position=_centre(grid, LAYERS, HEADS, layer, head))
        wait_for(
            page,
            f"""() => {{ const d = document.querySelector('.jp-OutputArea-output .tscope-head-detail');
                  return !!d && d.dataset.head === '{layer},{head}' && d.dataset.series === '6'
                    && d.dataset.records === '{RECORDS}' && d.querySelectorAll('svg.tscope-chart').length >= 2; }}""",
            f"the spectra and trajectory of head ({layer}, {head})",
            log,
        )
        page.screenshot(path=str(ARTIFACTS / "jupyterlab-attention.png"))

        # ----- Python received every choice
        read_back = page.locator(".jp-NotebookPanel .jp-CodeCell", has_text="CELLMAPS")
        read_back.locator(".jp-InputPrompt").click()
        page.keyboard.press("Control+Enter")
        expected = f"CELL=[{i}, {j}] HEAD=[{layer}, {head}] MAP=rollout RECORDS={RECORDS} CELLMAPS={HEADS + 2}"
        wait_for(
            page,
            "(t) => [...document.querySelectorAll('.jp-OutputArea-output')].some(e => e.textContent.includes(t))",
            f"Python to print {expected!r}",
            log,
            RUN_MS,
            arg=expected,
        )
        browser.close()
