"""Benchmark: SensitivityExplorer in a real browser — update-to-repaint latency and bytes on the wire.

Setup: JupyterLab on 127.0.0.1 and headless Debian Chromium (``tests/browser/harness.py``). A notebook
displays one explorer per size S (64, 512 and 2,048 by default) on a tiny model that is never run
(``start=False``); its heatmap is then driven directly from Python: a second kernel client executes a
loop that assigns a fresh random ``[S, S]`` float32 array to ``explorer.heat`` every ``--gap`` seconds
and records ``time.time()`` just before each assignment (serialisation and sending included in the
measured span). In the page a MutationObserver records the wall-clock time
(``performance.timeOrigin + performance.now()``) at which the view bumps its ``data-paints`` marker,
which happens right after the canvas was repainted. Latency = paint time - assignment time (same machine,
same clock). The gap is long enough that no update is coalesced with the next; the first
``--warmup`` updates of each size are dropped.

Wire size: Playwright records every WebSocket frame the page receives; the frames that carry a
``comm_msg`` updating ``heat`` are summed per update (Jupyter's binary WebSocket framing, message
header and JSON state included) and compared with the raw float32 size ``4 S^2``. Maps above 512 x 512
travel as scaled float16 (``_codec.map_to_json``), so their wire size is about half the raw float32 size.

Page-side repaint: the view also records, per update, the time from the arrival of the new map in the
page (its ``change:heat`` event) to the end of the repaint (decoding, the colour range over the whole map,
colouring the shown cells, axes): ``data-paint-ms``; this leaves out the kernel, the server and the
WebSocket, which the end-to-end latency includes.

Zoom and pan: at each size, ``--zooms`` wheel events (zooming in and out in turn around a point of the
map) and as many drag steps are dispatched on the canvas; the time from dispatching an event to the end
of the repaint it causes (the view's coalesced paint runs in a microtask right after the event) is
recorded in the page with ``performance.now()``.

Targets (issue 4): 512x512 repaint median < 50 ms; wire size <= 1.1x raw float32. Issue 13: a
2,048 x 2,048 map repaints in under 100 ms (median) and its bytes on the wire stay bounded.

Usage:
  python benchmarks/widget_repaint.py [--sizes 64 512 2048] [--repeats 30] [--gap 0.3] [--zooms 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.browser.harness import KERNEL_IDLE_LAB, jupyterlab, kernel_client, launch_chromium, run_code  # noqa: E402

NOTEBOOK = "repaint_benchmark.ipynb"
SETUP = """
import time, numpy as np, torch
from tscope_widgets import TinyConfig, TinyTransformer
from tscope_widgets.widgets import SensitivityExplorer

def explorer_of_size(S):
    model = TinyTransformer(TinyConfig(vocab_size=11, d_model=8, n_head=2, n_layer=1, max_seq_len=S))
    return SensitivityExplorer(model, torch.zeros(1, S, dtype=torch.long), start=False)
"""
SHOW = "explorer_{S} = explorer_of_size({S})\nexplorer_{S}"
DRIVE = """
_rng = np.random.default_rng(0)
_frames = [_rng.random(({S}, {S}), dtype=np.float32) + 0.01 for _ in range({n})]
_sent = []
for _a in _frames:
    _sent.append(time.time())
    explorer_{S}.heat = _a
    time.sleep({gap})
print("SENT", _sent)
"""

RECORDER = """() => {
  window.__paints = {};
  for (const root of document.querySelectorAll('.jp-OutputArea-output .tscope-explorer')) {
    const S = root.closest('.jp-Cell').querySelector('.jp-InputArea').textContent.match(/explorer_(\\d+) =/)[1];
    window.__paints[S] = [];
    window.__paintMs = window.__paintMs || {};
    window.__paintMs[S] = [];
    new MutationObserver(() => {
      window.__paints[S].push(performance.timeOrigin + performance.now());
      window.__paintMs[S].push(Number(root.dataset.paintMs));
    })
      .observe(root, { attributes: true, attributeFilter: ['data-paints'] });
  }
  return Object.keys(window.__paints);
}"""


# Wheel and drag events on the heatmap of explorer S; per event, the ms from dispatch to the end of its repaint.
ZOOM_AND_PAN = """async ([S, n]) => {
  const canvas = [...document.querySelectorAll('.jp-OutputArea-output .tscope-explorer')]
    .find(r => r.closest('.jp-Cell').querySelector('.jp-InputArea').textContent.includes(`explorer_${S} =`))
    .querySelector('canvas.tscope-heatmap');
  canvas.scrollIntoView();
  const box = canvas.getBoundingClientRect();
  const at = (fx, fy) => ({
    clientX: box.left + 112 + fx * 300, clientY: box.top + 8 + fy * 300, bubbles: true, cancelable: true });
  const zooms = [], pans = [], views = new Set();
  const timed = async (out, fire) => {
    const t0 = performance.now();
    fire();
    await Promise.resolve();  // the view's paint was queued first: it has run when this resolves
    out.push(performance.now() - t0);
    views.add(canvas.dataset.view);
  };
  for (let k = 0; k < n; k++) {
    const wheel = new WheelEvent('wheel', { ...at(0.5, 0.5), deltaY: k % 2 ? 200 : -200 });
    await timed(zooms, () => canvas.dispatchEvent(wheel));
    await new Promise(r => setTimeout(r, 20));
  }
  canvas.dispatchEvent(new WheelEvent('wheel', { ...at(0.5, 0.5), deltaY: -300 }));
  await new Promise(r => setTimeout(r, 20));
  canvas.dispatchEvent(new MouseEvent('mousedown', { ...at(0.5, 0.5), button: 0 }));
  for (let k = 0; k < n; k++) {
    const f = 0.5 + 0.3 * Math.sin(k / 3);
    await timed(pans, () => window.dispatchEvent(new MouseEvent('mousemove', at(f, 1 - f))));
    await new Promise(r => setTimeout(r, 20));
  }
  window.dispatchEvent(new MouseEvent('mouseup', at(0.5, 0.5)));
  canvas.parentElement.closest('.tscope-explorer').querySelector('.tscope-zoom-reset').click();
  return { zooms, pans, views: views.size };
}"""


def measure(sizes: list[int], repeats: int, warmup: int, gap: float, zooms: int = 30) -> list[dict]:
    nb = new_notebook(cells=[new_code_cell(SETUP.strip())] + [new_code_cell(SHOW.format(S=S)) for S in sizes])
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    results = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        tmp = Path(tmp)
        (tmp / "root").mkdir()
        nbformat.write(nb, tmp / "root" / NOTEBOOK)
        with jupyterlab(tmp) as server:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            frames: list[tuple[float, int, bool]] = []  # (receive time, bytes, carries a heat update)

            def on_ws(ws):
                def on_frame(payload):
                    data = payload if isinstance(payload, bytes) else payload.encode()
                    heat = b'"comm_msg"' in data and b'"heat"' in data and b'"update"' in data
                    frames.append((time.time(), len(data), heat))

                ws.on("framereceived", on_frame)

            page.on("websocket", on_ws)
            page.goto(server.lab_url(NOTEBOOK), timeout=120_000)  # JupyterLab loads slowly on a busy machine
            page.wait_for_function(KERNEL_IDLE_LAB, timeout=120_000, polling=100)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            page.wait_for_function(
                f"() => document.querySelectorAll('.jp-OutputArea-output .tscope-explorer').length === {len(sizes)}",
                timeout=120_000,
                polling=100,
            )
            page.evaluate(RECORDER)
            client = kernel_client(server)
            try:
                for S in sizes:
                    n = warmup + repeats
                    start_frame = len(frames)
                    text = run_code(client, DRIVE.format(S=S, n=n, gap=gap), timeout=60 + n * (gap + 1))
                    sent = json.loads(text.split("SENT", 1)[1].strip())
                    try:
                        page.wait_for_function(
                            f"() => (window.__paints['{S}'] || []).length >= {n}", timeout=120_000, polling=100
                        )
                    except PlaywrightError as err:
                        seen = page.evaluate(f"() => (window.__paints['{S}'] || []).length")
                        raise RuntimeError(f"S={S}: {n} updates sent, {seen} repaints seen after 120 s") from err
                    painted = page.evaluate(f"() => window.__paints['{S}']")
                    paint_ms = page.evaluate(f"() => window.__paintMs['{S}']")[warmup:]
                    print(f"S={S}: {n} updates painted", file=sys.stderr, flush=True)
                    heat_frames = [size for _, size, heat in frames[start_frame:] if heat]
                    if len(painted) != n or len(heat_frames) != n:
                        raise RuntimeError(
                            f"S={S}: {n} updates sent, {len(painted)} repaints and {len(heat_frames)} heat frames seen"
                        )
                    latency_ms = [
                        (t_paint / 1000 - t_sent) * 1000 for t_paint, t_sent in zip(painted, sent, strict=True)
                    ]
                    latency_ms = latency_ms[warmup:]
                    wire = heat_frames[warmup:]
                    raw = 4 * S * S
                    moved = page.evaluate(ZOOM_AND_PAN, [S, zooms]) if zooms else None
                    if moved and moved["views"] < 2:
                        raise RuntimeError(f"S={S}: zooming and panning did not change the view")
                    results.append(
                        {
                            "S": S,
                            "updates": repeats,
                            "latency_ms_median": statistics.median(latency_ms),
                            "latency_ms_p90": statistics.quantiles(latency_ms, n=10)[-1],
                            "latency_ms_min": min(latency_ms),
                            "page_paint_ms_median": statistics.median(paint_ms),
                            "page_paint_ms_p90": statistics.quantiles(paint_ms, n=10)[-1],
                            "wire_bytes_median": statistics.median(wire),
                            "raw_float32_bytes": raw,
                            "wire_over_raw": statistics.median(wire) / raw,
                            "zoom_ms_median": statistics.median(moved["zooms"]) if moved else None,
                            "pan_ms_median": statistics.median(moved["pans"]) if moved else None,
                            "zoom_pan_ms_p90": statistics.quantiles(moved["zooms"] + moved["pans"], n=10)[-1]
                            if moved
                            else None,
                        }
                    )
            finally:
                client.stop_channels()
                browser.close()
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 512, 2048])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--gap", type=float, default=0.3, help="seconds between updates (no coalescing)")
    parser.add_argument("--zooms", type=int, default=30, help="wheel events and drag steps per size (0: none)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    results = measure(args.sizes, args.repeats, args.warmup, args.gap, args.zooms)
    print(f"SensitivityExplorer repaint in headless Chromium ({platform.machine()}, {args.repeats} updates per size)")
    print(
        f"{'S':>5} {'median ms':>10} {'p90 ms':>8} {'min ms':>8} {'wire bytes':>11} {'raw f32':>9} {'wire/raw':>9}"
        f" {'page ms':>8} {'zoom ms':>8} {'pan ms':>7} {'z/p p90':>8}"
    )
    for r in results:
        z = f" {r['page_paint_ms_median']:>8.1f}"
        z += "" if r["zoom_ms_median"] is None else f" {r['zoom_ms_median']:>8.1f} {r['pan_ms_median']:>7.1f}"
        z += "" if r["zoom_pan_ms_p90"] is None else f" {r['zoom_pan_ms_p90']:>8.1f}"
        print(
            f"{r['S']:>5} {r['latency_ms_median']:>10.1f} {r['latency_ms_p90']:>8.1f} {r['latency_ms_min']:>8.1f} "
            f"{r['wire_bytes_median']:>11.0f} {r['raw_float32_bytes']:>9} {r['wire_over_raw']:>9.4f}{z}"
        )
    if args.json:
        args.json.write_text(json.dumps({"results": results, "args": vars(args) | {"json": str(args.json)}}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
