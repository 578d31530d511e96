"""Real browser: the quickstart notebook in JupyterLab and Notebook 7, driven by headless Chromium.

JupyterLab runs on 127.0.0.1 (free port, token, temporary config/data/runtime/settings folders);
Debian's ``/usr/bin/chromium`` is driven through Playwright's sync API (no ``playwright install``).
The quickstart notebook (a fresh copy) is run top to bottom in JupyterLab; the test waits for the
explorer's heatmap canvas to paint the finished statistics, checks its pixels, clicks the induction
cell and checks that the detail view follows and that Python received the selection (by re-running
the cell that prints it), that the static picture output next to the view is hidden while the view is
live, and that the output JupyterLab would save carries the final static picture.
Then the saved notebook opens in Notebook 7 (``/notebooks/...``), joins the same kernel and renders the
live widget there, selection included. Last, with that kernel shut down, the notebook reopens in
JupyterLab and draws the explorer's last state from the widget state saved with it. Screenshots go to
``test-artifacts/`` (gitignored).

The static fallback (``tscope_widgets/widgets/sensitivity.py``): a small explorer notebook executed
headless (nbclient, widget state stored) is reopened in JupyterLab without its widget state, trusted
(jupyter-widgets then fails with "model not found") and untrusted (sanitized HTML, no widget views):
both show the picture and no error. Its nbconvert HTML export, with widget state, opened offline,
shows the picture too.

Front-end markers (``js/src/sensitivity_explorer.js``): ``.tscope-explorer[data-status]``,
``[data-paints]`` (bumps after each repaint), ``canvas.tscope-heatmap[data-rows]``,
``.tscope-detail[data-cell="i,j"][data-samples]``.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbconvert import HTMLExporter
from nbformat.v4 import new_code_cell, new_notebook
from playwright.sync_api import sync_playwright

from tests.browser.harness import ALL_CELLS_RUN, KERNEL_IDLE_LAB, PageLog, jupyterlab, launch_chromium, wait_for

pytestmark = pytest.mark.slow  # end to end: a kernel per notebook, about a minute

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "01_quickstart.ipynb"
ARTIFACTS = REPO / "test-artifacts"
KERNEL_IDLE_MS = 60_000
RUN_MS = 150_000  # training (about 15 s on one core) plus 128 sequences, on a busy 2-core machine
STEP_MS = 20_000

# The induction cell of the quickstart's layout [BOS, r1 … r8, copy r1 … copy r8]: row "copy r4"
# (i = 12), column "r5" (j = 5). Canvas geometry of the live view: cell size c = min(40, 420 // S),
# cell (i, j) centred at (112 + (j + 0.5) c, 8 + (i + 0.5) c) CSS pixels.
S, CELL = 17, (12, 5)
C = min(40, 420 // S)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """JupyterLab serving a folder with a fresh copy of the quickstart notebook."""
    tmp = tmp_path_factory.mktemp("jupyter")
    (tmp / "root").mkdir()
    shutil.copy(NOTEBOOK, tmp / "root" / NOTEBOOK.name)
    with jupyterlab(tmp) as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


EXPLORER_DONE = """(rows) => {
  const root = document.querySelector('.jp-OutputArea-output .tscope-explorer');
  const canvas = root && root.querySelector('canvas.tscope-heatmap');
  return !!root && root.dataset.status === 'done' && Number(root.dataset.paints) > 0
    && !!canvas && canvas.dataset.rows === String(rows);
}"""

# Pixels of the heatmap area (inside the axes) that differ from the background: the causal lower
# triangle is painted, the exact zeros above the diagonal are left in the background colour.
PAINTED_FRACTION = """(canvas) => {
  const ctx = canvas.getContext('2d');
  const dpr = canvas.width / parseFloat(canvas.style.width);
  const [x0, y0, side] = [112 * dpr, 8 * dpr, SIDE * dpr];
  const w = Math.round(side);
  const d = ctx.getImageData(Math.round(x0), Math.round(y0), w, w).data;
  const top_right = 4 * (w - 2);  // inside cell (0, S-1), an exact zero above the diagonal
  const bg = [d[top_right], d[top_right + 1], d[top_right + 2]];
  let painted = 0;
  for (let k = 0; k < d.length; k += 4)
    if (Math.abs(d[k] - bg[0]) + Math.abs(d[k + 1] - bg[1]) + Math.abs(d[k + 2] - bg[2]) > 30) painted++;
  return painted / (d.length / 4);
}""".replace("SIDE", str(S * C))

def _cell_centre() -> dict[str, float]:
    i, j = CELL
    return {"x": 112 + (j + 0.5) * C, "y": 8 + (i + 0.5) * C}


def test_quickstart_in_jupyterlab_notebook7_and_reopened(server, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    name = NOTEBOOK.name
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    log = PageLog(page)

    # ----- JupyterLab: open a fresh workspace, wait for the kernel, run everything
    page.goto(server.lab_url(name))
    wait_for(page, KERNEL_IDLE_LAB, "the kernel of the quickstart notebook to be idle", log, KERNEL_IDLE_MS)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    wait_for(page, EXPLORER_DONE, f"the explorer to finish and paint its {S}x{S} heatmap", log, RUN_MS, arg=S)
    wait_for(page, ALL_CELLS_RUN, "every cell of the notebook to have run", log, RUN_MS)

    canvas = page.locator(".jp-OutputArea-output .tscope-explorer canvas.tscope-heatmap")
    painted = canvas.evaluate(PAINTED_FRACTION)
    # 153 of 289 cells are on or below the diagonal (53%); allow for thin grid lines and near-white cells.
    assert 0.35 < painted < 0.7, f"{painted:.1%} of the heatmap area is painted; expected about half"

    # ----- click the induction cell: the detail view follows, Python receives the selection
    canvas.scroll_into_view_if_needed()
    canvas.click(position=_cell_centre())
    i, j = CELL
    wait_for(
        page,
        f"""() => {{ const d = document.querySelector('.jp-OutputArea-output .tscope-detail[data-cell="{i},{j}"]');
              return !!d && Number(d.dataset.samples) > 0; }}""",
        f"the detail view of cell ({i}, {j}) with its reservoir samples",
        log,
    )
    detail = page.locator(".jp-OutputArea-output .tscope-detail")
    heading = detail.locator("h4").inner_text()
    assert "12:copy␣r4" in heading and "5:r5" in heading, heading  # the live view shows spaces as ␣
    page.screenshot(path=str(ARTIFACTS / "jupyterlab-quickstart-explorer.png"))

    print_cell = page.locator(".jp-NotebookPanel .jp-CodeCell", has_text='print("selected cell:"')
    assert print_cell.count() == 1, "the quickstart notebook needs one cell printing explorer.selected_cell"
    print_cell.locator(".jp-InputPrompt").click()
    page.keyboard.press("Control+Enter")
    wait_for(
        page,
        f"""() => [...document.querySelectorAll('.jp-OutputArea-output')]
              .some(e => e.textContent.includes('selected cell: [{i}, {j}]'))""",
        f"Python to print the selection [{i}, {j}] after the click",
        log,
    )

    # ----- the static picture output follows the widget output, hidden while the live view is there
    assert page.locator(".jp-OutputArea-output .tscope-explorer").is_visible()
    assert page.locator(".tscope-static").count() == 1 and not page.locator(".tscope-static").is_visible()
    kinds = page.evaluate(
        """() => {
      const model = window.jupyterapp.shell.currentWidget.content.model;
      for (let k = 0; k < model.cells.length; k++) {
        const outputs = model.cells.get(k).outputs;
        const data = [];
        for (let n = 0; outputs && n < outputs.length; n++) data.push(outputs.get(n).data);
        const at = data.findIndex(d => d['application/vnd.jupyter.widget-view+json']);
        if (at >= 0) return [Object.keys(data[at]).sort(), data[at + 1] ? data[at + 1]['text/html'] : null];
      }
      return null;
    }"""
    )
    assert kinds is not None, "no output carries the widget view"
    view_keys, html = kinds
    assert view_keys == ["application/vnd.jupyter.widget-view+json", "text/plain"], view_keys
    assert html is not None and 'class="tscope-static"' in html and 'data-status="done"' in html
    assert "<img" in html and "data:image/svg+xml;base64," in html

    page.evaluate("async () => { await window.jupyterapp.commands.execute('docmanager:save'); }")
    saved = json.loads((server.root / name).read_text())
    saved_html = [
        "".join(o["data"]["text/html"])
        for c in saved["cells"]
        for o in c.get("outputs", [])
        if "text/html" in o.get("data", {})
    ]
    assert any('data-status="done"' in h for h in saved_html), "the saved notebook lacks the final picture"

    # ----- Notebook 7: the saved notebook joins the same kernel and renders the live widget
    nb7 = context.new_page()
    log7 = PageLog(nb7)
    nb7.goto(server.notebook7_url(name))
    wait_for(nb7, EXPLORER_DONE, "Notebook 7 to render the explorer with its painted heatmap", log7, STEP_MS * 3, arg=S)
    wait_for(
        nb7,
        f"""() => {{ const d = document.querySelector('.tscope-detail[data-cell="{i},{j}"]');
              return !!d && Number(d.dataset.samples) > 0; }}""",
        "Notebook 7 to show the selection made in JupyterLab",
        log7,
    )
    painted7 = nb7.locator(".tscope-explorer canvas.tscope-heatmap").evaluate(PAINTED_FRACTION)
    assert 0.35 < painted7 < 0.7, f"{painted7:.1%} of the heatmap area is painted in Notebook 7"
    assert nb7.locator(".tscope-static").count() == 1 and not nb7.locator(".tscope-static").is_visible()
    nb7.locator(".tscope-explorer").scroll_into_view_if_needed()
    nb7.screenshot(path=str(ARTIFACTS / "notebook7-quickstart-explorer.png"))
    page.close()
    nb7.close()

    # ----- reopened without the kernel that made it: the saved widget state shows the last picture
    for session in server.api("GET", "/api/sessions"):
        server.api("DELETE", f"/api/sessions/{session['id']}")
    again = context.new_page()
    log_again = PageLog(again)
    again.goto(server.lab_url(name))
    wait_for(again, KERNEL_IDLE_LAB, "the reopened notebook's new kernel to be idle", log_again, KERNEL_IDLE_MS)
    wait_for(again, EXPLORER_DONE, "the reopened notebook to draw the saved explorer", log_again, STEP_MS, arg=S)
    painted_again = again.locator(".tscope-explorer canvas.tscope-heatmap").evaluate(PAINTED_FRACTION)
    assert abs(painted_again - painted) < 0.02, f"reopened: {painted_again:.1%} painted, live: {painted:.1%}"
    assert again.locator(".tscope-static").count() == 1 and not again.locator(".tscope-static").is_visible()
    again.locator(".tscope-explorer").scroll_into_view_if_needed()
    again.screenshot(path=str(ARTIFACTS / "jupyterlab-quickstart-reopened.png"))
    context.close()


# ---------------------------------------------------------------------------- static fallback
FALLBACK_SETUP = """
import torch
from tscope_widgets.models.tiny import TinyConfig, TinyTransformer
from tscope_widgets.widgets.sensitivity import SensitivityExplorer

torch.manual_seed(0)
model = TinyTransformer(TinyConfig(vocab_size=11, d_model=8, n_head=2, n_layer=2, max_seq_len=8)).double()
ids = torch.randint(0, 11, (16, 6), generator=torch.Generator().manual_seed(1))
explorer = SensitivityExplorer(model, ids, batch_size=8, token_labels=list("<abab>"), num_threads=1)
explorer
"""
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"

# The picture is drawn: an <img> of the SVG document, decoded, with a size, and visible.
PICTURE_SHOWN = """() => {
  const img = document.querySelector('.tscope-static img.tscope-static-picture');
  return !!img && img.complete && img.naturalWidth > 0 && img.getBoundingClientRect().height > 100
    && getComputedStyle(img).visibility === 'visible';
}"""


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> nbformat.NotebookNode:
    """A small explorer notebook executed headless (nbclient), widget state stored, picture final."""
    nb = new_notebook(cells=[new_code_cell(FALLBACK_SETUP.strip()), new_code_cell("explorer.wait()")])
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    cwd = tmp_path_factory.mktemp("executed")
    NotebookClient(
        nb, timeout=120, kernel_name="python3", store_widget_state=True, resources={"metadata": {"path": str(cwd)}}
    ).execute()
    outputs = nb.cells[0].outputs
    assert [sorted(o["data"]) for o in outputs] == [[WIDGET_VIEW, "text/plain"], ["text/html", "text/plain"]]
    assert 'data-status="done"' in outputs[1]["data"]["text/html"]
    assert outputs[0]["data"][WIDGET_VIEW]["model_id"] in nb.metadata.widgets[WIDGET_STATE]["state"]
    return nb


@pytest.mark.parametrize("trusted", [True, False], ids=["trusted", "untrusted"])
def test_reopened_without_widget_state_shows_the_picture(server, browser, executed, trusted):
    ARTIFACTS.mkdir(exist_ok=True)
    nb = copy.deepcopy(executed)
    del nb.metadata["widgets"]  # as JupyterLab saves by default ("Save Widget State Automatically" off)
    name = f"fallback-{'trusted' if trusted else 'untrusted'}.ipynb"
    nb.metadata["title"] = name  # signatures are per content: the untrusted copy must differ from the trusted one
    server.write_notebook(name, nb, trusted=trusted)
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    log = PageLog(page)
    page.goto(server.lab_url(name))
    wait_for(page, KERNEL_IDLE_LAB, f"the kernel of {name} to be idle", log, KERNEL_IDLE_MS)
    error = page.locator(".jp-OutputArea-output", has_text="model not found")
    if trusted:
        # The case being fixed: jupyter-widgets looks for the model in the new kernel, gives up and
        # says so in place of the view (the widget output stays a widget view: no other mime type).
        wait_for(
            page,
            """() => [...document.querySelectorAll('.jp-OutputArea-output')]
                  .some(e => e.textContent.includes('Error displaying widget: model not found'))""",
            "jupyter-widgets to give up on the missing model",
            log,
        )
        assert error.count() == 1 and not error.is_visible(), "the widget output's error is visible"
    else:
        # No widget views in notebooks JupyterLab does not trust: the widget output shows its text (so
        # jupyter-widgets never looks for the model), and the picture's <style>, which would hide that
        # text, is sanitized away.
        wait_for(
            page,
            """() => [...document.querySelectorAll('.jp-OutputArea-output[data-mime-type="text/plain"] pre')]
                  .some(e => e.textContent.startsWith('SensitivityExplorer: live view'))""",
            "the widget output to show its text/plain",
            log,
        )
        assert error.count() == 0
    wait_for(page, PICTURE_SHOWN, "the static picture to be drawn and visible", log)
    assert page.locator(".tscope-static").is_visible()
    assert not page.get_by_text("model not found").is_visible()
    assert not page.get_by_text("Loading widget").is_visible()
    page.locator(".tscope-static").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / f"jupyterlab-{name.removesuffix('.ipynb')}.png"))
    context.close()


def test_nbconvert_html_with_widget_state_shows_the_picture_offline(browser, executed, tmp_path):
    html, _ = HTMLExporter().from_notebook_node(executed)
    assert f'<script type="{WIDGET_VIEW}">' in html  # nbconvert picked the widget view (state is stored)
    path = tmp_path / "export.html"
    path.write_text(html)
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    # Offline: the CDN scripts (require.js, the widget manager) never load.
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:") else route.abort())
    page = context.new_page()
    log = PageLog(page)
    page.goto(path.as_uri())
    wait_for(page, PICTURE_SHOWN, "the static picture in the HTML export to be drawn and visible", log)
    # the empty box of the widget view that did not render is hidden; the picture is there once
    box = page.locator(".jp-OutputArea-child", has=page.locator(f'script[type="{WIDGET_VIEW}"]'))
    assert box.count() == 1 and not box.is_visible()
    assert page.locator(".tscope-static").count() == 1
    page.screenshot(path=str(ARTIFACTS / "nbconvert-with-widget-state.png"), full_page=True)
    context.close()
