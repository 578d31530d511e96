"""Real browser: a ComparisonExplorer of two sensitivity runs in JupyterLab, driven by headless Chromium.

A generated notebook runs two explorers of one tiny model on two data sets (random tokens, and tokens that
repeat at every other position) and shows ``a.compare(b)`` while they fill in. The test waits for the
comparison to finish and paint its three maps (difference, mean of a, mean of b), checks that the number of
faded cells on the difference canvas equals Python's count of tested cells that are not significant at the
default level, picks another level in the α menu (the faded cells change, to Python's count at that level),
switches the mask off (nothing faded), clicks a cell (both runs' reservoir values show in the detail pane) and
reads back, by re-running a cell, that Python received the level, the mask and the cell.

Front-end markers (``js/src/comparison_explorer.js``): ``.tscope-comparison[data-status][data-paints]``,
``canvas.tscope-difference[data-rows][data-faded][data-alpha][data-mask]``, ``.tscope-detail[data-cell][data-samples]``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nbformat.v4 import new_code_cell, new_notebook
from playwright.sync_api import sync_playwright

from tests.browser.harness import ALL_CELLS_RUN, KERNEL_IDLE_LAB, PageLog, jupyterlab, launch_chromium, wait_for

pytestmark = pytest.mark.slow  # end to end: JupyterLab, a kernel and Chromium

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
KERNEL_IDLE_MS = 60_000
RUN_MS = 90_000
NAME = "comparison.ipynb"
S, N, RESERVOIR = 6, 16, 8
CELL = (4, 1)  # the clicked cell (output i, input j)
# The difference canvas (js/src/comparison_explorer.js): margin left 100, top 8; cells of
# min(40, floor(300 / S)) CSS pixels.
CELL_PX = min(40, 300 // S)

SETUP = f"""
import json
import torch
from tscope_widgets.models.tiny import TinyConfig, TinyTransformer
from tscope_widgets.widgets import SensitivityExplorer

torch.manual_seed(0)
model = TinyTransformer(TinyConfig(vocab_size=11, d_model=8, n_head=2, n_layer=2, max_seq_len=8)).double()
ids_a = torch.randint(0, 11, ({N}, {S}), generator=torch.Generator().manual_seed(1))
ids_b = torch.randint(0, 11, ({N}, {S}), generator=torch.Generator().manual_seed(2))
ids_b[:, 1::2] = 3
a = SensitivityExplorer(model, ids_a, batch_size=2, reservoir_size={RESERVOIR}, num_threads=1)
b = SensitivityExplorer(model, ids_b, batch_size=2, reservoir_size={RESERVOIR}, num_threads=1)
"""
SHOW = """
cmp = a.compare(b, names=("random", "repeats"))
cmp
"""
COUNTS = """
cmp.wait()
from tscope_widgets.kernels.compare import compare_statistics
faded = {}
for alpha in cmp.alpha_options:
    c = compare_statistics(a.stats[cmp.layer], b.stats[cmp.layer], alpha=alpha)
    faded[str(alpha)] = c.num_tests - c.num_significant
print("FADED=" + json.dumps(faded))
"""
READ_BACK = """
print(f"CELL={cmp.selected_cell} ALPHA={cmp.alpha} MASK={cmp.mask} SAMPLES={len(cmp.detail['samples_a'])}")
"""

DONE = """(rows) => {
  const root = document.querySelector('.jp-OutputArea-output .tscope-comparison');
  const canvas = root && root.querySelector('canvas.tscope-difference');
  const means = root ? [...root.querySelectorAll('canvas.tscope-mean-a, canvas.tscope-mean-b')] : [];
  return !!root && root.dataset.status === 'done' && Number(root.dataset.paints) > 0 && !!canvas
    && canvas.dataset.rows === String(rows) && means.length === 2 && means.every(m => m.dataset.rows === String(rows))
    && means[0].dataset.domain === means[1].dataset.domain;
}"""
DIFFERENCE = "document.querySelector('.jp-OutputArea-output .tscope-comparison canvas.tscope-difference')"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("jupyter-comparison")
    with jupyterlab(tmp) as server:
        nb = new_notebook(cells=[new_code_cell(c.strip()) for c in (SETUP, SHOW, COUNTS, READ_BACK)])
        nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
        server.write_notebook(NAME, nb, trusted=True)
        yield server


def test_comparison_draws_fades_by_alpha_and_a_click_reaches_python(server):
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = launch_chromium(p)
        context = browser.new_context(viewport={"width": 1500, "height": 1000})
        page = context.new_page()
        log = PageLog(page)
        page.goto(server.lab_url(NAME))
        wait_for(page, KERNEL_IDLE_LAB, f"the kernel of {NAME} to be idle", log, KERNEL_IDLE_MS)
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        wait_for(page, DONE, "the comparison to finish and paint its three maps", log, RUN_MS, arg=S)
        wait_for(page, ALL_CELLS_RUN, "every cell of the notebook to have run", log, RUN_MS)
        text = page.locator(".jp-OutputArea-output", has_text="FADED=").first.text_content()
        faded = json.loads(text.split("FADED=")[1].strip().splitlines()[0])
        view = page.locator(".jp-OutputArea-output .tscope-comparison")
        view.scroll_into_view_if_needed()
        canvas = view.locator("canvas.tscope-difference")
        assert canvas.get_attribute("data-mask") == "true" and canvas.get_attribute("data-alpha") == "0.05"
        assert canvas.get_attribute("data-faded") == str(faded["0.05"]), faded
        assert "tested cells significant" in view.locator(".tscope-summary").text_content()

        # ----- another level: Python recomputes, the page fades Python's count of non-significant cells
        other = next(a for a in ("0.001", "0.2", "0.01", "0.1") if faded[a] != faded["0.05"])
        view.locator('select[aria-label="alpha"]').select_option(label=other)
        wait_for(
            page,
            f"() => {DIFFERENCE}.dataset.alpha === '{other}' && {DIFFERENCE}.dataset.faded === '{faded[other]}'",
            f"the difference map at alpha {other} with {faded[other]} faded cells",
            log,
        )
        page.screenshot(path=str(ARTIFACTS / "jupyterlab-comparison.png"))
        view.locator('input[aria-label="fade non-significant cells"]').uncheck()
        wait_for(
            page,
            f"() => {DIFFERENCE}.dataset.mask === 'false' && {DIFFERENCE}.dataset.faded === '0'",
            "the difference map with nothing faded",
            log,
        )

        # ----- click a cell: both runs' reservoir values of it
        i, j = CELL
        canvas.click(position={"x": 100 + (j + 0.5) * CELL_PX, "y": 8 + (i + 0.5) * CELL_PX})
        wait_for(
            page,
            f"""() => {{ const d = document.querySelector('.jp-OutputArea-output .tscope-comparison .tscope-detail');
                  return !!d && d.dataset.cell === '{i},{j}' && d.dataset.samples === '{RESERVOIR},{RESERVOIR}'
                    && !!d.querySelector('svg.tscope-two-histograms'); }}""",
            f"both runs' values of cell ({i}, {j})",
            log,
        )
        page.screenshot(path=str(ARTIFACTS / "jupyterlab-comparison-cell.png"))

        # ----- Python received the level, the mask and the cell
        read_back = page.locator(".jp-NotebookPanel .jp-CodeCell", has_text="CELL={cmp.selected_cell}")
        read_back.locator(".jp-InputPrompt").click()
        page.keyboard.press("Control+Enter")
        expected = f"CELL=[{i}, {j}] ALPHA={float(other)} MASK=False SAMPLES={RESERVOIR}"
        wait_for(
            page,
            "() => [...document.querySelectorAll('.jp-OutputArea-output')]"
            f".some(e => e.textContent.includes('{expected}'))",
            f"Python to print {expected!r}",
            log,
            RUN_MS,
        )
        # the picture standing in for the view is hidden while the view is there
        pictures = page.locator(".tscope-static")
        assert pictures.count() == 1 and not pictures.first.is_visible()
        context.close()
        browser.close()
