"""Real browser: a SweepWidget fed live by a job running ``iter_growth_rates``, in JupyterLab (headless Chromium).

A generated notebook runs the growth-rate experiment on a tiny model (one setting, 3 values of σ, 2 seeds: 6
points); its generator holds after each point until the test has seen that point drawn in the page (and writes
a file the generator waits for), so the live updates are checked point by point without timing assumptions:
after point k the view shows k runs (status running, then done), the means of the σ values reached so far, and
has painted again. At the end every σ has its mean with an error bar, the fitted line and the guide are drawn and
the fits table names the exponent of the same runs fitted here; choosing another summary in the menu reaches
Python (the chart comes back redrawn for it); the static picture output is hidden while the live view is there.
A screenshot goes to ``test-artifacts/`` (gitignored).

Front-end markers (``js/src/sweep_widget.js``): ``.tscope-sweep[data-status][data-runs][data-paints]`` and
``svg.tscope-sweep-chart[data-groups][data-means]``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from nbformat.v4 import new_code_cell, new_notebook
from playwright.sync_api import sync_playwright

from tests.browser.harness import ALL_CELLS_RUN, KERNEL_IDLE_LAB, PageLog, jupyterlab, launch_chromium, wait_for

pytestmark = pytest.mark.slow  # end to end: JupyterLab, a kernel and Chromium, about 40 s

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
KERNEL_IDLE_MS = 60_000
RUN_MS = 90_000
NAME = "sweep.ipynb"
SIGMAS, SEEDS = (0.03, 0.1, 0.3), 2
POINTS = len(SIGMAS) * SEEDS

SETUP = f"""
import os, time
from tscope_widgets import SweepWidget
from tscope_widgets.kernels.theory.growth import GrowthSetting, iter_growth_rates

setting = GrowthSetting("L=1", sigmas={SIGMAS!r})

def gated():
    # after the k-th point, wait until the test saw it in the page and wrote the file go-k
    for k, snapshot in enumerate(iter_growth_rates(setting, seeds={SEEDS}, d_model=8, d_mlp=16, batch_size=4,
                                                   num_samples=4), 1):
        yield snapshot
        while k < {POINTS} and not os.path.exists(f"go-{{k}}"):
            time.sleep(0.05)
"""
WIDGET = """
w = SweepWidget(gated, summary="q_hessian", x_axis="sigma", guides=(5,), num_bootstrap=200, throttle=0.05,
                num_threads=1)
w
"""

STATE = """() => {
  const root = document.querySelector('.jp-OutputArea-output .tscope-sweep');
  const svg = root && root.querySelector('svg.tscope-sweep-chart');
  return root && svg ? { status: root.dataset.status, runs: Number(root.dataset.runs), means: Number(svg.dataset.means),
    groups: Number(svg.dataset.groups), paints: Number(root.dataset.paints) } : null;
}"""


def expected_exponent() -> float:
    """The fitted exponent of the notebook's sweep, recomputed here (every point is a pure function of its
    setting, σ and seed)."""
    from tscope_widgets.kernels.power_law import fit_power_law
    from tscope_widgets.kernels.theory.growth import GrowthSetting, iter_growth_rates

    *_, snap = iter_growth_rates(GrowthSetting("L=1", sigmas=SIGMAS), seeds=SEEDS, d_model=8, d_mlp=16, batch_size=4,
                                 num_samples=4)
    xs = [s for s in SIGMAS for _ in range(SEEDS)]
    ys = snap.norms[0, :, :, 0, 0].reshape(-1).tolist()  # q_hessian [σ, seed]
    return fit_power_law(xs, ys, [str(j) for _ in SIGMAS for j in range(SEEDS)], num_bootstrap=200).exponent


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("jupyter-sweep")
    with jupyterlab(tmp) as server:
        nb = new_notebook(cells=[new_code_cell(c.strip()) for c in (SETUP, WIDGET)])
        nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
        server.write_notebook(NAME, nb, trusted=True)
        yield server


def test_sweep_widget_draws_points_as_they_arrive_and_the_menu_reaches_python(server):
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
            log = PageLog(page)
            page.goto(server.lab_url(NAME), timeout=180_000)  # a busy machine loads JupyterLab slowly
            wait_for(page, KERNEL_IDLE_LAB, f"the kernel of {NAME} to be idle", log, KERNEL_IDLE_MS)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")

            # live: the job holds after each point until the page has drawn it (the test then writes go-k)
            paints = []
            for k in range(1, POINTS + 1):
                status = "done" if k == POINTS else "running"
                state = wait_for(page, f"() => {{ const s = ({STATE})(); return s && s.runs === {k} "
                                 f"&& s.status === '{status}' && s.means >= 1 ? s : null; }}",
                                 f"point {k} of {POINTS} to be drawn ({status})", log, RUN_MS).json_value()
                assert state["groups"] == 1 and state["means"] == min(len(SIGMAS), (k + SEEDS - 1) // SEEDS)
                paints.append(state["paints"])
                (server.root / f"go-{k}").touch()
            assert paints == sorted(set(paints))  # a new paint for every point
            final = state
            assert final["means"] == len(SIGMAS)
            wait_for(page, ALL_CELLS_RUN, "every cell of the notebook to have run", log, RUN_MS)

            root = page.locator(".jp-OutputArea-output .tscope-sweep")
            root.scroll_into_view_if_needed()
            chart = root.locator("svg.tscope-sweep-chart")
            assert chart.locator("circle.tscope-run").count() == POINTS
            assert chart.locator("path.tscope-errorbars").count() == 1  # 2 seeds per σ: a bar at each
            assert (chart.locator("path.tscope-errorbars").get_attribute("d") or "").count("M") == len(SIGMAS)
            assert chart.locator("path.tscope-fit").count() == 1 and chart.locator("line.tscope-guide").count() == 1
            exponent = expected_exponent()
            cells = root.locator("table.tscope-fits tr").nth(1).locator("td").all_text_contents()
            assert cells[0] == "setting=L=1" and cells[4] == str(POINTS)
            assert float(cells[1]) == pytest.approx(exponent, rel=6e-3)  # shown to 3 significant digits
            # the static picture stands in only where the view cannot run
            picture = page.locator(".tscope-static").first
            assert picture.count() == 1 and not picture.is_visible()
            page.screenshot(path=str(ARTIFACTS / "jupyterlab-sweep.png"))

            # the summary menu: Python receives the choice and sends the chart back for it
            root.locator('select[aria-label="summary"]').select_option(label="v_hessian")
            wait_for(page, "() => (document.querySelector('.jp-OutputArea-output .tscope-sweep svg.tscope-sweep-chart "
                     "text') || {}).textContent?.startsWith('v_hessian against sigma')",
                     "the chart to come back for v_hessian", log)
        finally:
            browser.close()
