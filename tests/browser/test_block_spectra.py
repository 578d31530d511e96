"""Real browser: a BlockSpectraWidget in JupyterLab, driven by headless Chromium.

A small generated notebook runs the block densities of a one-layer tiny transformer (six blocks, one of each
type) in the widget's background job. The test waits for the view to draw every block (``data-blocks``), the
overlaid density lines, the Jensen–Shannon heatmap (every cell painted, JS⁰ in its title equal to Python's)
and the six type points with their table; checks that the static picture is hidden while the view is live;
then switches to side by side (one chart per block), drops a block in the blocks menu and turns the log scale
off, and checks (by re-running the cell that prints them) that Python received ``overlay``,
``selected_blocks`` and ``log_y``. Screenshots go to ``test-artifacts/`` (gitignored).

Front-end markers (``js/src/block_spectra_widget.js``): ``.tscope-blocks[data-status][data-blocks][data-paints]``,
``.tscope-densities[data-lines][data-charts]``, ``canvas.tscope-js[data-rows][data-plot]``,
``.tscope-js-pane[data-mean]``, ``.tscope-types-pane[data-types]``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from nbformat.v4 import new_code_cell, new_notebook
from playwright.sync_api import sync_playwright

from tests.browser.harness import ALL_CELLS_RUN, KERNEL_IDLE_LAB, PageLog, jupyterlab, launch_chromium, wait_for
from tests.browser.test_landscape_spectrum import STEPS_PAINTED

pytestmark = pytest.mark.slow  # end to end: JupyterLab, a kernel and Chromium, about 30 s

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
KERNEL_IDLE_MS = 60_000
RUN_MS = 120_000
NAME = "block-spectra.ipynb"
BLOCKS = ["embed", "block0.attn.q", "block0.attn.v", "block0.mlp.in", "block0.ln1", "head"]

SETUP = f"""
import torch
from tscope_widgets import BlockSpectraWidget, TinyConfig, TinyTransformer

torch.manual_seed(0)
model = TinyTransformer(TinyConfig(vocab_size=11, d_model=8, n_head=2, n_layer=1, max_seq_len=8)).double()
batch = {{"input_ids": torch.randint(0, 11, (3, 6), generator=torch.Generator().manual_seed(1))}}
blocks = BlockSpectraWidget(model, batch, {BLOCKS!r}, num_probes=2, num_steps=12, num_threads=1)
blocks
"""
WAIT = """
blocks.wait(100)
print(f"JS0={blocks.result['js_mean']!r}")
"""
READ_BACK = """
print(f"STATE overlay={blocks.overlay} log={blocks.log_y} selected={','.join(blocks.selected_blocks)}")
"""

DRAWN = """([blocks, types]) => {
  const root = document.querySelector('.jp-OutputArea-output .tscope-blocks');
  if (!root) return false;
  const dens = root.querySelector('.tscope-densities');
  const js = root.querySelector('canvas.tscope-js');
  const typesPane = root.querySelector('.tscope-types-pane');
  const lines = [...dens.querySelectorAll('svg.tscope-chart path')].filter(p => p.getAttribute('fill') === 'none'
    && (p.getAttribute('d') || '').split('L').length > 100);
  return root.dataset.status === 'done' && root.dataset.blocks === String(blocks) && Number(root.dataset.paints) > 0
    && dens.dataset.lines === String(blocks) && lines.length === blocks && !!js && js.dataset.rows === String(blocks)
    && typesPane.dataset.types === String(types) && typesPane.querySelectorAll('svg circle').length === types;
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("jupyter-blocks")
    with jupyterlab(tmp) as server:
        nb = new_notebook(cells=[new_code_cell(c.strip()) for c in (SETUP, WAIT, READ_BACK)])
        nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
        server.write_notebook(NAME, nb, trusted=True)
        yield server


def test_block_spectra_draw_update_and_reach_python(server):
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        log = PageLog(page)
        page.goto(server.lab_url(NAME), timeout=KERNEL_IDLE_MS)  # a busy machine loads JupyterLab slowly
        wait_for(page, KERNEL_IDLE_LAB, f"the kernel of {NAME} to be idle", log, KERNEL_IDLE_MS)
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        wait_for(page, DRAWN, "the block spectra to draw six blocks and six types", log, RUN_MS, arg=[6, 6])
        wait_for(page, ALL_CELLS_RUN, "every cell of the notebook to have run", log, RUN_MS)
        view = page.locator(".jp-OutputArea-output .tscope-blocks")

        # the heatmap: every cell painted; its JS⁰ is Python's
        canvas = view.locator("canvas.tscope-js")
        painted = canvas.evaluate(STEPS_PAINTED)
        assert painted > 0.9, f"{painted:.1%} of the distance heatmap is painted; expected all of it"
        printed = page.locator(".jp-OutputArea-output", has_text="JS0=").text_content()
        js0 = float(printed.split("JS0=")[1].split()[0])
        assert float(view.locator(".tscope-js-pane").get_attribute("data-mean")) == pytest.approx(js0, rel=1e-12)
        assert f"{js0:.3g}"[:4] in view.locator(".tscope-js-pane h4").text_content()
        rows = view.locator("table.tscope-types tr[data-type]")
        assert [rows.nth(k).get_attribute("data-type") for k in range(rows.count())] == [
            "embed", "qk", "mlp", "vo", "norm", "head"]
        assert view.locator(".tscope-types-pane svg text", has_text="QK").count() >= 1  # category ticks
        pictures = page.locator(".tscope-static")
        assert pictures.count() == 1 and not pictures.first.is_visible()
        view.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "jupyterlab-block-spectra.png"))

        # side by side: one chart per block
        view.locator('input[aria-label="overlay"]').uncheck()
        wait_for(page, """() => { const d = document.querySelector('.jp-OutputArea-output .tscope-densities');
                   return d.dataset.charts === '6' && d.querySelectorAll('svg.tscope-chart').length === 6; }""",
                 "one density chart per block", log)
        # drop a block in the blocks menu; the log scale off
        view.locator("details.tscope-block-menu summary").click()
        view.locator("details.tscope-block-menu input[data-index='4']").uncheck()
        five = "() => document.querySelector('.jp-OutputArea-output .tscope-densities').dataset.charts === '5'"
        wait_for(page, five, "five density charts after dropping block0.ln1", log)
        view.locator('input[aria-label="log scale"]').uncheck()
        page.screenshot(path=str(ARTIFACTS / "jupyterlab-block-spectra-side-by-side.png"))

        read_back = page.locator(".jp-NotebookPanel .jp-CodeCell", has_text="print(f\"STATE")
        read_back.locator(".jp-InputPrompt").click()
        page.keyboard.press("Control+Enter")
        selected = ",".join(b for b in BLOCKS if b != "block0.ln1")
        expected = f"STATE overlay=False log=False selected={selected}"
        wait_for(page, f"() => [...document.querySelectorAll('.jp-OutputArea-output')]"
                       f".some(e => e.textContent.includes('{expected}'))",
                 f"Python to print {expected!r}", log, RUN_MS)
        browser.close()
