"""Real browser: the quickstart notebook in JupyterLab and Notebook 7, driven by headless Chromium.

JupyterLab runs on 127.0.0.1 (free port, token, temporary config/data/runtime/settings folders);
Debian's ``/usr/bin/chromium`` is driven through Playwright's sync API (no ``playwright install``).
The quickstart notebook (a fresh copy) is run top to bottom in JupyterLab; the test waits for the
explorer's heatmap canvas to paint the finished statistics, checks its pixels, clicks the induction
cell and checks that the detail view follows and that Python received the selection (by re-running
the cell that prints it), and that the output JupyterLab would save carries the final static picture.
Then the saved notebook opens in Notebook 7 (``/notebooks/...``), joins the same kernel and renders the
live widget there, selection included. Last, with that kernel shut down, the notebook reopens in
JupyterLab and draws the explorer's last state from the widget state saved with it. Screenshots go to
``test-artifacts/`` (gitignored).

Front-end markers (``js/src/sensitivity_explorer.js``): ``.tscope-explorer[data-status]``,
``[data-paints]`` (bumps after each repaint), ``canvas.tscope-heatmap[data-rows]``,
``.tscope-detail[data-cell="i,j"][data-samples]``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, sync_playwright

from tests.browser.harness import KERNEL_IDLE_LAB, jupyterlab, launch_chromium

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


class PageLog:
    """Console errors and uncaught exceptions of a page, for failure messages."""

    def __init__(self, page: Page):
        self.lines: list[str] = []
        page.on("console", lambda m: self.lines.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.lines.append(f"pageerror: {e}"))

    def __str__(self) -> str:
        return "\n".join(self.lines[-20:]) or "(no console errors)"


def wait_for(page: Page, expression: str, what: str, log: PageLog, timeout_ms: int = STEP_MS, arg=None):
    """``page.wait_for_function`` that fails with ``what``, the page's status bar and console errors."""
    try:
        return page.wait_for_function(expression, arg=arg, timeout=timeout_ms, polling=100)
    except PlaywrightError as err:
        if "Timeout" not in str(err):
            raise
        status = page.evaluate(
            "() => [...document.querySelectorAll('.jp-StatusBar-TextItem, .jp-KernelStatus')]"
            ".map(e => e.textContent.trim()).join(' | ')"
        )
        errors = page.evaluate(
            "() => [...document.querySelectorAll("
            "'.jp-OutputArea-output[data-mime-type=\"application/vnd.jupyter.stderr\"]')]"
            ".map(e => e.textContent.slice(0, 500)).join('\\n')"
        )
        pytest.fail(
            f"timed out after {timeout_ms / 1000:.0f} s waiting for {what}\nstatus bar: {status}\n"
            f"stderr outputs: {errors or '(none)'}\n{log}",
            pytrace=False,
        )


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

ALL_CELLS_RUN = """() => {
  const cells = [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell')];
  return cells.length > 0 && cells.every(c => /\\[\\d+\\]/.test(c.querySelector('.jp-InputPrompt').textContent))
    && !!document.querySelector('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status="idle"]');
}"""


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

    # ----- the output JupyterLab saves holds the final static picture next to the widget view
    html = page.evaluate(
        """() => {
      const model = window.jupyterapp.shell.currentWidget.content.model;
      for (let k = 0; k < model.cells.length; k++) {
        const outputs = model.cells.get(k).outputs;
        for (let n = 0; outputs && n < outputs.length; n++) {
          const data = outputs.get(n).data;
          if (data['application/vnd.jupyter.widget-view+json'] && data['text/html']) return data['text/html'];
        }
      }
      return null;
    }"""
    )
    assert html is not None, "no output carries both the widget view and its static picture"
    assert 'class="tscope-static"' in html and 'data-status="done"' in html and f'data-rows="{S}"' in html

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
    again.locator(".tscope-explorer").scroll_into_view_if_needed()
    again.screenshot(path=str(ARTIFACTS / "jupyterlab-quickstart-reopened.png"))
    context.close()
