"""Real browser: a LandscapeWidget, a SpectrumWidget and a Hutchinson SensitivityExplorer in JupyterLab,
driven by headless Chromium.

A small generated notebook shows a 7 x 7 loss landscape of a tiny model, the spectrum a
``SpectrumTracker`` records during a short training loop of another tiny model (4 records, one block per
layer) and a Hutchinson sensitivity explorer. The explorer must show its method line (estimates ± sem),
draw in log colours by default (``log_scale="auto"`` on a map spanning decades: the canvas's ``data-log``
agrees with Python's rule) and repaint from its colour-map menu (Python receives the choice); the
PNG/SVG/CSV buttons of the explorer, the landscape and the spectrum download files made in the page (read
back through Playwright's downloads: names, CSV numbers, SVG structure); a reservoir sample's map shows beside the
population mean. The test runs it in JupyterLab (``tests/browser/harness.py``), waits for the landscape's heatmap
canvas to paint the whole grid and for the spectrum's line charts and block x step heatmap to draw,
checks that the static picture outputs are hidden while the live views are there, clicks a landscape
cell and a cell of the block x step heatmap, and checks (by re-running the cell that prints them) that
Python received ``selected_point``, ``picked_step`` and ``selected_block`` and ran Lanczos on the block.
Last, the saved notebook reopens without its widget state and kernel: both pictures show instead of
jupyter-widgets' "model not found". Screenshots go to ``test-artifacts/`` (gitignored).

Front-end markers: ``.tscope-landscape[data-status][data-paints]``, ``canvas.tscope-heatmap[data-rows]``,
``.tscope-detail[data-point="i,j"]`` (``js/src/landscape_widget.js``); ``.tscope-spectrum[data-records]
[data-paints]``, ``canvas.tscope-steps[data-rows][data-cols][data-plot="x,y,w,h"]``,
``.tscope-eigen-pane[data-status][data-block][data-values]`` (``js/src/spectrum_widget.js``).
"""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook
from playwright.sync_api import sync_playwright

from tests.browser.harness import ALL_CELLS_RUN, KERNEL_IDLE_LAB, PageLog, jupyterlab, launch_chromium, wait_for
from tscope_widgets.figures.charts import COLORMAPS

pytestmark = pytest.mark.slow  # end to end: JupyterLab, a kernel and Chromium, about 40 s

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
KERNEL_IDLE_MS = 60_000
RUN_MS = 90_000  # imports, a 7 x 7 grid and 4 spectrum records on a busy 2-core machine
NAME = "landscape-spectrum.ipynb"
REOPENED = "landscape-spectrum-reopened.ipynb"

RES, RECORDS, LAYERS = 7, 4, 2
PROBES = 4  # the Hutchinson explorer's probes per position
# The landscape's plot area (js/src/landscape_widget.js): 400 x 400 CSS pixels at (64, 10); alpha index i
# across, beta index j upwards. The clicked point and what Python must snap it to.
LANDSCAPE_POINT = (5, 1)
SPAN = 0.5
# The block x step heatmap's clicked cell: block row 1 ("block1"), the third record (step 2).
STEPS_CELL = (1, 2)

SETUP = f"""
import torch
import torch.nn.functional as F
from tscope_widgets.tracking import SpectrumTracker
from tscope_widgets.models.tiny import TinyConfig, TinyTransformer
from tscope_widgets.widgets.landscape import LandscapeWidget
from tscope_widgets.widgets.spectrum import SpectrumWidget

torch.manual_seed(0)
config = TinyConfig(vocab_size=11, d_model=8, n_head=2, n_layer={LAYERS}, max_seq_len=8)
ids = torch.randint(0, 11, (8, 6), generator=torch.Generator().manual_seed(1))
"""
LANDSCAPE = f"""
landscape = LandscapeWidget(TinyTransformer(config).double(), ids, resolution={RES}, span={SPAN}, num_threads=1)
landscape
"""
SPECTRUM = """
model = TinyTransformer(config).double()
tracker = SpectrumTracker(model, [{"input_ids": ids}], every=1, blocks="layers", trace_matvecs=9, density_every=2)
spectrum = SpectrumWidget(tracker, num_threads=1)
spectrum
"""
TRAIN = f"""
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range({RECORDS}):
    logits = model(ids)
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, 11), ids[:, 1:].reshape(-1))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    tracker.step(loss=loss.item())
landscape.wait()
hutch.wait()
from tscope_widgets.figures.charts import resolve_log
print("AUTO_LOG=" + str(resolve_log("auto", hutch.snapshot.stats[hutch.layer].mean.numpy())).lower())
"""
HUTCHINSON = f"""
from tscope_widgets.widgets.sensitivity import SensitivityExplorer
hutch = SensitivityExplorer(TinyTransformer(config).double(), ids, method="hutchinson", probes={PROBES}, batch_size=8,
                            token_labels=list("<abcd>"), num_threads=1)
hutch
"""
READ_BACK = """
finished = spectrum.wait_block(60)
print(f"POINT={landscape.selected_index} STEP={spectrum.picked_step} BLOCK={spectrum.selected_block} "
      f"EIGEN={spectrum.eigen and spectrum.eigen.get('status')} FINISHED={finished} CMAP={hutch.colormap}")
"""

LANDSCAPE_DONE = """(res) => {
  const root = document.querySelector('.jp-OutputArea-output .tscope-landscape');
  const canvas = root && root.querySelector('canvas.tscope-heatmap');
  return !!root && root.dataset.status === 'done' && Number(root.dataset.paints) > 0
    && !!canvas && canvas.dataset.rows === String(res);
}"""

EXPLORER_DONE = """() => {
  const root = document.querySelector('.jp-OutputArea-output .tscope-explorer');
  const canvas = root && root.querySelector('canvas.tscope-heatmap');
  return !!root && root.dataset.status === 'done' && Number(root.dataset.paints) > 0 && !!canvas
    && canvas.dataset.rows === '6';
}"""

# Pixels of the landscape's plot area that differ from the page background (a corner of the canvas).
LANDSCAPE_PAINTED = """(canvas) => {
  const ctx = canvas.getContext('2d');
  const dpr = canvas.width / parseFloat(canvas.style.width);
  const corner = ctx.getImageData(0, 0, 1, 1).data;
  const [x0, y0, side] = [Math.round(64 * dpr), Math.round(10 * dpr), Math.round(400 * dpr)];
  const d = ctx.getImageData(x0 + 2, y0 + 2, side - 4, side - 4).data;
  let painted = 0;
  for (let k = 0; k < d.length; k += 4)
    if (Math.abs(d[k] - corner[0]) + Math.abs(d[k + 1] - corner[1]) + Math.abs(d[k + 2] - corner[2]) > 30) painted++;
  return painted / (d.length / 4);
}"""

SPECTRUM_DRAWN = """([records, layers]) => {
  const root = document.querySelector('.jp-OutputArea-output .tscope-spectrum');
  const steps = root && root.querySelector('canvas.tscope-steps');
  const lines = root ? [...root.querySelectorAll('.tscope-charts .tscope-panel svg.tscope-chart path')]
    .filter(p => p.getAttribute('fill') === 'none' && (p.getAttribute('d') || '').split('L').length >= records) : [];
  return !!root && root.dataset.records === String(records) && Number(root.dataset.paints) > 0
    && lines.length >= 3 && !!steps && steps.dataset.rows === String(layers)
    && steps.dataset.cols === String(records) && !!steps.dataset.plot;
}"""

# Pixels of the block x step heatmap's cells that differ from the background: every cell is painted.
STEPS_PAINTED = """(canvas) => {
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

# Every static picture is drawn: an <img> of its SVG document, decoded, with a size, and visible.
PICTURES_SHOWN = """(n) => {
  const imgs = [...document.querySelectorAll('.tscope-static img.tscope-static-picture')];
  return imgs.length === n && imgs.every(img => img.complete && img.naturalWidth > 0
    && img.getBoundingClientRect().height > 100 && getComputedStyle(img).visibility === 'visible'
    && img.closest('.jp-OutputArea-child').offsetParent !== null);
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """JupyterLab serving a folder with the generated notebook."""
    tmp = tmp_path_factory.mktemp("jupyter-widgets")
    with jupyterlab(tmp) as server:
        cells = (SETUP, LANDSCAPE, SPECTRUM, HUTCHINSON, TRAIN, READ_BACK)
        nb = new_notebook(cells=[new_code_cell(c.strip()) for c in cells])
        nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
        server.write_notebook(NAME, nb, trusted=True)
        yield server


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


def _landscape_cell_centre(i: int, j: int) -> dict[str, float]:
    cell = 400 / RES
    return {"x": 64 + (i + 0.5) * cell, "y": 10 + (RES - 1 - j + 0.5) * cell}


def test_landscape_and_spectrum_render_and_clicks_reach_python(server, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    log = PageLog(page)
    page.goto(server.lab_url(NAME))
    wait_for(page, KERNEL_IDLE_LAB, f"the kernel of {NAME} to be idle", log, KERNEL_IDLE_MS)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    wait_for(page, LANDSCAPE_DONE, f"the landscape to finish and paint its {RES}x{RES} grid", log, RUN_MS, arg=RES)
    wait_for(page, SPECTRUM_DRAWN, f"the spectrum to draw {RECORDS} records", log, RUN_MS, arg=[RECORDS, LAYERS])
    wait_for(page, ALL_CELLS_RUN, "every cell of the notebook to have run", log, RUN_MS)

    # ----- the Hutchinson explorer: its method line, log colours by default ("auto"), the colour-map menu
    explorer = page.locator(".jp-OutputArea-output .tscope-explorer")
    wait_for(page, EXPLORER_DONE, "the Hutchinson explorer to finish and paint", log, RUN_MS)
    explorer.scroll_into_view_if_needed()
    method = explorer.locator(".tscope-method")
    assert method.is_visible() and method.get_attribute("data-method") == "hutchinson"
    assert method.text_content() == f"Hutchinson estimates with {PROBES} probes: cell means ± standard error (sem)"
    # text_content: JupyterLab skips rendering cells out of view (content-visibility), innerText is empty there
    auto_log = page.locator(".jp-OutputArea-output", has_text="AUTO_LOG=").text_content()
    auto_log = auto_log.split("AUTO_LOG=")[1].split()[0]
    hutch_canvas = explorer.locator("canvas.tscope-heatmap")
    assert explorer.locator('select[aria-label="colour scale"] option:checked').text_content() == "auto"
    # the page's "auto" rule agrees with Python's, and a map spanning decades is drawn in log colours
    assert hutch_canvas.get_attribute("data-log") == auto_log == "true"
    cmap = explorer.locator('select[aria-label="colour map"]')
    names = cmap.locator("option").all_text_contents()
    assert names == list(COLORMAPS) and names[0] == "viridis", names  # the menu offers every colour map
    assert hutch_canvas.get_attribute("data-colormap") == "viridis"
    cmap.select_option(label="magma")
    wait_for(
        page,
        "() => document.querySelector('.jp-OutputArea-output .tscope-explorer canvas.tscope-heatmap')"
        ".dataset.colormap === 'magma'",
        "the explorer to repaint in magma",
        log,
    )
    # a reservoir sample's own map, its ids as tokens (no tokenizer), beside the population mean
    samples = explorer.locator('select[aria-label="sample"]')
    choices = samples.locator("option").all_text_contents()
    assert choices[0] == "population" and len(choices) == 1 + 8, choices  # 8 samples, all kept
    samples.select_option(label="sample 3")
    wait_for(
        page,
        """() => { const c = document.querySelector('.jp-OutputArea-output .tscope-explorer canvas.tscope-heatmap');
              const m = document.querySelector('.jp-OutputArea-output .tscope-explorer canvas.tscope-heatmap-mean');
              return c.dataset.sample === '3' && !!m && m.style.display !== 'none' && m.dataset.rows === '6'
                && m.dataset.domain === c.dataset.domain; }""",
        "sample 3's map beside the population mean, on one colour scale",
        log,
    )
    page.screenshot(path=str(ARTIFACTS / "jupyterlab-explorer-sample.png"))
    samples.select_option(label="population")
    wait_for(
        page,
        "() => document.querySelector('.jp-OutputArea-output .tscope-explorer canvas.tscope-heatmap')"
        ".dataset.sample === ''",
        "the explorer to show the population again",
        log,
    )

    # ----- downloads, made in the page: the numbers as CSV, the view as SVG and PNG
    def download(button):
        with page.expect_download(timeout=20_000) as info:
            button.click()
        return info.value.suggested_filename, Path(info.value.path()).read_bytes()

    name, data = download(explorer.locator("button.tscope-download-csv"))
    rows = data.decode().splitlines()
    assert name.startswith("sensitivity-layer-") and name.endswith("-mean-matrix.csv"), name
    assert rows[0].split(",")[1:] == [f"{k}:{t}" for k, t in enumerate("<abcd>")] and len(rows) == 1 + 6
    cells = [[float(v) for v in row.split(",")[1:]] for row in rows[1:]]
    assert all(cells[i][j] == 0 for i in range(6) for j in range(i + 1, 6))  # causal: exact zeros above
    assert all(cells[i][j] > 0 for i in range(6) for j in range(i + 1))
    name, data = download(explorer.locator("button.tscope-download-png"))
    assert name.endswith("-mean-matrix.png") and data.startswith(b"\x89PNG\r\n\x1a\n")

    landscape_view = page.locator(".jp-OutputArea-output .tscope-landscape")
    name, data = download(landscape_view.locator("button.tscope-download-svg"))
    assert name == "landscape-loss-2d.svg"
    svg = ET.fromstring(data)
    assert svg.tag == "{http://www.w3.org/2000/svg}svg" and float(svg.get("width")) >= 400
    images = svg.findall("{http://www.w3.org/2000/svg}image")
    assert images and images[0].get("{http://www.w3.org/1999/xlink}href").startswith("data:image/png;base64,")
    name, data = download(landscape_view.locator("button.tscope-download-csv"))
    rows = list(csv.reader(io.StringIO(data.decode())))  # the direction labels hold commas: quoted fields
    assert name == "landscape-loss-2d.csv" and len(rows) == 1 + RES * RES
    assert rows[0][0].startswith("alpha (random direction 1") and rows[0][2:] == ["loss", "accuracy"]
    assert all(float(row[2]) > 0 for row in rows[1:])  # every loss of the finished grid
    name, data = download(page.locator(".jp-OutputArea-output .tscope-spectrum button.tscope-download-csv"))
    rows = data.decode().splitlines()
    assert name.startswith("spectrum-") and rows[0].startswith("step,") and len(rows) == 1 + RECORDS

    heatmap = page.locator(".jp-OutputArea-output .tscope-landscape canvas.tscope-heatmap")
    painted = heatmap.evaluate(LANDSCAPE_PAINTED)
    assert painted > 0.9, f"{painted:.1%} of the landscape's plot area is painted; expected all of it"
    steps = page.locator(".jp-OutputArea-output .tscope-spectrum canvas.tscope-steps")
    painted_steps = steps.evaluate(STEPS_PAINTED)
    assert painted_steps > 0.9, f"{painted_steps:.1%} of the block x step heatmap is painted; expected all of it"

    # The pictures that stand in for the views (saved notebooks) are hidden while the live views are there.
    pictures = page.locator(".tscope-static")
    assert pictures.count() == 3 and not any(p.is_visible() for p in pictures.all())

    # ----- click a landscape cell: the 1D slices through it appear
    i, j = LANDSCAPE_POINT
    heatmap.scroll_into_view_if_needed()
    heatmap.click(position=_landscape_cell_centre(i, j))
    wait_for(
        page,
        f"() => !!document.querySelector('.jp-OutputArea-output .tscope-landscape "
        f".tscope-detail[data-point=\"{i},{j}\"]')",
        f"the landscape's slices through grid point ({i}, {j})",
        log,
    )
    page.screenshot(path=str(ARTIFACTS / "jupyterlab-landscape.png"))

    # ----- click a cell of the block x step heatmap: picks the step and the block, Lanczos runs on it
    block, record = STEPS_CELL
    steps.scroll_into_view_if_needed()
    x, y, w, h = (float(v) for v in steps.get_attribute("data-plot").split(","))
    steps.click(position={"x": x + (record + 0.5) * w / RECORDS, "y": y + (block + 0.5) * h / LAYERS})
    wait_for(
        page,
        f"""() => {{ const e = document.querySelector('.jp-OutputArea-output .tscope-spectrum .tscope-eigen-pane');
              return !!e && e.dataset.block === 'block{block}' && e.dataset.status === 'done'
                && Number(e.dataset.values) > 0; }}""",
        f"the top eigenvalues of block{block} in the spectrum view",
        log,
        RUN_MS,
    )
    page.locator(".jp-OutputArea-output .tscope-spectrum").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "jupyterlab-spectrum.png"))

    # ----- Python received both selections
    read_back = page.locator(".jp-NotebookPanel .jp-CodeCell", has_text="finished = spectrum.wait_block")
    assert read_back.count() == 1
    read_back.locator(".jp-InputPrompt").click()
    page.keyboard.press("Control+Enter")
    expected = f"POINT=({i}, {j}) STEP={record} BLOCK=block{block} EIGEN=done FINISHED=True CMAP=magma"
    wait_for(
        page,
        f"() => [...document.querySelectorAll('.jp-OutputArea-output')]"
        f".some(e => e.textContent.includes('{expected}'))",
        f"Python to print {expected!r}",
        log,
        RUN_MS,
    )

    # ----- saved, then reopened without widget state and without its kernel: the pictures stand in
    page.evaluate("async () => { await window.jupyterapp.commands.execute('docmanager:save'); }")
    saved = nbformat.read(server.root / NAME, as_version=4)
    pictures_saved = [
        o["data"]["text/html"] for c in saved.cells for o in c.get("outputs", []) if "text/html" in o.get("data", {})
    ]
    assert len(pictures_saved) == 3 and all('data-status="done"' in h for h in pictures_saved)
    del saved.metadata["widgets"]  # as JupyterLab saves by default ("Save Widget State Automatically" off)
    server.write_notebook(REOPENED, saved, trusted=True)
    for session in server.api("GET", "/api/sessions"):
        server.api("DELETE", f"/api/sessions/{session['id']}")
    page.close()
    again = context.new_page()
    log_again = PageLog(again)
    again.goto(server.lab_url(REOPENED))
    wait_for(again, KERNEL_IDLE_LAB, f"the kernel of {REOPENED} to be idle", log_again, KERNEL_IDLE_MS)
    wait_for(again, PICTURES_SHOWN, "the three static pictures to be drawn and visible", log_again, arg=3)
    wait_for(
        again,
        """() => [...document.querySelectorAll('.jp-OutputArea-output')]
              .filter(e => e.textContent.includes('model not found')).length === 3""",
        "jupyter-widgets to give up on the three missing models",
        log_again,
    )
    assert not again.get_by_text("model not found").first.is_visible()
    assert again.locator(".tscope-landscape, .tscope-spectrum, .tscope-explorer").count() == 0
    again.locator(".tscope-static").first.scroll_into_view_if_needed()
    again.screenshot(path=str(ARTIFACTS / "jupyterlab-landscape-spectrum-reopened.png"))
    context.close()
