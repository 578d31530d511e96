"""Real browser: the three widgets in a marimo app (``mo.ui.anywidget``), driven by headless Chromium.

anywidget runs in JupyterLab, Notebook 7, VS Code, Colab and marimo; the JupyterLab and Notebook 7 tests
are ``test_jupyterlab.py`` and ``test_landscape_spectrum.py``. Here a generated marimo notebook (a tiny
model; a 7 x 7 loss landscape, an exact sensitivity explorer over 6 positions, the spectrum of 4 training
steps) runs as an app (``marimo run``, ``tests/browser/harness.py``). marimo renders each widget inside
the shadow root of its own element, with none of JupyterLab's ``--jp-*`` CSS variables, so this also
checks that the views take the host's colours instead (``data-theme="host"``). The test waits for each
view to draw (status ``done``, painted canvases, line charts), clicks a cell of the landscape, of the
explorer and of the spectrum's block x step heatmap, and checks that Python received each (a reactive
cell prints the widgets' ``selected_index``, ``selected_cell`` and ``picked_step``). Last, the landscape
switches to its 3D view (three.js, WebGL in software): its axes carry ticks with values and the titles
α, β and loss, every label inside the canvas, at the full width and in a narrow window. Screenshots go
to ``test-artifacts/`` (gitignored).

Playwright's CSS locators pierce open shadow roots; page scripts use ``DEEP`` (``querySelectorAll``
through every shadow root) for the same.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from tests.browser.harness import PageLog, launch_chromium, marimo_app, wait_for

pytestmark = pytest.mark.slow  # end to end: a marimo server, its kernel and Chromium, about a minute

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
LOAD_MS = 180_000  # imports and the three widgets' first results on a busy 2-core machine (about 60 s seen)
RUN_MS = 120_000

RES, RECORDS, LAYERS, S = 7, 4, 2, 6
LANDSCAPE_POINT = (5, 1)  # grid indices (alpha i, beta j) of the clicked landscape cell
EXPLORER_CELL = (4, 2)  # (row i, column j) of the clicked sensitivity cell: below the diagonal
STEPS_CELL = (1, 2)  # (block row, record) of the clicked block x step cell

NOTEBOOK = f'''
import marimo

app = marimo.App()


@app.cell
def _():
    import marimo as mo
    import torch
    import torch.nn.functional as F
    from tscope_widgets.models.tiny import TinyConfig, TinyTransformer
    from tscope_widgets.tracking import SpectrumTracker
    from tscope_widgets.widgets.landscape import LandscapeWidget
    from tscope_widgets.widgets.sensitivity import SensitivityExplorer
    from tscope_widgets.widgets.spectrum import SpectrumWidget

    torch.manual_seed(0)
    config = TinyConfig(vocab_size=11, d_model=8, n_head=2, n_layer={LAYERS}, max_seq_len=8)
    ids = torch.randint(0, 11, (8, {S}), generator=torch.Generator().manual_seed(1))
    return (F, LandscapeWidget, SensitivityExplorer, SpectrumTracker, SpectrumWidget, TinyTransformer, config, ids,
            mo, torch)


@app.cell
def _(LandscapeWidget, TinyTransformer, config, ids, mo):
    landscape = LandscapeWidget(TinyTransformer(config).double(), ids, resolution={RES}, span=0.5, num_threads=1)
    landscape_ui = mo.ui.anywidget(landscape)
    landscape_ui
    return landscape, landscape_ui


@app.cell
def _(SensitivityExplorer, TinyTransformer, config, ids, mo):
    explorer = SensitivityExplorer(TinyTransformer(config).double(), ids, batch_size=8,
                                   token_labels=list("<abcd>"), num_threads=1)
    explorer_ui = mo.ui.anywidget(explorer)
    explorer_ui
    return explorer, explorer_ui


@app.cell
def _(F, SpectrumTracker, SpectrumWidget, TinyTransformer, config, ids, mo, torch):
    model = TinyTransformer(config).double()
    tracker = SpectrumTracker(model, [{{"input_ids": ids}}], every=1, blocks="layers", trace_matvecs=9)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _step in range({RECORDS}):
        _logits = model(ids)
        _loss = F.cross_entropy(_logits[:, :-1].reshape(-1, 11), ids[:, 1:].reshape(-1))
        optimizer.zero_grad()
        _loss.backward()
        optimizer.step()
        tracker.step(loss=_loss.item())
    spectrum = SpectrumWidget(tracker, num_threads=1)
    spectrum_ui = mo.ui.anywidget(spectrum)
    spectrum_ui
    return spectrum, spectrum_ui


@app.cell
def _(explorer, explorer_ui, landscape, landscape_ui, mo, spectrum, spectrum_ui):
    _seen = (landscape_ui.value, explorer_ui.value, spectrum_ui.value)  # re-runs when the page changes one
    _cell = None if explorer.selected_cell is None else tuple(explorer.selected_cell)
    mo.md(f"READBACK POINT={{landscape.selected_index}} CELL={{_cell}} STEP={{spectrum.picked_step}}")
    return


if __name__ == "__main__":
    app.run()
'''

# querySelectorAll through every open shadow root (marimo renders each widget inside one).
DEEP = """const deep = (sel) => { const out = []; const walk = (root) => { out.push(...root.querySelectorAll(sel));
  for (const e of root.querySelectorAll('*')) if (e.shadowRoot) walk(e.shadowRoot); }; walk(document); return out; };"""

VIEWS_DONE = f"""() => {{ {DEEP}
  const land = deep('.tscope-landscape')[0], expl = deep('.tscope-explorer')[0], spec = deep('.tscope-spectrum')[0];
  const landCanvas = land && land.querySelector('canvas.tscope-heatmap');
  const explCanvas = expl && expl.querySelector('canvas.tscope-heatmap');
  const steps = spec && spec.querySelector('canvas.tscope-steps');
  return !!land && land.dataset.status === 'done' && Number(land.dataset.paints) > 0
    && !!landCanvas && landCanvas.dataset.rows === '{RES}'
    && !!expl && expl.dataset.status === 'done' && Number(expl.dataset.paints) > 0
    && !!explCanvas && explCanvas.dataset.rows === '{S}'
    && !!spec && spec.dataset.records === '{RECORDS}' && Number(spec.dataset.paints) > 0
    && !!steps && steps.dataset.rows === '{LAYERS}' && !!steps.dataset.plot;
}}"""

# Fraction of a canvas region (CSS pixels x, y, w, h) whose colour differs from the canvas's corner pixel.
PAINTED = """(canvas, [x, y, w, h]) => {
  const ctx = canvas.getContext('2d');
  const dpr = canvas.width / parseFloat(canvas.style.width);
  const corner = ctx.getImageData(0, 0, 1, 1).data;
  const d = ctx.getImageData(Math.round(x * dpr) + 2, Math.round(y * dpr) + 2,
                             Math.round(w * dpr) - 4, Math.round(h * dpr) - 4).data;
  let painted = 0;
  for (let k = 0; k < d.length; k += 4)
    if (Math.abs(d[k] - corner[0]) + Math.abs(d[k + 1] - corner[1]) + Math.abs(d[k + 2] - corner[2]) > 30) painted++;
  return painted / (d.length / 4);
}"""

# The 3D view's labels: text, axis, kind, and whether each lies inside the WebGL canvas.
SURFACE_LABELS = f"""() => {{ {DEEP}
  const land = deep('.tscope-landscape')[0];
  const canvas = land.querySelector('canvas.tscope-surface-canvas');
  const box = canvas.getBoundingClientRect();
  return [...land.querySelectorAll('.tscope-surface-labels span')].map(e => {{
    const r = e.getBoundingClientRect();
    return {{ text: e.textContent, axis: e.dataset.axis, title: e.classList.contains('tscope-surface-title'),
             shown: e.style.display !== 'none' && r.width > 0,
             inside: r.left >= box.left - 0.5 && r.right <= box.right + 0.5 && r.top >= box.top - 0.5
               && r.bottom <= box.bottom + 0.5 }};
  }});
}}"""


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("marimo")
    notebook = tmp / "widgets_marimo.py"
    notebook.write_text(NOTEBOOK.lstrip())
    with marimo_app(notebook, tmp) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


def _readback(page, log, expected: str) -> None:
    wait_for(
        page,
        "(text) => document.body.innerText.includes(text)",
        f"marimo's reactive cell to print {expected!r} (Python received the click)",
        log,
        RUN_MS,
        arg=expected,
    )


def _check_surface_labels(page, what: str) -> list[dict]:
    labels = page.evaluate(SURFACE_LABELS)
    titles = sorted(label["text"] for label in labels if label["title"])
    assert titles == sorted(["α", "β", "loss"]), titles
    for axis in ("alpha", "beta", "value"):
        ticks = [label for label in labels if label["axis"] == axis and not label["title"]]
        assert len(ticks) >= 3, f"{what}: {len(ticks)} ticks on the {axis} axis"
        texts = [t["text"] for t in ticks]
        assert len(set(texts)) == len(texts), f"{what}: {axis} tick labels repeat: {texts}"
    clipped = [label["text"] for label in labels if not (label["shown"] and label["inside"])]
    assert not clipped, f"{what}: labels hidden or outside the canvas: {clipped}"
    return labels


def test_widgets_render_in_marimo_and_clicks_reach_python(app_url, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    log = PageLog(page)
    page.goto(app_url, wait_until="commit", timeout=LOAD_MS)
    wait_for(page, VIEWS_DONE, "the landscape, explorer and spectrum to finish and draw", log, LOAD_MS)
    _readback(page, log, "READBACK POINT=None CELL=None STEP=None")

    # ----- what each view drew
    landscape = page.locator(".tscope-landscape")
    heatmap = landscape.locator("canvas.tscope-heatmap")
    painted = heatmap.evaluate(PAINTED, [64, 10, 400, 400])
    assert painted > 0.9, f"{painted:.1%} of the landscape's plot area is painted; expected all of it"
    explorer = page.locator(".tscope-explorer")
    cell = min(40, 420 // S)
    explorer_canvas = explorer.locator("canvas.tscope-heatmap")
    painted = explorer_canvas.evaluate(PAINTED, [112, 8, S * cell, S * cell])
    assert 0.3 < painted < 0.8, f"{painted:.1%} of the explorer's map is painted; expected the causal half"
    spectrum = page.locator(".tscope-spectrum")
    lines = spectrum.locator(".tscope-charts .tscope-panel svg.tscope-chart path[fill='none']")
    assert lines.count() >= 3
    steps = spectrum.locator("canvas.tscope-steps")
    x, y, w, h = (float(v) for v in steps.get_attribute("data-plot").split(","))
    assert steps.evaluate(PAINTED, [x, y, w, h]) > 0.9
    # no JupyterLab theme here: each view takes the host's text and background colours (js/src/lib/theme.js)
    for root in (landscape, explorer, spectrum):
        colours = root.evaluate(
            """(root) => ({ theme: root.dataset.theme, own: getComputedStyle(root).color,
                           host: (() => { const c = document.createElement('canvas'); c.width = c.height = 1;
                             const x = c.getContext('2d'); x.fillStyle = getComputedStyle(root.parentElement).color;
                             x.fillRect(0, 0, 1, 1); const d = x.getImageData(0, 0, 1, 1).data;
                             return `rgb(${d[0]}, ${d[1]}, ${d[2]})`; })(),  // the host's colour as rgb()
                           status: getComputedStyle(root.querySelector('.tscope-status')).color })"""
        )
        assert colours["theme"] == "host" and colours["own"] == colours["host"], colours
        assert colours["status"].startswith("rgba(") and colours["status"] != colours["own"], colours  # secondary
    page.screenshot(path=str(ARTIFACTS / "marimo-widgets.png"))

    # ----- clicks reach Python: landscape point, explorer cell, spectrum step
    i, j = LANDSCAPE_POINT
    heatmap.scroll_into_view_if_needed()
    heatmap.click(position={"x": 64 + (i + 0.5) * 400 / RES, "y": 10 + (RES - 1 - j + 0.5) * 400 / RES})
    _readback(page, log, f"POINT=({i}, {j})")
    assert landscape.locator(f'.tscope-detail[data-point="{i},{j}"]').count() == 1
    ci, cj = EXPLORER_CELL
    explorer_canvas.scroll_into_view_if_needed()
    explorer_canvas.click(position={"x": 112 + (cj + 0.5) * cell, "y": 8 + (ci + 0.5) * cell})
    _readback(page, log, f"CELL=({ci}, {cj})")
    assert explorer.locator(f'.tscope-detail[data-cell="{ci},{cj}"]').count() == 1
    block, record = STEPS_CELL
    steps.scroll_into_view_if_needed()
    steps.click(position={"x": x + (record + 0.5) * w / RECORDS, "y": y + (block + 0.5) * h / LAYERS})
    _readback(page, log, f"READBACK POINT=({i}, {j}) CELL=({ci}, {cj}) STEP={record}")

    # ----- the landscape's 3D view: axes with ticks, values and titles, nothing clipped
    landscape.locator('select[aria-label="view"]').select_option(label="3D surface")
    surface_ready = f"""() => {{ {DEEP} const land = deep('.tscope-landscape')[0];
        return land.dataset.surface === 'error' || (land.dataset.surface === 'ready'
          && Number(land.dataset.surfaceQuads) === {(RES - 1) ** 2}
          && land.querySelectorAll('.tscope-surface-labels span').length > 0); }}"""
    wait_for(page, surface_ready, "the 3D surface with its axis labels", log, RUN_MS)
    note = landscape.locator(".tscope-surface-note")
    assert landscape.get_attribute("data-surface") == "ready", note.all_text_contents()
    wide = landscape.get_attribute("data-surface-size")
    landscape.scroll_into_view_if_needed()
    labels = _check_surface_labels(page, f"3D view at {wide}")
    alpha_ticks = [label for label in labels if label["axis"] == "alpha" and not label["title"]]
    values = [float(label["text"].replace("−", "-")) for label in alpha_ticks]
    assert min(values) >= -0.5 and max(values) <= 0.5 and 0.0 in values  # alpha ticks within the grid's span
    landscape.screenshot(path=str(ARTIFACTS / "marimo-landscape-3d.png"))

    # a narrow window: the view narrows, the camera is fitted again, still nothing clipped
    page.set_viewport_size({"width": 560, "height": 1000})
    narrow_size = f"""(wide) => {{ {DEEP} const land = deep('.tscope-landscape')[0];
        return !!land.dataset.surfaceSize && land.dataset.surfaceSize !== wide; }}"""
    wait_for(page, narrow_size, "the 3D view to narrow with the window", log, arg=wide)
    page.wait_for_timeout(300)  # a frame for the labels to follow the refitted camera
    narrow = landscape.get_attribute("data-surface-size")
    assert int(narrow.split("x")[0]) < int(wide.split("x")[0]), (wide, narrow)
    _check_surface_labels(page, f"3D view at {narrow}")
    landscape.screenshot(path=str(ARTIFACTS / "marimo-landscape-3d-narrow.png"))
    assert not [line for line in log.lines if "pageerror" in line], str(log)
    context.close()
