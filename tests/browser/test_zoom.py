"""Real browser: zoom, pan, reset and brush of a 256-position sensitivity map in JupyterLab (headless Chromium).

The notebook shows an explorer that is never run (``start=False``); its map is set from Python to
``heat[i, j] = 256 i + j + 1`` (every cell's value names it) with ``seq_len = 256``, so the test needs no
kernel computation. It then drives the canvas with Playwright's mouse: the wheel zooms around the
pointer, a drag pans, "reset zoom" brings back the whole map, a shift-drag and a drag in brush mode zoom
to the brushed square, and a click on a zoomed map selects the cell under the pointer: the hover
tooltip names it, the detail view follows, and Python receives it (read through a second kernel client).

Geometry of the live view (``js/src/sensitivity_explorer.js``, ``js/src/lib/heatmap.js``): a 256-position
map gets 2 px cells (the minimum cell size; 1 px before), a 512 px plot from (112, 8) CSS pixels in the
canvas; a view ``r0,c0,nr,nc`` (the canvas's ``data-view``) puts cell (i, j) at
``(112 + (j - c0 + 0.5) 512 / nc, 8 + (i - r0 + 0.5) 512 / nr)``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook
from playwright.sync_api import sync_playwright

from tests.browser.harness import (
    KERNEL_IDLE_LAB,
    PageLog,
    jupyterlab,
    kernel_client,
    launch_chromium,
    run_code,
    wait_for,
)

pytestmark = pytest.mark.slow

S, PLOT, LEFT, TOP = 256, 512, 112, 8
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
SETUP = f"""
import numpy as np, torch
from tscope_widgets import TinyConfig, TinyTransformer
from tscope_widgets.widgets import SensitivityExplorer

model = TinyTransformer(TinyConfig(vocab_size=11, d_model=8, n_head=2, n_layer=1, max_seq_len={S}))
explorer = SensitivityExplorer(model, torch.zeros(1, {S}, dtype=torch.long), start=False)
explorer.seq_len = {S}
explorer.heat = (np.arange({S} * {S}, dtype=np.float32) + 1).reshape({S}, {S})
explorer
"""
CANVAS = ".jp-OutputArea-output .tscope-explorer canvas.tscope-heatmap"


def _view(page) -> tuple[int, int, int, int]:
    return tuple(int(v) for v in page.locator(CANVAS).get_attribute("data-view").split(","))


def _wait_view(page, log, what, predicate: str):
    """Wait until the canvas's view ``[r0, c0, nr, nc]`` satisfies the JS expression ``predicate`` of ``v``."""
    wait_for(
        page,
        f"""() => {{ const c = document.querySelector('{CANVAS}');
              if (!c || !c.dataset.view) return false;
              const v = c.dataset.view.split(',').map(Number); return {predicate}; }}""",
        what,
        log,
    )
    return _view(page)


def _page_point(page, view, i, j) -> tuple[float, float]:
    """Page coordinates of the centre of cell (i, j) in ``view``."""
    box = page.locator(CANVAS).bounding_box()
    r0, c0, nr, nc = view
    return box["x"] + LEFT + (j - c0 + 0.5) * PLOT / nc, box["y"] + TOP + (i - r0 + 0.5) * PLOT / nr


def test_zoom_pan_reset_brush_and_click_on_a_256_position_map():
    nb = new_notebook(cells=[new_code_cell(SETUP.strip())])
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        tmp = Path(tmp)
        (tmp / "root").mkdir()
        nbformat.write(nb, tmp / "root" / "zoom.ipynb")
        with jupyterlab(tmp) as server:
            browser = launch_chromium(p)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                log = PageLog(page)
                page.goto(server.lab_url("zoom.ipynb"), timeout=120_000)  # a busy machine loads JupyterLab slowly
                wait_for(page, KERNEL_IDLE_LAB, "the kernel to be idle", log, 120_000)
                page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
                view = _wait_view(page, log, "the 256 x 256 map, whole", "v.join() === '0,0,256,256'")
                canvas = page.locator(CANVAS)
                canvas.scroll_into_view_if_needed()
                assert canvas.get_attribute("data-rows") == str(S)
                box = canvas.bounding_box()
                assert box["width"] == LEFT + PLOT + 96, box  # 2 px cells: the plot is 512 px wide
                assert page.locator(".tscope-zoom-reset").is_disabled()

                # ----- wheel: zoom in around cell (64, 192); it stays under the pointer
                x, y = _page_point(page, view, 64, 192)
                page.mouse.move(x, y)
                page.mouse.wheel(0, -300)
                view = _wait_view(page, log, "a zoom in", "v[2] < 256 && v[3] < 256")
                page.mouse.wheel(0, -300)
                view = _wait_view(page, log, "a second zoom in", f"v[2] < {view[2]}")
                r0, c0, nr, nc = view
                under = (r0 + int((y - canvas.bounding_box()["y"] - TOP) * nr / PLOT),
                         c0 + int((x - canvas.bounding_box()["x"] - LEFT) * nc / PLOT))
                assert abs(under[0] - 64) <= 2 and abs(under[1] - 192) <= 2, (view, under)
                assert nr == nc and nr < 120, view
                assert page.locator(".tscope-zoom-reset").is_enabled()

                # ----- drag: pan by 10 cells to the right (the map follows the pointer)
                step = PLOT / nc
                page.mouse.move(x, y)
                page.mouse.down()
                page.mouse.move(x + 10 * step, y - 4 * step, steps=5)
                page.mouse.up()
                panned = _wait_view(page, log, "a pan", f"v[1] === {c0 - 10}")
                assert panned == (r0 + 4, c0 - 10, nr, nc), (view, panned)
                # the click that ends a drag selects nothing
                assert run_code(client := kernel_client(server), "print(explorer.selected_cell)").strip() == "None"

                # ----- reset: the whole map again
                page.locator(".tscope-zoom-reset").click()
                view = _wait_view(page, log, "the whole map after reset", "v.join() === '0,0,256,256'")

                # ----- shift-drag a brush from cell (10, 20) to (49, 59): zooms to that square
                page.keyboard.down("Shift")
                page.mouse.move(*_page_point(page, view, 10, 20))
                page.mouse.down()
                page.mouse.move(*_page_point(page, view, 49, 59), steps=6)
                page.mouse.up()
                page.keyboard.up("Shift")
                view = _wait_view(page, log, "the brushed square", "v.join() === '10,20,40,40'")

                # ----- click after zoom: the cell under the pointer, in the tooltip, the detail and Python
                x, y = _page_point(page, view, 33, 47)
                page.mouse.move(x, y)
                tooltip = page.locator(".jp-OutputArea-output .tscope-explorer .tscope-tooltip")
                wait_for(page, "() => !!document.querySelector('.tscope-tooltip') && "
                         "document.querySelector('.tscope-tooltip').style.display !== 'none'", "the tooltip", log)
                text = tooltip.inner_text()
                assert "output 33" in text and "input  47" in text and "mean: 8.5e+3" in text, text  # 256 * 33 + 47 + 1
                page.mouse.click(x, y)
                wait_for(page, "() => !!document.querySelector('.tscope-detail[data-cell=\"33,47\"]')",
                         "the detail view of cell (33, 47)", log)
                selected = run_code(client, "import time; time.sleep(0.5); print(explorer.selected_cell)").strip()
                assert selected == "[33, 47]", selected
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "jupyterlab-zoomed-explorer.png"))

                # ----- brush mode button: a plain drag brushes; "whole map" shows every cell
                page.locator(".tscope-brush").click()
                assert page.locator(".tscope-brush").get_attribute("aria-pressed") == "true"
                page.mouse.move(*_page_point(page, view, 12, 22))
                page.mouse.down()
                page.mouse.move(*_page_point(page, view, 19, 29), steps=4)
                page.mouse.up()
                view = _wait_view(page, log, "the square brushed in brush mode", "v.join() === '12,22,8,8'")
                page.locator(".tscope-zoom-whole").click()
                _wait_view(page, log, "the whole map", "v.join() === '0,0,256,256'")
                # brushing selects nothing
                assert run_code(client, "print(explorer.selected_cell)").strip() == "[33, 47]"
                client.stop_channels()
                assert not [line for line in log.lines if "pageerror" in line], str(log)
            finally:
                browser.close()
